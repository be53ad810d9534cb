//! `GET /metrics` in Prometheus' text format (version 0.0.4), written by hand (no crate): HTTP
//! requests and their durations by route, method and status; the answering engine's requests
//! running, waiting and refused, prompt and generated tokens and seconds, time to first token and
//! queue wait (sums and counts); jobs by kind and status; models loaded; resident memory. Every
//! name starts `lathe_`. Routes are labelled from the route table (anything else is "other"), so
//! a client cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::engine::jobs::{JobEvent, JobKind, JobStatus};

/// Upper bounds (seconds) of the request-duration histogram's buckets.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Histogram {
    /// Per bucket of `BUCKETS`, requests at or under its bound (not cumulative here).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// What the server counts itself (the engine keeps its own figures).
#[derive(Default)]
pub struct Counters {
    /// (route, method, status) → requests.
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    /// (route, method) → durations.
    durations: Mutex<BTreeMap<(&'static str, String), Histogram>>,
    jobs: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    running: BTreeMap<u64, JobKind>,
    /// (kind, status) → finished jobs.
    finished: BTreeMap<(&'static str, &'static str), u64>,
}

impl Counters {
    /// Folds a job event in (called from the service's subscription).
    pub fn job(&self, ev: &JobEvent) {
        let mut j = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            JobEvent::Started { id, kind, .. } => {
                j.running.insert(*id, *kind);
            }
            JobEvent::Finished { id, status } => {
                if let Some(kind) = j.running.remove(id) {
                    let status = match status {
                        JobStatus::Running => "running",
                        JobStatus::Done => "done",
                        JobStatus::Cancelled => "cancelled",
                        JobStatus::Failed(_) => "failed",
                        JobStatus::Exists(_) => "exists",
                    };
                    *j.finished.entry((kind.label(), status)).or_default() += 1;
                }
            }
            JobEvent::Progress { .. } => {}
        }
    }

    fn record(&self, route: &'static str, method: &str, status: u16, secs: f64) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((route, method.to_string(), status)).or_default() += 1;
        let mut d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let h = d.entry((route, method.to_string())).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            h.counts[i] += 1;
        }
        h.count += 1;
        h.sum += secs;
    }
}

/// Counts every request by route, method and status, with its duration to the response's head
/// (a stream's length is the client's business).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = state.paths.iter().copied().find(|r| matches_route(r, path)).unwrap_or("other");
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state.counters.record(route, &method, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

/// Whether `path` is an instance of the route `pattern` (a `{name}` segment takes any one segment).
fn matches_route(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (a.starts_with('{') && a.ends_with('}') && !b.is_empty()) => {}
            _ => return false,
        }
    }
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The resident set of this process, from /proc (Linux; 0 elsewhere).
pub(super) fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let c = &state.counters;
    head(&mut out, "lathe_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
    for ((route, method, status), n) in c.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "lathe_http_requests_total{{route=\"{route}\",method=\"{}\",status=\"{status}\"}} {n}", label(method));
    }
    head(&mut out, "lathe_http_request_duration_seconds", "histogram", "Time to the response's head, by route and method.");
    for ((route, method), h) in c.durations.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let l = format!("route=\"{route}\",method=\"{}\"", label(method));
        let mut cum = 0;
        for (b, n) in BUCKETS.iter().zip(&h.counts) {
            cum += n;
            let _ = writeln!(out, "lathe_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "lathe_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "lathe_http_request_duration_seconds_sum{{{l}}} {}", h.sum);
        let _ = writeln!(out, "lathe_http_request_duration_seconds_count{{{l}}} {}", h.count);
    }
    let f = &state.slots.figures;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let secs = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
    let gauges = [
        ("lathe_inference_requests_running", "Answers being decoded now.", f.running.load(Ordering::Relaxed) as f64),
        ("lathe_inference_requests_waiting", "Requests waiting for a slot.", f.waiting.load(Ordering::Relaxed) as f64),
        ("lathe_inference_slots", "Answers that can be decoded together.", state.slots.config.slots as f64),
        ("lathe_slot_context_tokens", "Tokens each answer may use, prompt included (0 until a model loads).", f.per_slot.load(Ordering::Relaxed) as f64),
        ("lathe_models_loaded", "Generation models loaded (0 or 1).", f.loaded.load(Ordering::Relaxed) as f64),
        ("lathe_model_loading", "1 while a model loads.", f64::from(u8::from(f.loading.load(Ordering::Relaxed)))),
        ("lathe_resident_memory_bytes", "Resident memory of the server process.", resident_bytes() as f64),
    ];
    for (name, help, v) in gauges {
        head(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters = [
        ("lathe_inference_requests_total", "Requests taken by the answering engine.", get(&f.requests) as f64),
        ("lathe_inference_requests_rejected_total", "Requests refused with 503 because the queue was full.", get(&f.rejected) as f64),
        ("lathe_prompt_tokens_total", "Prompt tokens read.", get(&f.prompt_tokens) as f64),
        ("lathe_prompt_seconds_total", "Seconds spent reading prompts.", secs(&f.prompt_us)),
        ("lathe_generated_tokens_total", "Tokens generated.", get(&f.generated_tokens) as f64),
        ("lathe_generation_seconds_total", "Seconds spent generating.", secs(&f.generation_us)),
    ];
    for (name, help, v) in counters {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let answered = get(&f.answered);
    for (name, help, sum, count) in [
        ("lathe_time_to_first_token_seconds", "From a slot taking a request to its first token.", secs(&f.first_token_us), answered),
        ("lathe_queue_wait_seconds", "From a request's arrival to a slot taking it.", secs(&f.queue_us), get(&f.admitted)),
    ] {
        head(&mut out, name, "summary", help);
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
    let jobs = c.jobs.lock().unwrap_or_else(|p| p.into_inner());
    head(&mut out, "lathe_jobs_running", "gauge", "Jobs running, by kind.");
    let mut running: BTreeMap<&str, u64> = BTreeMap::new();
    for kind in jobs.running.values() {
        *running.entry(kind.label()).or_default() += 1;
    }
    for (kind, n) in running {
        let _ = writeln!(out, "lathe_jobs_running{{kind=\"{kind}\"}} {n}");
    }
    head(&mut out, "lathe_jobs_finished_total", "counter", "Jobs finished, by kind and status.");
    for ((kind, status), n) in &jobs.finished {
        let _ = writeln!(out, "lathe_jobs_finished_total{{kind=\"{kind}\",status=\"{status}\"}} {n}");
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::matches_route;

    #[test]
    fn routes_with_parameters_match_their_instances_only() {
        assert!(matches_route("/api/runs/{id}", "/api/runs/r-1"));
        assert!(matches_route("/api/runs/{id}/metrics", "/api/runs/r-1/metrics"));
        assert!(!matches_route("/api/runs/{id}", "/api/runs/r-1/metrics"));
        assert!(!matches_route("/api/runs/{id}", "/api/runs/"));
        assert!(matches_route("/v1/models", "/v1/models"));
        assert!(!matches_route("/v1/models", "/v1/models/x"));
    }
}
