//! `lathe bench embed`: sentence-embedding throughput and memory of lathe's candle BERT beside
//! sentence-transformers (same model, texts, batch size and threads), on a real corpus every
//! machine of this kind has: the Python standard library's sources, cut into paragraphs. The two
//! sides' vectors are compared too, so the figure is for the same work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::engine::embed::{EmbedSpec, Embedder, BATCH};
use crate::units::bytes;

const PEER: &str = include_str!("../../benches/peer_embed.py");

/// The Python standard library's folder, as `python3` reports it.
pub(crate) fn stdlib() -> anyhow::Result<PathBuf> {
    let out = Command::new(super::peer_python())
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .context("running python3 to find its standard library")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    anyhow::ensure!(dir.is_dir(), "python3 reported no standard library folder; the corpus is its sources, so install python3.");
    Ok(dir)
}

/// Up to `n` paragraphs (runs of lines between blank ones, joined up to about 1000 characters,
/// none under 80) from the `.py` files directly in `dir`, in name order.
pub fn corpus(dir: &Path, n: usize) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "py")).collect()).unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let mut cur = String::new();
        let keep = |t: String, out: &mut Vec<String>| {
            if t.trim().len() >= 80 {
                out.push(t);
            }
        };
        for para in text.split("\n\n") {
            if cur.len() + para.len() > 1000 && !cur.is_empty() {
                keep(std::mem::take(&mut cur), &mut out);
            }
            cur.push_str(para.trim_matches('\n'));
            cur.push('\n');
        }
        keep(cur, &mut out);
        if out.len() >= n {
            out.truncate(n);
            break;
        }
    }
    out
}

