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
    let (ok, _, stderr) = out(&lathe(&home, &["data", "drop", "chat"]));
    assert!(!ok && stderr.contains(&format!("lathe serve (pid {pid}")) && stderr.contains("does not go through it yet"), "{stderr}");
    let (_, v) = s.post("/api/sql", &json!({"sql": "select count(*) as n from chat"}));
    assert_eq!(v["rows"][0]["n"], 1500, "the CLI changed the data through the server");

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
