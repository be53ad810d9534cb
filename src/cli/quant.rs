//! `lathe quant report` (which quantized file to ship, measured on the user's held-out data) and
//! `lathe quant list` (the reports kept in lathe.quant_evals), printed as tables.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use crate::engine::data::quant_evals::{best_tradeoff, gap_closed, matrix_gain, QuantEval};
use crate::engine::export::gguf::Quant;
use crate::engine::jobs::{JobEvent, JobStatus};
use crate::engine::workspace::Workspace;
use crate::service::quant::Calibration;
use crate::service::quant_report::{EvalData, Report, ReportSpec, DEFAULT_EVAL_TOKENS};
use crate::service::{Event, ModelSource, Service, Settings};
use crate::units::bytes;

#[derive(Debug, Subcommand)]
pub enum QuantCmd {
    /// Make each quantized type of a run or model folder (without and with an importance matrix)
    /// and measure it against its f16 export on held-out data: size, perplexity, KL divergence,
    /// exact match where the view has answers, prompt and generation speed. The figures go into
    /// lathe.quant_evals (and the Runs pane); the best trade-off is marked.
    Report(ReportArgs),
    /// The reports kept in lathe.quant_evals, newest first.
    List {
        /// Only this report (its id), else every one.
        #[arg(long)]
        report: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run id (its base with its adapter, or its trained weights) or a Hugging Face folder.
    pub source: String,
    /// Measure on this view's eval split (its examples as training reads them).
    #[arg(long, conflicts_with = "text", required_unless_present = "text")]
    pub view: Option<String>,
    /// Measure on this text file (tokenized whole, as llama.cpp's perplexity tool does).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Comma-separated types (default: q8_0,q6_k,q5_k_m,q4_k_m,iq4_xs,q3_k_m,q2_k where the
    /// model's rows fit them, else the 32-value-block types).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// The importance matrix's data: a view (its training split), a text file, or a matrix file
    /// (.gguf/.dat). Default: the run's view, else --view.
    #[arg(long, value_name = "VIEW|FILE")]
    pub imatrix: Option<String>,
    #[arg(long, value_name = "N")]
    pub imatrix_tokens: Option<usize>,
    /// Chunk length in tokens (llama.cpp's -c), at most the model's context.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Held-out tokens to read (whole chunks).
    #[arg(long, default_value_t = DEFAULT_EVAL_TOKENS)]
    pub eval_tokens: usize,
    /// Examples with answers to score for exact match.
    #[arg(long, default_value_t = 32)]
    pub exact: usize,
    /// Keep every quantized file (default: only the f16 file and the importance matrix stay;
    /// `lathe export --quant TYPE --imatrix FILE` makes the one picked).
    #[arg(long)]
    pub keep: bool,
    /// The folder for the files (default: the workspace's models/NAME-quant/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(ws: &Workspace, cmd: QuantCmd) -> anyhow::Result<()> {
    match cmd {
        QuantCmd::Report(args) => report(ws, args),
        QuantCmd::List { report, json } => {
            let cat = crate::service::Records::open(ws)?;
            let mut rows = cat.quant_evals()?;
            if let Some(id) = &report {
                rows.retain(|r| &r.report == id);
                if rows.is_empty() {
                    bail!("There is no report {id}; `lathe quant list` shows them.");
                }
            }
            let out = &mut std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
                return Ok(());
            }
            if rows.is_empty() {
                writeln!(out, "No quantization reports yet; `lathe quant report RUN --view VIEW` makes one.")?;
            }
            let mut ids: Vec<&str> = rows.iter().map(|r| r.report.as_str()).collect();
            ids.dedup();
            for id in ids {
                let one: Vec<QuantEval> = rows.iter().filter(|r| r.report == id).cloned().collect();
                print_table(out, &one, best_tradeoff(&one))?;
                writeln!(out)?;
            }
            Ok(())
        }
    }
}

fn spec(args: &ReportArgs) -> anyhow::Result<ReportSpec> {
    let types = args.types.iter().map(|t| Quant::parse(t.trim())).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)?;
    if args.max_len < 16 {
        bail!("--max-len {} is too small to measure perplexity; use 16 or more.", args.max_len);
    }
    Ok(ReportSpec {
        source: ModelSource::parse(&args.source)?,
        eval: match (&args.view, &args.text) {
            (Some(v), _) => EvalData::View(v.clone()),
            (None, Some(t)) if t.is_file() => EvalData::Text(t.clone()),
            (None, Some(t)) => bail!("{} is not a file; give a UTF-8 text to measure on.", t.display()),
            (None, None) => bail!("Give --view VIEW or --text FILE to measure on."),
        },
        types,
        imatrix: args.imatrix.as_deref().map(|s| Calibration::parse(s, args.imatrix_tokens)),
        max_len: args.max_len,
        eval_tokens: args.eval_tokens,
        exact: args.exact,
        keep: args.keep,
        out: args.out.clone(),
    })
}

