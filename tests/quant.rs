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
    let e = export_with(&model, None, &dir.join("x.gguf"), Quant::Q4_0, Some(&other), &mut |_| {}).unwrap_err();
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
    assert!(same.kld.abs() < 1e-9 && same.same_top == 1.0, "{same:?}");
    let d = perplexity::kl_divergence(&b, &q, &text, 64, 2, &mut |_, _, _| true).unwrap();
    assert!(d.kld > 1e-6 && d.kld < 1.0 && d.same_top > 0.3, "{d:?}");
    let alone = perplexity::perplexity(&q, &text, 64, 2, &mut |_, _, _| true).unwrap();
    assert!((alone.ppl - d.quant.ppl).abs() < 1e-9 * alone.ppl, "{} vs {}", alone.ppl, d.quant.ppl);
    let _ = std::fs::remove_dir_all(&dir);
}
