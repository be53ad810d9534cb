//! `scripts/setup.sh --check`, the set-up's own check of what the build reads: it passes on a
//! machine `make test` has set up, and a protoc that is not there is reported with the exact
//! packages to install on each platform (a missing include file once hid behind a found command).

use std::process::Command;

fn check(env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh"))
        .arg("--check")
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/setup.sh");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn this_machine_has_what_the_build_reads() {
    let (ok, text) = check(&[]);
    assert!(ok, "{text}");
    for item in ["C++ compiler", "cmake", "pkg-config", "libclang", "protoc", "protobuf includes", "tmux"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with("ok") && l.contains(item)), "{item} not found:\n{text}");
    }
    assert!(text.contains("google/protobuf/empty.proto"), "{text}");
}

#[test]
fn a_missing_protoc_is_reported_with_the_install_lines() {
    let (ok, text) = check(&[("PROTOC", "/nonexistent/protoc")]);
    assert!(!ok, "{text}");
    assert!(text.contains("MISSING  protoc") && text.contains("MISSING  protobuf includes"), "{text}");
    assert!(text.contains("apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev"), "{text}");
    assert!(text.contains("dnf install -y protobuf-compiler protobuf-devel"), "{text}");
    assert!(text.contains("brew install protobuf"), "{text}");
}