/// Runs the report as a job of the service (the server's, when one owns the workspace), its
/// progress on stderr, the table on stdout.
fn report(ws: &Workspace, args: ReportArgs) -> anyhow::Result<()> {
    let spec = spec(&args)?;
    let t = std::time::Instant::now();
    let (mut done, mut ended, mut said) = (None, None, String::new());
    let mut on_event = |ev: Event| {
        match ev {
            Event::Job(JobEvent::Progress { message, .. }) if !args.json && message != said => {
                eprintln!("lathe: {message}");
                said = message;
            }
            Event::QuantReported(r) => done = Some(r),
            Event::Job(JobEvent::Finished { status, .. }) => ended = Some(status),
            _ => {}
        }
        Ok(())
    };
    if let Some(server) = crate::service::attached::Attached::find(ws) {
        if let Some(out) = &spec.out {
            bail!("lathe serve (pid {}) owns this workspace and writes a report's files into its models/ folder; drop --out {}.", server.owner.pid, out.display());
        }
        super::catch_interrupts();
        let job = server.quant_report(&spec)?;
        super::wait_server_job(&server, job, on_event)?;
    } else {
        let (tx, events) = std::sync::mpsc::channel::<Event>();
        let mut service = Service::start(Some(ws), Settings::default(), move |ev| {
            let _ = tx.send(ev);
        });
        service.wait_catalog(std::time::Duration::from_secs(60))?;
        super::catch_interrupts();
        let job = service.quant_report(spec).ok_or_else(|| anyhow!("a report needs a workspace"))?;
        super::wait_job(&mut service, &events, job, &mut on_event)?;
        drop(service);
    }
    let out = &mut std::io::stdout().lock();
    match (ended, done) {
        (Some(JobStatus::Done), Some(r)) => {
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
            } else {
                print_report(out, &r, t.elapsed().as_secs_f64())?;
            }
            if !r.failed.is_empty() {
                bail!("{} could not be made (see the notes); the other files' figures are in lathe.quant_evals.", r.failed.join(", "));
            }
            Ok(())
        }
        (Some(JobStatus::Failed(e) | JobStatus::Exists(e)), _) => bail!(e),
        (Some(JobStatus::Cancelled), _) => bail!("The report was cancelled; the files measured before are in lathe.quant_evals (`lathe quant list`)."),
        _ => bail!("The report ended without a result; see logs/lathe.log."),
    }
}

fn print_report(out: &mut dyn Write, r: &Report, secs: f64) -> anyhow::Result<()> {
    print_table(out, &r.rows, r.best)?;
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    if let Some(b) = r.best.map(|i| &r.rows[i]) {
        let how = match (&b.path, b.imatrix) {
            (Some(p), _) => format!("it is {p}"),
            (None, true) => match &r.matrix {
                Some(m) => format!("make it with `lathe export {} --quant {} --imatrix {}`", b.source, b.quant, m.display()),
                None => format!("make it with `lathe export {} --quant {} --imatrix` and the calibration data of this report", b.source, b.quant),
            },
            (None, false) => format!("make it with `lathe export {} --quant {}`", b.source, b.quant),
        };
        writeln!(out, "best trade-off (*): {}: {} at KL divergence {:.5}; {how}", b.label(), bytes(b.size_bytes), b.kld)?;
    }
    writeln!(out, "report {} in {:.0} s; files in {}", r.id, secs, r.folder.display())?;
    Ok(())
}

/// One report as a table, largest file first.
pub fn print_table(out: &mut dyn Write, rows: &[QuantEval], best: Option<usize>) -> anyhow::Result<()> {
    let Some(first) = rows.first() else { return Ok(()) };
    writeln!(out, "report {} of {} on {} ({} sequences of up to {} tokens){}", first.report, first.source, first.eval, first.chunks, first.n_ctx, first.created_at.get(..16).map(|d| format!(", {d}")).unwrap_or_default())?;
    writeln!(out, "  {:<16} {:>10} {:>12} {:>10} {:>9} {:>7} {:>8} {:>8} {:>10}", "type", "size", "perplexity", "KL div.", "same top", "exact", "prompt/s", "gen/s", "gap closed")?;
    let f1 = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    for (i, r) in rows.iter().enumerate() {
        let mark = if best == Some(i) { "*" } else { " " };
        writeln!(
            out,
            "{mark} {:<16} {:>10} {:>12.4} {:>10.6} {:>8.2}% {:>7} {:>8} {:>8} {:>10}",
            r.label(),
            bytes(r.size_bytes),
            r.ppl,
            r.kld,
            r.same_top * 100.0,
            r.exact_match.map(|e| format!("{:.1}%", e * 100.0)).unwrap_or_else(|| "-".into()),
            f1(r.prompt_tps),
            f1(r.gen_tps),
            gap_closed(rows, r)
        )?;
    }
    let gains: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let (ppl, kld) = matrix_gain(rows, r)?;
            let pct = |v: Option<f64>, what: &str| v.map(|x| format!("{} {:.0}% of {what}", if x < 0.0 { "adds" } else { "closes" }, x.abs() * 100.0));
            let said: Vec<String> = [pct(ppl, "the perplexity gap to f16"), pct(kld, "the KL divergence")].into_iter().flatten().collect();
            (!said.is_empty()).then(|| format!("{}: {}", r.quant, said.join(", ")))
        })
        .collect();
    if !gains.is_empty() {
        writeln!(out, "the importance matrix, type by type: {}", gains.join("; "))?;
    }
    Ok(())
}
