//! `lathe serve`: the workspace's owner over HTTP. It opens the workspace as its only writer
//! (through the service, like the workstation and the CLI), records where it listens
//! (`service::owner`), and answers until SIGTERM or Ctrl-C: requests waiting for a slot are then
//! refused (503) and the answers in flight finish. Loopback by default; any other address only
//! with an API key, checked on every request in constant time. The routes (`table`): `/health`,
//! `/metrics` (Prometheus' text: metrics.rs), `/openapi.json` and `/docs` (openapi.rs), OpenAI's
//! `/v1/models`, `/v1/chat/completions` and `/v1/completions` (the library's GGUF models through
//! the service's slot engine: chat.rs) and `/v1/embeddings` (the knowledge engine's models,
//! `float` and `base64`), and lathe's own API under `/api/` (datasets, read-only SQL, runs,
//! conversations, knowledge, jobs and the service's events: workspace.rs). Every error is
//! OpenAI's `{"error": {"message", "type", "code"}}`.
//! Bodies are read by hand (no axum `json` feature: see ENGINE-NOTES), up to `BODY_LIMIT`.

mod catalog;
mod chat;
mod embeddings;
mod metrics;
mod openapi;
mod workspace;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde_json::{json, Value};

use tokio::sync::{broadcast, watch};

use crate::engine::infer::slots::{self, Slots};
use crate::engine::workspace::Workspace;
use crate::service::owner::Owner;
use crate::service::{Service, ServiceError, Settings};

/// The largest request body read (a batch of embedding inputs fits; 413 beyond).
pub const BODY_LIMIT: usize = 8 << 20;

pub struct Options {
    pub listen: SocketAddr,
    pub api_key: Option<String>,
    pub slots: slots::Config,
    /// Folders whose files requests may name (imports, ingest).
    pub allow: Vec<std::path::PathBuf>,
}

/// What every route shares.
struct Shared {
    service: Mutex<Service>,
    key: Option<String>,
    /// The owner's token (`service::owner`): its bearer is this server's own user.
    token: String,
    /// The GGUF models' answers.
    slots: Slots,
    counters: Arc<metrics::Counters>,
    /// The routes' paths (metrics label only these) and the OpenAPI document, from `table`.
    paths: Vec<&'static str>,
    doc: Value,
    /// Every job this server has run and the training run's events so far: what a client that
    /// subscribes now is told first. Events are folded and sent under its lock.
    replay: Arc<Mutex<workspace::Replay>>,
    /// When it started listening, and where.
    started: std::time::Instant,
    address: SocketAddr,
    /// The service's events, for `/api/events` (a slow reader misses some and is told).
    events: broadcast::Sender<crate::service::Event>,
    /// Turns true when the server stops: endless streams end then.
    stopping: watch::Receiver<bool>,
    /// The allowed folders, resolved (no symbolic links, no `..`).
    allow: Vec<std::path::PathBuf>,
}

type AppState = Arc<Shared>;

/// An error as OpenAI's API gives it.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, kind: "invalid_request_error", code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "code": self.code, "param": null}});
        json_response(self.status, &body)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        let (status, kind, code) = match e {
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            ServiceError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_value"),
            ServiceError::Refused(_) => (StatusCode::FORBIDDEN, "invalid_request_error", "refused"),
            ServiceError::AlreadyExists(_) | ServiceError::Busy(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            ServiceError::Engine(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_failed"),
        };
        ApiError { status, kind, code, message }
    }
}

/// A model lookup's error: an unknown name is OpenAI's 404 `model_not_found`.
fn model_error(e: ServiceError) -> ApiError {
    match e {
        ServiceError::NotFound(message) => ApiError { status: StatusCode::NOT_FOUND, kind: "invalid_request_error", code: "model_not_found", message },
        e => e.into(),
    }
}

/// A JSON number that is a whole number, as JSON Schema counts them (`5` and `5.0` alike).
fn whole(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The request's body as JSON: 413 over the limit (refused from its declared length before
/// reading, or when it gets there), 400 when it does not parse or is no object.
async fn read_json(req: Request) -> Result<Value, ApiError> {
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        kind: "invalid_request_error",
        code: "request_too_large",
        message: format!("The request body is over {} MiB; send fewer or shorter inputs per request.", BODY_LIMIT >> 20),
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await.map_err(|_| too_large())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid("invalid_json", format!("The body is not valid JSON ({e}).")))?;
    if !v.is_object() {
        return Err(ApiError::invalid("invalid_json", "The body must be a JSON object."));
    }
    Ok(v)
}

