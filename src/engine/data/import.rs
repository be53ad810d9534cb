//! Importing files as datasets: CSV/TSV, Parquet, JSON (array or records) and JSONL, one file, a
//! glob or a folder. Each import is one transaction: a failure leaves nothing behind.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Catalog, DataError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Tsv,
    Parquet,
    Json,
    Jsonl,
}

impl FileFormat {
    pub fn from_path(p: &Path) -> Option<FileFormat> {
        let ext = p.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => FileFormat::Csv,
            "tsv" | "tab" => FileFormat::Tsv,
            "parquet" | "pq" => FileFormat::Parquet,
            "json" => FileFormat::Json,
            "jsonl" | "ndjson" => FileFormat::Jsonl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Tsv => "tsv",
            FileFormat::Parquet => "parquet",
            FileFormat::Json => "json",
            FileFormat::Jsonl => "jsonl",
        }
    }

    /// The DuckDB table function that reads `source` (a quoted path or glob).
    pub fn reader(self, source: &str) -> String {
        match self {
            // The dialect is fixed so that the sniffer cannot "succeed" on a broken file by
            // choosing another delimiter or no quoting; column types are still inferred.
            FileFormat::Csv => format!("read_csv({source}, header = true, delim = ',', quote = '\"', escape = '\"', strict_mode = true)"),
            FileFormat::Tsv => format!("read_csv({source}, header = true, delim = '\\t', quote = '\"', escape = '\"', strict_mode = true)"),
            FileFormat::Parquet => format!("read_parquet({source})"),
            FileFormat::Json => format!("read_json({source}, format = 'auto')"),
            FileFormat::Jsonl => format!("read_json({source}, format = 'newline_delimited')"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub name: Option<String>,
    pub replace: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub rows: u64,
    pub columns: u64,
    pub source_bytes: u64,
    pub source: String,
    pub format: String,
    pub imported_at: String,
}

/// A SQL string literal.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A dataset name from a file name: lower case letters, digits and underscores.
pub fn name_from_path(p: &Path) -> String {
    let stem = p
        .file_stem()
        .or_else(|| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let stem = stem.split('.').next().unwrap_or(&stem).to_string();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    name = name.trim_matches('_').to_string();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("d_{name}");
    }
    name
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// What an import will read: the files, their common format and the reader's argument.
struct Source {
    files: Vec<PathBuf>,
    format: FileFormat,
    arg: String,
    display: String,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn resolve(path: &Path) -> Result<Source, DataError> {
    let text = path.to_string_lossy().into_owned();
    let files: Vec<PathBuf> = if has_glob(&text) {
        let mut v = expand_glob(path)?;
        v.sort();
        v
    } else if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && FileFormat::from_path(p).is_some())
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(DataError::User(format!(
                "{} holds no .csv, .tsv, .parquet, .json or .jsonl files; point at a data file or folder.",
                path.display()
            )));
        }
        v
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        return Err(DataError::User(format!("No file or folder at {}; check the path.", path.display())));
    };
    if files.is_empty() {
        return Err(DataError::User(format!("Nothing matches {text}; check the pattern.")));
    }
    let format = FileFormat::from_path(&files[0]).ok_or_else(|| {
        DataError::User(format!(
            "{} is not a file lathe can import; use .csv, .tsv, .parquet, .json or .jsonl.",
            files[0].display()
        ))
    })?;
    if let Some(other) = files.iter().find(|f| FileFormat::from_path(f) != Some(format)) {
        return Err(DataError::User(format!(
            "{} is not {} like the other files; import one format at a time.",
            other.display(),
            format.name()
        )));
    }
    for f in &files {
        if std::fs::metadata(f)?.len() == 0 {
            return Err(DataError::User(format!("{} is empty; there is nothing to import from it.", f.display())));
        }
    }
    let arg = if files.len() == 1 {
        quote_str(&files[0].to_string_lossy())
    } else {
        format!("[{}]", files.iter().map(|f| quote_str(&f.to_string_lossy())).collect::<Vec<_>>().join(", "))
    };
    Ok(Source { files, format, arg, display: text })
}

/// Expands a glob in the last path component (`data/*.csv`), which covers what people type.
fn expand_glob(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let pattern = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if has_glob(&dir.to_string_lossy()) {
        return Err(DataError::User("Only the file name may hold * or ?; put the files in one folder.".into()));
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|_| DataError::User(format!("No folder at {}; check the path.", dir.display())))?;
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| glob_match(&pattern, &n.to_string_lossy())))
        .collect())
}

