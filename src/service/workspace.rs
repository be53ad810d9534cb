//! The workspace's records for headless callers (the server's routes, answering its clients):
//! datasets, read-only SQL, runs and their metrics, saved conversations. Each call blocks its
//! caller (never a UI thread) until the catalog answers, and returns a value; the workstation
//! asks the same things through the calls that answer with an event.

use std::time::Duration;

use super::{Service, ServiceError, TrainPlan};
use crate::engine::data::chats::{ChatRecord, ChatSummary};
use crate::engine::data::import::DatasetInfo;
use crate::engine::data::readonly::{Rows, Window};
use crate::engine::data::worker::{TableSchema, ViewPreviews};
use crate::engine::data::runs::{MetricRow, RunRow};
use crate::engine::data::Catalog;
use crate::engine::train::spec::{RunSpec, TrainConfig};

/// How long a call waits for the catalog (a long import may hold the worker's connection).
const WAIT: Duration = Duration::from_secs(30);

impl Service {
    fn cat(&self) -> Result<Catalog, ServiceError> {
        self.wait_catalog(WAIT)
    }

    pub fn datasets(&self) -> Result<Vec<DatasetInfo>, ServiceError> {
        Ok(self.cat()?.list()?)
    }

    /// One SELECT over the workspace's own tables and views (no files, no writes), at most
    /// `limit` rows, stopped after `timeout`.
    pub fn read_sql(&self, sql: &str, limit: usize, timeout: Duration) -> Result<Rows, ServiceError> {
        Ok(self.cat()?.read_only(sql, limit, timeout)?)
    }

    /// `read_sql` from a row on, with the whole count when asked (a client paging a result).
    pub fn read_sql_window(&self, sql: &str, window: Window, limit: usize, timeout: Duration) -> Result<Rows, ServiceError> {
        Ok(self.cat()?.read_window(sql, window, limit, timeout)?)
    }

    /// Each table and view with its columns and their types.
    pub fn schema(&self) -> Result<TableSchema, ServiceError> {
        Ok(crate::engine::data::worker::schema(&self.cat()?)?)
    }

    /// The training-set views, each with its first examples or why it fails.
    pub fn views(&self) -> Result<ViewPreviews, ServiceError> {
        Ok(crate::engine::data::worker::preview_views(&self.cat()?))
    }

    /// Saves a conversation (a new one, or the next version of one saved before).
    pub fn save_chat_now(&self, record: &ChatRecord) -> Result<(), ServiceError> {
        Ok(self.cat()?.save_chat(record)?)
    }

    pub fn quant_evals(&self) -> Result<Vec<crate::engine::data::quant_evals::QuantEval>, ServiceError> {
        Ok(self.cat()?.quant_evals()?)
    }

    pub fn runs(&self) -> Result<Vec<RunRow>, ServiceError> {
        Ok(self.cat()?.runs()?)
    }

    pub fn run(&self, id: &str) -> Result<RunRow, ServiceError> {
        let cat = self.cat()?;
        if !cat.runs()?.iter().any(|r| r.id == id) {
            return Err(ServiceError::NotFound(format!("There is no run {id}; `lathe runs list` shows the runs.")));
        }
        Ok(cat.run(id)?)
    }

    pub fn metrics(&self, id: &str) -> Result<Vec<MetricRow>, ServiceError> {
        self.run(id)?;
        Ok(self.cat()?.metrics(id)?)
    }

    /// A new run's spec for a headless caller: the bundled demo, or a Hugging Face folder of the
    /// library (by name: a request never names a path) on a view; `overrides` (TrainConfig's
    /// fields as JSON) change the defaults. Checked as `lathe train` checks it, memory included.
    pub fn new_run(&self, model: Option<&str>, view: Option<&str>, overrides: Option<&serde_json::Value>) -> Result<RunSpec, ServiceError> {
        let (spec, plan) = self.check_run(model, view, overrides)?;
        if !plan.fits() {
            return Err(ServiceError::Invalid(format!(
                "The run needs about {} of memory and {} is free; lower max_len or micro_batch, or use a 4-bit base (quant_base nf4).",
                crate::units::bytes(plan.memory_needed),
                crate::units::bytes(plan.memory_available)
            )));
        }
        Ok(spec)
    }

