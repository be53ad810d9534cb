//! Checkpoints: a run's folder layout, and the trainable weights, optimizer state and loop state
//! written atomically (a temporary folder renamed into place, the previous one kept until the new
//! one is whole) so that a killed run resumes bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::model::Model;
use super::optim::AdamW;
use super::weights::{load_all, save_atomic};

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

pub(super) fn find_checkpoint(paths: &Paths) -> Option<PathBuf> {
    let main = paths.checkpoint();
    if main.join("state.json").exists() {
        return Some(main);
    }
    let old = paths.root.join("checkpoint.old");
    old.join("state.json").exists().then_some(old)
}

pub(super) fn save_checkpoint(paths: &Paths, model: &Model, opt: &AdamW, state: &LoopState) -> Result<(), String> {
    let weights: BTreeMap<String, Tensor> = model.trainable.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    super::export::write_dir_atomic(&paths.checkpoint(), |tmp| {
        save_atomic(&weights, &tmp.join("trainable.safetensors"), None)?;
        save_atomic(&opt.state(&model.trainable).map_err(|e| e.to_string())?, &tmp.join("optimizer.safetensors"), None)?;
        let json = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
        write_synced(&tmp.join("state.json"), json.as_bytes())
    })
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    r.map_err(|e| format!("cannot write {} ({e}); free some disk space and try again.", path.display()))
}

pub(super) fn load_checkpoint(dir: &Path, model: &Model, opt: &mut AdamW) -> Result<LoopState, String> {
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