fn glob_match(pat: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl Catalog {
    /// Imports a file, glob or folder as a dataset, in one transaction.
    pub fn import(&self, path: &Path, opts: &ImportOptions) -> Result<DatasetInfo, DataError> {
        let src = resolve(path)?;
        let name = match &opts.name {
            Some(n) => n.clone(),
            None if path.is_dir() => name_from_path(path),
            None => name_from_path(&src.files[0]),
        };
        if !valid_name(&name) {
            return Err(DataError::User(format!(
                "{name:?} cannot name a dataset; use letters, digits and _ (not starting with a digit)."
            )));
        }
        if self.dataset_exists(&name)? && !opts.replace {
            return Err(DataError::Exists(format!(
                "A dataset named {name} already exists; pass --replace to overwrite it or --name to pick another name."
            )));
        }
        let bytes: u64 = src.files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
        let sql = format!(
            "CREATE OR REPLACE TABLE main.{} AS SELECT * FROM {}",
            quote_ident(&name),
            src.format.reader(&src.arg)
        );
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let result = (|| -> Result<(), DataError> {
            self.conn.execute_batch(&sql).map_err(|e| DataError::User(e.to_string()))?;
            self.conn.execute("DELETE FROM lathe.datasets WHERE name = ?", [&name])?;
            self.conn.execute(
                "INSERT INTO lathe.datasets (name, source, format, source_bytes) VALUES (?, ?, ?, ?)",
                duckdb::params![name, src.display, src.format.name(), bytes],
            )?;
            Ok(())
        })();
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(DataError::User(msg)) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(self.import_error(&src, &msg));
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        self.list()?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| DataError::Db(format!("dataset {name} vanished after import")))
    }

    pub fn list(&self) -> Result<Vec<DatasetInfo>, DataError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, t.column_count, d.source_bytes, d.source, d.format,
                    strftime(d.imported_at, '%Y-%m-%d %H:%M:%S')
             FROM lathe.datasets d
             JOIN duckdb_tables() t ON t.database_name = current_database()
                  AND t.schema_name = 'main' AND t.table_name = d.name
             ORDER BY d.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DatasetInfo {
                name: r.get(0)?,
                rows: 0,
                columns: r.get::<_, i64>(1)? as u64,
                source_bytes: r.get(2)?,
                source: r.get(3)?,
                format: r.get(4)?,
                imported_at: r.get(5)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let mut d = row?;
            // Exact counts: duckdb_tables()'s estimate can lag behind.
            d.rows = self.conn.query_row(&format!("SELECT count(*) FROM main.{}", quote_ident(&d.name)), [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
            out.push(d);
        }
        Ok(out)
    }

    pub fn drop_dataset(&self, name: &str) -> Result<(), DataError> {
        if !self.dataset_exists(name)? {
            return Err(DataError::User(format!("No dataset named {name}; `lathe data list` shows the datasets.")));
        }
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let r = self
            .conn
            .execute_batch(&format!("DROP TABLE main.{}", quote_ident(name)))
            .and_then(|_| self.conn.execute("DELETE FROM lathe.datasets WHERE name = ?", [name]).map(|_| ()));
        match r {
            Ok(()) => Ok(self.conn.execute_batch("COMMIT")?),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        }
    }

    /// Writes a dataset or a query's result to .csv, .parquet or .jsonl, atomically.
    pub fn export(&self, what: &ExportSource, out: &Path) -> Result<u64, DataError> {
        let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let options = match ext.as_deref() {
            Some("csv") => "FORMAT csv, HEADER true",
            Some("tsv") => "FORMAT csv, HEADER true, DELIMITER '\\t'",
            Some("parquet") => "FORMAT parquet",
            Some("jsonl") | Some("ndjson") | Some("json") => "FORMAT json",
            _ => {
                return Err(DataError::User(format!(
                    "Cannot tell the format of {}; end the name with .csv, .parquet or .jsonl.",
                    out.display()
                )))
            }
        };
        let query = match what {
            ExportSource::Dataset(name) => {
                if !self.dataset_exists(name)? {
                    return Err(DataError::User(format!("No dataset named {name}; `lathe data list` shows the datasets.")));
                }
                format!("SELECT * FROM main.{}", quote_ident(name))
            }
            ExportSource::Query(q) => q.trim().trim_end_matches(';').to_string(),
        };
        let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(DataError::User(format!("No folder {}; create it first.", dir.display())));
        }
        let tmp = dir.join(format!(
            ".{}.lathe-tmp-{}",
            out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::process::id()
        ));
        let sql = format!("COPY ({query}) TO {} ({options})", quote_str(&tmp.to_string_lossy()));
        let rows = match self.conn.execute(&sql, []) {
            Ok(n) => n as u64,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        std::fs::rename(&tmp, out).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(rows)
    }
}

#[derive(Debug, Clone)]
pub enum ExportSource {
    Dataset(String),
    Query(String),
}

impl Catalog {
    /// One sentence for a failed import: where in which file, what is wrong, what to do.
    fn import_error(&self, src: &Source, msg: &str) -> DataError {
        let what = match src.format {
            FileFormat::Csv | FileFormat::Tsv => self.first_csv_reject(src).unwrap_or_else(|| {
                let line = msg
                    .split("CSV Error on Line: ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(|n| format!("line {n}"))
                    .unwrap_or_else(|| "a line".into());
                if msg.contains("not utf-8 encoded") {
                    format!("{line} is not UTF-8 text; convert the file to UTF-8 (for example with iconv)")
                } else if msg.contains("sniffing") {
                    let delim = if src.format == FileFormat::Tsv { "tab" } else { "comma" };
                    format!("its rows could not be read as {delim}-separated with \" quotes (check for an unclosed quote or rows with a different number of fields)")
                } else {
                    summarize_db_error(msg)
                }
            }),
            _ => summarize_db_error(msg),
        };
        DataError::User(format!(
            "Could not import {} as {}: {what}. Fix the file (or pick the right extension) and import again; nothing was changed.",
            src.display,
            src.format.name()
        ))
    }

    /// Reads the CSV again keeping rejected rows aside, to name the first bad line and column.
    fn first_csv_reject(&self, src: &Source) -> Option<String> {
        let delim = if src.format == FileFormat::Tsv { "\\t" } else { "," };
        let scan = format!(
            "SELECT count(*) FROM read_csv({}, header = true, delim = '{delim}', quote = '\"', escape = '\"',
                 store_rejects = true, rejects_table = 'lathe_rejects', rejects_scan = 'lathe_reject_scans')",
            src.arg
        );
        let found = self.conn.execute_batch(&scan).ok().and_then(|_| {
            self.conn
                .query_row(
                    "SELECT s.file_path, e.line, e.column_idx, e.column_name, e.error_message
                     FROM lathe_rejects e JOIN lathe_reject_scans s USING (scan_id, file_id)
                     ORDER BY s.file_path, e.line LIMIT 1",
                    [],
                    |r| {
                        Ok(format!(
                            "{} line {}, column {} ({}): {}",
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?.trim_end_matches('.'),
                        ))
                    },
                )
                .ok()
        });
        let _ = self.conn.execute_batch("DROP TABLE IF EXISTS lathe_rejects; DROP TABLE IF EXISTS lathe_reject_scans;");
        found
    }
}

/// The part of a DuckDB error that says what is wrong, without its SQL echo and hints about
/// options lathe sets itself.
fn summarize_db_error(msg: &str) -> String {
    let flat = super::clean_db_error(msg);
    let mut s = flat.as_str();
    for prefix in ["Invalid Input Error: ", "IO Error: ", "Binder Error: ", "Conversion Error: "] {
        s = s.strip_prefix(prefix).unwrap_or(s);
    }
    let cut = ["LINE 1:", "Possible Solution", "Possible fixes", "The search space", "file = "]
        .iter()
        .filter_map(|m| s.find(m))
        .min()
        .unwrap_or(s.len());
    s[..cut].trim().trim_end_matches('.').to_string()
}

/// Completions of a typed path: the entries of its folder that start with its last part, folders
/// ending in '/', data files only. Sorted; at most `max`.
pub fn complete_path(typed: &str, max: usize) -> Vec<String> {
    let expanded = match typed.strip_prefix("~/") {
        Some(rest) => std::env::var("HOME").map(|h| format!("{h}/{rest}")).unwrap_or_else(|_| typed.to_string()),
        None => typed.to_string(),
    };
    let (dir, stem) = match expanded.rfind('/') {
        Some(i) => (&expanded[..=i], &expanded[i + 1..]),
        None => ("", expanded.as_str()),
    };
    let read = if dir.is_empty() { std::fs::read_dir(".") } else { std::fs::read_dir(dir) };
    let Ok(entries) = read else { return Vec::new() };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(stem) || (name.starts_with('.') && !stem.starts_with('.')) {
                return None;
            }
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !is_dir && FileFormat::from_path(Path::new(&name)).is_none() {
                return None;
            }
            Some(format!("{dir}{name}{}", if is_dir { "/" } else { "" }))
        })
        .collect();
    out.sort();
    out.truncate(max);
    out
}

