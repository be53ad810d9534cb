//! GGUF export and llama.cpp inference: the exported file must compute what lathe's candle model
//! computes (next-token logits, greedy tokens), and bad files get clear errors.

use std::path::{Path, PathBuf};

use candle_core::{Device, IndexOp, Tensor};
use lathe::engine::export::gguf::{export, Quant};
use lathe::engine::infer::llama::{Gguf, Options};
use lathe::engine::train::model::Ctx;
use lathe::engine::train::base::BasePrecision;
use lathe::engine::train::trainer::load_for_eval;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-gguf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Max |candle - llama.cpp| over every position's logits, relative to the logits' scale, and
/// whether greedy continuations agree.
fn compare(model_dir: &Path, gguf: &Path, ids: &[u32]) -> (f32, f32, Vec<u32>, Vec<u32>) {
    let (model, _) = load_for_eval(model_dir, None, BasePrecision::F32).unwrap();
    let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let ours = model.forward(&t, &mut Ctx::eval()).unwrap().i(0).unwrap().to_vec2::<f32>().unwrap();
    let g = Gguf::load(gguf).unwrap();
    let mut s = g.session(&Options { ctx: 256, threads: 2, batch: 64 }).unwrap();
    let theirs = s.logits(ids).unwrap();
    assert_eq!(theirs.len(), ids.len());
    let mut diff = 0f32;
    let mut scale = 0f32;
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.len(), b.len(), "vocabulary sizes differ");
        for (x, y) in a.iter().zip(b) {
            diff = diff.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    let ours_greedy = model.greedy(ids, 12, &[]).unwrap();
    let theirs_greedy = s.greedy(ids, 12).unwrap();
    (diff, scale, ours_greedy, theirs_greedy)
}

