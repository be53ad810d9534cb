//! `lathe serve` end to end: a real server on a free loopback port of a scratch workspace, spoken
//! to over plain HTTP/1.1 sockets. Health, the model list, embeddings (float and base64, equal to
//! the engine's own vectors) with an embedding folder in the workspace's models/, the errors in
//! OpenAI's shape (malformed JSON, wrong types, an unknown model, token-id input, a body over the
//! limit, an unknown route, a wrong method), the API key on a non-loopback address, a second
//! server on the same workspace refused, and SIGTERM ending it cleanly (its record removed).
//! Chat and completions from a GGUF model are in chat.rs.

mod chat;
mod workspace;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lathe::engine::embed::Embedder;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed").join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lathe-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A running `lathe serve`, stopped (SIGKILL) if the test ends early.
struct Server {
    child: Child,
    addr: SocketAddr,
    home: PathBuf,
}

impl Server {
    fn start(home: &Path, args: &[&str], env_key: Option<&str>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lathe"));
        cmd.arg("--home").arg(home).arg("serve").args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        match env_key {
            Some(k) => cmd.env("LATHE_API_KEY", k),
            None => cmd.env_remove("LATHE_API_KEY"),
        };
        let mut child = cmd.spawn().unwrap();
        // It records where it listens once it does.
        let record = home.join("serve.json");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&record) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v["pid"] == child.id() {
                        let addr = v["address"].as_str().unwrap().parse().unwrap();
                        return Server { child, addr, home: home.to_path_buf() };
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("lathe serve ended ({status}): {err}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "lathe serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        request(self.addr, method, path, headers, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, &[], b"")
    }

    /// Sends SIGTERM and returns at once.
    fn term(&self) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        self.term();
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "lathe serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body as JSON.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body:?}"));
    (status, json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Standard base64 decoded, written here independently of the server's encoder.
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let digits: Vec<u8> = quad.iter().filter(|&&c| c != b'=').map(|&c| val(c)).collect();
        let n = digits.iter().enumerate().fold(0u32, |n, (i, d)| n | (*d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

fn error_of(v: &Value) -> (&str, &str) {
    (v["error"]["type"].as_str().unwrap_or("?"), v["error"]["code"].as_str().unwrap_or("?"))
}

#[test]
fn health_models_and_embeddings_in_openai_shapes() {
    let root = scratch("api");
    let home = root.join("ws");
    copy_dir(&fixture("tiny-bert-mean"), &home.join("models/tiny-bert-mean"));
    let s = Server::start(&home, &["--listen", "127.0.0.1:0"], None);
    assert!(s.addr.ip().is_loopback());
    assert_eq!(s.get("/health"), (200, json!({"status": "ok"})));

    let (status, models) = s.get("/v1/models");
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["object"], "list");
    let m = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "tiny-bert-mean").unwrap_or_else(|| panic!("{models}"));
    assert!(m["object"] == "model" && m["created"].is_u64() && m["owned_by"].is_string(), "{m}");

    // Float vectors equal the engine's own.
    let texts = ["The cat sat on the mat.", "How do I reset my password?"];
    let (status, r) = s.post("/v1/embeddings", &json!({"model": "tiny-bert-mean", "input": texts}));
    assert_eq!(status, 200, "{r}");
    let want = Embedder::load(&fixture("tiny-bert-mean")).unwrap().embed(&texts, "").unwrap().vectors;
    assert_eq!((r["object"].as_str(), r["model"].as_str()), (Some("list"), Some("tiny-bert-mean")));
    for (i, w) in want.iter().enumerate() {
        let d = &r["data"][i];
        assert_eq!((d["object"].as_str(), d["index"].as_u64()), (Some("embedding"), Some(i as u64)));
        let got: Vec<f32> = d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(got.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {w:?}");
    }
    let tokens = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens >= 8 && r["usage"]["total_tokens"] == tokens, "{r}");

    // base64: little-endian f32, the same numbers.
    let (status, r) = s.post("/v1/embeddings", &json!({"model": "tiny-bert-mean", "input": texts[0], "encoding_format": "base64"}));
    assert_eq!(status, 200, "{r}");
    let b64 = r["data"][0]["embedding"].as_str().unwrap();
    let bytes = decode_base64(b64);
    let got: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(got, want[0]);

    // Bad input: each an OpenAI-shaped error with a sentence.
    let bad = |status: u16, v: &Value, kind: &str, code: &str| {
        assert_eq!((status, error_of(v)), (status, (kind, code)), "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.ends_with('.')), "{v}");
    };
    let (st, v) = s.request("POST", "/v1/embeddings", &[], b"{\"model\": ");
    assert_eq!(st, 400);
    bad(st, &v, "invalid_request_error", "invalid_json");
    let (st, v) = s.post("/v1/embeddings", &json!({"model": "tiny-bert-mean", "input": 5}));
    assert_eq!(st, 400);
    bad(st, &v, "invalid_request_error", "invalid_input");
    let (st, v) = s.post("/v1/embeddings", &json!({"model": "tiny-bert-mean", "input": [[1, 2, 3]]}));
    assert!(st == 400 && v["error"]["message"].as_str().unwrap().contains("token ids"), "{v}");
    let (st, v) = s.post("/v1/embeddings", &json!({"model": "no-such-model", "input": "x"}));
    assert_eq!(st, 404);
    bad(st, &v, "invalid_request_error", "model_not_found");
    let (st, v) = s.post("/v1/embeddings", &json!({"model": "tiny-bert-mean", "input": "x", "dimensions": 8}));
    assert!(st == 400 && v["error"]["message"].as_str().unwrap().contains("gives 32 dimensions"), "{v}");
    let (st, v) = s.post("/v1/embeddings", &json!({"model": "tiny-bert-mean", "input": "x", "encoding_format": "int8"}));
    assert_eq!(st, 400, "{v}");
    // Refused from its declared length, before the body is read (or sent).
    let (st, v) = s.request("POST", "/v1/embeddings", &[("Content-Length", "9437184")], b"");
    assert_eq!(st, 413);
    bad(st, &v, "invalid_request_error", "request_too_large");
    let (st, v) = s.get("/v1/nothing");
    assert_eq!(st, 404);
    bad(st, &v, "invalid_request_error", "unknown_route");
    let (st, v) = s.get("/v1/embeddings");
    assert_eq!(st, 405);
    bad(st, &v, "invalid_request_error", "method_not_allowed");
    // The server still answers after all that.
    assert_eq!(s.get("/health").0, 200);

    // One owner per workspace.
    let o = Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(&home).args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&format!("Another lathe serve (pid {}) owns", s.child.id())), "{err}");

    // SIGTERM ends it cleanly and removes its record.
    let home = s.home.clone();
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    assert!(!home.join("serve.json").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn beyond_loopback_a_key_is_required() {
    let root = scratch("key");
    let home = root.join("ws");
    let o = Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(&home).args(["serve", "--listen", "0.0.0.0:0"]).env_remove("LATHE_API_KEY").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("give an API key (--api-key KEY or LATHE_API_KEY)"), "{err}");
    assert!(!home.join("serve.json").exists());

    let s = Server::start(&home, &["--listen", "0.0.0.0:0"], Some("s3cret-key"));
    let at = SocketAddr::from(([127, 0, 0, 1], s.addr.port()));
    let (st, v) = request(at, "GET", "/health", &[], b"");
    assert_eq!((st, error_of(&v)), (401, ("invalid_request_error", "invalid_api_key")), "{v}");
    let (st, _) = request(at, "GET", "/health", &[("Authorization", "Bearer s3cret-kez")], b"");
    assert_eq!(st, 401);
    let (st, v) = request(at, "GET", "/health", &[("Authorization", "Bearer s3cret-key")], b"");
    assert_eq!((st, v), (200, json!({"status": "ok"})));
    // The server's own user brings the owner's token from its record instead: the CLI needs no key.
    let record: Value = serde_json::from_str(&std::fs::read_to_string(home.join("serve.json")).unwrap()).unwrap();
    let token = format!("Bearer {}", record["token"].as_str().unwrap());
    assert_eq!(token.len(), "Bearer ".len() + 32);
    let (st, _) = request(at, "GET", "/health", &[("Authorization", &token)], b"");
    assert_eq!(st, 200);
    let o = Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(&home).args(["data", "list"]).env_remove("LATHE_API_KEY").output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("instruct"), "{}", String::from_utf8_lossy(&o.stderr));
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The official `openai` Python client, with strict response validation, reads the model list and
/// float embeddings and gets a typed error for an unknown model; without it (strict validation
/// checks base64 answers against the float schema before decoding them, whoever serves them) it
/// reads its default, base64.
/// Skipped, saying so, where Python has no `openai` package (LATHE_PEER_PYTHON picks the Python).
#[test]
fn the_official_openai_client_reads_models_and_embeddings() {
    let python = std::env::var("LATHE_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = scratch("openai");
    let has = Command::new(&python).current_dir(&root).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("skipped: {python} has no `openai` package (pip install openai, or set LATHE_PEER_PYTHON)");
        return;
    }
    let home = root.join("ws");
    copy_dir(&fixture("tiny-bert-mean"), &home.join("models/tiny-bert-mean"));
    let s = Server::start(&home, &["--listen", "127.0.0.1:0"], None);
    let script = r#"
import json, sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="unused", _strict_response_validation=True, max_retries=0)
ids = [m.id for m in c.models.list().data]
assert "tiny-bert-mean" in ids, ids
f = c.embeddings.create(model="tiny-bert-mean", input="The cat sat on the mat.", encoding_format="float")
assert f.usage.prompt_tokens > 0 and f.model == "tiny-bert-mean", f
loose = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
r = loose.embeddings.create(model="tiny-bert-mean", input=["The cat sat on the mat.", "How do I reset my password?"])
assert [d.index for d in r.data] == [0, 1], r
try:
    c.embeddings.create(model="no-such-model", input="x")
    sys.exit("an unknown model gave no error")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
print(json.dumps({"base64": [list(map(float, d.embedding)) for d in r.data], "float": list(map(float, f.data[0].embedding))}))
"#;
    let o = Command::new(&python).current_dir(&root).arg("-c").arg(script).arg(format!("http://{}/v1", s.addr)).output().unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let texts = ["The cat sat on the mat.", "How do I reset my password?"];
    let want = Embedder::load(&fixture("tiny-bert-mean")).unwrap().embed(&texts, "").unwrap().vectors;
    let close = |got: &Value, w: &[f32]| got.as_array().unwrap().iter().zip(w).all(|(a, b)| (a.as_f64().unwrap() as f32 - b).abs() < 1e-6);
    assert!(close(&v["base64"][0], &want[0]) && close(&v["base64"][1], &want[1]) && close(&v["float"], &want[0]), "{v}");
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The status of one exchange, whatever the body (text, HTML or JSON), and the body.
fn raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let text = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), text)
}

