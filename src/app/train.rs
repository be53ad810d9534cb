//! What the Training, Loss and Runs panes show, and the pure updates that keep it: the live run
//! (from the trainer's events), the start form, the chart's view settings, and the runs list.

use crate::engine::data::runs::{Curve, RunRow};
use crate::engine::train::base::BasePrecision;
use crate::engine::train::optim::Optimizer;
use crate::engine::train::spec::TrainConfig;
use crate::engine::train::trainer::TrainEvent;
use crate::engine::types::RunStatus;

/// The run this session is training (or trained last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveRun {
    pub id: String,
    pub model: String,
    pub view: String,
    pub method: String,
    /// The base precision (f32, bf16, nf4, nf4-dq) and the optimizer (empty until the run reports).
    pub base: String,
    pub optimizer: String,
    /// starting, running, paused, completed, stopped early, cancelled, failed
    pub status: RunStatus,
    pub total: usize,
    pub step: usize,
    pub epoch: f64,
    pub loss: Option<f64>,
    pub smooth: Option<f64>,
    pub eval_loss: Option<f64>,
    pub best_eval: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub rss: u64,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub trainable_params: usize,
    pub total_params: usize,
    pub train_points: Vec<(f64, f64)>,
    pub eval_points: Vec<(f64, f64)>,
    pub accuracy: Option<(usize, usize)>,
    pub message: Option<String>,
    pub job: Option<u64>,
}

impl LiveRun {
    pub fn eta_s(&self) -> Option<f64> {
        (self.step > 0 && self.total > self.step).then(|| self.elapsed_s / self.step as f64 * (self.total - self.step) as f64)
    }

    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }

    /// Applies one trainer event.
    pub fn apply(&mut self, ev: &TrainEvent) {
        match ev {
            TrainEvent::Started { run_id, model, view, method, base, optimizer, total_steps, start_step, train_examples, eval_examples, trainable_params, total_params, .. } => {
                self.id = run_id.clone();
                self.base = base.clone();
                self.optimizer = optimizer.clone();
                self.model = model.clone();
                self.view = view.clone();
                self.method = method.clone();
                self.total = *total_steps;
                self.step = *start_step;
                self.train_examples = *train_examples;
                self.eval_examples = *eval_examples;
                self.trainable_params = *trainable_params;
                self.total_params = *total_params;
                self.status = RunStatus::Running;
                self.train_points.retain(|p| p.0 <= *start_step as f64);
                self.eval_points.retain(|p| p.0 <= *start_step as f64);
            }
            TrainEvent::Step(m) => {
                self.step = m.step;
                self.total = m.total;
                self.epoch = m.epoch;
                self.loss = Some(m.loss);
                // An exponential moving average, as most training dashboards show.
                self.smooth = Some(match self.smooth {
                    Some(s) => 0.9 * s + 0.1 * m.loss,
                    None => m.loss,
                });
                self.lr = m.lr;
                self.grad_norm = m.grad_norm;
                self.tokens_per_s = m.tokens_per_s;
                self.elapsed_s = m.elapsed_s;
                self.rss = m.rss_bytes;
                self.train_points.push((m.step as f64, m.loss));
            }
            TrainEvent::Eval { step, loss, best } => {
                self.eval_loss = Some(*loss);
                self.best_eval = Some(*best);
                self.eval_points.push((*step as f64, *loss));
            }
            TrainEvent::Paused(p) => self.status = if *p { RunStatus::Paused } else { RunStatus::Running },
            TrainEvent::Accuracy { correct, total } => self.accuracy = Some((*correct, *total)),
            TrainEvent::Note(n) => self.message = Some(n.clone()),
            TrainEvent::Checkpoint { step } => self.message = Some(format!("checkpoint saved at step {step}")),
        }
    }
}

/// One field of the start form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
}

/// The start form: model folder, view and the hyper-parameters people change most.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainForm {
    pub fields: Vec<Field>,
    pub selected: usize,
    /// The engine's check of the current values: memory estimate and preview, or why not.
    pub check: Option<Result<Vec<String>, String>>,
}

pub const F_MODEL: usize = 0;
pub const F_VIEW: usize = 1;

impl TrainForm {
    pub fn new(model: &str, view: &str) -> TrainForm {
        let d = TrainConfig::default();
        let f = |label, value: String, hint| Field { label, value, hint };
        TrainForm {
            fields: vec![
                f("model", model.to_string(), "a Hugging Face folder: config.json, tokenizer.json, *.safetensors"),
                f("view", view.to_string(), "a training-set view (Data pane, F4 lists them)"),
                f("method", d.method.clone(), "lora or full"),
                f("base precision", d.quant_base.name().into(), "f32; bf16: half the memory; nf4, nf4-dq: 4-bit (QLoRA; lora only)"),
                f("optimizer", d.optim.name().into(), "adamw, or adamw8bit: 8-bit moments, a quarter of the memory"),
                f("lora r", d.lora_r.to_string(), "adapter rank"),
                f("lora alpha", d.lora_alpha.to_string(), "scale = alpha / r"),
                f("learning rate", format!("{}", d.lr), "peak, after warmup; cosine decay to 0"),
                f("epochs", d.epochs.to_string(), "passes over the train split"),
                f("micro-batch", d.micro_batch.to_string(), "examples per forward pass"),
                f("grad accum", d.grad_accum.to_string(), "micro-batches per optimizer step"),
                f("max length", d.max_len.to_string(), "tokens; longer examples are truncated"),
                f("grad checkpointing", "no".into(), "yes: recompute blocks in backward, less memory"),
            ],
            selected: 0,
            check: None,
        }
    }

