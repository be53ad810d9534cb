//! Long work (training, export, large imports) runs as a job: an id, a kind, a status, progress
//! and a cancel flag, on its own thread. Jobs report plain-data `JobEvent`s through the sink they
//! were given, so the TUI, the CLI and tests observe them the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub type JobId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Train,
    Export,
    Import,
    /// Documents into a knowledge collection.
    Ingest,
    /// `lathe quant report`: quantized files made and measured.
    Quantize,
    /// Keeps every core busy on purpose; `lathe bench ui` uses it to check the UI stays responsive.
    Stress,
}

impl JobKind {
    /// A job in words: its kind, then its title (titles name the object, not the verb).
    pub fn words(self, title: &str) -> String {
        format!("{} {title}", self.label())
    }

    pub fn label(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Export => "export",
            JobKind::Import => "import",
            JobKind::Ingest => "ingest",
            JobKind::Quantize => "quantize",
            JobKind::Stress => "stress",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Done,
    Cancelled,
    Failed(String),
    /// Did nothing: what it would create exists already (a front end may ask, then replace).
    Exists(String),
}

impl JobStatus {
    pub fn is_finished(&self) -> bool {
        !matches!(self, JobStatus::Running)
    }
}

/// What a job reports, in order: one Started, any number of Progress, one Finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    Started { id: JobId, kind: JobKind, title: String },
    Progress { id: JobId, fraction: Option<f32>, message: String },
    Finished { id: JobId, status: JobStatus },
}

/// The view of a job that a status bar or a job list shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: JobId,
    pub kind: JobKind,
    pub title: String,
    pub status: JobStatus,
    pub fraction: Option<f32>,
    pub message: String,
}

impl JobInfo {
    /// Folds one event into the list of jobs (used by the app's reducer and by CLI progress).
    pub fn apply(jobs: &mut Vec<JobInfo>, ev: &JobEvent) {
        match ev {
            JobEvent::Started { id, kind, title } => jobs.push(JobInfo {
                id: *id,
                kind: *kind,
                title: title.clone(),
                status: JobStatus::Running,
                fraction: None,
                message: String::new(),
            }),
            JobEvent::Progress { id, fraction, message } => {
                if let Some(j) = jobs.iter_mut().find(|j| j.id == *id) {
                    j.fraction = *fraction;
                    j.message = message.clone();
                }
            }
            JobEvent::Finished { id, status } => {
                if let Some(j) = jobs.iter_mut().find(|j| j.id == *id) {
                    j.status = status.clone();
                }
            }
        }
    }
}

pub type Sink = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// What a running job sees: its id, its cancel flag and a way to report progress.
pub struct JobCtx {
    pub id: JobId,
    cancel: Arc<AtomicBool>,
    sink: Sink,
}

impl JobCtx {
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn progress(&self, fraction: Option<f32>, message: impl Into<String>) {
        (self.sink)(JobEvent::Progress { id: self.id, fraction, message: message.into() });
    }

    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

/// The error a job returns; `Cancelled` is not a failure.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Exists(String),
}

/// Starts jobs on their own threads and cancels them by id.
pub struct Jobs {
    next_id: JobId,
    sink: Sink,
    running: Arc<Mutex<HashMap<JobId, Arc<AtomicBool>>>>,
}

impl Jobs {
    pub fn new(sink: Sink) -> Jobs {
        Jobs { next_id: 1, sink, running: Arc::default() }
    }

