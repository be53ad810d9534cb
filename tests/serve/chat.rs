//! `/v1/chat/completions` and `/v1/completions` from a real `lathe serve` with a GGUF exported from
//! the tiny Llama fixture: OpenAI's shapes whole and streamed (the stream's text equals the whole
//! answer's, greedily), stop strings, a JSON schema's answer that parses, errors with their
//! statuses; two answers decoded at once, a third waiting, a fourth refused with 503 and
//! Retry-After, and a client that leaves giving its slot back; SIGTERM while streaming; and the
//! official `openai` client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{copy_dir, error_of, fixture, scratch, Server};

/// A workspace whose models/ holds tiny.gguf (the tiny Llama fixture in f16) and an embedding
/// folder.
fn workspace(tag: &str) -> (PathBuf, PathBuf) {
    let root = scratch(tag);
    let home = root.join("ws");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    std::fs::create_dir_all(home.join("models")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lathe"))
        .arg("--home")
        .arg(&home)
        .args(["export", model.to_str().unwrap(), "--quant", "f16", "--out"])
        .arg(home.join("models/tiny.gguf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    copy_dir(&fixture("tiny-bert-mean"), &home.join("models/tiny-bert-mean"));
    (root, home)
}

/// A streamed answer, read as it comes: each server-sent event's data.
struct Stream {
    r: BufReader<TcpStream>,
    pending: String,
    ended: bool,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, body: &Value) -> Stream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let body = body.to_string();
        write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        Stream { r, pending: String::new(), ended: false }
    }

    /// The next event's data, or None at the end of the stream.
    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..at + 2).collect();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))).collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
                continue;
            }
            if self.ended {
                return None;
            }
            // One chunk of the chunked body.
            let mut size = String::new();
            if self.r.read_line(&mut size).unwrap_or(0) == 0 {
                self.ended = true;
                continue;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                self.ended = true;
                continue;
            }
            let mut chunk = vec![0; n + 2];
            self.r.read_exact(&mut chunk).unwrap();
            self.pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Every remaining event's data, as JSON up to `[DONE]` (which must end the stream).
    fn rest(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(d) = self.next() {
            if d == "[DONE]" {
                assert_eq!(self.next(), None, "events after [DONE]");
                return out;
            }
            out.push(serde_json::from_str(&d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}")));
        }
        panic!("the stream ended without [DONE]: {out:?}");
    }
}

fn chat(content: &str, extra: Value) -> Value {
    let mut v = json!({"model": "tiny.gguf", "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": content}]});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}

