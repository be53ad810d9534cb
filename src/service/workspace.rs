//! The workspace's records for headless callers (the server's routes, answering its clients):
//! datasets, read-only SQL, runs and their metrics, saved conversations. Each call blocks its
//! caller (never a UI thread) until the catalog answers, and returns a value; the workstation
//! asks the same things through the calls that answer with an event.

use std::time::Duration;

use super::{Service, ServiceError};
use crate::engine::data::chats::{ChatRecord, ChatSummary};
use crate::engine::data::import::DatasetInfo;
use crate::engine::data::readonly::Rows;
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
        let ws = self.ws.as_ref().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        if overrides.is_some_and(|o| !o.is_object()) {
            return Err(ServiceError::Invalid("config must be an object of training settings (lathe train --print-config lists them).".into()));
        }
        let cat = self.cat()?;
        let mut spec = match (model, view) {
            (None, None) => crate::engine::train::demo::demo_spec(&cat, &ws.models_dir()).map_err(ServiceError::Engine)?,
            (Some(name), Some(view)) => {
                let found = super::models::local(ws, Some(&cat)).into_iter().find(|m| m.name == name);
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
        if !plan.fits() {
            return Err(ServiceError::Invalid(format!(
                "The run needs about {} of memory and {} is free; lower max_len or micro_batch, or use a 4-bit base (quant_base nf4).",
                crate::units::bytes(plan.memory_needed),
                crate::units::bytes(plan.memory_available)
            )));
        }
        Ok(spec)
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
}
