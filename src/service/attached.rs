//! The workspace's records for a one-shot CLI command, wherever they are: in this process (the
//! catalog opened here) or, when a `lathe serve` owns the workspace, through that server's API
//! (`Attached`, a client of `/api/`). The command asks `Records` the same questions either way;
//! the server's answers come back as the same types and its errors as the same `ServiceError`
//! kinds. Through a server, SQL is read-only (its rule for every client).

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::owner::Owner;
use super::{Event, ServiceError};
use crate::engine::jobs::JobId;
use crate::engine::data::chats::{ChatRecord, ChatSummary};
use crate::engine::data::import::DatasetInfo;
use crate::engine::data::readonly::Rows;
use crate::engine::data::runs::{MetricRow, RunRow};
use crate::engine::data::views::{Example, Split, ViewInfo, ViewListing};
use crate::engine::data::{Catalog, ExportSource};
use crate::engine::knowledge::store::CollectionInfo;
use crate::engine::workspace::Workspace;

/// Rows a command reads through a server at most (the server's own ceiling).
pub const SERVER_ROWS: usize = 10_000;

/// A client of the `lathe serve` that owns a workspace.
#[derive(Clone)]
pub struct Attached {
    pub owner: Owner,
    base: String,
    key: Option<String>,
}

impl Attached {
    /// The server that owns `ws`, if one runs. It is asked with the owner's token from its
    /// record (this user's: any path, no API key needed), else LATHE_API_KEY.
    pub fn find(ws: &Workspace) -> Option<Attached> {
        let owner = Owner::find(ws)?;
        let key = Some(owner.token.clone()).filter(|t| !t.is_empty()).or_else(|| std::env::var("LATHE_API_KEY").ok().filter(|k| !k.is_empty()));
        let base = format!("http://{}", owner.address);
        Some(Attached { owner, base, key })
    }

