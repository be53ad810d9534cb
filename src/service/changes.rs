//! The workspace changed by headless callers (the server's routes, for the CLI and other clients
//! of `lathe serve`): a dataset dropped, training-set views defined, read and dropped, a folder
//! added to the model library, a dataset or a query's result written to a file. Each call blocks
//! its caller (never a UI thread) until the catalog answers; a missing dataset or view is
//! `NotFound`, so an HTTP client gets a 404.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Service, ServiceError};
use crate::engine::data::views::{Example, Split, ViewFormat, ViewInfo};
use crate::engine::data::{Catalog, ExportSource};
use crate::engine::jobs::{JobError, JobId, JobKind};

const WAIT: Duration = Duration::from_secs(30);

impl Service {
    fn catalog_now(&self) -> Result<Catalog, ServiceError> {
        self.wait_catalog(WAIT)
    }

    /// Whether `sql` keeps to what a client of the server may read (the workspace's own tables
    /// and views, no files, no settings): a view's or an export's query from such a client.
    pub fn check_read_only(&self, sql: &str) -> Result<(), ServiceError> {
        Ok(self.catalog_now()?.check_read_only(sql)?)
    }

    pub fn drop_dataset(&self, name: &str) -> Result<(), ServiceError> {
        let cat = self.catalog_now()?;
        if !cat.list()?.iter().any(|d| d.name == name) {
            return Err(ServiceError::NotFound(format!("No dataset named {name}; `lathe data list` shows the datasets.")));
        }
        cat.drop_dataset(name)?;
        self.refresh_datasets();
        Ok(())
    }

    /// A training-set view over the workspace's tables: its split counted as `lathe data view
    /// create` does.
    pub fn create_view(&self, name: &str, sql: &str, format: &str, eval_fraction: f64, replace: bool) -> Result<ViewInfo, ServiceError> {
        let format = ViewFormat::parse(format)?;
        let info = self.catalog_now()?.create_view(name, sql, format, eval_fraction, replace)?;
        self.refresh_datasets();
        Ok(info)
    }

    pub fn drop_view(&self, name: &str) -> Result<(), ServiceError> {
        let cat = self.catalog_now()?;
        view_exists(&cat, name)?;
        cat.drop_view(name)?;
        self.refresh_datasets();
        Ok(())
    }

    /// A view's examples from one split, at most `limit` (all without one), with the view.
    pub fn examples(&self, name: &str, split: Split, limit: Option<usize>) -> Result<(ViewInfo, Vec<Example>), ServiceError> {
        let cat = self.catalog_now()?;
        view_exists(&cat, name)?;
        Ok((cat.view_info(name)?, cat.examples(name, split, limit)?))
    }

    /// Adds a GGUF file, a Hugging Face folder or a folder of models to the library (nothing is
    /// copied); returns how many models it holds. A path with none is refused.
    pub fn add_model_path(&self, path: &Path) -> Result<usize, ServiceError> {
        super::models::add_path(&self.catalog_now()?, path)
    }

    /// Adds an OpenAI-compatible server to the library (see `models::add_server`); how many
    /// models it lists.
    pub fn add_model_server(&self, base: &str, name: Option<&str>, key_env: Option<&str>) -> Result<usize, ServiceError> {
        super::models::add_server(&self.catalog_now()?, base, name, key_env)
    }

    /// Takes a server or an added path out of the library; what was removed.
    pub fn remove_model(&self, what: &str) -> Result<String, ServiceError> {
        super::models::remove(&self.catalog_now()?, what)
    }

    /// Writes a dataset or a query's result to .csv, .parquet or .jsonl, in a job.
    pub fn export_data(&mut self, what: ExportSource, path: PathBuf) -> Option<JobId> {
        if let Some(r) = &self.remote {
            r.export_data(what, path);
            return None;
        }
        let wait = self.catalog()?;
        let title = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        Some(self.jobs.spawn(JobKind::Export, title, move |ctx| {
            let cat = wait(Duration::from_secs(60)).map_err(|e| JobError::Failed(e.to_string()))?;
            let rows = cat.export(&what, &path).map_err(|e| JobError::Failed(e.to_string()))?;
            ctx.progress(Some(1.0), format!("Wrote {rows} rows to {}.", path.display()));
            Ok(())
        }))
    }

    /// The same, for a caller that waits for its answer (the server): an error before the job
    /// starts is the call's.
    pub fn start_data_export(&mut self, what: ExportSource, path: PathBuf) -> Result<JobId, ServiceError> {
        if let ExportSource::Dataset(name) = &what {
            if !self.catalog_now()?.list()?.iter().any(|d| &d.name == name) {
                return Err(ServiceError::NotFound(format!("No dataset named {name}; `lathe data list` shows the datasets.")));
            }
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("csv" | "parquet" | "jsonl")) {
            return Err(ServiceError::Invalid(format!("{} must end in .csv, .parquet or .jsonl.", path.display())));
        }
        self.export_data(what, path).ok_or_else(|| ServiceError::Engine("The workspace has no catalog.".into()))
    }
}

fn view_exists(cat: &Catalog, name: &str) -> Result<(), ServiceError> {
    match cat.view_names()?.iter().any(|v| v == name) {
        true => Ok(()),
        false => Err(ServiceError::NotFound(format!("No view named {name}; `lathe data view list` shows the views."))),
    }
}
