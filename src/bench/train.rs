//! `lathe bench train`: one LoRA training step at TinyLlama-1.1B shapes, lathe against PyTorch +
//! peft on the same CPU. Each configuration runs in its own process so that peak RSS is its own.

use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context};
use candle_core::{Device, Tensor};

use crate::engine::train::config::ModelConfig;
use crate::engine::train::model::{LoraSpec, Model, Trainable, WeightSource};
use crate::engine::train::optim::{clip, AdamW};
use crate::engine::train::rng::Rng;
use crate::engine::train::text::Encoded;
use crate::units::bytes;

const PEER: &str = include_str!("../../benches/peer_lora_step.py");

pub(crate) fn tinyllama(layers: usize) -> ModelConfig {
    let json = format!(
        r#"{{"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
        "num_hidden_layers": {layers}, "num_attention_heads": 32, "num_key_value_heads": 4,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "hidden_act": "silu"}}"#
    );
    ModelConfig::parse(&json, "tinyllama-shape").expect("valid config")
}

/// Random weights, quickly: small uniform values (the figures do not depend on them).
pub(crate) struct FastInit(pub(crate) Rng);

impl WeightSource for FastInit {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.contains("norm") {
            vec![1.0; n]
        } else {
            let mut x = self.0.next_u64() | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
                })
                .collect()
        };
        Tensor::from_vec(v, shape, &Device::Cpu).map_err(|e| e.to_string())
    }
    fn has(&self, _: &str) -> bool {
        true
    }
}

