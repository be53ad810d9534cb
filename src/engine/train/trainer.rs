//! The run: start or resume, the loop over epochs and steps (AdamW with warmup + cosine, clipping,
//! eval and early stopping, pause / cancel), its events, and the run recorded in the catalog
//! (`lathe.runs`, `lathe.metrics`) with its artifacts under runs/<id>/. Configuration, data
//! preparation, the step, checkpoints and the memory estimate have files of their own beside it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoint::{find_checkpoint, load_checkpoint, save_checkpoint, LoopState, Paths};
use super::config::ModelConfig;
use super::memory::{memory_estimate, with_4bit_base};
use crate::engine::alloc::{keep_freed_memory, release_free_memory};
use super::base::BasePrecision;
use super::model::{Held, Model, Trainable};
use super::optim::{clip, schedule, AdamW};
use super::prepare::{prepare, Prepared};
use super::rng::Rng;
use super::spec::{trainable_of, RunSpec};
use super::step::{exact_match, make_batch, mean_loss, micro_step, Batch};
use super::text::{LengthStats, TextCodec};
use super::weights::{model_hash, SafetensorsSource};
use crate::engine::data::runs::{MetricRow, RunRow};
use crate::engine::data::Catalog;
use crate::engine::types::RunStatus;

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
        /// How the base is held (f32, bf16, nf4, nf4-dq) and the optimizer (adamw, adamw8bit).
        #[serde(default)]
        base: String,
        #[serde(default)]
        optimizer: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Completed,
    StoppedEarly,
    Cancelled,
}

