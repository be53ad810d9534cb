//! Ingest: files, folders and globs into a collection, changing only what changed. First every
//! file is listed and hashed (nothing is held but its path, size and hash); files whose hash the
//! collection already has are skipped. Then the new and changed ones are read again, chunked
//! along their structure, embedded, and committed a few hundred chunks at a time: each commit
//! replaces whole documents (a changed file's old chunks go in the same commit as its new ones
//! arrive), so a run killed at any moment leaves the collection at its last commit, and the next
//! run skips what that commit holds. Files gone from a source lose their chunks at the end. Binary,
//! unreadable and oversized files are skipped, each with its reason.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::chunk::{chunk, Kind};
use super::store::{ChunkRow, Collection, KbError};
use crate::engine::embed::Embedder;

/// Folders a walk never enters (besides hidden ones).
const SKIP_DIRS: [&str; 3] = ["node_modules", "__pycache__", "target"];

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Files above this are skipped.
    pub max_file_bytes: u64,
    /// Chunks per commit.
    pub commit_chunks: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { max_file_bytes: 16 << 20, commit_chunks: 256 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Scanning,
    Embedding,
    Indexing,
}

/// Where an ingest is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    pub files_done: usize,
    pub files_total: usize,
    pub chunks: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub chunks_per_s: f64,
    pub eta_s: Option<f64>,
}

impl Progress {
    pub fn fraction(&self) -> Option<f32> {
        (self.phase == Phase::Embedding && self.bytes_total > 0).then(|| (self.bytes_done as f64 / self.bytes_total as f64) as f32)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub chunks: usize,
    pub skipped: Vec<Skipped>,
    /// Chunks cut at the model's maximum length.
    pub truncated: usize,
    pub seconds: f64,
    pub indices: Vec<String>,
    pub cancelled: bool,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A source as the collection records it: an absolute path or glob pattern. A path that does not
/// exist, or a pattern that matches nothing, is refused.
pub fn normalize_source(s: &str) -> Result<String, KbError> {
    let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
    if has_glob(s) {
        let pattern = abs(Path::new(s)).display().to_string();
        let any = glob::glob(&pattern).map_err(|e| KbError::NoPath(format!("{s} ({e})")))?.flatten().any(|p| p.is_file());
        return if any { Ok(pattern) } else { Err(KbError::NoPath(format!("{s} (the pattern matches no file)"))) };
    }
    let p = abs(Path::new(s));
    p.canonicalize().map(|p| p.display().to_string()).map_err(|_| KbError::NoPath(s.to_string()))
}

/// Whether a document at `path` comes from `source`.
fn belongs(path: &str, source: &str) -> bool {
    if has_glob(source) {
        glob::Pattern::new(source).is_ok_and(|p| p.matches(path))
    } else {
        path == source || path.strip_prefix(source).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The files a source names, and the kind each is read as. A folder gives the files of kinds
/// lathe reads (others are left alone); a file or a glob's match of an unknown kind is read as text.
fn files_of(source: &str) -> Vec<(PathBuf, Kind)> {
    if has_glob(source) {
        let Ok(paths) = glob::glob(source) else { return Vec::new() };
        return paths.flatten().filter(|p| p.is_file()).map(|p| (p.clone(), Kind::of(&p).unwrap_or(Kind::Text))).collect();
    }
    let root = Path::new(source);
    if root.is_file() {
        return vec![(root.to_path_buf(), Kind::of(root).unwrap_or(Kind::Text))];
    }
    let walk = walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        e.depth() == 0 || !(name.starts_with('.') || (e.file_type().is_dir() && SKIP_DIRS.contains(&name.as_ref())))
    });
    walk.flatten().filter(|e| e.file_type().is_file()).filter_map(|e| Some((e.path().to_path_buf(), Kind::of(e.path())?))).collect()
}

/// A file's text, or why it is skipped.
fn read_text(path: &Path, max: u64) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| reason(&e))?.len();
    if len > max {
        return Err(format!("larger than {} MiB", max >> 20));
    }
    let bytes = std::fs::read(path).map_err(|e| reason(&e))?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err("binary".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "vanished during ingest".into(),
        std::io::ErrorKind::PermissionDenied => "not readable (permission denied)".into(),
        _ => format!("not readable ({e})"),
    }
}

