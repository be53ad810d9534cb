//! `lathe bench serve`: a real `lathe serve` under load, measured as its clients see it. On the
//! TinyLlama-shaped random Q4_K_M GGUF of `lathe bench chat`, 1, 4 and 16 clients stream chat
//! answers at once (greedy, the same prompt): aggregate generated tokens/s, time to the first
//! token (p50, p99) and every stream accounted for (200, its usage, `[DONE]`). One stream is also
//! set beside the same generation in-process (the engine's `Session`, no HTTP), which gives the
//! API's cost. The peer: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`,
//! uvicorn) on the same file, threads and load, measured by the same clients; skipped with a
//! message where the Python package is missing. Targets: 4 streams at least 2x one stream's
//! aggregate, and ahead of the peer; the API's cost under 3%.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::engine::export::gguf::Quant;
use crate::engine::infer::llama::{Gguf, Options};
use crate::engine::types::{Message, Sampling};

/// The prompt: a short chat message in the random model's words (43 tokens with the template),
/// so that the figures are about answering, which batching speeds up, more than reading.
fn prompt() -> String {
    "The quick brown fox jumps over the lazy dog.".into()
}

/// What one client saw.
struct Seen {
    first: f64,
    end: f64,
    tokens: u64,
}

/// One streamed answer; times from `t0`. The model's end-of-turn token (`eos`) is banned through
/// logit_bias, so that every answer is `gen` tokens long on both servers.
fn client(addr: SocketAddr, model: &str, gen: usize, eos: i32, t0: Instant) -> anyhow::Result<Seen> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": prompt()}], "max_tokens": gen, "temperature": 0, "logit_bias": {eos.to_string(): -100}, "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("the server answered {}", line.trim());
    }
    while line != "\r\n" {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the connection closed in the head");
        }
    }
    let (mut pending, mut first, mut tokens, mut done, mut counted) = (String::new(), None, None, false, 0u64);
    while !done {
        // One chunk of the chunked body.
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk)?;
        pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
        while let Some(at) = pending.find("\n\n") {
            let event: String = pending.drain(..at + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                done = true;
                break;
            }
            let v: Value = serde_json::from_str(data)?;
            // The first chunk comes with the first token (its text may be empty: this random
            // model's likeliest tokens are padding).
            first.get_or_insert(t0.elapsed().as_secs_f64());
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n);
            }
            // A server without include_usage: one chunk per token.
            if v["choices"][0]["delta"].get("content").is_some() {
                counted += 1;
            }
        }
    }
    if !done {
        bail!("the stream ended without [DONE]");
    }
    let end = t0.elapsed().as_secs_f64();
    Ok(Seen { first: first.unwrap_or(end), end, tokens: tokens.unwrap_or(counted) })
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start(home: &Path, slots: usize, ctx: usize, threads: i32) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?;
    let args = ["serve", "--listen", "127.0.0.1:0", "--slots", &slots.to_string(), "--ctx", &ctx.to_string(), "--threads", &threads.to_string()];
    let mut child = Command::new(exe).arg("--home").arg(home).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let record = home.join("serve.json");
    let t = Instant::now();
    loop {
        if let Ok(v) = std::fs::read_to_string(&record).map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default()) {
            if v["pid"] == child.id() {
                let addr = v["address"].as_str().unwrap_or_default().parse()?;
                return Ok(Server { child, addr });
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("lathe serve ended at start ({status})");
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("lathe serve did not start within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same answer in-process: generation tokens/s of the engine's session.
fn in_process(file: &Path, threads: i32, gen: usize) -> anyhow::Result<f64> {
    let g = Gguf::load(file).map_err(|e| anyhow!(e))?;
    let mut session = g.session(&Options { ctx: 1024, threads, batch: 512 }).map_err(|e| anyhow!(e))?;
    let prompt = g.tokenize(&g.render(&[Message { role: "user".into(), content: prompt() }], true).map_err(|e| anyhow!(e))?);
    let eos = g.model.vocab().eos().0;
    let s = Sampling { temperature: 0.0, repeat_penalty: 1.0, max_tokens: gen, logit_bias: vec![(eos, -100.0)], ..Default::default() };
    let mut best = 0f64;
    for _ in 0..2 {
        let (_, stats) = session.generate(&prompt, &s, &AtomicBool::new(false), &mut |_| {}).map_err(|e| anyhow!(e))?;
        best = best.max(stats.tokens_per_s());
    }
    Ok(best)
}

/// llama.cpp's own rate decoding `seqs` sequences together, one token each per call (logits for
/// every row, as the server asks; no sampling, no HTTP): the ceiling batching can reach here.
fn decode_rate(g: &Gguf, threads: i32, seqs: usize, steps: usize) -> anyhow::Result<f64> {
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::token::LlamaToken;
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new((seqs * (steps + 64)) as u32))
        .with_n_seq_max(seqs as u32)
        .with_kv_unified(true)
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let backend = crate::engine::infer::llama::backend().map_err(|e| anyhow!(e))?;
    let mut ctx = g.model.new_context(backend, params).map_err(|e| anyhow!("llama.cpp could not make a context: {e}"))?;
    let mut batch = LlamaBatch::new(512, seqs as i32);
    let prompt = 16;
    // Arbitrary ordinary tokens of any vocabulary, the demo's few hundred included.
    let vocab = g.model.n_vocab().max(2) as usize;
    let token = |i: usize| LlamaToken((vocab / 3 + i % (vocab / 2)) as i32);
    for s in 0..seqs {
        for p in 0..prompt {
            batch.add(token(p * 7919), p as i32, &[s as i32], p + 1 == prompt)?;
        }
    }
    ctx.decode(&mut batch).map_err(|e| anyhow!("llama.cpp could not decode: {e}"))?;
    let t = Instant::now();
    for step in 0..steps {
        batch.clear();
        for s in 0..seqs {
            batch.add(token(step * 31 + s * 7), (prompt + step) as i32, &[s as i32], true)?;
        }
        ctx.decode(&mut batch).map_err(|e| anyhow!("llama.cpp could not decode: {e}"))?;
    }
    Ok((seqs * steps) as f64 / t.elapsed().as_secs_f64())
}

pub fn run(threads: i32, gen: usize, clients: &[usize], model: Option<&Path>) -> anyhow::Result<()> {
    let dir = super::chat::cache_dir();
    let file = match model {
        Some(m) => std::fs::canonicalize(m).with_context(|| format!("{} cannot be read; give a GGUF file", m.display()))?,
        None => super::chat::gguf(&dir, Quant::Q4KM)?,
    };
    let shapes = if model.is_some() { "the file given" } else { "TinyLlama-1.1B shapes, random weights" };
    let home = dir.join("serve-ws");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join("models"))?;
    let name = if model.is_some() { file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default() } else { "tinyllama-random.gguf".into() };
    let name = name.as_str();
    std::os::unix::fs::symlink(&file, home.join("models").join(name)).context("linking the model into the scratch workspace")?;
    let eos = Gguf::load(&file).map_err(|e| anyhow!(e))?.model.vocab().eos().0;
    let most = clients.iter().copied().max().unwrap_or(1);
    // Each slot holds the prompt and the answer.
    let per_slot = (gen + 256).next_power_of_two();
    println!(
        "lathe serve under load: {} ({shapes}), {gen} tokens per answer, greedy, {most} slots of {per_slot} tokens",
        file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    );
    println!(
        "machine: {}, {} cores; lathe {} (llama.cpp {}, {threads} threads)",
        super::cpu_model(),
        super::cores(),
        env!("CARGO_PKG_VERSION"),
        crate::engine::info::engine_info().llama_cpp
    );
    let server = start(&home, most, most * per_slot, threads)?;
    // The model loads on the first request, a whole answer long: on a virtual machine the CPUs
    // come up to speed over a second or so of work after idling (measured on the demo model: the
    // first second's decode calls took 4-20 ms, later ones 0.2 ms).
    client(server.addr, name, gen, eos, Instant::now()).context("the first request")?;
    let ours = measure(server.addr, name, gen, eos, clients);
    // One stream once more: the API's cost is its best of two against in-process's best of two.
    let again = measure(server.addr, name, gen, eos, &[1]);
    drop(server);
    let peer = peer_server(&file, name, threads, most * per_slot).and_then(|p| {
        client(p.addr, name, gen, eos, Instant::now()).context("the peer's first request")?;
        Ok(measure(p.addr, name, gen, eos, clients))
    });
    println!("{:>8} {:>24} {:>12} {:>22} {:>8}", "clients", "aggregate tok/s (peer)", "per stream", "first p50/p99 (peer)", "lost");
    for (i, o) in ours.iter().enumerate() {
        let p = peer.as_ref().ok().and_then(|p| p.get(i));
        let pa = p.map(|p| format!("({:.1})", p.aggregate)).unwrap_or_default();
        let pf = p.map(|p| format!("({:.0}/{:.0})", p.first_p50 * 1e3, p.first_p99 * 1e3)).unwrap_or_default();
        println!(
            "{:>8} {:>11.1} {pa:>12} {:>12.1} {:>7.0}/{:<5.0}{pf:>10} ms {:>5}{}",
            o.clients,
            o.aggregate,
            o.per_stream,
            o.first_p50 * 1e3,
            o.first_p99 * 1e3,
            o.lost.len(),
            p.map(|p| format!(" ({})", p.lost.len())).unwrap_or_default()
        );
        for e in o.lost.iter().chain(p.map(|p| p.lost.as_slice()).unwrap_or_default()) {
            println!("         lost: {e}");
        }
    }
    if let Some(short) = ours.iter().map(|o| o.mean_tokens).reduce(f64::min).filter(|t| *t < gen as f64 * 0.9) {
        println!("answers ended early (end of turn), {short:.0} tokens of {gen} at the least on average: these figures measure requests more than decoding");
    }
    match &peer {
        Ok(p) => {
            for (o, q) in ours.iter().zip(p) {
                print!("{} clients: {:.2}x the peer's aggregate;  ", o.clients, o.aggregate / q.aggregate.max(1e-9));
            }
            println!("(target: ahead at 4)");
            println!("peer: llama-cpp-python {} (python -m llama_cpp.server, one model, {threads} threads, n_ctx {})", peer_version(), most * per_slot);
        }
        Err(e) => println!("peer not measured: {e}"),
    }
    let one_stream = ours.iter().chain(&again).filter(|o| o.clients == 1).map(|o| o.per_stream).fold(0.0, f64::max);
    let aggregates: Vec<(usize, f64)> = ours.iter().map(|o| (o.clients, o.aggregate)).collect();
    let _ = std::fs::remove_dir_all(&home);
    let base = aggregates.iter().find(|(n, _)| *n == 1).map(|a| a.1);
    if let (Some(b), Some((_, four))) = (base, aggregates.iter().find(|(n, _)| *n == 4)) {
        println!("4 streams against 1: {:.2}x aggregate (target at least 2x)", four / b.max(1e-9));
    }
    {
        let g = Gguf::load(&file).map_err(|e| anyhow!(e))?;
        // The first round only brings the CPUs up to speed.
        decode_rate(&g, threads, 4, gen)?;
        let (one, four) = (decode_rate(&g, threads, 1, gen)?, decode_rate(&g, threads, 4, gen)?);
        println!(
            "llama.cpp's own decode calls, no sampling and no HTTP: 1 sequence {one:.1} tok/s, 4 together {four:.1} tok/s ({:.2}x: the most 4 streams can gain over 1 here)",
            four / one.max(1e-9)
        );
    }
    let inproc = in_process(&file, threads, gen)?;
    println!(
        "one stream through the API {one_stream:.1} tok/s, in-process {inproc:.1} tok/s: the API costs {:+.1}% (target under 3%)",
        (inproc - one_stream) / inproc.max(1e-9) * 100.0
    );
    Ok(())
}

/// One load level as the clients saw it.
struct Level {
    clients: usize,
    aggregate: f64,
    per_stream: f64,
    first_p50: f64,
    first_p99: f64,
    lost: Vec<String>,
    /// Tokens per answer, on average (fewer than asked when answers end early).
    mean_tokens: f64,
}

/// `clients` streams at once for each level, against the server at `addr`.
fn measure(addr: SocketAddr, name: &str, gen: usize, eos: i32, clients: &[usize]) -> Vec<Level> {
    let mut out = Vec::new();
    for &n in clients {
        let t0 = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let name = name.to_string();
                std::thread::spawn(move || client(addr, &name, gen, eos, t0))
            })
            .collect();
        let results: Vec<anyhow::Result<Seen>> = handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a client panicked")))).collect();
        let seen: Vec<&Seen> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let end = seen.iter().map(|s| s.end).fold(0.0, f64::max);
        let tokens: u64 = seen.iter().map(|s| s.tokens).sum();
        let firsts: Vec<f64> = seen.iter().map(|s| s.first).collect();
        let per_stream: Vec<f64> = seen.iter().map(|s| s.tokens.saturating_sub(1) as f64 / (s.end - s.first).max(1e-9)).collect();
        out.push(Level {
            clients: n,
            aggregate: tokens as f64 / end.max(1e-9),
            per_stream: super::median(&per_stream),
            first_p50: super::median(&firsts),
            first_p99: super::percentile(&firsts, 0.99),
            lost: results.iter().filter_map(|r| r.as_ref().err()).map(|e| e.to_string()).collect(),
            mean_tokens: tokens as f64 / seen.len().max(1) as f64,
        });
    }
    out
}

/// llama-cpp-python's OpenAI server on `file`, answering as `name`, on a free loopback port.
fn peer_server(file: &Path, name: &str, threads: i32, ctx: usize) -> anyhow::Result<Server> {
    let python = super::peer_python();
    let ok = Command::new(&python).args(["-c", "import llama_cpp.server, uvicorn"]).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        bail!("{python} lacks llama-cpp-python's server (CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install 'llama-cpp-python[server]'; LATHE_PEER_PYTHON names another python)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let file = file.display().to_string();
    let (threads, ctx, port_s) = (threads.to_string(), ctx.to_string(), port.to_string());
    let args = ["-m", "llama_cpp.server", "--model", &file, "--model_alias", name, "--n_threads", &threads, "--n_threads_batch", &threads, "--n_ctx", &ctx, "--host", "127.0.0.1", "--port", &port_s];
    let mut child = Command::new(&python).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let t = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(Server { child, addr });
        }
        if let Some(status) = child.try_wait()? {
            bail!("llama-cpp-python's server ended at start ({status})");
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("llama-cpp-python's server did not listen within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn peer_version() -> String {
    let out = Command::new(super::peer_python()).args(["-c", "import llama_cpp; print(llama_cpp.__version__)"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}
