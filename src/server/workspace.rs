//! lathe's own API under `/api/`: the workspace's datasets, read-only SQL (one SELECT over its
//! own tables and views, a row limit, a time limit), runs and their metrics, saved conversations
//! (JSON or Markdown), knowledge collections and search, jobs (listed, cancelled) and the
//! service's events as server-sent events. Every answer comes from the service's calls, the ones
//! the workstation and the CLI make. A request names a file or folder only to import or ingest
//! it, and only inside the folders the server was started with (`--allow DIR`).

use std::convert::Infallible;

use futures::StreamExt;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{blocking, blocking_mut, json_response, read_json, ApiError, AppState};
use crate::engine::data::readonly::Window;
use crate::engine::jobs::{JobEvent, JobKind};
use crate::engine::knowledge::store::SearchMode;
use crate::service::{Event, SearchRequest, ServiceError, TrainWhat};

/// Rows a SQL answer holds by default, and at most.
const SQL_ROWS: (u64, u64) = (1_000, 10_000);
/// Seconds a statement may run by default, and at most.
const SQL_SECONDS: (f64, f64) = (10.0, 60.0);

pub(super) fn list(data: impl serde::Serialize) -> Result<Response, ApiError> {
    let data = serde_json::to_value(data).map_err(|e| ServiceError::Engine(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
}

pub(super) fn one(v: impl serde::Serialize) -> Result<Response, ApiError> {
    let v = serde_json::to_value(v).map_err(|e| ServiceError::Engine(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &v))
}

/// A number field of a request, within `range`, `default` when absent.
pub(super) fn number(body: &Value, field: &str, default: f64, range: (f64, f64)) -> Result<f64, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|n| (range.0..=range.1).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_value", format!("{field} must be a number from {} to {}.", range.0, range.1))),
    }
}

pub(super) fn text<'a>(body: &'a Value, field: &str, what: &str) -> Result<&'a str, ApiError> {
    body.get(field).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).ok_or_else(|| ApiError::invalid("invalid_value", format!("{field} is required: {what}.")))
}

pub(super) async fn datasets(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.datasets()?)).await?)
}

/// `{"sql", "limit"?, "offset"?, "count"?, "timeout_s"?}` → columns, rows (objects), truncated,
/// elapsed_ms, and `total` when `count` asked for it.
pub(super) async fn sql(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let sql = text(&body, "sql", "one SELECT statement")?.to_string();
    let limit = number(&body, "limit", SQL_ROWS.0 as f64, (1.0, SQL_ROWS.1 as f64))? as usize;
    let offset = match body.get("offset") {
        None | Some(Value::Null) => 0,
        Some(v) => super::whole(v).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| ApiError::invalid("invalid_value", "offset must be a whole number, 0 or more."))?,
    };
    let count = flag(&body, "count")?;
    let timeout = Duration::from_secs_f64(number(&body, "timeout_s", SQL_SECONDS.0, (0.1, SQL_SECONDS.1))?);
    let window = Window { offset, count };
    one(blocking(&state, move |s| Ok(s.read_sql_window(&sql, window, limit, timeout)?)).await?)
}

/// A true/false field, false when absent.
pub(super) fn flag(body: &Value, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid("invalid_value", format!("{field} must be true or false."))),
    }
}

/// Each table and view with its columns and their types.
pub(super) async fn schema(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tables = blocking(&state, |s| Ok(s.schema()?)).await?;
    let data: Vec<Value> = tables
        .into_iter()
        .map(|(name, cols)| json!({"name": name, "columns": cols.into_iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>()}))
        .collect();
    list(data)
}

/// The training-set views: each one's split and its first training examples as text, or why
/// it cannot be read.
pub(super) async fn views(State(state): State<AppState>) -> Result<Response, ApiError> {
    let views = blocking(&state, |s| Ok(s.views()?)).await?;
    let data: Vec<Value> = views
        .into_iter()
        .map(|(name, r)| match r {
            Ok((info, examples)) => json!({"name": name, "info": info, "examples": examples, "error": null}),
            Err(e) => json!({"name": name, "info": null, "examples": [], "error": e}),
        })
        .collect();
    list(data)
}

