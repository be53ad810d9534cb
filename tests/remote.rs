//! Remote backends against a small fake server on 127.0.0.1 that speaks Ollama's and the OpenAI
//! API's streaming formats, errors, and drops a stream halfway, over plain TCP and over TLS with a
//! test CA (tests/fixtures/tls).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use lathe::engine::types::Message;
use lathe::engine::types::Sampling;
use lathe::engine::infer::remote::Remote;

fn respond<S: Read + Write>(s: S) {
    let mut r = BufReader::new(s);
    // Lossy: a TLS hello sent to the plain server is not text, and the server answers it 400 as a
    // real one would.
    let mut raw = Vec::new();
    let _ = r.read_until(b'\n', &mut raw);
    let first = String::from_utf8_lossy(&raw).to_string();
    if !first.starts_with("GET ") && !first.starts_with("POST ") {
        let _ = r.get_mut().write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let ok = |ctype: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nConnection: close\r\n");
    let out = match path.as_str() {
        "/api/tags" => {
            let b = r#"{"models":[{"name":"tiny:latest","size":1048576,"details":{"family":"llama","parameter_size":"1M","quantization_level":"Q8_0"}}]}"#;
            format!("{}Content-Length: {}\r\n\r\n{b}", ok("application/json"), b.len())
        }
        "/api/chat" => {
            // NDJSON in chunks, as Ollama sends it.
            let lines = [
                r#"{"message":{"role":"assistant","content":"Hel"},"done":false}"#,
                r#"{"message":{"role":"assistant","content":"lo ✓"},"done":false}"#,
                r#"{"message":{"role":"assistant","content":""},"done":true,"eval_count":2,"eval_duration":50000000,"prompt_eval_count":7}"#,
            ];
            let mut o = format!("{}Transfer-Encoding: chunked\r\n\r\n", ok("application/x-ndjson"));
            for l in lines {
                let c = format!("{l}\n");
                o.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
            }
            o.push_str("0\r\n\r\n");
            o
        }
        "/v1/models" => {
            let b = r#"{"object":"list","data":[{"id":"m1","owned_by":"me"}]}"#;
            format!("{}Content-Length: {}\r\n\r\n{b}", ok("application/json"), b.len())
        }
        "/v1/chat/completions" => {
            let ev = |c: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{c}\"}},\"finish_reason\":null}}]}}\n\n");
            format!("{}\r\n{}{}data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n", ok("text/event-stream"), ev("Good"), ev(" day"))
        }
        "/bad/v1/chat/completions" => {
            let b = r#"{"error":{"message":"model overloaded, try later"}}"#;
            format!("HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())
        }
        "/drop/v1/chat/completions" => {
            let ev = |c: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{c}\"}}}}]}}\n\n");
            format!("{}\r\n{}{}", ok("text/event-stream"), ev("half"), ev(" an"))
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found".to_string(),
    };
    let s = r.get_mut();
    let _ = s.write_all(out.as_bytes());
    let _ = s.flush();
}

fn server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || respond(s));
        }
    });
    addr
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

/// The same server behind TLS, with a certificate for localhost signed by the test CA.
fn tls_server() -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(tls_fixture("server.pem")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_no_client_auth().with_single_cert(certs, key).unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                respond(&mut tls);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    format!("localhost:{port}")
}

fn ask(r: &Remote) -> Result<(String, String, usize), String> {
    let msgs = [Message { role: "user".into(), content: "hi".into() }];
    let mut streamed = String::new();
    let (text, st) = r.generate(&msgs, &Sampling::default(), &AtomicBool::new(false), &mut |p| streamed.push_str(p))?;
    Ok((text, streamed, st.generated_tokens))
}

