//! `lathe bench train --qlora`: one QLoRA step (an NF4 base, LoRA r=16 on every projection,
//! batch 1, gradient checkpointing) at TinyLlama-1.1B shapes (or Phi-2's with `--phi2`), lathe
//! beside PyTorch + peft + bitsandbytes loading the same checkpoint: random bf16 weights written
//! once to the bench cache, as a real checkpoint is stored. AdamW and AdamW8bit. Each
//! configuration runs in its own process, so each peak RSS is its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context};
use candle_core::Device;

use crate::engine::train::base::BasePrecision;
use crate::engine::train::config::{Family, ModelConfig};
use crate::engine::train::model::{Held, LoraSpec, Model, Trainable};
use crate::engine::train::optim::{AdamW, Optimizer};
use crate::engine::train::rng::Rng;
use crate::engine::train::spec::TrainConfig;
use crate::engine::train::weights::SafetensorsSource;
use crate::units::bytes;

const PEER: &str = include_str!("../../benches/peer_qlora_step.py");

/// The two shapes measured: (folder name, config.json).
fn shape(phi2: bool) -> (&'static str, &'static str) {
    if phi2 {
        (
            "phi2-shape-bf16",
            r#"{"architectures": ["PhiForCausalLM"], "model_type": "phi", "vocab_size": 51200, "hidden_size": 2560,
            "intermediate_size": 10240, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 2048, "layer_norm_eps": 1e-5, "rope_theta": 10000.0, "partial_rotary_factor": 0.4,
            "hidden_act": "gelu_new", "tie_word_embeddings": false, "torch_dtype": "bfloat16"}"#,
        )
    } else {
        (
            "tinyllama-shape-bf16",
            r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
            "tie_word_embeddings": false, "torch_dtype": "bfloat16"}"#,
        )
    }
}

/// Every tensor of a checkpoint of this config, in transformers' names, with its shape.
fn tensors(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v, hd) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.head_dim);
    let (q, kv) = (c.num_heads * hd, c.num_kv_heads * hd);
    let phi = c.family == Family::Phi;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    let mut add = |name: String, shape: Vec<usize>| out.push((name, shape));
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        let a = format!("{p}.self_attn");
        for (n, o) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            add(format!("{a}.{n}.weight"), vec![o, h]);
            if phi {
                add(format!("{a}.{n}.bias"), vec![o]);
            }
        }
        if phi {
            add(format!("{a}.dense.weight"), vec![h, q]);
            add(format!("{a}.dense.bias"), vec![h]);
            add(format!("{p}.mlp.fc1.weight"), vec![i, h]);
            add(format!("{p}.mlp.fc1.bias"), vec![i]);
            add(format!("{p}.mlp.fc2.weight"), vec![h, i]);
            add(format!("{p}.mlp.fc2.bias"), vec![h]);
            add(format!("{p}.input_layernorm.weight"), vec![h]);
            add(format!("{p}.input_layernorm.bias"), vec![h]);
        } else {
            add(format!("{a}.o_proj.weight"), vec![h, q]);
            add(format!("{p}.mlp.gate_proj.weight"), vec![i, h]);
            add(format!("{p}.mlp.up_proj.weight"), vec![i, h]);
            add(format!("{p}.mlp.down_proj.weight"), vec![h, i]);
            add(format!("{p}.input_layernorm.weight"), vec![h]);
            add(format!("{p}.post_attention_layernorm.weight"), vec![h]);
        }
    }
    if phi {
        add("model.final_layernorm.weight".into(), vec![h]);
        add("model.final_layernorm.bias".into(), vec![h]);
        add("lm_head.weight".into(), vec![v, h]);
        add("lm_head.bias".into(), vec![v]);
    } else {
        add("model.norm.weight".into(), vec![h]);
        add("lm_head.weight".into(), vec![v, h]);
    }
    out
}