/// Runs blocking service work that starts something (a job) off the async threads.
async fn blocking_mut<T: Send + 'static>(state: &AppState, f: impl FnOnce(&mut Service) -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut service = state.service.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut service)
    })
    .await
    .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "server_error", code: "panicked", message: format!("The request failed inside lathe ({e}); see logs/lathe.log.") })?
}

/// Runs blocking service work off the async threads.
async fn blocking<T: Send + 'static>(state: &AppState, f: impl FnOnce(&Service) -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    blocking_mut(state, move |s| f(s)).await
}

/// Whether `given` equals the key, in time that depends only on the key's length.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = given.len() ^ key.len();
    for (i, k) in key.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ k);
    }
    std::hint::black_box(diff) == 0
}

/// The bearer token a request brings ("" without one).
fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("")
}

/// Whether the request comes from this server's own user (it brings the owner's token).
fn from_owner(state: &Shared, headers: &axum::http::HeaderMap) -> bool {
    same_key(bearer(headers).as_bytes(), state.token.as_bytes())
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.key {
        let given = bearer(req.headers());
        if !same_key(given.as_bytes(), key.as_bytes()) && !from_owner(&state, req.headers()) {
            let e = ApiError {
                status: StatusCode::UNAUTHORIZED,
                kind: "invalid_request_error",
                code: "invalid_api_key",
                message: "A missing or wrong API key; send it as `Authorization: Bearer KEY`.".into(),
            };
            return e.into_response();
        }
    }
    next.run(req).await
}

/// 200 when requests can be answered; 503 while a model loads.
async fn health(State(state): State<AppState>) -> Response {
    if state.slots.figures.loading.load(std::sync::atomic::Ordering::Relaxed) {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "loading model"}));
    }
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// The library's models a client can use here: GGUF files and embedding folders.
async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let list = blocking(&state, |s| Ok(s.models())).await?;
    let data: Vec<Value> = list
        .iter()
        .filter(|m| m.problem.is_none() && matches!(m.format.as_str(), "gguf" | "embedding" | "remote") && !m.name.contains('@'))
        .map(|m| {
            let created = std::fs::metadata(&m.path).and_then(|md| md.modified()).ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
            json!({"id": m.name, "object": "model", "created": created, "owned_by": m.source})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data})))
}

/// This server's own figures, for a client's System pane (`/metrics` has them all, for
/// Prometheus).
async fn server_status(State(state): State<AppState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let f = &state.slots.figures;
    let jobs_running = state.replay.lock().unwrap_or_else(|p| p.into_inner()).jobs.iter().filter(|j| !j.status.is_finished()).count();
    let status = crate::service::attached::ServerStatus {
        pid: std::process::id(),
        address: state.address.to_string(),
        uptime_s: state.started.elapsed().as_secs_f64(),
        rss_bytes: metrics::resident_bytes(),
        slots: state.slots.config.slots,
        running: f.running.load(Relaxed),
        waiting: f.waiting.load(Relaxed),
        requests: f.requests.load(Relaxed),
        rejected: f.rejected.load(Relaxed),
        generated_tokens: f.generated_tokens.load(Relaxed),
        generation_s: f.generation_us.load(Relaxed) as f64 / 1e6,
        model_loaded: f.loaded.load(Relaxed) > 0,
        model_loading: f.loading.load(Relaxed),
        jobs_running,
    };
    json_response(StatusCode::OK, &serde_json::to_value(status).unwrap_or_default())
}

async fn not_found(req: Request) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, kind: "invalid_request_error", code: "unknown_route", message: format!("There is no route {} {}.", req.method(), req.uri().path()) }
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "invalid_request_error",
        code: "method_not_allowed",
        message: format!("{} does not take {}.", req.uri().path(), req.method()),
    }
}

/// A route: its path, method, handler and OpenAPI operation.
type Route = (&'static str, &'static str, MethodRouter<AppState>, Value);

