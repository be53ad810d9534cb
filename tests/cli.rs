//! The CLI as a user runs it: the built binary, its output and exit status.

use std::path::PathBuf;
use std::process::{Command, Output};

fn lathe(args: &[&str], home: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(args)
        .env("LATHE_HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .expect("run lathe")
}

fn home(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn version_and_help() {
    let h = home("v");
    let out = lathe(&["--version"], &h);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("lathe {}", env!("CARGO_PKG_VERSION")));
    let out = lathe(&["--help"], &h);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["sysinfo", "bench", "--home", "--theme", "--config"] {
        assert!(text.contains(word), "help lacks {word}:\n{text}");
    }
}

#[test]
fn sysinfo_text_and_json() {
    let h = home("s");
    let out = lathe(&["sysinfo"], &h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["CPU", "cpu0", "Memory", "Swap", "Disk", "lathe    RSS", "GPU", "llama.cpp:", "DuckDB: v"] {
        assert!(text.contains(word), "sysinfo lacks {word}:\n{text}");
    }
    let out = lathe(&["sysinfo", "--json"], &h);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let s = &v["sample"];
    assert!(!s["cpu_per_core"].as_array().unwrap().is_empty());
    assert!(s["mem_total"].as_u64().unwrap() > 0);
    assert!(s["proc_rss"].as_u64().unwrap() > 0);
    assert!(s["disk"]["total"].as_u64().unwrap() > 0);
    assert!(v["engines"]["duckdb"].as_str().unwrap().starts_with('v'));
    assert!(v["engines"]["llama_cpp"].as_str().unwrap().contains("CPU"));
    // Logs went to the workspace, not the terminal.
    let log = std::fs::read_to_string(h.join("logs/lathe.log")).unwrap();
    assert!(log.contains("lathe starting"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("lathe starting"));
}

#[test]
fn the_workstation_without_a_terminal_says_what_to_do() {
    let h = home("tty");
    let out = lathe(&[], &h);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal") && err.contains("lathe --help"), "{err}");
}

#[test]
fn an_unusable_home_is_a_clear_error() {
    let h = home("file");
    std::fs::create_dir_all(h.parent().unwrap()).unwrap();
    std::fs::write(&h, b"not a folder").unwrap();
    let out = lathe(&["sysinfo", "--home", h.join("ws").to_str().unwrap()], &h);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use") && err.contains("--home"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_file(&h).unwrap();
}

#[test]
fn unknown_subcommands_are_rejected_with_usage() {
    let out = lathe(&["frobnicate"], &home("u"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

#[test]
fn sql_and_data_from_the_command_line() {
    let h = home("sql");
    let out = lathe(&["sql", "select count(*) as n from instruct", "--format", "csv"], &h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n8000\n");

    let out = lathe(&["sql", "selec 1"], &h);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("lathe: SQL error") && err.trim().lines().count() == 1, "{err}");
    assert!(out.stdout.is_empty());

    let csv = h.join("pets.csv");
    std::fs::write(&csv, "name,legs\ncat,4\nbird,2\n").unwrap();
    let out = lathe(&["data", "import", csv.to_str().unwrap()], &h);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("imported pets: 2 rows, 2 columns from {}", csv.display()));
    let out = lathe(&["data", "import", csv.to_str().unwrap()], &h);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));

    let out = lathe(&["data", "list"], &h);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["chat", "instruct", "pets"] {
        assert!(text.contains(name), "{text}");
    }
    let out = lathe(&["data", "list", "--json"], &h);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    let jl = h.join("instruct.jsonl");
    let out = lathe(&["data", "export", "instruct", jl.to_str().unwrap()], &h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&jl).unwrap().lines().count(), 8000);
    let pq = h.join("adds.parquet");
    let out = lathe(&["data", "export", "--sql", "select * from instruct where task = 'add'", pq.to_str().unwrap()], &h);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("wrote 2000 rows to {}", pq.display()));

    let out = lathe(&["data", "drop", "pets"], &h);
    assert!(out.status.success());
    let out = lathe(&["data", "drop", "pets"], &h);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No dataset named pets"));
}

#[test]
fn training_views_from_the_command_line() {
    let h = home("views");
    let out = lathe(&["data", "view", "list"], &h);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("instruct") && text.contains("alpaca") && text.contains("chat"), "{text}");
    let out = lathe(&["data", "view", "create", "adds", "--sql", "select instruction, input, output from instruct where task = 'add'", "--format", "alpaca", "--eval-fraction", "0.1"], &h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("view adds: alpaca format"));
    let out = lathe(&["data", "view", "show", "adds", "--limit", "2", "--split", "eval"], &h);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("── adds #").count(), 2, "{text}");
    assert!(text.contains("instruction: Add the two numbers.") && text.contains("output: "), "{text}");
    let out = lathe(&["data", "view", "show", "chat", "--limit", "1"], &h);
    assert!(String::from_utf8_lossy(&out.stdout).contains("assistant: "));
    let out = lathe(&["data", "view", "create", "x", "--sql", "select 1 as y", "--format", "text"], &h);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a column named text"));

    // A view whose table is dropped is listed with why it cannot be read; the others still are.
    let csv = h.join("notes.csv");
    std::fs::write(&csv, "text\nhello\nworld\n").unwrap();
    assert!(lathe(&["data", "import", csv.to_str().unwrap()], &h).status.success());
    let out = lathe(&["data", "view", "create", "notes_text", "--sql", "select text from notes", "--format", "text"], &h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lathe(&["data", "drop", "notes"], &h).status.success());
    let out = lathe(&["data", "view", "list"], &h);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let broken = text.lines().find(|l| l.starts_with("notes_text")).unwrap_or_default();
    assert!(broken.contains("cannot be read: View notes_text no longer runs") && broken.contains("--replace"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("adds ") && l.contains("alpaca")), "{text}");
    let out = lathe(&["data", "view", "list", "--json"], &h);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = list.as_array().unwrap().iter().find(|v| v["name"] == "notes_text").unwrap();
    assert!(entry["error"].as_str().unwrap().contains("no longer runs"), "{entry}");
}

