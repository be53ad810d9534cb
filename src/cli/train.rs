//! `lathe train`, `lathe runs`, `lathe eval`: the training engine from the command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use crate::engine::data::views::Split;
use crate::engine::train::base::BasePrecision;
use crate::engine::train::optim::Optimizer;
use crate::engine::train::demo;
use crate::engine::train::spec::{RunSpec, TrainConfig};
use crate::engine::train::trainer::{self, TrainEvent};
use crate::engine::workspace::Workspace;
use crate::service::{Event, Service, Settings, TrainWhat};
use crate::units::{bytes, duration};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A Hugging Face model folder (config.json, tokenizer.json, *.safetensors).
    #[arg(long, required_unless_present_any = ["demo", "resume"])]
    pub model: Option<PathBuf>,
    /// The training-set view (see `lathe data view list`).
    #[arg(long, required_unless_present_any = ["demo", "resume"])]
    pub view: Option<String>,
    /// Train the bundled demo: a tiny Llama built from scratch on the `instruct` view.
    #[arg(long, conflicts_with_all = ["model", "view", "resume"])]
    pub demo: bool,
    /// Continue an interrupted or cancelled run from its last checkpoint.
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
    /// A TOML file of training settings (the keys of `lathe train --print-config`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Show the preview (examples with their loss mask, token lengths, memory) and exit.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_parser = ["lora", "full"])]
    pub method: Option<String>,
    #[arg(long)]
    pub lora_r: Option<usize>,
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Comma-separated module names (default: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW's decoupled weight decay (not applied to biases and norms).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub micro_batch: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Pack several examples into each sequence.
    #[arg(long)]
    pub packing: bool,
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Stop after this many evals without improvement.
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Recompute each block in backward: less activation memory, about a third slower.
    #[arg(long)]
    pub grad_checkpointing: bool,
    /// Hold the frozen base's projections in f32, bf16 (half the memory), nf4 (QLoRA: 4-bit
    /// NormalFloat, LoRA only) or nf4-dq (NF4 with 8-bit scales, as bitsandbytes' double quant).
    #[arg(long, value_name = "f32|bf16|nf4|nf4-dq", value_parser = BasePrecision::parse)]
    pub quant_base: Option<BasePrecision>,
    /// adamw, or adamw8bit: the moments kept in 8 bits (about a quarter of the memory).
    #[arg(long, value_name = "adamw|adamw8bit", value_parser = Optimizer::parse)]
    pub optim: Option<Optimizer>,
    /// Score greedy exact-match accuracy on this many eval examples at the end.
    #[arg(long)]
    pub exact_match: Option<usize>,
    /// Print one JSON object per event instead of text.
    #[arg(long)]
    pub json: bool,
}

