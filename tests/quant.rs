//! Quantization that knows the data: the importance matrix lathe's candle forward pass collects
//! equals the one transformers' own forward pass gives with hooks on every projection
//! (tests/fixtures/imatrix/make.py made the reference), for Llama, Qwen2 and Phi; an export
//! quantized with it (computed from a view or a text, or read from a file) differs from one
//! without and loads in llama.cpp; and the sentences for a type that needs a matrix, a type the
//! model cannot take, a matrix for another model and a view too small.

use std::path::{Path, PathBuf};

use lathe::engine::export::gguf::{export_with, Quant};
use lathe::engine::export::imatrix::{self, Entry, Imatrix};
use lathe::engine::train::base::BasePrecision;
use lathe::engine::train::trainer::load_for_eval;

/// One test at a time: llama.cpp's threads spin while they wait, so two tests (or the report
/// processes they start) sharing this machine's cores slow each other down a hundredfold.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-quant-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_importance_matrix_equals_transformers_hooks() {
    let _turn = turn();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-phi"] {
        let reference = candle_core::safetensors::load(fixture("imatrix").join(format!("{name}.safetensors")), &candle_core::Device::Cpu).unwrap();
        let ids = reference["ids"].to_dtype(candle_core::DType::U32).unwrap().to_vec2::<u32>().unwrap();
        let (model, _) = load_for_eval(&fixture("models").join(name), None, BasePrecision::F32).unwrap();
        let stats = imatrix::collect(&model, &ids, &mut |_, _| true).unwrap();
        let wanted: Vec<String> = reference.keys().filter_map(|k| k.strip_suffix(".in_sum2")).map(str::to_string).collect();
        let mut got: Vec<String> = stats.sums.keys().cloned().collect();
        let mut wanted_sorted = wanted.clone();
        wanted_sorted.sort();
        got.sort();
        assert_eq!(got, wanted_sorted, "{name}: the projections collected");
        let mut worst = 0f64;
        for w in &wanted {
            let theirs = reference[&format!("{w}.in_sum2")].to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
            let count = reference[&format!("{w}.counts")].to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap()[0];
            let (ours, n) = &stats.sums[w];
            assert_eq!(*n as f64, count, "{name} {w}: tokens counted");
            for (a, b) in ours.iter().zip(&theirs) {
                let rel = (a - b).abs() / b.abs().max(1e-12);
                worst = worst.max(rel);
                assert!(rel <= 1e-3, "{name} {w}: {a} against transformers' {b}");
            }
        }
        eprintln!("{name}: {} projections, largest relative difference {worst:.2e}", wanted.len());
    }
}