#[test]
fn chat_and_completions_answer_in_openai_shapes() {
    let (root, home) = workspace("chat");
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--slots", "2", "--threads", "1"], None);
    let ids: Vec<String> = s.get("/v1/models").1["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&"tiny.gguf".to_string()), "{ids:?}");

    // Whole, greedy: the same answer twice.
    let greedy = chat("Name a colour.", json!({"temperature": 0, "max_tokens": 12}));
    let (status, a) = s.post("/v1/chat/completions", &greedy);
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-") && a["created"].as_u64().unwrap() > 0 && a["model"] == "tiny.gguf", "{a}");
    let choice = &a["choices"][0];
    assert_eq!((choice["index"].as_u64(), choice["message"]["role"].as_str()), (Some(0), Some("assistant")));
    let text = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty(), "{a}");
    let usage = &a["usage"];
    let done = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&done) && usage["prompt_tokens"].as_u64().unwrap() > 0, "{a}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(done + usage["prompt_tokens"].as_u64().unwrap()));
    assert_eq!(choice["finish_reason"], if done == 12 { "length" } else { "stop" });
    assert_eq!(s.post("/v1/chat/completions", &greedy).1["choices"][0]["message"]["content"], text.as_str());
    // The second read its prompt from the first's cache: only its last token again (the answer
    // the same, as asserted above).
    let read = figure(&metrics(s.addr), "lathe_prompt_tokens_total");
    assert_eq!(read, usage["prompt_tokens"].as_f64().unwrap() + 1.0, "prompt tokens read by the two requests");

    // Streamed: the role first, the same text in pieces, the finish, the usage, [DONE].
    let mut streamed = greedy.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = Stream::open(s.addr, "/v1/chat/completions", &streamed).rest();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]), "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(joined, text);
    let (finish, last) = (&chunks[chunks.len() - 2], &chunks[chunks.len() - 1]);
    assert_eq!(finish["choices"][0]["finish_reason"], choice["finish_reason"]);
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(last["usage"][k], usage[k], "{last}");
    }
    // Its prompt but the last token was in the cache from the answer before.
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() - 1), "{last}");

    // A stop string: the answer ends before it.
    let cut: Vec<char> = text.chars().collect();
    if cut.len() >= 3 {
        let stop: String = cut[1..3].iter().collect();
        let (_, b) = s.post("/v1/chat/completions", &chat("Name a colour.", json!({"temperature": 0, "max_tokens": 12, "stop": [stop.clone(), "\u{0}never"]})));
        assert_eq!(b["choices"][0]["message"]["content"], &text[..text.find(&stop).unwrap()], "stop {stop:?} in {text:?}");
        assert_eq!(b["choices"][0]["finish_reason"], "stop");
    }

    // Completions, whole and streamed.
    let (status, c) = s.post("/v1/completions", &json!({"model": "tiny.gguf", "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}));
    assert_eq!(status, 200, "{c}");
    assert_eq!((c["object"].as_str(), c["choices"][0]["index"].as_u64()), (Some("text_completion"), Some(0)));
    let ctext = c["choices"][0]["text"].as_str().unwrap().to_string();
    let chunks = Stream::open(s.addr, "/v1/completions", &json!({"model": "tiny.gguf", "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": true})).rest();
    assert_eq!(chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect::<String>(), ctext);

    // A JSON schema: the answer parses and follows it, sampled at temperature 1.
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["ok", "n"], "additionalProperties": false});
    for seed in [1, 2, 3] {
        let body = chat("Is it fine?", json!({"temperature": 1.0, "seed": seed, "max_tokens": 300, "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}}));
        let (status, j) = s.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{j}");
        let content = j["choices"][0]["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {content:?}"));
        assert!(v["ok"].is_boolean() && v["n"].as_u64().is_some_and(|n| n <= 9) && v.as_object().unwrap().len() == 2, "{v}");
    }

    // Errors, each with its status and code.
    let (status, e) = s.post("/v1/chat/completions", &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!((status, error_of(&e)), (404, ("invalid_request_error", "model_not_found")), "{e}");
    let (status, e) = s.post("/v1/chat/completions", &json!({"model": "tiny-bert-mean", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("/v1/embeddings"), "{e}");
    let long = "word ".repeat(3000);
    let (status, e) = s.post("/v1/completions", &json!({"model": "tiny.gguf", "prompt": long}));
    assert_eq!((status, error_of(&e).1), (400, "context_length_exceeded"), "{e}");
    let (status, e) = s.post("/v1/chat/completions", &chat("x", json!({"temperature": "hot"})));
    assert_eq!((status, error_of(&e).1), (400, "invalid_value"), "{e}");
    let (status, e) = s.post("/v1/chat/completions", &chat("x", json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})));
    assert_eq!((status, error_of(&e).1), (400, "invalid_response_format"), "{e}");
    // A schema llama.cpp's grammar engine refuses (a repetition over 2,000).
    let huge = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "minLength": 3000}}});
    let (status, e) = s.post("/v1/chat/completions", &chat("x", json!({"response_format": huge})));
    assert_eq!((status, error_of(&e).1), (400, "invalid_schema"), "{e}");
    // logit_bias: a token the model does not have is the request's fault, checked against the model.
    let (status, e) = s.post("/v1/chat/completions", &chat("x", json!({"logit_bias": {"99999999": -100}})));
    assert_eq!((status, error_of(&e).1), (400, "invalid_logit_bias"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("this model's tokens are 0 to"), "{e}");
    let (status, e) = s.post("/v1/chat/completions", &chat("x", json!({"logit_bias": {"5": 300}})));
    assert_eq!((status, error_of(&e).1), (400, "invalid_logit_bias"), "{e}");
    let (status, j) = s.post("/v1/chat/completions", &chat("x", json!({"logit_bias": {"5": -100, "6": 2.5}, "max_tokens": 3, "temperature": 0})));
    assert_eq!(status, 200, "{j}");
    // Still answering after all that.
    assert_eq!(s.post("/v1/chat/completions", &greedy).0, 200);

    // The figures in Prometheus' text.
    let m = metrics(s.addr);
    assert!(figure(&m, "lathe_http_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"200\"}") >= 7.0, "{m}");
    assert_eq!(figure(&m, "lathe_http_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"404\"}"), 1.0, "{m}");
    assert!(figure(&m, "lathe_generated_tokens_total") >= 10.0 && figure(&m, "lathe_prompt_tokens_total") > 0.0, "{m}");
    assert!(figure(&m, "lathe_time_to_first_token_seconds_count") >= 8.0 && figure(&m, "lathe_resident_memory_bytes") > 1e6, "{m}");
    assert_eq!((figure(&m, "lathe_models_loaded"), figure(&m, "lathe_inference_requests_rejected_total")), (1.0, 0.0), "{m}");
    assert!(figure(&m, "lathe_slot_context_tokens") >= 64.0, "{m}");
    assert!(m.contains("lathe_http_request_duration_seconds_bucket{route=\"/v1/completions\",method=\"POST\",le=\"+Inf\"}"), "{m}");
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// An answer whose length the test sets, whatever the random model prefers: a JSON list of
/// `items` strings of 20 characters each (`exact`), or of at least `items` (open-ended: it runs
/// to the end of its context). llama.cpp's grammars refuse repetitions over 2,000, hence lists.
fn long_answer(items: usize, exact: bool) -> Value {
    let string = json!({"type": "string", "minLength": 20, "maxLength": 20});
    let mut schema = json!({"type": "array", "items": string, "minItems": items});
    if exact {
        schema["maxItems"] = json!(items);
    }
    chat("Talk.", json!({"temperature": 1.0, "seed": 9, "stream": true, "max_tokens": 100000, "response_format": {"type": "json_schema", "json_schema": {"name": "long", "schema": schema}}}))
}

/// Reads up to the first chunk with text (the answer is being decoded); the text so far.
fn first_text(s: &mut Stream) -> String {
    loop {
        let d = s.next().expect("the stream ended before any text");
        let v: Value = serde_json::from_str(&d).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
            return t.to_string();
        }
    }
}

