//! Remote backends: an Ollama server (/api/chat, NDJSON stream) and any OpenAI-compatible server
//! (/v1/chat/completions, server-sent events), reached over HTTP/1.1, plain or TLS (rustls, with
//! the system's certificates; SSL_CERT_FILE or SSL_CERT_DIR name others, e.g. a private CA).
//! Answers stream token by token like the llama.cpp engine's, with the same stop and figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::types::{Message, Sampling, Stats, StopReason};

pub use crate::engine::types::Remote;

#[derive(Debug)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err(format!("{url} is not an http:// or https:// address.")),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::new()),
    };
    // A bracketed IPv6 address keeps its colons.
    let (host, port) = match hostport.rsplit_once(':').filter(|(h, p)| !p.contains(']') && (!h.starts_with('[') || h.ends_with(']'))) {
        Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("{url} has a bad port."))?),
        None => (hostport.to_string(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("{url} has no host."));
    }
    Ok(Url { tls, host, port, path })
}

/// The TLS client settings, made once: the system's root certificates (or SSL_CERT_FILE /
/// SSL_CERT_DIR when set), ring's cryptography, TLS 1.2 and 1.3.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("No trusted root certificates were found on this machine; point SSL_CERT_FILE at a PEM bundle (or at your server's CA).".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS could not be set up ({e})."))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// A connection: plain TCP or TLS over it.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

fn connect(url: &str, u: &Url) -> Result<Box<dyn Conn>, String> {
    let addr = (u.host.trim_start_matches('[').trim_end_matches(']'), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("Cannot resolve {} ({e}).", u.host))?
        .next()
        .ok_or_else(|| format!("Cannot resolve {}.", u.host))?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| format!("Nothing answers at {}:{} ({e}).", u.host, u.port))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    if !u.tls {
        return Ok(Box::new(s));
    }
    let name = rustls_pki_types::ServerName::try_from(u.host.trim_start_matches('[').trim_end_matches(']').to_string())
        .map_err(|_| format!("{} is not a host name TLS can check.", u.host))?;
    let mut conn = rustls::ClientConnection::new(tls_config()?, name).map_err(|e| format!("TLS could not start with {} ({e}).", u.host))?;
    // The handshake happens here, so its failures are told apart from the request's, and a
    // server that takes the connection but never answers TLS is given 10 s, not the answer's 120.
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut s).map_err(|e| explain_handshake(url, u, e))?;
    }
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    Ok(Box::new(rustls::StreamOwned::new(conn, s)))
}

/// Says what a failed TLS handshake means and what to do about it.
fn explain_handshake(url: &str, u: &Url, e: std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        format!("{} presented a certificate this machine does not trust ({text}); if the server uses a private CA, point SSL_CERT_FILE at its PEM file.", u.host)
    } else if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
        format!("{} took the connection but did not answer TLS within 10 s; is it an https server?", u.host)
    } else if text.contains("corrupt message") || e.kind() == std::io::ErrorKind::UnexpectedEof {
        format!("{url} does not speak TLS ({text}); try http:// instead.")
    } else {
        format!("The TLS handshake with {} failed ({text}).", u.host)
    }
}

/// Sends one request and hands each line of the response body to `on_line` as it arrives
/// (chunked, sized or until the connection closes); `on_line` returns false to stop reading. Err
/// for a refused connection, a failed TLS handshake, a non-2xx status (with the server's message)
/// or a broken stream.
fn request(method: &str, url: &str, body: Option<&str>, key: Option<&str>, on_line: &mut dyn FnMut(&str) -> bool) -> Result<(), String> {
    let u = parse_url(url)?;
    let mut s = connect(url, &u)?;
    let default_port = if u.tls { 443 } else { 80 };
    let host = if u.port == default_port { u.host.clone() } else { format!("{}:{}", u.host, u.port) };
    let mut req = format!("{method} {} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n", if u.path.is_empty() { "/" } else { &u.path });
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).and_then(|_| s.flush()).map_err(|e| format!("Sending to {url} failed ({e})."))?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| format!("{url} did not answer ({e})."))?;
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{url} did not answer with HTTP."))?;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|e| e.to_string())? == 0 || h.trim().is_empty() {
            break;
        }
        let l = h.to_ascii_lowercase();
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        } else if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    // A sized body ends at its length, so a server that keeps the connection open (or closes a TLS
    // one without saying so) does not leave the reader waiting.
    let mut body_reader: Box<dyn Read> = match (chunked, length) {
        (true, _) => Box::new(Chunked { r, left: 0, done: false }),
        (false, Some(n)) => Box::new(r.take(n)),
        (false, None) => Box::new(r),
    };
    if !(200..300).contains(&code) {
        let mut text = String::new();
        let _ = body_reader.read_to_string(&mut text);
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        return Err(format!("{url} answered {code}: {msg}"));
    }
    let mut lines = BufReader::new(body_reader);
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                if !on_line(line.trim_end()) {
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("The stream from {url} broke ({e}).")),
        }
    }
}

