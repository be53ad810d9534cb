//! Headless subcommands, one file each. They call engines, never the UI (the benchmarks, which
//! drive the UI, live in `bench/`).

pub mod chat;
pub mod data;
pub mod kb;
pub mod quant;
pub mod sysinfo;
pub mod train;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lathe",
    version,
    about = "A terminal workstation for fine-tuning, querying and chatting with small language models.",
    long_about = "A terminal workstation for fine-tuning, querying and chatting with small language models.\n\n\
        Run without a command to open the workstation. The workspace folder holds everything lathe\n\
        stores; it is --home, else $LATHE_HOME, else `home` in config.toml, else $XDG_DATA_HOME/lathe."
)]
pub struct Cli {
    /// The workspace folder (created when missing).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// A shipped theme (dark, light, high-contrast, basic16) or a theme file's path.
    #[arg(long, global = true, value_name = "NAME|PATH")]
    pub theme: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/lathe/config.toml). Give it before the
    /// command (`lathe train --config` is the training config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Datasets in the workspace catalog: import, list, drop, export.
    Data {
        #[command(subcommand)]
        what: DataCmd,
    },
    /// Run one SQL statement against the workspace catalog (files can be read directly too:
    /// select * from 'x.parquet').
    Sql {
        /// The statement.
        query: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the System pane's figures once: CPU per core, memory, swap, disk, GPUs.
    Sysinfo {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fine-tune a model on a training-set view, headless (the Training pane runs the same
    /// engine). `lathe train --demo` trains the bundled demo model from scratch.
    Train(Box<train::TrainArgs>),
    /// Training runs: list, show one, compare two.
    Runs {
        #[command(subcommand)]
        what: train::RunsCmd,
    },
    /// Mean token loss and perplexity of a model (optionally with a run's adapter or weights)
    /// on a view's split or on the raw text of a file.
    Eval(train::EvalArgs),
    /// Write a model folder or a run (base + adapter merged) as GGUF for llama.cpp and Ollama.
    Export(chat::ExportArgs),
    /// Which quantized file to ship: each type measured on your held-out data (report), and the
    /// reports kept (list).
    Quant {
        #[command(subcommand)]
        what: quant::QuantCmd,
    },
    /// Saved conversations: list them, export one as Markdown or JSON.
    Chats {
        #[command(subcommand)]
        what: chat::ChatsCmd,
    },
    /// The model library: list what lathe can see, add paths.
    Models {
        #[command(subcommand)]
        what: chat::ModelsCmd,
    },
    /// Chat with a GGUF model through llama.cpp: `--prompt` streams one answer to stdout.
    Chat(chat::ChatArgs),
    /// Merge a LoRA adapter (PEFT layout) into its base model and write a new model folder.
    Merge {
        /// The base model folder.
        #[arg(long)]
        model: PathBuf,
        /// The adapter folder (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sentence embeddings of texts from a local embedding model (BERT family: all-MiniLM, bge,
    /// e5, gte), printed as JSON.
    Embed {
        /// The model folder (with its sentence-transformers files: modules.json, 1_Pooling/).
        #[arg(long)]
        model: PathBuf,
        /// A prompt named in the model's config_sentence_transformers.json (e5's "query").
        #[arg(long)]
        prompt: Option<String>,
        /// The texts; with none, one text per line of standard input.
        texts: Vec<String>,
    },
    /// Knowledge collections: your documents embedded into Lance datasets and searched (vector,
    /// full text, hybrid).
    Kb {
        #[command(subcommand)]
        what: kb::KbCmd,
    },
    /// Own the workspace and answer over HTTP until stopped (SIGTERM or Ctrl-C): /health,
    /// /metrics, /openapi.json, /docs, OpenAI's /v1 (models, chat, completions, embeddings) and
    /// lathe's own /api (datasets, read-only SQL, runs, jobs, conversations, collections, events).
    /// While it runs, the workstation and the CLI on the same workspace work through it.
    Serve {
        /// Where to listen; loopback unless an API key is given. Port 0 picks a free one (the
        /// address is printed and recorded in the workspace's serve.json).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The key every request must bring (`Authorization: Bearer KEY`); LATHE_API_KEY when
        /// not given.
        #[arg(long)]
        api_key: Option<String>,
        /// Answers decoded together from one model (llama.cpp sequences in one batch).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        slots: u16,
        /// Requests that may wait for a slot; one more is answered 503 with Retry-After. Queued
        /// requests hold their bodies (at most 8 MiB each).
        #[arg(long, default_value_t = 32)]
        queue: usize,
        /// Tokens of context shared equally by the slots (0: the model's own, at most 8192).
        #[arg(long, default_value_t = 0)]
        ctx: usize,
        /// llama.cpp's threads (default: one per physical core).
        #[arg(long)]
        threads: Option<i32>,
        /// A folder whose files API clients may import as datasets or add to collections
        /// (repeat it for several). Without one, requests name no files at all.
        #[arg(long = "allow", value_name = "DIR")]
        allow: Vec<std::path::PathBuf>,
        /// Start it in the background (its own session: closing the terminal or losing the SSH
        /// link leaves it running), print where it listens, and return.
        #[arg(long)]
        detach: bool,
    },
    /// Measure lathe itself; each figure is printed beside its target.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C (and SIGTERM) cancel a job cleanly (a run keeps its last checkpoint, an ingest its last
/// commit).
pub(crate) fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic; ignoring SIGXFSZ turns a file-size limit
    // into a write error that the job reports (keeping what it saved) instead of a kill.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

/// `wait_job` for a job of the server that owns the workspace: its events (a run's training
/// events and an export's result included) until it finishes; Ctrl-C asks the server to cancel
/// it once. The server's job goes on if this process is killed.
pub(crate) fn wait_server_job(
    server: &crate::service::attached::Attached,
    job: crate::engine::jobs::JobId,
    mut on_event: impl FnMut(crate::service::Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use crate::engine::jobs::JobEvent;
    use crate::service::Event;
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel::<Result<Event, String>>();
    let follower = server.clone();
    std::thread::spawn(move || {
        let r = follower.follow_job(job, &mut |ev| tx.send(Ok(ev)).is_ok());
        if let Err(e) = r {
            let _ = tx.send(Err(e));
        }
    });
    let mut cancelling = false;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) && !cancelling {
            cancelling = true;
            server.cancel_job(job)?;
        }
        let ev = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => anyhow::bail!("lost lathe serve (pid {}) while following job {job}: {e}", server.owner.pid),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("lathe serve (pid {}) stopped before job {job} ended; `lathe runs list` shows where it got.", server.owner.pid),
        };
        let done = matches!(ev, Event::Job(JobEvent::Finished { id, .. }) if id == job);
        on_event(ev)?;
        if done {
            return Ok(());
        }
    }
}

/// Follows one job's events until it finishes: Ctrl-C (after `catch_interrupts`) asks the service
/// to cancel it once, and every event is handed to `on_event`, the finishing one included.
pub(crate) fn wait_job(
    service: &mut crate::service::Service,
    events: &std::sync::mpsc::Receiver<crate::service::Event>,
    job: crate::engine::jobs::JobId,
    mut on_event: impl FnMut(crate::service::Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use crate::engine::jobs::JobEvent;
    use crate::service::Event;
    use std::sync::mpsc::RecvTimeoutError;
    let mut cancelling = false;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) && !cancelling {
            cancelling = true;
            service.cancel_job(job);
        }
        let ev = match events.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // The job has ended and its record is queued for lathe.jobs.
        let done = matches!(ev, Event::Job(JobEvent::Finished { id, .. }) if id == job);
        on_event(ev)?;
        if done {
            return Ok(());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Import a CSV/TSV, Parquet, JSON or JSONL file, a glob or a folder as a dataset.
    Import {
        path: PathBuf,
        /// The dataset's name (default: from the file name).
        #[arg(long)]
        name: Option<String>,
        /// Overwrite a dataset of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// List the datasets: name, rows, columns, source size, source, when imported.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a dataset.
    Drop { name: String },
    /// Training-set views: a named query plus a format, split into train and eval.
    View {
        #[command(subcommand)]
        what: ViewCmd,
    },
    /// Write a dataset, or a query's result, to .csv, .parquet or .jsonl:
    /// `lathe data export NAME OUT` or `lathe data export --sql QUERY OUT`.
    Export {
        /// NAME OUT, or just OUT with --sql (OUT's extension picks the format).
        #[arg(num_args = 1..=2, value_name = "NAME|OUT")]
        args: Vec<String>,
        /// Export this query's result instead of a dataset.
        #[arg(long)]
        sql: Option<String>,
        /// The file to write (instead of the last argument).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ViewCmd {
    /// Define a view: the query must give the format's columns (alpaca: instruction, input,
    /// output; chat: messages; completion: prompt, completion; text: text).
    Create {
        name: String,
        #[arg(long)]
        sql: String,
        #[arg(long, value_parser = ["alpaca", "chat", "completion", "text"])]
        format: String,
        /// The share of rows held out for eval, chosen by a hash of each row.
        #[arg(long, default_value_t = crate::engine::data::views::DEFAULT_EVAL_FRACTION)]
        eval_fraction: f64,
        /// Redefine a view of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// List the views with their train and eval row counts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print formatted examples of a view.
    Show {
        name: String,
        #[arg(long, default_value_t = 3)]
        limit: usize,
        #[arg(long, value_parser = ["train", "eval"], default_value = "train")]
        split: String,
    },
    /// Remove a view (its data stays).
    Drop { name: String },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// The catalog against DuckDB itself: an aggregate over a Parquet file, a CSV import, and the
    /// grid's memory while scrolling a large result. Needs `pip install duckdb==1.5.6` for the peer.
    Data {
        /// Rows in the generated Parquet file.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Rows in the generated CSV file (about 1 GB at the default).
        #[arg(long, default_value_t = 14_000_000)]
        csv_rows: u64,
        /// Runs of each timing (the median is shown).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Sentence-embedding throughput and peak RSS of a model (all-MiniLM-L6-v2, say) on paragraphs
    /// of the Python standard library, beside sentence-transformers when it is installed.
    Embed {
        /// The embedding model folder.
        #[arg(long)]
        model: PathBuf,
        /// Paragraphs to embed.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Skip the sentence-transformers peer.
        #[arg(long)]
        no_peer: bool,
        /// Internal: embed a JSON list of texts in this process and print JSON.
        #[arg(long, hide = true)]
        child: bool,
        #[arg(long, hide = true)]
        texts_file: Option<PathBuf>,
        #[arg(long, hide = true)]
        out: Option<PathBuf>,
    },
    /// The knowledge engine on the Python standard library's sources with an embedding model
    /// (all-MiniLM-L6-v2): ingest chunks/s and peak RSS beside sentence-transformers + lancedb,
    /// recall@5 of each search mode on hand-written questions, query latency p50/p99 at about
    /// 100k chunks beside lancedb, and the ANN index's recall@10 against exact search.
    Kb {
        #[arg(long)]
        model: PathBuf,
        /// Chunks in the collection whose queries are timed.
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Skip the sentence-transformers + lancedb peer.
        #[arg(long)]
        no_peer: bool,
        /// Internal: ingest the files listed in --files into a workspace and print JSON.
        #[arg(long, hide = true)]
        child: bool,
        #[arg(long, hide = true)]
        files: Option<PathBuf>,
        #[arg(long, hide = true)]
        texts: Option<PathBuf>,
    },
    /// The importance matrix's cost at TinyLlama-1.1B shapes (random weights): tokens/s beside
    /// `lathe eval`'s forward pass over the same tokens, and beside PyTorch + transformers with a
    /// forward pre-hook on every projection when `python3 -c "import torch, transformers"` works.
    Imatrix {
        /// Sequences to read (20 of 512 tokens: the 10k tokens in the chunks lathe computes a matrix
        /// over by default).
        #[arg(long, default_value_t = 20)]
        chunks: usize,
        #[arg(long, default_value_t = 512)]
        seq: usize,
        /// Transformer blocks (22 is TinyLlama; fewer for a quick look).
        #[arg(long, default_value_t = 22)]
        layers: usize,
        /// Skip the PyTorch peer.
        #[arg(long)]
        no_peer: bool,
        /// Internal: measure lathe in this process and print JSON.
        #[arg(long, hide = true)]
        child: bool,
    },
    /// `lathe serve` under load: 1, 4 and 16 clients streaming chat answers at once from the
    /// TinyLlama-shaped Q4_K_M file of `bench chat`: aggregate tokens/s, time to first token,
    /// nothing lost; one stream beside the same generation in-process.
    Serve {
        #[arg(long, default_value_t = 2)]
        threads: i32,
        /// Tokens per answer.
        #[arg(long, default_value_t = 128)]
        gen: usize,
        /// Concurrent clients, one measurement each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
        clients: Vec<usize>,
        /// Another GGUF file to serve (the demo's export, say) instead of the TinyLlama-shaped one.
        #[arg(long, value_name = "FILE")]
        model: Option<std::path::PathBuf>,
    },
    /// llama.cpp inference through lathe against llama.cpp itself (llama-cpp-python, when
    /// installed) at TinyLlama-1.1B shapes, Q8_0 and Q4_K_M: prompt and generation tokens/s, time
    /// to the first token, and the Chat pane's cost while streaming.
    Chat {
        #[arg(long, default_value_t = 2)]
        threads: i32,
        #[arg(long, default_value_t = 128)]
        prompt: usize,
        #[arg(long, default_value_t = 64)]
        gen: usize,
        /// Rounds of each measurement, lathe and the peer alternating (the best is shown).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Skip the llama.cpp peer.
        #[arg(long)]
        no_peer: bool,
        /// Internal: measure one GGUF file in this process and print JSON.
        #[arg(long, hide = true)]
        child: bool,
        #[arg(long, hide = true)]
        model: Option<PathBuf>,
        /// Internal: with --child, this many answers at once in this process, each on its own thread.
        #[arg(long, hide = true, default_value_t = 0)]
        together: usize,
    },
    /// Start-up time, idle CPU and memory, frame render time and key latency under full CPU load.
    Ui {
        /// Seconds to measure idle CPU over.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
        /// How many start-ups to time.
        #[arg(long, default_value_t = 10)]
        starts: usize,
    },
    /// Training tokens/s and peak RSS of a LoRA step at TinyLlama-1.1B shapes (random weights, r=8
    /// on q and v, batch 1), with and without gradient checkpointing, beside PyTorch + peft when
    /// `python3 -c "import torch, peft"` works.
    Train {
        /// Timed steps per configuration (after one warm-up step).
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        /// Transformer blocks (22 is TinyLlama; fewer for a quick look).
        #[arg(long, default_value_t = 22)]
        layers: usize,
        /// Skip the PyTorch peer.
        #[arg(long)]
        no_peer: bool,
        /// A QLoRA step instead (NF4 base, r=16 on every projection, gradient checkpointing),
        /// with AdamW and AdamW8bit, beside PyTorch + peft + bitsandbytes; --seq 512 is the
        /// usual length.
        #[arg(long)]
        qlora: bool,
        /// With --qlora: Phi-2 shapes (2.7B) instead of TinyLlama's.
        #[arg(long, requires = "qlora")]
        phi2: bool,
        /// Internal: measure one configuration in this process and print JSON.
        #[arg(long, hide = true)]
        child: bool,
        #[arg(long, hide = true)]
        gc: bool,
        #[arg(long, hide = true)]
        qlora_child: bool,
        #[arg(long, hide = true)]
        model: Option<PathBuf>,
        #[arg(long, hide = true, value_parser = crate::engine::train::optim::Optimizer::parse, default_value = "adamw")]
        optim: crate::engine::train::optim::Optimizer,
        #[arg(long, hide = true, value_parser = crate::engine::train::base::BasePrecision::parse, default_value = "nf4")]
        base: crate::engine::train::base::BasePrecision,
    },
}

/// `lathe embed`: one JSON object with the model's identity and a vector per text.
pub fn embed(model: &std::path::Path, prompt: Option<&str>, texts: Vec<String>) -> anyhow::Result<()> {
    let texts = if texts.is_empty() { std::io::stdin().lines().collect::<Result<Vec<_>, _>>()? } else { texts };
    // Each batch frees and reallocates the same large buffers: keep them (twice the speed here).
    crate::engine::alloc::keep_freed_memory();
    let done = crate::service::knowledge::embed_once(model, prompt, &texts)?;
    if !done.truncated.is_empty() {
        eprintln!("note: {} of {} texts were longer than {}'s {} tokens and were cut there.", done.truncated.len(), texts.len(), done.model, done.max_tokens);
    }
    println!("{}", serde_json::to_string(&done)?);
    Ok(())
}
