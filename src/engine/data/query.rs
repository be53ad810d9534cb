//! Running SQL against the catalog and writing the result as a table, CSV or JSON, batch by batch
//! as DuckDB produces them.

use std::io::Write;
use std::time::Instant;

use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::{Catalog, DataError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    pub rows: u64,
    pub elapsed_ms: f64,
}

/// The most rows the table format lays out (it must see every row to size the columns).
pub const TABLE_ROWS: usize = 10_000;

impl Catalog {
    /// Runs one statement and writes its result to `out`; the statement lands in query history.
    pub fn run_sql(&self, sql: &str, format: OutputFormat, out: &mut dyn Write) -> Result<QueryOutput, DataError> {
        let start = Instant::now();
        let result = self.run_sql_inner(sql, format, out);
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        let rows = result.as_ref().ok().copied();
        self.record_query(sql, rows.is_some(), rows, elapsed_ms);
        result.map(|rows| QueryOutput { rows, elapsed_ms })
    }

    fn run_sql_inner(&self, sql: &str, format: OutputFormat, out: &mut dyn Write) -> Result<u64, DataError> {
        let sql = sql.trim();
        if sql.is_empty() {
            return Err(DataError::User("The query is empty; give a SQL statement.".into()));
        }
        let mut stmt = self.conn.prepare(sql).map_err(sql_error)?;
        drop(stmt.stream_arrow([]).map_err(sql_error)?);
        let schema = stmt.schema();
        let mut sink: Box<dyn Sink> = match format {
            OutputFormat::Table => Box::new(TableSink::default()),
            OutputFormat::Csv => Box::new(CsvSink { header_done: false }),
            OutputFormat::Json => Box::new(JsonSink { first: true }),
        };
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let types: Vec<String> = schema.fields().iter().map(|f| f.data_type().to_string()).collect();
        sink.start(&names, &types, out)?;
        let mut rows = 0u64;
        while let Some(chunk) = stmt.step().map_err(sql_error)? {
            let batch = RecordBatch::from(&chunk);
            rows += batch.num_rows() as u64;
            sink.batch(&names, &batch, out)?;
        }
        sink.finish(rows, out)?;
        Ok(rows)
    }
}

pub(crate) fn sql_error(e: duckdb::Error) -> DataError {
    DataError::User(format!("SQL error: {}; fix the query and run it again.", super::clean_db_error(&e.to_string()).trim_end_matches('.')))
}

trait Sink {
    fn start(&mut self, names: &[String], types: &[String], out: &mut dyn Write) -> Result<(), DataError>;
    fn batch(&mut self, names: &[String], b: &RecordBatch, out: &mut dyn Write) -> Result<(), DataError>;
    fn finish(&mut self, rows: u64, out: &mut dyn Write) -> Result<(), DataError>;
}

pub(crate) fn cells(b: &RecordBatch, null: &str) -> Result<Vec<Vec<String>>, DataError> {
    let opts = FormatOptions::default().with_null(null);
    let fmts: Vec<ArrayFormatter> = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<_, _>>()
        .map_err(|e| DataError::Db(e.to_string()))?;
    Ok((0..b.num_rows()).map(|r| fmts.iter().map(|f| f.value(r).to_string()).collect()).collect())
}

#[derive(Default)]
struct TableSink {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Sink for TableSink {
    fn start(&mut self, names: &[String], types: &[String], _: &mut dyn Write) -> Result<(), DataError> {
        self.header = names.iter().zip(types).map(|(n, t)| format!("{n} ({t})")).collect();
        Ok(())
    }
    fn batch(&mut self, _: &[String], b: &RecordBatch, _: &mut dyn Write) -> Result<(), DataError> {
        if self.rows.len() < TABLE_ROWS {
            let mut c = cells(b, "NULL")?;
            c.truncate(TABLE_ROWS - self.rows.len());
            self.rows.extend(c);
        }
        Ok(())
    }
    fn finish(&mut self, rows: u64, out: &mut dyn Write) -> Result<(), DataError> {
        write_table(&self.header, &self.rows, out)?;
        if rows as usize > self.rows.len() {
            writeln!(out, "({} rows, first {} shown; use --format csv or json for all)", rows, self.rows.len())?;
        } else {
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

/// Lays out a header and rows as `lathe sql` prints them: columns padded to their widest cell,
/// cells over 60 characters clipped, newlines shown as \n.
pub fn write_table(header: &[String], rows: &[Vec<String>], out: &mut dyn Write) -> std::io::Result<()> {
    let clip = |s: &str| -> String {
        let s = s.replace('\n', "\\n");
        if s.chars().count() > 60 { format!("{}…", s.chars().take(59).collect::<String>()) } else { s }
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    let rows_txt: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| clip(c)).collect()).collect();
    for r in &rows_txt {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String { cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join(" │ ") };
    writeln!(out, "{}", line(header).trim_end())?;
    writeln!(out, "{}", widths.iter().map(|w| "─".repeat(*w)).collect::<Vec<_>>().join("─┼─"))?;
    for r in &rows_txt {
        writeln!(out, "{}", line(r).trim_end())?;
    }
    Ok(())
}

struct CsvSink {
    header_done: bool,
}

pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

impl Sink for CsvSink {
    fn start(&mut self, names: &[String], _: &[String], out: &mut dyn Write) -> Result<(), DataError> {
        writeln!(out, "{}", names.iter().map(|n| csv_field(n)).collect::<Vec<_>>().join(","))?;
        self.header_done = true;
        Ok(())
    }
    fn batch(&mut self, _: &[String], b: &RecordBatch, out: &mut dyn Write) -> Result<(), DataError> {
        for r in cells(b, "")? {
            writeln!(out, "{}", r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","))?;
        }
        Ok(())
    }
    fn finish(&mut self, _: u64, _: &mut dyn Write) -> Result<(), DataError> {
        Ok(())
    }
}

struct JsonSink {
    first: bool,
}

impl Sink for JsonSink {
    fn start(&mut self, _: &[String], _: &[String], out: &mut dyn Write) -> Result<(), DataError> {
        write!(out, "[")?;
        Ok(())
    }
    fn batch(&mut self, _: &[String], b: &RecordBatch, out: &mut dyn Write) -> Result<(), DataError> {
        let mut buf = Vec::new();
        {
            let mut w = duckdb::arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(b).map_err(|e| DataError::Db(e.to_string()))?;
            w.finish().map_err(|e| DataError::Db(e.to_string()))?;
        }
        for line in buf.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            if !self.first {
                write!(out, ",")?;
            }
            self.first = false;
            write!(out, "\n  ")?;
            out.write_all(line)?;
        }
        Ok(())
    }
    fn finish(&mut self, _: u64, out: &mut dyn Write) -> Result<(), DataError> {
        writeln!(out, "{}]", if self.first { "" } else { "\n" })?;
        Ok(())
    }
}