/// Every route. The router and /openapi.json are both built from this table, so a route cannot
/// go undocumented.
fn table() -> Vec<Route> {
    vec![
        ("/health", "get", get(health), openapi::health()),
        ("/metrics", "get", get(metrics::metrics), openapi::metrics()),
        ("/openapi.json", "get", get(|State(s): State<AppState>| async move { openapi::json_doc(&s.doc) }), openapi::openapi_doc()),
        ("/docs", "get", get(|| async { openapi::page() }), openapi::docs_doc()),
        ("/v1/models", "get", get(models), openapi::models()),
        ("/v1/chat/completions", "post", post(chat::chat_completions), openapi::chat()),
        ("/v1/completions", "post", post(chat::completions), openapi::completions()),
        ("/v1/embeddings", "post", post(embeddings::embeddings), openapi::embeddings()),
        ("/api/datasets", "get", get(workspace::datasets), openapi::datasets()),
        ("/api/datasets/import", "post", post(workspace::import), openapi::import()),
        ("/api/datasets/export", "post", post(catalog::export), openapi::export_data()),
        ("/api/datasets/{name}", "delete", axum::routing::delete(catalog::drop_dataset), openapi::drop_dataset()),
        // A dataset may be named as the two actions are (import.csv becomes `import`): their paths
        // take its DELETE too, which the {name} route cannot see behind them.
        ("/api/datasets/import", "delete", axum::routing::delete(|s: State<AppState>| catalog::drop_dataset(s, Path("import".into()))), openapi::drop_dataset_named("import")),
        ("/api/datasets/export", "delete", axum::routing::delete(|s: State<AppState>| catalog::drop_dataset(s, Path("export".into()))), openapi::drop_dataset_named("export")),
        ("/api/schema", "get", get(workspace::schema), openapi::tables()),
        ("/api/views", "get", get(workspace::views), openapi::views()),
        ("/api/views", "post", post(catalog::create_view), openapi::create_view()),
        ("/api/views/{name}", "delete", axum::routing::delete(catalog::drop_view), openapi::drop_view()),
        ("/api/views/{name}/examples", "post", post(catalog::examples), openapi::view_examples()),
        ("/api/sql", "post", post(workspace::sql), openapi::sql()),
        ("/api/models", "get", get(workspace::library), openapi::library()),
        ("/api/models", "post", post(catalog::add_model), openapi::add_model()),
        ("/api/models/remove", "post", post(catalog::remove_model), openapi::remove_model()),
        ("/api/exports", "post", post(workspace::export), openapi::export()),
        ("/api/quant-reports", "post", post(workspace::quant_report), openapi::quant_report()),
        ("/api/quant-evals", "get", get(workspace::quant_evals), openapi::quant_evals()),
        ("/api/runs", "get", get(workspace::runs), openapi::runs()),
        ("/api/runs", "post", post(workspace::train), openapi::train()),
        ("/api/runs/check", "post", post(workspace::check_run), openapi::check_run()),
        ("/api/training/pause", "post", post(workspace::pause), openapi::pause()),
        ("/api/runs/{id}", "get", get(workspace::run), openapi::run()),
        ("/api/runs/{id}/metrics", "get", get(workspace::metrics), openapi::run_metrics()),
        ("/api/conversations", "get", get(workspace::conversations), openapi::conversations()),
        ("/api/conversations/{id}", "get", get(workspace::conversation), openapi::conversation()),
        ("/api/conversations/{id}", "put", axum::routing::put(workspace::save_conversation), openapi::save_conversation()),
        ("/api/conversations/{id}/markdown", "get", get(workspace::conversation_markdown), openapi::conversation_markdown()),
        ("/api/collections", "get", get(workspace::collections), openapi::collections()),
        ("/api/collections", "post", post(catalog::create_collection), openapi::create_collection()),
        ("/api/collections/{name}", "delete", axum::routing::delete(workspace::drop_collection), openapi::drop_collection()),
        ("/api/collections/{name}/search", "post", post(workspace::search), openapi::search()),
        ("/api/collections/{name}/ingest", "post", post(workspace::ingest), openapi::ingest()),
        ("/api/jobs", "get", get(workspace::jobs), openapi::jobs()),
        ("/api/jobs/{id}/cancel", "post", post(workspace::cancel_job), openapi::cancel_job()),
        ("/api/jobs/{id}/events", "get", get(workspace::job_events), openapi::job_events()),
        ("/api/events", "get", get(workspace::all_events), openapi::events()),
        ("/api/server", "get", get(server_status), openapi::server_status()),
    ]
}

