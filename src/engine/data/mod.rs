//! The workspace catalog: one DuckDB file, `lathe.duckdb`. Datasets are tables in the `main`
//! schema; lathe's own tables (datasets, query history, later runs and metrics) live in the
//! `lathe` schema of the same file, so SQL and the duckdb CLI see them like any dataset.
//! Only one process may open the file for writing; DuckDB's own file lock enforces that and we
//! turn its message into one that names the holder.

pub mod chats;
pub mod demo;
pub mod import;
pub mod paging;
pub mod quant_evals;
pub mod query;
pub mod readonly;
pub mod runs;
pub mod views;
pub mod worker;

use std::path::{Path, PathBuf};

use duckdb::Connection;

pub use import::{DatasetInfo, ExportSource, ImportOptions};
pub use query::{OutputFormat, QueryOutput};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("The workspace catalog {path} is open in another process ({holder}); close it there, or pass --home to use another workspace")]
    Locked { path: PathBuf, holder: String },
    /// A sentence for the user that says what to do.
    #[error("{0}")]
    User(String),
    /// What would be created exists already (a dataset, a view): a sentence that says how to
    /// replace it. Front ends may ask before replacing.
    #[error("{0}")]
    Exists(String),
    /// Not allowed to this caller (read-only SQL that would write or read a file): a sentence.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Db(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<duckdb::Error> for DataError {
    fn from(e: duckdb::Error) -> Self {
        DataError::Db(clean_db_error(&e.to_string()))
    }
}

/// DuckDB's messages span lines and carry a type prefix; keep the line that says what is wrong.
pub fn clean_db_error(msg: &str) -> String {
    let lines: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut out = lines.join(" ");
    if out.len() > 600 {
        out.truncate(out.char_indices().take_while(|(i, _)| *i < 600).last().map(|(i, _)| i).unwrap_or(0));
        out.push('…');
    }
    out
}