#[test]
fn ollama_and_openai_servers_stream_answers() {
    let addr = server();
    let ollama = Remote::parse(&format!("ollama:tiny@{addr}")).unwrap().unwrap();
    ollama.check().unwrap();
    assert_eq!(ollama.models().unwrap()[0].details, "llama 1M Q8_0");
    let (text, streamed, n) = ask(&ollama).unwrap();
    assert_eq!((text.as_str(), streamed.as_str(), n), ("Hello ✓", "Hello ✓", 2));
    let missing = Remote::parse(&format!("ollama:nope@{addr}")).unwrap().unwrap();
    assert!(missing.check().unwrap_err().contains("no model \"nope\""));

    let openai = Remote::parse(&format!("openai:m1@http://{addr}/v1")).unwrap().unwrap();
    openai.check().unwrap();
    let (text, _, n) = ask(&openai).unwrap();
    assert_eq!((text.as_str(), n), ("Good day", 2));

    let bad = Remote::parse(&format!("openai:m1@http://{addr}/bad/v1")).unwrap().unwrap();
    let e = ask(&bad).unwrap_err();
    assert!(e.contains("503") && e.contains("model overloaded"), "{e}");
    let dropped = Remote::parse(&format!("openai:m1@http://{addr}/drop/v1")).unwrap().unwrap();
    let e = ask(&dropped).unwrap_err();
    assert!(e.contains("closed the stream before the answer ended"), "{e}");
}

#[test]
fn a_server_that_is_not_running_gets_a_clear_message() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = Remote::parse(&format!("ollama:tiny@127.0.0.1:{port}")).unwrap().unwrap();
    let e = r.check().unwrap_err();
    assert!(e.contains("Ollama is not running") && e.contains("ollama serve"), "{e}");
    let e = ask(&r).unwrap_err();
    assert!(e.contains("Ollama is not running"), "{e}");
}

