//! `lathe data ...` and `lathe sql`: the catalog from the command line.

use std::io::Write;

use crate::engine::data::{Catalog, ExportSource, ImportOptions, OutputFormat};
use crate::engine::workspace::Workspace;
use crate::units::bytes;

use super::{DataCmd, Format};

pub fn run(ws: &Workspace, cmd: DataCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = Catalog::open_workspace(ws)?;
    match cmd {
        DataCmd::Import { path, name, replace } => {
            let d = cat.import(&path, &ImportOptions { name, replace })?;
            writeln!(out, "imported {}: {} rows, {} columns from {}", d.name, d.rows, d.columns, d.source)?;
        }
        DataCmd::List { json } => {
            let list = cat.list()?;
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
        }
        DataCmd::Drop { name } => {
            cat.drop_dataset(&name)?;
            writeln!(out, "dropped {name}")?;
        }
        DataCmd::Export { name, sql, out: file } => {
            let what = match (name, sql) {
                (_, Some(q)) => ExportSource::Query(q),
                (Some(n), None) => ExportSource::Dataset(n),
                (None, None) => anyhow::bail!("name a dataset or pass --sql QUERY"),
            };
            let rows = cat.export(&what, &file)?;
            writeln!(out, "wrote {rows} rows to {}", file.display())?;
        }
    }
    Ok(())
}

pub fn sql(ws: &Workspace, query: &str, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = Catalog::open_workspace(ws)?;
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
