//! `lathe kb ...`: knowledge collections from the command line, through the service (an ingest
//! is a job, recorded in lathe.jobs like one started in the workstation; Ctrl-C cancels it and
//! keeps what it committed).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Subcommand;

use crate::engine::knowledge::ingest::Report;
use crate::engine::knowledge::store::{CollectionInfo, SearchMode};
use crate::engine::workspace::Workspace;
use crate::service::knowledge::{progress_line, report_line};
use crate::service::{Event, SearchRequest, Service, Settings};
use crate::units::bytes;

#[derive(Debug, Subcommand)]
pub enum KbCmd {
    /// Make an empty collection for a sentence-embedding model folder (all-MiniLM-L6-v2, bge, e5).
    Create {
        name: String,
        #[arg(long)]
        model: PathBuf,
    },
    /// Add files, folders or glob patterns (quote them), or a catalog dataset's or view's column
    /// (dataset:NAME.COLUMN, a row a document), to a collection; a document already there with
    /// the same content is skipped, a changed one has its chunks replaced.
    Add {
        name: String,
        #[arg(required = true)]
        paths: Vec<String>,
        /// The collection's model folder, if it has moved since the collection was made.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a collection's sources again: new and changed files embedded, deleted ones removed.
    Sync {
        name: String,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The collections, with their model, documents, chunks and size.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Search a collection: hybrid (vector and full text fused by reciprocal rank), vector or text.
    Search {
        name: String,
        query: String,
        #[arg(long, default_value = "hybrid", value_parser = SearchMode::parse)]
        mode: SearchMode,
        /// How many results.
        #[arg(short, long, default_value_t = 5)]
        k: usize,
        /// Only documents whose path starts with this (absolute) or holds it.
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a collection and its files.
    Drop { name: String },
}

pub fn run(ws: &Workspace, cmd: KbCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(server) = crate::service::attached::Attached::find(ws) {
        return through(&server, cmd, out);
    }
    let (tx, events) = std::sync::mpsc::channel::<Event>();
    let mut service = Service::start(Some(ws), Settings::default(), move |ev| {
        let _ = tx.send(ev);
    });
    match cmd {
        KbCmd::Create { name, model } => {
            let c = service.kb_create(&name, &model)?;
            writeln!(out, "made collection {} for {} ({} dimensions, {} pooling); add documents with `lathe kb add {} PATH`", c.name, c.model.name, c.model.dim, c.model.pooling, c.name)?;
        }
        KbCmd::List { json } => {
            let list = service.kb_list()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                write_list(out, &list)?;
            }
        }
        KbCmd::Drop { name } => {
            service.kb_drop(&name)?;
            writeln!(out, "dropped collection {name}")?;
        }
        KbCmd::Search { name, query, mode, k, path, model, json } => {
            let r = service.kb_search(&SearchRequest { collection: name, query, mode, k, path, model })?;
            print_hits(&r, json, out)?;
        }
        KbCmd::Add { name, paths, model, json } => ingest(&mut service, &events, &name, &paths, model, json, out)?,
        KbCmd::Sync { name, model, json } => ingest(&mut service, &events, &name, &[], model, json, out)?,
    }
    // Closing the service writes lathe.collections and the job records before the process ends.
    drop(service);
    Ok(())
}

/// The collections when a `lathe serve` owns the workspace: made, listed, searched, filled and
/// dropped through it (it holds the catalog that records them, and one writer per collection).
fn through(server: &crate::service::attached::Attached, cmd: KbCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        KbCmd::Create { name, model } => {
            let c = server.create_collection(&name, &model)?;
            writeln!(out, "made collection {} for {} ({} dimensions, {} pooling); add documents with `lathe kb add {} PATH`", c.name, c.model.name, c.model.dim, c.model.pooling, c.name)?;
        }
        KbCmd::Add { model: Some(_), .. } | KbCmd::Sync { model: Some(_), .. } | KbCmd::Search { model: Some(_), .. } => {
            return Err(anyhow!("Through lathe serve (pid {}) a collection uses its own model; drop --model.", server.owner.pid))
        }
        KbCmd::List { json } => {
            let list = server.collections()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                write_list(out, &list)?;
            }
        }
        KbCmd::Drop { name } => {
            server.drop_collection(&name)?;
            writeln!(out, "dropped collection {name}")?;
        }
        KbCmd::Search { name, query, mode, k, path, json, .. } => {
            let r = server.search(&SearchRequest { collection: name, query, mode, k, path, model: None })?;
            print_hits(&r, json, out)?;
        }
        KbCmd::Add { name, paths, json, .. } => {
            // Files by their absolute paths; a dataset column (dataset:NAME.COLUMN) as it is.
            let paths: Vec<String> = paths.iter().map(|p| if p.starts_with("dataset:") { p.clone() } else { std::path::absolute(p).map(|a| a.display().to_string()).unwrap_or_else(|_| p.clone()) }).collect();
            ingest_through(server, &name, &paths, json, out)?;
        }
        KbCmd::Sync { name, json, .. } => ingest_through(server, &name, &[], json, out)?,
    }
    Ok(())
}