/// The longest common prefix of completions, to extend what was typed.
pub fn common_prefix(items: &[String]) -> Option<String> {
    let first = items.first()?;
    let mut end = first.len();
    for s in &items[1..] {
        end = end.min(first.bytes().zip(s.bytes()).take_while(|(a, b)| a == b).count());
    }
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    Some(first[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_paths() {
        assert_eq!(name_from_path(Path::new("/x/My Data-2024.csv")), "my_data_2024");
        assert_eq!(name_from_path(Path::new("2024.parquet")), "d_2024");
        assert_eq!(name_from_path(Path::new("a.b.jsonl")), "a");
    }

    #[test]
    fn completes_paths_to_folders_and_data_files() {
        let d = std::env::temp_dir().join(format!("lathe-complete-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for f in ["a.csv", "ab.parquet", "notes.txt"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let base = format!("{}/", d.display());
        assert_eq!(complete_path(&format!("{base}a"), 10), [format!("{base}a.csv"), format!("{base}ab.parquet")]);
        assert_eq!(complete_path(&format!("{base}s"), 10), [format!("{base}sub/")]);
        assert!(complete_path(&format!("{base}n"), 10).is_empty());
        assert_eq!(common_prefix(&["abc".into(), "abd".into()]), Some("ab".into()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.csv", "a.csv"));
        assert!(glob_match("part-?.csv", "part-1.csv"));
        assert!(!glob_match("*.csv", "a.parquet"));
        assert!(glob_match("*", ""));
    }
}
