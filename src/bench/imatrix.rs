//! `lathe bench imatrix`: what computing an importance matrix costs at TinyLlama-1.1B shapes,
//! against the forward pass that `lathe eval` makes over the same tokens (the bound: no
//! slower than the forward passes themselves) and against the usual Python way (PyTorch +
//! transformers with a forward pre-hook on every projection) on the same CPU. Random f32 weights:
//! the time does not depend on them. Each side runs in its own process so its peak RSS is its own.

use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context};
use candle_core::Device;

use crate::engine::export::imatrix;
use crate::engine::train::model::{Model, Trainable};
use crate::engine::train::rng::Rng;
use crate::engine::train::text::Encoded;
use crate::units::bytes;

const PEER: &str = include_str!("../../benches/peer_imatrix.py");

/// Micro-batch of `lathe eval`'s forward pass (cli::train::eval).
const EVAL_MICRO: usize = 4;

/// `chunks` sequences of `seq` random token ids, the same on each side's count (not its values:
/// the peer draws its own).
fn chunks(chunks: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(11);
    (0..chunks).map(|_| (0..seq).map(|_| rng.below(vocab) as u32).collect()).collect()
}

/// Measures lathe in this process and prints {"forward_tokens_per_s", "imatrix_tokens_per_s",
/// "peak_rss", "threads"}: first `lathe eval`'s forward pass (whole model with its head, mean
/// loss, micro-batches of 4), then the importance matrix (`imatrix::collect`, the function
/// `lathe export --imatrix` and `lathe quant report` call) over the same ids.
pub fn child(n: usize, seq: usize, layers: usize) -> anyhow::Result<()> {
    let cfg = super::train::tinyllama(layers);
    let model = Model::build(&cfg, &mut super::train::FastInit(Rng::new(1)), &Trainable::None, &mut Rng::new(2), &Device::Cpu).map_err(|e| anyhow!(e))?;
    let ids = chunks(n, seq, cfg.vocab_size);
    let tokens = (n * seq) as f64;
    // Warm-up: one short pass of each.
    let short = vec![ids[0][..16].to_vec()];
    imatrix::collect(&model, &short, &mut |_, _| true).map_err(|e| anyhow!(e))?;
    let units: Vec<Encoded> = ids.iter().map(|c| Encoded { train: vec![true; c.len()], ids: c.clone() }).collect();
    let t = Instant::now();
    let loss = crate::engine::train::step::mean_loss(&model, &units, EVAL_MICRO, 0)?;
    let forward = tokens / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let stats = imatrix::collect(&model, &ids, &mut |_, _| true).map_err(|e| anyhow!(e))?;
    let with_matrix = tokens / t.elapsed().as_secs_f64();
    // Every projection of every block, each having read every token.
    let rows_ok = stats.sums.values().all(|(_, rows)| *rows as usize == n * seq);
    anyhow::ensure!(stats.sums.len() == 7 * layers && rows_ok, "the matrix does not cover every projection");
    anyhow::ensure!(loss.is_finite(), "the forward pass gave a loss of {loss}");
    println!(
        "{}",
        serde_json::json!({"forward_tokens_per_s": forward, "imatrix_tokens_per_s": with_matrix,
            "peak_rss": crate::engine::sysmon::peak_rss_bytes(), "threads": rayon::current_num_threads()})
    );
    Ok(())
}

struct Side {
    forward: f64,
    imatrix: f64,
    peak: u64,
    threads: u64,
    version: Option<String>,
}

fn parse(out: &std::process::Output, what: &str) -> anyhow::Result<Side> {
    let v = super::json_result(out, what)?;
    Ok(Side {
        forward: v["forward_tokens_per_s"].as_f64().unwrap_or(0.0),
        imatrix: v["imatrix_tokens_per_s"].as_f64().unwrap_or(0.0),
        peak: v["peak_rss"].as_u64().unwrap_or(0),
        threads: v["threads"].as_u64().unwrap_or(0),
        version: v["torch"].as_str().map(str::to_string),
    })
}

pub fn run(n: usize, seq: usize, layers: usize, peer: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let have_torch = peer && Command::new(super::peer_python()).args(["-c", "import torch, transformers"]).output().is_ok_and(|o| o.status.success());
    println!(
        "importance matrix at TinyLlama-1.1B shapes ({layers} layers, hidden 2048, vocab 32000), {n} sequences of {seq} tokens ({} tokens), f32 on the CPU",
        n * seq
    );
    println!(
        "machine: {}, {} cores; lathe {} (candle {})",
        super::cpu_model(),
        super::cores(),
        env!("CARGO_PKG_VERSION"),
        crate::engine::info::engine_info().candle
    );
    let args = ["bench", "imatrix", "--child", "--chunks", &n.to_string(), "--seq", &seq.to_string(), "--layers", &layers.to_string()];
    let lathe = parse(&Command::new(&exe).args(args).output().context("running the lathe measurement")?, "lathe")?;
    let torch = if have_torch {
        let script = std::env::temp_dir().join(format!("lathe-peer-imatrix-{}.py", std::process::id()));
        std::fs::write(&script, PEER)?;
        let out = Command::new(super::peer_python())
            .arg(&script)
            .args(["--chunks", &n.to_string(), "--seq", &seq.to_string(), "--layers", &layers.to_string()])
            .output();
        let _ = std::fs::remove_file(&script);
        Some(parse(&out?, "the PyTorch peer")?)
    } else {
        println!("(PyTorch peer skipped: `pip install torch transformers` (or set LATHE_PEER_PYTHON) to measure it beside lathe)");
        None
    };
    match &torch {
        Some(t) => println!("threads: lathe {} (rayon), torch {} ({})", lathe.threads, t.threads, t.version.as_deref().unwrap_or("?")),
        None => println!("threads: lathe {} (rayon)", lathe.threads),
    }
    println!("{:<44} {:>12} {:>12} {:>7}", "", "lathe tok/s", "torch tok/s", "ratio");
    let row = |label: &str, l: f64, t: Option<f64>| match t {
        Some(t) => println!("{label:<44} {l:>12.1} {t:>12.1} {:>6.2}x", l / t),
        None => println!("{label:<44} {l:>12.1} {:>12} {:>7}", "-", "-"),
    };
    row("forward pass (lathe eval: whole model, loss)", lathe.forward, torch.as_ref().map(|t| t.forward));
    row("importance matrix (no head, every projection)", lathe.imatrix, torch.as_ref().map(|t| t.imatrix));
    match &torch {
        Some(t) => println!("{:<44} {:>12} {:>12} {:>6.2}x", "peak RSS", bytes(lathe.peak), bytes(t.peak), lathe.peak as f64 / t.peak as f64),
        None => println!("{:<44} {:>12}", "peak RSS", bytes(lathe.peak)),
    }
    let ratio = lathe.imatrix / lathe.forward;
    println!(
        "target: the matrix no slower than the forward pass: {ratio:.2}x its tokens/s ({})",
        if ratio >= 1.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