    /// `new_run`'s spec and its plan, whether or not it fits (a client shows the plan before
    /// starting). The model is a library name, or the path of a model the library lists.
    pub fn check_run(&self, model: Option<&str>, view: Option<&str>, overrides: Option<&serde_json::Value>) -> Result<(RunSpec, TrainPlan), ServiceError> {
        let ws = self.ws.as_ref().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        if overrides.is_some_and(|o| !o.is_object()) {
            return Err(ServiceError::Invalid("config must be an object of training settings (lathe train --print-config lists them).".into()));
        }
        let cat = self.cat()?;
        let mut spec = match (model, view) {
            (None, None) => {
                use crate::engine::train::demo::{demo_spec, DEMO_VIEW};
                if let Err(e) = cat.view_info(DEMO_VIEW) {
                    return Err(ServiceError::NotFound(format!("The demo trains on the view {DEMO_VIEW}, which this workspace cannot read ({e}); give a model and a view.")));
                }
                demo_spec(&cat, &ws.models_dir()).map_err(ServiceError::Engine)?
            }
            (Some(name), Some(view)) => {
                let found = super::models::local(ws, Some(&cat)).into_iter().find(|m| is_named(m, name));
                let m = found.ok_or_else(|| ServiceError::NotFound(format!("There is no model named {name:?} in the library; `lathe models list` shows them.")))?;
                if m.format != "hf" {
                    return Err(ServiceError::Invalid(format!("{name} is a {} model; training takes a Hugging Face folder (safetensors).", m.format)));
                }
                RunSpec { model: m.path, view: view.to_string(), config: TrainConfig::default() }
            }
            _ => return Err(ServiceError::Invalid("Give both a model and a view, or neither for the demo.".into())),
        };
        if let Some(o) = overrides {
            let mut base = serde_json::to_value(&spec.config).map_err(|e| ServiceError::Engine(e.to_string()))?;
            let (Some(fields), Some(base_fields)) = (o.as_object(), base.as_object_mut()) else {
                return Err(ServiceError::Invalid("config must be an object of training settings (lathe train --print-config lists them).".into()));
            };
            base_fields.extend(fields.clone());
            spec.config = serde_json::from_value(base).map_err(|e| ServiceError::Invalid(format!("config: {e}; `lathe train --print-config` lists the settings.")))?;
        }
        spec.config.check().map_err(ServiceError::Invalid)?;
        let plan = super::plan(&cat, &spec)?;
        Ok((spec, plan))
    }

    pub fn chats(&self) -> Result<Vec<ChatSummary>, ServiceError> {
        Ok(self.cat()?.chats()?)
    }

    pub fn chat(&self, id: &str) -> Result<ChatRecord, ServiceError> {
        let cat = self.cat()?;
        if !cat.chats()?.iter().any(|c| c.id == id) {
            return Err(ServiceError::NotFound(format!("There is no conversation {id}; `lathe chats list` shows them.")));
        }
        Ok(cat.chat(id)?)
    }

    /// The folder of the library's Hugging Face model `name` (or the path the library lists it
    /// at: a request never names a folder the library does not have).
    pub fn library_folder(&self, name: &str) -> Result<std::path::PathBuf, ServiceError> {
        let ws = self.ws.as_ref().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        let cat = self.cat().ok();
        match super::models::local(ws, cat.as_ref()).into_iter().find(|m| is_named(m, name)) {
            Some(m) if m.format == "hf" => Ok(m.path),
            Some(m) => Err(ServiceError::Invalid(format!("{name} is a {} model; exports take a Hugging Face folder (safetensors) or a run.", m.format))),
            None => Err(ServiceError::NotFound(format!("There is no model named {name:?} in the library; `lathe models list` shows them."))),
        }
    }

    /// Where an export named `name` goes: the workspace's models/ folder.
    pub fn export_path(&self, name: &str, quant: crate::engine::export::gguf::Quant) -> Result<std::path::PathBuf, ServiceError> {
        let ws = self.ws.as_ref().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        Ok(super::models::export_path(ws, name, quant))
    }
}

/// Whether a library entry is the one a request names: by its name, or by the path the library
/// lists it at (the same folder however the path is written).
fn is_named(m: &crate::engine::infer::library::ModelEntry, name: &str) -> bool {
    let given = std::path::Path::new(name);
    m.name == name || m.path == given || (given.is_absolute() && m.path.canonicalize().ok().zip(given.canonicalize().ok()).is_some_and(|(a, b)| a == b))
}