impl Ending {
    pub fn status(self) -> RunStatus {
        match self {
            Ending::Completed => RunStatus::Completed,
            Ending::StoppedEarly => RunStatus::StoppedEarly,
            Ending::Cancelled => RunStatus::Cancelled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub run_id: String,
    pub ending: Ending,
    pub steps: usize,
    pub losses: Vec<f64>,
    pub best_eval_loss: Option<f64>,
    pub exact_match: Option<f64>,
    pub artifact: PathBuf,
}

const PURPOSE_SHUFFLE: u64 = 1;
const PURPOSE_DROPOUT: u64 = 2;
const PURPOSE_LORA: u64 = 3;

fn new_run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = crate::units::civil(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    let tag = (now.subsec_nanos() ^ std::process::id()) % 0x10000;
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{tag:04x}", s / 3600, s / 60 % 60, s % 60)
}

/// Starts a new run. `on` sees every event; the catalog gets the run row and metrics.
pub fn start(catalog: &Catalog, runs_dir: &Path, spec: RunSpec, control: &Control, on: &mut dyn FnMut(TrainEvent)) -> Result<Outcome, String> {
    spec.config.check()?;
    let prep = prepare(catalog, &spec)?;
    let need = memory_estimate(&prep.cfg, &spec.config);
    let avail = crate::engine::sysmon::available_memory();
    if need > avail {
        let offer = match with_4bit_base(&prep.cfg, &spec.config) {
            Some(nf4) if nf4 <= avail => format!(" With a 4-bit base (--method lora --quant-base nf4, QLoRA) it needs about {}, which fits.", crate::units::bytes(nf4)),
            _ => String::new(),
        };
        return Err(format!(
            "This configuration needs about {} but {} is available; lower --max-len or --micro-batch, use LoRA, or turn on --grad-checkpointing.{offer}",
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
        status: RunStatus::Running,
        method: spec.config.method_name().to_string(),
        model: spec.model.display().to_string(),
        model_hash: Some(model_hash(&spec.model)),
        view: spec.view.clone(),
        view_sql: Some(prep.view_sql.clone()),
        rows_hash: Some(prep.rows_hash.clone()),
        train_examples: Some(prep.train.len() as i64),
        eval_examples: Some(prep.eval.len() as i64),
        params: Some(serde_json::to_string(&spec.config).unwrap_or_default()),
        artifacts: Some(paths.root.display().to_string()),
        base: spec.config.quant_base.name().to_string(),
        optimizer: spec.config.optim.name().to_string(),
        ..Default::default()
    };
    catalog.create_run(&row).map_err(|e| e.to_string())?;
    run_loop(catalog, &id, &paths, &spec, prep, None, control, on)
}

/// Continues run `id` from its last checkpoint (or from the start when it has none yet).
pub fn resume(catalog: &Catalog, runs_dir: &Path, id: &str, control: &Control, on: &mut dyn FnMut(TrainEvent)) -> Result<Outcome, String> {
    let row = catalog.run(id).map_err(|e| e.to_string())?;
    if row.status.is_finished() {
        return Err(format!("Run {id} already finished ({}); start a new run to train further.", row.status));
    }
    let paths = Paths { root: runs_dir.join(id) };
    let spec = saved_spec(runs_dir, id)?;
    let prep = prepare(catalog, &spec)?;
    if row.rows_hash.as_deref().is_some_and(|h| h != prep.rows_hash) {
        on(TrainEvent::Note(format!("The rows of view {} changed since run {id} started; resuming on the new rows.", spec.view)));
    }
    let ck = find_checkpoint(&paths);
    catalog.set_run_status(id, RunStatus::Running, None).map_err(|e| e.to_string())?;
    run_loop(catalog, id, &paths, &spec, prep, ck, control, on)
}

/// What run `id` was started with (its run.json).
pub fn saved_spec(runs_dir: &Path, id: &str) -> Result<RunSpec, String> {
    let paths = Paths { root: runs_dir.join(id) };
    let text = std::fs::read_to_string(paths.spec())
        .map_err(|e| format!("Run {id} has no run.json under {} ({e}); it cannot be resumed.", paths.root.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is damaged ({e}).", paths.spec().display()))
}

fn load_model(spec: &RunSpec, cfg: &ModelConfig, device: &Device) -> Result<Model, String> {
    let trainable = trainable_of(&spec.config, cfg);
    let mut src = SafetensorsSource::open(&spec.model, device)?;
    let mut src = Held { src: &mut src, precision: spec.config.quant_base };
    let mut rng = Rng::derive(spec.config.seed, PURPOSE_LORA, 0);
    Model::build(cfg, &mut src, &trainable, &mut rng, device)
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
    let result = run_inner(&pool, catalog, id, paths, spec, prep, checkpoint, control, on);
    release_free_memory();
    match &result {
        Ok(o) => {
            let msg = match o.ending {
                Ending::Cancelled => Some("cancelled; the last checkpoint is kept".to_string()),
                _ => None,
            };
            let _ = catalog.finish_run(id, o.ending.status(), msg.as_deref(), o.exact_match);
        }
        Err(e) => {
            let _ = catalog.finish_run(id, RunStatus::Failed, Some(e), None);
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
    release_free_memory();
    keep_freed_memory();
    let mut opt = AdamW::new(&model.trainable, c.weight_decay, c.optim).map_err(|e| e.to_string())?;
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
        method: c.method_name().to_string(),
        base: c.quant_base.name().to_string(),
        optimizer: c.optim.name().to_string(),
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
    let mut peak_rss = crate::engine::sysmon::rss_bytes();
    let mut last_eval: Option<f64> = None;
    while st.step < total {
        // Pause and cancel are seen between optimizer steps.
        if control.pause.load(Ordering::Relaxed) {
            on(TrainEvent::Paused(true));
            catalog.set_run_status(id, RunStatus::Paused, None).map_err(|e| e.to_string())?;
            while control.pause.load(Ordering::Relaxed) && !control.cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            catalog.set_run_status(id, RunStatus::Running, None).map_err(|e| e.to_string())?;
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
        let rss = crate::engine::sysmon::rss_bytes();
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

/// Rebuilds a model for evaluation: a base folder, optionally with a run's adapter or weights,
/// its projections held at `precision` (nf4: the model as QLoRA training sees it).
pub fn load_for_eval(model_dir: &Path, adapter: Option<&Path>, precision: BasePrecision) -> Result<(Model, TextCodec), String> {
    let cfg = ModelConfig::load(model_dir).map_err(|e| e.to_string())?;
    let codec = TextCodec::load(model_dir)?;
    let device = Device::Cpu;
    let mut src = SafetensorsSource::open(model_dir, &device)?;
    let mut src = Held { src: &mut src, precision };
    let model = match adapter {
        None => Model::build(&cfg, &mut src, &Trainable::None, &mut Rng::new(0), &device)?,
        Some(dir) => super::export::load_adapter(&cfg, &mut src, dir, &device)?,
    };
    Ok((model, codec))
}

