//! The service as a front end sees it: calls return at once, work reports events, and every job
//! is recorded in `lathe.jobs` by the service itself, whoever started it.

use std::sync::mpsc;
use std::time::Duration;

use lathe::engine::data::Catalog;
use lathe::engine::jobs::{JobEvent, JobStatus};
use lathe::engine::workspace::Workspace;
use lathe::service::{Event, Service, ServiceError, Settings};

fn workspace(name: &str) -> Workspace {
    let dir = std::env::temp_dir().join(format!("lathe-service-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Workspace::open(&dir).unwrap()
}

/// Events until `done` says stop (at most 60 s).
fn until(rx: &mpsc::Receiver<Event>, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let ev = rx.recv_timeout(Duration::from_secs(60)).expect("an event within 60 s");
        let stop = done(&ev);
        seen.push(ev);
        if stop {
            return seen;
        }
    }
}

#[test]
fn jobs_record_themselves_and_a_taken_name_is_a_typed_error() {
    let ws = workspace("jobs");
    let (tx, rx) = mpsc::channel();
    let mut service = Service::start(Some(&ws), Settings::default(), move |ev| {
        let _ = tx.send(ev);
    });
    // An import of a name the demo data already holds ends as `Exists`, not as a message to parse.
    let csv = ws.root.join("instruct.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let id = service.import(csv.display().to_string(), None, false).expect("a workspace");
    let seen = until(&rx, |e| matches!(e, Event::Job(JobEvent::Finished { id: j, .. }) if *j == id));
    let Some(Event::Job(JobEvent::Finished { status, .. })) = seen.last() else { unreachable!() };
    assert!(matches!(status, JobStatus::Exists(m) if m.contains("--replace")), "{status:?}");
    // A short stress job runs to its end.
    let id = service.stress(1, Some(0));
    until(&rx, |e| matches!(e, Event::Job(JobEvent::Finished { id: j, status: JobStatus::Done }) if *j == id));
    // Closing the service writes what was queued; the catalog then holds both jobs.
    drop(service);
    let cat = Catalog::open_workspace(&ws).unwrap();
    let mut stmt = cat.conn.prepare("SELECT kind, status FROM lathe.jobs ORDER BY job_id").unwrap();
    let rows: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows, [("import".to_string(), "failed".to_string()), ("stress".to_string(), "done".to_string())]);
}

#[test]
fn the_catalog_of_a_locked_workspace_is_a_busy_error() {
    let ws = workspace("locked");
    // A second process holds the catalog (DuckDB allows one writer process).
    let holder = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(["--home", ws.root.to_str().unwrap(), "sql", "SELECT 1"])
        .output()
        .unwrap();
    assert!(holder.status.success());
    let _held = Catalog::open_workspace(&ws).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(["--home", ws.root.to_str().unwrap(), "train", "--demo", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&child.stderr);
    assert!(!child.status.success() && err.contains("open in another process"), "{err}");
    // In this process the same kind of failure is typed, for a front end to word its own way.
    let e: ServiceError = lathe::engine::data::DataError::Locked { path: ws.catalog_path(), holder: "pid 1".into() }.into();
    assert!(matches!(e, ServiceError::Busy(_)));
}
