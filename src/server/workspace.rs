//! lathe's own API under `/api/`: the workspace's datasets, read-only SQL (one SELECT over its
//! own tables and views, a row limit, a time limit), runs and their metrics, saved conversations
//! (JSON or Markdown), knowledge collections and search, jobs (listed, cancelled) and the
//! service's events as server-sent events. Every answer comes from the service's calls, the ones
//! the workstation and the CLI make; a request never names a file or a folder here.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{blocking, json_response, read_json, ApiError, AppState};
use crate::engine::jobs::JobEvent;
use crate::engine::knowledge::store::SearchMode;
use crate::service::{Event, SearchRequest, ServiceError};

/// Rows a SQL answer holds by default, and at most.
const SQL_ROWS: (u64, u64) = (1_000, 10_000);
/// Seconds a statement may run by default, and at most.
const SQL_SECONDS: (f64, f64) = (10.0, 60.0);

fn list(data: impl serde::Serialize) -> Result<Response, ApiError> {
    let data = serde_json::to_value(data).map_err(|e| ServiceError::Engine(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
}

fn one(v: impl serde::Serialize) -> Result<Response, ApiError> {
    let v = serde_json::to_value(v).map_err(|e| ServiceError::Engine(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &v))
}

/// A number field of a request, within `range`, `default` when absent.
fn number(body: &Value, field: &str, default: f64, range: (f64, f64)) -> Result<f64, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|n| (range.0..=range.1).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_value", format!("{field} must be a number from {} to {}.", range.0, range.1))),
    }
}

fn text<'a>(body: &'a Value, field: &str, what: &str) -> Result<&'a str, ApiError> {
    body.get(field).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).ok_or_else(|| ApiError::invalid("invalid_value", format!("{field} is required: {what}.")))
}

pub(super) async fn datasets(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.datasets()?)).await?)
}

/// `{"sql", "limit"?, "timeout_s"?}` → columns, rows (objects), truncated, elapsed_ms.
pub(super) async fn sql(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let sql = text(&body, "sql", "one SELECT statement")?.to_string();
    let limit = number(&body, "limit", SQL_ROWS.0 as f64, (1.0, SQL_ROWS.1 as f64))? as usize;
    let timeout = Duration::from_secs_f64(number(&body, "timeout_s", SQL_SECONDS.0, (0.1, SQL_SECONDS.1))?);
    one(blocking(&state, move |s| Ok(s.read_sql(&sql, limit, timeout)?)).await?)
}

pub(super) async fn runs(State(state): State<AppState>) -> Result<Response, ApiError> {
    list(blocking(&state, |s| Ok(s.runs()?)).await?)
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

pub(super) async fn jobs(State(state): State<AppState>) -> Result<Response, ApiError> {
    let jobs = state.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    list(jobs)
}

pub(super) async fn cancel_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let known = id.parse::<u64>().ok().and_then(|n| state.jobs.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|j| j.id == n).cloned());
    let Some(job) = known else {
        return Err(ServiceError::NotFound(format!("There is no job {id}; GET /api/jobs lists them.")).into());
    };
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
fn events(state: AppState, job: Option<u64>) -> Response {
    let rx = state.events.subscribe();
    let stop = state.stopping.clone();
    let st = (rx, stop, false);
    let stream = futures::stream::unfold(st, move |(mut rx, mut stop, done)| async move {
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
                if job_of(&ev) != Some(j) {
                    continue;
                }
            }
            let finished = job.is_some() && matches!(&ev, Event::Job(JobEvent::Finished { .. }));
            let data = serde_json::to_string(&ev).unwrap_or_default();
            return Some((Ok(SseEvent::default().data(data)), (rx, stop, finished)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn job_of(ev: &Event) -> Option<u64> {
    match ev {
        Event::Job(JobEvent::Started { id, .. } | JobEvent::Progress { id, .. } | JobEvent::Finished { id, .. }) => Some(*id),
        Event::Ingest { job, .. } | Event::Ingested { job, .. } => Some(*job),
        _ => None,
    }
}

pub(super) async fn all_events(State(state): State<AppState>) -> Response {
    events(state, None)
}

pub(super) async fn job_events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = id.parse::<u64>().ok().filter(|n| state.jobs.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|j| j.id == *n));
    let Some(job) = job else {
        return Err(ServiceError::NotFound(format!("There is no job {id}; GET /api/jobs lists them.")).into());
    };
    let finished = state.jobs.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|j| j.id == job).map(|j| j.status.clone()).filter(|s| s.is_finished());
    if let Some(status) = finished {
        // Nothing more will come: the end, at once.
        let ev = Event::Job(JobEvent::Finished { id: job, status });
        let one = futures::stream::iter([Ok::<_, Infallible>(SseEvent::default().data(serde_json::to_string(&ev).unwrap_or_default()))]);
        return Ok(Sse::new(one).into_response());
    }
    Ok(events(state, Some(job)))
}
