//! The service of a workstation attached to the `lathe serve` that owns its workspace: the same
//! calls as in-process, answered through the server's API (`attached::Attached`) on threads of
//! their own, with the same `Event`s coming back. The server's own events (jobs, training steps,
//! ingest, exports, whoever started them) stream in from `/api/events`, after what a new client
//! needs to catch up; its figures are asked for every two seconds (`Event::Server`). When the
//! stream ends, `Event::Detached` says so: the workstation then opens the workspace again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::attached::{seg, Attached};
use super::{Emit, Event, ModelSource, SearchRequest, ServiceError, TrainPlan, TrainWhat};
use crate::engine::data::chats::ChatRecord;
use crate::engine::data::paging::Shape;
use crate::engine::data::readonly::Rows;
use crate::engine::data::worker::DataEvent;
use crate::engine::export::gguf::Quant;
use crate::engine::jobs::JobId;

/// Rows per page, as the data worker pages a result.
const PAGE: usize = crate::engine::data::worker::PAGE as usize;

pub(super) struct Remote {
    client: Arc<Attached>,
    emit: Emit,
    /// Set when the service closes: the event and figure threads stop.
    closed: Arc<AtomicBool>,
}

impl Remote {
    /// Starts following the server: its events, its figures, and the workspace's first state
    /// (datasets, schema) as the data worker would say it on opening.
    pub(super) fn start(client: Attached, emit: Emit) -> Remote {
        let client = Arc::new(client);
        let closed = Arc::new(AtomicBool::new(false));
        emit(Event::Data(DataEvent::Opened { seeded: Vec::new() }));
        let (c, e, stop) = (client.clone(), emit.clone(), closed.clone());
        std::thread::spawn(move || {
            let ended = c.follow(&mut |ev| {
                if forwarded(&ev) {
                    e(ev);
                }
                !stop.load(Ordering::Relaxed)
            });
            if !stop.load(Ordering::Relaxed) {
                // A stopping server ends the stream before it lets go of the catalog: wait for
                // it to be gone, so that the workspace can be opened here again.
                let start = std::time::Instant::now();
                while super::owner::alive(c.owner.pid) && start.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let why = match ended {
                    Ok(()) => format!("lathe serve (pid {}) stopped", c.owner.pid),
                    Err(err) => format!("lost lathe serve (pid {}): {err}", c.owner.pid),
                };
                e(Event::Detached(why));
            }
        });
        let (c, e, stop) = (client.clone(), emit.clone(), closed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = c.status() {
                    e(Event::Server(s));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        let r = Remote { client, emit, closed };
        r.refresh_datasets();
        r
    }

    pub(super) fn address(&self) -> String {
        self.client.owner.address.to_string()
    }

    /// Work on a thread of its own; its event (if any) to the subscriber.
    fn spawn(&self, work: impl FnOnce(&Attached) -> Option<Event> + Send + 'static) {
        let (c, emit) = (self.client.clone(), self.emit.clone());
        std::thread::spawn(move || {
            if let Some(ev) = work(&c) {
                emit(ev);
            }
        });
    }

    /// Starts a job in the server; a refusal is said as a failure.
    fn job(&self, start: impl FnOnce(&Attached) -> Result<JobId, ServiceError> + Send + 'static) {
        self.spawn(move |c| start(c).err().map(|e| Event::Failure(e.to_string())));
    }

    // Data.

    pub(super) fn query(&self, id: u64, sql: String) {
        let (c, emit) = (self.client.clone(), self.emit.clone());
        std::thread::spawn(move || {
            let body = json!({"sql": sql, "limit": PAGE, "count": true});
            match c.call::<Rows>("POST", "/api/sql", Some(&body)) {
                Ok(r) => {
                    let shape = Shape { columns: r.columns.iter().map(|c| c.name.clone()).collect(), types: r.columns.iter().map(|c| c.ty.clone()).collect() };
                    let (total, elapsed_ms) = (r.total.unwrap_or(r.rows.len() as u64), r.elapsed_ms);
                    // The shape first, then the count: the order the data worker says them in.
                    emit(Event::Data(DataEvent::QueryShape { id, shape, rows: cells(&r) }));
                    emit(Event::Data(DataEvent::QueryCount { id, total, elapsed_ms }));
                }
                Err(e) => emit(Event::Data(DataEvent::QueryFailed { id, error: e.to_string() })),
            }
        });
    }

    pub(super) fn page(&self, id: u64, sql: String, offset: u64) {
        self.spawn(move |c| {
            let body = json!({"sql": sql, "limit": PAGE, "offset": offset});
            Some(Event::Data(match c.call::<Rows>("POST", "/api/sql", Some(&body)) {
                Ok(r) => DataEvent::QueryPage { id, offset, rows: cells(&r) },
                Err(e) => DataEvent::QueryFailed { id, error: e.to_string() },
            }))
        });
    }

    pub(super) fn refresh_datasets(&self) {
        self.spawn(|c| {
            Some(Event::Data(match c.list("/api/datasets") {
                Ok(l) => DataEvent::Datasets(l),
                Err(e) => DataEvent::Failed(e.to_string()),
            }))
        });
        self.spawn(|c| {
            #[derive(serde::Deserialize)]
            struct Column {
                name: String,
                #[serde(rename = "type")]
                ty: String,
            }
            #[derive(serde::Deserialize)]
            struct Table {
                name: String,
                columns: Vec<Column>,
            }
            let tables: Vec<Table> = c.list("/api/schema").ok()?;
            Some(Event::Data(DataEvent::Schema(tables.into_iter().map(|t| (t.name, t.columns.into_iter().map(|c| (c.name, c.ty)).collect())).collect())))
        });
    }

    pub(super) fn preview_views(&self) {
        self.spawn(|c| {
            #[derive(serde::Deserialize)]
            struct View {
                name: String,
                info: Option<crate::engine::data::views::ViewInfo>,
                examples: Vec<String>,
                error: Option<String>,
            }
            let views: Vec<View> = match c.list("/api/views") {
                Ok(v) => v,
                Err(e) => return Some(Event::Data(DataEvent::Failed(e.to_string()))),
            };
            let previews = views
                .into_iter()
                .map(|v| {
                    let r = match (v.info, v.error) {
                        (Some(info), None) => Ok((info, v.examples)),
                        (_, e) => Err(e.unwrap_or_else(|| "The server gave no details.".into())),
                    };
                    (v.name, r)
                })
                .collect();
            Some(Event::Data(DataEvent::ViewPreview(previews)))
        });
    }

    pub(super) fn import(&self, path: String, name: Option<String>, replace: bool) {
        self.job(move |c| c.import(&path, name.as_deref(), replace));
    }

    pub(super) fn export_data(&self, what: crate::engine::data::ExportSource, path: std::path::PathBuf) {
        self.job(move |c| c.export_data(&what, &path));
    }

    // Jobs and training.

    pub(super) fn cancel_job(&self, id: JobId) {
        self.spawn(move |c| c.cancel_job(id).err().map(|e| Event::Failure(e.to_string())));
    }

    pub(super) fn train(&self, what: TrainWhat) {
        let body = match what {
            TrainWhat::Demo => json!({}),
            TrainWhat::Resume(id) => json!({"resume": id}),
            TrainWhat::Spec(spec) => train_body(&spec),
        };
        self.spawn(move |c| c.start_job("/api/runs", &body).err().map(|e| Event::TrainDone(Err(e.to_string()))));
    }

    pub(super) fn pause_training(&self, paused: bool) {
        self.spawn(move |c| c.call::<Value>("POST", "/api/training/pause", Some(&json!({"paused": paused}))).err().map(|e| Event::Failure(e.to_string())));
    }

    pub(super) fn check_training(&self, spec: crate::engine::train::spec::RunSpec) {
        let body = train_body(&spec);
        self.spawn(move |c| Some(Event::TrainChecked(c.call::<TrainPlan>("POST", "/api/runs/check", Some(&body)))));
    }

    pub(super) fn list_runs(&self, request: u64) {
        self.spawn(move |c| Some(Event::Runs { request, result: c.list("/api/runs") }));
    }

    pub(super) fn run_metrics(&self, id: String, overlay: bool) {
        self.spawn(move |c| {
            Some(match c.list(&format!("/api/runs/{}/metrics", seg(&id))) {
                Ok(metrics) => Event::RunMetrics { id, overlay, metrics },
                Err(e) => Event::Failure(e.to_string()),
            })
        });
    }

    // Models.

    pub(super) fn list_models(&self, request: u64) {
        self.spawn(move |c| Some(Event::Models { request, result: c.list("/api/models") }));
    }

    /// A run or a library folder exported by the server into the workspace's models/ folder (the
    /// server names the file).
    pub(super) fn export(&self, source: ModelSource, quant: Quant, imatrix: Option<super::quant::Calibration>) {
        self.job(move |c| c.export(&source, quant, imatrix.as_ref()));
    }

    /// A quantization report run by the server (its files go into the workspace's models/).
    pub(super) fn quant_report(&self, spec: super::quant_report::ReportSpec) {
        self.job(move |c| c.quant_report(&spec));
    }

    pub(super) fn list_quant_evals(&self, request: u64) {
        self.spawn(move |c| Some(Event::QuantEvals { request, result: c.list("/api/quant-evals") }));
    }

    /// Finds what `name` loads: a GGUF model of the library (by its name or its path) is answered
    /// by the server's OpenAI-compatible API, so one copy of it serves every client; any other
    /// file or server spec is loaded here.
    pub(super) fn chat_model(&self, name: String) -> impl FnOnce() -> Result<crate::engine::types::ModelRef, ServiceError> + Send + 'static {
        let c = self.client.clone();
        move || c.chat_model(&name)
    }

    // Conversations and knowledge.

    pub(super) fn save_chat(&self, record: ChatRecord) {
        self.spawn(move |c| {
            let body = serde_json::to_value(&record).ok()?;
            c.call::<Value>("PUT", &format!("/api/conversations/{}", seg(&record.id)), Some(&body)).err().map(|e| Event::Failure(format!("The conversation was not saved: {e}")))
        });
    }

    pub(super) fn list_chats(&self, request: u64) {
        self.spawn(move |c| Some(Event::Chats { request, result: c.list("/api/conversations") }));
    }

    pub(super) fn open_chat(&self, id: String) {
        self.spawn(move |c| Some(Event::ChatOpened(c.call("GET", &format!("/api/conversations/{}", seg(&id)), None))));
    }

    pub(super) fn list_collections(&self, request: u64) {
        self.spawn(move |c| Some(Event::Collections { request, result: c.collections() }));
    }

    pub(super) fn search_collection(&self, request: u64, req: SearchRequest) {
        self.spawn(move |c| Some(Event::Searched { request, result: c.search(&req) }));
    }

    pub(super) fn retrieve(&self, id: u64, req: SearchRequest) {
        self.spawn(move |c| Some(Event::Retrieved { id, result: c.search(&req) }));
    }

    pub(super) fn ingest_collection(&self, name: String, paths: Vec<String>) {
        self.job(move |c| c.ingest(&name, &paths));
    }

    pub(super) fn drop_collection(&self, name: String, request: u64) {
        self.spawn(move |c| {
            if let Err(e) = c.drop_collection(&name) {
                return Some(Event::Failure(e.to_string()));
            }
            Some(Event::Collections { request, result: c.collections() })
        });
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// The server's events a client shows: what its jobs and runs report. Answers to requests are
/// the asking client's own (each gets them as replies), and samples are this machine's.
fn forwarded(ev: &Event) -> bool {
    matches!(ev, Event::Job(_) | Event::Train(_) | Event::TrainDone(_) | Event::Ingest { .. } | Event::Ingested { .. } | Event::Exported(_))
}

/// A run's spec as POST /api/runs takes it: the model by its path (the server finds it in its
/// library), the view, and every setting.
fn train_body(spec: &crate::engine::train::spec::RunSpec) -> Value {
    json!({"model": spec.model.display().to_string(), "view": spec.view, "config": spec.config})
}

/// A read's rows as the grid's text cells, in column order (NULL as the data worker writes it).
fn cells(r: &Rows) -> Vec<Vec<String>> {
    r.rows
        .iter()
        .map(|row| {
            r.columns
                .iter()
                .map(|c| match row.get(&c.name) {
                    None | Some(Value::Null) => "NULL".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_cells_in_column_order() {
        let r: Rows = serde_json::from_value(json!({
            "columns": [{"name": "b", "type": "Utf8"}, {"name": "a", "type": "Int64"}, {"name": "c", "type": "List"}],
            "rows": [{"a": 1, "b": "x", "c": [1, 2]}, {"a": null, "b": "y", "c": null}],
            "truncated": false, "elapsed_ms": 1.0
        }))
        .unwrap();
        assert_eq!(cells(&r), vec![vec!["x", "1", "[1,2]"], vec!["y", "NULL", "NULL"]]);
    }

    #[test]
    fn only_what_the_server_reports_of_its_work_is_forwarded() {
        assert!(forwarded(&Event::Job(crate::engine::jobs::JobEvent::Progress { id: 1, fraction: None, message: String::new() })));
        assert!(forwarded(&Event::TrainDone(Err("x".into()))));
        assert!(!forwarded(&Event::Info("another client's".into())));
        assert!(!forwarded(&Event::Runs { request: 1, result: Ok(Vec::new()) }));
    }
}
