//! Ingest: files, folders and globs into a collection, changing only what changed. First every
//! file is listed and hashed (nothing is held but its path, size and hash); files whose hash the
//! collection already has are skipped. Then the new and changed ones are read again, chunked
//! along their structure, embedded, and committed a few hundred chunks at a time: each commit
//! replaces whole documents (a changed file's old chunks go in the same commit as its new ones
//! arrive), so a run killed at any moment leaves the collection at its last commit, and the next
//! run skips what that commit holds. Files gone from a source lose their chunks at the end. Binary,
//! unreadable and oversized files are skipped, each with its reason.
//!
//! A source can also be a column of a catalog dataset or view, `dataset:NAME.COLUMN`: each row's
//! value is a document, `dataset:NAME.COLUMN/ROW` (1-based, in the table's order), read through
//! `Rows` (the catalog implements it) twice like files are, never held whole.

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

/// What a source naming a dataset column starts with.
pub const DATASET: &str = "dataset:";

/// The rows of catalog datasets and views, for `dataset:NAME.COLUMN` sources.
pub trait Rows {
    /// Calls `f` with each non-null value of `column` in `name` as text and its 1-based row number,
    /// in a stable order, until `f` answers false. An unknown name or column is a sentence.
    fn each_row(&self, name: &str, column: &str, f: &mut dyn FnMut(u64, String) -> bool) -> Result<(), String>;
}

