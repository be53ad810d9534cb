//! `lathe export` (a model folder or a run, as GGUF) and `lathe chat --prompt` (one streamed
//! answer from a GGUF model through llama.cpp).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, bail};
use clap::Args;

use crate::engine::types::{Message, ModelRef, Remote};
use crate::engine::export::gguf::Quant;
use crate::engine::infer::llama::{Gguf, Options};
use crate::engine::knowledge::ground::{self, Retrieval};
use crate::engine::knowledge::store::{Hit, SearchMode};
use crate::service::SearchRequest;
use crate::engine::types::Sampling;
use crate::engine::workspace::Workspace;
use crate::units::bytes;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run id (its base model with the run's adapter merged, or its trained weights) or a
    /// Hugging Face model folder.
    pub source: String,
    /// The GGUF file to write (an Ollama Modelfile is written beside it).
    #[arg(long, value_name = "FILE.gguf")]
    pub out: Option<PathBuf>,
    /// f32 or f16 (written by lathe), or any type llama-quantize offers (q8_0, q6_k, q5_k_m,
    /// q4_k_m, q4_0, iq4_xs, q3_k_m, iq3_xxs, q2_k, iq2_xs, iq1_m, …), quantized by llama.cpp from
    /// an F16 export.
    #[arg(long, default_value = "f16")]
    pub quant: String,
    /// Weigh the quantization by an importance matrix: a view (computed over its training split
    /// with the model as trained), a text file (cut as llama-imatrix cuts it), or a .gguf / .dat
    /// importance matrix. A computed one is saved beside the export as NAME.imatrix.gguf.
    #[arg(long, value_name = "VIEW|FILE")]
    pub imatrix: Option<String>,
    /// Calibration tokens for a computed importance matrix (default 10000, or what the data has).
    #[arg(long, value_name = "N", requires = "imatrix")]
    pub imatrix_tokens: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCmd {
    /// Every model lathe can see: the workspace's models/, added paths, the Hugging Face cache and
    /// the local Ollama store, with architecture, size, quantization and the memory each needs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Adds a GGUF file, a Hugging Face folder or a folder of models to the library (nothing is
    /// copied), or an OpenAI-compatible server by its base URL (http://HOST:PORT/v1): its models
    /// are listed, chatted with and served as NAME/MODEL.
    Add {
        /// A path, or a server's base URL.
        target: String,
        /// The server's name in the library (default: its host).
        #[arg(long)]
        name: Option<String>,
        /// The environment variable that holds the server's API key (read each time it is asked;
        /// the key itself is never saved).
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
    },
    /// Takes a server (by name) or an added path out of the library; nothing on disk is deleted.
    Remove { name: String },
    /// The models a server offers: an Ollama server (default localhost:11434, or HOST:PORT) or,
    /// with --openai, an OpenAI-compatible server's base URL (http://HOST:PORT/v1).
    Server {
        address: Option<String>,
        #[arg(long)]
        openai: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ChatsCmd {
    /// Saved conversations, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One conversation as Markdown or JSON (to stdout, or --out FILE).
    Export {
        id: String,
        #[arg(long, value_parser = ["md", "json"], default_value = "md")]
        format: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn chats(ws: &Workspace, what: ChatsCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = crate::service::Records::open(ws)?;
    match what {
        ChatsCmd::List { json } => {
            let list = cat.chats()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                writeln!(out, "No saved conversations yet; the Chat pane saves each one as its answers arrive.")?;
            } else {
                for c in list {
                    writeln!(out, "{}  {}  {:>3} msgs  {}", c.id, c.updated_at, c.turns, c.title)?;
                }
            }
        }
        ChatsCmd::Export { id, format, out: file } => {
            let c = cat.chat(&id)?;
            let text = if format == "json" { serde_json::to_string_pretty(&c)? } else { c.to_markdown() };
            match file {
                Some(p) => {
                    std::fs::write(&p, text).map_err(|e| anyhow!("Cannot write {} ({e}).", p.display()))?;
                    writeln!(out, "wrote {}", p.display())?;
                }
                None => write!(out, "{text}")?,
            }
        }
    }
    Ok(())
}

pub fn models(ws: &Workspace, what: ModelsCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    use crate::service::Records;
    match what {
        ModelsCmd::Add { target, name, key_env } if target.contains("://") => {
            let n = match Records::open(ws)? {
                Records::Attached(server) => server.add_model_server(&target, name.as_deref(), key_env.as_deref())?,
                Records::Local(cat) => crate::service::models::add_server(&cat, &target, name.as_deref(), key_env.as_deref())?,
            };
            let name = name.unwrap_or_else(|| crate::engine::types::ModelServer::default_name(&target));
            writeln!(out, "added server {name} at {} ({n} model{}, named {name}/MODEL)", target.trim_end_matches('/'), if n == 1 { "" } else { "s" })?;
        }
        ModelsCmd::Add { target, name, key_env } => {
            if name.is_some() || key_env.is_some() {
                bail!("--name and --key-env are for a server's URL (http://HOST:PORT/v1); a path is named by its files.");
            }
            let path = PathBuf::from(target);
            let n = match Records::open(ws)? {
                Records::Attached(server) => server.add_model_path(&path)?,
                Records::Local(cat) => crate::service::models::add_path(&cat, &path)?,
            };
            let abs = std::fs::canonicalize(&path).unwrap_or(path);
            writeln!(out, "added {} ({n} model{})", abs.display(), if n == 1 { "" } else { "s" })?;
        }
        ModelsCmd::Remove { name } => {
            let removed = match Records::open(ws)? {
                Records::Attached(server) => server.remove_model(&name)?,
                Records::Local(cat) => crate::service::models::remove(&cat, &name)?,
            };
            writeln!(out, "removed {removed} from the library")?;
        }
        ModelsCmd::Server { address, openai } => {
            use crate::engine::infer::remote::Remote;
            let remote = if openai {
                let base = address.ok_or_else(|| anyhow!("Give the server's base URL, e.g. http://localhost:8000/v1."))?;
                let api_key = std::env::var("LATHE_API_KEY").or_else(|_| std::env::var("OPENAI_API_KEY")).ok();
                Remote::OpenAi { base: base.trim_end_matches('/').into(), model: String::new(), api_key }
            } else {
                let host = address.unwrap_or_else(|| std::env::var("OLLAMA_HOST").unwrap_or_else(|_| "localhost:11434".into()));
                Remote::Ollama { base: if host.starts_with("http") { host } else { format!("http://{host}") }, model: String::new() }
            };
            let list = remote.models().map_err(anyhow::Error::msg)?;
            let prefix = if openai { "openai:" } else { "ollama:" };
            for m in list {
                writeln!(out, "{prefix}{:<40}  {:>10}  {}", m.name, if m.size > 0 { bytes(m.size) } else { "-".into() }, m.details)?;
            }
        }
        ModelsCmd::List { json } => {
            let list = Records::open(ws)?.models(ws)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(());
            }
            if list.is_empty() {
                writeln!(out, "No models yet: put GGUF files or Hugging Face folders in {}, `lathe models add PATH`, or export a run with `lathe export RUN`.", ws.models_dir().display())?;
                return Ok(());
            }
            let w = list.iter().map(|e| e.name.chars().count()).max().unwrap_or(4).clamp(4, 48);
            writeln!(out, "{:<w$}  {:<11}  {:<4}  {:<8}  {:>7}  {:<7}  {:>7}  {:>10}  {:>10}", "name", "source", "kind", "arch", "params", "quant", "context", "size", "RAM")?;
            for e in &list {
                let name: String = e.name.chars().take(w).collect();
                writeln!(
                    out,
                    "{name:<w$}  {:<11}  {:<4}  {:<8}  {:>7}  {:<7}  {:>7}  {:>10}  {:>10}",
                    e.source,
                    e.format,
                    e.architecture,
                    crate::present::params(e.params),
                    e.quantization,
                    e.context_length,
                    bytes(e.file_size),
                    bytes(e.ram_needed)
                )?;
                if let Some(p) = &e.problem {
                    writeln!(out, "{:<w$}  ! {p}", "")?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// A GGUF file, the name of one in the workspace's models/ folder or the model library
    /// (`lathe models list`: an added path, the HF cache, the Ollama store), ollama:MODEL[@HOST:PORT]
    /// (an Ollama server) or openai:MODEL@http://HOST:PORT/v1 (an OpenAI-compatible server; the
    /// key from $LATHE_API_KEY or $OPENAI_API_KEY).
    #[arg(long, value_name = "FILE_OR_NAME")]
    pub model: String,
    /// Stream one answer to this prompt to stdout and exit (status and timings go to stderr).
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long)]
    pub system: Option<String>,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: i32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Stop the answer at this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Context size in tokens (0: the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: u32,
    /// Threads (default: one per physical core).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Print the timings as JSON on stderr.
    #[arg(long)]
    pub json: bool,
    /// Answer from a knowledge collection: each message retrieves its top chunks (hybrid search),
    /// which go into the prompt as numbered sources, listed under the answer.
    #[arg(long, value_name = "COLLECTION")]
    pub kb: Option<String>,
}

impl ChatArgs {
    /// The sampling flags, for the one answer or for the conversation the workstation opens.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ..Default::default()
        }
    }

    /// How the model is loaded (--ctx, --threads).
    pub fn options(&self) -> Options {
        let mut opts = Options { ctx: self.ctx, ..Default::default() };
        if let Some(n) = self.threads.filter(|n| *n > 0) {
            opts.threads = n;
        }
        opts
    }
}

/// `lathe export`: a job of the service (recorded in `lathe.jobs` like one started in the
/// workstation); its phases are printed as they come.
pub fn export(ws: &Workspace, args: ExportArgs) -> anyhow::Result<()> {
    use crate::engine::jobs::JobEvent;
    use crate::service::{Event, ModelSource, Service, Settings};
    let quant = Quant::parse(&args.quant).map_err(anyhow::Error::msg)?;
    let source = ModelSource::parse(&args.source)?;
    let name = source.name();
    let imatrix = args.imatrix.as_deref().map(|s| crate::service::quant::Calibration::parse(s, args.imatrix_tokens));
    if let Some(server) = crate::service::attached::Attached::find(ws) {
        return export_through(&server, source, args.out, quant, imatrix);
    }
    let out = args.out.unwrap_or_else(|| crate::service::export_path(ws, &name, quant));
    let (tx, events) = std::sync::mpsc::channel::<Event>();
    let mut service = Service::start(Some(ws), Settings::default(), move |ev| {
        let _ = tx.send(ev);
    });
    service.wait_catalog(std::time::Duration::from_secs(60))?;
    let t = std::time::Instant::now();
    let job = service.export(source, out, quant, imatrix).ok_or_else(|| anyhow!("exporting a run needs a workspace"))?;
    let (mut wrote, mut ended) = (None, None);
    for ev in &events {
        match ev {
            Event::Job(JobEvent::Progress { id, message, .. }) if id == job => eprintln!("lathe: {message}"),
            Event::Exported(e) => wrote = Some(e),
            Event::Job(JobEvent::Finished { id, status }) if id == job => {
                ended = Some(status);
                break;
            }
            // The workstation's business (samples, other jobs).
            _ => {}
        }
    }
    // Closing the service writes the job's record before the process ends.
    drop(service);
    report_export(ended, wrote, quant, &name, t)
}

/// What `lathe export` says at the end: the file written, or why there is none.
fn report_export(ended: Option<crate::engine::jobs::JobStatus>, wrote: Option<crate::engine::export::gguf::Exported>, quant: Quant, name: &str, t: std::time::Instant) -> anyhow::Result<()> {
    use crate::engine::jobs::JobStatus;
    match (ended, wrote) {
        (Some(JobStatus::Done), Some(e)) => {
            println!(
                "wrote {} ({}, {} tensors, {}) in {:.1} s\nOllama: ollama create {} -f {}",
                e.path.display(),
                quant.name(),
                e.tensors,
                bytes(e.bytes),
                t.elapsed().as_secs_f64(),
                name,
                e.modelfile.display()
            );
            Ok(())
        }
        (Some(JobStatus::Failed(e) | JobStatus::Exists(e)), _) => bail!(e),
        (Some(JobStatus::Cancelled), _) => bail!("The export was cancelled; nothing was kept."),
        _ => bail!("The export ended without a result; see logs/lathe.log."),
    }
}

/// `lathe export` when a `lathe serve` owns the workspace: the server writes the file into the
/// workspace's models/ folder in a job (a run by id, a model folder the library lists).
fn export_through(server: &crate::service::attached::Attached, source: crate::service::ModelSource, out: Option<PathBuf>, quant: Quant, imatrix: Option<crate::service::quant::Calibration>) -> anyhow::Result<()> {
    use crate::engine::jobs::JobEvent;
    use crate::service::Event;
    if let Some(out) = out {
        bail!("lathe serve (pid {}) owns this workspace and writes exports into its models/ folder; drop --out {} (or stop the server with `kill -TERM {}`).", server.owner.pid, out.display(), server.owner.pid);
    }
    let name = source.name();
    super::catch_interrupts();
    let t = std::time::Instant::now();
    let job = server.export(&source, quant, imatrix.as_ref())?;
    let (mut wrote, mut ended) = (None, None);
    super::wait_server_job(server, job, |ev| {
        match ev {
            Event::Job(JobEvent::Progress { message, .. }) => eprintln!("lathe: {message}"),
            Event::Exported(e) => wrote = Some(e),
            Event::Job(JobEvent::Finished { status, .. }) => ended = Some(status),
            _ => {}
        }
        Ok(())
    })?;
    report_export(ended, wrote, quant, &name, t)
}

/// A GGUF path or server spec as it is, or a name looked up in the model library (the
/// server's, when one owns the workspace).
pub fn resolve_model(ws: &Workspace, name: &str) -> anyhow::Result<ModelRef> {
    // A library GGUF model is answered by the workspace's server when one runs (one copy of it
    // for every client).
    if let Some(server) = crate::service::attached::Attached::find(ws) {
        return Ok(server.chat_model(name)?);
    }
    if let Some(found) = crate::service::models::direct(name) {
        return Ok(found?);
    }
    let cat = crate::service::open_catalog(ws).ok();
    Ok(crate::service::models::resolve(ws, cat.as_ref(), name)?)
}

/// One answer from a server model, streamed to stdout, its figures to stderr.
fn chat_remote(remote: &Remote, messages: &[Message], sampling: &Sampling) -> anyhow::Result<()> {
    let cancel = AtomicBool::new(false);
    let mut out = std::io::stdout().lock();
    let (_, st) = remote
        .generate(messages, sampling, &cancel, &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })
        .map_err(anyhow::Error::msg)?;
    let _ = writeln!(out);
    eprintln!("lathe: {}: first token {:.2} s, {} tokens at {:.1} tok/s", remote.describe(), st.first_token_secs, st.generated_tokens, st.tokens_per_s());
    Ok(())
}

/// The top chunks of a collection for a question (hybrid search), as sources.
fn retrieve(ws: &Workspace, kb: &str, question: &str) -> anyhow::Result<(Vec<Hit>, Retrieval)> {
    let req = SearchRequest { collection: kb.to_string(), query: question.to_string(), mode: SearchMode::Hybrid, k: ground::SOURCES, path: None, model: None };
    let r = crate::service::knowledge::search_once(ws, &req)?;
    if r.truncated {
        eprintln!("lathe: the question was longer than the embedding model takes; it was searched with its beginning.");
    }
    let sources = ground::sources(kb, &r.hits);
    Ok((r.hits, Retrieval { collection: kb.to_string(), sources, millis: r.millis }))
}

/// The sources under an answer.
fn print_sources(r: Option<&Retrieval>) {
    let Some(r) = r else { return };
    if r.sources.is_empty() {
        println!("(nothing in {} matched; answered without sources)", r.collection);
        return;
    }
    println!("Sources ({}):", r.collection);
    for s in &r.sources {
        let under = if s.headings.is_empty() { String::new() } else { format!("  ({})", s.headings) };
        println!("  [{}] {}{under}", s.n, s.place());
    }
}

pub fn chat(ws: &Workspace, args: ChatArgs) -> anyhow::Result<()> {
    let model = resolve_model(ws, &args.model)?;
    let Some(prompt) = args.prompt.clone() else {
        bail!("--prompt is needed here; without it `lathe chat --model` opens the workstation on the Chat pane.");
    };
    if prompt.trim().is_empty() {
        bail!("The prompt is empty; give --prompt some text.");
    }
    let sampling = args.sampling();
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message { role: "system".into(), content: s.clone() });
    }
    messages.push(Message { role: "user".into(), content: prompt.clone() });
    let retrieval = args.kb.as_deref().map(|kb| retrieve(ws, kb, &prompt)).transpose()?;
    if let Some((hits, r)) = &retrieval {
        messages = ground::grounded(&messages, hits, &r.sources);
    }
    let cancel = AtomicBool::new(false);
    let path = match model {
        ModelRef::File(path) => path,
        ModelRef::Server(remote) => {
            chat_remote(&remote, &messages, &sampling)?;
            let r = retrieval.as_ref().map(|(_, r)| r);
            print_sources(r);
            if let Some(r) = r {
                eprintln!("lathe: retrieval {:.0} ms ({} sources)", r.millis, r.sources.len());
            }
            return Ok(());
        }
    };
    let t = std::time::Instant::now();
    let g = Gguf::load(&path).map_err(anyhow::Error::msg)?;
    let opts = args.options();
    let mut session = g.session(&opts).map_err(anyhow::Error::msg)?;
    let load_secs = t.elapsed().as_secs_f64();
    if g.template.is_none() {
        eprintln!("lathe: {} has no chat template; using lathe's plain Instruction/Response format", path.display());
    }
    let text = g.render(&messages, true).map_err(anyhow::Error::msg)?;
    let tokens = g.tokenize(&text);
    let mut out = std::io::stdout().lock();
    let (_, st) = session
        .generate(&tokens, &sampling, &cancel, &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })
        .map_err(anyhow::Error::msg)?;
    let _ = writeln!(out);
    drop(out);
    let r = retrieval.as_ref().map(|(_, r)| r);
    print_sources(r);
    if args.json {
        eprintln!(
            "{}",
            serde_json::json!({"load_secs": load_secs, "stats": st, "prompt_tokens_per_s": st.prompt_tokens_per_s(), "tokens_per_s": st.tokens_per_s(), "retrieval": r})
        );
    } else {
        let retrieved = r.map(|r| format!("retrieval {:.0} ms ({} sources), ", r.millis, r.sources.len())).unwrap_or_default();
        eprintln!(
            "lathe: {retrieved}{} prompt tokens ({:.0} tok/s), first token {:.2} s, {} tokens at {:.1} tok/s, context {}/{}, stop: {:?}",
            st.prompt_tokens,
            st.prompt_tokens_per_s(),
            st.first_token_secs,
            st.generated_tokens,
            st.tokens_per_s(),
            st.context_used,
            st.context_size,
            st.stop
        );
    }
    Ok(())
}
