//! `lathe quant report`: which quantized file to ship, measured on the user's own held-out data.
//! The model (a run: its base with its adapter) is exported once as f16; each type is made from it
//! by llama.cpp's quantizer, without and with the importance matrix from the calibration data, and
//! measured against the f16 file through llama.cpp: size, perplexity and KL divergence on the same
//! chunks (chunked as llama.cpp's perplexity tool does), greedy exact match where the view has
//! answers, prompt and generation speed. Each file's figures go into `lathe.quant_evals` as soon
//! as they are measured, so a report cut short (a full disk, a cancel) keeps what it has.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use llama_cpp_2::token::LlamaToken;

use super::quant::{self, Calibration};
use crate::engine::data::quant_evals::{best_tradeoff, QuantEval};
use crate::engine::data::views::Split;
use crate::engine::data::Catalog;
use crate::engine::export::gguf::{self, Quant};
use crate::engine::export::imatrix::Imatrix;
use crate::engine::infer::llama::{exact_match, Gguf, Options};
use crate::engine::infer::perplexity::{self, BaseScores, Divergence, Piece};
use crate::engine::train::text::{Encoded, TextCodec};
use crate::engine::data::views::Example;

/// The types a report measures when none are named (those the model's rows fit), as the issue's
/// users ask for them.
pub const DEFAULT_TYPES: &[Quant] = &[Quant::Q8_0, Quant::Q6K, Quant::Q5KM, Quant::Q4KM, Quant::IQ4XS, Quant::Q3KM, Quant::Q2K];
/// For a model whose rows take only 32-value blocks (the demo's 128-wide matrices).
pub const SMALL_TYPES: &[Quant] = &[Quant::Q8_0, Quant::Q5_1, Quant::Q5_0, Quant::Q4_1, Quant::Q4_0, Quant::IQ4NL];
/// Held-out tokens read when the user names no count.
pub const DEFAULT_EVAL_TOKENS: usize = 8192;
/// The base's kept log-probabilities stay under this.
const MAX_BASE_BYTES: usize = 1 << 30;

/// What a report is measured on.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalData {
    /// A view's eval split: its examples as training reads them, one after another.
    View(String),
    /// A text file, tokenized whole as llama.cpp's perplexity tool does.
    Text(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportSpec {
    pub source: super::ModelSource,
    pub eval: EvalData,
    /// Empty: `DEFAULT_TYPES` (or `SMALL_TYPES`) that fit the model.
    pub types: Vec<Quant>,
    /// None: the run's view, else the eval view, training split; with a text and a folder, no
    /// matrix (the report says so).
    pub imatrix: Option<Calibration>,
    /// Chunk length (llama.cpp's -c), at most the model's context.
    pub max_len: usize,
    pub eval_tokens: usize,
    /// Examples with answers scored for exact match.
    pub exact: usize,
    /// Keep every quantized file (else only the f16 file and the matrix stay).
    pub keep: bool,
    /// Where the files go (default: the workspace's models/NAME-quant/).
    pub out: Option<PathBuf>,
}

/// What a report measured and said.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub id: String,
    pub rows: Vec<QuantEval>,
    /// Warnings and skipped types, one sentence each.
    pub notes: Vec<String>,
    /// Index into rows of the best trade-off.
    pub best: Option<usize>,
    /// Files that could not be made (their sentences are in notes), e.g. `q8_0+imatrix`.
    pub failed: Vec<String>,
    pub folder: PathBuf,
    /// The importance matrix the files with one were made with (saved by the report, or read).
    #[serde(default)]
    pub matrix: Option<PathBuf>,
}

/// Why a report stopped. Either way what was measured stays (already in the catalog).
#[derive(Debug)]
pub enum ReportError {
    Cancelled,
    Failed(String),
}

impl From<String> for ReportError {
    fn from(s: String) -> Self {
        ReportError::Failed(s)
    }
}