    /// One call: the answer's JSON, or the server's error as the kind it was.
    pub(crate) fn call<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&Value>) -> Result<T, ServiceError> {
        let url = format!("{}{path}", self.base);
        let body = body.map(Value::to_string);
        let (status, text) = crate::engine::http::exchange(method, &url, body.as_deref(), self.key.as_deref())
            .map_err(|e| ServiceError::Engine(format!("lathe serve (pid {}) owns this workspace but did not answer: {e}", self.owner.pid)))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| ServiceError::Engine(format!("lathe serve gave an answer this lathe cannot read ({e}); are both the same version?")));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("lathe serve answered {status}."));
        Err(match status {
            401 => ServiceError::Invalid(format!("lathe serve (pid {}) owns this workspace and asks for its API key: set LATHE_API_KEY.", self.owner.pid)),
            403 => ServiceError::Refused(message),
            404 => ServiceError::NotFound(message),
            409 => ServiceError::Busy(message),
            400..=499 => ServiceError::Invalid(message),
            _ => ServiceError::Engine(message),
        })
    }

    /// A read-only SELECT, as the server allows every client (here `Catalog::run_sql` runs
    /// anything).
    pub fn read_sql(&self, sql: &str, limit: usize, timeout: Duration) -> Result<Rows, ServiceError> {
        self.call("POST", "/api/sql", Some(&json!({"sql": sql, "limit": limit, "timeout_s": timeout.as_secs_f64()})))
    }

    /// Starts a job in the server (`POST path` answering 202 with its id).
    pub fn start_job(&self, path: &str, body: &Value) -> Result<JobId, ServiceError> {
        #[derive(serde::Deserialize)]
        struct Started {
            job: JobId,
        }
        Ok(self.call::<Started>("POST", path, Some(body))?.job)
    }

    /// Imports a file or folder as a dataset, in a job of the server.
    pub fn import(&self, path: &str, name: Option<&str>, replace: bool) -> Result<JobId, ServiceError> {
        self.start_job("/api/datasets/import", &json!({"path": path, "name": name, "replace": replace}))
    }

    /// Exports a run or a model folder the library lists as GGUF into the workspace's models/
    /// folder, in a job of the server (which names the file).
    pub fn export(&self, source: &super::ModelSource, quant: crate::engine::export::gguf::Quant, imatrix: Option<&super::quant::Calibration>) -> Result<JobId, ServiceError> {
        let mut body = source_body(source);
        body["quant"] = json!(quant.name());
        if let Some(c) = imatrix {
            body["imatrix"] = calibration_body(c);
        }
        self.start_job("/api/exports", &body)
    }

    /// A quantization report, run by the server (`--out` is not sent: the server writes into the
    /// workspace's models/ folder).
    pub fn quant_report(&self, spec: &super::quant_report::ReportSpec) -> Result<JobId, ServiceError> {
        use super::quant_report::EvalData;
        let mut body = source_body(&spec.source);
        match &spec.eval {
            EvalData::View(v) => body["view"] = json!(v),
            EvalData::Text(p) => body["text"] = json!(abs(p)),
        }
        body["types"] = json!(spec.types.iter().map(|q| q.name()).collect::<Vec<_>>());
        if let Some(c) = &spec.imatrix {
            body["imatrix"] = calibration_body(c);
        }
        for (k, v) in [("max_len", spec.max_len), ("eval_tokens", spec.eval_tokens), ("exact", spec.exact)] {
            body[k] = json!(v);
        }
        body["keep"] = json!(spec.keep);
        self.start_job("/api/quant-reports", &body)
    }

    /// Adds files, folders or dataset columns to a collection (none: a sync), in a job.
    pub fn ingest(&self, collection: &str, paths: &[String]) -> Result<JobId, ServiceError> {
        self.start_job(&format!("/api/collections/{}/ingest", seg(collection)), &json!({"paths": paths}))
    }

    /// Searches a collection with its own model.
    pub fn search(&self, req: &super::SearchRequest) -> Result<super::SearchResult, ServiceError> {
        let body = json!({"query": req.query, "mode": req.mode.name(), "k": req.k, "path": req.path});
        self.call("POST", &format!("/api/collections/{}/search", seg(&req.collection)), Some(&body))
    }

    pub fn collections(&self) -> Result<Vec<CollectionInfo>, ServiceError> {
        self.list("/api/collections")
    }

    pub fn drop_collection(&self, name: &str) -> Result<(), ServiceError> {
        self.call::<Value>("DELETE", &format!("/api/collections/{}", seg(name)), None).map(drop)
    }

    /// Writes a dataset or a query's result to a file (.csv, .parquet, .jsonl), in a job of the
    /// server.
    pub fn export_data(&self, what: &ExportSource, path: &Path) -> Result<JobId, ServiceError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
        let body = match what {
            ExportSource::Dataset(name) => json!({"dataset": name, "path": path}),
            ExportSource::Query(sql) => json!({"sql": sql, "path": path}),
        };
        self.start_job("/api/datasets/export", &body)
    }

    pub fn drop_dataset(&self, name: &str) -> Result<(), ServiceError> {
        self.call::<Value>("DELETE", &format!("/api/datasets/{}", seg(name)), None).map(drop)
    }

    pub fn create_view(&self, name: &str, sql: &str, format: &str, eval_fraction: f64, replace: bool) -> Result<ViewInfo, ServiceError> {
        let body = json!({"name": name, "sql": sql, "format": format, "eval_fraction": eval_fraction, "replace": replace});
        self.call("POST", "/api/views", Some(&body))
    }

    pub fn drop_view(&self, name: &str) -> Result<(), ServiceError> {
        self.call::<Value>("DELETE", &format!("/api/views/{}", seg(name)), None).map(drop)
    }

    /// Adds a file or folder of models to the server's library; how many models it holds.
    pub fn add_model_path(&self, path: &Path) -> Result<usize, ServiceError> {
        #[derive(serde::Deserialize)]
        struct Added {
            models: usize,
        }
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
        Ok(self.call::<Added>("POST", "/api/models", Some(&json!({"path": path})))?.models)
    }

    /// Adds an OpenAI-compatible server to the server's library (its key variable is read in the
    /// server's environment); how many models it lists.
    pub fn add_model_server(&self, base: &str, name: Option<&str>, key_env: Option<&str>) -> Result<usize, ServiceError> {
        #[derive(serde::Deserialize)]
        struct Added {
            models: usize,
        }
        Ok(self.call::<Added>("POST", "/api/models", Some(&json!({"url": base, "name": name, "key_env": key_env})))?.models)
    }

    /// Takes a server or an added path out of the server's library; what was removed.
    pub fn remove_model(&self, what: &str) -> Result<String, ServiceError> {
        #[derive(serde::Deserialize)]
        struct Removed {
            removed: String,
        }
        let what = if what.contains("://") || !Path::new(what).exists() { what.to_string() } else { std::path::absolute(what).map(|p| p.display().to_string()).unwrap_or(what.into()) };
        Ok(self.call::<Removed>("POST", "/api/models/remove", Some(&json!({"name": what})))?.removed)
    }

    /// An empty collection for an embedding model (a folder, or a name in the library).
    pub fn create_collection(&self, name: &str, model: &Path) -> Result<CollectionInfo, ServiceError> {
        let model = match model.exists() {
            true => std::path::absolute(model).unwrap_or_else(|_| model.to_path_buf()).display().to_string(),
            false => model.display().to_string(),
        };
        self.call("POST", "/api/collections", Some(&json!({"name": name, "model": model})))
    }

    /// What a chat with `name` loads: a GGUF model of the server's library (by its name or its
    /// path) is answered by the server's OpenAI-compatible API, so one copy serves every
    /// client; any other file or server spec is loaded by the caller.
    pub fn chat_model(&self, name: &str) -> Result<crate::engine::types::ModelRef, ServiceError> {
        use crate::engine::infer::library::ModelEntry;
        let library: Vec<ModelEntry> = self.list("/api/models")?;
        // As the library resolves a name: itself, with .gguf, or Ollama's :latest.
        let wanted = [name.to_string(), format!("{name}.gguf"), format!("{name}:latest")];
        let answerable = |m: &&ModelEntry| m.problem.is_none() && (m.format == "gguf" || m.source == "openai server");
        let served = library.iter().filter(answerable).find(|m| wanted.contains(&m.name) || m.path == Path::new(name));
        match (served, super::models::direct(name)) {
            (Some(m), _) => Ok(crate::engine::types::ModelRef::Server(self.openai(&m.name))),
            (None, Some(found)) => found,
            (None, None) => Err(ServiceError::NotFound(format!("No model {name:?} in the library of lathe serve (pid {}); `lathe models list` shows them.", self.owner.pid))),
        }
    }

    pub fn cancel_job(&self, id: JobId) -> Result<(), ServiceError> {
        self.call::<Value>("POST", &format!("/api/jobs/{id}/cancel"), None).map(drop)
    }

    /// The server's own figures.
    pub fn status(&self) -> Result<ServerStatus, ServiceError> {
        self.call("GET", "/api/server", None)
    }

    /// Follows the server's events (first what a new client needs to catch up: its running jobs
    /// and the run training), each handed to `on_event` until it returns false or the stream
    /// ends (the server stopped: Ok) or breaks (Err).
    pub fn follow(&self, on_event: &mut dyn FnMut(Event) -> bool) -> Result<(), String> {
        let url = format!("{}/api/events", self.base);
        crate::engine::http::request("GET", &url, None, self.key.as_deref(), &mut |line| {
            let Some(data) = line.strip_prefix("data:") else { return true };
            match serde_json::from_str::<Event>(data.trim()) {
                Ok(ev) => on_event(ev),
                // An event this lathe does not know (another version): skipped.
                Err(_) => true,
            }
        })
    }

    /// Follows one job (`/api/jobs/{id}/events`: what it said so far, then the rest, a run's
    /// training events and an export's result included) until it finishes or `on_event` returns
    /// false.
    pub fn follow_job(&self, id: JobId, on_event: &mut dyn FnMut(Event) -> bool) -> Result<(), String> {
        let url = format!("{}/api/jobs/{id}/events", self.base);
        crate::engine::http::request("GET", &url, None, self.key.as_deref(), &mut |line| {
            let Some(data) = line.strip_prefix("data:") else { return true };
            serde_json::from_str::<Event>(data.trim()).map_or(true, &mut *on_event)
        })
    }

    /// The OpenAI-compatible address of the server's models (`…/v1`) and its key.
    pub fn openai(&self, model: &str) -> crate::engine::types::Remote {
        crate::engine::types::Remote::OpenAi { base: format!("{}/v1", self.base), model: model.to_string(), api_key: self.key.clone() }
    }

    pub(crate) fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ServiceError> {
        #[derive(serde::Deserialize)]
        struct List<T> {
            data: Vec<T>,
        }
        Ok(self.call::<List<T>>("GET", path, None)?.data)
    }
}