/// Embeds the texts in `texts` (JSON) in this process; writes the vectors to `out` and prints JSON.
pub fn child(model: &Path, texts: &Path, out: &Path) -> anyhow::Result<()> {
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(texts)?)?;
    let t0 = Instant::now();
    let e = Embedder::load(model)?;
    let load_s = t0.elapsed().as_secs_f64();
    // As the trainer does: each batch frees and reallocates the same large buffers.
    crate::engine::alloc::keep_freed_memory();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed(&refs[..BATCH.min(refs.len())], "")?;
    let t0 = Instant::now();
    let done = e.embed(&refs, "")?;
    let dt = t0.elapsed().as_secs_f64();
    let tokens: usize = refs.iter().map(|t| e.tokens(t).map(|v| v.len()).unwrap_or(0)).sum();
    let raw: Vec<u8> = done.vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out, raw)?;
    println!(
        "{}",
        serde_json::json!({
            "texts_per_s": texts.len() as f64 / dt,
            "tokens_per_s": tokens as f64 / dt,
            "tokens": tokens,
            "seconds": dt,
            "load_s": load_s,
            "truncated": done.truncated.len(),
            "peak_rss": crate::engine::sysmon::peak_rss_bytes(),
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}

fn read_vectors(path: &Path) -> anyhow::Result<Vec<f32>> {
    Ok(std::fs::read(path)?.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

pub fn run(model: &Path, n: usize, peer: bool) -> anyhow::Result<()> {
    let spec = EmbedSpec::read(model)?;
    let dir = stdlib()?;
    let texts = corpus(&dir, n);
    anyhow::ensure!(!texts.is_empty(), "no paragraphs found in {}", dir.display());
    let tmp = std::env::temp_dir().join(format!("lathe-bench-embed-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let texts_file = tmp.join("texts.json");
    std::fs::write(&texts_file, serde_json::to_string(&texts)?)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "Sentence embeddings: {} ({} pooling, {} dims, up to {} tokens), {} paragraphs of {} (*.py), batch {BATCH}, f32 on the CPU",
        spec.name,
        spec.pooling.name(),
        spec.dim,
        spec.max_len,
        texts.len(),
        dir.display()
    );
    println!("machine: {}, {threads} cores; lathe {} (candle {})", super::cpu_model(), env!("CARGO_PKG_VERSION"), crate::engine::info::engine_info().candle);
    let ours_file = tmp.join("lathe.bin");
    let exe = std::env::current_exe()?;
    let out = Command::new(&exe)
        .args(["bench", "embed", "--child", "--model", &model.display().to_string(), "--texts-file", &texts_file.display().to_string(), "--out", &ours_file.display().to_string()])
        .output()?;
    let ours = super::json_result(&out, "lathe")?;
    let python = super::peer_python();
    let have_peer = peer && Command::new(&python).args(["-c", "import sentence_transformers"]).output().is_ok_and(|o| o.status.success());
    let theirs = if have_peer {
        let script = tmp.join("peer_embed.py");
        std::fs::write(&script, PEER)?;
        let peer_file = tmp.join("peer.bin");
        let out = Command::new(&python)
            .args([script.display().to_string(), "--model".into(), model.display().to_string(), "--texts".into(), texts_file.display().to_string(), "--batch".into(), BATCH.to_string(), "--threads".into(), threads.to_string(), "--out".into(), peer_file.display().to_string()])
            .output()?;
        let v = super::json_result(&out, "the peer")?;
        let (a, b) = (read_vectors(&ours_file)?, read_vectors(&peer_file)?);
        let diff = if a.len() == b.len() { a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) } else { f32::NAN };
        Some((v, diff))
    } else {
        println!("(the peer is skipped: `pip install sentence-transformers` (or set LATHE_PEER_PYTHON) to measure it beside lathe)");
        None
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!("{:<22} {:>12} {:>12} {:>7}", "", "lathe", "peer", "ratio");
    let row = |name: &str, k: &str, unit: &str| match &theirs {
        Some((p, _)) => println!("{name:<22} {:>12} {:>12} {:>6.2}x", format!("{:.1}{unit}", f(&ours, k)), format!("{:.1}{unit}", f(p, k)), f(&ours, k) / f(p, k).max(1e-9)),
        None => println!("{name:<22} {:>12} {:>12} {:>7}", format!("{:.1}{unit}", f(&ours, k)), "-", "-"),
    };
    row("texts/s", "texts_per_s", "");
    row("tokens/s", "tokens_per_s", "");
    match &theirs {
        Some((p, _)) => println!("{:<22} {:>12} {:>12} {:>6.2}x", "peak RSS", bytes(f(&ours, "peak_rss") as u64), bytes(f(p, "peak_rss") as u64), f(&ours, "peak_rss") / f(p, "peak_rss").max(1.0)),
        None => println!("{:<22} {:>12}", "peak RSS", bytes(f(&ours, "peak_rss") as u64)),
    }
    println!("lathe: {} tokens, {} texts cut at {} tokens, load {:.2} s, {} threads", ours["tokens"], ours["truncated"], spec.max_len, f(&ours, "load_s"), ours["threads"]);
    if let Some((p, diff)) = &theirs {
        println!(
            "peer: sentence-transformers {}, torch {}, {} threads, {} tokens, load {:.2} s, RSS after imports {}",
            p["sentence_transformers"],
            p["torch"],
            p["threads"],
            p["tokens"],
            f(p, "load_s"),
            bytes(f(p, "rss_after_import") as u64)
        );
        println!("largest difference between the two sides' vectors: {diff:.2e}");
    }
    println!("target: lathe's texts/s at least the peer's (ratio >= 1.00x)");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The corpus is real and deterministic: paragraphs of the standard library, in file order.
#[cfg(test)]
mod tests {
    #[test]
    fn the_corpus_is_paragraphs_of_python_files() {
        let dir = std::env::temp_dir().join(format!("lathe-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body = "def f():\n    return 1\n\n".repeat(60);
        std::fs::write(dir.join("b.py"), &body).unwrap();
        std::fs::write(dir.join("a.py"), "x = 1\n").unwrap();
        std::fs::write(dir.join("c.txt"), "not python ".repeat(100)).unwrap();
        let texts = super::corpus(&dir, 3);
        assert_eq!(texts.len(), 2);
        assert!(texts.iter().all(|t| t.len() >= 80 && t.len() <= 1100 && t.contains("def f")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