/// Every model of the library, with its format, size and the memory it needs (or why it cannot
/// be read).
pub(super) async fn library(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.models())).await?)
}

pub(super) async fn runs(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.runs()?)).await?)
}

/// An optional non-empty string field.
pub(super) fn field(body: &Value, k: &str) -> Result<Option<String>, ApiError> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid("invalid_value", format!("{k} must be a non-empty string."))),
    }
}

/// `{"model"?, "view"?, "config"?}` as POST /api/runs takes it → the run's plan (memory needed
/// and free, split, lengths, two examples), whether or not it fits; nothing starts.
pub(super) async fn check_run(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let (model, view) = (field(&body, "model")?, field(&body, "view")?);
    let config = body.get("config").filter(|c| !c.is_null()).cloned();
    let (_, plan) = blocking(&state, move |s| Ok(s.check_run(model.as_deref(), view.as_deref(), config.as_ref())?)).await?;
    one(plan)
}

/// `{"paused": bool}`: pauses the run training in this server (it keeps its memory) or lets it go on.
pub(super) async fn pause(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let paused = match body.get("paused") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(ApiError::invalid("invalid_value", "paused is required: true to pause the run, false to go on.")),
    };
    blocking(&state, move |s| {
        s.pause_training(paused);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"paused": paused})))
}

/// `{"run": ID}` or `{"model": NAME}` (a Hugging Face folder of the library), `"quant"?` (any
/// type llama-quantize offers; default f16), `"imatrix"?` (`{"view", "tokens"?}`, `{"text",
/// "tokens"?}` or `{"file"}`, the files inside the allowed folders for other clients than the
/// owner): written as GGUF into the workspace's models/ folder, as `lathe export` names it, in a
/// job.
pub(super) async fn export(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let imatrix = calibration(&state, &body["imatrix"], owner)?;
    let quant = match field(&body, "quant")? {
        None => crate::engine::export::gguf::Quant::F16,
        Some(q) => crate::engine::export::gguf::Quant::parse(&q).map_err(|e| ApiError::invalid("invalid_value", e))?,
    };
    let (run, model) = (field(&body, "run")?, field(&body, "model")?);
    let id = blocking_mut(&state, move |s| {
        let source = model_source(s, run, model)?;
        let out = s.export_path(&source.name(), quant)?;
        s.export(source, out, quant, imatrix).ok_or_else(|| ServiceError::Engine("The workspace has no catalog.".into()).into())
    })
    .await?;
    Ok(started(id))
}

/// `{"run"|"model", "view"|"text", "types"?, "imatrix"?, "max_len"?, "eval_tokens"?, "exact"?,
/// "keep"?}`: a quantization report (`lathe quant report`) in a job, its files in the workspace's
/// models/ folder; the text and a matrix file inside the allowed folders for other clients.
pub(super) async fn quant_report(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    use crate::service::quant_report::{EvalData, ReportSpec, DEFAULT_EVAL_TOKENS};
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let imatrix = calibration(&state, &body["imatrix"], owner)?;
    let eval = match (field(&body, "view")?, field(&body, "text")?) {
        (Some(v), None) => EvalData::View(v),
        (None, Some(t)) => EvalData::Text(allowed(&state, &t, owner)?.into()),
        _ => return Err(ApiError::invalid("invalid_value", "Give a view (its eval split) or a text (a file's absolute path) to measure on, one of them.")),
    };
    let types = match body.get("types") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().ok_or_else(|| ApiError::invalid("invalid_value", "types must be a list of type names.")).and_then(|t| crate::engine::export::gguf::Quant::parse(t).map_err(|e| ApiError::invalid("invalid_value", e))))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid("invalid_value", "types must be a list of type names, e.g. [\"q4_k_m\", \"q8_0\"].")),
    };
    let number = |k: &str, default: usize, lo: u64, hi: u64| -> Result<usize, ApiError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().filter(|n| (lo..=hi).contains(n)).map(|n| n as usize).ok_or_else(|| ApiError::invalid("invalid_value", format!("{k} must be a whole number from {lo} to {hi}."))),
        }
    };
    let (max_len, eval_tokens, exact) = (number("max_len", 512, 16, 1 << 20)?, number("eval_tokens", DEFAULT_EVAL_TOKENS, 1, 100_000_000)?, number("exact", 32, 0, 100_000)?);
    let keep = match body.get("keep") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("invalid_value", "keep must be true or false.")),
    };
    let (run, model) = (field(&body, "run")?, field(&body, "model")?);
    let id = blocking_mut(&state, move |s| {
        let source = model_source(s, run, model)?;
        let spec = ReportSpec { source, eval, types, imatrix, max_len, eval_tokens, exact, keep, out: None };
        s.quant_report(spec).ok_or_else(|| ServiceError::Engine("The workspace has no catalog.".into()).into())
    })
    .await?;
    Ok(started(id))
}