/// The held-out data as read: a view's eval examples, encoded as training encodes them, or the
/// text file (tokenized once the f16 file's vocabulary is loaded).
enum Held<'a> {
    Examples(Vec<Encoded>),
    Text(&'a Path),
}

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct statvfs fills.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Runs a report: `progress(fraction, what)` as it goes (false cancels; an empty message only
/// asks whether to go on). Rows land in `cat` as they are measured.
pub fn run(cat: &Catalog, models_dir: &Path, spec: &ReportSpec, progress: &mut dyn FnMut(Option<f32>, String) -> bool) -> Result<Report, ReportError> {
    // Whether the caller asked to stop: an engine that stops on its callback's word fails, and
    // this tells that failure (a cancel) from the others.
    let asked_stop = std::cell::Cell::new(false);
    let progress: &mut dyn FnMut(Option<f32>, String) -> bool = &mut |f, msg| {
        let go = progress(f, msg);
        asked_stop.set(asked_stop.get() || !go);
        go
    };
    let stopped = |e: String| if asked_stop.get() { ReportError::Cancelled } else { ReportError::Failed(e) };
    let name = spec.source.name();
    let (model_dir, adapter, run_view, about) = match &spec.source {
        super::ModelSource::Run(id) => {
            let run = cat.run(id).map_err(|_| format!("{id:?} is neither a model folder nor a run id; `lathe runs list` shows the runs."))?;
            let (m, a) = run.weights()?;
            (m, a, Some(run.view.clone()), Some(super::models::provenance(cat, &run)))
        }
        super::ModelSource::Folder(dir) => (dir.clone(), None, None, None),
    };
    let folder = spec.out.clone().unwrap_or_else(|| models_dir.join(format!("{name}-quant")));
    std::fs::create_dir_all(&folder).map_err(|e| format!("Cannot create {} ({e}).", folder.display()))?;
    let codec = TextCodec::load(&model_dir)?;
    let id = format!("q-{}", now_tag());
    let mut notes = Vec::new();

    // The calibration data: named, else the run's view, else the view measured on.
    let calibration = spec.imatrix.clone().or_else(|| match (&run_view, &spec.eval) {
        (Some(v), _) | (None, EvalData::View(v)) => Some(Calibration::View { name: v.clone(), tokens: None }),
        (None, EvalData::Text(_)) => None,
    });
    if calibration.is_none() {
        notes.push("No importance matrix: a folder measured on a text has no training split to compute one from; pass --imatrix VIEW|TEXT|FILE to compare with one.".into());
    }

    // The held-out data, and the examples with answers for exact match.
    let (held, eval_label, answers) = match &spec.eval {
        EvalData::View(v) => {
            let examples = cat.examples(v, Split::Eval, None).map_err(|e| e.to_string())?;
            if examples.is_empty() {
                return Err(format!("View {v} has no eval split to measure on; give it an eval fraction (lathe data view ... --eval-fraction 0.1) or pass --text FILE.").into());
            }
            let mut seqs = Vec::new();
            for ex in &examples {
                seqs.push(codec.encode(ex)?);
            }
            let answers: Vec<Example> = examples.into_iter().filter(|ex| codec.prompt_and_answer(ex).is_ok_and(|(_, a)| !a.trim().is_empty())).take(spec.exact).collect();
            (Held::Examples(seqs), format!("view {v} (eval split, tokens training scores)"), answers)
        }
        EvalData::Text(p) => (Held::Text(p), p.display().to_string(), Vec::new()),
    };
    // The same examples the matrix reads (the tokens asked for included).
    if let (Some(c @ Calibration::View { .. }), Held::Examples(seqs)) = (&calibration, &held) {
        let max_len = spec.max_len.max(16);
        if let Some(ch) = quant::calibration_chunks(Some(cat), &codec, max_len, c)? {
            let seen: HashSet<&[u32]> = ch.chunks.iter().map(Vec::as_slice).collect();
            let both = seqs.iter().filter(|s| seen.contains(&s.ids[..s.ids.len().min(max_len)])).count();
            if both > 0 {
                notes.push(format!("{both} of the {} held-out examples are also in the calibration data ({}); the figures with the matrix are flattered by them.", seqs.len(), ch.dataset));
            }
        }
    }
    if let (Some(Calibration::Text { path, .. }), EvalData::Text(t)) = (&calibration, &spec.eval) {
        if std::fs::canonicalize(path).ok() == std::fs::canonicalize(t).ok() {
            notes.push(format!("The calibration text is the text measured on ({}); the figures with the matrix are flattered by it.", t.display()));
        }
    }

    // The f16 file every type is made from (one already there, newer than the weights, is reused).
    let f16 = folder.join(format!("{name}.f16.gguf"));
    let newest = [Some(model_dir.as_path()), adapter.as_deref()].into_iter().flatten().filter_map(newest_file).max();
    let fresh = std::fs::metadata(&f16).and_then(|m| m.modified()).ok().is_some_and(|t| newest.is_none_or(|n| t >= n));
    if fresh {
        say(progress, Some(0.0), format!("reusing {}", f16.display()))?;
    } else {
        say(progress, Some(0.0), format!("exporting {name} as f16"))?;
        gguf::export_with(&model_dir, adapter.as_deref(), &f16, Quant::F16, None, about.as_ref(), &mut |phase| {
            let _ = progress(Some(0.02), format!("f16: {phase}"));
        })?;
    }
    let f16_bytes = std::fs::metadata(&f16).map(|m| m.len()).unwrap_or(0);
    let widths = crate::engine::infer::library::matrix_widths(&f16)?;

    // Which types, and which of them with the matrix.
    let asked = if spec.types.is_empty() {
        let fit: Vec<Quant> = DEFAULT_TYPES.iter().copied().filter(|q| gguf::fits(*q, &widths)).collect();
        if fit.len() <= 1 {
            SMALL_TYPES.to_vec()
        } else {
            fit
        }
    } else {
        spec.types.clone()
    };
    let mut plan: Vec<(Quant, bool)> = Vec::new();
    for q in asked {
        if q.is_float() || q == Quant::BF16 {
            notes.push(format!("{} is not a quantization; the report measures against the f16 file.", q.name()));
            continue;
        }
        if !gguf::fits(q, &widths) {
            notes.push(format!("{} skipped: its 256-value blocks fit none of {name}'s matrices (try q8_0, q5_0, q4_0 or iq4_nl).", q.name()));
            continue;
        }
        if !q.needs_imatrix() {
            plan.push((q, false));
        }
        // Q8_0's rounding ignores the matrix: with it, the file would be the same.
        if calibration.is_some() && q != Quant::Q8_0 {
            plan.push((q, true));
        } else if q.needs_imatrix() {
            notes.push(format!("{} skipped: it needs an importance matrix.", q.name()));
        }
    }

    // The importance matrix (computed, saved beside the files; or read).
    let (matrix, matrix_file): (Option<Imatrix>, Option<PathBuf>) = match &calibration {
        Some(c) if plan.iter().any(|p| p.1) => {
            say(progress, Some(0.05), "importance matrix".into())?;
            let m = quant::importance_matrix(Some(cat), &model_dir, adapter.as_deref(), &name, c, &mut |msg| progress(Some(0.05), msg))
                .map_err(stopped)?;
            let file = match c {
                Calibration::File(path) => path.clone(),
                _ => {
                    let file = folder.join(format!("{name}.imatrix.gguf"));
                    m.save(&file)?;
                    file
                }
            };
            (Some(m), Some(file))
        }
        _ => (None, None),
    };
    let calibration_label = matrix.as_ref().map(|m| m.datasets.join(", "));

    // The held-out chunks, read once by the f16 file.
    let base = Gguf::load(&f16)?;
    let model_ctx = base.model.n_ctx_train() as usize;
    let n_vocab = base.model.vocab().n_tokens() as usize;
    let threads = crate::engine::infer::llama::default_threads();
    let max_len = spec.max_len.min(model_ctx).max(16);
    // Under both the tokens asked for and the memory the base's kept rows may take.
    let budget = spec.eval_tokens.min(MAX_BASE_BYTES / BaseScores::bytes_for(1, n_vocab).max(1)).max(1);
    let pieces: Vec<Piece> = match &held {
        // A view: each example on its own, truncated to the chunk length, scored where training
        // scores it (the answer, for prompt/answer formats): the f16 file's perplexity is then
        // exp of the run's eval loss.
        Held::Examples(seqs) => {
            let (mut out, mut scored) = (Vec::new(), 0usize);
            for enc in seqs {
                if scored >= budget {
                    break;
                }
                let n = enc.ids.len().min(max_len);
                let positions: Vec<usize> = (0..n.saturating_sub(1)).filter(|&p| enc.train[p + 1]).collect();
                if positions.is_empty() {
                    continue;
                }
                scored += positions.len();
                out.push(Piece { tokens: enc.ids[..n].iter().map(|&t| LlamaToken(t as i32)).collect(), scored: positions });
            }
            out
        }
        Held::Text(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("Cannot read {} ({e}); give a UTF-8 text file.", p.display()))?;
            let tokens = perplexity::tokens(&base, &text);
            let n_ctx = max_len.min(tokens.len() / 2);
            if n_ctx < 16 {
                return Err(format!("{eval_label} has {} tokens; measuring perplexity needs at least 32 (two chunks of 16); give a longer text.", tokens.len()).into());
            }
            if n_ctx < max_len {
                notes.push(format!("{eval_label} has {} tokens, so its chunks are {n_ctx} tokens (two at least).", tokens.len()));
            }
            let n_chunks = (budget / (n_ctx / 2)).max(2).min(tokens.len() / n_ctx);
            perplexity::cut(&base, &tokens[..n_chunks * n_ctx], n_ctx)?.into_iter().map(Piece::second_half).collect()
        }
    };
    if pieces.is_empty() {
        return Err(format!("{eval_label} has no example with a token to score; give a view with answers or --text FILE.").into());
    }
    let n_ctx = pieces.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let n_pieces = pieces.len();
    say(progress, Some(0.1), format!("reading {n_pieces} sequences of up to {n_ctx} tokens with the f16 file"))?;
    let scores = BaseScores::read(&base, pieces, threads, &mut |_, _| progress(None, String::new())).map_err(stopped)?;

    let mut report = Report { id: id.clone(), folder: folder.clone(), notes, matrix: matrix_file, ..Default::default() };
    let row = |quant: &str, imatrix: bool, path: &Path, bytes: u64, d: &Divergence| QuantEval {
        report: id.clone(),
        source: match &spec.source {
            super::ModelSource::Run(r) => r.clone(),
            super::ModelSource::Folder(d) => d.display().to_string(),
        },
        quant: quant.into(),
        imatrix,
        eval: eval_label.clone(),
        calibration: if imatrix { calibration_label.clone() } else { None },
        path: Some(path.display().to_string()),
        size_bytes: bytes,
        ppl: d.quant.ppl,
        ppl_err: d.quant.ppl_err,
        kld: d.kld,
        kld_err: d.kld_err,
        same_top: d.same_top,
        n_ctx: n_ctx as i64,
        chunks: n_pieces as i64,
        ..Default::default()
    };
    // The f16 file's own row: its perplexity, no divergence.
    let own = scores.perplexity();
    let mut first = row("f16", false, &f16, f16_bytes, &Divergence { base: own.clone(), quant: own, kld: 0.0, kld_err: 0.0, kld_max: 0.0, same_top: 1.0 });
    speeds(&base, &scores, &answers, threads, &mut first)?;
    cat.add_quant_eval(&first).map_err(|e| e.to_string())?;
    report.rows.push(first);
    drop(base);

    for (i, &(q, with)) in plan.iter().enumerate() {
        let label = if with { format!("{}+imatrix", q.name()) } else { q.name().to_string() };
        say(progress, Some(0.15 + 0.85 * i as f32 / plan.len() as f32), format!("{label}: quantizing ({}/{})", i + 1, plan.len()))?;
        // A file measured and thrown away has a name of its own, so a kept one of an earlier
        // report is not replaced.
        let file = format!("{name}.{}{}.gguf", q.name(), if with { ".imatrix" } else { "" });
        let path = folder.join(if spec.keep { file } else { format!(".{file}.measuring") });
        let need = (f16_bytes as f64 * q.bits() as f64 / 16.0 * 1.1) as u64;
        if let Some(free) = free_bytes(&folder).filter(|&f| f < need) {
            return Err(ReportError::Failed(format!(
                "The disk holding {} has {} free and the {label} file needs about {}; free space (or pass --out on another disk) and run again. The {} files measured so far are kept in lathe.quant_evals (report {id}).",
                folder.display(),
                crate::units::bytes(free),
                crate::units::bytes(need),
                report.rows.len()
            )));
        }
        let bytes = match gguf::quantize_file(&f16, &path, q, if with { matrix.as_ref() } else { None }, &name) {
            Ok(b) => b,
            Err(e) => {
                report.notes.push(format!("{label} was not measured: {e}"));
                report.failed.push(label);
                continue;
            }
        };
        // A file not kept goes however the measuring ends.
        let _gone = (!spec.keep).then(|| Gone(path.clone()));
        say(progress, Some(0.15 + 0.85 * (i as f32 + 0.3) / plan.len() as f32), format!("{label}: measuring"))?;
        let g = Gguf::load(&path)?;
        let d = scores.compare(&g, threads, &mut |_, _, _| progress(None, String::new())).map_err(stopped)?;
        let mut r = row(q.name(), with, &path, bytes, &d);
        speeds(&g, &scores, &answers, threads, &mut r)?;
        drop(g);
        if !spec.keep {
            r.path = None;
        }
        cat.add_quant_eval(&r).map_err(|e| e.to_string())?;
        report.rows.push(r);
    }
    // Largest first; without the matrix before with it.
    report.rows.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.imatrix.cmp(&b.imatrix)));
    report.best = best_tradeoff(&report.rows);
    say(progress, Some(1.0), format!("report {id}: {} files measured", report.rows.len()))?;
    Ok(report)
}