/// QLoRA from the shell: a LoRA run on a 4-bit base is recorded as qlora, its base precision is
/// kept on resume, and the model is evaluated as training sees it.
#[test]
fn qlora_from_the_command_line() {
    let h = home("qlora");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let m = model.to_str().unwrap();
    let text = |o: &Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // Packed to the full length, so that the sequences are as long as the estimate assumes.
    let out = lathe(&["train", "--model", m, "--view", "instruct", "--quant-base", "nf4", "--max-steps", "2", "--eval-every", "0", "--max-len", "128", "--packing"], &h);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("run ")).and_then(|l| l.split([' ', ':']).next()).unwrap().to_string();
    let out = lathe(&["sql", "--format", "csv", "select method, status, base, optimizer from lathe.runs"], &h);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().nth(1), Some("qlora,completed,nf4,adamw"), "{}", text(&out));
    // The memory estimate the form and --dry-run show is within 10% of the run's measured peak.
    let out = lathe(&["sql", "--format", "csv", "select peak_rss_bytes from lathe.runs"], &h);
    let peak: f64 = String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().parse().unwrap();
    let cfg = lathe::engine::train::config::ModelConfig::load(&model).unwrap();
    let tc = lathe::engine::train::spec::TrainConfig { quant_base: lathe::engine::train::base::BasePrecision::Nf4, max_len: 128, packing: true, ..Default::default() };
    let est = lathe::engine::train::memory::memory_estimate(&cfg, &tc) as f64;
    eprintln!("tiny QLoRA run: estimate {est}, measured peak {peak}");
    assert!((est - peak).abs() <= 0.1 * peak, "estimate {est} vs measured peak {peak}");
    // The base precision cannot change on resume, and full fine-tuning needs an f32 base.
    let out = lathe(&["train", "--resume", &id, "--quant-base", "f32"], &h);
    assert!(!out.status.success() && text(&out).contains("was started with a nf4 base"), "{}", text(&out));
    let out = lathe(&["train", "--model", m, "--view", "instruct", "--method", "full", "--quant-base", "nf4"], &h);
    assert!(!out.status.success() && text(&out).contains("Full fine-tuning trains every weight in f32"), "{}", text(&out));
    let out = lathe(&["train", "--resume", &id, "--optim", "adamw8bit"], &h);
    assert!(!out.status.success() && text(&out).contains("was started with adamw and resumes with it"), "{}", text(&out));
    let out = lathe(&["train", "--model", m, "--view", "instruct", "--quant-base", "nf3"], &h);
    assert!(!out.status.success() && text(&out).contains("use f32, bf16, nf4 or nf4-dq"), "{}", text(&out));
    // The other held precisions: bf16 (plain LoRA, half the memory) and NF4 with double-quantized scales.
    for (p, row) in [("bf16", "lora,completed,bf16"), ("nf4-dq", "qlora,completed,nf4-dq")] {
        let out = lathe(&["train", "--model", m, "--view", "instruct", "--quant-base", p, "--max-steps", "1", "--eval-every", "0", "--max-len", "64"], &h);
        assert!(out.status.success(), "{}", text(&out));
        let out = lathe(&["sql", "--format", "csv", &format!("select method, status, base from lathe.runs where base = '{p}'")], &h);
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().nth(1), Some(row), "{}", text(&out));
    }
    // The 4-bit model evaluates close to, but not exactly as, the f32 one.
    let loss = |p: &str| {
        let out = lathe(&["eval", "--model", m, "--view", "instruct", "--limit", "10", "--quant-base", p], &h);
        assert!(out.status.success(), "{}", text(&out));
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        s.split("mean token loss ").nth(1).unwrap().split(',').next().unwrap().parse::<f64>().unwrap()
    };
    let (f32_loss, nf4_loss, bf16_loss) = (loss("f32"), loss("nf4"), loss("bf16"));
    assert!(f32_loss != nf4_loss && (f32_loss - nf4_loss).abs() < 0.05, "f32 {f32_loss} vs nf4 {nf4_loss}");
    // bf16 rounds far less than 4 bits do.
    assert!((f32_loss - bf16_loss).abs() < (f32_loss - nf4_loss).abs(), "f32 {f32_loss} vs bf16 {bf16_loss} vs nf4 {nf4_loss}");
}