fn hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
}

/// The passage prompt of the model (e5's "passage: "), if it has one.
fn document_prompt(embedder: &Embedder) -> String {
    ["document", "passage"].iter().find_map(|n| embedder.spec.prompts.get(*n).cloned()).unwrap_or_default()
}

/// The token budget of a chunk: three quarters of what the model takes (room for the headings put
/// before it when embedded), at most 384.
pub fn budget(embedder: &Embedder) -> usize {
    let prompt = embedder.tokens(&document_prompt(embedder)).map(|t| t.len()).unwrap_or(2);
    (embedder.spec.max_len.min(512).saturating_sub(prompt) * 3 / 4).clamp(16, 384)
}

/// What the model embeds for a chunk: its headings, then its text.
pub fn embed_text(c: &ChunkRow) -> String {
    if c.headings.is_empty() {
        c.text.clone()
    } else {
        format!("{}\n\n{}", c.headings, c.text)
    }
}

struct Pending {
    paths: Vec<String>,
    rows: Vec<ChunkRow>,
}

/// Ingests `sources` (as `normalize_source` gives them) into `coll`. `prune`: documents of these
/// sources that are no longer there lose their chunks.
pub fn ingest(
    coll: &mut Collection,
    embedder: &Embedder,
    sources: &[String],
    opts: &IngestOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, KbError> {
    let start = Instant::now();
    let mut report = Report::default();
    let known = coll.documents()?;
    let mut p = Progress { phase: Phase::Scanning, files_done: 0, files_total: 0, chunks: 0, bytes_done: 0, bytes_total: 0, chunks_per_s: 0.0, eta_s: None };
    progress(&p);

    // 1. List and hash.
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<(String, Kind, u64, bool)> = Vec::new();
    for source in sources {
        for (path, kind) in files_of(source) {
            let key = path.display().to_string();
            if !seen.insert(key.clone()) {
                continue;
            }
            if cancel.load(Ordering::Relaxed) {
                report.cancelled = true;
                return Ok(report);
            }
            match read_text(&path, opts.max_file_bytes) {
                Err(why) => report.skipped.push(Skipped { path: key, reason: why }),
                Ok(text) => match known.get(&key) {
                    Some(h) if *h == hash(&text) => report.unchanged += 1,
                    had => todo.push((key, kind, text.len() as u64, had.is_some())),
                },
            }
        }
    }
    let gone: Vec<String> = known.keys().filter(|k| !seen.contains(*k) && sources.iter().any(|s| belongs(k, s))).cloned().collect();

    // 2. Chunk, embed, commit.
    p.phase = Phase::Embedding;
    p.files_total = todo.len();
    p.bytes_total = todo.iter().map(|t| t.2).sum();
    progress(&p);
    let prompt = document_prompt(embedder);
    let budget = budget(embedder);
    let overlap = budget / 8;
    let count = |s: &str| embedder.tokens(s).map(|t| t.len().saturating_sub(2)).unwrap_or(s.len() / 4);
    let mut pending = Pending { paths: Vec::new(), rows: Vec::new() };
    let mut vanished = Vec::new();
    let embed_start = Instant::now();
    for (path, kind, size, had) in todo {
        if cancel.load(Ordering::Relaxed) {
            report.cancelled = true;
            break;
        }
        let text = match read_text(Path::new(&path), opts.max_file_bytes) {
            Ok(t) => t,
            Err(why) => {
                if had {
                    vanished.push(path.clone());
                }
                report.skipped.push(Skipped { path, reason: why });
                continue;
            }
        };
        let file_hash = hash(&text);
        for c in chunk(&text, kind, budget, overlap, &count) {
            let (first, last) = (c.first_line as u32, c.last_line as u32);
            pending.rows.push(ChunkRow {
                chunk_id: ChunkRow::id_of(&path, first, &c.text),
                path: path.clone(),
                first_line: first,
                last_line: last,
                headings: c.headings.join(" > "),
                hash: hash(&c.text),
                text: c.text,
                file_hash: file_hash.clone(),
                vector: Vec::new(),
            });
        }
        pending.paths.push(path);
        if had {
            report.updated += 1;
        } else {
            report.added += 1;
        }
        p.files_done += 1;
        p.bytes_done += size;
        if pending.rows.len() >= opts.commit_chunks {
            if !flush(coll, embedder, &prompt, &mut pending, &mut report, cancel)? {
                report.cancelled = true;
                break;
            }
            p.chunks = report.chunks;
            p.chunks_per_s = report.chunks as f64 / embed_start.elapsed().as_secs_f64().max(1e-3);
            let rate = p.bytes_done as f64 / embed_start.elapsed().as_secs_f64().max(1e-3);
            p.eta_s = (rate > 0.0).then(|| (p.bytes_total - p.bytes_done) as f64 / rate);
            progress(&p);
        }
    }
    if report.cancelled {
        report.seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    if !flush(coll, embedder, &prompt, &mut pending, &mut report, cancel)? {
        report.cancelled = true;
        report.seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    p.chunks = report.chunks;
    progress(&p);

    // 3. Documents gone, then upkeep.
    let removed: Vec<String> = gone.into_iter().chain(vanished).collect();
    coll.replace(&removed, &[])?;
    report.removed = removed.len();
    p.phase = Phase::Indexing;
    progress(&p);
    coll.compact()?;
    report.indices = coll.update_indices()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Embeds the pending chunks and commits them with their documents; false when cancelled first.
fn flush(coll: &mut Collection, embedder: &Embedder, prompt: &str, pending: &mut Pending, report: &mut Report, cancel: &AtomicBool) -> Result<bool, KbError> {
    if pending.paths.is_empty() {
        return Ok(true);
    }
    let texts: Vec<String> = pending.rows.iter().map(embed_text).collect();
    let mut at = 0;
    for part in texts.chunks(64) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let refs: Vec<&str> = part.iter().map(String::as_str).collect();
        let done = embedder.embed(&refs, prompt)?;
        report.truncated += done.truncated.len();
        for v in done.vectors {
            pending.rows[at].vector = v;
            at += 1;
        }
    }
    coll.replace(&pending.paths, &pending.rows)?;
    report.chunks += pending.rows.len();
    pending.paths.clear();
    pending.rows.clear();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_belong_to_their_sources() {
        assert!(belongs("/a/b/c.md", "/a/b"));
        assert!(belongs("/a/b/c.md", "/a/b/c.md"));
        assert!(!belongs("/a/bc/d.md", "/a/b"));
        assert!(belongs("/a/b/c.md", "/a/*/*.md"));
        assert!(!belongs("/a/b/c.txt", "/a/*/*.md"));
    }

    #[test]
    fn binary_and_oversized_files_are_refused_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("lathe-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (bin, big, bad, ok) = (dir.join("a.bin"), dir.join("big.txt"), dir.join("latin1.txt"), dir.join("ok.md"));
        std::fs::write(&bin, b"PK\x03\x04\0\0").unwrap();
        std::fs::write(&big, vec![b'a'; 2 << 20]).unwrap();
        std::fs::write(&bad, b"caf\xe9").unwrap();
        std::fs::write(&ok, "# T\n\ntext").unwrap();
        assert_eq!(read_text(&bin, 1 << 20).unwrap_err(), "binary");
        assert_eq!(read_text(&big, 1 << 20).unwrap_err(), "larger than 1 MiB");
        assert_eq!(read_text(&bad, 1 << 20).unwrap_err(), "not UTF-8 text");
        assert_eq!(read_text(&dir.join("gone.md"), 1 << 20).unwrap_err(), "vanished during ingest");
        assert_eq!(read_text(&ok, 1 << 20).unwrap(), "# T\n\ntext");
        // A folder gives the kinds lathe reads; hidden entries are left alone.
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/x.md"), "hidden").unwrap();
        let names: Vec<String> = files_of(&dir.display().to_string()).iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["big.txt", "latin1.txt", "ok.md"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
