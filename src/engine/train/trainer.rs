//! The training loop: a view's examples through the model's template and tokenizer, micro-batches
//! with gradient accumulation, AdamW with warmup + cosine, clipping, eval and early stopping,
//! atomic checkpoints that resume bit for bit, pause / cancel, and the run recorded in the
//! catalog (`lathe.runs`, `lathe.metrics`) with its artifacts under runs/<id>/.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::model::{Ctx, LoraSpec, Model, Trainable};
use super::optim::{clip, schedule, AdamW};
use super::rng::Rng;
use super::text::{length_stats, Encoded, LengthStats, TextCodec};
use super::weights::{load_all, save_atomic, SafetensorsSource};
use crate::engine::data::runs::{MetricRow, RunRow};
use crate::engine::data::views::{Example, Split};
use crate::engine::data::Catalog;

/// Everything that shapes a run. Read from `--config train.toml`, then flags on top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// "lora" or "full".
    pub method: String,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Empty: q, k, v, o and the MLP projections.
    pub lora_targets: Vec<String>,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub min_lr_ratio: f64,
    pub max_grad_norm: f64,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub max_len: usize,
    pub packing: bool,
    pub epochs: f64,
    /// Overrides `epochs` when set.
    pub max_steps: Option<usize>,
    /// Eval on the view's eval split every N optimizer steps (0: only at the end).
    pub eval_every: usize,
    /// At most this many eval examples per eval.
    pub eval_max: usize,
    /// Stop after this many evals without a better eval loss.
    pub patience: Option<usize>,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Training threads (0: every core).
    pub threads: usize,
    pub grad_checkpointing: bool,
    /// Score exact-match accuracy on this many eval examples at the end (0: off).
    pub exact_match: usize,
    pub max_new_tokens: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: "lora".into(),
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            lora_targets: Vec::new(),
            lr: 2e-4,
            weight_decay: 0.01,
            warmup_ratio: 0.03,
            min_lr_ratio: 0.0,
            max_grad_norm: 1.0,
            micro_batch: 2,
            grad_accum: 8,
            max_len: 512,
            packing: false,
            epochs: 1.0,
            max_steps: None,
            eval_every: 50,
            eval_max: 200,
            patience: None,
            checkpoint_every: 50,
            seed: 42,
            threads: 0,
            grad_checkpointing: false,
            exact_match: 0,
            max_new_tokens: 32,
        }
    }
}

impl TrainConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.method != "lora" && self.method != "full" {
            return Err(format!("method {:?} is unknown; use lora or full.", self.method));
        }
        if self.micro_batch == 0 || self.grad_accum == 0 || self.max_len < 2 {
            return Err("micro_batch and grad_accum must be at least 1 and max_len at least 2.".into());
        }
        if self.method == "lora" && self.lora_r == 0 {
            return Err("lora_r must be at least 1.".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err("lr must be a positive number.".into());
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err("lora_dropout must be in [0, 1).".into());
        }
        Ok(())
    }

    pub fn from_toml(path: &Path) -> Result<TrainConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{} is not a valid training config: {}", path.display(), e.message()))
    }
}

