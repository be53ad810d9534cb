//! Results for the grid: a query's shape, then pages of rows fetched with LIMIT/OFFSET over the
//! same statement, so a result of any size is never held in memory. Statements that cannot be
//! wrapped (DDL, PRAGMA, ...) run once and keep at most `OTHER_ROWS` rows.

use duckdb::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::query::cells;
use super::{Catalog, DataError};

pub const OTHER_ROWS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Shape {
    pub columns: Vec<String>,
    pub types: Vec<String>,
}

/// Whether the statement yields rows that `SELECT * FROM (...)` can page over.
pub fn is_pageable(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .trim_start_matches('(')
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(first.as_str(), "select" | "with" | "from" | "values" | "table")
}

fn strip(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim()
}

impl Catalog {
    /// The columns and DuckDB types of a pageable query (binds it without running it).
    pub fn shape(&self, sql: &str) -> Result<Shape, DataError> {
        let mut stmt = self.conn.prepare(&format!("DESCRIBE ({})", strip(sql))).map_err(super::query::sql_error)?;
        let mut shape = Shape::default();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(super::query::sql_error)?;
        for row in rows {
            let (c, t) = row?;
            shape.columns.push(c);
            shape.types.push(t);
        }
        Ok(shape)
    }

    /// Rows `offset..offset+limit` of a pageable query, as display text (NULL as "NULL").
    pub fn page(&self, sql: &str, offset: u64, limit: u64) -> Result<Vec<Vec<String>>, DataError> {
        let q = format!("SELECT * FROM ({}) LIMIT {limit} OFFSET {offset}", strip(sql));
        let mut stmt = self.conn.prepare(&q).map_err(super::query::sql_error)?;
        drop(stmt.stream_arrow([]).map_err(super::query::sql_error)?);
        let mut out = Vec::new();
        while let Some(chunk) = stmt.step().map_err(super::query::sql_error)? {
            out.extend(cells(&RecordBatch::from(&chunk), "NULL")?);
        }
        Ok(out)
    }

    pub fn count(&self, sql: &str) -> Result<u64, DataError> {
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM ({})", strip(sql)), [], |r| r.get(0))
            .map_err(super::query::sql_error)?;
        Ok(n as u64)
    }

    /// Runs a statement that is not pageable; returns its shape, up to OTHER_ROWS rows and the
    /// total row count.
    pub fn run_other(&self, sql: &str) -> Result<(Shape, Vec<Vec<String>>, u64), DataError> {
        let mut stmt = self.conn.prepare(strip(sql)).map_err(super::query::sql_error)?;
        drop(stmt.stream_arrow([]).map_err(super::query::sql_error)?);
        let schema = stmt.schema();
        let shape = Shape {
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            types: schema.fields().iter().map(|f| f.data_type().to_string()).collect(),
        };
        let mut rows = Vec::new();
        let mut total = 0u64;
        while let Some(chunk) = stmt.step().map_err(super::query::sql_error)? {
            let b = RecordBatch::from(&chunk);
            total += b.num_rows() as u64;
            if rows.len() < OTHER_ROWS {
                let mut c = cells(&b, "NULL")?;
                c.truncate(OTHER_ROWS - rows.len());
                rows.extend(c);
            }
        }
        Ok((shape, rows, total))
    }

    /// Remembers a statement in lathe.query_history (best effort).
    pub fn record_query(&self, sql: &str, ok: bool, rows: Option<u64>, elapsed_ms: f64) {
        let _ = self.conn.execute(
            "INSERT INTO lathe.query_history (sql, ok, rows, elapsed_ms) VALUES (?, ?, ?, ?)",
            duckdb::params![sql.trim(), ok, rows, elapsed_ms],
        );
    }

    /// The most recent distinct statements, oldest first, for recall in the editor.
    pub fn recent_queries(&self, n: usize) -> Result<Vec<String>, DataError> {
        let mut stmt = self.conn.prepare(
            "SELECT sql FROM (SELECT sql, max(id) AS last FROM lathe.query_history GROUP BY sql)
             ORDER BY last DESC LIMIT ?",
        )?;
        let mut v: Vec<String> = stmt.query_map([n as i64], |r| r.get(0))?.collect::<Result<_, _>>()?;
        v.reverse();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pageable_statements() {
        for s in ["select 1", "  WITH x AS (select 1) select * from x", "from t", "(select 1)", "values (1)"] {
            assert!(is_pageable(s), "{s}");
        }
        for s in ["create table t (a int)", "pragma version", "describe t", "insert into t values (1)"] {
            assert!(!is_pageable(s), "{s}");
        }
    }

    #[test]
    fn pages_cover_the_result_exactly() {
        let cat = Catalog::in_memory().unwrap();
        let q = "select range as i, 'r' || range as s from range(1000) order by i";
        assert_eq!(cat.shape(q).unwrap(), Shape { columns: vec!["i".into(), "s".into()], types: vec!["BIGINT".into(), "VARCHAR".into()] });
        assert_eq!(cat.count(q).unwrap(), 1000);
        let p = cat.page(q, 990, 50).unwrap();
        assert_eq!(p.len(), 10);
        assert_eq!(p[0], vec!["990".to_string(), "r990".to_string()]);
        let (shape, rows, total) = cat.run_other("pragma version").unwrap();
        assert!(!shape.columns.is_empty() && total == 1 && rows.len() == 1);
        cat.record_query("select 1", true, Some(1), 1.0);
        cat.record_query("select 2", true, Some(1), 1.0);
        cat.record_query("select 1", true, Some(1), 1.0);
        assert_eq!(cat.recent_queries(10).unwrap(), ["select 2", "select 1"]);
    }
}