/// Removes its file when dropped.
struct Gone(PathBuf);

impl Drop for Gone {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Exact match on the examples with answers, and the speeds: prompt tokens/s from reading the
/// chunks (batched, as a prompt is), generation tokens/s from the greedy answers (or, without
/// answers, 32 tokens after the first chunk's half).
fn speeds(g: &Gguf, scores: &BaseScores, answers: &[Example], threads: i32, row: &mut QuantEval) -> Result<(), String> {
    let n_ctx = row.n_ctx as usize;
    let mut s = g.session(&Options { ctx: (n_ctx as u32).max(512), threads, ..Default::default() })?;
    if !answers.is_empty() {
        let m = exact_match(g, &mut s, answers, 64)?;
        row.exact_match = Some(m.correct as f64 / m.asked.max(1) as f64);
        row.exact_asked = Some(m.asked as i64);
        if m.generated > 0 {
            row.gen_tps = Some(m.generated as f64 / m.generation_secs.max(1e-9));
        }
    }
    let first = scores.first_tokens();
    let prompt: Vec<u32> = first[..first.len().div_ceil(2)].iter().map(|t| t.0 as u32).collect();
    let (pp, _, gen) = s.bench(&prompt, 32)?;
    row.prompt_tps = Some(prompt.len() as f64 / pp.max(1e-9));
    if row.gen_tps.is_none() {
        row.gen_tps = Some(32.0 / gen.max(1e-9));
    }
    Ok(())
}

/// The newest modification time of a file in a folder (not recursive).
fn newest_file(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok()).max()
}

/// UTC now as YYYYMMDD-HHMMSS-xxxx (the tail tells apart reports started in one second).
fn now_tag() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = crate::units::civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let tag = (now.subsec_nanos() ^ std::process::id()) % 0x10000;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{tag:04x}", s / 3600, s / 60 % 60, s % 60)
}

/// Passes a progress line on; Err when the caller asks to stop.
fn say(progress: &mut dyn FnMut(Option<f32>, String) -> bool, f: Option<f32>, msg: String) -> Result<(), ReportError> {
    if progress(f, msg) {
        Ok(())
    } else {
        Err(ReportError::Cancelled)
    }
}
