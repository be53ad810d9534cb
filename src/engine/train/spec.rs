//! What a run is asked to do: the model folder, the view and the training configuration (read
//! from `--config train.toml`, flags on top), and the trainable part it implies.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::base::BasePrecision;
use super::optim::Optimizer;
use super::config::ModelConfig;
use super::model::{LoraSpec, Trainable};

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
    /// How the frozen base's projections are held: f32, bf16, or nf4 / nf4-dq (QLoRA; LoRA only).
    pub quant_base: BasePrecision,
    /// adamw, or adamw8bit (8-bit moments).
    pub optim: Optimizer,
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
            quant_base: BasePrecision::F32,
            optim: Optimizer::AdamW,
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
        if self.method == "full" && self.quant_base != BasePrecision::F32 {
            return Err(format!("Full fine-tuning trains every weight in f32; use --method lora with --quant-base {} (QLoRA), or an f32 base.", self.quant_base.name()));
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

    /// The method as runs record it: full, lora, or qlora (LoRA on a 4-bit base).
    pub fn method_name(&self) -> &str {
        match (self.method.as_str(), self.quant_base) {
            ("lora", p) if p.is_4bit() => "qlora",
            (m, _) => m,
        }
    }

    pub fn from_toml(path: &Path) -> Result<TrainConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{} is not a valid training config: {}", path.display(), e.message()))
    }
}

/// What was asked for: a model folder, a view and a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub model: PathBuf,
    pub view: String,
    pub config: TrainConfig,
}

pub(super) fn trainable_of(cfg: &TrainConfig, mcfg: &ModelConfig) -> Trainable {
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
