//! A small HTTP/1.1 client over plain TCP or TLS (rustls, with the system's certificates;
//! SSL_CERT_FILE or SSL_CERT_DIR name others, e.g. a private CA): what lathe needs to reach a
//! remote chat server (infer/remote.rs) and a `lathe serve` that owns the workspace. One
//! request per connection; bodies sized, chunked or read to the close.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

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
pub fn request(method: &str, url: &str, body: Option<&str>, key: Option<&str>, on_line: &mut dyn FnMut(&str) -> bool) -> Result<(), String> {
    let (code, mut body_reader) = open(method, url, body, key)?;
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

/// One request, the whole answer: its status and body, whatever the status. Err only when no
/// answer came (nothing listens, TLS failed, the connection broke).
pub fn exchange(method: &str, url: &str, body: Option<&str>, key: Option<&str>) -> Result<(u16, String), String> {
    let (code, mut r) = open(method, url, body, key)?;
    let mut text = String::new();
    r.read_to_string(&mut text).map_err(|e| format!("The answer from {url} broke off ({e})."))?;
    Ok((code, text))
}

/// Sends the request; the status and a reader of the body (chunked, sized or to the close).
fn open(method: &str, url: &str, body: Option<&str>, key: Option<&str>) -> Result<(u16, Box<dyn Read>), String> {
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
    let body_reader: Box<dyn Read> = match (chunked, length) {
        (true, _) => Box::new(Chunked { r, left: 0, done: false }),
        (false, Some(n)) => Box::new(r.take(n)),
        (false, None) => Box::new(r),
    };
    Ok((code, body_reader))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_their_parts() {
        let u = parse_url("https://api.example.com/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "api.example.com", 443, "/v1"));
        let u = parse_url("http://[::1]:8080/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "[::1]", 8080));
        assert_eq!(parse_url("http://h").unwrap().port, 80);
        assert!(parse_url("ftp://h/v1").unwrap_err().contains("not an http:// or https://"));
        assert!(parse_url("http://h:x/v1").unwrap_err().contains("bad port"));
    }
}
