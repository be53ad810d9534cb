//! `lathe data ...` and `lathe sql`: the catalog from the command line.

use std::io::Write;
use std::time::Duration;

use crate::engine::data::{ExportSource, ImportOptions, OutputFormat};
use crate::engine::data::query::{csv_field, write_table};
use crate::engine::data::readonly::Rows;
use crate::engine::workspace::Workspace;
use crate::service::attached::SERVER_ROWS;
use crate::service::Records;
use crate::units::bytes;

use crate::engine::data::views::Split;

use super::{DataCmd, Format, ViewCmd};

pub fn run(ws: &Workspace, cmd: DataCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    // Through the server that owns the workspace when one runs, else the catalog opened here.
    let records = Records::open(ws)?;
    match cmd {
        DataCmd::List { json } => list(&records, json, out)?,
        DataCmd::Import { path, name, replace } => match &records {
            Records::Attached(server) => import_through(server, &path, name, replace, out)?,
            Records::Local(cat) => {
                let d = cat.import(&path, &ImportOptions { name, replace })?;
                writeln!(out, "imported {}: {} rows, {} columns from {}", d.name, d.rows, d.columns, d.source)?;
            }
        },
        DataCmd::View { what } => view(&records, what, out)?,
        DataCmd::Drop { name } => {
            records.drop_dataset(&name)?;
            writeln!(out, "dropped {name}")?;
        }
        DataCmd::Export { mut args, sql, out: out_file } => {
            let file: std::path::PathBuf = match out_file {
                Some(o) => o,
                None if args.len() == 2 || (sql.is_some() && args.len() == 1) => args.pop().unwrap().into(),
                None => anyhow::bail!("say where to write: lathe data export NAME OUT (or --sql QUERY OUT)"),
            };
            let what = match (args.pop(), sql) {
                (None, Some(q)) => ExportSource::Query(q),
                (Some(n), None) => ExportSource::Dataset(n),
                (Some(_), Some(_)) => anyhow::bail!("give a dataset name or --sql, not both"),
                (None, None) => anyhow::bail!("name a dataset or pass --sql QUERY"),
            };
            match &records {
                Records::Local(cat) => {
                    let rows = cat.export(&what, &file)?;
                    writeln!(out, "wrote {rows} rows to {}", file.display())?;
                }
                Records::Attached(server) => {
                    super::catch_interrupts();
                    let job = server.export_data(&what, &file)?;
                    writeln!(out, "{}", server_job(server, job, "The export")?)?;
                }
            }
        }
    }
    Ok(())
}

/// Follows a job of the server to its end: its last message, or why it failed.
fn server_job(server: &crate::service::attached::Attached, job: crate::engine::jobs::JobId, what: &str) -> anyhow::Result<String> {
    use crate::engine::jobs::{JobEvent, JobStatus};
    use crate::service::Event;
    let (mut said, mut ended) = (String::new(), None);
    super::wait_server_job(server, job, |ev| {
        match ev {
            Event::Job(JobEvent::Progress { message, .. }) => said = message,
            Event::Job(JobEvent::Finished { status, .. }) => ended = Some(status),
            _ => {}
        }
        Ok(())
    })?;
    match ended {
        Some(JobStatus::Done) => Ok(said),
        Some(JobStatus::Failed(e) | JobStatus::Exists(e)) => anyhow::bail!(e),
        Some(JobStatus::Cancelled) => anyhow::bail!("{what} was cancelled; nothing was kept."),
        _ => anyhow::bail!("{what} ended without a result; see the server's logs/serve.log."),
    }
}

/// `lathe data import` when a `lathe serve` owns the workspace: the server imports the file in a
/// job (this command brings the owner's token: any file its user can read).
fn import_through(server: &crate::service::attached::Attached, path: &std::path::Path, name: Option<String>, replace: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    super::catch_interrupts();
    let job = server.import(&path.display().to_string(), name.as_deref(), replace)?;
    Ok(writeln!(out, "{}", server_job(server, job, "The import")?)?)
}