/// The checkpoint the bench measures, written on first use: config.json and one model.safetensors
/// of random bf16 weights (uniform, std 0.02; norm weights 1, biases 0), streamed tensor by tensor.
fn checkpoint(phi2: bool) -> anyhow::Result<PathBuf> {
    let (name, config) = shape(phi2);
    let dir = super::chat::cache_dir().with_file_name("bench-train").join(name);
    if dir.join("model.safetensors").exists() {
        return Ok(dir);
    }
    let cfg = ModelConfig::parse(config, name).map_err(|e| anyhow!(e.to_string()))?;
    let list = tensors(&cfg);
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join("config.json"), config)?;
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (n, s) in &list {
        let len = 2 * s.iter().product::<usize>();
        header.insert(n.clone(), serde_json::json!({"dtype": "BF16", "shape": s, "data_offsets": [offset, offset + len]}));
        offset += len;
    }
    let mut text = serde_json::to_string(&header)?.into_bytes();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    eprintln!("writing a random {name} checkpoint ({}) to {}", bytes(offset as u64), dir.display());
    let mut f = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(tmp.join("model.safetensors"))?);
    f.write_all(&(text.len() as u64).to_le_bytes())?;
    f.write_all(&text)?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (n, s) in &list {
        let count: usize = s.iter().product();
        let fixed = if n.contains("norm") && n.ends_with("weight") {
            Some(1f32)
        } else if n.ends_with("bias") {
            Some(0f32)
        } else {
            None
        };
        let mut buf = Vec::with_capacity(2 * count);
        for _ in 0..count {
            let v = fixed.unwrap_or_else(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.0693
            });
            buf.extend_from_slice(&((v.to_bits() + 0x7fff + ((v.to_bits() >> 16) & 1)) >> 16).to_le_bytes()[..2]);
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// The run configuration both sides measure.
fn train_config(cfg: &ModelConfig, seq: usize, r: usize, optim: Optimizer, base: BasePrecision) -> TrainConfig {
    TrainConfig {
        method: "lora".into(),
        lora_r: r,
        lora_alpha: 2.0 * r as f64,
        lora_targets: LoraSpec::default_targets(cfg.family),
        micro_batch: 1,
        max_len: seq,
        grad_checkpointing: true,
        quant_base: base,
        optim,
        ..Default::default()
    }
}

/// Measures one configuration in this process and prints JSON.
pub fn child(dir: &Path, steps: usize, seq: usize, r: usize, optim: Optimizer, base: BasePrecision) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let cfg = ModelConfig::load(dir).map_err(|e| anyhow!(e.to_string()))?;
    let tc = train_config(&cfg, seq, r, optim, base);
    let spec = LoraSpec { r, alpha: tc.lora_alpha, dropout: 0.05, targets: tc.lora_targets.clone() };
    let mut src = SafetensorsSource::open(dir, &Device::Cpu).map_err(|e| anyhow!(e))?;
    let model = Model::build(&cfg, &mut Held { src: &mut src, precision: base }, &Trainable::Lora(spec), &mut Rng::new(2), &Device::Cpu)
        .map_err(|e| anyhow!(e))?;
    drop(src);
    let load_s = t0.elapsed().as_secs_f64();
    // As the trainer does: the loading's temporaries go back, then freed memory is kept for the steps.
    crate::engine::alloc::release_free_memory();
    crate::engine::alloc::keep_freed_memory();
    let rss_loaded = crate::engine::sysmon::rss_bytes();
    let peak_loading = crate::engine::sysmon::peak_rss_bytes();
    let mut opt = AdamW::new(&model.trainable, 0.01, optim)?;
    let dt = super::train::timed_steps(&model, &mut opt, cfg.vocab_size, seq, steps, true)?;
    println!(
        "{}",
        serde_json::json!({
            "tokens_per_s": (seq * steps) as f64 / dt,
            "peak_rss": crate::engine::sysmon::peak_rss_bytes(),
            "rss_loaded": rss_loaded,
            "peak_loading": peak_loading,
            "load_s": load_s,
            "optim_state_bytes": opt.state_bytes(),
            "threads": rayon::current_num_threads(),
            "estimate": crate::engine::train::memory::memory_estimate(&cfg, &tc),
        })
    );
    Ok(())
}