    pub fn spawn<F>(&mut self, kind: JobKind, title: impl Into<String>, work: F) -> JobId
    where
        F: FnOnce(&JobCtx) -> Result<(), JobError> + Send + 'static,
    {
        let id = self.next_id;
        self.next_id += 1;
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.lock().unwrap().insert(id, cancel.clone());
        let sink = self.sink.clone();
        let running = self.running.clone();
        sink(JobEvent::Started { id, kind, title: title.into() });
        thread::Builder::new()
            .name(format!("lathe-job-{id}"))
            .spawn(move || {
                let ctx = JobCtx { id, cancel, sink: sink.clone() };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctx)));
                let status = match result {
                    Ok(Ok(())) => JobStatus::Done,
                    Ok(Err(JobError::Cancelled)) => JobStatus::Cancelled,
                    Ok(Err(JobError::Failed(msg))) => JobStatus::Failed(msg),
                    Ok(Err(JobError::Exists(msg))) => JobStatus::Exists(msg),
                    Err(_) => JobStatus::Failed("the job crashed; see logs/lathe.log".into()),
                };
                tracing::info!(job = id, ?status, "job finished");
                running.lock().unwrap().remove(&id);
                sink(JobEvent::Finished { id, status });
            })
            .expect("spawn job thread");
        id
    }

    /// Asks a job to stop; it finishes with `Cancelled` at its next check.
    pub fn cancel(&self, id: JobId) {
        if let Some(flag) = self.running.lock().unwrap().get(&id) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    pub fn cancel_all(&self) {
        for flag in self.running.lock().unwrap().values() {
            flag.store(true, Ordering::Relaxed);
        }
    }

    pub fn running(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}

/// Keeps `threads` cores busy with floating-point work until cancelled or `duration` passes.
pub fn stress(ctx: &JobCtx, threads: usize, duration: Option<Duration>) -> Result<(), JobError> {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut x = 1.000_1_f64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = (x * 1.000_000_1).sqrt() + 0.5;
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let result = loop {
        if ctx.is_cancelled() {
            break Err(JobError::Cancelled);
        }
        let elapsed = start.elapsed();
        if duration.is_some_and(|d| elapsed >= d) {
            break Ok(());
        }
        let fraction = duration.map(|d| (elapsed.as_secs_f32() / d.as_secs_f32()).min(1.0));
        ctx.progress(fraction, format!("{} threads busy for {:.0}s", threads, elapsed.as_secs_f32()));
        thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn collecting() -> (Jobs, mpsc::Receiver<JobEvent>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (Jobs::new(Arc::new(move |e| drop(tx.lock().unwrap().send(e)))), rx)
    }

    fn until_finished(rx: &mpsc::Receiver<JobEvent>) -> Vec<JobInfo> {
        let mut jobs = Vec::new();
        loop {
            let ev = rx.recv_timeout(Duration::from_secs(30)).expect("job event");
            JobInfo::apply(&mut jobs, &ev);
            if matches!(ev, JobEvent::Finished { .. }) {
                return jobs;
            }
        }
    }

    #[test]
    fn a_job_reports_start_progress_and_done() {
        let (mut jobs, rx) = collecting();
        let id = jobs.spawn(JobKind::Export, "write", |ctx| {
            ctx.progress(Some(0.5), "half");
            Ok(())
        });
        let seen = until_finished(&rx);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].id, id);
        assert_eq!(seen[0].fraction, Some(0.5));
        assert_eq!(seen[0].status, JobStatus::Done);
        assert_eq!(jobs.running(), 0);
    }

    #[test]
    fn cancel_stops_a_stress_job() {
        let (mut jobs, rx) = collecting();
        let id = jobs.spawn(JobKind::Stress, "burn", |ctx| stress(ctx, 2, None));
        // Wait for it to be running, then cancel.
        loop {
            if let JobEvent::Progress { .. } = rx.recv_timeout(Duration::from_secs(30)).unwrap() {
                break;
            }
        }
        jobs.cancel(id);
        let mut status = None;
        while status.is_none() {
            if let JobEvent::Finished { status: s, .. } = rx.recv_timeout(Duration::from_secs(30)).unwrap() {
                status = Some(s);
            }
        }
        assert_eq!(status, Some(JobStatus::Cancelled));
    }

    #[test]
    fn failures_and_panics_become_failed_status() {
        let (mut jobs, rx) = collecting();
        jobs.spawn(JobKind::Import, "bad", |_| Err(JobError::Failed("no such file".into())));
        assert_eq!(until_finished(&rx)[0].status, JobStatus::Failed("no such file".into()));
        jobs.spawn(JobKind::Import, "crash", |_| panic!("boom"));
        assert!(matches!(until_finished(&rx)[0].status, JobStatus::Failed(_)));
    }
}