fn view(records: &Records, cmd: ViewCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        ViewCmd::Create { name, sql, format, eval_fraction, replace } => {
            let v = records.create_view(&name, &sql, &format, eval_fraction, replace)?;
            writeln!(out, "view {}: {} format, {} train rows, {} eval rows", v.name, v.format.name(), v.train_rows, v.eval_rows)?;
        }
        ViewCmd::List { json } => {
            let views = records.views()?;
            if json {
                // A view that cannot be read is {name, error}; the others as before.
                let list: Vec<serde_json::Value> = views
                    .iter()
                    .map(|(name, v)| match v {
                        Ok(info) => serde_json::to_value(info).unwrap_or_default(),
                        Err(e) => serde_json::json!({"name": name, "error": e}),
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if views.is_empty() {
                writeln!(out, "no views; define one with `lathe data view create NAME --sql QUERY --format FORMAT`")?;
            } else {
                let w = views.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
                writeln!(out, "{:<w$}  {:<10}  {:>8}  {:>8}  {:>5}  sql", "name", "format", "train", "eval", "eval%")?;
                for (name, v) in views {
                    match v {
                        Ok(v) => writeln!(
                            out,
                            "{:<w$}  {:<10}  {:>8}  {:>8}  {:>5.1}  {}",
                            v.name,
                            v.format.name(),
                            v.train_rows,
                            v.eval_rows,
                            v.eval_fraction * 100.0,
                            v.sql
                        )?,
                        Err(e) => writeln!(out, "{name:<w$}  cannot be read: {e}")?,
                    }
                }
            }
        }
        ViewCmd::Show { name, limit, split } => {
            let split = if split == "eval" { Split::Eval } else { Split::Train };
            let (info, examples) = records.examples(&name, split, Some(limit))?;
            for (i, ex) in examples.iter().enumerate() {
                writeln!(out, "── {} #{} ({}, {}) ──", info.name, i + 1, if split == Split::Eval { "eval" } else { "train" }, info.format.name())?;
                write!(out, "{}", ex.pretty())?;
            }
        }
        ViewCmd::Drop { name } => {
            records.drop_view(&name)?;
            writeln!(out, "dropped view {name}")?;
        }
    }
    Ok(())
}

/// The datasets, here or through the workspace's server.
fn list(records: &Records, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let list = records.datasets()?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else if list.is_empty() {
        writeln!(out, "no datasets; add one with `lathe data import PATH`")?;
    } else {
        let w = list.iter().map(|d| d.name.len()).max().unwrap_or(4).max(4);
        writeln!(out, "{:<w$}  {:>10}  {:>7}  {:>10}  {:<19}  source", "name", "rows", "columns", "bytes", "imported at")?;
        for d in list {
            writeln!(
                out,
                "{:<w$}  {:>10}  {:>7}  {:>10}  {:<19}  {}",
                d.name,
                d.rows,
                d.columns,
                bytes(d.source_bytes),
                d.imported_at,
                d.source
            )?;
        }
    }
    Ok(())
}

pub fn sql(ws: &Workspace, query: &str, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = match Records::open(ws)? {
        Records::Local(cat) => cat,
        // The workspace's server answers: one read-only SELECT, as it allows every client.
        Records::Attached(attached) => {
            let pid = attached.owner.pid;
            let rows = attached.read_sql(query, SERVER_ROWS, Duration::from_secs(60)).map_err(|e| match e {
                crate::service::ServiceError::Refused(m) => {
                    anyhow::anyhow!("{m} (lathe serve, pid {pid}, owns this workspace and reads it for its clients; to write, stop it with `kill -TERM {pid}`.)")
                }
                e => e.into(),
            })?;
            return print_rows(&rows, format, out);
        }
    };
    let format = match format {
        Format::Table => OutputFormat::Table,
        Format::Csv => OutputFormat::Csv,
        Format::Json => OutputFormat::Json,
    };
    let r = cat.run_sql(query, format, out)?;
    out.flush()?;
    tracing::info!(rows = r.rows, ms = r.elapsed_ms, "sql");
    Ok(())
}

/// A result read through the server, in the format asked: the table as `lathe sql` lays it out
/// here, CSV, or a JSON array of row objects.
fn print_rows(r: &Rows, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    let null = if format == Format::Table { "NULL" } else { "" };
    let cell = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => null.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let grid: Vec<Vec<String>> = r.rows.iter().map(|row| r.columns.iter().map(|c| cell(row.get(&c.name))).collect()).collect();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&r.rows)?)?,
        Format::Csv => {
            writeln!(out, "{}", r.columns.iter().map(|c| csv_field(&c.name)).collect::<Vec<_>>().join(","))?;
            for row in &grid {
                writeln!(out, "{}", row.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","))?;
            }
        }
        Format::Table => {
            let header: Vec<String> = r.columns.iter().map(|c| format!("{} ({})", c.name, c.ty)).collect();
            write_table(&header, &grid, out)?;
            let n = grid.len();
            let more = if r.truncated { format!(", the first {n} (the server's limit)") } else { String::new() };
            writeln!(out, "({n} row{}{more})", if n == 1 { "" } else { "s" })?;
        }
    }
    if r.truncated && format != Format::Table {
        eprintln!("lathe: only the first {} rows come through lathe serve; stop it to read them all here.", r.rows.len());
    }
    Ok(())
}
