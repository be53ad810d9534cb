//! The layers as a test: reads every file under src/, resolves its `crate::` and `super::` paths to
//! the modules they name, and fails when a layer imports one it must not, or when files import
//! each other round a circle. The rule (ARCHITECTURE.md): engine <- service <- {app, cli, server};
//! ui <- app; present is text that front ends print; bench drives the whole app as a user would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path under the crate root: ["engine", "infer", "llama"]; the crate root is [].
type Module = Vec<String>;

/// What each top-level module may not import. Anything unlisted is free (main.rs, lib.rs, bench).
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("engine", &["service", "app", "ui", "cli", "server", "bench", "present", "config"]),
    ("service", &["app", "ui", "cli", "server", "bench", "present"]),
    ("present", &["app", "ui", "cli", "server", "bench"]),
    ("ui", &["cli", "server", "bench"]),
    ("cli", &["app", "ui", "server", "bench"]),
    ("server", &["app", "ui", "cli", "bench"]),
    ("units", &["engine", "service", "app", "ui", "cli", "server", "bench", "present"]),
];

fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut m: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    m.pop();
                }
                out.insert(m, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The code of a file without its comments and its `#[cfg(test)]` tail (tests may reach further).
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every path a file names that starts at `crate` or `super`, with `use` groups expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        // Split the top level of a group by commas, leaving nested braces whole.
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, c) in tree.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&tree[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&tree[start..]);
        for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let part = part.split(" as ").next().unwrap().trim();
            match part.find('{') {
                Some(open) => {
                    let mut p = prefix.to_vec();
                    p.extend(part[..open].split("::").filter(|s| !s.is_empty()).map(str::to_string));
                    expand(&p, &part[open + 1..part.rfind('}').unwrap_or(part.len())], out);
                }
                None => {
                    let mut p = prefix.to_vec();
                    p.extend(part.split("::").filter(|s| !s.is_empty()).map(str::to_string));
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    // `use` statements, groups and all.
    for stmt in code.split(';') {
        // A `use` that starts its line (after `pub` or `pub(crate)`), not the word in a string.
        let at_line_start = |i: usize| {
            let line = stmt[..i].rsplit('\n').next().unwrap_or("").trim();
            line.is_empty() || line.starts_with("pub")
        };
        if let Some((i, _)) = stmt.match_indices("use ").find(|(i, _)| at_line_start(*i)) {
            let tree: String = stmt[i + 4..].split_whitespace().collect::<Vec<_>>().join(" ");
            if tree.starts_with("crate") || tree.starts_with("super") {
                expand(&[], &tree, &mut out);
            }
        }
    }
    // Paths written inline: crate::engine::sysmon::rss_bytes().
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
            let end = code[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).map_or(code.len(), |e| e + i);
            if boundary {
                out.push(code[i..end].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
            }
            from = end.max(i + 1);
        }
    }
    out
}

/// The module a path names: `crate`/`super` made absolute, then its longest prefix that is a file.
fn resolve(from: &Module, path: &[String], mods: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut abs: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super") => {
            abs = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                abs.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    abs.extend(rest.iter().cloned());
    (1..=abs.len()).rev().map(|n| abs[..n].to_vec()).find(|m| mods.contains_key(m))
}

fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mods = modules(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, file) in &mods {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let set = edges.entry(m.clone()).or_default();
        for p in paths(&text) {
            if let Some(target) = resolve(m, &p, &mods) {
                if &target != m && !target.is_empty() {
                    set.insert(target);
                }
            }
        }
    }
    edges
}

/// Groups of two or more files that reach each other (Tarjan's strongly connected components).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(v: &'a Module, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let Some((w, _)) = s.edges.get_key_value(w) else { continue };
            if !s.index.contains_key(w) {
                visit(w, s);
                let lw = s.low[w];
                s.low.insert(v, s.low[v].min(lw));
            } else if s.on.contains(w) {
                let iw = s.index[w];
                s.low.insert(v, s.low[v].min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), out: Vec::new() };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(v, &mut s);
        }
    }
    s.out
}

/// Every broken rule under `src`, one sentence each.
fn violations(src: &Path) -> Vec<String> {
    let edges = graph(src);
    let name = |m: &Module| if m.is_empty() { "(crate root)".to_string() } else { m.join("/") };
    let mut out = Vec::new();
    for (from, targets) in &edges {
        let Some(layer) = from.first() else { continue };
        let Some((_, banned)) = FORBIDDEN.iter().find(|(l, _)| l == layer) else { continue };
        for to in targets {
            if to.first().is_some_and(|t| banned.contains(&t.as_str())) {
                out.push(format!("{} imports {}: {layer} may not import {}", name(from), name(to), to[0]));
            }
        }
    }
    for c in circles(&edges) {
        out.push(format!("files import each other in a circle: {}", c.iter().map(name).collect::<Vec<_>>().join(", ")));
    }
    out
}

#[test]
fn lathe_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "the import graph breaks the layers:\n{}", found.join("\n"));
    // The reader sees the real graph: engines are imported by the front ends.
    let edges = graph(&src);
    let llama: Module = ["engine", "infer", "llama"].map(String::from).to_vec();
    assert!(edges.values().any(|t| t.contains(&llama)), "no file imports engine/infer/llama: the reader is broken");
}

/// The checker itself fails on a bad tree: an upward import, a grouped one, and a circle.
#[test]
fn a_bad_import_and_a_circle_are_caught() {
    let dir = std::env::temp_dir().join(format!("lathe-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod app;\npub mod cli;\npub mod engine;\n");
    write("app/mod.rs", "pub mod state;\n");
    write("app/state.rs", "pub struct App;\n");
    write("engine/mod.rs", "pub mod a;\npub mod b;\n");
    write("engine/a.rs", "use super::b::B;\n// use crate::app::state::App; (a comment is not an import)\npub struct A;\n");
    write("engine/b.rs", "use super::a::A;\npub struct B;\n#[cfg(test)]\nmod tests { use crate::app::state::App; }\n");
    write("cli/mod.rs", "use crate::{engine::a::A, app::{state::App}};\n");
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        vec![
            "cli imports app/state: cli may not import app".to_string(),
            "files import each other in a circle: engine/a, engine/b".to_string(),
        ]
    );
}
