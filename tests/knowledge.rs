//! Knowledge collections (engine/knowledge): Lance datasets made, filled, synced and searched with
//! a tiny random BERT (tests/fixtures/embed), and `lathe kb` as a user runs it, including the bad
//! cases: another model, an empty collection, a missing path, a file that vanishes, a full disk,
//! a SIGKILL in the middle of an ingest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use lathe::engine::embed::{EmbedSpec, Embedder};
use lathe::engine::knowledge::ingest::{self, IngestOptions, Phase, Report};
use lathe::engine::knowledge::store::{Collection, KbError, SearchMode};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed").join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-kb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small corpus: Markdown with sections, a text file, Python with two functions, HTML, and a
/// binary file that must be skipped.
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    std::fs::write(
        dir.join("notes/garden.md"),
        "# Garden\n\nTomatoes need full sun and deep watering twice a week.\n\n## Pests\n\nAphids gather under the leaves; a jet of water removes them.\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes/bread.txt"), "Sourdough rises overnight in a cool kitchen.\n\nBake it at 250 degrees with steam.\n").unwrap();
    std::fs::write(
        dir.join("tool.py"),
        "import os\n\n\ndef checksum(path):\n    \"\"\"Hash a file.\"\"\"\n    return os.stat(path).st_size\n\n\ndef walk(root):\n    return list(os.walk(root))\n",
    )
    .unwrap();
    std::fs::write(dir.join("page.html"), "<html><body><h1>Telescope</h1><p>The refractor shows Saturn's rings clearly.</p></body></html>").unwrap();
    std::fs::write(dir.join("notes/photo.md"), b"\x89PNG\r\n\x1a\n\0\0\0binary").unwrap();
}

fn ingest_all(coll: &mut Collection, e: &Embedder, sources: &[String]) -> Report {
    let cancel = AtomicBool::new(false);
    ingest::ingest(coll, e, sources, None, &IngestOptions::default(), &cancel, &mut |_| {}).unwrap()
}

