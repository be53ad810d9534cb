//! Read-only SQL for callers the workspace does not trust with its files (lathe serve's API):
//! one SELECT that reads only the catalog's own tables and views, never a file, a setting or
//! another database, stopped at a row limit and a time limit. DuckDB parses the statement
//! (`json_serialize_sql`, which serializes SELECT statements only) and the parse tree is checked
//! before it runs: every table it names must be a table or view of the workspace (or a CTE of the
//! statement), and the only table functions allowed are the ones that make rows from nothing
//! (range, generate_series, unnest). Anything else the tree holds that is not known is refused,
//! so a construct added by a later DuckDB fails closed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::query::sql_error;
use super::{Catalog, DataError};

/// Table functions that make rows without reading anything.
const TABLE_FUNCTIONS: &[&str] = &["range", "generate_series", "unnest"];
/// Scalar functions that would tell the caller about the machine rather than the data.
const SCALAR_FUNCTIONS: &[&str] = &["getenv", "current_setting", "read_text", "read_blob"];
/// The kinds of table reference a read may use (others are refused).
const TABLE_REFS: &[&str] = &["BASE_TABLE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "EMPTY_FROM", "TABLE_FUNCTION", "PIVOT"];

/// A read's result: its columns and, up to the limit, its rows as JSON objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// Whether the statement had more rows than the limit.
    pub truncated: bool,
    pub elapsed_ms: f64,
    /// How many rows the whole statement gives, when it was asked for (`Window::count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Which rows of a read come back: from `offset`, and whether the whole count is wanted too
/// (a client paging through a result, as the SQL pane does).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub offset: u64,
    pub count: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

fn refused(why: &str) -> DataError {
    DataError::Refused(format!("{why}; only one SELECT over the workspace's tables and views runs here."))
}

impl Catalog {
    /// Checks that `sql` is one SELECT that reads only the workspace's own relations.
    pub fn check_read_only(&self, sql: &str) -> Result<(), DataError> {
        let tree: String = self.conn.query_row(&format!("SELECT json_serialize_sql({})", super::import::quote_str(sql)), [], |r| r.get(0)).map_err(sql_error)?;
        let tree: Value = serde_json::from_str(&tree).map_err(|e| DataError::Db(e.to_string()))?;
        if tree["error"].as_bool() != Some(false) {
            let msg = tree["error_message"].as_str().unwrap_or("it does not parse");
            if msg.contains("Only SELECT") {
                return Err(refused("The statement is not a SELECT"));
            }
            return Err(DataError::User(format!("SQL error: {}; fix the query and run it again.", msg.trim_end_matches('.'))));
        }
        match tree["statements"].as_array().map(Vec::len) {
            Some(1) => {}
            Some(0) | None => return Err(DataError::User("The query is empty; give a SQL statement.".into())),
            Some(_) => return Err(refused("The query holds several statements")),
        }
        let mut relations: HashSet<(String, String)> = HashSet::new();
        let mut stmt = self.conn.prepare(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()
             UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal",
        )?;
        for r in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (s, t) = r?;
            relations.insert((s.to_lowercase(), t.to_lowercase()));
        }
        let database: String = self.conn.query_row("SELECT current_database()", [], |r| r.get(0))?;
        let mut ctes = HashSet::new();
        collect_ctes(&tree, &mut ctes);
        check(&tree["statements"], &Allowed { relations: &relations, ctes: &ctes, database: &database.to_lowercase() })
    }

    /// Runs `sql` if `check_read_only` allows it: at most `limit` rows, interrupted after `timeout`.
    pub fn read_only(&self, sql: &str, limit: usize, timeout: Duration) -> Result<Rows, DataError> {
        self.read_window(sql, Window::default(), limit, timeout)
    }

    /// `read_only` from row `window.offset` (the statement is checked as it was written, then
    /// read as a subquery), with its whole row count when asked. Only a first window is recorded
    /// in the statement history.
    pub fn read_window(&self, sql: &str, window: Window, limit: usize, timeout: Duration) -> Result<Rows, DataError> {
        let sql = sql.trim().trim_end_matches(';');
        if sql.trim().is_empty() {
            return Err(DataError::User("The query is empty; give a SQL statement.".into()));
        }
        self.check_read_only(sql)?;
        let start = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let timed_out = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (done, timed_out, handle) = (done.clone(), timed_out.clone(), self.conn.interrupt_handle());
            std::thread::spawn(move || {
                let deadline = Instant::now() + timeout;
                while !done.load(Ordering::Acquire) {
                    if Instant::now() >= deadline {
                        timed_out.store(true, Ordering::Release);
                        // An interrupt sent before execution starts can be missed: repeat it.
                        handle.interrupt();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let result = match window.offset {
            0 => self.read_rows(sql, limit),
            n => self.read_rows(&format!("SELECT * FROM ({sql}) OFFSET {n}"), limit),
        };
        let result = match result {
            Ok(r) if window.count => self
                .conn
                .query_row(&format!("SELECT count(*) FROM ({sql})"), [], |row| row.get::<_, u64>(0))
                .map_err(sql_error)
                .map(|n| Rows { total: Some(n), ..r }),
            r => r,
        };
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        if window.offset == 0 {
            self.record_query(sql, result.is_ok(), result.as_ref().ok().map(|r| r.rows.len() as u64), elapsed_ms);
        }
        match result {
            Err(_) if timed_out.load(Ordering::Acquire) => {
                Err(DataError::User(format!("The query ran past its {} s limit and was stopped; narrow it or add a LIMIT.", timeout.as_secs_f64())))
            }
            r => r.map(|r| Rows { elapsed_ms, ..r }),
        }
    }

    fn read_rows(&self, sql: &str, limit: usize) -> Result<Rows, DataError> {
        let mut stmt = self.conn.prepare(sql).map_err(sql_error)?;
        drop(stmt.stream_arrow([]).map_err(sql_error)?);
        let schema = stmt.schema();
        let columns = schema.fields().iter().map(|f| Column { name: f.name().clone(), ty: f.data_type().to_string() }).collect();
        let mut rows = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = stmt.step().map_err(sql_error)? {
            let batch = RecordBatch::from(&chunk);
            if rows.len() + batch.num_rows() > limit {
                truncated = true;
            }
            let take = batch.num_rows().min(limit - rows.len());
            rows.extend(json_rows(&batch.slice(0, take))?);
            if truncated {
                break;
            }
        }
        Ok(Rows { columns, rows, truncated, elapsed_ms: 0.0, total: None })
    }
}

fn json_rows(b: &RecordBatch) -> Result<Vec<serde_json::Map<String, Value>>, DataError> {
    let mut buf = Vec::new();
    {
        let mut w = duckdb::arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(b).map_err(|e| DataError::Db(e.to_string()))?;
        w.finish().map_err(|e| DataError::Db(e.to_string()))?;
    }
    buf.split(|c| *c == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).map_err(|e| DataError::Db(e.to_string()))).collect()
}

struct Allowed<'a> {
    relations: &'a HashSet<(String, String)>,
    ctes: &'a HashSet<String>,
    database: &'a str,
}

fn collect_ctes(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::Object(o) => {
            if let Some(map) = o.get("cte_map").and_then(|m| m["map"].as_array()) {
                for e in map {
                    if let Some(k) = e["key"].as_str() {
                        out.insert(k.to_lowercase());
                    }
                }
            }
            o.values().for_each(|c| collect_ctes(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_ctes(c, out)),
        _ => {}
    }
}

/// Walks the parse tree: table references (objects with a `sample` but neither an expression's
/// `class` nor a query node's `modifiers`) and function calls are checked; everything is visited.
fn check(v: &Value, ok: &Allowed) -> Result<(), DataError> {
    match v {
        Value::Object(o) => {
            let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
            let is_ref = o.contains_key("sample") && !o.contains_key("class") && !o.contains_key("modifiers");
            if is_ref {
                if !TABLE_REFS.contains(&ty) {
                    return Err(refused(&format!("The statement uses a {} reference", ty.to_lowercase().replace('_', " "))));
                }
                if ty == "BASE_TABLE" {
                    let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_lowercase();
                    let (catalog, schema, table) = (s("catalog_name"), s("schema_name"), s("table_name"));
                    let known = if schema.is_empty() { ok.ctes.contains(&table) || ok.relations.contains(&("main".into(), table.clone())) } else { ok.relations.contains(&(schema.clone(), table.clone())) };
                    if !(catalog.is_empty() || catalog == ok.database) || !known {
                        let name = [catalog, schema, table].into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join(".");
                        return Err(refused(&format!("{name} is not a table or view of the workspace")));
                    }
                }
                if ty == "TABLE_FUNCTION" {
                    let f = o.get("function").and_then(|f| f["function_name"].as_str()).unwrap_or("").to_lowercase();
                    if !TABLE_FUNCTIONS.contains(&f.as_str()) {
                        return Err(refused(&format!("The table function {f} is not allowed")));
                    }
                }
            }
            if o.get("class").and_then(Value::as_str) == Some("FUNCTION") {
                let f = o.get("function_name").and_then(Value::as_str).unwrap_or("").to_lowercase();
                if SCALAR_FUNCTIONS.contains(&f.as_str()) {
                    return Err(refused(&format!("The function {f} is not allowed")));
                }
            }
            o.values().try_for_each(|c| check(c, ok))
        }
        Value::Array(a) => a.iter().try_for_each(|c| check(c, ok)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat() -> Catalog {
        let c = Catalog::in_memory().unwrap();
        c.conn.execute_batch("CREATE TABLE t AS SELECT range AS x, 'r' || range AS s FROM range(100); CREATE VIEW v AS SELECT x FROM t WHERE x < 3;").unwrap();
        c
    }

    #[test]
    fn reads_tables_views_ctes_and_lathe_tables() {
        let c = cat();
        for q in [
            "select * from t",
            "select count(*) from v",
            "with w as (select x from t) select * from w join v using (x)",
            "select * from lathe.datasets",
            "select x from t where x in (select x from v) union all select 1",
            "select * from range(3)",
            "select 1 + 1",
            "select * from (values (1), (2)) as q(a)",
        ] {
            c.read_only(q, 10, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn refuses_writes_files_settings_and_other_databases() {
        let c = cat();
        std::fs::write(std::env::temp_dir().join("lathe-ro.csv"), "a\n1\n").unwrap();
        let csv = std::env::temp_dir().join("lathe-ro.csv").display().to_string();
        for q in [
            "insert into t values (1, 'x')".to_string(),
            "create table u as select 1".into(),
            "copy t to 'out.csv'".into(),
            "attach 'other.duckdb' as o".into(),
            "set threads = 1".into(),
            format!("select * from '{csv}'"),
            format!("select * from read_csv('{csv}')"),
            format!("select * from t where x in (select a from read_csv_auto('{csv}'))"),
            format!("select * from t, (select * from '{csv}')"),
            "select * from glob('/etc/*')".into(),
            "select * from query('select 1')".into(),
            "select getenv('HOME')".into(),
            "select current_setting('home_directory')".into(),
            "select * from system.main.duckdb_settings()".into(),
            "select * from memory.main.nothing".into(),
            "select 1; select 2".into(),
        ] {
            let e = c.read_only(&q, 10, Duration::from_secs(5)).expect_err(&q);
            assert!(matches!(&e, DataError::Refused(_)), "{q}: {e:?}");
        }
        // Nothing was written.
        let n: i64 = c.conn.query_row("select count(*) from t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 100);
    }

    #[test]
    fn stops_at_the_row_limit_and_the_time_limit() {
        let c = cat();
        let r = c.read_only("select x, s from t order by x", 7, Duration::from_secs(5)).unwrap();
        assert_eq!(r.rows.len(), 7);
        assert!(r.truncated);
        assert_eq!(r.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["x", "s"]);
        assert_eq!(r.rows[6]["x"], 6);
        assert_eq!(r.rows[6]["s"], "r6");
        let all = c.read_only("select x from t", 100, Duration::from_secs(5)).unwrap();
        assert!(!all.truncated);
        let e = c.read_only("select count(*) from range(100000000) a, range(100000000) b", 10, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn a_window_reads_from_its_offset_and_counts_the_whole() {
        let c = cat();
        let w = Window { offset: 95, count: true };
        let r = c.read_window("select x from t order by x;", w, 10, Duration::from_secs(5)).unwrap();
        assert_eq!(r.rows.iter().map(|r| r["x"].as_i64().unwrap()).collect::<Vec<_>>(), [95, 96, 97, 98, 99]);
        assert_eq!(r.total, Some(100));
        assert!(!r.truncated);
        // The window does not make a refused statement readable.
        let e = c.read_window("delete from t", w, 10, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, DataError::Refused(_)), "{e:?}");
    }
}