/// Shared switches a UI or signal handler flips while a run trains.
#[derive(Debug, Clone, Default)]
pub struct Control {
    pub cancel: Arc<AtomicBool>,
    pub pause: Arc<AtomicBool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub total: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainEvent {
    Started {
        run_id: String,
        model: String,
        view: String,
        method: String,
        total_steps: usize,
        start_step: usize,
        train_examples: usize,
        eval_examples: usize,
        trainable_params: usize,
        total_params: usize,
        lengths: LengthStats,
    },
    Step(StepMetrics),
    Eval { step: usize, loss: f64, best: f64 },
    Checkpoint { step: usize },
    Paused(bool),
    Accuracy { correct: usize, total: usize },
    Note(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Completed,
    StoppedEarly,
    Cancelled,
}

impl Ending {
    pub fn status(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::StoppedEarly => "stopped_early",
            Ending::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub run_id: String,
    pub ending: Ending,
    pub steps: usize,
    pub losses: Vec<f64>,
    pub best_eval_loss: Option<f64>,
    pub exact_match: Option<f64>,
    pub artifact: PathBuf,
}

/// What was asked for: a model folder, a view and a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub model: PathBuf,
    pub view: String,
    pub config: TrainConfig,
}

/// Where a run resumes from (saved as state.json in the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: usize,
    /// Position in this epoch's order, in units.
    pub cursor: usize,
    pub best_eval: Option<f64>,
    pub bad_evals: usize,
    pub elapsed_s: f64,
    pub losses: Vec<f64>,
    pub adam_t: u64,
}

const PURPOSE_SHUFFLE: u64 = 1;
const PURPOSE_DROPOUT: u64 = 2;
const PURPOSE_LORA: u64 = 3;

pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// FNV-1a, 64 bit: a stable hash for run records.
pub fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of a model's weights: every byte of files up to 256 MB; for larger files the size and
/// 64 KB read from every 64 MB (a sampled fingerprint, so a 2 GB model is hashed in milliseconds
/// without reading it all).
pub fn model_hash(dir: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = FNV0;
    for f in super::weights::weight_files(dir).unwrap_or_default() {
        let Ok(mut file) = std::fs::File::open(&f) else { continue };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        h = fnv(&len.to_le_bytes(), h);
        let (step, chunk) = if len <= 256 << 20 { (len.max(1), len as usize) } else { (64 << 20, 64 << 10) };
        let mut buf = vec![0u8; chunk];
        let mut off = 0u64;
        while off < len {
            let n = chunk.min((len - off) as usize);
            if file.seek(SeekFrom::Start(off)).is_err() || file.read_exact(&mut buf[..n]).is_err() {
                break;
            }
            h = fnv(&buf[..n], h);
            off += step;
        }
    }
    format!("{h:016x}")
}

/// Units of training: one example each, or packed sequences.
struct Prepared {
    codec: TextCodec,
    cfg: ModelConfig,
    train: Vec<Encoded>,
    eval: Vec<Encoded>,
    eval_examples: Vec<Example>,
    lengths: LengthStats,
    rows_hash: String,
    view_sql: String,
}

fn truncate(mut e: Encoded, max_len: usize) -> Option<Encoded> {
    e.ids.truncate(max_len);
    e.train.truncate(max_len);
    if e.trained_tokens() == 0 {
        None
    } else {
        Some(e)
    }
}

fn pack(units: Vec<Encoded>, max_len: usize) -> Vec<Encoded> {
    let mut out = Vec::new();
    let mut cur = Encoded { ids: Vec::new(), train: Vec::new() };
    for u in units {
        if !cur.ids.is_empty() && cur.ids.len() + u.ids.len() > max_len {
            out.push(std::mem::replace(&mut cur, Encoded { ids: Vec::new(), train: Vec::new() }));
        }
        cur.ids.extend(u.ids);
        cur.train.extend(u.train);
    }
    if !cur.ids.is_empty() {
        out.push(cur);
    }
    out
}

fn prepare(catalog: &Catalog, spec: &RunSpec) -> Result<Prepared, String> {
    let cfg = ModelConfig::load(&spec.model).map_err(|e| e.to_string())?;
    let codec = TextCodec::load(&spec.model)?;
    if codec.vocab_size() > cfg.vocab_size {
        return Err(format!(
            "The tokenizer in {} has {} tokens but config.json says vocab_size {}; the folder mixes two models.",
            spec.model.display(),
            codec.vocab_size(),
            cfg.vocab_size
        ));
    }
    let info = catalog.view_info(&spec.view).map_err(|e| e.to_string())?;
    let train_ex = catalog.examples(&spec.view, Split::Train, None).map_err(|e| e.to_string())?;
    if train_ex.is_empty() {
        return Err(format!(
            "View {} has no rows in its train split; check its SQL with `lathe data view show {}`.",
            spec.view, spec.view
        ));
    }
    let eval_ex = catalog.examples(&spec.view, Split::Eval, Some(spec.config.eval_max.max(spec.config.exact_match))).map_err(|e| e.to_string())?;
    let mut h = FNV0;
    let mut lengths = Vec::with_capacity(train_ex.len());
    let mut train = Vec::with_capacity(train_ex.len());
    for ex in &train_ex {
        h = fnv(serde_json::to_string(ex).unwrap_or_default().as_bytes(), h);
        let enc = codec.encode(ex)?;
        lengths.push(enc.ids.len());
        if let Some(e) = truncate(enc, spec.config.max_len) {
            train.push(e);
        }
    }
    let stats = length_stats(&lengths, spec.config.max_len);
    if train.is_empty() {
        return Err(format!(
            "Every example of view {} loses its whole answer at max_len {} (shortest is {} tokens); raise --max-len.",
            spec.view, spec.config.max_len, stats.min
        ));
    }
    let mut eval = Vec::new();
    for ex in eval_ex.iter().take(spec.config.eval_max) {
        if let Some(e) = truncate(codec.encode(ex)?, spec.config.max_len) {
            eval.push(e);
        }
    }
    if spec.config.packing {
        train = pack(train, spec.config.max_len);
    }
    Ok(Prepared { codec, cfg, train, eval, eval_examples: eval_ex, lengths: stats, rows_hash: format!("{h:016x}"), view_sql: info.sql })
}

/// A few examples as tokens with their loss mask, and the length distribution: what a user sees
/// before starting.
pub struct Preview {
    pub examples: Vec<String>,
    pub lengths: LengthStats,
    pub train_examples: usize,
    pub eval_examples: usize,
}

pub fn preview(catalog: &Catalog, spec: &RunSpec, n: usize) -> Result<Preview, String> {
    let p = prepare(catalog, spec)?;
    let examples = p.train.iter().take(n).map(|e| super::text::render_mask(&p.codec, e)).collect();
    Ok(Preview { examples, lengths: p.lengths, train_examples: p.train.len(), eval_examples: p.eval.len() })
}

struct Batch {
    ids: Tensor,
    targets: Tensor,
    weights: Tensor,
    tokens: usize,
    trained: f64,
}

fn make_batch(units: &[&Encoded], pad: u32, device: &Device) -> candle_core::Result<Batch> {
    let t = units.iter().map(|u| u.ids.len() - 1).max().unwrap_or(1).max(1);
    let b = units.len();
    let mut ids = vec![pad; b * t];
    let mut tg = vec![pad; b * t];
    let mut w = vec![0f32; b * t];
    let mut tokens = 0;
    for (r, u) in units.iter().enumerate() {
        let n = u.ids.len() - 1;
        tokens += n;
        for j in 0..n {
            ids[r * t + j] = u.ids[j];
            tg[r * t + j] = u.ids[j + 1];
            w[r * t + j] = if u.train[j + 1] { 1.0 } else { 0.0 };
        }
    }
    let trained = w.iter().map(|&x| x as f64).sum();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        targets: Tensor::from_vec(tg, (b, t), device)?,
        weights: Tensor::from_vec(w, (b, t), device)?,
        tokens,
        trained,
    })
}