/// One warm-up step, then `steps` timed optimizer steps on random ids of length `seq` (batch 1):
/// the seconds they took.
pub(crate) fn timed_steps(model: &Model, opt: &mut AdamW, vocab: usize, seq: usize, steps: usize, gc: bool) -> anyhow::Result<f64> {
    let mut rng = Rng::new(3);
    let ids: Vec<u32> = (0..=seq).map(|_| rng.below(vocab) as u32).collect();
    let unit = Encoded { train: vec![true; ids.len()], ids };
    let mut step = |i: u64| -> anyhow::Result<()> {
        let (_, grads) = crate::engine::train::step::loss_and_grads(model, std::slice::from_ref(&unit), 0, gc, Some(i)).map_err(|e| anyhow!(e))?;
        let mut grads: Vec<Tensor> = grads.into_iter().map(|g| g.expect("every adapter has a gradient")).collect();
        clip(&mut grads, 1.0)?;
        opt.step(&model.trainable, &grads, 2e-4)?;
        Ok(())
    };
    step(0)?;
    let t = Instant::now();
    for i in 0..steps {
        step(i as u64 + 1)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Measures one configuration and prints {"tokens_per_s", "peak_rss"}.
pub fn child(steps: usize, seq: usize, layers: usize, gc: bool) -> anyhow::Result<()> {
    // As the trainer does.
    crate::engine::alloc::keep_freed_memory();
    let cfg = tinyllama(layers);
    let spec = LoraSpec { r: 8, alpha: 16.0, dropout: 0.05, targets: vec!["q_proj".into(), "v_proj".into()] };
    let model = Model::build(&cfg, &mut FastInit(Rng::new(1)), &Trainable::Lora(spec), &mut Rng::new(2), &Device::Cpu).map_err(|e| anyhow!(e))?;
    let mut opt = AdamW::new(&model.trainable, 0.01, crate::engine::train::optim::Optimizer::AdamW)?;
    let dt = timed_steps(&model, &mut opt, cfg.vocab_size, seq, steps, gc)?;
    println!("{}", serde_json::json!({"tokens_per_s": (seq * steps) as f64 / dt, "peak_rss": crate::engine::sysmon::peak_rss_bytes(), "threads": rayon::current_num_threads()}));
    Ok(())
}

fn parse(out: &std::process::Output, what: &str) -> anyhow::Result<(f64, u64)> {
    let v = super::json_result(out, what)?;
    if let Some(t) = v["threads"].as_u64() {
        eprintln!("({what}: {t} threads{})", v["torch"].as_str().map(|t| format!(", torch {t}")).unwrap_or_default());
    }
    Ok((v["tokens_per_s"].as_f64().unwrap_or(0.0), v["peak_rss"].as_u64().unwrap_or(0)))
}

pub fn run(steps: usize, seq: usize, layers: usize, peer: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let have_torch = peer
        && Command::new(super::peer_python()).args(["-c", "import torch, peft, transformers"]).output().is_ok_and(|o| o.status.success());
    let script = std::env::temp_dir().join(format!("lathe-peer-{}.py", std::process::id()));
    if have_torch {
        std::fs::write(&script, PEER)?;
    }
    println!(
        "LoRA step at TinyLlama-1.1B shapes ({layers} layers, hidden 2048, vocab 32000), r=8 on q_proj and v_proj, seq {seq}, batch 1, {steps} timed steps, f32 on the CPU"
    );
    println!(
        "machine: {}, {} cores; lathe {} (candle {}); each side uses every core",
        super::cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        env!("CARGO_PKG_VERSION"),
        crate::engine::info::engine_info().candle
    );
    if !have_torch {
        println!("(PyTorch peer skipped: `pip install torch transformers peft` (or set LATHE_PEER_PYTHON) to measure it beside lathe)");
    }
    println!("{:<26} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}", "", "lathe tok/s", "torch tok/s", "ratio", "lathe peak", "torch peak", "ratio");
    for gc in [false, true] {
        let mut args = vec!["bench".to_string(), "train".into(), "--child".into(), "--steps".into(), steps.to_string(), "--seq".into(), seq.to_string(), "--layers".into(), layers.to_string()];
        if gc {
            args.push("--gc".into());
        }
        let out = Command::new(&exe).args(&args).output().context("running the lathe measurement")?;
        let (tps, rss) = parse(&out, "lathe")?;
        let peer_fig = if have_torch {
            let mut pa = vec![script.display().to_string(), "--steps".into(), steps.to_string(), "--seq".into(), seq.to_string()];
            if gc {
                pa.push("--gc".into());
            }
            if layers != 22 {
                // The peer always measures TinyLlama's 22 layers; compare like with like.
                None
            } else {
                Some(parse(&Command::new(super::peer_python()).args(&pa).output()?, "the PyTorch peer")?)
            }
        } else {
            None
        };
        let label = if gc { "gradient checkpointing" } else { "plain backward" };
        match peer_fig {
            Some((ptps, prss)) => println!(
                "{label:<26} {tps:>12.1} {ptps:>12.1} {:>6.2}x {:>12} {:>12} {:>6.2}x",
                tps / ptps,
                bytes(rss),
                bytes(prss),
                rss as f64 / prss as f64
            ),
            None => println!("{label:<26} {tps:>12.1} {:>12} {:>7} {:>12} {:>12} {:>7}", "-", "-", bytes(rss), "-", "-"),
        }
    }
    println!("targets: tokens/s ratio >= 1.20x (lathe / torch); peak RSS ratio <= 1.00x");
    let cfg = crate::engine::train::spec::TrainConfig {
        lora_r: 8,
        lora_targets: vec!["q_proj".into(), "v_proj".into()],
        micro_batch: 1,
        max_len: seq,
        ..Default::default()
    };
    let est = crate::engine::train::memory::memory_estimate(&tinyllama(layers), &cfg);
    let est_gc = crate::engine::train::memory::memory_estimate(&tinyllama(layers), &crate::engine::train::spec::TrainConfig { grad_checkpointing: true, ..cfg });
    println!("(the new-run form's memory estimate for these settings: {} plain, {} with checkpointing)", bytes(est), bytes(est_gc));
    let _ = std::fs::remove_file(&script);
    Ok(())
}
