//! lathe's own API against a real `lathe serve`: datasets, read-only SQL (rows, limits, the
//! statements it refuses, nothing written), runs and conversations (404s for unknown ids), a
//! knowledge collection searched with its own model, jobs, and the events stream ending when
//! the server stops.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::{error_of, fixture, scratch, Server};

fn message(v: &serde_json::Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

fn lathe(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(home).args(args).output().unwrap()
}

#[test]
fn the_workspace_over_its_own_api() {
    let root = scratch("workspace-api");
    let (home, docs) = (root.join("ws"), root.join("docs"));
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("garden.md"), "# Garden\n\nTomatoes need full sun and deep watering twice a week.\n\n## Pests\n\nAphids gather under the leaves.\n").unwrap();
    std::fs::write(docs.join("bread.txt"), "Sourdough rises overnight in a cool kitchen.\n").unwrap();
    // A collection made before the server owns the workspace.
    let model = fixture("tiny-bert-mean");
    for args in [vec!["kb", "create", "notes", "--model", model.to_str().unwrap()], vec!["kb", "add", "notes", docs.to_str().unwrap()]] {
        let o = lathe(&home, &args);
        assert!(o.status.success(), "{:?}", String::from_utf8_lossy(&o.stderr));
    }
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);

    // Datasets: the bundled demo ones.
    let (status, v) = s.get("/api/datasets");
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v["data"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["chat", "instruct"]);
    assert_eq!(v["data"][1]["rows"], 8000);

    // SQL: one SELECT, rows as objects, the limit said.
    let (status, v) = s.post("/api/sql", &json!({"sql": "select count(*) as n from instruct"}));
    assert_eq!((status, &v["rows"][0]["n"], &v["truncated"]), (200, &json!(8000), &json!(false)), "{v}");
    let (status, v) = s.post("/api/sql", &json!({"sql": "select name from lathe.datasets order by name", "limit": 1}));
    assert_eq!((status, v["rows"].as_array().unwrap().len(), &v["truncated"]), (200, 1, &json!(true)), "{v}");
    assert_eq!(v["columns"][0]["name"], "name");
    let outside = root.join("secret.csv");
    std::fs::write(&outside, "a\n1\n").unwrap();
    for q in [
        "delete from instruct".to_string(),
        "drop table chat".into(),
        format!("copy instruct to '{}'", root.join("out.csv").display()),
        format!("select * from '{}'", outside.display()),
        format!("select * from read_csv('{}')", outside.display()),
        format!("attach '{}' as o", root.join("o.duckdb").display()),
        "select getenv('HOME')".into(),
        "select 1; drop table chat".into(),
    ] {
        let (status, v) = s.post("/api/sql", &json!({"sql": q}));
        assert_eq!((status, error_of(&v).1), (403, "refused"), "{q}: {v}");
        assert!(message(&v).contains("only one SELECT over the workspace's tables and views"), "{q}: {v}");
    }
    assert!(!root.join("out.csv").exists() && !root.join("o.duckdb").exists());
    let (_, v) = s.post("/api/sql", &json!({"sql": "select count(*) as n from instruct"}));
    assert_eq!(v["rows"][0]["n"], 8000, "a refused statement changed the data");
    let (status, v) = s.post("/api/sql", &json!({"sql": "select count(*) from range(100000000000) a, range(100000000000) b", "timeout_s": 0.5}));
    assert_eq!(status, 400, "{v}");
    assert!(message(&v).contains("limit"), "{v}");
    let (status, v) = s.post("/api/sql", &json!({"sql": "selec 1"}));
    assert!(status == 400 && message(&v).starts_with("SQL error"), "{v}");
    let (status, v) = s.post("/api/sql", &json!({"sql": "select 1", "limit": 0}));
    assert_eq!((status, error_of(&v).1), (400, "invalid_value"), "{v}");
    let (status, v) = s.post("/api/sql", &json!({"query": "select 1"}));
    assert!(status == 400 && message(&v).contains("sql is required"), "{v}");

    // Runs and conversations: none yet; an unknown id is a 404 that says where to look.
    let (status, v) = s.get("/api/runs");
    assert_eq!((status, &v["data"]), (200, &json!([])), "{v}");
    let (status, v) = s.get("/api/runs/r-nope");
    assert_eq!((status, error_of(&v).1), (404, "not_found"), "{v}");
    let (status, v) = s.get("/api/runs/r-nope/metrics");
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.get("/api/conversations");
    assert_eq!((status, &v["data"]), (200, &json!([])), "{v}");
    let (status, v) = s.get("/api/conversations/c-nope/markdown");
    assert_eq!((status, error_of(&v).1), (404, "not_found"), "{v}");

    // Knowledge: the collection and a search with its own model.
    let (status, v) = s.get("/api/collections");
    assert_eq!((status, &v["data"][0]["name"], &v["data"][0]["documents"]), (200, &json!("notes"), &json!(2)), "{v}");
    let (status, v) = s.post("/api/collections/notes/search", &json!({"query": "aphids", "mode": "text", "k": 1}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 1);
    assert!(v["hits"][0]["path"].as_str().unwrap().ends_with("garden.md") && v["hits"][0]["headings"] == "Garden > Pests", "{v}");
    let (status, v) = s.post("/api/collections/notes/search", &json!({"query": "bread that rises overnight"}));
    assert_eq!((status, &v["mode"]), (200, &json!("hybrid")), "{v}");
    let (status, v) = s.post("/api/collections/notes/search", &json!({"query": "x", "mode": "fuzzy"}));
    assert_eq!((status, error_of(&v).1), (400, "invalid_value"), "{v}");
    let (status, v) = s.post("/api/collections/nope/search", &json!({"query": "x"}));
    assert_eq!(status, 404, "{v}");

    // What a workstation attached to the server asks for: a window of a result with its count,
    // the tables, the views, the library, the server's figures, a run's plan, a conversation
    // saved and read back, a collection dropped.
    let (status, v) = s.post("/api/sql", &json!({"sql": "select id from instruct order by id", "limit": 3, "offset": 7998, "count": true}));
    assert_eq!((status, &v["total"], v["rows"].as_array().map(Vec::len)), (200, &json!(8000), Some(2)), "{v}");
    assert_eq!(v["rows"][0]["id"], 7998, "{v}");
    let (status, v) = s.post("/api/sql", &json!({"sql": "select 1", "offset": -1}));
    assert_eq!((status, error_of(&v).1), (400, "invalid_value"), "{v}");
    let (status, v) = s.get("/api/schema");
    let instruct = v["data"].as_array().unwrap().iter().find(|t| t["name"] == "instruct").cloned().unwrap_or_default();
    assert!(status == 200 && instruct["columns"].as_array().unwrap().iter().any(|c| c["name"] == "output"), "{v}");
    let (status, v) = s.get("/api/views");
    assert!(status == 200 && v["data"].is_array(), "{v}");
    let (status, v) = s.get("/api/models");
    assert!(status == 200 && v["data"].is_array(), "{v}");
    let (status, v) = s.get("/api/server");
    assert_eq!((status, &v["pid"], &v["jobs_running"], &v["address"]), (200, &json!(s.child.id()), &json!(0), &json!(s.addr.to_string())), "{v}");
    let (status, v) = s.post("/api/runs/check", &json!({"config": {"max_steps": 3}}));
    assert!(status == 200 && v["train_examples"].as_u64().unwrap_or(0) > 0 && v["memory_needed"].as_u64().unwrap_or(0) > 0, "{v}");
    let (status, v) = s.post("/api/runs/check", &json!({"model": "nope", "view": "instruct"}));
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.post("/api/runs/check", &json!({"config": {"no_such_setting": 1}}));
    assert!(status == 400 && message(&v).contains("no_such_setting"), "{v}");
    let (status, v) = s.post("/api/training/pause", &json!({"paused": "yes"}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.post("/api/training/pause", &json!({"paused": false}));
    assert_eq!((status, &v["paused"]), (200, &json!(false)), "{v}");
    let (status, v) = s.post("/api/exports", &json!({}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.post("/api/exports", &json!({"run": "r-nope"}));
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.post("/api/exports", &json!({"model": "nope", "quant": "q4_k_m"}));
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.post("/api/exports", &json!({"run": "r-nope", "quant": "q2"}));
    assert_eq!(status, 400, "{v}");
    let chat = json!({"id": "c-attached", "title": "Soil", "model": "tiny", "system": null, "turns": [{"role": "user", "text": "Is clay soil good?"}, {"role": "assistant", "text": "It holds water."}],
        "sampling": {"temperature": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "repeat_last_n": 64, "seed": 1, "max_tokens": 64, "stop": []}});
    let (status, v) = s.request("PUT", "/api/conversations/c-attached", &[("content-type", "application/json")], chat.to_string().as_bytes());
    assert_eq!((status, &v["saved"]), (200, &json!(true)), "{v}");
    let (status, v) = s.get("/api/conversations/c-attached");
    assert_eq!((status, &v["turns"][1]["text"]), (200, &json!("It holds water.")), "{v}");
    let (status, v) = s.request("PUT", "/api/conversations/c-other", &[("content-type", "application/json")], chat.to_string().as_bytes());
    assert!(status == 400 && message(&v).contains("not the path's"), "{v}");
    let (status, v) = s.request("PUT", "/api/conversations/c-x", &[("content-type", "application/json")], br#"{"id": "c-x"}"#);
    assert!(status == 400 && message(&v).contains("not a conversation"), "{v}");
    let (status, v) = s.request("DELETE", "/api/collections/nope", &[], b"");
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.request("DELETE", "/api/collections/notes", &[], b"");
    assert_eq!((status, &v["dropped"]), (200, &json!(true)), "{v}");
    let (_, v) = s.get("/api/collections");
    assert_eq!(v["data"], json!([]), "{v}");

    // Jobs: none run here yet; an unknown one cannot be cancelled.
    let (status, v) = s.get("/api/jobs");
    assert_eq!((status, &v["data"]), (200, &json!([])), "{v}");
    let (status, v) = s.post("/api/jobs/41/cancel", &json!({}));
    assert_eq!(status, 404, "{v}");

    // The CLI on the same workspace goes through the server instead of failing on the lock.
    let out = |o: &std::process::Output| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    let (ok, stdout, stderr) = out(&lathe(&home, &["sql", "select task, count(*) as n from instruct group by task order by task limit 2"]));
    assert!(ok && stdout.contains("task (Utf8) │ n (Int64)") && stdout.contains("(2 rows)"), "{stdout}{stderr}");
    let (ok, stdout, _) = out(&lathe(&home, &["sql", "select name from lathe.datasets order by name", "--format", "csv"]));
    assert!(ok && stdout == "name\nchat\ninstruct\n", "{stdout:?}");
    let (ok, stdout, _) = out(&lathe(&home, &["data", "list"]));
    assert!(ok && stdout.contains("instruct") && stdout.contains("8000"), "{stdout}");
    let (ok, stdout, _) = out(&lathe(&home, &["runs", "list"]));
    assert!(ok && stdout.contains("no runs yet"), "{stdout}");
    let (ok, _, stderr) = out(&lathe(&home, &["runs", "show", "r-nope"]));
    assert!(!ok && stderr.contains("There is no run r-nope"), "{stderr}");
    let pid = s.child.id().to_string();
    let (ok, _, stderr) = out(&lathe(&home, &["sql", "drop table chat"]));
    assert!(!ok && stderr.contains("not a SELECT") && stderr.contains(&format!("kill -TERM {pid}")), "{stderr}");
    let (_, v) = s.post("/api/sql", &json!({"sql": "select count(*) as n from chat"}));
    assert_eq!(v["rows"][0]["n"], 1500, "a refused statement changed the data");

    // The events stream stays open (keep-alive comments) and ends when the server stops.
    let mut events = TcpStream::connect(s.addr).unwrap();
    events.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(events, "GET /api/events HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", s.addr).unwrap();
    let mut r = BufReader::new(events);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    assert!(status_line.contains(" 200 "), "{status_line}");
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.to_ascii_lowercase().contains("text/event-stream"), "{head}");
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status} while a client read its events");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A job's events until it finishes (`GET /api/jobs/{id}/events`): the Finished event's status.
fn job_end(addr: std::net::SocketAddr, id: u64) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET /api/jobs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    for line in BufReader::new(s).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            if let Some(status) = v.pointer("/Job/Finished/status") {
                return status.clone();
            }
        }
    }
    panic!("job {id}'s events ended without its end");
}

/// Imports and ingest started over the API run as jobs, and read only inside `--allow` folders.
#[test]
fn jobs_read_files_only_inside_the_allowed_folders() {
    let root = scratch("workspace-jobs");
    let (home, allowed, outside) = (root.join("ws"), root.join("allowed"), root.join("outside"));
    std::fs::create_dir_all(allowed.join("docs")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("plants.csv"), "name,water\nfern,often\ncactus,rarely\n").unwrap();
    std::fs::write(outside.join("secret.csv"), "key\nhunter2\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.csv"), allowed.join("link.csv")).unwrap();
    std::fs::write(allowed.join("docs/orbit.md"), "# Orbits\n\nSaturn's rings are made of ice and rock.\n").unwrap();
    let model = fixture("tiny-bert-mean");
    let o = lathe(&home, &["kb", "create", "notes", "--model", model.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", String::from_utf8_lossy(&o.stderr));
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1", "--allow", allowed.to_str().unwrap()], None);

    // An import inside the folder: a job that ends done, and the dataset is there.
    let (status, v) = s.post("/api/datasets/import", &json!({"path": allowed.join("plants.csv")}));
    assert_eq!(status, 202, "{v}");
    let job = v["job"].as_u64().unwrap();
    assert_eq!(job_end(s.addr, job), json!("done"));
    let (_, v) = s.post("/api/sql", &json!({"sql": "select name from plants order by name"}));
    assert_eq!(v["rows"], json!([{"name": "cactus"}, {"name": "fern"}]), "{v}");
    let (_, v) = s.get("/api/jobs");
    assert_eq!((&v["data"][0]["id"], &v["data"][0]["kind"], &v["data"][0]["status"]), (&json!(job), &json!("import"), &json!("done")), "{v}");
    // Again without replace: the job says it exists; its events, asked after its end, end at once.
    let (_, v) = s.post("/api/datasets/import", &json!({"path": allowed.join("plants.csv")}));
    let again = v["job"].as_u64().unwrap();
    assert!(job_end(s.addr, again)["exists"].is_string());
    assert!(job_end(s.addr, again)["exists"].is_string());
    let (status, v) = s.post(&format!("/api/jobs/{again}/cancel"), &json!({}));
    assert_eq!(status, 400, "an ended job cannot be cancelled: {v}");

    // Outside, through a link, relative, a pattern, nothing there: each refused before any job.
    for (path, want) in [
        (outside.join("secret.csv").display().to_string(), (403, "refused")),
        (allowed.join("link.csv").display().to_string(), (403, "refused")),
        (allowed.join("../outside/secret.csv").display().to_string(), (403, "refused")),
        ("plants.csv".to_string(), (400, "invalid_value")),
        (allowed.join("*.csv").display().to_string(), (400, "invalid_value")),
        (allowed.join("gone.csv").display().to_string(), (404, "not_found")),
    ] {
        let (status, v) = s.post("/api/datasets/import", &json!({"path": path}));
        assert_eq!((status, error_of(&v).1), want, "{path}: {v}");
    }
    let (_, v) = s.get("/api/jobs");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "a refused request started a job: {v}");
    let (_, v) = s.post("/api/sql", &json!({"sql": "select count(*) as n from lathe.datasets where name = 'secret'"}));
    assert_eq!(v["rows"][0]["n"], 0);

    // Ingest: the folder's documents into the collection, then found by search.
    let (status, v) = s.post("/api/collections/notes/ingest", &json!({"paths": [allowed.join("docs")]}));
    assert_eq!(status, 202, "{v}");
    assert_eq!(job_end(s.addr, v["job"].as_u64().unwrap()), json!("done"));
    let (_, v) = s.post("/api/collections/notes/search", &json!({"query": "rings", "mode": "text"}));
    assert!(v["hits"][0]["path"].as_str().unwrap().ends_with("orbit.md"), "{v}");
    let (status, v) = s.post("/api/collections/notes/ingest", &json!({"paths": [outside]}));
    assert_eq!((status, error_of(&v).1), (403, "refused"), "{v}");
    let (status, v) = s.post("/api/collections/nope/ingest", &json!({}));
    assert_eq!(status, 404, "{v}");

    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Without --allow a server reads no files for its clients.
#[test]
fn without_allowed_folders_no_request_names_a_file() {
    let root = scratch("workspace-noallow");
    let home = root.join("ws");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.csv"), "x\n1\n").unwrap();
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let (status, v) = s.post("/api/datasets/import", &json!({"path": root.join("a.csv")}));
    assert_eq!((status, error_of(&v).1), (403, "refused"), "{v}");
    assert!(message(&v).contains("--allow DIR"), "{v}");
    let status = s.stop();
    assert!(status.success());
    std::fs::remove_dir_all(&root).unwrap();
}

/// `lathe serve --detach` returns once the server listens, in a session of its own (so a closed
/// terminal sends it nothing), and the server answers until SIGTERM.
#[test]
fn detach_leaves_the_server_running_on_its_own() {
    let root = scratch("detach");
    let home = root.join("ws");
    let o = lathe(&home, &["serve", "--detach", "--listen", "127.0.0.1:0", "--threads", "1"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "{stdout}{stderr}");
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(home.join("serve.json")).unwrap()).unwrap();
    let pid = record["pid"].as_u64().unwrap() as libc::pid_t;
    struct Kill(libc::pid_t);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: the server this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = Kill(pid);
    assert!(stdout.contains(&format!("pid {pid}")) && stdout.contains(record["address"].as_str().unwrap()), "{stdout}");
    // Its own session: not this test's, so a hang-up of the terminal that started it misses it.
    // SAFETY: getsid only reads.
    assert_eq!(unsafe { libc::getsid(pid) }, pid, "the server leads its own session");
    let addr: std::net::SocketAddr = record["address"].as_str().unwrap().parse().unwrap();
    let (status, _) = super::request(addr, "GET", "/health", &[], b"");
    assert_eq!(status, 200);
    // A second one is refused while the first runs.
    let o = lathe(&home, &["serve", "--detach", "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(&format!("kill -TERM {pid}")), "{o:?}");
    // SAFETY: the server this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = std::time::Instant::now();
    while home.join("serve.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "the detached server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::read_to_string(home.join("logs/serve.log")).unwrap().contains("listening on"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// A run started through the server trains in the server; SIGKILL cuts it off, the next server
/// shows it interrupted, and a resume through the API finishes it from its last checkpoint.
#[test]
fn a_run_killed_with_its_server_resumes_through_the_next_one() {
    let root = scratch("kill-train");
    let home = root.join("ws");
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let (status, v) = s.post("/api/runs", &json!({"config": {"max_steps": 40, "checkpoint_every": 4, "eval_every": 1000, "exact_match": 0}}));
    assert_eq!(status, 202, "{v}");
    let (status, v) = s.post("/api/runs", &json!({"config": {"max_stepz": 3}}));
    assert!(status == 400 && message(&v).contains("max_stepz"), "{v}");
    // Wait for a checkpoint or two, then kill the server mid-run.
    let start = std::time::Instant::now();
    let id = loop {
        let (_, v) = s.get("/api/runs");
        if let Some(r) = v["data"].as_array().and_then(|a| a.first()) {
            if r["step"].as_i64().unwrap_or(0) >= 9 {
                break r["id"].as_str().unwrap().to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the run did not reach step 9: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut s = s;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let (_, v) = s.get(&format!("/api/runs/{id}"));
    assert_eq!(v["status"], "interrupted", "{v}");
    let cut_at = v["step"].as_i64().unwrap();
    assert!(cut_at < 40, "{v}");
    let (status, v) = s.post("/api/runs", &json!({"resume": id, "config": {"lr": 1}}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.post("/api/runs", &json!({"resume": id}));
    assert_eq!(status, 202, "{v}");
    assert_eq!(job_end(s.addr, v["job"].as_u64().unwrap()), json!("done"));
    let (_, v) = s.get(&format!("/api/runs/{id}"));
    assert_eq!((&v["status"], &v["step"]), (&json!("completed"), &json!(40)), "{v}");
    let (_, m) = s.get(&format!("/api/runs/{id}/metrics"));
    let steps: Vec<i64> = m["data"].as_array().unwrap().iter().filter(|r| r["kind"] == "train").map(|r| r["step"].as_i64().unwrap()).collect();
    assert_eq!(steps.last(), Some(&40));
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "the metrics repeat or go back after the resume: {steps:?}");
    let status = s.stop();
    assert!(status.success());
    std::fs::remove_dir_all(&root).unwrap();
}

/// The CLI's job commands with a server owning the workspace: each runs as a job in the server
/// and prints what it prints in process (import, a training run's steps and end, an export, a
/// collection made, filled and searched); what the server cannot do for a client says so.
#[test]
fn the_cli_runs_its_jobs_in_the_server() {
    let root = scratch("workspace-cli-jobs");
    let (home, allowed) = (root.join("ws"), root.join("allowed"));
    std::fs::create_dir_all(allowed.join("docs")).unwrap();
    std::fs::write(allowed.join("plants.csv"), "name,water\nfern,often\ncactus,rarely\n").unwrap();
    std::fs::write(allowed.join("docs/orbit.md"), "# Orbits\n\nSaturn's rings are made of ice and rock.\n").unwrap();
    let model = fixture("tiny-bert-mean");
    let o = lathe(&home, &["kb", "create", "notes", "--model", model.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", String::from_utf8_lossy(&o.stderr));
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1", "--allow", allowed.to_str().unwrap()], None);
    let out = |args: &[&str]| {
        let o = lathe(&home, args);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };

    let (ok, stdout, stderr) = out(&["data", "import", allowed.join("plants.csv").to_str().unwrap(), "--name", "garden"]);
    assert!(ok && stdout.contains("Imported garden: 2 rows, 2 columns"), "{stdout}{stderr}");
    let (ok, _, stderr) = out(&["data", "import", allowed.join("plants.csv").to_str().unwrap(), "--name", "garden"]);
    assert!(!ok && stderr.contains("garden"), "{stderr}");
    // The CLI runs as the server's own user (it brings the owner's token from the record only
    // that user can read), so it may name any file; a client without the token may not.
    let elsewhere = root.join("elsewhere.csv");
    std::fs::write(&elsewhere, "a\n1\n").unwrap();
    let (ok, stdout, stderr) = out(&["data", "import", elsewhere.to_str().unwrap()]);
    assert!(ok && stdout.contains("Imported elsewhere"), "{stdout}{stderr}");
    let (status, v) = s.post("/api/datasets/import", &json!({"path": elsewhere, "replace": true}));
    assert_eq!((status, error_of(&v).1), (403, "refused"), "{v}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(home.join("serve.json")).unwrap().permissions().mode() & 0o077, 0, "the owner's record is readable by others");

    // A run in the server: its plan, its steps and its end print here.
    let (ok, stdout, stderr) = out(&["train", "--demo", "--max-steps", "3", "--dry-run"]);
    assert!(ok && stdout.contains("memory estimate") && !stdout.contains("step"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = out(&["train", "--demo", "--max-steps", "3"]);
    assert!(ok && stdout.contains("memory estimate") && stdout.contains("completed after 3 steps"), "{stdout}{stderr}");
    assert!(stderr.contains("training in lathe serve"), "{stderr}");
    let run = stdout.lines().last().unwrap().split_whitespace().nth(1).unwrap().to_string();
    let (_, v) = s.get(&format!("/api/runs/{run}"));
    assert_eq!((&v["status"], &v["step"]), (&json!("completed"), &json!(3)), "{v}");
    let (ok, _, stderr) = out(&["train", "--model", root.join("nowhere").to_str().unwrap(), "--view", "instruct"]);
    assert!(!ok && stderr.contains("in the library"), "{stderr}");

    // Its export, into the workspace's models/ folder; the server picks the path.
    let (ok, stdout, stderr) = out(&["export", &run, "--quant", "q8_0"]);
    let gguf = home.join(format!("models/run-{run}-q8_0.gguf"));
    assert!(ok && stdout.contains("wrote") && gguf.exists(), "{stdout}{stderr}");
    let (ok, _, stderr) = out(&["export", &run, "--out", root.join("x.gguf").to_str().unwrap()]);
    assert!(!ok && stderr.contains("drop --out"), "{stderr}");

    // Its quantization report, made and measured in the server, kept in its catalog; a client
    // without the owner's token names no text outside the allowed folders.
    let (ok, stdout, stderr) = out(&["quant", "report", &run, "--view", "instruct", "--types", "q8_0,q4_0", "--exact", "2", "--eval-tokens", "300"]);
    assert!(ok && stdout.contains("q4_0+imatrix") && stdout.contains("files in"), "{stdout}{stderr}");
    let (_, v) = s.get("/api/quant-evals");
    let got: Vec<(&str, bool)> = v["data"].as_array().unwrap().iter().map(|r| (r["quant"].as_str().unwrap(), r["imatrix"].as_bool().unwrap())).collect();
    assert_eq!(got, [("f16", false), ("q8_0", false), ("q4_0", false), ("q4_0", true)], "{v}");
    let (ok, _, stderr) = out(&["quant", "report", &run, "--view", "instruct", "--out", root.join("q").to_str().unwrap()]);
    assert!(!ok && stderr.contains("drop --out"), "{stderr}");
    let (status, v) = s.post("/api/quant-reports", &json!({"run": run, "text": elsewhere}));
    assert_eq!((status, error_of(&v).1), (403, "refused"), "{v}");
    let (status, v) = s.post("/api/quant-reports", &json!({"run": run, "view": "instruct", "types": ["q9"]}));
    assert_eq!((status, error_of(&v).1), (400, "invalid_value"), "{v}");

    // A collection filled and searched through the server.
    let (ok, stdout, stderr) = out(&["kb", "add", "notes", allowed.join("docs").to_str().unwrap()]);
    assert!(ok && stdout.contains("1 added"), "{stdout}{stderr}");
    let (ok, stdout, _) = out(&["kb", "search", "notes", "rings", "--mode", "text"]);
    assert!(ok && stdout.contains("orbit.md"), "{stdout}");
    let (ok, stdout, _) = out(&["kb", "list"]);
    assert!(ok && stdout.contains("notes"), "{stdout}");
    let (ok, stdout, stderr) = out(&["kb", "create", "more", "--model", model.to_str().unwrap()]);
    assert!(ok && stdout.contains("made collection more"), "{stdout}{stderr}");
    let (_, v) = s.get("/api/collections");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // Every one of them was a job of the server.
    let (_, v) = s.get("/api/jobs");
    let kinds: Vec<&str> = v["data"].as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["import", "import", "import", "train", "export", "quantize", "ingest"], "{v}");
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The CLI's other workspace commands with a server owning the workspace: views defined, listed,
/// shown and dropped, a dataset and a query written to files, a dataset dropped, models added
/// and listed, a model evaluated on a view, a library model answering `lathe chat --prompt`;
/// a client without the owner's token is held to the allowed folders and read-only SQL.
#[test]
fn the_cli_changes_the_workspace_through_the_server() {
    let root = scratch("workspace-cli-changes");
    let (home, allowed) = (root.join("ws"), root.join("allowed"));
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(root.join("shelf")).unwrap();
    std::fs::write(allowed.join("plants.csv"), "name,water\nfern,often\ncactus,rarely\nmoss,always\n").unwrap();
    let tiny = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let o = lathe(&home, &["export", tiny.to_str().unwrap(), "--quant", "f16", "--out", root.join("shelf/tiny.gguf").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1", "--allow", allowed.to_str().unwrap()], None);
    let out = |args: &[&str]| {
        let o = lathe(&home, args);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok, stdout, stderr) = out(&["data", "import", allowed.join("plants.csv").to_str().unwrap(), "--name", "garden"]);
    assert!(ok, "{stdout}{stderr}");

    // A view: made, listed, shown and read by an evaluation in this process.
    let sql = "SELECT 'How often does ' || name || ' need water?' AS prompt, water AS completion FROM garden";
    let (ok, stdout, stderr) = out(&["data", "view", "create", "care", "--sql", sql, "--format", "completion", "--eval-fraction", "0"]);
    assert!(ok && stdout.contains("view care: completion format, 3 train rows, 0 eval rows"), "{stdout}{stderr}");
    let (ok, stdout, _) = out(&["data", "view", "list"]);
    assert!(ok && stdout.contains("care") && stdout.contains("completion"), "{stdout}");
    let (ok, stdout, stderr) = out(&["data", "view", "show", "care", "--limit", "2"]);
    assert!(ok && stdout.contains("care #2 (train, completion)") && stdout.contains("need water?"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = out(&["eval", "--model", tiny.to_str().unwrap(), "--view", "care", "--split", "train"]);
    assert!(ok && stdout.contains("view care (train split, 3 examples): mean token loss"), "{stdout}{stderr}");
    let (ok, _, stderr) = out(&["data", "view", "show", "nothing"]);
    assert!(!ok && stderr.contains("No view named nothing"), "{stderr}");

    // Files written by the server: anywhere for the owner's CLI; for other clients only new
    // files inside the allowed folders, and only SQL that reads the workspace.
    let (ok, stdout, stderr) = out(&["data", "export", "garden", root.join("garden.csv").to_str().unwrap()]);
    assert!(ok && stdout.contains("Wrote 3 rows"), "{stdout}{stderr}");
    assert_eq!(std::fs::read_to_string(root.join("garden.csv")).unwrap().lines().count(), 4);
    let (ok, stdout, stderr) = out(&["data", "export", "--sql", "SELECT name FROM garden WHERE water = 'often'", root.join("often.parquet").to_str().unwrap()]);
    assert!(ok && stdout.contains("Wrote 1 rows") && root.join("often.parquet").exists(), "{stdout}{stderr}");
    let (status, v) = s.post("/api/datasets/export", &json!({"dataset": "garden", "path": allowed.join("copy.jsonl")}));
    assert_eq!(status, 202, "{v}");
    assert_eq!(job_end(s.addr, v["job"].as_u64().unwrap()), json!("done"));
    assert_eq!(std::fs::read_to_string(allowed.join("copy.jsonl")).unwrap().lines().count(), 3);
    let (status, v) = s.post("/api/datasets/export", &json!({"dataset": "garden", "path": allowed.join("copy.jsonl")}));
    assert_eq!((status, error_of(&v).1), (409, "conflict"), "{v}");
    let (status, v) = s.post("/api/datasets/export", &json!({"dataset": "garden", "path": root.join("out.csv")}));
    assert_eq!((status, error_of(&v).1), (403, "refused"), "{v}");
    let (status, v) = s.post("/api/datasets/export", &json!({"sql": "SELECT * FROM read_csv('/etc/passwd')", "path": allowed.join("p.csv")}));
    assert_eq!(status, 403, "{v}");
    let (status, v) = s.post("/api/views", &json!({"name": "leak", "sql": "SELECT * FROM read_text('/etc/hostname')", "format": "text"}));
    assert_eq!(status, 403, "{v}");
    let (status, v) = s.post("/api/datasets/export", &json!({"dataset": "nothing", "path": allowed.join("n.csv")}));
    assert_eq!(status, 404, "{v}");
    let (status, v) = s.post("/api/datasets/export", &json!({"dataset": "garden", "path": allowed.join("garden.txt")}));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(".csv, .parquet or .jsonl"), "{v}");
    let (status, v) = s.post("/api/views/care/examples", &json!({"split": "both"}));
    assert!(status == 400 && v["error"]["message"].as_str().unwrap().contains("train or eval"), "{v}");
    let (status, v) = s.post("/api/views/care/examples", &json!({"split": "train", "limit": 1}));
    assert_eq!((status, v["examples"].as_array().map(Vec::len)), (200, Some(1)), "{v}");
    assert_eq!(v["view"]["train_rows"], 3, "{v}");

    // Models added to the server's library, listed through it, and one answering a prompt.
    let (ok, stdout, stderr) = out(&["models", "add", root.join("shelf").to_str().unwrap()]);
    assert!(ok && stdout.contains("(1 model)"), "{stdout}{stderr}");
    let (ok, stdout, _) = out(&["models", "list"]);
    assert!(ok && stdout.contains("tiny.gguf"), "{stdout}");
    let (ok, stdout, stderr) = out(&["chat", "--model", "tiny.gguf", "--prompt", "Hello", "--max-tokens", "4", "--temp", "0"]);
    assert!(ok && stderr.contains(&format!("tiny.gguf at http://{}/v1", s.addr)), "{stdout}{stderr}");
    let (_, v) = s.get("/api/server");
    assert_eq!(v["requests"], 1, "the chat did not go through the server: {v}");
    let (status, v) = s.post("/api/models", &json!({"path": root.join("shelf")}));
    assert_eq!((status, error_of(&v).1), (403, "refused"), "{v}");

    // Dropped: the view, then the dataset; a second drop says there is none.
    let (ok, stdout, _) = out(&["data", "view", "drop", "care"]);
    assert!(ok && stdout.contains("dropped view care"), "{stdout}");
    let (ok, stdout, _) = out(&["data", "drop", "garden"]);
    assert!(ok && stdout.contains("dropped garden"), "{stdout}");
    let (_, v) = s.get("/api/datasets");
    assert!(v["data"].as_array().unwrap().iter().all(|d| d["name"] != "garden"), "{v}");
    let (ok, _, stderr) = out(&["data", "drop", "garden"]);
    assert!(!ok && stderr.contains("No dataset named garden"), "{stderr}");
    // A dataset named as an action (its path is /api/datasets/export) is dropped all the same.
    let (ok, stdout, stderr) = out(&["data", "import", allowed.join("plants.csv").to_str().unwrap(), "--name", "export"]);
    assert!(ok && stdout.contains("Imported export"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = out(&["data", "drop", "export"]);
    assert!(ok && stdout.contains("dropped export"), "{stdout}{stderr}");
    let (status, v) = s.request("DELETE", "/api/datasets/import", &[], b"");
    assert_eq!((status, error_of(&v).1), (404, "not_found"), "{v}");
    let (status, _) = s.request("DELETE", "/api/views/care", &[], b"");
    assert_eq!(status, 404);
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}