/// Every quantization report's rows, newest report first.
pub(super) async fn quant_evals(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.quant_evals()?)).await?)
}

/// What an export or a report reads: `run` (an id of the catalog) or `model` (a name of the
/// library), exactly one of them.
fn model_source(s: &crate::service::Service, run: Option<String>, model: Option<String>) -> Result<crate::service::ModelSource, ApiError> {
    use crate::service::ModelSource;
    match (run, model) {
        (Some(id), None) => {
            s.run(&id)?;
            Ok(ModelSource::Run(id))
        }
        (None, Some(name)) => Ok(ModelSource::Folder(s.library_folder(&name)?)),
        _ => Err(ApiError::invalid("invalid_value", "Give a run (its id) or a model (a library name), one of them.")),
    }
}

/// An export's `imatrix` object, checked (None when absent).
fn calibration(state: &AppState, v: &Value, owner: bool) -> Result<Option<crate::service::quant::Calibration>, ApiError> {
    use crate::service::quant::Calibration;
    if v.is_null() {
        return Ok(None);
    }
    let tokens = match v.get("tokens") {
        None | Some(Value::Null) => None,
        Some(t) => Some(t.as_u64().filter(|&n| (16..=100_000_000).contains(&n)).ok_or_else(|| ApiError::invalid("invalid_value", "imatrix.tokens must be a whole number from 16 to 100000000."))? as usize),
    };
    Ok(Some(match (field(v, "view")?, field(v, "text")?, field(v, "file")?) {
        (Some(name), None, None) => Calibration::View { name, tokens },
        (None, Some(path), None) => Calibration::Text { path: allowed(state, &path, owner)?.into(), tokens },
        (None, None, Some(path)) => Calibration::File(allowed(state, &path, owner)?.into()),
        _ => return Err(ApiError::invalid("invalid_value", "imatrix takes one of view (a view's training split), text (a text file) or file (an importance matrix).")),
    }))
}

/// A conversation saved under its id (the body is the whole record, as GET gives it): a new
/// one, or the next version of one saved before.
pub(super) async fn save_conversation(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let record: crate::engine::data::chats::ChatRecord =
        serde_json::from_value(body).map_err(|e| ApiError::invalid("invalid_value", format!("The body is not a conversation ({e}); send one as GET /api/conversations/ID gives it.")))?;
    if record.id != id {
        return Err(ApiError::invalid("invalid_value", format!("The body's id ({}) is not the path's ({id}).", record.id)));
    }
    blocking(&state, move |s| Ok(s.save_chat_now(&record)?)).await?;
    Ok(json_response(StatusCode::OK, &json!({"id": id, "saved": true})))
}

/// Drops a collection: its Lance dataset and its record.
pub(super) async fn drop_collection(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let gone = name.clone();
    blocking(&state, move |s| Ok(s.kb_drop(&name)?)).await?;
    Ok(json_response(StatusCode::OK, &json!({"name": gone, "dropped": true})))
}

