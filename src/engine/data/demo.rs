//! The bundled demo datasets (datasets/*.jsonl, made by datasets/generate.py), embedded in the
//! binary so a new workspace has real data to query and train on without any download.

use super::{Catalog, DataError, ImportOptions};

/// (dataset name, file name, contents)
pub const DEMO: &[(&str, &str, &str)] = &[
    ("instruct", "instruct.jsonl", include_str!("../../../datasets/instruct.jsonl")),
    ("chat", "chat.jsonl", include_str!("../../../datasets/chat.jsonl")),
];

const SEEDED: &str = "demo_datasets_imported";

impl Catalog {
    /// Imports the demo datasets into a catalog that never had them. Runs once per catalog, so a
    /// user who drops them does not see them come back.
    pub fn seed_demo(&self) -> Result<Vec<String>, DataError> {
        let done: i64 = self.conn.query_row("SELECT count(*) FROM lathe.meta WHERE key = ?", [SEEDED], |r| r.get(0))?;
        if done > 0 {
            return Ok(Vec::new());
        }
        // Unique per call: several catalogs may be seeded at once (tests, two workspaces).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lathe-demo-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut imported = Vec::new();
        let result = (|| -> Result<(), DataError> {
            for (name, file, text) in DEMO {
                if self.dataset_exists(name)? {
                    continue;
                }
                let path = dir.join(file);
                std::fs::write(&path, text)?;
                self.import(&path, &ImportOptions { name: Some(name.to_string()), replace: false })?;
                self.conn.execute(
                    "UPDATE lathe.datasets SET source = ? WHERE name = ?",
                    [format!("bundled datasets/{file}"), name.to_string()],
                )?;
                imported.push(name.to_string());
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        for (name, sql, format) in super::views::DEMO_VIEWS {
            self.create_view(name, sql, *format, super::views::DEFAULT_EVAL_FRACTION, true)?;
        }
        self.conn.execute("INSERT INTO lathe.meta VALUES (?, 'true')", [SEEDED])?;
        Ok(imported)
    }
}
