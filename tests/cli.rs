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
    for word in ["CPU", "cpu0", "Memory", "Swap", "Disk", "lathe    RSS", "GPU"] {
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