    /// The form as a model folder, a view and a config, or the first field that does not parse.
    pub fn spec(&self) -> Result<(String, String, TrainConfig), String> {
        let v = |i: usize| self.fields[i].value.trim().to_string();
        let num = |i: usize| -> Result<f64, String> {
            v(i).parse::<f64>().map_err(|_| format!("{} must be a number.", self.fields[i].label))
        };
        let int = |i: usize| -> Result<usize, String> {
            v(i).parse::<usize>().map_err(|_| format!("{} must be a whole number.", self.fields[i].label))
        };
        if v(F_MODEL).is_empty() {
            return Err("Give a model folder.".into());
        }
        if v(F_VIEW).is_empty() {
            return Err("Give a training-set view.".into());
        }
        let c = TrainConfig {
            method: v(2),
            quant_base: BasePrecision::parse(&v(3))?,
            optim: Optimizer::parse(&v(4))?,
            lora_r: int(5)?,
            lora_alpha: num(6)?,
            lr: num(7)?,
            epochs: num(8)?,
            micro_batch: int(9)?,
            grad_accum: int(10)?,
            max_len: int(11)?,
            grad_checkpointing: matches!(v(12).as_str(), "yes" | "y" | "true" | "on"),
            ..TrainConfig::default()
        };
        c.check()?;
        Ok((v(F_MODEL), v(F_VIEW), c))
    }

    pub fn current(&mut self) -> &mut String {
        &mut self.fields[self.selected].value
    }
}

/// The Loss chart's view settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartView {
    pub smooth: bool,
    pub log: bool,
    /// Show only the last N steps (None: all).
    pub last: Option<usize>,
    /// Another run's curves drawn beside the live one: (run id, train points, eval points).
    pub overlay: Option<(String, Curve, Curve)>,
}

impl Default for ChartView {
    fn default() -> Self {
        ChartView { smooth: true, log: false, last: None, overlay: None }
    }
}

pub const ZOOMS: [Option<usize>; 4] = [None, Some(500), Some(100), Some(20)];

impl ChartView {
    pub fn zoom_in(&mut self) {
        let i = ZOOMS.iter().position(|z| *z == self.last).unwrap_or(0);
        self.last = ZOOMS[(i + 1).min(ZOOMS.len() - 1)];
    }
    pub fn zoom_out(&mut self) {
        let i = ZOOMS.iter().position(|z| *z == self.last).unwrap_or(0);
        self.last = ZOOMS[i.saturating_sub(1)];
    }
}

/// Exponential moving average of a curve (weight 0.9 on the past).
pub fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut s: Option<f64> = None;
    points
        .iter()
        .map(|&(x, y)| {
            let v = match s {
                Some(p) => 0.9 * p + 0.1 * y,
                None => y,
            };
            s = Some(v);
            (x, v)
        })
        .collect()
}

/// The Runs pane's list and what is open in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunsState {
    pub list: Option<Result<Vec<RunRow>, String>>,
    pub selected: usize,
    /// A run picked with `m` to compare against the selected one.
    pub marked: Option<String>,
    /// Text of the open detail or comparison overlay.
    pub detail: Option<(String, Vec<String>)>,
    pub detail_scroll: u16,
    /// The newest listing asked for: an older answer (listings run on threads of their own) is
    /// dropped.
    pub request: u64,
    /// Every quantization report's rows (lathe.quant_evals), while their overlay is open.
    pub quant: Option<Result<Vec<crate::engine::data::quant_evals::QuantEval>, String>>,
    pub quant_request: u64,
    /// Which report the overlay shows (0: the newest).
    pub quant_shown: usize,
    /// The run whose report the overlay opens on.
    pub quant_for: Option<String>,
}

impl RunsState {
    /// Asks the service for the runs again.
    pub fn refresh(&mut self) -> super::action::Command {
        self.request += 1;
        super::action::Command::RefreshRuns { request: self.request }
    }