/// The dataset and column a `dataset:NAME.COLUMN` source names.
pub fn dataset_source(s: &str) -> Option<(&str, &str)> {
    let (name, column) = s.strip_prefix(DATASET)?.split_once('.')?;
    (!name.is_empty() && !column.is_empty()).then_some((name, column))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A source as the collection records it: an absolute path or glob pattern. A path that does not
/// exist, or a pattern that matches nothing, is refused.
pub fn normalize_source(s: &str) -> Result<String, KbError> {
    if s.starts_with(DATASET) {
        return match dataset_source(s) {
            Some(_) => Ok(s.to_string()),
            None => Err(KbError::Dataset(format!("{s} names no column; write dataset:NAME.COLUMN (a dataset or view, and its column)."))),
        };
    }
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
fn read_text(path: &Path, kind: Kind, max: u64) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| reason(&e))?.len();
    if len > max {
        return Err(format!("larger than {} MiB", max >> 20));
    }
    if kind == Kind::Pdf {
        return pdf_text(path);
    }
    let bytes = std::fs::read(path).map_err(|e| reason(&e))?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err("binary".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// A PDF's text layer, through poppler's `pdftotext` (pages end with form feeds). No Rust PDF
/// reader is linked: the well-kept one (pdf-extract, over lopdf) would change the features of a
/// crate most of the stack depends on (memchr) and rebuild it.
fn pdf_text(path: &Path) -> Result<String, String> {
    let out = match std::process::Command::new("pdftotext").args(["-enc", "UTF-8", "-q"]).arg(path).arg("-").output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("a PDF, read through pdftotext, which is not installed (poppler-utils); install it and sync".into())
        }
        Err(e) => return Err(format!("a PDF pdftotext could not read ({e})")),
    };
    if !out.status.success() {
        return Err(if path.exists() { "a PDF pdftotext could not read (damaged or encrypted?)".into() } else { "vanished during ingest".into() });
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.replace('\u{c}', "").trim().is_empty() {
        return Err("a PDF without a text layer (scanned pages need OCR first)".into());
    }
    Ok(text)
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

/// The reader, dataset and column of a `dataset:` source.
fn rows_of<'s, 'r>(source: &'s str, rows: Option<&'r dyn Rows>) -> Result<(&'r dyn Rows, &'s str, &'s str), KbError> {
    let (name, column) = dataset_source(source).ok_or_else(|| KbError::Dataset(format!("{source} names no column; write dataset:NAME.COLUMN.")))?;
    let rows = rows.ok_or_else(|| KbError::Dataset(format!("{source} needs the workspace's catalog, which is not open.")))?;
    Ok((rows, name, column))
}

/// One document to embed: where it is, how to read it, its size and whether the collection had
/// an older version of it.
struct Todo {
    path: String,
    kind: Kind,
    size: u64,
    had: bool,
}

/// Ingests `sources` (as `normalize_source` gives them) into `coll`; `rows` reads the
/// `dataset:` ones. Documents of these sources that are no longer there lose their chunks.
pub fn ingest(
    coll: &mut Collection,
    embedder: &Embedder,
    sources: &[String],
    rows: Option<&dyn Rows>,
    opts: &IngestOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, KbError> {
    let start = Instant::now();
    let mut report = Report::default();
    let known = coll.documents()?;
    let p = Progress { phase: Phase::Scanning, files_done: 0, files_total: 0, chunks: 0, bytes_done: 0, bytes_total: 0, chunks_per_s: 0.0, eta_s: None };
    progress(&p);

    // 1. List and hash.
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<Todo> = Vec::new();
    let mut check = |key: String, text: Result<String, String>, kind: Kind, report: &mut Report| {
        if !seen.insert(key.clone()) {
            return;
        }
        match text {
            Err(why) => report.skipped.push(Skipped { path: key, reason: why }),
            Ok(text) => match known.get(&key) {
                Some(h) if *h == hash(&text) => report.unchanged += 1,
                had => todo.push(Todo { had: had.is_some(), path: key, kind, size: text.len() as u64 }),
            },
        }
    };
    for source in sources {
        if source.starts_with(DATASET) {
            let (rows, name, column) = rows_of(source, rows)?;
            rows.each_row(name, column, &mut |n, text| {
                check(format!("{source}/{n}"), Ok(text), Kind::Text, &mut report);
                !cancel.load(Ordering::Relaxed)
            })
            .map_err(KbError::Dataset)?;
            continue;
        }
        for (path, kind) in files_of(source) {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            check(path.display().to_string(), read_text(&path, kind, opts.max_file_bytes), kind, &mut report);
        }
    }
    if cancel.load(Ordering::Relaxed) {
        report.cancelled = true;
        return Ok(report);
    }
    let gone: Vec<String> = known.keys().filter(|k| !seen.contains(*k) && sources.iter().any(|s| belongs(k, s))).cloned().collect();

    // 2. Chunk, embed, commit: files one by one, a dataset's wanted rows in one pass over it.
    let mut w = Writer::new(coll, embedder, opts, cancel, progress, report, &todo);
    let mut vanished = Vec::new();
    let mut i = 0;
    while i < todo.len() && !w.report.cancelled {
        let t = &todo[i];
        let Some(source) = sources.iter().find(|s| s.starts_with(DATASET) && belongs(&t.path, s)) else {
            i += 1;
            match read_text(Path::new(&t.path), t.kind, opts.max_file_bytes) {
                Ok(text) => w.add(t, text)?,
                Err(why) => {
                    if t.had {
                        vanished.push(t.path.clone());
                    }
                    w.report.skipped.push(Skipped { path: t.path.clone(), reason: why });
                }
            }
            continue;
        };
        let wanted: std::collections::HashMap<&str, &Todo> = todo[i..].iter().take_while(|t| belongs(&t.path, source)).map(|t| (t.path.as_str(), t)).collect();
        i += wanted.len();
        let (rows, name, column) = rows_of(source, rows)?;
        let mut failed = None;
        rows.each_row(name, column, &mut |n, text| {
            let key = format!("{source}/{n}");
            if let Some(t) = wanted.get(key.as_str()) {
                if let Err(e) = w.add(t, text) {
                    failed = Some(e);
                }
            }
            failed.is_none() && !w.report.cancelled
        })
        .map_err(KbError::Dataset)?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let (mut report, mut p) = w.finish()?;
    if report.cancelled {
        report.seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    }

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

/// Chunks documents, embeds them and commits them a few hundred chunks at a time.
struct Writer<'a> {
    coll: &'a mut Collection,
    embedder: &'a Embedder,
    opts: &'a IngestOptions,
    cancel: &'a AtomicBool,
    progress: &'a mut dyn FnMut(&Progress),
    report: Report,
    p: Progress,
    pending: Pending,
    prompt: String,
    budget: usize,
    started: Instant,
}

impl<'a> Writer<'a> {
    fn new(
        coll: &'a mut Collection,
        embedder: &'a Embedder,
        opts: &'a IngestOptions,
        cancel: &'a AtomicBool,
        progress: &'a mut dyn FnMut(&Progress),
        report: Report,
        todo: &[Todo],
    ) -> Self {
        let p = Progress {
            phase: Phase::Embedding,
            files_done: 0,
            files_total: todo.len(),
            chunks: 0,
            bytes_done: 0,
            bytes_total: todo.iter().map(|t| t.size).sum(),
            chunks_per_s: 0.0,
            eta_s: None,
        };
        progress(&p);
        let (prompt, budget) = (document_prompt(embedder), budget(embedder));
        let pending = Pending { paths: Vec::new(), rows: Vec::new() };
        Writer { coll, embedder, opts, cancel, progress, report, p, pending, prompt, budget, started: Instant::now() }
    }

    /// Chunks one document's text and queues it; commits when enough is queued.
    fn add(&mut self, t: &Todo, text: String) -> Result<(), KbError> {
        if self.report.cancelled || self.cancel.load(Ordering::Relaxed) {
            self.report.cancelled = true;
            return Ok(());
        }
        let file_hash = hash(&text);
        let e = self.embedder;
        let count = |s: &str| e.tokens(s).map(|t| t.len().saturating_sub(2)).unwrap_or(s.len() / 4);
        for c in chunk(&text, t.kind, self.budget, self.budget / 8, &count) {
            let (first, last) = (c.first_line as u32, c.last_line as u32);
            self.pending.rows.push(ChunkRow {
                chunk_id: ChunkRow::id_of(&t.path, first, &c.text),
                path: t.path.clone(),
                first_line: first,
                last_line: last,
                headings: c.headings.join(" > "),
                hash: hash(&c.text),
                text: c.text,
                file_hash: file_hash.clone(),
                vector: Vec::new(),
            });
        }
        self.pending.paths.push(t.path.clone());
        if t.had {
            self.report.updated += 1;
        } else {
            self.report.added += 1;
        }
        self.p.files_done += 1;
        self.p.bytes_done += t.size;
        if self.pending.rows.len() >= self.opts.commit_chunks {
            if !flush(self.coll, self.embedder, &self.prompt, &mut self.pending, &mut self.report, self.cancel)? {
                self.report.cancelled = true;
                return Ok(());
            }
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            self.p.chunks = self.report.chunks;
            self.p.chunks_per_s = self.report.chunks as f64 / secs;
            let rate = self.p.bytes_done as f64 / secs;
            self.p.eta_s = (rate > 0.0).then(|| (self.p.bytes_total - self.p.bytes_done) as f64 / rate);
            (self.progress)(&self.p);
        }
        Ok(())
    }

    /// Commits what is queued (unless cancelled); the report and the last progress.
    fn finish(mut self) -> Result<(Report, Progress), KbError> {
        if !self.report.cancelled && !flush(self.coll, self.embedder, &self.prompt, &mut self.pending, &mut self.report, self.cancel)? {
            self.report.cancelled = true;
        }
        self.p.chunks = self.report.chunks;
        if !self.report.cancelled {
            (self.progress)(&self.p);
        }
        Ok((self.report, self.p))
    }
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
        assert_eq!(read_text(&bin, Kind::Text, 1 << 20).unwrap_err(), "binary");
        assert_eq!(read_text(&big, Kind::Text, 1 << 20).unwrap_err(), "larger than 1 MiB");
        assert_eq!(read_text(&bad, Kind::Text, 1 << 20).unwrap_err(), "not UTF-8 text");
        assert_eq!(read_text(&dir.join("gone.md"), Kind::Markdown, 1 << 20).unwrap_err(), "vanished during ingest");
        assert_eq!(read_text(&ok, Kind::Markdown, 1 << 20).unwrap(), "# T\n\ntext");
        // A folder gives the kinds lathe reads; hidden entries are left alone.
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/x.md"), "hidden").unwrap();
        let names: Vec<String> = files_of(&dir.display().to_string()).iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["big.txt", "latin1.txt", "ok.md"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