fn ingest_through(server: &crate::service::attached::Attached, name: &str, paths: &[String], json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    super::catch_interrupts();
    let job = server.ingest(name, paths)?;
    let mut follow = IngestFollower::new(json);
    super::wait_server_job(server, job, |ev| follow.on_event(job, ev))?;
    follow.finish(name, out)
}

fn write_list(out: &mut dyn Write, list: &[CollectionInfo]) -> anyhow::Result<()> {
    if list.is_empty() {
        writeln!(out, "no collections; make one with `lathe kb create NAME --model DIR`")?;
        return Ok(());
    }
    let w = list.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:<w$}  {:<24}  {:>9}  {:>8}  {:>10}  indices", "name", "model", "documents", "chunks", "size")?;
    for c in list {
        let idx = match (c.vector_index, c.text_index) {
            (true, true) => "vector, text",
            (false, true) => "text (vectors exact)",
            (true, false) => "vector",
            (false, false) => "none",
        };
        writeln!(out, "{:<w$}  {:<24}  {:>9}  {:>8}  {:>10}  {idx}", c.name, c.model.name, c.documents, c.chunks, bytes(c.bytes))?;
    }
    Ok(())
}

/// The first `n` non-empty lines of a chunk, each cut to 100 characters.
fn snippet(text: &str, n: usize) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| if l.chars().count() > 100 { format!("{}…", l.chars().take(100).collect::<String>()) } else { l.to_string() })
        .collect()
}

fn print_hits(r: &crate::service::SearchResult, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if r.truncated {
        eprintln!("note: the query was longer than the model takes and was cut there.");
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    } else if r.hits.is_empty() {
        writeln!(out, "nothing found ({:.0} ms)", r.millis)?;
    } else {
        for h in &r.hits {
            let place = if h.headings.is_empty() { String::new() } else { format!("  ({})", h.headings) };
            writeln!(out, "{:>2}. {:.4}  {}:{}{place}", h.rank, h.score, h.path, h.first_line)?;
            for line in snippet(&h.text, 3) {
                writeln!(out, "      {line}")?;
            }
        }
        writeln!(out, "{} results, {:?} search, {:.0} ms", r.hits.len(), r.mode, r.millis)?;
    }
    Ok(())
}

fn ingest(
    service: &mut Service,
    events: &std::sync::mpsc::Receiver<Event>,
    name: &str,
    paths: &[String],
    model: Option<PathBuf>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    super::catch_interrupts();
    let job = service.kb_ingest(name, paths, model.as_deref())?;
    let mut follow = IngestFollower::new(json);
    super::wait_job(service, events, job, |ev| follow.on_event(job, ev))?;
    follow.finish(name, out)
}

/// An ingest's progress on one line (rewritten on a terminal) and its report at the end.
struct IngestFollower {
    json: bool,
    tty: bool,
    report: Option<Report>,
    failed: Option<String>,
}

impl IngestFollower {
    fn new(json: bool) -> IngestFollower {
        IngestFollower { json, tty: std::io::stderr().is_terminal(), report: None, failed: None }
    }

    fn on_event(&mut self, job: crate::engine::jobs::JobId, ev: Event) -> anyhow::Result<()> {
        match ev {
            Event::Ingest { job: j, progress } if j == job => {
                let line = progress_line(&progress);
                if self.tty {
                    eprint!("\r\x1b[K{line}");
                } else if !self.json {
                    eprintln!("{line}");
                }
            }
            Event::Ingested { job: j, result } if j == job => match result {
                Ok(r) => self.report = Some(r),
                Err(e) => self.failed = Some(e.to_string()),
            },
            // A job that failed before it could report (a refused path) says why in its end.
            Event::Job(crate::engine::jobs::JobEvent::Finished { id, status: crate::engine::jobs::JobStatus::Failed(e) }) if id == job && self.failed.is_none() => self.failed = Some(e),
            _ => {}
        }
        Ok(())
    }

    fn finish(self, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
        if self.tty {
            eprintln!();
        }
        if let Some(e) = self.failed {
            return Err(anyhow!(e));
        }
        let r = self.report.ok_or_else(|| anyhow!("the ingest ended without a report; see logs/lathe.log"))?;
        if self.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        } else {
            writeln!(out, "{}", report_line(&r))?;
            for s in &r.skipped {
                writeln!(out, "  skipped {}: {}", s.path, s.reason)?;
            }
            if r.truncated > 0 {
                writeln!(out, "  {} chunks were longer than the model takes and were cut there", r.truncated)?;
            }
            for i in &r.indices {
                writeln!(out, "  {i}")?;
            }
        }
        if r.cancelled {
            return Err(anyhow!("Cancelled; what was committed stays, and `lathe kb sync {name}` finishes the rest."));
        }
        Ok(())
    }
}