/// Transfer-Encoding: chunked, decoded.
struct Chunked<R: BufRead> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.r.read_line(&mut size)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed inside a chunked body"));
            }
            if size.trim().is_empty() {
                // The CRLF after the previous chunk.
                size.clear();
                if self.r.read_line(&mut size)? == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed inside a chunked body"));
                }
            }
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let got = self.r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed inside a chunk"));
        }
        self.left -= got;
        Ok(got)
    }
}

/// A model a server offers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RemoteModel {
    pub name: String,
    pub size: u64,
    pub details: String,
    pub family: String,
    pub quantization: String,
}

impl Remote {
    pub fn describe(&self) -> String {
        match self {
            Remote::Ollama { base, model } => format!("ollama:{model} at {base}"),
            Remote::OpenAi { base, model, .. } => format!("{model} at {base}"),
        }
    }

    fn not_running(&self, e: String) -> String {
        match self {
            Remote::Ollama { base, .. } if e.starts_with("Nothing answers") => {
                format!("Ollama is not running at {base}; start it with `ollama serve` (or give ollama:MODEL@HOST:PORT).")
            }
            _ => e,
        }
    }

    /// The models the server has.
    pub fn models(&self) -> Result<Vec<RemoteModel>, String> {
        let mut text = String::new();
        let (url, key) = match self {
            Remote::Ollama { base, .. } => (format!("{base}/api/tags"), None),
            Remote::OpenAi { base, api_key, .. } => (format!("{base}/models"), api_key.as_deref()),
        };
        request("GET", &url, None, key, &mut |l| {
            text.push_str(l);
            text.push('\n');
            true
        })
        .map_err(|e| self.not_running(e))?;
        let v: Value = serde_json::from_str(&text).map_err(|_| format!("{url} did not answer with a model list."))?;
        Ok(match self {
            Remote::Ollama { .. } => v["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| RemoteModel {
                    name: m["name"].as_str().unwrap_or("").into(),
                    size: m["size"].as_u64().unwrap_or(0),
                    details: format!(
                        "{} {} {}",
                        m["details"]["family"].as_str().unwrap_or(""),
                        m["details"]["parameter_size"].as_str().unwrap_or(""),
                        m["details"]["quantization_level"].as_str().unwrap_or("")
                    )
                    .trim()
                    .to_string(),
                    family: m["details"]["family"].as_str().unwrap_or("").into(),
                    quantization: m["details"]["quantization_level"].as_str().unwrap_or("").into(),
                })
                .collect(),
            Remote::OpenAi { .. } => v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| RemoteModel {
                    name: m["id"].as_str().unwrap_or("").into(),
                    size: 0,
                    details: m["owned_by"].as_str().unwrap_or("").into(),
                    family: String::new(),
                    quantization: String::new(),
                })
                .collect(),
        })
    }

    /// Checks the server is there and has the model.
    pub fn check(&self) -> Result<(), String> {
        let list = self.models()?;
        let model = match self {
            Remote::Ollama { model, .. } | Remote::OpenAi { model, .. } => model,
        };
        let has = list.iter().any(|m| &m.name == model || m.name == format!("{model}:latest"));
        if !has && !list.is_empty() {
            let names: Vec<&str> = list.iter().take(8).map(|m| m.name.as_str()).collect();
            return Err(format!("The server has no model {model:?}; it has {}.", names.join(", ")));
        }
        Ok(())
    }

    /// Streams an answer to `messages`.
    pub fn generate(&self, messages: &[Message], s: &Sampling, cancel: &AtomicBool, on_text: &mut dyn FnMut(&str)) -> Result<(String, Stats), String> {
        let t0 = Instant::now();
        let mut first = None;
        let mut text = String::new();
        let mut pieces = 0usize;
        let mut server_tokens: Option<(usize, f64, usize)> = None;
        let mut finished = false;
        let mut stopped = false;
        let (url, body, key) = match self {
            Remote::Ollama { base, model } => {
                let mut options = json!({"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
                    "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n, "num_predict": s.max_tokens, "stop": s.stop});
                if s.seed != 0 {
                    options["seed"] = json!(s.seed);
                }
                (format!("{base}/api/chat"), json!({"model": model, "messages": messages, "stream": true, "options": options}), None)
            }
            Remote::OpenAi { base, model, api_key } => {
                let mut b = json!({"model": model, "messages": messages, "stream": true, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens});
                if !s.stop.is_empty() {
                    b["stop"] = json!(s.stop);
                }
                if s.seed != 0 {
                    b["seed"] = json!(s.seed);
                }
                (format!("{base}/chat/completions"), b, api_key.as_deref())
            }
        };
        let ollama = matches!(self, Remote::Ollama { .. });
        let result = request("POST", &url, Some(&body.to_string()), key, &mut |line| {
            if cancel.load(Ordering::Relaxed) {
                stopped = true;
                return false;
            }
            let data = if ollama { line } else { line.strip_prefix("data:").map(str::trim).unwrap_or("") };
            if data.is_empty() {
                return true;
            }
            if data == "[DONE]" {
                finished = true;
                return false;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else { return true };
            let piece = if ollama { v["message"]["content"].as_str() } else { v["choices"][0]["delta"]["content"].as_str() };
            if let Some(p) = piece.filter(|p| !p.is_empty()) {
                first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                pieces += 1;
                text.push_str(p);
                on_text(p);
            }
            if ollama && v["done"].as_bool() == Some(true) {
                finished = true;
                if let (Some(n), Some(ns)) = (v["eval_count"].as_u64(), v["eval_duration"].as_u64()) {
                    server_tokens = Some((n as usize, ns as f64 / 1e9, v["prompt_eval_count"].as_u64().unwrap_or(0) as usize));
                }
                return false;
            }
            if !ollama && v["choices"][0]["finish_reason"].is_string() {
                finished = true;
            }
            true
        });
        result.map_err(|e| self.not_running(e))?;
        if !finished && !stopped {
            return Err(format!("{} closed the stream before the answer ended; the text so far is kept.", self.describe()));
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let first_secs = first.unwrap_or(elapsed);
        let (generated, gen_secs, prompt_tokens) = server_tokens.unwrap_or((pieces, (elapsed - first_secs).max(1e-9), 0));
        Ok((
            text,
            Stats {
                prompt_tokens,
                reused_tokens: 0,
                prompt_secs: first_secs,
                first_token_secs: first_secs,
                generated_tokens: generated,
                generation_secs: gen_secs,
                context_used: 0,
                context_size: 0,
                stop: if stopped { StopReason::Cancelled } else { StopReason::EndOfTurn },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_the_backend() {
        assert_eq!(Remote::parse("m.gguf"), None);
        assert_eq!(
            Remote::parse("ollama:qwen2.5:0.5b@10.0.0.2:11434"),
            Some(Ok(Remote::Ollama { base: "http://10.0.0.2:11434".into(), model: "qwen2.5:0.5b".into() }))
        );
        assert!(matches!(Remote::parse("openai:gpt@http://h:8000/v1/"), Some(Ok(Remote::OpenAi { ref base, .. })) if base == "http://h:8000/v1"));
        assert!(Remote::parse("openai:gpt").unwrap().is_err());
        let u = parse_url("https://api.example.com/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "api.example.com", 443, "/v1"));
        let u = parse_url("http://[::1]:8080/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "[::1]", 8080));
        assert_eq!(parse_url("http://h").unwrap().port, 80);
        assert!(parse_url("ftp://h/v1").unwrap_err().contains("not an http:// or https://"));
        assert!(parse_url("http://h:x/v1").unwrap_err().contains("bad port"));
    }
}