pub fn run(steps: usize, seq: usize, phi2: bool, peer: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = checkpoint(phi2)?;
    let cfg = ModelConfig::load(&dir).map_err(|e| anyhow!(e.to_string()))?;
    let r = 16;
    let python = super::peer_python();
    let have_peer = peer
        && Command::new(&python).args(["-c", "import torch, peft, transformers, bitsandbytes"]).output().is_ok_and(|o| o.status.success());
    let script = std::env::temp_dir().join(format!("lathe-peer-qlora-{}.py", std::process::id()));
    if have_peer {
        std::fs::write(&script, PEER)?;
    }
    let (name, _) = shape(phi2);
    println!(
        "QLoRA step: {name} ({} layers, hidden {}, vocab {}), NF4 base (blocks of 64), LoRA r={r} on {}, seq {seq}, batch 1, gradient checkpointing, {steps} timed steps after one warm-up, f32 compute, on the CPU",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        LoraSpec::default_targets(cfg.family).join(",")
    );
    println!("machine: {}, {} cores; lathe {} (candle {})", super::cpu_model(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), env!("CARGO_PKG_VERSION"), crate::engine::info::engine_info().candle);
    println!("checkpoint: {} (random bf16 weights, read by both sides)", dir.display());
    if !have_peer {
        println!("(the peer is skipped: `pip install torch transformers peft bitsandbytes accelerate` (or set LATHE_PEER_PYTHON) to measure it beside lathe)");
    }
    println!("{:<10} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>9}", "optimizer", "lathe tok/s", "peer tok/s", "ratio", "lathe peak", "peer peak", "ratio", "lathe state", "peer state", "estimate");
    let mut peer_info = None;
    for optim in Optimizer::ALL {
        let args = ["bench", "train", "--qlora-child", "--model", &dir.display().to_string(), "--steps", &steps.to_string(), "--seq", &seq.to_string(), "--optim", optim.name()];
        let out = Command::new(&exe).args(args).output().context("running the lathe measurement")?;
        let ours = super::json_result(&out, "lathe")?;
        let theirs = if have_peer {
            let a = [script.display().to_string(), "--model".into(), dir.display().to_string(), "--steps".into(), steps.to_string(), "--seq".into(), seq.to_string(), "--gc".into(), "--optim".into(), optim.name().into(), "--r".into(), r.to_string()];
            let out = Command::new(&python).args(&a).output()?;
            match super::json_result(&out, "the peer") {
                Ok(v) => Some(v),
                Err(e) => {
                    println!("({} peer: {e})", optim.name());
                    None
                }
            }
        } else {
            None
        };
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        let (tps, peak, state, est) = (f(&ours, "tokens_per_s"), f(&ours, "peak_rss"), f(&ours, "optim_state_bytes"), f(&ours, "estimate"));
        let b = |x: f64| bytes(x as u64);
        match &theirs {
            Some(p) => println!(
                "{:<10} {tps:>11.1} {:>11.1} {:>6.2}x {:>11} {:>11} {:>6.2}x {:>11} {:>11} {:>9}",
                optim.name(),
                f(p, "tokens_per_s"),
                tps / f(p, "tokens_per_s").max(1e-9),
                b(peak),
                b(f(p, "peak_rss")),
                peak / f(p, "peak_rss").max(1.0),
                b(state),
                b(f(p, "optim_state_bytes")),
                b(est)
            ),
            None => println!("{:<10} {tps:>11.1} {:>11} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>9}", optim.name(), "-", "-", b(peak), "-", "-", b(state), "-", b(est)),
        }
        println!(
            "{:<10} lathe: load and quantize {:.1} s, RSS after loading {}, {} threads{}",
            "",
            f(&ours, "load_s"),
            b(f(&ours, "rss_loaded")),
            ours["threads"],
            theirs.as_ref().map(|p| format!("; peer: load {:.1} s, RSS after imports {}, {} threads", f(p, "load_s"), b(f(p, "rss_after_import")), p["threads"])).unwrap_or_default()
        );
        peer_info = peer_info.or(theirs);
    }
    if let Some(p) = peer_info {
        println!("peer: torch {}, transformers {}, peft {}, bitsandbytes {} (its peak includes about 1 GB for importing them)", p["torch"], p["transformers"], p["peft"], p["bitsandbytes"]);
    }
    // The other ways lathe can hold the base, lathe alone (the peer's QLoRA is NF4).
    println!("lathe with the base held otherwise (AdamW):");
    for base in [BasePrecision::Nf4Dq, BasePrecision::Bf16] {
        let args = ["bench", "train", "--qlora-child", "--model", &dir.display().to_string(), "--steps", &steps.to_string(), "--seq", &seq.to_string(), "--base", base.name()];
        let out = Command::new(&exe).args(args).output().context("running the lathe measurement")?;
        let v = super::json_result(&out, "lathe")?;
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "  {:<8} {:>6.1} tok/s, peak {}, estimate {}, RSS after loading {}",
            base.name(),
            f("tokens_per_s"),
            bytes(f("peak_rss") as u64),
            bytes(f("estimate") as u64),
            bytes(f("rss_loaded") as u64)
        );
    }
    println!("targets: tokens/s ratio >= 1.5x; peak RSS ratio <= 0.5x; TinyLlama peak < 2 GB, Phi-2 peak < 3.5 GB; 8-bit state <= 30% of AdamW's; estimate within 10% of the peak");
    let _ = std::fs::remove_file(&script);
    Ok(())
}