#[test]
fn slots_answer_together_then_queue_then_refuse_and_a_leaving_client_frees_its_slot() {
    let (root, home) = workspace("slots");
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--slots", "2", "--queue", "1", "--ctx", "4096", "--threads", "1"], None);
    // A (to the end of its context) and B (long) take the two slots and both stream at once.
    let mut a = Stream::open(s.addr, "/v1/chat/completions", &long_answer(1000, false));
    first_text(&mut a);
    // (B's prompt is A's: it takes it from A's sequence, so its sampled answer is not the one it
    // gives alone; 24 strings fit its half of the context whatever they hold.)
    let mut b = Stream::open(s.addr, "/v1/chat/completions", &long_answer(24, true));
    let b_start = first_text(&mut b);
    // C and D, at once: one waits in the queue, the other finds it full.
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let (tx, addr) = (tx.clone(), s.addr);
        std::thread::spawn(move || {
            let answer = raw_post(addr, "/v1/chat/completions", &chat("Hi.", json!({"max_tokens": 4})));
            let _ = tx.send((answer, Instant::now()));
        });
    }
    let ((status, head, v), _) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!((status, error_of(&v)), (503, ("server_error", "queue_full")), "{v}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1") && head.contains("x-should-retry: true"), "{head}");
    // A's client leaves: its slot goes to the waiting one while B still streams.
    drop(a);
    let ((status, _, v), waited_done) = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(status, 200, "{v}");
    let b_rest = b.rest();
    let b_done = Instant::now();
    assert!(waited_done < b_done, "the waiting request waited for B: A's slot was not given back when its client left");
    let text: String = std::iter::once(b_start.as_str()).chain(b_rest.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str())).collect();
    let m = metrics(s.addr);
    assert_eq!(figure(&m, "lathe_inference_requests_rejected_total"), 1.0, "{m}");
    let list: Vec<String> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("B's answer is not its list ({e}): {text}"));
    assert_eq!(list.len(), 24);
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// SIGTERM while an answer streams and another waits: the waiting one is refused (503,
/// server_stopping), the streaming one ends whole with [DONE], and the server exits cleanly.
#[test]
fn sigterm_lets_the_answer_in_flight_end_and_refuses_the_waiting_one() {
    let (root, home) = workspace("term");
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--slots", "1", "--queue", "2", "--ctx", "2048", "--threads", "1"], None);
    let mut a = Stream::open(s.addr, "/v1/chat/completions", &long_answer(40, true));
    let a_start = first_text(&mut a);
    let addr = s.addr;
    let waiting = std::thread::spawn(move || raw_post(addr, "/v1/chat/completions", &chat("Hi.", json!({"max_tokens": 4}))));
    let t = Instant::now();
    while figure(&metrics(s.addr), "lathe_inference_requests_waiting") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(30), "the second request never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.term();
    let (status, _, v) = waiting.join().unwrap();
    assert_eq!((status, error_of(&v)), (503, ("server_error", "server_stopping")), "{v}");
    let text: String = std::iter::once(a_start.as_str()).chain(a.rest().iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str())).collect();
    let list: Vec<String> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the answer in flight was cut ({e}): {text}"));
    assert_eq!(list.len(), 40);
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    assert!(!home.join("serve.json").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

/// GET /metrics: the text.
fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { super::dechunk(body) } else { body.to_string() }
}