/// `{"resume": ID}`, or `{"model"?, "view"?, "config"?}` (no model and view: the bundled demo):
/// a training run in a job, in this server (it outlives the client that asked).
pub(super) async fn train(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let (resume, model, view) = (field(&body, "resume")?, field(&body, "model")?, field(&body, "view")?);
    let config = body.get("config").filter(|c| !c.is_null()).cloned();
    let what = match resume {
        Some(id) if model.is_none() && view.is_none() && config.is_none() => {
            let known = id.clone();
            blocking(&state, move |s| Ok(s.run(&known)?)).await?;
            TrainWhat::Resume(id)
        }
        Some(_) => return Err(ApiError::invalid("invalid_value", "resume takes no model, view or config: the run continues as it started.")),
        None => {
            let spec = blocking(&state, move |s| Ok(s.new_run(model.as_deref(), view.as_deref(), config.as_ref())?)).await?;
            TrainWhat::Spec(Box::new(spec))
        }
    };
    let id = blocking_mut(&state, move |s| s.train(what).ok_or_else(|| ServiceError::Engine("The workspace has no catalog.".into()).into())).await?;
    Ok(started(id))
}

pub(super) async fn run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    one(blocking(&state, move |s| Ok(s.run(&id)?)).await?)
}

pub(super) async fn metrics(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    list(blocking(&state, move |s| Ok(s.metrics(&id)?)).await?)
}

pub(super) async fn conversations(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.chats()?)).await?)
}

pub(super) async fn conversation(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    one(blocking(&state, move |s| Ok(s.chat(&id)?)).await?)
}

pub(super) async fn conversation_markdown(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let md = blocking(&state, move |s| Ok(s.chat(&id)?.to_markdown())).await?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], md).into_response())
}

pub(super) async fn collections(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.kb_list()?)).await?)
}

/// `{"query", "mode"?: hybrid|vector|text, "k"?: 1..=100, "path"?}` → hits, mode, millis.
pub(super) async fn search(State(state): State<AppState>, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let query = text(&body, "query", "what to look for")?.to_string();
    let mode = match body.get("mode").and_then(Value::as_str) {
        None => SearchMode::Hybrid,
        Some(m) => SearchMode::parse(m).map_err(|e| ApiError::invalid("invalid_value", e))?,
    };
    let k = number(&body, "k", 5.0, (1.0, 100.0))? as usize;
    let path = match body.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => return Err(ApiError::invalid("invalid_value", "path must be a string: only documents whose path starts with it or holds it.")),
    };
    // The collection's own model: a request never names a folder.
    let req = SearchRequest { collection: name, query, mode, k, path, model: None };
    one(blocking(&state, move |s| Ok(s.kb_search(&req)?)).await?)
}

/// `path` resolved, if it lies inside an allowed folder (anywhere for the server's own user,
/// `owner`): 403 outside them (or with none allowed), 400 for a pattern or a relative path, 404
/// when nothing is there.
pub(super) fn allowed(state: &AppState, path: &str, owner: bool) -> Result<String, ApiError> {
    if state.allow.is_empty() && !owner {
        return Err(ServiceError::Refused("This server reads no files for its clients; start it with --allow DIR to let them import from DIR.".into()).into());
    }
    let p = std::path::Path::new(path);
    if !p.is_absolute() || path.contains(['*', '?', '[']) {
        return Err(ApiError::invalid("invalid_value", format!("{path:?} must be an absolute path to a file or folder (no patterns).")));
    }
    let real = p.canonicalize().map_err(|_| ServiceError::NotFound(format!("Nothing is at {path}; check the path.")))?;
    if !owner && !state.allow.iter().any(|a| real.starts_with(a)) {
        let dirs: Vec<String> = state.allow.iter().map(|a| a.display().to_string()).collect();
        return Err(ServiceError::Refused(format!("{path} is outside the folders this server may read ({}).", dirs.join(", "))).into());
    }
    Ok(real.display().to_string())
}

/// A job started: 202 with its id and where its progress streams.
pub(super) fn started(id: u64) -> Response {
    let mut r = json_response(StatusCode::ACCEPTED, &json!({"job": id, "events": format!("/api/jobs/{id}/events")}));
    if let Ok(v) = format!("/api/jobs/{id}").parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `{"path", "name"?, "replace"?}`: a file or folder inside an allowed folder, imported as a
/// dataset in a job (named as `lathe data import` names it: `name`, else from the file).
pub(super) async fn import(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let path = allowed(&state, text(&body, "path", "the absolute path of a file or folder to import")?, owner)?;
    let replace = match body.get("replace") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("invalid_value", "replace must be true or false.")),
    };
    let name = field(&body, "name")?;
    let id = blocking_mut(&state, move |s| s.import(path, name, replace).ok_or_else(|| ServiceError::Engine("The workspace has no catalog.".into()).into())).await?;
    Ok(started(id))
}