fn router(state: AppState, table: Vec<Route>) -> Router {
    let mut r = Router::new();
    for (path, _, handler, _) in table {
        r = r.route(path, handler);
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Serves the workspace until SIGTERM or Ctrl-C.
pub fn run(ws: &Workspace, opts: Options) -> anyhow::Result<()> {
    let key = opts.api_key.filter(|k| !k.is_empty());
    if !opts.listen.ip().is_loopback() && key.is_none() {
        anyhow::bail!(
            "{} is reachable from other machines; give an API key (--api-key KEY or LATHE_API_KEY) to listen there, or listen on 127.0.0.1.",
            opts.listen
        );
    }
    let allow = opts
        .allow
        .iter()
        .map(|d| d.canonicalize().ok().filter(|c| c.is_dir()).ok_or_else(|| anyhow::anyhow!("--allow {} is not a folder; name folders that exist.", d.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let signals = Signals::register().map_err(|e| anyhow::anyhow!("cannot watch for SIGTERM ({e})."))?;
        let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {} ({e}); pick another --listen address.", opts.listen))?;
        let address = listener.local_addr()?;
        let owner = Owner::claim(ws, address, key.is_some())?;
        let settings = Settings { serving: Some(opts.slots), ..Default::default() };
        let counters = Arc::new(metrics::Counters::default());
        let replay: Arc<Mutex<workspace::Replay>> = Arc::default();
        let (events, _) = broadcast::channel(1024);
        let (stop, stopping) = watch::channel(false);
        let (seen, folded, sent) = (counters.clone(), replay.clone(), events.clone());
        let service = Service::start(Some(ws), settings, move |ev| {
            if let crate::service::Event::Job(j) = &ev {
                seen.job(j);
            }
            tracing::debug!(?ev, "service event");
            let mut replay = folded.lock().unwrap_or_else(|p| p.into_inner());
            replay.fold(&ev);
            // No subscriber is no error.
            let _ = sent.send(ev);
        });
        // The owner is the catalog's one writer: a workstation or CLI holding it is said now.
        service.wait_catalog(Duration::from_secs(60)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let slots = service.serving().ok_or_else(|| anyhow::anyhow!("the service started without its answering engine"))?;
        let routes = table();
        let paths = routes.iter().map(|r| r.0).collect();
        let doc = openapi::document(&routes.iter().map(|(p, m, _, op)| (*p, *m, op.clone())).collect::<Vec<_>>());
        let started = std::time::Instant::now();
        let state = Arc::new(Shared { service: Mutex::new(service), key, token: owner.token.clone(), slots: slots.clone(), counters, paths, doc, replay, started, address, events, stopping, allow });
        tracing::info!(%address, "lathe serve listening");
        // Said on stdout for a person or a script that started it; the record says it too.
        println!("lathe serve: listening on http://{address} (workspace {})", ws.root.display());
        // On the signal: waiting requests are refused (503), answers in flight end.
        let drain = async move {
            signals.stopped().await;
            slots.drain();
            let _ = stop.send(true);
        };
        axum::serve(listener, router(state.clone(), routes)).with_graceful_shutdown(drain).await?;
        tracing::info!("lathe serve stopping");
        // Whatever still holds the service (a request past the drain) lets go within a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut state = state;
        let service = loop {
            match Arc::try_unwrap(state) {
                Ok(shared) => break Some(shared.service.into_inner().unwrap_or_else(|p| p.into_inner())),
                Err(s) if std::time::Instant::now() < deadline => {
                    state = s;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => break None,
            }
        };
        if let Some(s) = service {
            s.shutdown();
        }
        anyhow::Ok(())
    })
}

/// `lathe serve --detach`: the same command again without `--detach`, in the background
/// (`Owner::spawn_server`); returns once it says where it listens, or with its last words.
pub fn detach(ws: &Workspace) -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).filter(|a| a != "--detach").collect();
    let o = crate::service::owner::spawn_server(ws, &args).map_err(anyhow::Error::msg)?;
    let log = ws.logs_dir().join("serve.log");
    println!("lathe serve: listening on http://{} (pid {}, workspace {}); its log is {}; stop it with `kill -TERM {}`", o.address, o.pid, ws.root.display(), log.display(), o.pid);
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), registered before the server says where it listens: a signal
/// that comes at any moment after that drains it rather than killing it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the first of them.
    async fn stopped(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_as_json_schema_counts_them() {
        assert_eq!(whole(&json!(5)), Some(5));
        assert_eq!(whole(&json!(5.0)), Some(5));
        assert_eq!(whole(&json!(-3)), Some(-3));
        assert_eq!(whole(&json!(5.5)), None);
        assert_eq!(whole(&json!("5")), None);
        assert_eq!(whole(&json!(1e300)), None);
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"secret", b"secret"));
        assert!(!same_key(b"secreT", b"secret"));
        assert!(!same_key(b"secret-and-more", b"secret"));
        assert!(!same_key(b"", b"secret"));
        assert!(!same_key(b"secre", b"secret"));
    }
}