fn lathe(home: &Path, args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(home).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

#[test]
fn exports_weighed_by_an_importance_matrix() {
    let _turn = turn();
    let dir = tmp("export");
    let model = fixture("models").join("tiny-llama");
    let text = dir.join("calibration.txt");
    let words = ["garden", "stone", "river", "light", "the", "and", "slowly", "grows"];
    std::fs::write(&text, (0..3000).map(|i| words[(i * 7 + i / 3) % words.len()]).collect::<Vec<_>>().join(" ")).unwrap();
    let home = dir.join("ws");

    // From a text file through the CLI: the matrix is saved beside the export, and the file
    // differs from the one made without it.
    let with = dir.join("with.gguf");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q4_0", "--imatrix", text.to_str().unwrap(), "--out", with.to_str().unwrap()]);
    assert!(ok, "{out}");
    let saved = dir.join("with.imatrix.gguf");
    let m = Imatrix::load(&saved).unwrap();
    assert_eq!(m.model.as_deref(), Some("tiny-llama"));
    assert_eq!(m.entries.len(), 14);
    assert!(m.tokens() >= 1000, "{}", m.tokens());
    std::fs::create_dir_all(dir.join("plain")).unwrap();
    let without = dir.join("plain").join("with.gguf");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q4_0", "--out", without.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(std::fs::read(&with).unwrap().len() == std::fs::read(&without).unwrap().len());
    assert!(std::fs::read(&with).unwrap() != std::fs::read(&without).unwrap(), "the importance matrix changed nothing");
    let g = lathe::engine::infer::llama::Gguf::load(&with).unwrap();
    let mut s = g.session(&lathe::engine::infer::llama::Options { ctx: 64, threads: 2, batch: 32 }).unwrap();
    assert!(s.logits(&[0, 20, 30, 40]).unwrap().iter().flatten().all(|x| x.is_finite()));

    // The saved matrix is read back as a file; a demo view's training split computes one too.
    // (the same name: the file's name is in its metadata)
    std::fs::create_dir_all(dir.join("again")).unwrap();
    let again = dir.join("again").join("with.gguf");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q4_0", "--imatrix", saved.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(std::fs::read(&with).unwrap() == std::fs::read(&again).unwrap(), "the same matrix from its file quantizes differently");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q8_0", "--imatrix", "chat", "--imatrix-tokens", "200", "--out", dir.join("view.gguf").to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(Imatrix::load(&dir.join("view.imatrix.gguf")).unwrap().datasets[0].contains("view chat (train split)"));

    // What is refused, and how it is said.
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "iq2_xs", "--out", dir.join("x.gguf").to_str().unwrap()]);
    assert!(!ok && out.contains("iq2_xs needs an importance matrix"), "{out}");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q4_k_m", "--out", dir.join("x.gguf").to_str().unwrap()]);
    assert!(!ok && out.contains("blocks of 256 values") && out.contains("rows of 64, 128"), "{out}");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q8_0", "--imatrix", "chat", "--imatrix-tokens", "100000000", "--out", dir.join("x.gguf").to_str().unwrap()]);
    assert!(!ok && out.contains("View chat's training split has") && out.contains("100000000 were asked for"), "{out}");
    let mut other = Imatrix { entries: Default::default(), datasets: vec!["notes".into()], chunk_count: 1, chunk_size: 512, model: Some("demo".into()) };
    other.entries.insert("blk.0.attn_q.weight".into(), Entry { sum2: vec![1.0; 128], count: 4.0 });
    let other_file = dir.join("other.imatrix.gguf");
    other.save(&other_file).unwrap();
    let e = export_with(&model, None, &dir.join("x.gguf"), Quant::Q4_0, Some(&other), None, &mut |_| {}).unwrap_err();
    assert!(e.contains("made for demo, not x") && e.contains("holds 128 inputs"), "{e}");
    let (ok, out) = lathe(&home, &["export", model.to_str().unwrap(), "--quant", "q4_0", "--imatrix", other_file.to_str().unwrap(), "--out", dir.join("x.gguf").to_str().unwrap()]);
    assert!(!ok && out.contains("made for demo"), "{out}");
    assert!(!dir.join("x.gguf").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The KL divergence of a file from itself is zero with the same top token everywhere; a q4_0
/// file diverges a little from its f16 base, and its perplexity and the base's are each what
/// `perplexity` gives alone.
#[test]
fn kl_divergence_from_the_base() {
    let _turn = turn();
    use lathe::engine::infer::{llama::Gguf, perplexity};
    use lathe::engine::export::gguf::export;
    let dir = tmp("kld");
    let model = fixture("models").join("tiny-llama");
    let (f16, q4) = (dir.join("f16.gguf"), dir.join("q4.gguf"));
    export(&model, None, &f16, Quant::F16, &mut |_| {}).unwrap();
    export(&model, None, &q4, Quant::Q4_0, &mut |_| {}).unwrap();
    let words = ["garden", "stone", "river", "light", "the", "and", "slowly", "grows"];
    let text: String = (0..1500).map(|i| words[(i * 5 + i / 7) % words.len()]).collect::<Vec<_>>().join(" ");
    let (b, q) = (Gguf::load(&f16).unwrap(), Gguf::load(&q4).unwrap());
    let same = perplexity::kl_divergence(&b, &b, &text, 64, 2, &mut |_, _, _| true).unwrap();
    // (the base's log-probabilities are kept in f32: 1e-8 of rounding)
    assert!(same.kld.abs() < 1e-7 && same.same_top == 1.0, "{same:?}");
    let d = perplexity::kl_divergence(&b, &q, &text, 64, 2, &mut |_, _, _| true).unwrap();
    assert!(d.kld > 1e-6 && d.kld < 1.0 && d.same_top > 0.3, "{d:?}");
    let alone = perplexity::perplexity(&q, &text, 64, 2, &mut |_, _, _| true).unwrap();
    assert!((alone.ppl - d.quant.ppl).abs() < 1e-9 * alone.ppl, "{} vs {}", alone.ppl, d.quant.ppl);
    let _ = std::fs::remove_dir_all(&dir);
}

fn lathe_stdout(home: &Path, args: &[&str]) -> (bool, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(home).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn labels(report: &serde_json::Value) -> Vec<String> {
    report["rows"].as_array().unwrap().iter().map(|r| format!("{}{}", r["quant"].as_str().unwrap(), if r["imatrix"].as_bool().unwrap() { "+imatrix" } else { "" })).collect()
}

/// `lathe quant report` on a view: each type without and with the importance matrix from the
/// view's training split, measured against the f16 export on the eval split's scored tokens (so
/// the f16 file's perplexity is exp of the eval loss candle computes on the same examples), with
/// exact match on the answers; a type the model cannot take is skipped with a sentence; the rows
/// are in lathe.quant_evals; a calibration view that shares examples with the eval split is
/// warned about with the count.
#[test]
fn a_quant_report_measures_each_type_on_held_out_data() {
    let _turn = turn();
    let dir = tmp("report");
    let model = fixture("models").join("tiny-llama");
    let m = model.to_str().unwrap();
    let home = dir.join("ws");
    let (ok, out, err) = lathe_stdout(&home, &["quant", "report", m, "--view", "chat", "--types", "q8_0,q4_0,q4_k_m", "--exact", "4", "--eval-tokens", "100000", "--json"]);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(labels(&r), ["f16", "q8_0", "q4_0", "q4_0+imatrix"]);
    let rows = r["rows"].as_array().unwrap();
    let f = |i: usize, k: &str| rows[i][k].as_f64().unwrap();
    assert_eq!(f(0, "kld"), 0.0);
    assert!(f(1, "kld") > 0.0 && f(1, "kld") < f(2, "kld"), "q8_0 is closer to f16 than q4_0: {rows:?}");
    assert!(f(3, "kld") > 0.0 && f(3, "kld") != f(2, "kld"), "the matrix changed nothing: {rows:?}");
    assert!(f(0, "size_bytes") > f(1, "size_bytes") && f(1, "size_bytes") > f(2, "size_bytes") && f(2, "size_bytes") == f(3, "size_bytes"));
    for row in rows {
        assert_eq!(row["exact_asked"], 4, "{row}");
        assert!(row["gen_tps"].as_f64().unwrap() > 0.0 && row["prompt_tps"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["chunks"], 75, "every eval example of chat is scored: {row}");
    }
    assert!(rows[3]["calibration"].as_str().unwrap().contains("view chat (train split)"), "{}", rows[3]);
    assert!(rows[1]["path"].is_null(), "files measured are not kept without --keep");
    let folder = PathBuf::from(r["folder"].as_str().unwrap());
    assert!(folder.join("tiny-llama.f16.gguf").exists() && folder.join("tiny-llama.imatrix.gguf").exists());
    assert_eq!(r["matrix"].as_str().map(PathBuf::from), Some(folder.join("tiny-llama.imatrix.gguf")), "the report names its matrix");
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 3, "the f16 file, its Modelfile and the matrix stay; nothing else");
    let notes = r["notes"].to_string();
    assert!(notes.contains("q4_k_m skipped: its 256-value blocks fit none of tiny-llama's matrices"), "{notes}");

    // The f16 file read by llama.cpp scores the eval split as candle's eval does.
    let (ok, out, err) = lathe_stdout(&home, &["eval", "--model", m, "--view", "chat", "--json"]);
    assert!(ok, "{err}");
    let candle: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (ours, theirs) = (f(0, "ppl"), candle["perplexity"].as_f64().unwrap());
    assert!((ours - theirs).abs() / theirs < 2e-3, "f16 through llama.cpp {ours} against candle's f32 {theirs}");

    // Kept in the catalog, listed, and shown with the best trade-off marked where there is one.
    let (ok, out, _) = lathe_stdout(&home, &["sql", "select count(*) as n from lathe.quant_evals where report = 'ID'".replace("ID", r["id"].as_str().unwrap()).as_str(), "--format", "csv"]);
    assert!(ok && out.lines().nth(1) == Some("4"), "{out}");
    let (ok, out, _) = lathe_stdout(&home, &["quant", "list"]);
    assert!(ok && out.contains("q4_0+imatrix") && out.contains(r["id"].as_str().unwrap()), "{out}");

    // A calibration view whose training split holds examples of the eval split: warned, counted.
    let (ok, _, err) = lathe_stdout(&home, &["data", "view", "create", "wide", "--sql", "SELECT messages FROM chat", "--format", "chat", "--eval-fraction", "0.01"]);
    assert!(ok, "{err}");
    let (ok, out, err) = lathe_stdout(&home, &["quant", "report", m, "--view", "chat", "--imatrix", "wide", "--types", "q4_0", "--exact", "0", "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let notes = r["notes"].to_string();
    let warned = notes.split(" of the 75 held-out examples are also in the calibration data (view wide (train split))").next().unwrap();
    let n: usize = warned.rsplit('"').next().unwrap().trim().parse().unwrap_or_else(|_| panic!("{notes}"));
    assert!(n > 0 && n < 75, "{notes}");

    // What is refused: a calibration view too small for the tokens asked, a matrix for another model.
    let (ok, _, err) = lathe_stdout(&home, &["quant", "report", m, "--view", "chat", "--imatrix", "chat", "--imatrix-tokens", "100000000", "--types", "q4_0"]);
    assert!(!ok && err.contains("View chat's training split has") && err.contains("100000000 were asked for"), "{err}");
    let mut other = Imatrix { entries: Default::default(), datasets: vec!["notes".into()], chunk_count: 1, chunk_size: 512, model: Some("demo".into()) };
    other.entries.insert("blk.0.attn_q.weight".into(), Entry { sum2: vec![1.0; 128], count: 4.0 });
    let other_file = dir.join("other.imatrix.gguf");
    other.save(&other_file).unwrap();
    let (ok, out, err) = lathe_stdout(&home, &["quant", "report", m, "--view", "chat", "--imatrix", other_file.to_str().unwrap(), "--types", "q4_0", "--json"]);
    assert!(!ok && err.contains("q4_0+imatrix could not be made"), "{err}");
    assert!(out.contains("q4_0+imatrix was not measured") && out.contains("made for demo"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a text: chunked as llama.cpp's perplexity tool chunks it (the f16 row's perplexity is
/// `lathe eval --gguf`'s on the same text), the calibration text being the measured one is
/// warned about, and a file that cannot be written (here: past a file-size limit, as a full disk
/// would refuse it) leaves no partial file and keeps the figures measured before it.
#[test]
fn a_quant_report_on_a_text_keeps_what_it_measured() {
    let _turn = turn();
    let dir = tmp("report-text");
    let model = fixture("models").join("tiny-llama");
    let m = model.to_str().unwrap();
    let home = dir.join("ws");
    let text = dir.join("notes.txt");
    let words = ["garden", "stone", "river", "light", "the", "and", "slowly", "grows"];
    std::fs::write(&text, (0..3000).map(|i| words[(i * 7 + i / 3) % words.len()]).collect::<Vec<_>>().join(" ")).unwrap();
    let t = text.to_str().unwrap();
    let (ok, out, err) = lathe_stdout(&home, &["quant", "report", m, "--text", t, "--imatrix", t, "--types", "q4_0", "--max-len", "64", "--eval-tokens", "1000000", "--keep", "--json"]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(labels(&r), ["f16", "q4_0", "q4_0+imatrix"]);
    assert!(r["notes"].to_string().contains("The calibration text is the text measured on"), "{}", r["notes"]);
    let rows = r["rows"].as_array().unwrap();
    let f16 = rows[0]["path"].as_str().unwrap();
    let (ok, out, err) = lathe_stdout(&home, &["eval", "--gguf", f16, "--text", t, "--max-len", "64", "--json"]);
    assert!(ok, "{err}");
    let alone: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = alone["perplexity"]["ppl"].as_f64().unwrap_or_else(|| panic!("{alone}"));
    assert!((rows[0]["ppl"].as_f64().unwrap() - want).abs() < 1e-4 * want, "{} against {want}", rows[0]["ppl"]);
    assert!(std::path::Path::new(rows[1]["path"].as_str().unwrap()).exists(), "--keep keeps the files");

    // q8_0 is larger than the limit, q4_0 smaller: q4_0 is measured and kept in the catalog,
    // q8_0 fails with a sentence and leaves nothing behind. (SIGXFSZ ignored: the write fails
    // with an error instead of killing the process, as ENOSPC would.)
    let q4 = rows[1]["size_bytes"].as_u64().unwrap();
    let limit_kib = (q4 + 40_000) / 1024;
    let script = format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\"");
    let o = std::process::Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_lathe"), "--home", home.to_str().unwrap(), "quant", "report", m, "--text", t, "--types", "q4_0,q8_0", "--imatrix", t, "--max-len", "64"])
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{out}{err}");
    assert!(out.contains("q8_0 was not measured: llama.cpp could not write the q8_0 file") && out.contains("if the disk is full"), "{out}{err}");
    assert!(err.contains("q8_0 could not be made (see the notes); the other files' figures are in lathe.quant_evals"), "{err}");
    let folder = PathBuf::from(r["folder"].as_str().unwrap());
    let left: Vec<String> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
    let (ok, out, _) = lathe_stdout(&home, &["quant", "list", "--json"]);
    assert!(ok);
    let kept: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let newest = kept[0]["report"].as_str().unwrap().to_string();
    let mut got: Vec<String> = kept.iter().filter(|r| r["report"] == newest.as_str()).map(|r| format!("{}{}", r["quant"].as_str().unwrap(), if r["imatrix"].as_bool().unwrap() { "+imatrix" } else { "" })).collect();
    got.sort();
    assert_eq!(got, ["f16", "q4_0", "q4_0+imatrix"]);

    // Before each file the free space is checked: on a file system with room for the f16 file
    // and a quarter more, q8_0 (about half the f16 file) is refused before a byte of it is
    // written, with both figures, and the f16 row measured before it stays. (A small tmpfs in a
    // mount namespace of the test's own, where the machine allows one.)
    if !std::process::Command::new("unshare").args(["-rm", "true"]).status().is_ok_and(|s| s.success()) {
        eprintln!("free-space check skipped: this machine does not allow `unshare -rm` (a mount namespace)");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let f16_bytes = rows[0]["size_bytes"].as_u64().unwrap();
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let size_kib = (f16_bytes + f16_bytes / 4) / 1024 + 16;
    let script = format!("mount -t tmpfs -o size={size_kib}k tmpfs \"$0\" && exec \"$@\"");
    let o = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script, small.to_str().unwrap(), env!("CARGO_BIN_EXE_lathe"), "--home", home.to_str().unwrap()])
        .args(["quant", "report", m, "--text", t, "--types", "q8_0", "--max-len", "64", "--out", small.to_str().unwrap()])
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("has ") && err.contains(" free and the q8_0 file needs about ") && err.contains("free space (or pass --out on another disk)"), "{out}{err}");
    let (ok, out, _) = lathe_stdout(&home, &["quant", "list", "--json"]);
    assert!(ok);
    let kept: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let in_small: Vec<&str> = kept.iter().filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(small.to_str().unwrap()))).map(|r| r["quant"].as_str().unwrap()).collect();
    assert_eq!(in_small, ["f16"], "the f16 row stays, no q8_0 row: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