impl TrainArgs {
    fn apply(&self, c: &mut TrainConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        set!(method, lora_r, lora_alpha, lora_dropout, lora_targets, lr, weight_decay, epochs, micro_batch, grad_accum, max_len, eval_every, checkpoint_every, seed, threads, exact_match);
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if self.patience.is_some() {
            c.patience = self.patience;
        }
        if self.packing {
            c.packing = true;
        }
        if let Some(p) = self.quant_base {
            c.quant_base = p;
        }
        if let Some(o) = self.optim {
            c.optim = o;
        }
        if self.grad_checkpointing {
            c.grad_checkpointing = true;
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// Every run: id, status, method, model, view, steps, losses, duration.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One run: parameters, metrics, artifacts.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Two runs side by side: parameters that differ and their results.
    Compare { a: String, b: String },
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The base model folder.
    #[arg(long, required_unless_present = "gguf")]
    pub model: Option<PathBuf>,
    /// Instead of a model folder, a GGUF file run through llama.cpp: the exact match of its greedy
    /// answers on --view (the figure a training run records in candle), or its perplexity on
    /// --text computed as llama.cpp's perplexity tool does (chunks of --max-len tokens, the second
    /// half of each scored).
    #[arg(long, value_name = "FILE.gguf", conflicts_with_all = ["model", "run"])]
    pub gguf: Option<PathBuf>,
    /// With --gguf and --text: the file it was quantized from (its f16 export): the KL divergence
    /// of --gguf from it, and how often both rank the same token first, as llama.cpp's
    /// perplexity --kl-divergence measures them.
    #[arg(long, value_name = "FILE.gguf", requires_all = ["gguf", "text"])]
    pub base: Option<PathBuf>,
    /// Evaluate with this run's adapter (or its trained weights).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    #[arg(long, conflicts_with = "text", required_unless_present = "text")]
    pub view: Option<String>,
    #[arg(long, value_parser = ["eval", "train"], default_value = "eval")]
    pub split: String,
    /// A text file: loss over its raw text (no template, no masking); with --gguf, perplexity.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Sequence length for windows of --text (llama.cpp's -c with --gguf), and truncation for
    /// --view.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// At most this many examples of the view.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Hold the base's projections as a run trained on it did (bf16, nf4, nf4-dq): the model as
    /// that training saw it.
    #[arg(long, value_name = "f32|bf16|nf4|nf4-dq", value_parser = BasePrecision::parse, default_value = "f32")]
    pub quant_base: BasePrecision,
    #[arg(long)]
    pub json: bool,
}

/// One training event as `lathe train` prints it.
fn event_line(ev: &TrainEvent) -> String {
    match ev {
        TrainEvent::Started { run_id, model, view, method, base, optimizer, total_steps, start_step, train_examples, eval_examples, trainable_params, total_params, lengths } => format!(
            "run {run_id}: {method} on {model} ({base} base, {optimizer}), view {view}\n  {train_examples} train / {eval_examples} eval examples; tokens per example: median {}, p95 {}, max {} ({} truncated)\n  {} of {} parameters train; steps {start_step}..{total_steps}",
            lengths.median, lengths.p95, lengths.max, lengths.truncated, trainable_params, total_params
        ),
        TrainEvent::Step(m) => {
            let eta = if m.step > 0 { m.elapsed_s / m.step as f64 * (m.total - m.step) as f64 } else { 0.0 };
            format!(
                "step {:>5}/{}  epoch {:.2}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.0} tok/s  rss {}  elapsed {}  eta {}",
                m.step, m.total, m.epoch, m.loss, m.lr, m.grad_norm, m.tokens_per_s, bytes(m.rss_bytes), duration(m.elapsed_s), duration(eta)
            )
        }
        TrainEvent::Eval { step, loss, best } => format!("eval  step {step}: loss {loss:.4} (best {best:.4})"),
        TrainEvent::Checkpoint { step } => format!("checkpoint at step {step}"),
        TrainEvent::Paused(p) => (if *p { "paused" } else { "resumed" }).to_string(),
        TrainEvent::Accuracy { correct, total } => {
            format!("exact match on eval: {correct}/{total} = {:.1}%", 100.0 * *correct as f64 / (*total).max(1) as f64)
        }
        TrainEvent::Note(n) => n.clone(),
    }
}

/// `lathe train`: the run is a job of the service (recorded in `lathe.jobs` like one started in
/// the workstation); its events are printed as they come.
pub fn train(ws: &Workspace, args: TrainArgs) -> anyhow::Result<()> {
    if let Some(server) = crate::service::attached::Attached::find(ws) {
        return train_through(&server, args);
    }
    let (tx, events) = std::sync::mpsc::channel::<Event>();
    let service = Service::start(Some(ws), Settings::default(), move |ev| {
        let _ = tx.send(ev);
    });
    let cat = service.wait_catalog(Duration::from_secs(60))?;
    let json = args.json;
    let what = if let Some(id) = &args.resume {
        // A run continues as it began: its base precision is part of what its adapter learned.
        if args.quant_base.is_some() || args.optim.is_some() {
            let started = trainer::saved_spec(&ws.runs_dir(), id).map_err(|e| anyhow!(e))?.config;
            if let Some(p) = args.quant_base.filter(|&p| p != started.quant_base) {
                bail!("Run {id} was started with a {} base and resumes with it; drop --quant-base, or start a new run with {}.", started.quant_base.name(), p.name());
            }
            if let Some(o) = args.optim.filter(|&o| o != started.optim) {
                bail!("Run {id} was started with {} and resumes with it (its checkpoint holds that optimizer's state); drop --optim, or start a new run with {}.", started.optim.name(), o.name());
            }
        }
        TrainWhat::Resume(id.clone())
    } else {
        let mut spec = if args.demo {
            demo::demo_spec(&cat, &ws.models_dir()).map_err(|e| anyhow!(e))?
        } else {
            let model = args.model.clone().ok_or_else(|| anyhow!("--model is required"))?;
            let view = args.view.clone().ok_or_else(|| anyhow!("--view is required"))?;
            RunSpec { model, view, config: TrainConfig::default() }
        };
        if let Some(path) = &args.config {
            spec.config = TrainConfig::from_toml(path).map_err(|e| anyhow!(e))?;
        }
        args.apply(&mut spec.config);
        spec.config.check().map_err(|e| anyhow!(e))?;
        if args.print_config {
            print!("{}", toml::to_string(&spec.config)?);
            return Ok(());
        }
        let p = crate::service::plan(&cat, &spec)?;
        if !json {
            print_plan(&p);
        }
        if args.dry_run {
            return Ok(());
        }
        TrainWhat::Spec(Box::new(spec))
    };
    drop(cat);
    super::catch_interrupts();
    let mut service = service;
    let job = service.train(what).ok_or_else(|| anyhow!("training needs a workspace"))?;
    let mut follow = RunFollower::new(json);
    super::wait_job(&mut service, &events, job, |ev| follow.on_event(ev))?;
    // Closing the service writes the job's record before the process ends.
    drop(service);
    follow.finish()
}

/// `lathe train` when a `lathe serve` owns the workspace: the run starts in the server (it goes
/// on if this command is killed; Ctrl-C cancels it) and its events print here as they would in
/// process. The settings go as the ones given (a --config file's and the flags'); the model is a
/// library name or a folder the library lists.
fn train_through(server: &crate::service::attached::Attached, args: TrainArgs) -> anyhow::Result<()> {
    use serde_json::{json, Value};
    let body = if let Some(id) = &args.resume {
        if args.quant_base.is_some() || args.optim.is_some() {
            bail!("Run {id} resumes as it started; drop --quant-base and --optim.");
        }
        json!({"resume": id})
    } else {
        let mut config = match &args.config {
            Some(path) => TrainConfig::from_toml(path).map_err(|e| anyhow!(e))?,
            None => TrainConfig::default(),
        };
        args.apply(&mut config);
        config.check().map_err(|e| anyhow!(e))?;
        // Only what differs from the defaults: the demo keeps its own settings otherwise.
        let (given, defaults) = (serde_json::to_value(&config)?, serde_json::to_value(TrainConfig::default())?);
        let changed: serde_json::Map<String, Value> = given.as_object().into_iter().flatten().filter(|(k, v)| defaults.get(k.as_str()) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if args.print_config {
            print!("{}", toml::to_string(&config)?);
            return Ok(());
        }
        let model = match (&args.demo, &args.model, &args.view) {
            (true, _, _) => None,
            (false, Some(m), Some(_)) => Some(std::path::absolute(m).unwrap_or_else(|_| m.clone()).display().to_string()),
            (false, None, _) => bail!("--model is required"),
            (false, _, None) => bail!("--view is required"),
        };
        let view = if args.demo { None } else { args.view.clone() };
        json!({"model": model, "view": view, "config": changed})
    };
    if args.resume.is_none() {
        let p: crate::service::TrainPlan = server.call("POST", "/api/runs/check", Some(&body))?;
        if !args.json {
            print_plan(&p);
        }
        if args.dry_run {
            return Ok(());
        }
    }
    super::catch_interrupts();
    let job = server.start_job("/api/runs", &body)?;
    eprintln!("lathe: training in lathe serve (pid {}, job {job}); Ctrl-C cancels it, and it goes on if this command is killed.", server.owner.pid);
    let mut follow = RunFollower::new(args.json);
    super::wait_server_job(server, job, |ev| follow.on_event(ev))?;
    follow.finish()
}

fn print_plan(p: &crate::service::TrainPlan) {
    println!("preview ({} train, {} eval examples; trained tokens in [brackets]):", p.train_examples, p.eval_examples);
    for e in &p.examples {
        println!("  {}", e.replace('\n', "\\n"));
    }
    println!(
        "token lengths: min {} median {} p95 {} max {}; {} of {} longer than max_len {}",
        p.lengths.min, p.lengths.median, p.lengths.p95, p.lengths.max, p.lengths.truncated, p.lengths.count, p.max_len
    );
    println!("memory estimate: {} (available {})", bytes(p.memory_needed), bytes(p.memory_available));
    if let Some(q) = p.memory_4bit.filter(|&q| !p.fits() && q <= p.memory_available) {
        println!("  it does not fit; with a 4-bit base (--method lora --quant-base nf4, QLoRA) it needs about {}", bytes(q));
    }
}

/// Prints a run's events as they come (a line per event, JSON lines with --json, a bar on a
/// terminal) and its end.
struct RunFollower {
    json: bool,
    tty: bool,
    outcome: Option<Result<trainer::Outcome, String>>,
}

impl RunFollower {
    fn new(json: bool) -> RunFollower {
        RunFollower { json, tty: std::io::stderr().is_terminal() && !json, outcome: None }
    }

    fn on_event(&mut self, ev: Event) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match ev {
            Event::Train(ev) if self.json => {
                writeln!(out, "{}", serde_json::to_string(&ev).unwrap_or_default())?;
                out.flush()?;
            }
            Event::Train(ev) => {
                writeln!(out, "{}", event_line(&ev))?;
                out.flush()?;
                if let (true, TrainEvent::Step(m)) = (self.tty, &ev) {
                    let w = 30;
                    let done = (m.step * w / m.total.max(1)).min(w);
                    eprint!("\r[{}{}] {}/{}\r", "#".repeat(done), "-".repeat(w - done), m.step, m.total);
                }
            }
            Event::TrainDone(r) => self.outcome = Some(r),
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.tty {
            eprintln!();
        }
        let o = self.outcome.ok_or_else(|| anyhow!("the run ended without a result; see logs/lathe.log"))?.map_err(|e| anyhow!(e))?;
        println!(
            "run {} {} after {} steps; {}: {}",
            o.run_id,
            o.ending.status().words(),
            o.steps,
            if o.ending == trainer::Ending::Cancelled { "checkpoint" } else { "saved" },
            o.artifact.display()
        );
        if o.ending == trainer::Ending::Cancelled {
            println!("`lathe train --resume {}` continues it.", o.run_id);
        }
        Ok(())
    }
}

pub fn runs(ws: &Workspace, cmd: RunsCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let cat = crate::service::Records::open(ws)?;
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    match cmd {
        RunsCmd::List { json } => {
            let runs = cat.runs()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&runs)?)?;
            } else if runs.is_empty() {
                writeln!(out, "no runs yet; start one with `lathe train --demo` or `lathe train --model DIR --view NAME`")?;
            } else {
                writeln!(out, "{:<21} {:<13} {:<6} {:>11} {:>10} {:>10} {:>8}  {:<10} model", "id", "status", "method", "step", "train", "best eval", "time", "view")?;
                for r in runs {
                    writeln!(
                        out,
                        "{:<21} {:<13} {:<6} {:>11} {:>10} {:>10} {:>8}  {:<10} {}",
                        r.id,
                        r.status,
                        r.method,
                        format!("{}/{}", r.step.unwrap_or(0), r.total_steps.unwrap_or(0)),
                        f(r.train_loss),
                        f(r.best_eval_loss),
                        duration(r.duration_s.unwrap_or(0.0)),
                        r.view,
                        r.model
                    )?;
                }
            }
        }
        RunsCmd::Show { id, json } => {
            let r = cat.run(&id)?;
            let m = cat.metrics(&id)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({"run": r, "metrics": m}))?)?;
                return Ok(());
            }
            // The same lines as the Runs pane's detail view.
            writeln!(out, "run {}", r.id)?;
            for line in crate::present::detail_lines(&r, &m) {
                writeln!(out, "  {line}")?;
            }
        }
        RunsCmd::Compare { a, b } => {
            let (ra, rb) = (cat.run(&a)?, cat.run(&b)?);
            for line in crate::present::compare_lines(&ra, &rb) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

pub fn eval(ws: &Workspace, args: EvalArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // The run and the view are read through the workspace's server when one runs; the model is
    // evaluated in this process either way.
    let cat = crate::service::Records::open(ws)?;
    if let Some(path) = &args.gguf {
        return eval_gguf(&cat, path, &args, out);
    }
    let mut model_dir = args.model.clone().ok_or_else(|| anyhow!("--model is required"))?;
    let mut adapter = None;
    if let Some(id) = &args.run {
        // With an adapter, the base is the --model given; a fully trained run is its own model.
        match cat.run(id)?.weights().map_err(anyhow::Error::msg)? {
            (_, Some(a)) => adapter = Some(a),
            (trained, None) => model_dir = trained,
        }
    }
    let (model, codec) = trainer::load_for_eval(&model_dir, adapter.as_deref(), args.quant_base).map_err(|e| anyhow!(e))?;
    let max_len = args.max_len.min(model.cfg.max_position_embeddings).max(2);
    let pad = codec.eos.as_ref().map(|e| e.1).unwrap_or(0);
    let (loss, what, tokens) = if let Some(path) = &args.text {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let ids = codec.tok.encode(text.as_str(), true).map_err(|e| anyhow!("tokenizer: {e}"))?.get_ids().to_vec();
        if ids.len() < 2 {
            bail!("{} has fewer than two tokens; give a longer text.", path.display());
        }
        // Non-overlapping windows; each predicts its tokens after the first.
        let units: Vec<_> = ids
            .chunks(max_len)
            .filter(|c| c.len() >= 2)
            .map(|c| crate::engine::train::text::Encoded { ids: c.to_vec(), train: vec![true; c.len()] })
            .collect();
        let n: usize = units.iter().map(|u| u.ids.len() - 1).sum();
        let l = crate::engine::train::step::mean_loss(&model, &units, 4, pad)?;
        (l, format!("text {}", path.display()), n)
    } else {
        let view = args.view.clone().unwrap_or_default();
        let split = if args.split == "train" { Split::Train } else { Split::Eval };
        let (_, ex) = cat.examples(&view, split, args.limit)?;
        if ex.is_empty() {
            bail!("View {view} has no rows in its {} split.", args.split);
        }
        let mut units = Vec::new();
        for e in &ex {
            let mut enc = codec.encode(e).map_err(|e| anyhow!(e))?;
            enc.ids.truncate(max_len);
            enc.train.truncate(max_len);
            if enc.trained_tokens() > 0 {
                units.push(enc);
            }
        }
        let n: usize = units.iter().map(|u| u.trained_tokens()).sum();
        let l = crate::engine::train::step::mean_loss(&model, &units, 4, pad)?;
        (l, format!("view {view} ({} split, {} examples)", args.split, units.len()), n)
    };
    if args.json {
        writeln!(out, "{}", serde_json::json!({"loss": loss, "perplexity": loss.exp(), "tokens": tokens, "on": what}))?;
    } else {
        writeln!(out, "{what}: mean token loss {loss:.4}, perplexity {:.3} over {tokens} tokens", loss.exp())?;
    }
    Ok(())
}

/// `lathe eval --gguf FILE --view NAME`: exact match through llama.cpp.
/// A GGUF's perplexity on a text file, as llama.cpp's perplexity tool gives it.
fn perplexity_gguf(path: &std::path::Path, text: &std::path::Path, args: &EvalArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use crate::engine::infer::{llama::Gguf, perplexity};
    let body = std::fs::read_to_string(text).map_err(|e| anyhow!("Cannot read {} ({e}); give a UTF-8 text file.", text.display()))?;
    let g = Gguf::load(path).map_err(|e| anyhow!(e))?;
    let threads = crate::engine::infer::llama::default_threads();
    let quiet = args.json;
    if let Some(base_path) = &args.base {
        let base = Gguf::load(base_path).map_err(|e| anyhow!(e))?;
        let d = perplexity::kl_divergence(&base, &g, &body, args.max_len, threads, &mut |done, of, kld| {
            if !quiet {
                eprint!("\rlathe: chunk {done}/{of}, mean KL divergence so far {kld:.5}   ");
            }
            true
        })
        .map_err(|e| anyhow!(e))?;
        if args.json {
            writeln!(out, "{}", serde_json::json!({"gguf": path, "base": base_path, "text": text, "divergence": d}))?;
        } else {
            eprintln!();
            writeln!(
                out,
                "{} against {} on {} ({} chunks of {} tokens, {} scored):\n  perplexity {:.4} +/- {:.5} (base {:.4} +/- {:.5}, {:+.2}%)\n  KL divergence {:.6} +/- {:.6} nats per token (max {:.4}); same top token {:.2}%",
                path.display(),
                base_path.display(),
                text.display(),
                d.quant.chunks,
                d.quant.n_ctx,
                d.quant.scored,
                d.quant.ppl,
                d.quant.ppl_err,
                d.base.ppl,
                d.base.ppl_err,
                100.0 * (d.quant.ppl / d.base.ppl - 1.0),
                d.kld,
                d.kld_err,
                d.kld_max,
                100.0 * d.same_top
            )?;
        }
        return Ok(());
    }
    let p = perplexity::perplexity(&g, &body, args.max_len, threads, &mut |done, of, ppl| {
        if !quiet {
            eprint!("\rlathe: chunk {done}/{of}, PPL so far {ppl:.4}   ");
        }
        true
    })
    .map_err(|e| anyhow!(e))?;
    if !quiet {
        eprintln!();
    }
    if args.json {
        writeln!(out, "{}", serde_json::json!({"gguf": path, "text": text, "perplexity": p}))?;
    } else {
        writeln!(
            out,
            "perplexity through llama.cpp on {}: {:.4} +/- {:.5} ({} chunks of {} tokens, {} scored; {:.1} s, {:.0} tokens/s)",
            text.display(),
            p.ppl,
            p.ppl_err,
            p.chunks,
            p.n_ctx,
            p.scored,
            p.secs,
            p.tokens as f64 / p.secs.max(1e-9)
        )?;
    }
    Ok(())
}

fn eval_gguf(cat: &crate::service::Records, path: &std::path::Path, args: &EvalArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use crate::engine::infer::llama::{exact_match, Gguf, Options};
    if let Some(text) = &args.text {
        return perplexity_gguf(path, text, args, out);
    }
    let view = args.view.as_deref().unwrap_or_default();
    let split = if args.split == "train" { Split::Train } else { Split::Eval };
    let n = args.limit.unwrap_or(200);
    let (_, examples) = cat.examples(view, split, Some(n))?;
    let g = Gguf::load(path).map_err(|e| anyhow!(e))?;
    let mut session = g.session(&Options { ctx: args.max_len.max(64) as u32, ..Default::default() }).map_err(|e| anyhow!(e))?;
    let t = std::time::Instant::now();
    let m = exact_match(&g, &mut session, &examples, 64).map_err(|e| anyhow!(e))?;
    let (ok, of) = (m.correct, m.asked);
    let pct = 100.0 * ok as f64 / of.max(1) as f64;
    if args.json {
        writeln!(out, "{}", serde_json::json!({"gguf": path, "view": view, "split": args.split, "correct": ok, "total": of, "exact_match": pct / 100.0}))?;
    } else {
        writeln!(out, "exact match through llama.cpp on {view} ({}): {ok}/{of} = {pct:.1}% in {:.1} s", args.split, t.elapsed().as_secs_f64())?;
    }
    Ok(())
}
