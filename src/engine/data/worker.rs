//! The catalog's owner thread for the TUI. DuckDB's connection is not shared: this thread opens
//! the workspace catalog (holding the writer lock for the session), answers requests in order and
//! reports plain-data events. Each query carries an id; the app drops results of stale ids.
//! A running query is cancelled through DuckDB's interrupt handle from another thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use duckdb::InterruptHandle;
use serde::{Deserialize, Serialize};

use super::paging::{is_pageable, Shape};
use super::views::{Split, ViewInfo};
use super::{Catalog, DataError, DatasetInfo};
use crate::engine::jobs::{JobInfo, JobStatus};
use crate::engine::workspace::Workspace;

/// Rows fetched per page for the grid.
pub const PAGE: u64 = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataRequest {
    ListDatasets,
    /// Records a job's start or end in lathe.jobs.
    RecordJob(JobInfo),
    Query { id: u64, sql: String },
    Page { id: u64, sql: String, offset: u64 },
    /// The training-set views with a few formatted examples each.
    PreviewViews,
    /// Makes lathe.collections hold these (after a collection changed).
    Collections(Vec<crate::engine::knowledge::store::CollectionInfo>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataEvent {
    /// The catalog is open; `seeded` names the demo datasets imported into a new workspace.
    Opened { seeded: Vec<String> },
    Datasets(Vec<DatasetInfo>),
    /// Each dataset's columns with their types, for the schema browser and completion.
    Schema(TableSchema),
    /// Recent statements, oldest first.
    History(Vec<String>),
    /// The result's columns and its first rows.
    QueryShape { id: u64, shape: Shape, rows: Vec<Vec<String>> },
    QueryCount { id: u64, total: u64, elapsed_ms: f64 },
    QueryPage { id: u64, offset: u64, rows: Vec<Vec<String>> },
    QueryFailed { id: u64, error: String },
    /// Each view with its first examples (train split), rendered as text; or why it fails.
    ViewPreview(ViewPreviews),
    /// The catalog could not be opened; a sentence that says what to do.
    Unavailable(String),
    Failed(String),
}

/// Dropping it closes the catalog cleanly (the thread checkpoints and exits) before returning.
pub struct DataWorker {
    tx: Option<mpsc::Sender<DataRequest>>,
    handle: Option<thread::JoinHandle<()>>,
    /// The statement running now: 0 when none, else its number (each one a new number, so a
    /// cancel aimed at one never interrupts the next).
    running: Arc<AtomicU64>,
    interrupt: Arc<Mutex<Option<Arc<InterruptHandle>>>>,
    /// A connection to the same database for jobs (imports, exports) on their own threads: None
    /// while the catalog opens, then the connection or why there is none.
    for_jobs: JobSlot,
}

type JobSlot = Arc<Mutex<Option<Result<Catalog, String>>>>;

/// A new connection from the slot, if the catalog has opened (or failed to).
fn from_slot(slot: &JobSlot) -> Option<Result<Catalog, DataError>> {
    slot.lock().unwrap().as_ref().map(|c| match c {
        Ok(c) => c.try_clone(),
        Err(e) => Err(DataError::User(e.clone())),
    })
}

/// Each table with its (column, type) pairs.
pub type TableSchema = Vec<(String, Vec<(String, String)>)>;

pub(crate) fn schema(cat: &Catalog) -> Result<TableSchema, DataError> {
    let mut stmt = cat.conn.prepare(
        "SELECT table_name, column_name, data_type FROM duckdb_columns()
         WHERE database_name = current_database() AND schema_name = 'main'
         ORDER BY table_name, column_index",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    let mut out: TableSchema = Vec::new();
    for row in rows {
        let (t, c, ty) = row?;
        match out.last_mut() {
            Some((name, cols)) if *name == t => cols.push((c, ty)),
            _ => out.push((t, vec![(c, ty)])),
        }
    }
    Ok(out)
}

fn run_query(cat: &Catalog, id: u64, sql: &str, emit: &dyn Fn(DataEvent)) -> Result<u64, DataError> {
    let start = Instant::now();
    if is_pageable(sql) {
        let shape = cat.shape(sql)?;
        let rows = cat.page(sql, 0, PAGE)?;
        emit(DataEvent::QueryShape { id, shape, rows });
        let total = cat.count(sql)?;
        emit(DataEvent::QueryCount { id, total, elapsed_ms: start.elapsed().as_secs_f64() * 1e3 });
        Ok(total)
    } else {
        let (shape, rows, total) = cat.run_other(sql)?;
        emit(DataEvent::QueryShape { id, shape, rows });
        emit(DataEvent::QueryCount { id, total, elapsed_ms: start.elapsed().as_secs_f64() * 1e3 });
        Ok(total)
    }
}

/// Inserts or updates a job's row; `session` keeps this process's job ids apart from others'.
fn record_job(cat: &Catalog, session: &str, j: &JobInfo) -> Result<(), DataError> {
    let (status, message) = match &j.status {
        JobStatus::Running => ("running", None),
        JobStatus::Done => ("done", None),
        JobStatus::Cancelled => ("cancelled", None),
        JobStatus::Failed(m) | JobStatus::Exists(m) => ("failed", Some(m.clone())),
    };
    if j.status == JobStatus::Running {
        cat.conn.execute(
            "INSERT OR REPLACE INTO lathe.jobs (session, job_id, kind, title, status) VALUES (?, ?, ?, ?, ?)",
            duckdb::params![session, j.id as i64, j.kind.label(), j.title, status],
        )?;
    } else {
        cat.conn.execute(
            "UPDATE lathe.jobs SET status = ?, message = ?, finished_at = current_timestamp WHERE session = ? AND job_id = ?",
            duckdb::params![status, message, session, j.id as i64],
        )?;
    }
    Ok(())
}

/// Each view by name: its info and first examples as text, or why it fails.
pub type ViewPreviews = Vec<(String, Result<(ViewInfo, Vec<String>), String>)>;

pub(crate) fn preview_views(cat: &Catalog) -> ViewPreviews {
    let names: Vec<String> = cat
        .conn
        .prepare("SELECT name FROM lathe.views ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|n| {
            let r = cat
                .view_info(&n)
                .and_then(|info| Ok((info, cat.examples(&n, Split::Train, Some(3))?.iter().map(|e| e.pretty()).collect())))
                .map_err(|e| e.to_string());
            (n, r)
        })
        .collect()
}

fn interrupted(e: &DataError) -> bool {
    e.to_string().contains("Interrupt")
}

impl DataWorker {
    /// Opens the catalog on a new thread and lists the datasets once it is open.
    pub fn spawn<F>(ws: Workspace, emit: F) -> DataWorker
    where
        F: Fn(DataEvent) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<DataRequest>();
        let running = Arc::new(AtomicU64::new(0));
        let interrupt: Arc<Mutex<Option<Arc<InterruptHandle>>>> = Arc::default();
        let for_jobs: JobSlot = Arc::default();
        let (running2, interrupt2, for_jobs2) = (running.clone(), interrupt.clone(), for_jobs.clone());
        let mut statements = 0u64;
        let mut start_statement = move || {
            statements += 1;
            running2.store(statements, Ordering::SeqCst);
        };
        let running3 = running.clone();
        let end_statement = move || running3.store(0, Ordering::SeqCst);
        let handle = thread::Builder::new()
            .name("lathe-data".into())
            .spawn(move || {
                let cat = match Catalog::open(&ws.catalog_path()) {
                    Ok(c) => c,
                    Err(e) => {
                        // Jobs waiting for the catalog are told at once.
                        *for_jobs2.lock().unwrap() = Some(Err(e.to_string()));
                        return emit(DataEvent::Unavailable(e.to_string()));
                    }
                };
                *interrupt2.lock().unwrap() = Some(cat.conn.interrupt_handle());
                let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let session = format!("{}-{}", since_epoch.as_secs(), std::process::id());
                let seeded = cat.seed_demo();
                // The catalog is this process's alone: a run still marked running was cut off
                // (the workstation or a server killed while it trained), before any run starts here.
                if let Err(e) = cat.mark_interrupted() {
                    emit(DataEvent::Failed(format!("Runs cut off earlier could not be marked interrupted: {e}")));
                }
                // Jobs get the catalog once a new workspace holds its demo datasets: a demo run
                // started at once must find its view.
                *for_jobs2.lock().unwrap() = Some(cat.try_clone().map_err(|e| e.to_string()));
                match seeded {
                    Ok(seeded) => emit(DataEvent::Opened { seeded }),
                    Err(e) => emit(DataEvent::Failed(format!("The demo datasets could not be imported: {e}"))),
                }
                let refresh = |cat: &Catalog| {
                    match cat.list() {
                        Ok(l) => emit(DataEvent::Datasets(l)),
                        Err(e) => emit(DataEvent::Failed(e.to_string())),
                    }
                    if let Ok(s) = schema(cat) {
                        emit(DataEvent::Schema(s));
                    }
                };
                refresh(&cat);
                if let Ok(h) = cat.recent_queries(200) {
                    emit(DataEvent::History(h));
                }
                for req in rx {
                    match req {
                        DataRequest::ListDatasets => refresh(&cat),
                        DataRequest::RecordJob(j) => {
                            if let Err(e) = record_job(&cat, &session, &j) {
                                tracing::warn!("could not record job {}: {e}", j.id);
                            }
                        }
                        DataRequest::Collections(list) => {
                            if let Err(e) = cat.mirror_collections(&list) {
                                tracing::warn!("could not record the collections: {e}");
                            }
                        }
                        DataRequest::Query { id, sql } => {
                            start_statement();
                            let start = Instant::now();
                            let r = run_query(&cat, id, &sql, &emit);
                            end_statement();
                            let ms = start.elapsed().as_secs_f64() * 1e3;
                            cat.record_query(&sql, r.is_ok(), r.as_ref().ok().copied(), ms);
                            if let Err(e) = &r {
                                let error = if interrupted(e) { "Query cancelled.".to_string() } else { e.to_string() };
                                emit(DataEvent::QueryFailed { id, error });
                            }
                            if !is_pageable(&sql) {
                                // DDL may have made or dropped tables.
                                refresh(&cat);
                            }
                        }
                        DataRequest::PreviewViews => emit(DataEvent::ViewPreview(preview_views(&cat))),
                        DataRequest::Page { id, sql, offset } => {
                            start_statement();
                            let r = cat.page(&sql, offset, PAGE);
                            end_statement();
                            match r {
                                Ok(rows) => emit(DataEvent::QueryPage { id, offset, rows }),
                                Err(e) => emit(DataEvent::QueryFailed { id, error: e.to_string() }),
                            }
                        }
                    }
                }
            })
            .expect("spawn data thread");
        DataWorker { tx: Some(tx), handle: Some(handle), running, interrupt, for_jobs }
    }

    /// A new connection to the open catalog for a job thread; None until the catalog is open.
    pub fn job_catalog(&self) -> Option<Result<Catalog, DataError>> {
        from_slot(&self.for_jobs)
    }

    /// Waits (on the caller's thread, so never the UI's) for the catalog to be ready for jobs, up
    /// to `max`; Err if it failed to open or did not open in time.
    pub fn catalog_waiter(&self) -> impl FnOnce(Duration) -> Result<Catalog, DataError> + Send + 'static {
        let slot = self.for_jobs.clone();
        move |max| {
            let start = Instant::now();
            loop {
                if let Some(c) = from_slot(&slot) {
                    return c;
                }
                if start.elapsed() >= max {
                    return Err(DataError::User(format!("the catalog did not open within {} s; see logs/lathe.log", max.as_secs())));
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// A sender of requests that outlives a borrow of the worker (the job recorder's). The worker
    /// ends only when every sender is gone: drop it before the worker.
    pub fn requests(&self) -> Option<mpsc::Sender<DataRequest>> {
        self.tx.clone()
    }

    pub fn send(&self, req: DataRequest) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(req);
        }
    }

    /// Interrupts the running query. An interrupt that lands before execution starts is lost,
    /// so it is repeated while that statement runs (at most a few seconds); the next statement
    /// is not touched.
    pub fn cancel(&self) {
        let Some(handle) = self.interrupt.lock().unwrap().clone() else { return };
        let running = self.running.clone();
        let target = running.load(Ordering::SeqCst);
        if target == 0 {
            return;
        }
        thread::spawn(move || {
            let start = Instant::now();
            while running.load(Ordering::SeqCst) == target && start.elapsed() < Duration::from_secs(5) {
                handle.interrupt();
                thread::sleep(Duration::from_millis(10));
            }
        });
    }
}

impl Drop for DataWorker {
    fn drop(&mut self) {
        drop(self.for_jobs.lock().unwrap().take());
        // Stop a long query first, or joining would wait for it.
        if self.running.load(Ordering::SeqCst) != 0 {
            self.cancel();
        }
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> (DataWorker, mpsc::Receiver<DataEvent>) {
        let d = std::env::temp_dir().join(format!("lathe-worker-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let ws = Workspace::open(&d).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (DataWorker::spawn(ws, move |e| drop(tx.lock().unwrap().send(e))), rx)
    }

    #[test]
    fn jobs_get_the_catalog_once_the_demo_datasets_are_in() {
        // A demo run started the moment a new workspace opens must find its view.
        let (w, _rx) = worker("jobs-wait");
        let cat = w.catalog_waiter()(Duration::from_secs(60)).unwrap();
        assert!(cat.dataset_exists("instruct").unwrap() && cat.dataset_exists("chat").unwrap());
    }

    #[test]
    fn a_catalog_that_cannot_open_is_reported_to_waiting_jobs() {
        // A directory where the catalog file should be: opening fails, and a job waiting for the
        // catalog hears why instead of waiting out its minute (quitting waits for the saver).
        let d = std::env::temp_dir().join(format!("lathe-worker-{}-unopenable", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let ws = Workspace::open(&d).unwrap();
        std::fs::create_dir_all(ws.catalog_path()).unwrap();
        let w = DataWorker::spawn(ws, |_| {});
        let e = w.catalog_waiter()(Duration::from_secs(60)).err().expect("a directory does not open as a catalog");
        assert!(!e.to_string().contains("did not open within"), "the waiter was not told why: {e}");
        assert!(w.job_catalog().is_some_and(|c| c.is_err()));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn next(rx: &mpsc::Receiver<DataEvent>, pred: impl Fn(&DataEvent) -> bool) -> DataEvent {
        loop {
            let e = rx.recv_timeout(Duration::from_secs(60)).expect("an event");
            if pred(&e) {
                return e;
            }
        }
    }

    #[test]
    fn a_query_gives_shape_count_and_pages() {
        let (w, rx) = worker("pages");
        w.send(DataRequest::Query { id: 1, sql: "select * from instruct order by id".into() });
        let DataEvent::QueryShape { shape, rows, .. } = next(&rx, |e| matches!(e, DataEvent::QueryShape { .. })) else { unreachable!() };
        assert_eq!(shape.columns, ["id", "task", "instruction", "input", "output"]);
        assert_eq!(rows.len() as u64, PAGE);
        let DataEvent::QueryCount { total, .. } = next(&rx, |e| matches!(e, DataEvent::QueryCount { .. })) else { unreachable!() };
        assert_eq!(total, 8000);
        w.send(DataRequest::Page { id: 1, sql: "select * from instruct order by id".into(), offset: 7900 });
        let DataEvent::QueryPage { offset, rows, .. } = next(&rx, |e| matches!(e, DataEvent::QueryPage { .. })) else { unreachable!() };
        assert_eq!((offset, rows.len(), rows[0][0].as_str()), (7900, 100, "7900"));
        // DDL refreshes the datasets.
        w.send(DataRequest::Query { id: 2, sql: "create table t2 as select 1 as a".into() });
        let DataEvent::Datasets(_) = next(&rx, |e| matches!(e, DataEvent::Datasets(_))) else { unreachable!() };
        let DataEvent::Schema(s) = next(&rx, |e| matches!(e, DataEvent::Schema(_))) else { unreachable!() };
        assert!(s.iter().any(|(t, _)| t == "t2"));
    }

    #[test]
    fn jobs_are_recorded_in_the_catalog() {
        use crate::engine::jobs::JobKind;
        let (w, rx) = worker("jobs");
        let mut j = JobInfo { id: 3, kind: JobKind::Export, title: "export demo".into(), status: JobStatus::Running, fraction: None, message: String::new() };
        w.send(DataRequest::RecordJob(j.clone()));
        j.status = JobStatus::Failed("disk full".into());
        w.send(DataRequest::RecordJob(j));
        w.send(DataRequest::Query { id: 1, sql: "select kind, title, status, message, finished_at is not null as ended from lathe.jobs".into() });
        let DataEvent::QueryShape { rows, .. } = next(&rx, |e| matches!(e, DataEvent::QueryShape { .. })) else { unreachable!() };
        assert_eq!(rows, vec![vec!["export", "export demo", "failed", "disk full", "true"]]);
    }

    #[test]
    fn views_are_previewed_with_examples() {
        let (w, rx) = worker("views");
        w.send(DataRequest::PreviewViews);
        let DataEvent::ViewPreview(v) = next(&rx, |e| matches!(e, DataEvent::ViewPreview(_))) else { unreachable!() };
        let names: Vec<_> = v.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["chat", "instruct"]);
        let (info, examples) = v[1].1.as_ref().unwrap();
        assert_eq!(info.train_rows + info.eval_rows, 8000);
        assert_eq!(examples.len(), 3);
        assert!(examples[0].starts_with("instruction: "));
    }

    #[test]
    fn a_long_query_is_cancelled() {
        let (w, rx) = worker("cancel");
        next(&rx, |e| matches!(e, DataEvent::History(_)));
        // A cross join big enough to run for minutes.
        w.send(DataRequest::Query { id: 9, sql: "select count(*) from range(100000000) a, range(1000) b where a.range * b.range % 7 = 3".into() });
        // Cancel acts on a running query: on a loaded machine the worker may not have started it
        // yet, so the test asks again until the query says it was cancelled.
        let start = Instant::now();
        let (id, error) = loop {
            w.cancel();
            match rx.recv_timeout(Duration::from_millis(300)) {
                Ok(DataEvent::QueryFailed { id, error }) => break (id, error),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => assert!(start.elapsed() < Duration::from_secs(60), "the query was never cancelled"),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!((id, error.as_str()), (9, "Query cancelled."));
        // The worker still answers.
        w.send(DataRequest::Query { id: 10, sql: "select 42".into() });
        let DataEvent::QueryCount { total, .. } = next(&rx, |e| matches!(e, DataEvent::QueryCount { .. })) else { unreachable!() };
        assert_eq!(total, 1);
    }
}