pub struct Catalog {
    pub conn: Connection,
    pub path: PathBuf,
}

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS lathe;
CREATE TABLE IF NOT EXISTS lathe.datasets (
    name VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    source_bytes UBIGINT NOT NULL,
    imported_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS lathe.views (
    name VARCHAR PRIMARY KEY,
    sql VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    eval_fraction DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS lathe.jobs (
    session VARCHAR NOT NULL,
    job_id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    title VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    message VARCHAR,
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    PRIMARY KEY (session, job_id)
);
CREATE TABLE IF NOT EXISTS lathe.meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE SEQUENCE IF NOT EXISTS lathe.query_history_id;
CREATE TABLE IF NOT EXISTS lathe.query_history (
    id BIGINT PRIMARY KEY DEFAULT nextval('lathe.query_history_id'),
    sql VARCHAR NOT NULL,
    ran_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    ok BOOLEAN NOT NULL,
    rows UBIGINT,
    elapsed_ms DOUBLE
);
CREATE TABLE IF NOT EXISTS lathe.runs (
    id VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    model_hash VARCHAR,
    view VARCHAR NOT NULL,
    view_sql VARCHAR,
    rows_hash VARCHAR,
    train_examples BIGINT,
    eval_examples BIGINT,
    params VARCHAR,
    total_steps BIGINT,
    step BIGINT DEFAULT 0,
    train_loss DOUBLE,
    eval_loss DOUBLE,
    best_eval_loss DOUBLE,
    exact_match DOUBLE,
    tokens_per_s DOUBLE,
    peak_rss_bytes UBIGINT,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    duration_s DOUBLE,
    artifacts VARCHAR,
    message VARCHAR
);
-- Added with QLoRA: how the base was held and which optimizer ran (older runs: f32, adamw).
ALTER TABLE lathe.runs ADD COLUMN IF NOT EXISTS base VARCHAR;
ALTER TABLE lathe.runs ADD COLUMN IF NOT EXISTS optimizer VARCHAR;
CREATE TABLE IF NOT EXISTS lathe.metrics (
    run_id VARCHAR NOT NULL,
    step BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    loss DOUBLE,
    lr DOUBLE,
    grad_norm DOUBLE,
    tokens_per_s DOUBLE,
    epoch DOUBLE,
    elapsed_s DOUBLE,
    PRIMARY KEY (run_id, step, kind)
);
CREATE TABLE IF NOT EXISTS lathe.chats (
    id VARCHAR PRIMARY KEY,
    title VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    system VARCHAR,
    turns VARCHAR NOT NULL,
    sampling VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- The second model's side of a comparison (JSON), added after the table was first made.
ALTER TABLE lathe.chats ADD COLUMN IF NOT EXISTS compare VARCHAR;
CREATE TABLE IF NOT EXISTS lathe.model_paths (path VARCHAR PRIMARY KEY, added TIMESTAMP DEFAULT current_timestamp);
-- OpenAI-compatible servers in the model library: a short name, the base URL (…/v1) and the name
-- of the environment variable that holds its key (never the key).
CREATE TABLE IF NOT EXISTS lathe.model_servers (name VARCHAR PRIMARY KEY, base VARCHAR NOT NULL, key_env VARCHAR, added TIMESTAMP DEFAULT current_timestamp);
-- Knowledge collections (Lance datasets under vectors/), mirrored here after each change so SQL
-- sees them; the Lance datasets are the truth.
CREATE TABLE IF NOT EXISTS lathe.collections (
    name VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    model_dir VARCHAR NOT NULL,
    dimension INTEGER NOT NULL,
    documents BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    sources VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
";

impl Catalog {
    /// Makes lathe.collections hold exactly `list` (one transaction).
    pub fn mirror_collections(&self, list: &[crate::engine::knowledge::store::CollectionInfo]) -> Result<(), DataError> {
        self.conn.execute_batch("BEGIN")?;
        let r = (|| {
            self.conn.execute("DELETE FROM lathe.collections", [])?;
            for c in list {
                self.conn.execute(
                    "INSERT INTO lathe.collections (name, model, model_dir, dimension, documents, chunks, bytes, sources, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    duckdb::params![
                        c.name,
                        c.model.name,
                        c.model.dir,
                        c.model.dim as i64,
                        c.documents as i64,
                        c.chunks as i64,
                        c.bytes as i64,
                        serde_json::to_string(&c.sources).unwrap_or_default(),
                        c.path
                    ],
                )?;
            }
            Ok::<_, duckdb::Error>(())
        })();
        match r {
            Ok(()) => Ok(self.conn.execute_batch("COMMIT")?),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        }
    }
}

impl Catalog {
    /// Model files and folders the user added to the library (`lathe models add`).
    pub fn model_paths(&self) -> Result<Vec<std::path::PathBuf>, DataError> {
        let mut stmt = self.conn.prepare("SELECT path FROM lathe.model_paths ORDER BY added")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| r.ok()).map(std::path::PathBuf::from).collect())
    }

    pub fn add_model_path(&self, path: &std::path::Path) -> Result<(), DataError> {
        self.conn.execute("INSERT OR IGNORE INTO lathe.model_paths (path) VALUES (?)", duckdb::params![path.display().to_string()])?;
        Ok(())
    }

    /// Whether the path was in the library (it is not now).
    pub fn remove_model_path(&self, path: &std::path::Path) -> Result<bool, DataError> {
        Ok(self.conn.execute("DELETE FROM lathe.model_paths WHERE path = ?", duckdb::params![path.display().to_string()])? > 0)
    }

    /// OpenAI-compatible servers the user added (`lathe models add URL`).
    pub fn model_servers(&self) -> Result<Vec<crate::engine::types::ModelServer>, DataError> {
        let mut stmt = self.conn.prepare("SELECT name, base, key_env FROM lathe.model_servers ORDER BY added")?;
        let rows = stmt.query_map([], |r| Ok(crate::engine::types::ModelServer { name: r.get(0)?, base: r.get(1)?, key_env: r.get(2)? }))?;
        Ok(rows.filter_map(|r| r.ok()).collect())
    }

    /// Adds a server, or gives a name already taken a new address and key variable.
    pub fn add_model_server(&self, s: &crate::engine::types::ModelServer) -> Result<(), DataError> {
        self.conn.execute("INSERT OR REPLACE INTO lathe.model_servers (name, base, key_env) VALUES (?, ?, ?)", duckdb::params![s.name, s.base, s.key_env])?;
        Ok(())
    }

    /// Whether a server of that name was in the library (it is not now).
    pub fn remove_model_server(&self, name: &str) -> Result<bool, DataError> {
        Ok(self.conn.execute("DELETE FROM lathe.model_servers WHERE name = ?", duckdb::params![name])? > 0)
    }
}

impl Catalog {
    /// Opens (creating when new) the catalog for writing.
    ///
    /// The file is attached as `workspace` rather than under its file name: DuckDB names a
    /// database after its file, and a catalog called `lathe` would make `lathe.runs` ambiguous.
    pub fn open(path: &Path) -> Result<Catalog, DataError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(&format!("ATTACH {} AS workspace", import::quote_str(&path.to_string_lossy())))
            .map_err(|e| locked_or(path, e))?;
        conn.execute_batch("USE workspace")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(quant_evals::SCHEMA)?;
        Ok(Catalog { conn, path: path.to_path_buf() })
    }

    /// Opens the workspace's catalog; a new one gets the bundled demo datasets.
    pub fn open_workspace(ws: &crate::engine::workspace::Workspace) -> Result<Catalog, DataError> {
        let cat = Catalog::open(&ws.catalog_path())?;
        cat.seed_demo()?;
        // The catalog is this process's alone, so a run still marked running was cut off.
        cat.mark_interrupted()?;
        Ok(cat)
    }

    /// Another connection to the same open database, for work on another thread (imports and
    /// exports run as jobs while the grid keeps querying).
    pub fn try_clone(&self) -> Result<Catalog, DataError> {
        let conn = self.conn.try_clone()?;
        if self.path != Path::new(":memory:") {
            conn.execute_batch("USE workspace")?;
        }
        Ok(Catalog { conn, path: self.path.clone() })
    }

    /// An in-memory catalog for tests.
    pub fn in_memory() -> Result<Catalog, DataError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(quant_evals::SCHEMA)?;
        Ok(Catalog { conn, path: PathBuf::from(":memory:") })
    }

    pub fn dataset_exists(&self, name: &str) -> Result<bool, DataError> {
        let n: i64 = self.conn.query_row(
            "select count(*) from duckdb_tables()
             where database_name = current_database() and schema_name = 'main' and table_name = ?",
            [name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

/// DuckDB says "Could not set lock on file ... Conflicting lock is held in EXE (PID N)".
fn locked_or(path: &Path, e: duckdb::Error) -> DataError {
    let msg = e.to_string();
    if msg.contains("Could not set lock") || msg.contains("Conflicting lock") {
        // "... held in /usr/bin/lathe (PID 1234) by user me. See also ..." -> "/usr/bin/lathe (PID 1234)"
        let holder = msg
            .split("Conflicting lock is held in ")
            .nth(1)
            .and_then(|h| h.find(')').map(|end| h[..=end].to_string()))
            .unwrap_or_else(|| "another process".to_string());
        DataError::Locked { path: path.to_path_buf(), holder }
    } else {
        DataError::Db(clean_db_error(&msg))
    }
}