/// What a server says of itself (GET /api/server), for a client's System pane.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerStatus {
    pub pid: u32,
    pub address: String,
    pub uptime_s: f64,
    pub rss_bytes: u64,
    /// Answers decoded together, at most.
    pub slots: usize,
    /// Answers being decoded now, and requests waiting for a slot.
    pub running: usize,
    pub waiting: usize,
    pub requests: u64,
    pub rejected: u64,
    pub generated_tokens: u64,
    pub generation_s: f64,
    pub model_loaded: bool,
    pub model_loading: bool,
    pub jobs_running: usize,
}

/// A path segment: ids are the workspace's own (letters, digits, `-`, `_`); anything else is
/// escaped so it cannot reach another route.
pub(crate) fn seg(id: &str) -> String {
    id.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Where a command reads (and changes) the workspace's records.
pub enum Records {
    Local(Catalog),
    Attached(Attached),
}

impl Records {
    /// Through the server that owns `ws` when one runs, else the catalog opened here.
    pub fn open(ws: &Workspace) -> Result<Records, ServiceError> {
        match Attached::find(ws) {
            Some(a) => Ok(Records::Attached(a)),
            None => Ok(Records::Local(super::open_catalog(ws)?)),
        }
    }

    pub fn quant_evals(&self) -> Result<Vec<crate::engine::data::quant_evals::QuantEval>, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.quant_evals()?),
            Records::Attached(a) => a.list("/api/quant-evals"),
        }
    }

    pub fn datasets(&self) -> Result<Vec<DatasetInfo>, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.list()?),
            Records::Attached(a) => a.list("/api/datasets"),
        }
    }

    pub fn runs(&self) -> Result<Vec<RunRow>, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.runs()?),
            Records::Attached(a) => a.list("/api/runs"),
        }
    }

    pub fn run(&self, id: &str) -> Result<RunRow, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.run(id)?),
            Records::Attached(a) => a.call("GET", &format!("/api/runs/{}", seg(id)), None),
        }
    }

    pub fn metrics(&self, id: &str) -> Result<Vec<MetricRow>, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.metrics(id)?),
            Records::Attached(a) => a.list(&format!("/api/runs/{}/metrics", seg(id))),
        }
    }

    pub fn chats(&self) -> Result<Vec<ChatSummary>, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.chats()?),
            Records::Attached(a) => a.list("/api/conversations"),
        }
    }

    pub fn chat(&self, id: &str) -> Result<ChatRecord, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.chat(id)?),
            Records::Attached(a) => a.call("GET", &format!("/api/conversations/{}", seg(id)), None),
        }
    }

    /// Every view by name, with its split sizes or why it cannot be read.
    pub fn views(&self) -> Result<Vec<ViewListing>, ServiceError> {
        #[derive(serde::Deserialize)]
        struct Preview {
            name: String,
            info: Option<ViewInfo>,
            error: Option<String>,
        }
        match self {
            Records::Local(c) => Ok(c.views()?),
            Records::Attached(a) => Ok(a
                .list::<Preview>("/api/views")?
                .into_iter()
                .map(|p| {
                    let info = p.info.ok_or_else(|| p.error.unwrap_or_else(|| "The server gave neither the view nor why.".into()));
                    (p.name, info)
                })
                .collect()),
        }
    }

    /// A view with its examples from one split, at most `limit`.
    pub fn examples(&self, view: &str, split: Split, limit: Option<usize>) -> Result<(ViewInfo, Vec<Example>), ServiceError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            view: ViewInfo,
            examples: Vec<Example>,
        }
        match self {
            Records::Local(c) => Ok((c.view_info(view)?, c.examples(view, split, limit)?)),
            Records::Attached(a) => {
                let a: Answer = a.call("POST", &format!("/api/views/{}/examples", seg(view)), Some(&json!({"split": split, "limit": limit})))?;
                Ok((a.view, a.examples))
            }
        }
    }

    pub fn create_view(&self, name: &str, sql: &str, format: &str, eval_fraction: f64, replace: bool) -> Result<ViewInfo, ServiceError> {
        match self {
            Records::Local(c) => Ok(c.create_view(name, sql, crate::engine::data::views::ViewFormat::parse(format)?, eval_fraction, replace)?),
            Records::Attached(a) => a.create_view(name, sql, format, eval_fraction, replace),
        }
    }

    pub fn drop_view(&self, name: &str) -> Result<(), ServiceError> {
        match self {
            Records::Local(c) => Ok(c.drop_view(name)?),
            Records::Attached(a) => a.drop_view(name),
        }
    }

    pub fn drop_dataset(&self, name: &str) -> Result<(), ServiceError> {
        match self {
            Records::Local(c) => Ok(c.drop_dataset(name)?),
            Records::Attached(a) => a.drop_dataset(name),
        }
    }

    /// The model library (the server's when one owns the workspace).
    pub fn models(&self, ws: &Workspace) -> Result<Vec<crate::engine::infer::library::ModelEntry>, ServiceError> {
        match self {
            Records::Local(c) => Ok(super::models::list(ws, Some(c))),
            Records::Attached(a) => a.list("/api/models"),
        }
    }

}

fn abs(p: &Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// `{"run": ID}` or `{"model": FOLDER}`.
fn source_body(source: &super::ModelSource) -> Value {
    match source {
        super::ModelSource::Run(id) => json!({"run": id}),
        super::ModelSource::Folder(dir) => json!({"model": abs(dir)}),
    }
}

/// An importance matrix's source as `/api/exports` and `/api/quant-reports` take it.
fn calibration_body(c: &super::quant::Calibration) -> Value {
    use super::quant::Calibration;
    match c {
        Calibration::File(p) => json!({"file": abs(p)}),
        Calibration::Text { path, tokens } => json!({"text": abs(path), "tokens": tokens}),
        Calibration::View { name, tokens } => json!({"view": name, "tokens": tokens}),
    }
}

#[cfg(test)]
mod tests {
    use super::seg;

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(seg("r-20261202-0407_ab"), "r-20261202-0407_ab");
        assert_eq!(seg("../x"), "%2E%2E%2Fx");
        assert_eq!(seg("a b?c#"), "a%20b%3Fc%23");
    }
}