#[test]
fn exported_gguf_matches_candle_for_every_family() {
    let dir = tmp("parity");
    let ids: Vec<u32> = vec![1, 45, 77, 3, 120, 200, 9, 18, 64, 250, 31, 5];
    for name in ["tiny-llama", "tiny-qwen2", "tiny-phi"] {
        for (quant, tol) in [(Quant::F32, 1e-3f32), (Quant::F16, 2e-2)] {
            let out = dir.join(format!("{name}-{}.gguf", quant.name()));
            export(&fixture(name), None, &out, quant, &mut |_| {}).unwrap();
            let (diff, scale, a, b) = compare(&fixture(name), &out, &ids);
            eprintln!("{name} {}: max |logit diff| {diff:.2e} (logits up to {scale:.2}); greedy {a:?} vs {b:?}", quant.name());
            assert!(diff <= tol * scale.max(1.0), "{name} {}: logits differ by {diff}", quant.name());
            if quant == Quant::F32 {
                assert_eq!(a, b, "{name}: greedy tokens differ");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn lathe(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"));
    c.arg("--home").arg(home);
    c
}

fn run(c: &mut std::process::Command) -> (bool, String, String) {
    let o = c.output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A copy of a GGUF file with its metadata changed by `f`.
fn rewrite_metadata(src: &Path, dst: &Path, f: impl FnOnce(&mut std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>)) {
    use candle_core::quantized::gguf_file;
    let mut r = std::fs::File::open(src).unwrap();
    let c = gguf_file::Content::read(&mut r).unwrap();
    let mut meta = c.metadata.clone();
    f(&mut meta);
    let tensors: Vec<(String, candle_core::quantized::QTensor)> =
        c.tensor_infos.keys().map(|n| (n.clone(), c.tensor(&mut r, n, &Device::Cpu).unwrap())).collect();
    let m: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &m, &t).unwrap();
}

fn err_of(path: &Path) -> String {
    match Gguf::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn bad_gguf_files_get_clear_errors() {
    let dir = tmp("bad");
    let good = dir.join("good.gguf");
    export(&fixture("tiny-llama"), None, &good, Quant::F32, &mut |_| {}).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let not = dir.join("notes.gguf");
    std::fs::write(&not, "just some text, not a model").unwrap();
    assert!(err_of(&not).contains("is not a GGUF file"), "{}", err_of(&not));

    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(err_of(&cut).contains("is truncated"), "{}", err_of(&cut));

    let header = dir.join("header.gguf");
    let mut h = bytes[..64].to_vec();
    h[8..24].fill(0xff);
    std::fs::write(&header, h).unwrap();
    let e = err_of(&header);
    assert!(e.contains("damaged GGUF") || e.contains("truncated"), "{e}");

    // The same tensors under an architecture llama.cpp does not have.
    let arch = dir.join("arch.gguf");
    rewrite_metadata(&good, &arch, |m| {
        m.insert("general.architecture".into(), candle_core::quantized::gguf_file::Value::String("nosuchnet".into()));
    });
    let e = err_of(&arch);
    assert!(e.contains("could not load") && e.contains("nosuchnet"), "{e}");

    // A GGUF without a chat template takes the one in a tokenizer_config.json beside it.
    let bare_dir = dir.join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bare = bare_dir.join("bare.gguf");
    rewrite_metadata(&good, &bare, |m| {
        m.remove("tokenizer.chat_template");
    });
    assert_eq!(Gguf::load(&bare).unwrap().template, None);
    std::fs::write(bare_dir.join("tokenizer_config.json"), r#"{"chat_template": "{{ messages[0]['content'] }}"}"#).unwrap();
    assert_eq!(Gguf::load(&bare).unwrap().template.as_deref(), Some("{{ messages[0]['content'] }}"));

    // A model bigger than the memory there is (a sparse file: the header is real, the length 4 TiB).
    let huge = dir.join("huge.gguf");
    std::fs::write(&huge, &bytes).unwrap();
    std::fs::OpenOptions::new().write(true).open(&huge).unwrap().set_len(4 << 40).unwrap();
    let e = err_of(&huge);
    assert!(e.contains("of memory") && e.contains("is free"), "{e}");

    // Prompts: longer than the context, and a 100 KB paste; the session keeps working after both.
    let g = Gguf::load(&good).unwrap();
    let mut s = g.session(&Options { ctx: 64, threads: 2, batch: 32 }).unwrap();
    let long: Vec<u32> = (0..300).map(|i| 3 + i % 200).collect();
    // llama.cpp rounds the context up (to 256 here).
    assert!(s.context_size() >= 64 && s.context_size() < 300);
    let e = s.logits(&long).err().unwrap();
    assert!(e.contains("the context holds"), "{e}");
    let paste = "word ".repeat(20_000);
    let toks = g.tokenize(&paste);
    let st = lathe::engine::types::Sampling { temperature: 0.0, max_tokens: 4, ..Default::default() };
    let e2 = s.generate(&toks, &st, &Default::default(), &mut |_| {}).err().unwrap();
    assert!(e2.contains("The prompt is") && e2.contains("the context holds"), "{e2}");
    let (text, stats) = s.generate(&g.tokenize("hello"), &st, &Default::default(), &mut |_| {}).unwrap();
    assert!(stats.generated_tokens > 0 || !text.is_empty() || stats.stop == lathe::engine::types::StopReason::EndOfTurn);
    // OpenAI's logit_bias reaches the sampler: +100 on one token makes greedy decoding say it
    // every time (the fixture's tokenizer ends "hello" with the piece "o").
    let last = g.tokenize("hello").last().unwrap().0;
    let forced = lathe::engine::types::Sampling { logit_bias: vec![(last, 100.0)], ..st.clone() };
    let (biased, _) = s.generate(&g.tokenize("hi"), &forced, &Default::default(), &mut |_| {}).unwrap();
    let unit = biased.get(..biased.len() / 4).unwrap_or_default();
    assert!(!unit.is_empty() && biased == unit.repeat(4) && "hello".ends_with(unit), "{biased:?} (unbiased: {text:?})");

    // The CLI: an empty prompt, a missing model, a file that is not GGUF.
    let home = dir.join("home");
    let (ok, _, err) = run(lathe(&home).args(["chat", "--model", good.to_str().unwrap(), "--prompt", "  "]));
    assert!(!ok && err.contains("The prompt is empty"), "{err}");
    let (ok, _, err) = run(lathe(&home).args(["chat", "--model", "no-such-model", "--prompt", "hi"]));
    assert!(!ok && err.contains("No model \"no-such-model\""), "{err}");
    let (ok, _, err) = run(lathe(&home).args(["chat", "--model", not.to_str().unwrap(), "--prompt", "hi"]));
    assert!(!ok && err.contains("is not a GGUF file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An export that cannot be written (the disk fills) leaves neither the file nor a partial one.
#[test]
fn a_failed_export_leaves_no_file() {
    use std::os::unix::process::CommandExt;
    let dir = tmp("full");
    let out = dir.join("x.gguf");
    let mut c = lathe(&dir.join("home"));
    c.args(["export", fixture("tiny-llama").to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", "f32"]);
    // SAFETY: setrlimit only, in the child before exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 60_000, rlim_max: 60_000 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let (ok, _, err) = run(&mut c);
    assert!(!ok && err.contains("is the disk full?"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != "home").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // With room, the same export works and a Modelfile sits beside it.
    let (ok, stdout, err) = run(lathe(&dir.join("home")).args(["export", fixture("tiny-llama").to_str().unwrap(), "--out", out.to_str().unwrap(), "--quant", "q8_0"]));
    assert!(ok, "{err}");
    assert!(stdout.contains("q8_0") && out.exists() && dir.join("x.Modelfile").exists(), "{stdout}");
    Gguf::load(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newcomer's path: train the demo, export it, chat with it from the CLI, and score the GGUF
/// through llama.cpp on the held-out examples the run scored in candle.
#[test]
fn demo_trains_exports_and_chats() {
    let dir = tmp("demo");
    let home = dir.join("home");
    let (ok, out, err) = run(lathe(&home).args(["train", "--demo", "--max-steps", "400", "--exact-match", "40"]));
    assert!(ok, "{err}");
    let id = out.lines().find_map(|l| l.strip_prefix("run ")).and_then(|l| l.split(':').next()).unwrap().to_string();
    let line = out.lines().find(|l| l.contains("exact match on eval: ")).unwrap().to_string();
    let candle = line.split(": ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let gguf = dir.join("demo.gguf");
    let (ok, out, err) = run(lathe(&home).args(["export", &id, "--out", gguf.to_str().unwrap(), "--quant", "f32"]));
    assert!(ok && out.contains("wrote"), "{err}");
    // The export ran as a job of the service, recorded beside the training run's.
    // The file says where it came from, and offers a held-out question of its view to the chat.
    let g = Gguf::load(&gguf).unwrap();
    let desc = g.model.meta_val_str("general.description").unwrap();
    assert!(desc.contains(&id) && desc.contains("instruct"), "{desc}");
    let example = g.example.clone().expect("no example prompt in the export");
    let tasks = ["Add the two numbers.\n\n", "Reverse the letters", "Sort the letters", "How many letters"];
    assert!(tasks.iter().any(|t| example.starts_with(t)), "{example:?}");
    drop(g);
    let (ok, jobs, err) = run(lathe(&home).args(["sql", "--format", "csv", "SELECT kind, status FROM lathe.jobs ORDER BY job_id"]));
    assert!(ok && jobs.contains("train,done") && jobs.contains("export,done"), "{jobs} {err}");
    let (ok, out, err) = run(lathe(&home).args(["eval", "--gguf", gguf.to_str().unwrap(), "--view", "instruct", "--limit", "40"]));
    assert!(ok, "{err}");
    let ours = out.split(": ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let count = |s: &str| s.split('/').next().unwrap().parse::<i64>().unwrap();
    eprintln!("exact match: candle {candle}, llama.cpp {ours}");
    assert!((count(&candle) - count(&ours)).abs() <= 1, "candle {candle} vs llama.cpp {ours}");
    let (ok, out, err) = run(lathe(&home).args(["chat", "--model", gguf.to_str().unwrap(), "--prompt", "Reverse the letters of the word.\n\nabc", "--temp", "0", "--max-tokens", "8"]));
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty() || err.contains("EndOfTurn"), "{out} {err}");
    assert!(err.contains("prompt tokens") && err.contains("tok/s") && err.contains("context "), "{err}");

    // QLoRA on the trained demo: an adapter learned over its NF4 base, then exported merged into
    // the f32 base; llama.cpp's exact match on the export is within one example of lathe's own.
    let trained = home.join("runs").join(&id).join("model");
    let (ok, out, err) = run(lathe(&home).args([
        "train", "--model", trained.to_str().unwrap(), "--view", "instruct", "--quant-base", "nf4", "--optim", "adamw8bit",
        "--max-steps", "30", "--lr", "1e-3", "--exact-match", "40",
    ]));
    assert!(ok, "{err}");
    let qid = out.lines().find_map(|l| l.strip_prefix("run ")).and_then(|l| l.split([':', ' ']).next()).unwrap().to_string();
    let line = out.lines().find(|l| l.contains("exact match on eval: ")).unwrap().to_string();
    let qlora = line.split(": ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let qgguf = dir.join("qlora.gguf");
    let (ok, _, err) = run(lathe(&home).args(["export", &qid, "--out", qgguf.to_str().unwrap(), "--quant", "f32"]));
    assert!(ok, "{err}");
    let (ok, out, err) = run(lathe(&home).args(["eval", "--gguf", qgguf.to_str().unwrap(), "--view", "instruct", "--limit", "40"]));
    assert!(ok, "{err}");
    let exported = out.split(": ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    eprintln!("QLoRA exact match: candle on the nf4 base {qlora}, llama.cpp on the merged f32 export {exported}");
    assert!((count(&qlora) - count(&exported)).abs() <= 1, "nf4 {qlora} vs export {exported}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The library finds models where users keep them: the workspace, added paths, the Hugging Face
/// cache (refs/main picks the snapshot) and an Ollama store (a manifest names a GGUF blob).
#[test]
fn the_model_library_lists_every_store() {
    let dir = tmp("library");
    let home = dir.join("home");
    let models = home.join("models");
    std::fs::create_dir_all(&models).unwrap();
    export(&fixture("tiny-llama"), None, &models.join("mine.gguf"), Quant::Q8_0, &mut |_| {}).unwrap();
    std::fs::write(models.join("broken.gguf"), "junk").unwrap();
    let snap = dir.join("hub/models--acme--tiny-phi/snapshots/abc");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("tiny-phi").join(f), snap.join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.join("hub/models--acme--tiny-phi/refs")).unwrap();
    std::fs::write(dir.join("hub/models--acme--tiny-phi/refs/main"), "abc").unwrap();
    let ollama = dir.join("ollama");
    std::fs::create_dir_all(ollama.join("manifests/registry.ollama.ai/library/tiny")).unwrap();
    std::fs::create_dir_all(ollama.join("blobs")).unwrap();
    let e = export(&fixture("tiny-qwen2"), None, &ollama.join("blobs/sha256-0123"), Quant::F16, &mut |_| {}).unwrap_err();
    assert!(e.contains("should end in .gguf"), "{e}");
    export(&fixture("tiny-qwen2"), None, &dir.join("q.gguf"), Quant::F16, &mut |_| {}).unwrap();
    std::fs::rename(dir.join("q.gguf"), ollama.join("blobs/sha256-0123")).unwrap();
    std::fs::write(
        ollama.join("manifests/registry.ollama.ai/library/tiny/latest"),
        r#"{"layers":[{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:ffff"},{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:0123"}]}"#,
    )
    .unwrap();
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::copy(models.join("mine.gguf"), extra.join("other.gguf")).unwrap();
    let (ok, out, err) = run(lathe(&home).args(["models", "add", extra.to_str().unwrap()]));
    assert!(ok && out.contains("1 model"), "{err}");
    // A sentence-embedding folder is listed as an embedding model, not as one to train or chat with.
    let embed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed/tiny-bert-mean");
    let (ok, out, err) = run(lathe(&home).args(["models", "add", embed.to_str().unwrap()]));
    assert!(ok && out.contains("1 model"), "{out}{err}");
    let (ok, _, err) = run(lathe(&home).args(["models", "add", dir.join("nothing-here").to_str().unwrap()]));
    assert!(!ok && err.contains("Cannot add"), "{err}");
    let (ok, out, err) = run(lathe(&home).env("HF_HUB_CACHE", dir.join("hub")).env("OLLAMA_MODELS", &ollama).args(["models", "list", "--json"]));
    assert!(ok, "{err}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let find = |name: &str| list.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name} missing from {out}"));
    let mine = find("mine.gguf");
    assert_eq!((mine["source"].as_str(), mine["architecture"].as_str(), mine["quantization"].as_str()), (Some("workspace"), Some("llama"), Some("Q8_0")));
    assert!(mine["params"].as_u64().unwrap() > 50_000 && mine["context_length"].as_u64().unwrap() > 0 && mine["ram_needed"].as_u64().unwrap() > mine["file_size"].as_u64().unwrap());
    assert!(find("broken.gguf")["problem"].as_str().unwrap().contains("not a GGUF file"));
    assert_eq!(find("other.gguf")["source"], "added");
    let phi = find("acme/tiny-phi");
    assert_eq!((phi["source"].as_str(), phi["format"].as_str(), phi["architecture"].as_str()), (Some("huggingface"), Some("hf"), Some("phi")));
    let bert = find("tiny-bert-mean");
    assert_eq!((bert["format"].as_str(), bert["architecture"].as_str(), bert["context_length"].as_u64()), (Some("embedding"), Some("bert · mean · 32d"), Some(48)));
    assert!(bert["problem"].is_null() && bert["params"].as_u64().unwrap() > 10_000, "{bert}");
    let tiny = find("tiny:latest");
    assert_eq!((tiny["source"].as_str(), tiny["architecture"].as_str(), tiny["quantization"].as_str()), (Some("ollama"), Some("qwen2"), Some("F16")));
    // The table form says the same.
    let (_, table, _) = run(lathe(&home).env("HF_HUB_CACHE", dir.join("hub")).env("OLLAMA_MODELS", &ollama).args(["models", "list"]));
    assert!(table.contains("tiny:latest") && table.contains("acme/tiny-phi") && table.contains("! "), "{table}");
    // A library name is enough to chat: the Ollama store's model, an added file; a Hugging Face
    // folder is sent to export first.
    for name in ["tiny", "other"] {
        let (ok, _, err) = run(lathe(&home).env("HF_HUB_CACHE", dir.join("hub")).env("OLLAMA_MODELS", &ollama).args(["chat", "--model", name, "--prompt", "hi", "--max-tokens", "2"]));
        assert!(ok && err.contains("tok/s"), "{name}: {err}");
    }
    let (ok, _, err) = run(lathe(&home).env("HF_HUB_CACHE", dir.join("hub")).env("OLLAMA_MODELS", &ollama).args(["chat", "--model", "acme/tiny-phi", "--prompt", "hi"]));
    assert!(!ok && err.contains("export it first"), "{err}");
    let (ok, _, err) = run(lathe(&home).env("OLLAMA_MODELS", &ollama).args(["chat", "--model", "nope", "--prompt", "hi"]));
    assert!(!ok && err.contains("not in the model library"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SentencePiece-style tokenizer.json (BPE with byte fallback, ▁ for spaces, BOS added), as
/// Hugging Face's conversion of TinyLlama's and Llama 2's tokenizer.model looks.
fn spm_tokenizer() -> serde_json::Value {
    use serde_json::json;
    let mut vocab = serde_json::Map::new();
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.push("▁".into());
    tokens.extend("abcdefghijklmnopqrstuvwxyzT.,".chars().map(|c| c.to_string()));
    let merges = [
        ("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "c"), ("a", "t"), ("▁c", "at"), ("▁", "s"), ("▁s", "at"),
        ("▁", "o"), ("▁o", "n"), ("▁", "m"), ("▁m", "at"), ("i", "n"), ("e", "r"), ("▁", "T"), ("▁T", "he"),
    ];
    for (a, b) in merges {
        tokens.push(format!("{a}{b}"));
    }
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(i));
    }
    let special = |id: usize, s: &str| json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab,
            "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    })
}

/// TinyLlama's kind of tokenizer exports as llama.cpp's "llama" vocabulary: llama.cpp splits text
/// into the same tokens as Hugging Face's tokenizer, and the logits match.
#[test]
fn sentencepiece_tokenizers_export_and_tokenize_the_same() {
    let dir = tmp("spm");
    let folder = dir.join("spm-llama");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(f), folder.join(f)).unwrap();
    }
    std::fs::write(folder.join("tokenizer.json"), spm_tokenizer().to_string()).unwrap();
    std::fs::write(
        folder.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true}"#,
    )
    .unwrap();
    let out = dir.join("spm.gguf");
    export(&folder, None, &out, Quant::F32, &mut |_| {}).unwrap();
    let g = Gguf::load(&out).unwrap();
    let hf = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
    for text in ["the cat sat on the mat", "The cat.", "zebra quiz", "héllo ✓ ok", "  two  spaces", "thethe,cat"] {
        let ours: Vec<u32> = hf.encode(text, true).unwrap().get_ids().to_vec();
        let theirs: Vec<u32> = g.model.vocab().tokenize(text.as_bytes(), true, false).iter().map(|t| t.0 as u32).collect();
        assert_eq!(ours, theirs, "{text:?}");
    }
    let ids: Vec<u32> = hf.encode("the cat sat on the mat", true).unwrap().get_ids().to_vec();
    let (diff, scale, a, b) = compare(&folder, &out, &ids);
    assert!(diff <= 1e-3 * scale.max(1.0), "logits differ by {diff}");
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Models the export cannot write yet say so, and leave nothing behind.
#[test]
fn unsupported_models_are_refused_with_a_reason() {
    let dir = tmp("unsupported");
    let copy = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixture("tiny-llama").join(f), d.join(f)).unwrap();
        }
        d
    };
    // A Unigram tokenizer (T5-style) has no llama.cpp BPE vocabulary to become.
    let uni = copy("unigram");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(uni.join("tokenizer.json")).unwrap()).unwrap();
    let mut pieces: Vec<(String, u64)> = tok["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    pieces.sort_by_key(|p| p.1);
    let vocab: Vec<serde_json::Value> = pieces.iter().map(|(p, i)| serde_json::json!([p, -(*i as f64)])).collect();
    tok["model"] = serde_json::json!({"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": false});
    std::fs::write(uni.join("tokenizer.json"), tok.to_string()).unwrap();
    let e = export(&uni, None, &dir.join("u.gguf"), Quant::F16, &mut |_| {}).unwrap_err();
    assert!(e.contains("Unigram") && e.contains("BPE tokenizers"), "{e}");
    // Dynamic NTK rope scaling has no GGUF form yet.
    let yarn = copy("dynamic");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(yarn.join("config.json")).unwrap()).unwrap();
    cfg["rope_parameters"] = serde_json::json!({"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0});
    std::fs::write(yarn.join("config.json"), cfg.to_string()).unwrap();
    let e = export(&yarn, None, &dir.join("y.gguf"), Quant::F16, &mut |_| {}).unwrap_err();
    assert!(e.contains("dynamic rope scaling") && e.contains("does not write yet"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.path().is_file()).map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // An export of a run id that does not exist.
    let home = dir.join("home");
    let (ok, _, err) = run(lathe(&home).args(["export", "no-such-run"]));
    assert!(!ok && err.contains("neither a model folder nor a run id"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Ollama Modelfile beside an export: lathe's own formats (the plain one, the demo's) are
/// spelled out as Go templates with their stop words; a model with another template of its own
/// leaves the template and its stops to Ollama, which reads them from the GGUF.
#[test]
fn modelfiles_spell_out_lathes_own_templates_only() {
    let dir = tmp("modelfile");
    let modelfile = |model: &Path, name: &str| {
        let out = dir.join(format!("{name}.gguf"));
        let e = export(model, None, &out, Quant::F32, &mut |_| {}).unwrap();
        let text = std::fs::read_to_string(&e.modelfile).unwrap();
        assert!(text.contains(&format!("\nFROM ./{name}.gguf\n")), "{text}");
        text
    };
    let demo = modelfile(&fixture("tiny-llama"), "demo");
    assert!(demo.contains("TEMPLATE \"\"\"{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}<|user|>\n{{ .Prompt }}<|end|>\n<|assistant|>\n{{ .Response }}<|end|>\n\"\"\""), "{demo}");
    assert!(demo.contains("PARAMETER stop \"<|end|>\"\n"), "{demo}");
    // The same small model without a template, and with a ChatML one of its own.
    let variant = |name: &str, template: Option<&str>| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(fixture("tiny-qwen2")).unwrap().flatten().filter(|f| f.file_name() != "chat_template.jinja") {
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
        let cfg_path = d.join("tokenizer_config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg.as_object_mut().unwrap().remove("chat_template");
        if let Some(t) = template {
            cfg["chat_template"] = t.into();
        }
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        d
    };
    let plain = modelfile(&variant("plain-model", None), "plain");
    assert!(plain.contains("### Instruction:\n{{ .Prompt }}\n\n### Response:\n{{ .Response }}\n\n\"\"\"") && plain.contains("PARAMETER stop \"### Instruction:\"\n"), "{plain}");
    let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let own = modelfile(&variant("chatml-model", Some(chatml)), "own");
    assert!(!own.contains("TEMPLATE") && !own.contains("PARAMETER stop") && own.contains("tokenizer.chat_template"), "{own}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Text the tiny models read: words in a fixed pseudo-random order.
fn prose(words: usize) -> String {
    let vocab = ["the", "garden", "grows", "slowly", "under", "rain", "and", "light", "while", "bees", "visit", "every", "flower", "near", "old", "stone", "wall"];
    let mut x = 7u64;
    (0..words)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let w = vocab[(x >> 33) as usize % vocab.len()];
            if i % 11 == 10 { format!("{w}.\n") } else { w.to_string() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `lathe eval --gguf --text` scores as llama.cpp's perplexity tool does; here the same chunks
/// (BOS first, the second half of each scored) are scored again by lathe's own candle forward
/// pass of the same weights, and the two perplexities agree; the CLI prints it, and a text too
/// short for two chunks is refused with the count.
#[test]
fn gguf_perplexity_equals_candles_on_the_same_chunks() {
    use lathe::engine::infer::perplexity;
    let dir = tmp("ppl");
    let gguf = dir.join("tiny-llama-f32.gguf");
    export(&fixture("tiny-llama"), None, &gguf, Quant::F32, &mut |_| {}).unwrap();
    let text = prose(400);
    let g = Gguf::load(&gguf).unwrap();
    let n_ctx = 64;
    let ours = perplexity::perplexity(&g, &text, n_ctx, 2, &mut |_, _, _| true).unwrap();
    let tokens = perplexity::tokens(&g, &text);
    assert_eq!(ours.chunks, tokens.len() / n_ctx);
    assert_eq!(ours.scored, ours.chunks * (n_ctx / 2 - 1));

    let (model, _) = load_for_eval(&fixture("tiny-llama"), None, BasePrecision::F32).unwrap();
    // BOS first where the model wants one (this byte-level vocabulary does not: the chunk is
    // scored as it is).
    let bos = g.model.vocab().should_add_bos().then(|| g.model.vocab().bos().0 as u32);
    let (mut sum, mut n) = (0f64, 0usize);
    for c in 0..ours.chunks {
        let mut ids: Vec<u32> = tokens[c * n_ctx..(c + 1) * n_ctx].iter().map(|t| t.0 as u32).collect();
        if let Some(b) = bos {
            ids[0] = b;
        }
        let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let rows = model.forward(&t, &mut Ctx::eval()).unwrap().i(0).unwrap().to_vec2::<f32>().unwrap();
        for pos in n_ctx / 2..n_ctx - 1 {
            sum += perplexity::nll(&rows[pos], ids[pos + 1] as usize);
            n += 1;
        }
    }
    let candle = (sum / n as f64).exp();
    eprintln!("perplexity: llama.cpp {:.5} +/- {:.5}, candle {candle:.5} over {n} tokens", ours.ppl, ours.ppl_err);
    assert_eq!(n, ours.scored);
    assert!((ours.ppl - candle).abs() <= 1e-3 * candle, "llama.cpp {} vs candle {candle}", ours.ppl);

    let home = dir.join("ws");
    let file = dir.join("notes.txt");
    std::fs::write(&file, &text).unwrap();
    let (ok, out, err) = run(lathe(&home).args(["eval", "--gguf", gguf.to_str().unwrap(), "--text", file.to_str().unwrap(), "--max-len", "64", "--json"]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!((v["perplexity"]["ppl"].as_f64().unwrap() - ours.ppl).abs() < 1e-9 * ours.ppl, "{v}");
    std::fs::write(&file, prose(20)).unwrap();
    let (ok, _, err) = run(lathe(&home).args(["eval", "--gguf", gguf.to_str().unwrap(), "--text", file.to_str().unwrap(), "--max-len", "64"]));
    assert!(!ok && err.contains("needs at least 128 (two chunks)"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