/// A folder goes in with its structure; every mode finds what it should; an unchanged re-run
/// writes nothing; a changed file has its chunks replaced and a deleted one's go.
#[test]
fn a_folder_is_ingested_searched_and_synced() {
    let root = scratch("sync");
    let docs = root.join("docs");
    write_corpus(&docs);
    let vectors = root.join("vectors");
    std::fs::create_dir_all(&vectors).unwrap();
    let model = fixture("tiny-bert-mean");
    let e = Embedder::load(&model).unwrap();
    let mut coll = Collection::create(&vectors, "notes", &e.spec).unwrap();
    // An empty collection says what to do.
    let err = coll.search(SearchMode::Hybrid, "sun", &[0.0; 32], 5, None).unwrap_err();
    assert!(matches!(err, KbError::Empty(_)), "{err}");
    assert!(err.to_string().contains("lathe kb add notes"), "{err}");

    let source = ingest::normalize_source(&docs.display().to_string()).unwrap();
    let r = ingest_all(&mut coll, &e, std::slice::from_ref(&source));
    assert_eq!((r.added, r.updated, r.unchanged, r.removed), (4, 0, 0, 0), "{r:?}");
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert!(r.skipped[0].path.ends_with("photo.md") && r.skipped[0].reason == "binary");
    assert!(r.chunks >= 5, "{r:?}");
    let info = coll.info().unwrap();
    assert_eq!((info.documents, info.chunks, info.text_index, info.vector_index), (4, r.chunks, true, false));
    assert_eq!(info.model.name, "tiny-bert-mean");

    // Text: BM25 finds the one chunk with the word; Markdown chunks keep their heading path.
    let hits = coll.search(SearchMode::Text, "aphids", &[], 5, None).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].path.ends_with("notes/garden.md") && hits[0].headings == "Garden > Pests", "{:?}", hits[0]);
    assert_eq!((hits[0].first_line, hits[0].text_rank), (5, Some(1)));
    // Vector: a chunk's own text (as embedded) is its nearest neighbour, at similarity 1.
    let bread = coll.search(SearchMode::Text, "sourdough", &[], 1, None).unwrap().remove(0);
    let q = e.embed(&[bread.text.as_str()], "").unwrap().vectors.remove(0);
    let hits = coll.search(SearchMode::Vector, "", &q, 3, None).unwrap();
    assert_eq!(hits[0].chunk_id, bread.chunk_id);
    assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // Hybrid: the chunk first in both lists comes first, with both ranks.
    let hits = coll.search(SearchMode::Hybrid, "sourdough", &q, 3, None).unwrap();
    assert_eq!((hits[0].chunk_id.as_str(), hits[0].vector_rank, hits[0].text_rank), (bread.chunk_id.as_str(), Some(1), Some(1)));
    // The path filter.
    let hits = coll.search(SearchMode::Vector, "", &q, 10, Some("tool.py")).unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.path.ends_with("tool.py")), "{hits:?}");
    // HTML is read as text; code is cut at its definitions.
    assert_eq!(coll.search(SearchMode::Text, "saturn", &[], 5, None).unwrap().len(), 1);
    let walk = coll.search(SearchMode::Text, "walk", &[], 5, Some("tool.py")).unwrap();
    assert!(walk[0].text.contains("def walk"), "{walk:?}");

    // Nothing changed: nothing written.
    let r = ingest_all(&mut coll, &e, std::slice::from_ref(&source));
    assert_eq!((r.added, r.updated, r.unchanged, r.removed, r.chunks), (0, 0, 4, 0, 0), "{r:?}");

    // A changed file is replaced, a deleted one removed.
    std::fs::write(docs.join("notes/garden.md"), "# Garden\n\nCucumbers climb a trellis in July.\n").unwrap();
    std::fs::remove_file(docs.join("page.html")).unwrap();
    let r = ingest_all(&mut coll, &e, std::slice::from_ref(&source));
    assert_eq!((r.added, r.updated, r.unchanged, r.removed), (0, 1, 2, 1), "{r:?}");
    assert!(coll.search(SearchMode::Text, "aphids", &[], 5, None).unwrap().is_empty());
    assert!(coll.search(SearchMode::Text, "saturn", &[], 5, None).unwrap().is_empty());
    assert_eq!(coll.search(SearchMode::Text, "cucumbers", &[], 5, None).unwrap().len(), 1);
    assert_eq!(coll.info().unwrap().documents, 3);

    // Reopened, it is the same collection; another model is refused with both names.
    let coll = Collection::open(&vectors, "notes").unwrap();
    assert_eq!(coll.info().unwrap().documents, 3);
    let other = EmbedSpec::read(&fixture("tiny-bert-cls")).unwrap();
    let err = coll.check_model(&other).unwrap_err();
    assert!(err.to_string().contains("tiny-bert-mean") && err.to_string().contains("tiny-bert-cls"), "{err}");
    assert!(matches!(Collection::create(&vectors, "notes", &e.spec), Err(KbError::Exists(_))));
    assert!(matches!(Collection::open(&vectors, "other"), Err(KbError::NotFound(_))));
    assert!(matches!(ingest::normalize_source("/no/such/folder"), Err(KbError::NoPath(_))));
    std::fs::remove_dir_all(&root).unwrap();
}