/// Sum over tokens of -log p(target), weighted by the loss mask.
fn loss_sum(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = lsm.gather(&targets.unsqueeze(2)?.contiguous()?, 2)?.squeeze(2)?;
    (picked * weights)?.sum_all()?.neg()
}

fn block_ctx(train: bool, base: Rng, i: usize) -> Ctx {
    Ctx { train, rng: Rng::derive(base.0, 7, i as u64) }
}

/// Forward and backward of one micro-batch; adds d(loss_sum / norm)/dθ into `acc`. Returns the
/// unnormalised loss sum.
fn micro_step(model: &Model, b: &Batch, norm: f64, rng: Rng, gc: bool, train: bool, acc: &mut [Option<Tensor>]) -> candle_core::Result<f64> {
    let vars = &model.trainable;
    let (_, t) = b.ids.dims2()?;
    let tabs = model.rope_tables(t)?;
    let mut add = |grads: &candle_core::backprop::GradStore| -> candle_core::Result<()> {
        for (i, (_, v)) in vars.iter().enumerate() {
            if let Some(g) = grads.get(v.as_tensor()) {
                acc[i] = Some(match acc[i].take() {
                    Some(a) => (a + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    };
    let n = model.blocks.len();
    let mut head_ctx = block_ctx(train, rng, n);
    if !gc {
        let mut x = model.embed(&b.ids)?;
        for i in 0..n {
            x = model.block(i, &x, &tabs, &mut block_ctx(train, rng, i))?;
        }
        let logits = model.head(&x, &mut head_ctx)?;
        let ls = loss_sum(&logits, &b.targets, &b.weights)?;
        let value = ls.to_scalar::<f32>()? as f64;
        let grads = (ls / norm)?.backward()?;
        add(&grads)?;
        return Ok(value);
    }
    // Gradient checkpointing: keep only each block's input, recompute the block in backward.
    let x0 = model.embed(&b.ids)?;
    let mut inputs: Vec<Tensor> = vec![x0.detach()];
    for i in 0..n {
        let y = model.block(i, &inputs[i], &tabs, &mut block_ctx(train, rng, i))?.detach();
        inputs.push(y);
    }
    let h = Var::from_tensor(&inputs[n])?;
    let logits = model.head(h.as_tensor(), &mut head_ctx)?;
    let ls = loss_sum(&logits, &b.targets, &b.weights)?;
    let value = ls.to_scalar::<f32>()? as f64;
    let grads = (ls / norm)?.backward()?;
    add(&grads)?;
    let mut g = grads.get(h.as_tensor()).cloned();
    drop(grads);
    drop(logits);
    for i in (0..n).rev() {
        let Some(gy) = g.take() else { break };
        let xi = Var::from_tensor(&inputs[i])?;
        let y = model.block(i, xi.as_tensor(), &tabs, &mut block_ctx(train, rng, i))?;
        let grads = (y * &gy)?.sum_all()?.backward()?;
        add(&grads)?;
        g = grads.get(xi.as_tensor()).cloned();
        inputs.truncate(i + 1);
    }
    if let Some(gx) = g {
        if x0.track_op() {
            let grads = (x0 * gx)?.sum_all()?.backward()?;
            add(&grads)?;
        }
    }
    Ok(value)
}

/// Mean token loss over `units` (no dropout).
pub fn mean_loss(model: &Model, units: &[Encoded], micro: usize, pad: u32) -> candle_core::Result<f64> {
    let mut sum = 0.0;
    let mut count = 0.0;
    for chunk in units.chunks(micro.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().filter(|u| u.ids.len() >= 2).collect();
        if refs.is_empty() {
            continue;
        }
        let b = make_batch(&refs, pad, &model.device)?;
        let logits = model.forward(&b.ids, &mut Ctx::eval())?;
        sum += loss_sum(&logits.detach(), &b.targets, &b.weights)?.to_scalar::<f32>()? as f64;
        count += b.trained;
    }
    Ok(if count > 0.0 { sum / count } else { f64::NAN })
}

/// Greedy exact-match accuracy on examples with a checkable answer.
pub fn exact_match(model: &Model, codec: &TextCodec, examples: &[Example], max_new: usize) -> Result<(usize, usize), String> {
    let stop = codec.stop_ids();
    let mut correct = 0;
    let mut total = 0;
    for ex in examples {
        let (prompt, answer) = codec.prompt_and_answer(ex)?;
        if answer.is_empty() || prompt.is_empty() {
            continue;
        }
        let out = model.greedy(&prompt, max_new, &stop).map_err(|e| e.to_string())?;
        total += 1;
        if codec.decode(&out).trim() == answer.trim() {
            correct += 1;
        }
    }
    Ok((correct, total))
}

fn trainable_of(cfg: &TrainConfig, mcfg: &ModelConfig) -> Trainable {
    if cfg.method == "full" {
        Trainable::Full
    } else {
        Trainable::Lora(LoraSpec {
            r: cfg.lora_r,
            alpha: cfg.lora_alpha,
            dropout: cfg.lora_dropout,
            targets: if cfg.lora_targets.is_empty() { LoraSpec::default_targets(mcfg.family) } else { cfg.lora_targets.clone() },
        })
    }
}

/// Memory a configuration needs, in bytes (f32 weights, optimizer state, activations, logits).
pub fn memory_estimate(mcfg: &ModelConfig, cfg: &TrainConfig) -> u64 {
    let h = mcfg.hidden_size as u64;
    let i = mcfg.intermediate_size as u64;
    let l = mcfg.num_layers as u64;
    let v = mcfg.vocab_size as u64;
    let kv = (mcfg.num_kv_heads * mcfg.head_dim) as u64;
    let per_layer = 2 * h * h + 2 * h * kv + 3 * h * i;
    let heads_out = if mcfg.tie_word_embeddings { 0 } else { v * h };
    let base = per_layer * l + v * h + heads_out;
    let trainable = if cfg.method == "full" {
        base
    } else {
        let r = cfg.lora_r as u64;
        let n_t = if cfg.lora_targets.is_empty() { 7 } else { cfg.lora_targets.len() as u64 };
        l * n_t * r * (h + i.max(h))
    };
    let tokens = (cfg.micro_batch * cfg.max_len) as u64;
    let heads = mcfg.num_heads as u64;
    // Per block, what the graph keeps for the backward (lathe's fused ops keep their inputs and
    // outputs only): about 9 hidden-wide, 4 KV-wide and 3 MLP-wide tensors per token; and, one
    // block at a time, the attention backward's four score-sized tensors (calibrated with
    // `lathe bench train`).
    let act_layer = tokens * (9 * h + 4 * kv + 3 * i);
    let scores = (cfg.micro_batch as u64) * heads * (cfg.max_len as u64).pow(2) * 4;
    let act = scores + if cfg.grad_checkpointing { tokens * h * l + act_layer } else { act_layer * l };
    let logits = tokens * v * 4;
    4 * (base + 3 * trainable + act + logits) + 200 * (1 << 20)
}

/// Memory the system can give now (available RAM).
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

fn new_run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = crate::units::civil(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    let tag = (now.subsec_nanos() ^ std::process::id()) % 0x10000;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{tag:04x}", s / 3600, s / 60 % 60, s % 60)
}

pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub fn spec(&self) -> PathBuf {
        self.root.join("run.json")
    }
}

/// Starts a new run. `on` sees every event; the catalog gets the run row and metrics.
pub fn start(catalog: &Catalog, runs_dir: &Path, spec: RunSpec, control: &Control, on: &mut dyn FnMut(TrainEvent)) -> Result<Outcome, String> {
    spec.config.check()?;
    let prep = prepare(catalog, &spec)?;
    let need = memory_estimate(&prep.cfg, &spec.config);
    let avail = available_memory();
    if need > avail {
        return Err(format!(
            "This configuration needs about {} but {} is available; lower --max-len or --micro-batch, use LoRA, or turn on --grad-checkpointing.",
            crate::units::bytes(need),
            crate::units::bytes(avail)
        ));
    }
    let id = new_run_id();
    let root = runs_dir.join(&id);
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let paths = Paths { root };
    std::fs::write(paths.spec(), serde_json::to_string_pretty(&spec).unwrap_or_default())
        .map_err(|e| format!("cannot write {}: {e}", paths.spec().display()))?;
    let row = RunRow {
        id: id.clone(),
        status: "running".into(),
        method: spec.config.method.clone(),
        model: spec.model.display().to_string(),
        model_hash: Some(model_hash(&spec.model)),
        view: spec.view.clone(),
        view_sql: Some(prep.view_sql.clone()),
        rows_hash: Some(prep.rows_hash.clone()),
        train_examples: Some(prep.train.len() as i64),
        eval_examples: Some(prep.eval.len() as i64),
        params: Some(serde_json::to_string(&spec.config).unwrap_or_default()),
        artifacts: Some(paths.root.display().to_string()),
        ..Default::default()
    };
    catalog.create_run(&row).map_err(|e| e.to_string())?;
    run_loop(catalog, &id, &paths, &spec, prep, None, control, on)
}

/// Continues run `id` from its last checkpoint (or from the start when it has none yet).
pub fn resume(catalog: &Catalog, runs_dir: &Path, id: &str, control: &Control, on: &mut dyn FnMut(TrainEvent)) -> Result<Outcome, String> {
    let row = catalog.run(id).map_err(|e| e.to_string())?;
    if row.status == "completed" || row.status == "stopped_early" {
        return Err(format!("Run {id} already finished ({}); start a new run to train further.", row.status));
    }
    let paths = Paths { root: runs_dir.join(id) };
    let text = std::fs::read_to_string(paths.spec())
        .map_err(|e| format!("Run {id} has no run.json under {} ({e}); it cannot be resumed.", paths.root.display()))?;
    let spec: RunSpec = serde_json::from_str(&text).map_err(|e| format!("{} is damaged ({e}).", paths.spec().display()))?;
    let prep = prepare(catalog, &spec)?;
    if row.rows_hash.as_deref().is_some_and(|h| h != prep.rows_hash) {
        on(TrainEvent::Note(format!("The rows of view {} changed since run {id} started; resuming on the new rows.", spec.view)));
    }
    let ck = find_checkpoint(&paths);
    catalog.set_run_status(id, "running", None).map_err(|e| e.to_string())?;
    run_loop(catalog, id, &paths, &spec, prep, ck, control, on)
}

fn find_checkpoint(paths: &Paths) -> Option<PathBuf> {
    let main = paths.checkpoint();
    if main.join("state.json").exists() {
        return Some(main);
    }
    let old = paths.root.join("checkpoint.old");
    old.join("state.json").exists().then_some(old)
}

fn load_model(spec: &RunSpec, cfg: &ModelConfig, device: &Device) -> Result<Model, String> {
    let trainable = trainable_of(&spec.config, cfg);
    let mut src = SafetensorsSource::open(&spec.model, device)?;
    let mut rng = Rng::derive(spec.config.seed, PURPOSE_LORA, 0);
    Model::build(cfg, &mut src, &trainable, &mut rng, device)
}

fn save_checkpoint(paths: &Paths, model: &Model, opt: &AdamW, state: &LoopState) -> Result<(), String> {
    let weights: BTreeMap<String, Tensor> = model.trainable.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    super::export::write_dir_atomic(&paths.checkpoint(), |tmp| {
        save_atomic(&weights, &tmp.join("trainable.safetensors"), None)?;
        save_atomic(&opt.state(&model.trainable), &tmp.join("optimizer.safetensors"), None)?;
        let json = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
        write_synced(&tmp.join("state.json"), json.as_bytes())
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    r.map_err(|e| format!("cannot write {} ({e}); free some disk space and try again.", path.display()))
}

fn load_checkpoint(dir: &Path, model: &Model, opt: &mut AdamW) -> Result<LoopState, String> {
    let state: LoopState = serde_json::from_str(
        &std::fs::read_to_string(dir.join("state.json")).map_err(|e| format!("cannot read the checkpoint: {e}"))?,
    )
    .map_err(|e| format!("the checkpoint's state.json is damaged ({e})"))?;
    let weights = load_all(&dir.join("trainable.safetensors"), &model.device)?;
    for (name, var) in &model.trainable {
        let t = weights.get(name).ok_or_else(|| format!("the checkpoint lacks {name}"))?;
        var.set(t).map_err(|e| e.to_string())?;
    }
    let st = load_all(&dir.join("optimizer.safetensors"), &model.device)?;
    opt.restore(&model.trainable, &st, state.adam_t)?;
    Ok(state)
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    let n = if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("lathe-train-{i}"))
        .start_handler(|_| {
            // Training yields to the UI and the shell: a lower priority, never a lower share of
            // idle cores.
            // SAFETY: setpriority on the calling thread (who = 0 with PRIO_PROCESS is the thread
            // on Linux).
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 5);
            }
        })
        .build()
        .map_err(|e| format!("cannot start training threads: {e}"))
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    catalog: &Catalog,
    id: &str,
    paths: &Paths,
    spec: &RunSpec,
    prep: Prepared,
    checkpoint: Option<PathBuf>,
    control: &Control,
    on: &mut dyn FnMut(TrainEvent),
) -> Result<Outcome, String> {
    let pool = thread_pool(spec.config.threads)?;
    keep_freed_memory();
    let result = run_inner(&pool, catalog, id, paths, spec, prep, checkpoint, control, on);
    // Hand the heap kept for the run back to the system (the workstation stays open after it).
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
    match &result {
        Ok(o) => {
            let msg = match o.ending {
                Ending::Cancelled => Some("cancelled; the last checkpoint is kept".to_string()),
                _ => None,
            };
            let _ = catalog.finish_run(id, o.ending.status(), msg.as_deref(), o.exact_match);
        }
        Err(e) => {
            let _ = catalog.finish_run(id, "failed", Some(e), None);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    pool: &rayon::ThreadPool,
    catalog: &Catalog,
    id: &str,
    paths: &Paths,
    spec: &RunSpec,
    prep: Prepared,
    checkpoint: Option<PathBuf>,
    control: &Control,
    on: &mut dyn FnMut(TrainEvent),
) -> Result<Outcome, String> {
    let c = &spec.config;
    let device = Device::Cpu;
    let model = load_model(spec, &prep.cfg, &device)?;
    let mut opt = AdamW::new(&model.trainable, c.weight_decay).map_err(|e| e.to_string())?;
    let mut st = LoopState::default();
    if let Some(dir) = &checkpoint {
        st = load_checkpoint(dir, &model, &mut opt)?;
        catalog.truncate_metrics(id, st.step).map_err(|e| e.to_string())?;
        on(TrainEvent::Note(format!("Resumed run {id} from its checkpoint at step {}.", st.step)));
    }
    let units = prep.train.len();
    let per_step = c.micro_batch * c.grad_accum;
    let total = c.max_steps.unwrap_or_else(|| ((c.epochs * units as f64) / per_step as f64).ceil().max(1.0) as usize);
    let warmup = (c.warmup_ratio * total as f64).round() as usize;
    let pad = prep.codec.eos.as_ref().map(|e| e.1).unwrap_or(0);
    let (total_params, trainable_params) = model.param_counts();
    on(TrainEvent::Started {
        run_id: id.to_string(),
        model: spec.model.display().to_string(),
        view: spec.view.clone(),
        method: c.method.clone(),
        total_steps: total,
        start_step: st.step,
        train_examples: units,
        eval_examples: prep.eval.len(),
        trainable_params,
        total_params,
        lengths: prep.lengths.clone(),
    });
    catalog.conn.execute("UPDATE lathe.runs SET total_steps = ? WHERE id = ?", duckdb::params![total as i64, id]).map_err(|e| e.to_string())?;
    let order_of = |epoch: usize| {
        let mut v: Vec<usize> = (0..units).collect();
        Rng::derive(c.seed, PURPOSE_SHUFFLE, epoch as u64).shuffle(&mut v);
        v
    };
    let mut order = order_of(st.epoch);
    let started = Instant::now();
    let base_elapsed = st.elapsed_s;
    let mut ending = Ending::Completed;
    let mut peak_rss = rss_bytes();
    let mut last_eval: Option<f64> = None;
    while st.step < total {
        // Pause and cancel are seen between optimizer steps.
        if control.pause.load(Ordering::Relaxed) {
            on(TrainEvent::Paused(true));
            catalog.set_run_status(id, "paused", None).map_err(|e| e.to_string())?;
            while control.pause.load(Ordering::Relaxed) && !control.cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            catalog.set_run_status(id, "running", None).map_err(|e| e.to_string())?;
            on(TrainEvent::Paused(false));
        }
        if control.cancel.load(Ordering::Relaxed) {
            ending = Ending::Cancelled;
            break;
        }
        let t0 = Instant::now();
        // The units of this optimizer step.
        let mut micro: Vec<Vec<usize>> = Vec::with_capacity(c.grad_accum);
        for _ in 0..c.grad_accum {
            let mut mb = Vec::with_capacity(c.micro_batch);
            while mb.len() < c.micro_batch {
                if st.cursor >= units {
                    st.epoch += 1;
                    st.cursor = 0;
                    order = order_of(st.epoch);
                }
                mb.push(order[st.cursor]);
                st.cursor += 1;
            }
            micro.push(mb);
        }
        let batches: Vec<Batch> = micro
            .iter()
            .map(|mb| make_batch(&mb.iter().map(|&i| &prep.train[i]).collect::<Vec<_>>(), pad, &device))
            .collect::<candle_core::Result<_>>()
            .map_err(|e| e.to_string())?;
        let norm: f64 = batches.iter().map(|b| b.trained).sum::<f64>().max(1.0);
        let mut acc: Vec<Option<Tensor>> = vec![None; model.trainable.len()];
        let mut loss_total = 0.0;
        let mut tokens = 0;
        for (k, b) in batches.iter().enumerate() {
            let rng = Rng::derive(c.seed, PURPOSE_DROPOUT, (st.step * c.grad_accum + k) as u64);
            loss_total += pool.install(|| micro_step(&model, b, norm, rng, c.grad_checkpointing, true, &mut acc)).map_err(|e| e.to_string())?;
            tokens += b.tokens;
        }
        let loss = loss_total / norm;
        if !loss.is_finite() {
            let kept = find_checkpoint(paths).map(|_| "the last good checkpoint is kept").unwrap_or("no checkpoint was written yet");
            return Err(format!(
                "The loss became {loss} at step {}; {kept}. Lower the learning rate (--lr) and start again or resume.",
                st.step + 1
            ));
        }
        let mut grads: Vec<Tensor> = acc
            .into_iter()
            .zip(&model.trainable)
            .map(|(g, (_, v))| g.map(Ok).unwrap_or_else(|| v.zeros_like()))
            .collect::<candle_core::Result<_>>()
            .map_err(|e| e.to_string())?;
        let gn = pool.install(|| clip(&mut grads, c.max_grad_norm)).map_err(|e| e.to_string())?;
        let lr = schedule(st.step, total, warmup, c.lr, c.min_lr_ratio);
        pool.install(|| opt.step(&model.trainable, &grads, lr)).map_err(|e| e.to_string())?;
        drop(grads);
        st.step += 1;
        st.adam_t = opt.t;
        st.losses.push(loss);
        let dt = t0.elapsed().as_secs_f64();
        st.elapsed_s = base_elapsed + started.elapsed().as_secs_f64();
        let rss = rss_bytes();
        peak_rss = peak_rss.max(rss);
        let epoch = st.epoch as f64 + st.cursor as f64 / units as f64;
        let m = StepMetrics {
            step: st.step,
            total,
            epoch,
            loss,
            lr,
            grad_norm: gn,
            tokens_per_s: tokens as f64 / dt.max(1e-9),
            elapsed_s: st.elapsed_s,
            rss_bytes: rss,
        };
        catalog
            .record_metrics(
                id,
                &[MetricRow {
                    step: st.step as i64,
                    kind: "train".into(),
                    loss,
                    lr: Some(lr),
                    grad_norm: Some(gn),
                    tokens_per_s: Some(m.tokens_per_s),
                    epoch: Some(epoch),
                    elapsed_s: Some(st.elapsed_s),
                }],
            )
            .map_err(|e| e.to_string())?;
        on(TrainEvent::Step(m.clone()));
        let last = st.step == total;
        let mut stop_early = false;
        if !prep.eval.is_empty() && ((c.eval_every > 0 && st.step % c.eval_every == 0) || last) {
            let el = pool.install(|| mean_loss(&model, &prep.eval, c.micro_batch.max(4), pad)).map_err(|e| e.to_string())?;
            last_eval = Some(el);
            let better = st.best_eval.is_none_or(|b| el < b);
            if better {
                st.best_eval = Some(el);
                st.bad_evals = 0;
            } else {
                st.bad_evals += 1;
            }
            catalog
                .record_metrics(id, &[MetricRow { step: st.step as i64, kind: "eval".into(), loss: el, lr: None, grad_norm: None, tokens_per_s: None, epoch: Some(epoch), elapsed_s: Some(st.elapsed_s) }])
                .map_err(|e| e.to_string())?;
            on(TrainEvent::Eval { step: st.step, loss: el, best: st.best_eval.unwrap_or(el) });
            if c.patience.is_some_and(|p| st.bad_evals >= p) {
                stop_early = true;
            }
        }
        catalog
            .update_run(id, st.step, Some(loss), last_eval, st.best_eval, Some(m.tokens_per_s), Some(peak_rss), st.elapsed_s)
            .map_err(|e| e.to_string())?;
        if (c.checkpoint_every > 0 && st.step % c.checkpoint_every == 0) || last || stop_early {
            save_checkpoint(paths, &model, &opt, &st).map_err(|e| {
                format!("Checkpoint at step {} failed: {e} The previous checkpoint is kept; `lathe train --resume {id}` continues from it.", st.step)
            })?;
            on(TrainEvent::Checkpoint { step: st.step });
        }
        if stop_early {
            ending = Ending::StoppedEarly;
            on(TrainEvent::Note(format!("Eval loss has not improved for {} evals; stopping early.", st.bad_evals)));
            break;
        }
    }
    let mut accuracy = None;
    if ending != Ending::Cancelled && c.exact_match > 0 && !prep.eval_examples.is_empty() {
        let n = c.exact_match.min(prep.eval_examples.len());
        let (ok, of) = pool.install(|| exact_match(&model, &prep.codec, &prep.eval_examples[..n], c.max_new_tokens))?;
        if of > 0 {
            accuracy = Some(ok as f64 / of as f64);
            on(TrainEvent::Accuracy { correct: ok, total: of });
        }
    }
    let artifact = if ending == Ending::Cancelled {
        paths.checkpoint()
    } else if c.method == "full" {
        let dir = paths.root.join("model");
        super::export::save_model(&model, &spec.model, &dir)?;
        dir
    } else {
        let dir = paths.root.join("adapter");
        super::export::save_adapter(&model, &spec.model, &trainable_of(c, &prep.cfg), &dir)?;
        dir
    };
    catalog
        .conn
        .execute("UPDATE lathe.runs SET artifacts = ? WHERE id = ?", duckdb::params![artifact.display().to_string(), id])
        .map_err(|e| e.to_string())?;
    Ok(Outcome { run_id: id.to_string(), ending, steps: st.step, losses: st.losses, best_eval_loss: st.best_eval, exact_match: accuracy, artifact })
}

/// Rebuilds a model for evaluation: a base folder, optionally with a run's adapter or weights.
pub fn load_for_eval(model_dir: &Path, adapter: Option<&Path>) -> Result<(Model, TextCodec), String> {
    let cfg = ModelConfig::load(model_dir).map_err(|e| e.to_string())?;
    let codec = TextCodec::load(model_dir)?;
    let device = Device::Cpu;
    let mut src = SafetensorsSource::open(model_dir, &device)?;
    let model = match adapter {
        None => Model::build(&cfg, &mut src, &Trainable::None, &mut Rng::new(0), &device)?,
        Some(dir) => super::export::load_adapter(&cfg, &mut src, dir, &device)?,
    };
    Ok((model, codec))
}

/// The masked mean loss of `units` as one batch and its gradients for every trainable variable,
/// in `model.trainable` order; `dropout_seed` Some turns dropout on. For gradient checks and for
/// comparing gradient checkpointing with the plain backward.
pub fn loss_and_grads(model: &Model, units: &[Encoded], pad: u32, checkpointing: bool, dropout_seed: Option<u64>) -> Result<(f64, Vec<Option<Tensor>>), String> {
    let refs: Vec<&Encoded> = units.iter().collect();
    let b = make_batch(&refs, pad, &model.device).map_err(|e| e.to_string())?;
    let mut acc = vec![None; model.trainable.len()];
    let norm = b.trained.max(1.0);
    let rng = Rng::new(dropout_seed.unwrap_or(0));
    let s = micro_step(model, &b, norm, rng, checkpointing, dropout_seed.is_some(), &mut acc)
    .map_err(|e| e.to_string())?;
    Ok((s / norm, acc))
}

/// Training allocates and frees the same large buffers every step. glibc serves large blocks
/// with fresh mmaps (above its adaptive mmap threshold) and trims freed heap, so every step pays
/// page faults to zero the same memory again; keeping freed memory in the heap lets the next step
/// reuse it (`lathe bench train`: +26% tokens/s at TinyLlama shapes, same peak RSS).
pub fn keep_freed_memory() {
    // SAFETY: mallopt only tunes the allocator; called before the training allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
