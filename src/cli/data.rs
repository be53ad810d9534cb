//! `lathe data ...` and `lathe sql`: the catalog from the command line.

use std::io::Write;

use crate::engine::data::{Catalog, ExportSource, ImportOptions, OutputFormat};
use crate::engine::workspace::Workspace;
use crate::units::bytes;

use crate::engine::data::views::{Split, ViewFormat};

use super::{DataCmd, Format, ViewCmd};

pub fn run(ws: &Workspace, cmd: DataCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = crate::service::open_catalog(ws)?;
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
        DataCmd::View { what } => view(&cat, what, out)?,
        DataCmd::Drop { name } => {
            cat.drop_dataset(&name)?;
            writeln!(out, "dropped {name}")?;
        }
        DataCmd::Export { mut args, sql, out: out_file } => {
            let file = match out_file {
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
            let rows = cat.export(&what, &file)?;
            writeln!(out, "wrote {rows} rows to {}", file.display())?;
        }
    }
    Ok(())
}

fn view(cat: &Catalog, cmd: ViewCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        ViewCmd::Create { name, sql, format, eval_fraction, replace } => {
            let v = cat.create_view(&name, &sql, ViewFormat::parse(&format)?, eval_fraction, replace)?;
            writeln!(out, "view {}: {} format, {} train rows, {} eval rows", v.name, v.format.name(), v.train_rows, v.eval_rows)?;
        }
        ViewCmd::List { json } => {
            let views = cat.views()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&views)?)?;
            } else if views.is_empty() {
                writeln!(out, "no views; define one with `lathe data view create NAME --sql QUERY --format FORMAT`")?;
            } else {
                let w = views.iter().map(|v| v.name.len()).max().unwrap_or(4).max(4);
                writeln!(out, "{:<w$}  {:<10}  {:>8}  {:>8}  {:>5}  sql", "name", "format", "train", "eval", "eval%")?;
                for v in views {
                    writeln!(
                        out,
                        "{:<w$}  {:<10}  {:>8}  {:>8}  {:>5.1}  {}",
                        v.name,
                        v.format.name(),
                        v.train_rows,
                        v.eval_rows,
                        v.eval_fraction * 100.0,
                        v.sql
                    )?;
                }
            }
        }
        ViewCmd::Show { name, limit, split } => {
            let split = if split == "eval" { Split::Eval } else { Split::Train };
            let info = cat.view_info(&name)?;
            for (i, ex) in cat.examples(&name, split, Some(limit))?.iter().enumerate() {
                writeln!(out, "── {} #{} ({}, {}) ──", info.name, i + 1, if split == Split::Eval { "eval" } else { "train" }, info.format.name())?;
                write!(out, "{}", ex.pretty())?;
            }
        }
        ViewCmd::Drop { name } => {
            cat.drop_view(&name)?;
            writeln!(out, "dropped view {name}")?;
        }
    }
    Ok(())
}

pub fn sql(ws: &Workspace, query: &str, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = crate::service::open_catalog(ws)?;
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