/// A file that vanishes between listing and reading is skipped with its reason (and its old
/// chunks go); a cancelled ingest keeps what it committed, and the next run completes it.
#[test]
fn vanished_files_and_cancels_leave_a_consistent_collection() {
    let root = scratch("cancel");
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..40 {
        let body: String = (0..12).map(|p| format!("File {i} paragraph {p} talks about topic{i}x{p} at length.\n\n")).collect();
        std::fs::write(docs.join(format!("f{i:02}.txt")), body).unwrap();
    }
    let vectors = root.join("vectors");
    std::fs::create_dir_all(&vectors).unwrap();
    let e = Embedder::load(&fixture("tiny-bert-mean")).unwrap();
    let mut coll = Collection::create(&vectors, "c", &e.spec).unwrap();
    let source = ingest::normalize_source(&docs.display().to_string()).unwrap();
    let opts = IngestOptions { commit_chunks: 20, ..Default::default() };

    // Cancelled after its first commit.
    let cancel = AtomicBool::new(false);
    let r = ingest::ingest(&mut coll, &e, std::slice::from_ref(&source), None, &opts, &cancel, &mut |p| {
        if p.phase == Phase::Embedding && p.chunks > 0 {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    assert!(r.cancelled, "{r:?}");
    let partial = Collection::open(&vectors, "c").unwrap().info().unwrap();
    assert!(partial.documents > 0 && partial.documents < 40, "{partial:?}");

    // The next run skips what was committed; a file deleted after listing is reported.
    let cancel = AtomicBool::new(false);
    let victim = docs.join("f39.txt");
    let r = ingest::ingest(&mut coll, &e, std::slice::from_ref(&source), None, &opts, &cancel, &mut |p| {
        if p.phase == Phase::Embedding && p.files_done == 0 {
            let _ = std::fs::remove_file(&victim);
        }
    })
    .unwrap();
    assert!(!r.cancelled);
    assert_eq!(r.unchanged, partial.documents);
    assert_eq!(r.added, 39 - partial.documents, "{r:?}");
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].reason, "vanished during ingest");
    let info = coll.info().unwrap();
    assert_eq!(info.documents, 39);
    // Every chunk once: ids are unique.
    let hits = coll.search(SearchMode::Text, "topic7x3", &[], 10, None).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

fn lathe(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(home).args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `lathe kb` end to end: create, add, list, search (each mode, JSON), the catalog's
/// lathe.collections, and the refusals a user meets.
#[test]
fn lathe_kb_from_the_command_line() {
    let root = scratch("cli");
    let (home, docs) = (root.join("home"), root.join("docs"));
    write_corpus(&docs);
    let model = fixture("tiny-bert-mean");
    let m = model.to_str().unwrap();
    let o = lathe(&home, &["kb", "create", "notes", "--model", m]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "search", "notes", "sun"]);
    assert!(!o.status.success() && text(&o).1.contains("is empty; add documents with `lathe kb add notes PATH`"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "add", "notes", docs.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("4 added, 0 updated, 0 unchanged, 0 removed") && out.contains("photo.md: binary"), "{out}");
    let o = lathe(&home, &["kb", "list"]);
    assert!(text(&o).0.contains("tiny-bert-mean") && text(&o).0.contains("notes"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "search", "notes", "aphids", "--mode", "text", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert_eq!(v["hits"][0]["headings"], "Garden > Pests");
    assert!(v["hits"][0]["path"].as_str().unwrap().ends_with("garden.md"));
    for mode in ["hybrid", "vector"] {
        let o = lathe(&home, &["kb", "search", "notes", "tomatoes in the sun", "--mode", mode, "-k", "2"]);
        assert!(o.status.success() && text(&o).0.contains("2 results"), "{mode}: {:?}", text(&o));
    }
    // A query longer than the model takes is cut there, and said once.
    let long = "tomatoes need full sun ".repeat(40);
    let o = lathe(&home, &["kb", "search", "notes", &long]);
    assert!(o.status.success() && text(&o).1.matches("longer than the model takes").count() == 1, "{:?}", text(&o));
    // The catalog sees it.
    let o = lathe(&home, &["sql", "select name, model, documents from lathe.collections", "--format", "csv"]);
    assert!(text(&o).0.contains("notes,tiny-bert-mean,4"), "{:?}", text(&o));
    // Sync after a deletion.
    std::fs::remove_file(docs.join("tool.py")).unwrap();
    let o = lathe(&home, &["kb", "sync", "notes"]);
    assert!(text(&o).0.contains("0 added, 0 updated, 3 unchanged, 1 removed"), "{:?}", text(&o));
    // Refusals, each a sentence.
    let cls = fixture("tiny-bert-cls");
    let o = lathe(&home, &["kb", "add", "notes", docs.to_str().unwrap(), "--model", cls.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).1.contains("was made with tiny-bert-mean, not tiny-bert-cls"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "add", "notes", "/no/such/place"]);
    assert!(!o.status.success() && text(&o).1.contains("/no/such/place does not exist"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "search", "nope", "x"]);
    assert!(!o.status.success() && text(&o).1.contains("There is no collection \"nope\""), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "create", "bad name", "--model", m]);
    assert!(!o.status.success() && text(&o).1.contains("cannot name a collection"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "search", "notes", "x", "--mode", "fuzzy"]);
    assert!(!o.status.success() && text(&o).1.contains("not a search mode"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "drop", "notes"]);
    assert!(o.status.success());
    let o = lathe(&home, &["sql", "select count(*) from lathe.collections", "--format", "csv"]);
    assert!(text(&o).0.contains('0'), "{:?}", text(&o));
    std::fs::remove_dir_all(&root).unwrap();
}

/// A column of a catalog dataset, and of a view, as a source: one document per row, cited as
/// `dataset:NAME.COLUMN/ROW`; a sync after the dataset changes re-embeds only the changed rows;
/// an unknown dataset or column is refused before anything is recorded.
#[test]
fn a_dataset_column_is_a_source() {
    let root = scratch("dataset");
    let home = root.join("home");
    std::fs::create_dir_all(&root).unwrap();
    let csv = root.join("faq.csv");
    let write = |third: &str| {
        let rows = format!("id,question,answer\n1,How do I water tomatoes?,Deeply twice a week in full sun.\n2,What removes aphids?,A jet of water under the leaves.\n3,When does bread rise?,{third}\n");
        std::fs::write(&csv, rows).unwrap();
    };
    write("Overnight in a cool kitchen.");
    let m = fixture("tiny-bert-mean");
    let o = lathe(&home, &["data", "import", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(lathe(&home, &["kb", "create", "faq", "--model", m.to_str().unwrap()]).status.success());
    // Refusals first: nothing is recorded.
    let o = lathe(&home, &["kb", "add", "faq", "dataset:nope.answer"]);
    assert!(!o.status.success() && text(&o).1.contains("There is no dataset or view named nope"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "add", "faq", "dataset:faq.reply"]);
    assert!(!o.status.success() && text(&o).1.contains("faq has no column reply; it has id, question, answer"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "add", "faq", "dataset:faq"]);
    assert!(!o.status.success() && text(&o).1.contains("write dataset:NAME.COLUMN"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["sources"], serde_json::json!([]), "{v}");
    // The column goes in, a row a document.
    let o = lathe(&home, &["kb", "add", "faq", "dataset:faq.answer"]);
    assert!(o.status.success() && text(&o).0.contains("3 added, 0 updated"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "search", "faq", "aphids jet", "--mode", "text", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert_eq!(v["hits"][0]["path"], "dataset:faq.answer/2", "{v}");
    // A view's column too.
    let o = lathe(&home, &["data", "view", "create", "qa", "--sql", "select question as prompt, answer as completion from faq", "--format", "completion"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "add", "faq", "dataset:qa.prompt"]);
    assert!(o.status.success() && text(&o).0.contains("3 added"), "{:?}", text(&o));
    // One row changes: a sync re-embeds that one only (its view row too).
    write("At room temperature in four hours.");
    assert!(lathe(&home, &["data", "import", csv.to_str().unwrap(), "--replace"]).status.success());
    let o = lathe(&home, &["kb", "sync", "faq"]);
    assert!(text(&o).0.contains("0 added, 1 updated, 5 unchanged, 0 removed"), "{:?}", text(&o));
    let o = lathe(&home, &["kb", "search", "faq", "room temperature", "--mode", "text", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["hits"][0]["path"].as_str(), v["hits"].as_array().map(|h| h.len())), (Some("dataset:faq.answer/3"), Some(1)), "{v}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A PDF with a text layer (Helvetica, one line per page), written by hand with real offsets.
fn write_pdf(path: &Path, pages: &[&str]) {
    let n = pages.len();
    let kids = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect::<Vec<_>>().join(" ");
    let mut objs = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{kids}] /Count {n} >>"),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for (i, text) in pages.iter().enumerate() {
        objs.push(format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>", 5 + 2 * i));
        let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
        objs.push(format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objs.len() + 1).as_bytes());
    std::fs::write(path, out).unwrap();
}

/// PDFs are read through pdftotext: each page a section ("page N"); a damaged PDF is skipped with
/// its reason; without pdftotext every PDF is skipped with a sentence that says what to install.
#[test]
fn pdfs_are_read_by_page() {
    let root = scratch("pdf");
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    write_pdf(&docs.join("astro.pdf"), &["Comets grow icy tails near the sun.", "Saturn has bright rings of ice."]);
    std::fs::write(docs.join("broken.pdf"), b"%PDF-1.4\nthis is not a real document\n").unwrap();
    let vectors = root.join("vectors");
    std::fs::create_dir_all(&vectors).unwrap();
    let e = Embedder::load(&fixture("tiny-bert-mean")).unwrap();
    let mut coll = Collection::create(&vectors, "pdf", &e.spec).unwrap();
    let r = ingest_all(&mut coll, &e, &[docs.display().to_string()]);
    let reasons: Vec<(String, String)> = r.skipped.iter().map(|s| (Path::new(&s.path).file_name().unwrap().to_string_lossy().into(), s.reason.clone())).collect();
    let have_pdftotext = Command::new("pdftotext").arg("-v").output().is_ok();
    if !have_pdftotext {
        eprintln!("pdftotext is not installed (scripts/setup.sh installs poppler-utils): only the refusal is checked");
        assert_eq!(r.added, 0);
        assert!(reasons.iter().all(|(_, why)| why.contains("not installed (poppler-utils)")), "{reasons:?}");
        return;
    }
    assert_eq!(r.added, 1, "{r:?}");
    assert_eq!(reasons, vec![("broken.pdf".to_string(), "a PDF pdftotext could not read (damaged or encrypted?)".to_string())]);
    let hits = coll.search_text("rings", 5, None).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].path.ends_with("astro.pdf") && hits[0].headings == "page 2" && hits[0].text.contains("Saturn has bright rings"), "{:?}", hits[0]);
    std::fs::remove_dir_all(&root).unwrap();
}

fn many_files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let body: String = (0..30).map(|p| format!("Document {i} part {p}: notes on subject{i}y{p} and more words.\n\n")).collect();
        std::fs::write(dir.join(format!("d{i:03}.md")), body).unwrap();
    }
}

/// SIGKILL in the middle of an ingest: the collection stays readable at its last commit, and a
/// sync completes it with every document once.
#[test]
fn an_ingest_killed_at_any_moment_is_completed_by_the_next() {
    let root = scratch("kill");
    let (home, docs) = (root.join("home"), root.join("docs"));
    many_files(&docs, 120);
    let m = fixture("tiny-bert-mean");
    assert!(lathe(&home, &["kb", "create", "k", "--model", m.to_str().unwrap()]).status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_lathe"))
        .arg("--home")
        .arg(&home)
        .args(["kb", "add", "k", docs.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has committed something (or after 20 s, whatever it has done).
    let versions = home.join("vectors/k.lance/_versions");
    let start = std::time::Instant::now();
    while std::fs::read_dir(&versions).map(|d| d.count()).unwrap_or(0) < 5 && start.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = lathe(&home, &["kb", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    let before = v[0]["documents"].as_u64().unwrap();
    assert!(before < 120, "{before}");
    let o = lathe(&home, &["kb", "sync", "k", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert_eq!(r["unchanged"].as_u64().unwrap(), before);
    assert_eq!(r["added"].as_u64().unwrap() + before, 120);
    let o = lathe(&home, &["kb", "search", "k", "subject77y5", "--mode", "text", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert_eq!(v["hits"].as_array().unwrap().len(), 1, "{v}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A disk that fills mid-ingest (a file-size limit on the process): a sentence that says so, the
/// collection readable, and the next run completes it.
#[test]
fn a_full_disk_mid_ingest_is_a_sentence_and_recoverable() {
    let root = scratch("full");
    let (home, docs) = (root.join("home"), root.join("docs"));
    many_files(&docs, 60);
    let m = fixture("tiny-bert-mean");
    assert!(lathe(&home, &["kb", "create", "f", "--model", m.to_str().unwrap()]).status.success());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lathe"));
    cmd.arg("--home").arg(&home).args(["kb", "add", "f", docs.to_str().unwrap()]);
    // SAFETY: setrlimit in the child before exec; 32 KiB is more than a commit's manifest and less
    // than a batch of vectors with their text.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 32 << 10, rlim_max: 32 << 10 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("is the disk full?") && err.contains("lathe kb sync f"), "{err}");
    let o = lathe(&home, &["kb", "sync", "f", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert_eq!(r["added"].as_u64().unwrap() + r["unchanged"].as_u64().unwrap(), 60, "{r}");
    std::fs::remove_dir_all(&root).unwrap();
}