/// The value of the sample named (with its labels) exactly `name`; panics when there is none.
fn figure(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A POST whose status, head and JSON body come back (for headers the plain helper drops).
fn raw_post(addr: SocketAddr, path: &str, body: &Value) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.to_string();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { super::dechunk(rest) } else { rest.to_string() };
    (status, head.to_string(), serde_json::from_str(&json).unwrap_or(Value::Null))
}

/// The official `openai` client with strict response validation: chat whole and streamed (with
/// usage), completions, a JSON schema's answer parsed, an unknown model's typed error.
/// Skipped, saying so, where Python has no `openai` package (LATHE_PEER_PYTHON picks the Python).
#[test]
fn the_official_openai_client_chats() {
    let python = std::env::var("LATHE_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let (root, home) = workspace("openai-chat");
    let has = Command::new(&python).current_dir(&root).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("skipped: {python} has no `openai` package (pip install openai, or set LATHE_PEER_PYTHON)");
        std::fs::remove_dir_all(&root).unwrap();
        return;
    }
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let script = r#"
import json, sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="unused", _strict_response_validation=True, max_retries=0)
msgs = [{"role": "user", "content": "Name a colour."}]
whole = c.chat.completions.create(model="tiny.gguf", messages=msgs, temperature=0, max_tokens=10)
text = whole.choices[0].message.content
assert whole.object == "chat.completion" and whole.usage.completion_tokens >= 1, whole
parts, usage = [], None
for chunk in c.chat.completions.create(model="tiny.gguf", messages=msgs, temperature=0, max_tokens=10, stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(parts) == text, (parts, text)
assert usage.completion_tokens == whole.usage.completion_tokens, usage
comp = c.completions.create(model="tiny.gguf", prompt="Once upon a time", max_tokens=5, temperature=0)
assert comp.object == "text_completion" and comp.choices[0].finish_reason in ("stop", "length"), comp
schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
j = c.chat.completions.create(model="tiny.gguf", messages=msgs, seed=4, max_completion_tokens=200,
    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
assert isinstance(json.loads(j.choices[0].message.content)["ok"], bool), j
try:
    c.chat.completions.create(model="no-such-model", messages=msgs)
    sys.exit("an unknown model gave no error")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
print("ok")
"#;
    let o = Command::new(&python).current_dir(&root).arg("-c").arg(script).arg(format!("http://{}/v1", s.addr)).output().unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let status = s.stop();
    assert!(status.success(), "lathe serve ended with {status}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Another OpenAI-compatible server added to the library (here a second real `lathe serve` with
/// the GGUF): `lathe models add URL --name up` lists its models as `up/MODEL`, this server lists
/// and answers them (whole and streamed) by passing the request through, with the same greedy
/// answer the other server gives itself; a server that does not answer, or a key variable that is
/// not set, is not added; a client without the owner's token cannot add one; once the other
/// server is gone its models answer 503 and the list says why; `lathe models remove up` takes it out.
#[test]
fn another_servers_models_are_passed_through() {
    let (root, up_home) = workspace("upstream");
    let up = Server::start(&up_home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let home = root.join("down");
    let lathe = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_lathe")).arg("--home").arg(&home).args(args).env_remove("LATHE_API_KEY").output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let url = format!("http://{}/v1", up.addr);
    let (ok, text) = lathe(&["models", "add", "http://127.0.0.1:9/v1", "--name", "gone"]);
    assert!(!ok && text.contains("did not list its models, so it was not added"), "{text}");
    let (ok, text) = lathe(&["models", "add", &url, "--key-env", "LATHE_TEST_NO_SUCH_VAR"]);
    assert!(!ok && text.contains("LATHE_TEST_NO_SUCH_VAR is not set"), "{text}");
    let (ok, text) = lathe(&["models", "add", &url, "--name", "up"]);
    assert!(ok && text.contains("added server up at") && text.contains("2 models"), "{text}");
    let (ok, text) = lathe(&["models", "list"]);
    assert!(ok && text.contains("up/tiny.gguf") && text.contains("openai server"), "{text}");

    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--threads", "1"], None);
    let ids: Vec<String> = s.get("/v1/models").1["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&"up/tiny.gguf".to_string()), "{ids:?}");
    let greedy = |model: &str| {
        let mut v = chat("Name a colour.", json!({"temperature": 0, "max_tokens": 10}));
        v["model"] = json!(model);
        v
    };
    let (status, direct) = up.post("/v1/chat/completions", &greedy("tiny.gguf"));
    assert_eq!(status, 200, "{direct}");
    let (status, passed) = s.post("/v1/chat/completions", &greedy("up/tiny.gguf"));
    assert_eq!(status, 200, "{passed}");
    assert_eq!(passed["model"], "up/tiny.gguf");
    assert_eq!(passed["choices"][0]["message"]["content"], direct["choices"][0]["message"]["content"], "{passed}\n{direct}");
    let mut streamed = greedy("up/tiny.gguf");
    streamed["stream"] = json!(true);
    let chunks = Stream::open(s.addr, "/v1/chat/completions", &streamed).rest();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, direct["choices"][0]["message"]["content"].as_str().unwrap());
    // Only the owner adds a server: a request may not make this one call an address it chooses.
    let (status, v) = s.post("/api/models", &json!({"url": "http://127.0.0.1:9/v1"}));
    assert_eq!((status, error_of(&v)), (403, ("invalid_request_error", "refused")), "{v}");

    up.stop();
    let (status, v) = s.post("/v1/chat/completions", &greedy("up/tiny.gguf"));
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Nothing answers"), "{v}");
    let ids = s.get("/v1/models").1.to_string();
    assert!(!ids.contains("up/"), "{ids}");
    let (ok, text) = lathe(&["models", "list"]);
    assert!(ok && text.contains("up/") && text.contains("did not list its models"), "{text}");
    let (ok, text) = lathe(&["models", "remove", "up"]);
    assert!(ok && text.contains("removed server up"), "{text}");
    let (ok, text) = lathe(&["models", "remove", "up"]);
    assert!(!ok && text.contains("neither a server nor a path"), "{text}");
    let (status, v) = s.post("/v1/chat/completions", &greedy("up/tiny.gguf"));
    assert_eq!(status, 404, "{v}");
    s.stop();
    std::fs::remove_dir_all(&root).unwrap();
}

/// Requests with the same start share its reading: a request arriving while another with the
/// same prompt answers takes that prompt from the other's sequence (usage's cached_tokens says
/// so) and, greedy, answers as the first one did; two sent at once answer alike too.
#[test]
fn concurrent_requests_with_one_prompt_read_it_once() {
    let (root, home) = workspace("shared");
    let s = Server::start(&home, &["--listen", "127.0.0.1:0", "--slots", "3", "--threads", "1"], None);
    let ask = |max: u64, stream: bool| chat("Say a long thing about the sea and the boats on it.", json!({"temperature": 0, "max_tokens": max, "stream": stream}));
    let (status, alone) = s.post("/v1/chat/completions", &ask(6, false));
    assert_eq!(status, 200, "{alone}");
    let alone_text = alone["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    // A long answer streams in sequence 0; the same prompt now lands in a fresh sequence (the
    // first answer's cache is in sequence 0, which is busy) and copies the prompt from it.
    let mut long = Stream::open(s.addr, "/v1/chat/completions", &ask(400, true));
    first_text(&mut long);
    let (status, second) = s.post("/v1/chat/completions", &ask(6, false));
    assert_eq!(status, 200, "{second}");
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(prompt - 1), "{second}");
    assert_eq!(second["choices"][0]["message"]["content"].as_str().unwrap(), alone_text);
    drop(long);
    // Two at once (once the long one has left): the same answer each.
    let both: Vec<_> = (0..2)
        .map(|_| {
            let addr = s.addr;
            let body = ask(6, false);
            std::thread::spawn(move || raw_post(addr, "/v1/chat/completions", &body))
        })
        .collect();
    for h in both {
        let (status, _, v) = h.join().unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap(), alone_text, "{v}");
    }
    s.stop();
    std::fs::remove_dir_all(&root).unwrap();
}