/// `{"paths"?}`: files or folders inside the allowed folders added to the collection in a job;
/// none re-reads the collection's recorded sources (a sync).
pub(super) async fn ingest(State(state): State<AppState>, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let paths = match body.get("paths") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                // A dataset's column is the workspace's own; a file must lie in an allowed folder.
                i.as_str().ok_or_else(|| ApiError::invalid("invalid_value", "paths must be a list of strings.")).and_then(|p| match p.starts_with("dataset:") {
                    true => Ok(p.to_string()),
                    false => allowed(&state, p, owner),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::invalid("invalid_value", "paths must be a list of strings.")),
    };
    let id = blocking_mut(&state, move |s| Ok(s.kb_ingest(&name, &paths, None)?)).await?;
    Ok(started(id))
}

pub(super) async fn jobs(State(state): State<AppState>) -> Result<Response, ApiError> {
    let jobs = state.replay.lock().unwrap_or_else(|p| p.into_inner()).jobs.clone();
    list(jobs)
}

/// The job `id` names, as this server last heard of it.
fn job(state: &AppState, id: &str) -> Result<crate::engine::jobs::JobInfo, ApiError> {
    state.replay.lock().unwrap_or_else(|p| p.into_inner()).job(id)
}

pub(super) async fn cancel_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = job(&state, &id)?;
    if job.status.is_finished() {
        return Err(ServiceError::Invalid(format!("Job {id} has ended already ({:?}).", job.status)).into());
    }
    blocking(&state, move |s| {
        s.cancel_job(job.id);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"id": job.id, "cancelling": true})))
}

/// The service's events as they happen (jobs, training, ingest, exports), each a `data:` line
/// of JSON; `job` keeps only that job's and ends when it finishes.
/// The events from `rx` as SSE until the server stops; with `job`, only that job's (a run's
/// training events and an export's result included) until it finishes.
fn events_stream(state: AppState, rx: tokio::sync::broadcast::Receiver<Event>, job: Option<(u64, JobKind)>) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> {
    let stop = state.stopping.clone();
    let st = (rx, stop, false);
    futures::stream::unfold(st, move |(mut rx, mut stop, done)| async move {
        if done || *stop.borrow() {
            return None;
        }
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = stop.changed() => return None,
            };
            let ev = match ev {
                Ok(ev) => ev,
                // A slow reader misses what the channel could not hold; it is told how many.
                Err(RecvError::Lagged(n)) => {
                    let e = SseEvent::default().event("lagged").data(json!({"missed": n}).to_string());
                    return Some((Ok::<_, Infallible>(e), (rx, stop, false)));
                }
                Err(RecvError::Closed) => return None,
            };
            if let Some(j) = job {
                if !of_job(&ev, j) {
                    continue;
                }
            }
            let finished = job.is_some() && matches!(&ev, Event::Job(JobEvent::Finished { .. }));
            let data = serde_json::to_string(&ev).unwrap_or_default();
            return Some((Ok(SseEvent::default().data(data)), (rx, stop, finished)));
        }
    })
}

/// Whether `ev` belongs to the job: its own events, and what its kind reports without a job id
/// (one run trains at a time; an export's result).
fn of_job(ev: &Event, (id, kind): (u64, JobKind)) -> bool {
    match ev {
        Event::Train(_) | Event::TrainDone(_) => kind == JobKind::Train,
        Event::Exported(_) => kind == JobKind::Export,
        Event::QuantReported(_) => kind == JobKind::Quantize,
        ev => job_of(ev) == Some(id),
    }
}

fn job_of(ev: &Event) -> Option<u64> {
    match ev {
        Event::Job(JobEvent::Started { id, .. } | JobEvent::Progress { id, .. } | JobEvent::Finished { id, .. }) => Some(*id),
        Event::Ingest { job, .. } | Event::Ingested { job, .. } => Some(*job),
        _ => None,
    }
}

