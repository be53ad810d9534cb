//! Training-set views: a named SQL query plus a format, with a deterministic train/eval split by a
//! hash of each row's content. The training engine reads examples through `Catalog::examples`.

use serde::{Deserialize, Serialize};

use super::{Catalog, DataError};
use crate::engine::types::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewFormat {
    /// instruction / input / output
    Alpaca,
    /// messages: a list of {role, content}
    Chat,
    /// prompt / completion
    Completion,
    /// one text column
    Text,
}

impl ViewFormat {
    pub fn parse(s: &str) -> Result<ViewFormat, DataError> {
        Ok(match s {
            "alpaca" => ViewFormat::Alpaca,
            "chat" => ViewFormat::Chat,
            "completion" => ViewFormat::Completion,
            "text" => ViewFormat::Text,
            _ => {
                return Err(DataError::User(format!(
                    "No view format {s:?}; use alpaca, chat, completion or text."
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ViewFormat::Alpaca => "alpaca",
            ViewFormat::Chat => "chat",
            ViewFormat::Completion => "completion",
            ViewFormat::Text => "text",
        }
    }

    /// The columns the query must give (input may be absent in alpaca).
    fn required(self) -> &'static [&'static str] {
        match self {
            ViewFormat::Alpaca => &["instruction", "output"],
            ViewFormat::Chat => &["messages"],
            ViewFormat::Completion => &["prompt", "completion"],
            ViewFormat::Text => &["text"],
        }
    }
}

/// One training example, as the view's format defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Example {
    Chat { messages: Vec<Message> },
    Alpaca { instruction: String, #[serde(default)] input: Option<String>, output: String },
    Completion { prompt: String, completion: String },
    Text { text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewInfo {
    pub name: String,
    pub sql: String,
    pub format: ViewFormat,
    pub eval_fraction: f64,
    pub train_rows: u64,
    pub eval_rows: u64,
}

/// A view's name with its split sizes, or why it can no longer be read.
pub type ViewListing = (String, Result<ViewInfo, String>);

pub const DEFAULT_EVAL_FRACTION: f64 = 0.05;
/// The split hashes each row to one of this many buckets.
const BUCKETS: u64 = 1_000_000;

impl Catalog {
    pub fn create_view(
        &self,
        name: &str,
        sql: &str,
        format: ViewFormat,
        eval_fraction: f64,
        replace: bool,
    ) -> Result<ViewInfo, DataError> {
        if !(0.0..1.0).contains(&eval_fraction) {
            return Err(DataError::User(format!(
                "The eval fraction {eval_fraction} must be at least 0 and below 1 (e.g. 0.05)."
            )));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DataError::User(format!("{name:?} cannot name a view; use letters, digits and _.")));
        }
        let sql = sql.trim().trim_end_matches(';').trim().to_string();
        let exists: i64 = self.conn.query_row("SELECT count(*) FROM lathe.views WHERE name = ?", [name], |r| r.get(0))?;
        if exists > 0 && !replace {
            return Err(DataError::Exists(format!("A view named {name} already exists; pass --replace to redefine it.")));
        }
        self.check_columns(&sql, format)?;
        self.conn.execute("DELETE FROM lathe.views WHERE name = ?", [name])?;
        self.conn.execute(
            "INSERT INTO lathe.views (name, sql, format, eval_fraction) VALUES (?, ?, ?, ?)",
            duckdb::params![name, sql, format.name(), eval_fraction],
        )?;
        self.view_info(name)
    }

    /// The query must give the format's columns, with text where text is expected.
    fn check_columns(&self, sql: &str, format: ViewFormat) -> Result<(), DataError> {
        let mut stmt = self.conn.prepare(&format!("DESCRIBE ({sql})")).map_err(|e| {
            DataError::User(format!("The view's query fails: {}; fix it and try again.", super::clean_db_error(&e.to_string())))
        })?;
        let cols: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<_, _>>()?;
        let have = |c: &str| cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
        let listed = cols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        for need in format.required() {
            let Some(ty) = have(need) else {
                return Err(DataError::User(format!(
                    "A {} view needs a column named {need}; the query gives {listed}. Rename with AS.",
                    format.name()
                )));
            };
            let ok = if *need == "messages" {
                ty.ends_with("[]") && ty.contains("\"role\" VARCHAR") && ty.contains("\"content\" VARCHAR")
            } else {
                ty == "VARCHAR"
            };
            if !ok {
                let want = if *need == "messages" { "a list of {role, content} text structs" } else { "text (VARCHAR)" };
                return Err(DataError::User(format!(
                    "Column {need} is {ty}, but a {} view needs {want}; cast it in the query.",
                    format.name()
                )));
            }
        }
        Ok(())
    }

    fn split_predicate(fraction: f64) -> String {
        let cut = (fraction * BUCKETS as f64).round() as u64;
        // md5 of the row's JSON: stable across runs and DuckDB versions; identical rows share a split.
        format!("md5_number_lower(to_json(v)::VARCHAR) % {BUCKETS} < {cut}")
    }

    pub fn view_info(&self, name: &str) -> Result<ViewInfo, DataError> {
        let (sql, format, fraction): (String, String, f64) = self
            .conn
            .query_row("SELECT sql, format, eval_fraction FROM lathe.views WHERE name = ?", [name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|_| DataError::User(format!("No view named {name}; `lathe data view list` shows the views.")))?;
        let counts = format!(
            "SELECT count(*) FILTER (WHERE NOT ({p})), count(*) FILTER (WHERE {p}) FROM ({sql}) v",
            p = Catalog::split_predicate(fraction)
        );
        let (train, eval): (i64, i64) = self
            .conn
            .query_row(&counts, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| DataError::User(format!("View {name} no longer runs ({}); redefine it with --replace.", super::clean_db_error(&e.to_string()))))?;
        Ok(ViewInfo {
            name: name.to_string(),
            sql,
            format: ViewFormat::parse(&format)?,
            eval_fraction: fraction,
            train_rows: train as u64,
            eval_rows: eval as u64,
        })
    }

    /// Every view by name, with its split sizes or the sentence that says why it no longer runs
    /// (its tables dropped, say): one broken view does not hide the others.
    pub fn views(&self) -> Result<Vec<ViewListing>, DataError> {
        Ok(self.view_names()?.into_iter().map(|n| {
            let info = self.view_info(&n).map_err(|e| e.to_string());
            (n, info)
        }).collect())
    }

    /// The views' names, without running them (one whose tables are gone is named too).
    pub fn view_names(&self) -> Result<Vec<String>, DataError> {
        let mut stmt = self.conn.prepare("SELECT name FROM lathe.views ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(names)
    }

    pub fn drop_view(&self, name: &str) -> Result<(), DataError> {
        let n = self.conn.execute("DELETE FROM lathe.views WHERE name = ?", [name])?;
        if n == 0 {
            return Err(DataError::User(format!("No view named {name}; `lathe data view list` shows the views.")));
        }
        Ok(())
    }

    /// The examples of one split, in a stable order (by the same row hash), at most `limit`.
    /// This is what the training engine reads.
    pub fn examples(&self, name: &str, split: Split, limit: Option<usize>) -> Result<Vec<Example>, DataError> {
        let info = self.view_info(name)?;
        let pred = Catalog::split_predicate(info.eval_fraction);
        let cond = match split {
            Split::Eval => pred,
            Split::Train => format!("NOT ({pred})"),
        };
        let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
        let q = format!(
            "SELECT to_json(v)::VARCHAR FROM ({}) v WHERE {cond} ORDER BY md5(to_json(v)::VARCHAR){limit}",
            info.sql
        );
        let mut stmt = self.conn.prepare(&q)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row?;
            let ex = parse_example(info.format, &json)
                .map_err(|e| DataError::User(format!("A row of view {name} does not fit the {} format ({e}): {json}", info.format.name())))?;
            out.push(ex);
        }
        Ok(out)
    }
}

/// A dataset's or view's column as documents for the knowledge engine (`dataset:NAME.COLUMN`):
/// a dataset's rows in their stored order, a view's in its query's.
impl crate::engine::knowledge::ingest::Rows for Catalog {
    fn each_row(&self, name: &str, column: &str, f: &mut dyn FnMut(u64, String) -> bool) -> Result<(), String> {
        use super::import::quote_ident;
        let (from, order) = if self.dataset_exists(name).map_err(|e| e.to_string())? {
            (quote_ident(name), " ORDER BY rowid")
        } else {
            match self.conn.query_row("SELECT sql FROM lathe.views WHERE name = ?", [name], |r| r.get::<_, String>(0)) {
                Ok(sql) => (format!("({sql}) v"), ""),
                Err(_) => return Err(format!("There is no dataset or view named {name}; `lathe data list` and `lathe data view list` show them.")),
            }
        };
        let columns: Vec<String> = match self.conn.prepare(&format!("DESCRIBE SELECT * FROM {from}")) {
            Ok(mut stmt) => stmt.query_map([], |r| r.get::<_, String>(0)).and_then(|rows| rows.collect()).map_err(|e| e.to_string())?,
            Err(e) => return Err(format!("{name} no longer runs ({}); fix it and sync again.", super::clean_db_error(&e.to_string()))),
        };
        if !columns.iter().any(|c| c == column) {
            return Err(format!("{name} has no column {column}; it has {}.", columns.join(", ")));
        }
        let q = format!("SELECT CAST({} AS VARCHAR) FROM {from}{order}", quote_ident(column));
        let mut stmt = self.conn.prepare(&q).map_err(|e| super::clean_db_error(&e.to_string()))?;
        let mut rows = stmt.query([]).map_err(|e| super::clean_db_error(&e.to_string()))?;
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(|e| super::clean_db_error(&e.to_string()))? {
            n += 1;
            if let Some(text) = row.get::<_, Option<String>>(0).map_err(|e| e.to_string())? {
                if !f(n, text) {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn parse_example(format: ViewFormat, json: &str) -> Result<Example, serde_json::Error> {
    #[derive(Deserialize)]
    struct A {
        instruction: String,
        #[serde(default)]
        input: Option<String>,
        output: String,
    }
    #[derive(Deserialize)]
    struct C {
        messages: Vec<Message>,
    }
    #[derive(Deserialize)]
    struct P {
        prompt: String,
        completion: String,
    }
    #[derive(Deserialize)]
    struct T {
        text: String,
    }
    Ok(match format {
        ViewFormat::Alpaca => {
            let a: A = serde_json::from_str(json)?;
            Example::Alpaca { instruction: a.instruction, input: a.input.filter(|s| !s.is_empty()), output: a.output }
        }
        ViewFormat::Chat => Example::Chat { messages: serde_json::from_str::<C>(json)?.messages },
        ViewFormat::Completion => {
            let p: P = serde_json::from_str(json)?;
            Example::Completion { prompt: p.prompt, completion: p.completion }
        }
        ViewFormat::Text => Example::Text { text: serde_json::from_str::<T>(json)?.text },
    })
}

impl Example {
    /// A readable rendering for `lathe data view show` and the Data pane's preview.
    pub fn pretty(&self) -> String {
        match self {
            Example::Alpaca { instruction, input, output } => {
                let mut s = format!("instruction: {instruction}\n");
                if let Some(i) = input {
                    s += &format!("input: {i}\n");
                }
                s + &format!("output: {output}\n")
            }
            Example::Chat { messages } => messages.iter().map(|m| format!("{}: {}\n", m.role, m.content)).collect(),
            Example::Completion { prompt, completion } => format!("prompt: {prompt}\ncompletion: {completion}\n"),
            Example::Text { text } => format!("{text}\n"),
        }
    }
}

/// The views a new workspace gets over the demo datasets.
pub const DEMO_VIEWS: &[(&str, &str, ViewFormat)] = &[
    ("instruct", "SELECT instruction, input, output FROM instruct", ViewFormat::Alpaca),
    ("chat", "SELECT messages FROM chat", ViewFormat::Chat),
];