/// /openapi.json describes every route the server answers, each reference resolves, and a
/// request to each route (an empty object as the body) gets a status its operation lists;
/// /docs is a page that loads nothing from elsewhere.
#[test]
fn the_openapi_document_describes_every_route() {
    let root = scratch("openapi");
    let home = root.join("ws");
    let s = Server::start(&home, &["--listen", "127.0.0.1:0"], None);
    let (status, doc) = s.get("/openapi.json");
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for want in [
        "/health",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/api/datasets",
        "/api/datasets/import",
        "/api/sql",
        "/api/runs",
        "/api/runs/{id}",
        "/api/runs/{id}/metrics",
        "/api/conversations",
        "/api/conversations/{id}",
        "/api/conversations/{id}/markdown",
        "/api/collections",
        "/api/collections/{name}/search",
        "/api/collections/{name}/ingest",
        "/api/jobs",
        "/api/jobs/{id}/cancel",
        "/api/jobs/{id}/events",
        "/api/events",
    ] {
        assert!(paths.contains_key(want), "{want} is not documented");
    }
    // Every $ref points at a schema the document has.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(doc["components"]["schemas"].get(name).is_some(), "{name} is referenced but not defined");
    }
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let listed: Vec<u16> = op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
            assert!((listed.contains(&200) || listed.contains(&202)) && op["summary"].is_string(), "{method} {path}: {op}");
            if path == "/api/events" {
                // A stream that lasts until the server stops: workspace.rs reads it.
                continue;
            }
            // Each path parameter documented, and given a value that names nothing.
            let mut concrete = path.clone();
            for p in op["parameters"].as_array().map(Vec::as_slice).unwrap_or_default() {
                assert_eq!((p["in"].as_str(), p["required"].as_bool()), (Some("path"), Some(true)), "{path}: {p}");
                concrete = concrete.replace(&format!("{{{}}}", p["name"].as_str().unwrap()), "nothing-here");
            }
            assert!(!concrete.contains('{'), "{path} has an undocumented parameter");
            // An empty object, except where it would start a real job (the demo run).
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/api/runs") => r#"{"config": 5}"#,
                ("post", _) => "{}",
                _ => "",
            };
            let (got, answer) = raw(s.addr, &method.to_uppercase(), &concrete, body);
            assert!(listed.contains(&got), "{method} {path} answered {got}, which its operation does not list ({listed:?}): {answer}");
        }
    }
    let (status, page) = raw(s.addr, "GET", "/docs", "");
    assert_eq!(status, 200);
    assert!(page.contains("fetch('/openapi.json')") && !page.contains("src=\"http") && !page.contains("href=\"http"), "{page}");
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// schemathesis (PyPI) against /openapi.json with every check: no server error, every response
/// as documented, schema-valid requests accepted. Two runs: every route but a few, then those few
/// without the acceptance check (a string the schema allows is seldom valid SQL or a model's
/// name, and is rightly a 400). The streams (/api/events) and POST /api/runs (a valid body starts training)
/// are left out. Skipped, saying so, where Python lacks schemathesis.
#[test]
fn schemathesis_finds_every_response_as_documented() {
    let python = std::env::var("LATHE_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = scratch("schemathesis");
    let has = Command::new(&python).args(["-c", "import schemathesis"]).output().is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("skipped: {python} has no `schemathesis` package (pip install schemathesis, or set LATHE_PEER_PYTHON)");
        return;
    }
    let home = root.join("ws");
    copy_dir(&fixture("tiny-bert-mean"), &home.join("models/tiny-bert-mean"));
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let url = format!("http://{}/openapi.json", s.addr);
    let common = ["-m", "schemathesis.cli", "run", &url, "-n", "20", "--request-timeout", "30", "--exclude-path", "/api/events", "--exclude-path", "/api/jobs/{id}/events", "--exclude-path", "/api/runs"];
    // Routes where most schema-valid bodies are rightly refused: SQL that does not parse (a
    // query, a view), a run check, an export or a quantization report naming a model that is not there, a conversation
    // whose fields do not hold together, a file to write or a model folder (this server allows
    // no folders), a library entry to take out that was never added, a collection for a model the
    // library lacks, the examples of a view whose dataset the fuzzer dropped.
    let exempt = ["/api/sql", "/api/runs/check", "/api/exports", "/api/quant-reports", "/api/conversations/{id}", "/api/views", "/api/views/{name}/examples", "/api/datasets/export", "/api/models", "/api/models/remove", "/api/collections"];
    let flag = |f: &'static str| exempt.iter().flat_map(move |p| [f, *p]).collect::<Vec<_>>();
    let checked: Vec<&str> = ["-c", "all"].into_iter().chain(flag("--exclude-path")).collect();
    let lenient: Vec<&str> = ["-c", "all", "--exclude-checks", "positive_data_acceptance"].into_iter().chain(flag("--include-path")).collect();
    for extra in [checked, lenient] {
        let o = Command::new(&python).current_dir(&root).args(common).args(&extra).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "schemathesis {extra:?} found failures:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    }
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}