#[test]
fn the_cli_streams_from_a_server() {
    let addr = server();
    let home = std::env::temp_dir().join(format!("lathe-remote-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(["--home", home.to_str().unwrap(), "chat", "--model", &format!("ollama:tiny@{addr}"), "--prompt", "hi"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Hello ✓");
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(["--home", home.to_str().unwrap(), "models", "server", &addr])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("ollama:tiny:latest"), "{}", String::from_utf8_lossy(&list.stderr));
    // The library lists a running Ollama server's models beside the files.
    let lib = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .env("OLLAMA_HOST", &addr)
        .env("OLLAMA_MODELS", home.join("no-store"))
        .args(["--home", home.to_str().unwrap(), "models", "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&lib.stdout).unwrap();
    let e = v.as_array().unwrap().iter().find(|e| e["name"] == "ollama:tiny:latest").expect("the server's model is listed");
    assert_eq!((e["source"].as_str(), e["format"].as_str(), e["quantization"].as_str()), (Some("ollama server"), Some("remote"), Some("Q8_0")));
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn https_servers_are_checked_against_trusted_certificates() {
    let addr = tls_server();
    // This process trusts the system's certificates only, so the test CA's server is refused, with
    // what to do about it.
    let r = Remote::parse(&format!("openai:m1@https://{addr}/v1")).unwrap().unwrap();
    let e = ask(&r).unwrap_err();
    assert!(e.contains("does not trust") && e.contains("SSL_CERT_FILE"), "{e}");
    // A plain-http client pointed at the TLS port, and a TLS client at a plain port, fail clearly.
    let plain = server();
    let e = ask(&Remote::parse(&format!("openai:m1@https://{plain}/v1")).unwrap().unwrap()).unwrap_err();
    assert!(e.contains("does not speak TLS") && e.contains("http://"), "{e}");

    // With SSL_CERT_FILE naming the CA, the CLI streams from both kinds of server over https.
    let home = std::env::temp_dir().join(format!("lathe-tls-{}", std::process::id()));
    for spec in [format!("openai:m1@https://{addr}/v1"), format!("ollama:tiny@https://{addr}")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
            .env("SSL_CERT_FILE", tls_fixture("ca.pem"))
            .env_remove("SSL_CERT_DIR")
            .args(["--home", home.to_str().unwrap(), "chat", "--model", &spec, "--prompt", "hi"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{spec}: {}", String::from_utf8_lossy(&out.stderr));
        let want = if spec.starts_with("openai") { "Good day" } else { "Hello ✓" };
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    }
    // A machine with no trusted certificates at all is told where to point.
    std::fs::create_dir_all(&home).unwrap();
    let empty = home.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .env("SSL_CERT_FILE", &empty)
        .env_remove("SSL_CERT_DIR")
        .args(["--home", home.to_str().unwrap(), "chat", "--model", &format!("openai:m1@https://{addr}/v1"), "--prompt", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("No trusted root certificates") && err.contains("SSL_CERT_FILE"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_server_that_never_answers_tls_is_given_up_on() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Takes connections and says nothing.
    std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().take(2).flatten().collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(held);
    });
    let r = Remote::parse(&format!("openai:m1@https://127.0.0.1:{port}/v1")).unwrap().unwrap();
    // The handshake's own timeout ends it (the answer's is 120 s).
    let e = ask(&r).unwrap_err();
    assert!(e.contains("did not answer TLS within 10 s"), "{e}");
}

/// One HTTP exchange with a local server: status and body (chunked bodies joined).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = String::new();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut r = rest;
        while let Some((size, after)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            body.push_str(&after[..n]);
            r = &after[n + 2..];
        }
    } else {
        body = rest.to_string();
    }
    (status, body)
}

/// `lathe serve` passes the library's Ollama models through /v1: listed, answered whole and
/// streamed in OpenAI's shapes; what needs a model of its own (a grammar, a raw prompt) is a 400.
#[test]
fn lathe_serve_passes_ollama_models_through() {
    let ollama = server();
    let home = std::env::temp_dir().join(format!("lathe-remote-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lathe"))
        .env("OLLAMA_HOST", &ollama)
        .env("OLLAMA_MODELS", home.join("no-store"))
        .env_remove("LATHE_API_KEY")
        .args(["--home", home.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let addr = loop {
        let rec = std::fs::read_to_string(home.join("serve.json")).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(a) = rec.and_then(|v| v["address"].as_str().map(str::to_string)) {
            break a;
        }
        assert!(start.elapsed().as_secs() < 60, "lathe serve did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (status, models) = http(&addr, "GET", "/v1/models", "");
    assert!(status == 200 && models.contains("\"ollama:tiny:latest\""), "{models}");
    let ask = |extra: &str| format!(r#"{{"model": "ollama:tiny:latest", "messages": [{{"role": "user", "content": "hi"}}]{extra}}}"#);
    let (status, body) = http(&addr, "POST", "/v1/chat/completions", &ask(""));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["choices"][0]["message"]["content"].as_str()), (200, Some("Hello ✓")), "{body}");
    assert_eq!((v["usage"]["prompt_tokens"].as_u64(), v["usage"]["completion_tokens"].as_u64()), (Some(7), Some(2)), "{body}");
    let (status, body) = http(&addr, "POST", "/v1/chat/completions", &ask(r#", "stream": true"#));
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert!(status == 200 && text == "Hello ✓" && body.contains("[DONE]"), "{body}");
    let (status, body) = http(&addr, "POST", "/v1/chat/completions", &ask(r#", "response_format": {"type": "json_object"}"#));
    assert!(status == 400 && body.contains("needs a GGUF model"), "{body}");
    let (status, body) = http(&addr, "POST", "/v1/completions", r#"{"model": "ollama:tiny:latest", "prompt": "hi"}"#);
    assert!(status == 400 && body.contains("chat messages only"), "{body}");
    let (status, _) = http(&addr, "POST", "/v1/chat/completions", &ask("").replace("ollama:tiny:latest", "ollama:tiny@10.0.0.1:1"));
    assert_eq!(status, 404, "a request named a host");
    // SAFETY: a plain signal to the server this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&home);
}
