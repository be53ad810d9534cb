//! What a run leaves behind: a LoRA adapter in PEFT's layout (adapter_config.json +
//! adapter_model.safetensors with PEFT's tensor names), which HF peft loads and lathe loads back;
//! a full model as a Hugging Face folder; and the merge of an adapter into its base.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::config::ModelConfig;
use super::model::{LoraSpec, Model, Trainable, WeightSource};
use super::rng::Rng;
use super::weights::{load_all, save_atomic};

/// Files of a model folder that describe it (not its weights); copied next to new weights.
const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Fills `dir` through `dir.tmp`, then swaps it in: the old folder becomes `dir.old` until the new
/// one is in place, so a crash at any point leaves one whole folder (a reader checks `.old` when
/// `dir` is missing). A failed fill leaves the old folder untouched.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), String> {
    let tmp = dir.with_extension("tmp");
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| format!("cannot move {} aside: {e}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| format!("cannot move {} into place: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

pub fn save_adapter(model: &Model, base: &Path, trainable: &Trainable, dir: &Path) -> Result<(), String> {
    let Trainable::Lora(spec) = trainable else {
        return Err("this run trains every weight; it has no adapter".into());
    };
    let tensors: BTreeMap<String, Tensor> = model.trainable.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    let cfg = json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base.display().to_string(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": spec.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": spec.targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false
    });
    write_dir_atomic(dir, |tmp| {
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        save_atomic(&tensors, &tmp.join("adapter_model.safetensors"), Some(meta))?;
        std::fs::write(tmp.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).unwrap_or_default())
            .map_err(|e| format!("cannot write adapter_config.json: {e}"))
    })
}

/// Reads adapter_config.json into a LoRA spec.
pub fn adapter_spec(dir: &Path) -> Result<LoraSpec, String> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("No adapter_config.json in {}; point at a PEFT LoRA adapter folder.", dir.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON ({e}).", path.display()))?;
    if v.get("peft_type").and_then(Value::as_str).is_some_and(|t| t != "LORA") {
        return Err(format!("{} is a {} adapter; lathe loads LoRA adapters.", path.display(), v["peft_type"]));
    }
    let r = v.get("r").and_then(Value::as_u64).ok_or_else(|| format!("{} lacks r.", path.display()))? as usize;
    let alpha = v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(r as f64);
    let targets = match v.get("target_modules") {
        Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => {
            return Err(format!("{} gives target_modules as the pattern {s:?}; lathe reads a list of module names.", path.display()))
        }
        _ => return Err(format!("{} lacks target_modules.", path.display())),
    };
    let mut spec = LoraSpec { r, alpha, dropout: 0.0, targets };
    if v.get("use_rslora").and_then(Value::as_bool) == Some(true) {
        // rsLoRA scales by alpha / sqrt(r); express it through alpha.
        spec.alpha = alpha * (r as f64).sqrt();
    }
    Ok(spec)
}

/// The base model with a PEFT adapter attached (adapter weights as loaded, trainable).
pub fn load_adapter(cfg: &ModelConfig, src: &mut dyn WeightSource, dir: &Path, device: &Device) -> Result<Model, String> {
    let spec = adapter_spec(dir)?;
    let model = Model::build(cfg, src, &Trainable::Lora(spec), &mut Rng::new(0), device)?;
    let file = dir.join("adapter_model.safetensors");
    let weights = load_all(&file, device)?;
    for (name, var) in &model.trainable {
        // PEFT may save with or without the adapter name (".default.") in keys.
        let t = weights
            .get(name)
            .or_else(|| weights.get(&name.replace(".weight", ".default.weight")))
            .ok_or_else(|| format!("{} has no tensor {name}; the adapter was made for another model.", file.display()))?;
        if t.dims() != var.dims() {
            return Err(format!("{name} in {} has shape {:?}, the model needs {:?}.", file.display(), t.dims(), var.dims()));
        }
        var.set(t).map_err(|e| e.to_string())?;
    }
    Ok(model)
}

/// Saves `model` (adapters merged) as a Hugging Face folder next to the base's config and
/// tokenizer files.
pub fn save_model(model: &Model, base: &Path, dir: &Path) -> Result<(), String> {
    let tensors = model.merged_tensors().map_err(|e| e.to_string())?;
    let tensors: BTreeMap<String, Tensor> = tensors.into_iter().map(|(k, v)| (k, v.detach())).collect();
    write_dir_atomic(dir, |tmp| {
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        save_atomic(&tensors, &tmp.join("model.safetensors"), Some(meta))?;
        for f in SIDE_FILES {
            let src = base.join(f);
            if src.exists() {
                if *f == "config.json" {
                    // The weights are float32 now; say so in both layouts' keys.
                    let text = std::fs::read_to_string(&src).map_err(|e| e.to_string())?;
                    let mut v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    if let Some(o) = v.as_object_mut() {
                        if o.contains_key("torch_dtype") {
                            o.insert("torch_dtype".into(), json!("float32"));
                        }
                        if o.contains_key("dtype") || !o.contains_key("torch_dtype") {
                            o.insert("dtype".into(), json!("float32"));
                        }
                    }
                    std::fs::write(tmp.join(f), serde_json::to_string_pretty(&v).unwrap_or_default()).map_err(|e| e.to_string())?;
                } else {
                    std::fs::copy(&src, tmp.join(f)).map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
                }
            }
        }
        Ok(())
    })
}

/// Merges a PEFT adapter into its base and writes a new model folder.
pub fn merge(base: &Path, adapter: &Path, out: &Path) -> Result<(), String> {
    let cfg = ModelConfig::load(base).map_err(|e| e.to_string())?;
    let device = Device::Cpu;
    let mut src = super::weights::SafetensorsSource::open(base, &device)?;
    let model = load_adapter(&cfg, &mut src, adapter, &device)?;
    save_model(&model, base, out)
}