    pub fn rows(&self) -> &[RunRow] {
        match &self.list {
            Some(Ok(v)) => v,
            _ => &[],
        }
    }
    /// The quantization reports' ids, newest first.
    pub fn quant_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = match &self.quant {
            Some(Ok(rows)) => rows.iter().map(|r| r.report.as_str()).collect(),
            _ => Vec::new(),
        };
        ids.dedup();
        ids
    }

    /// The shown report's rows, largest file first.
    pub fn quant_rows(&self) -> Vec<crate::engine::data::quant_evals::QuantEval> {
        let (Some(Ok(rows)), Some(id)) = (&self.quant, self.quant_ids().get(self.quant_shown).map(|s| s.to_string())) else { return Vec::new() };
        rows.iter().filter(|r| r.report == id).cloned().collect()
    }

    pub fn selected_row(&self) -> Option<&RunRow> {
        self.rows().get(self.selected)
    }

    /// Brings the live run's row up to date between listings (which come only when a run starts,
    /// ends or the pane is focused): its status, step, losses, speed and time.
    pub fn follow(&mut self, live: &LiveRun) {
        let Some(Ok(rows)) = &mut self.list else { return };
        let Some(row) = rows.iter_mut().find(|r| r.id == live.id) else { return };
        if live.is_active() {
            row.status = live.status;
        }
        row.step = Some(live.step as i64);
        row.total_steps = Some(live.total as i64);
        row.train_loss = live.loss.or(row.train_loss);
        row.eval_loss = live.eval_loss.or(row.eval_loss);
        row.best_eval_loss = live.best_eval.or(row.best_eval_loss);
        if live.tokens_per_s > 0.0 {
            row.tokens_per_s = Some(live.tokens_per_s);
        }
        row.duration_s = Some(row.duration_s.unwrap_or(0.0).max(live.elapsed_s));
    }
    pub fn move_by(&mut self, d: isize) {
        let n = self.rows().len();
        if n == 0 {
            return;
        }
        self.selected = (self.selected as isize + d).clamp(0, n as isize - 1) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::train::trainer::StepMetrics;

    fn step(n: usize, loss: f64) -> TrainEvent {
        TrainEvent::Step(StepMetrics { step: n, total: 10, epoch: 0.1, loss, lr: 1e-3, grad_norm: 1.0, tokens_per_s: 100.0, elapsed_s: n as f64, rss_bytes: 1 })
    }

    #[test]
    fn live_run_follows_events() {
        let mut r = LiveRun { status: RunStatus::Starting, ..Default::default() };
        r.apply(&step(1, 4.0));
        r.apply(&step(2, 2.0));
        assert_eq!(r.loss, Some(2.0));
        assert!((r.smooth.unwrap() - 3.8).abs() < 1e-9);
        assert_eq!(r.eta_s(), Some(8.0));
        r.apply(&TrainEvent::Eval { step: 2, loss: 2.5, best: 2.5 });
        assert_eq!(r.eval_points, vec![(2.0, 2.5)]);
        r.apply(&TrainEvent::Paused(true));
        assert_eq!(r.status, RunStatus::Paused);
        assert!(r.is_active());
    }

    #[test]
    fn runs_row_follows_the_live_run() {
        let row = |id: &str| RunRow { id: id.into(), status: RunStatus::Running, step: Some(0), total_steps: Some(10), ..Default::default() };
        let mut runs = RunsState { list: Some(Ok(vec![row("other"), row("live")])), ..Default::default() };
        let mut r = LiveRun { id: "live".into(), status: RunStatus::Running, ..Default::default() };
        r.apply(&step(3, 2.0));
        r.apply(&TrainEvent::Eval { step: 3, loss: 2.5, best: 2.4 });
        runs.follow(&r);
        let rows = runs.rows();
        assert_eq!((rows[1].step, rows[1].best_eval_loss, rows[1].duration_s), (Some(3), Some(2.4), Some(3.0)));
        assert_eq!(rows[0].step, Some(0), "another run's row is left as listed");
        r.apply(&TrainEvent::Paused(true));
        runs.follow(&r);
        assert_eq!(runs.rows()[1].status, RunStatus::Paused);
    }

    #[test]
    fn form_parses_or_names_the_bad_field() {
        let mut f = TrainForm::new("/m", "instruct");
        let (m, v, c) = f.spec().unwrap();
        assert_eq!((m.as_str(), v.as_str(), c.lora_r), ("/m", "instruct", 8));
        f.fields[7].value = "fast".into();
        assert_eq!(f.spec().unwrap_err(), "learning rate must be a number.");
        f.fields[7].value = "1e-4".into();
        f.fields[4].value = "adamw8bit".into();
        assert_eq!(f.spec().unwrap().2.optim, Optimizer::AdamW8bit);
        f.fields[3].value = "nf4".into();
        assert_eq!(f.spec().unwrap().2.method_name(), "qlora");
        f.fields[3].value = "int3".into();
        assert!(f.spec().unwrap_err().contains("use f32, bf16, nf4 or nf4-dq"));
        f.fields[3].value = "f32".into();
        f.fields[2].value = "qlora".into();
        assert!(f.spec().unwrap_err().contains("lora or full"));
    }

    #[test]
    fn zoom_cycles_and_smoothing_averages() {
        let mut c = ChartView::default();
        c.zoom_in();
        assert_eq!(c.last, Some(500));
        c.zoom_out();
        c.zoom_out();
        assert_eq!(c.last, None);
        let s = smooth(&[(1.0, 1.0), (2.0, 0.0)]);
        assert_eq!(s, vec![(1.0, 1.0), (2.0, 0.9)]);
    }
}