/// Every service event from now on, after what a new client needs to catch up: the jobs
/// running (started, with their last progress) and, while a run trains, its events so far.
pub(super) async fn all_events(State(state): State<AppState>) -> Response {
    let (rx, first) = {
        // Under the lock that events are sent under: nothing is missed or told twice.
        let replay = state.replay.lock().unwrap_or_else(|p| p.into_inner());
        (state.events.subscribe(), replay.catch_up())
    };
    let first = first.into_iter().map(|ev| Ok::<_, Infallible>(SseEvent::default().data(serde_json::to_string(&ev).unwrap_or_default())));
    let rest = events_stream(state, rx, None);
    Sse::new(futures::stream::iter(first).chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// Events the server has seen that a client subscribing now would need: every job, and the
/// training run's events since it started (the loss curve so far).
#[derive(Default)]
pub(super) struct Replay {
    pub jobs: Vec<crate::engine::jobs::JobInfo>,
    train: Vec<Event>,
}

/// The training events kept for a client that attaches mid-run (a long run's oldest steps go
/// first; its start stays).
const REPLAY_EVENTS: usize = 20_000;

impl Replay {
    pub fn fold(&mut self, ev: &Event) {
        match ev {
            Event::Job(j) => crate::engine::jobs::JobInfo::apply(&mut self.jobs, j),
            Event::Train(crate::engine::train::trainer::TrainEvent::Started { .. }) => self.train = vec![ev.clone()],
            Event::Train(_) | Event::TrainDone(_) => {
                if self.train.len() >= REPLAY_EVENTS {
                    self.train.remove(1);
                }
                self.train.push(ev.clone());
            }
            _ => {}
        }
    }

    /// The job `id` names, as this server last heard of it.
    fn job(&self, id: &str) -> Result<crate::engine::jobs::JobInfo, ApiError> {
        let known = id.parse::<u64>().ok().and_then(|n| self.jobs.iter().find(|j| j.id == n).cloned());
        known.ok_or_else(|| ServiceError::NotFound(format!("There is no job {id}; GET /api/jobs lists them.")).into())
    }

    /// What one job has said so far: its start, its last progress and, for a run, its events.
    fn catch_up_job(&self, j: &crate::engine::jobs::JobInfo) -> Vec<Event> {
        if j.status.is_finished() {
            return Vec::new();
        }
        let mut out = vec![Event::Job(JobEvent::Started { id: j.id, kind: j.kind, title: j.title.clone() })];
        if j.fraction.is_some() || !j.message.is_empty() {
            out.push(Event::Job(JobEvent::Progress { id: j.id, fraction: j.fraction, message: j.message.clone() }));
        }
        if j.kind == JobKind::Train {
            out.extend(self.train.iter().cloned());
        }
        out
    }

    /// The running jobs as a new client would have heard of them, and the run's events while
    /// one trains.
    fn catch_up(&self) -> Vec<Event> {
        self.jobs.iter().flat_map(|j| self.catch_up_job(j)).collect()
    }
}

pub(super) async fn job_events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (rx, now, first) = {
        // Under the lock events are sent under: what the job said so far, then the rest.
        let replay = state.replay.lock().unwrap_or_else(|p| p.into_inner());
        let rx = state.events.subscribe();
        let now = replay.job(&id);
        let first = now.as_ref().map(|j| replay.catch_up_job(j)).unwrap_or_default();
        (rx, now, first)
    };
    let now = now?;
    let sse = |ev: Event| Ok::<_, Infallible>(SseEvent::default().data(serde_json::to_string(&ev).unwrap_or_default()));
    if now.status.is_finished() {
        // Nothing more will come: what it said last (a quick job may end before its client
        // follows it), then the end, at once.
        let said = (!now.message.is_empty()).then(|| Event::Job(JobEvent::Progress { id: now.id, fraction: now.fraction, message: now.message.clone() }));
        let end = said.into_iter().chain([Event::Job(JobEvent::Finished { id: now.id, status: now.status })]);
        return Ok(Sse::new(futures::stream::iter(end.map(sse).collect::<Vec<_>>())).into_response());
    }
    let rest = events_stream(state, rx, Some((now.id, now.kind)));
    Ok(Sse::new(futures::stream::iter(first.into_iter().map(sse)).chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
