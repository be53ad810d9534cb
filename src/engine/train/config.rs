//! Hugging Face model configs of the families lathe trains (Llama, Phi, Qwen2), read into one
//! struct. Both on-disk layouts are read: transformers 4.x (rope_theta, rope_scaling and
//! partial_rotary_factor at the top level, torch_dtype) and transformers 5 (rope_parameters, dtype).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Phi,
    Qwen2,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeScaling {
    /// "linear", "dynamic", "llama3", "yarn", ...
    pub kind: String,
    pub factor: f64,
    /// Every other field of the scaling table, kept for the kinds that need them (llama3, yarn).
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon (Llama, Qwen2) or LayerNorm epsilon (Phi).
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// The share of each head's dimensions that get rotary embeddings (Phi: 0.5; others 1).
    pub partial_rotary_factor: f64,
    pub tie_word_embeddings: bool,
    pub hidden_act: String,
    /// Q, K and V projections carry a bias (Qwen2; Phi has biases everywhere).
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The weights' dtype as the config states it ("float32", "bfloat16", ...), if it does.
    pub dtype: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("No config.json in {0}; point --model at a Hugging Face model folder (config.json, tokenizer.json, *.safetensors).")]
    Missing(String),
    #[error("{path} is not valid JSON ({msg}); fix the file or copy the model folder again.")]
    Malformed { path: String, msg: String },
    #[error("{path} describes a {model_type:?} model; lathe trains llama, phi and qwen2 models (TinyLlama, Llama 2/3, Phi-1.5/2, Qwen1.5/2/2.5).")]
    Unsupported { path: String, model_type: String },
    #[error("{path} lacks {field} (or it is not a positive number); the folder's config.json looks incomplete.")]
    Field { path: String, field: &'static str },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<ModelConfig, ConfigError> {
        let path = dir.join("config.json");
        let p = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing(dir.display().to_string())
            } else {
                ConfigError::Io { path: p.clone(), source: e }
            }
        })?;
        ModelConfig::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<ModelConfig, ConfigError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::Malformed { path: path.into(), msg: e.to_string() })?;
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let family = match model_type.as_str() {
            "llama" => Family::Llama,
            "phi" => Family::Phi,
            "qwen2" => Family::Qwen2,
            _ => return Err(ConfigError::Unsupported { path: path.into(), model_type }),
        };
        let usize_of = |field: &'static str| -> Result<usize, ConfigError> {
            v.get(field)
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)
                .map(|n| n as usize)
                .ok_or(ConfigError::Field { path: path.into(), field })
        };
        let rope = v.get("rope_parameters").and_then(Value::as_object);
        // transformers 5 keeps rope settings in rope_parameters; 4.x at the top level.
        let rope_f64 = |key: &str| -> Option<f64> {
            rope.and_then(|r| r.get(key)).and_then(Value::as_f64).or_else(|| v.get(key).and_then(Value::as_f64))
        };
        let hidden_size = usize_of("hidden_size")?;
        let num_heads = usize_of("num_attention_heads")?;
        let num_kv_heads = v
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .unwrap_or(num_heads);
        let head_dim = v
            .get("head_dim")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .unwrap_or(hidden_size / num_heads);
        let eps_key = if family == Family::Phi { "layer_norm_eps" } else { "rms_norm_eps" };
        let default_eps = if family == Family::Phi { 1e-5 } else { 1e-6 };
        let scaling_table = v
            .get("rope_scaling")
            .and_then(Value::as_object)
            .cloned()
            .or_else(|| rope.cloned().filter(|r| r.get("rope_type").and_then(Value::as_str).is_some_and(|t| t != "default")));
        let rope_scaling = scaling_table.map(|mut t| {
            let kind = t
                .remove("rope_type")
                .or_else(|| t.remove("type"))
                .and_then(|k| k.as_str().map(str::to_string))
                .unwrap_or_else(|| "linear".into());
            let factor = t.remove("factor").and_then(|f| f.as_f64()).unwrap_or(1.0);
            // Settings that are not scaling proper stay out of `extra`.
            for k in ["rope_theta", "partial_rotary_factor"] {
                t.remove(k);
            }
            RopeScaling { kind, factor, extra: t }
        });
        let ids = |key: &str| -> Vec<u32> {
            match v.get(key) {
                Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|n| n as u32)).collect(),
                _ => vec![],
            }
        };
        Ok(ModelConfig {
            family,
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_layers: usize_of("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: v.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(2048) as usize,
            norm_eps: v.get(eps_key).and_then(Value::as_f64).unwrap_or(default_eps),
            rope_theta: rope_f64("rope_theta").unwrap_or(10_000.0),
            rope_scaling,
            partial_rotary_factor: rope_f64("partial_rotary_factor")
                .unwrap_or(if family == Family::Phi { 0.5 } else { 1.0 }),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            hidden_act: v
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or(if family == Family::Phi { "gelu_new" } else { "silu" })
                .to_string(),
            qkv_bias: match family {
                Family::Llama => v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
                Family::Phi | Family::Qwen2 => true,
            },
            bos_token_id: ids("bos_token_id").first().copied(),
            eos_token_ids: ids("eos_token_id"),
            dtype: v
                .get("dtype")
                .or_else(|| v.get("torch_dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Rotary dimensions per head (all of them unless a partial factor says otherwise).
    pub fn rotary_dim(&self) -> usize {
        ((self.head_dim as f64) * self.partial_rotary_factor).round() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shapes of real published configs (values as the model cards give them).
    const TINYLLAMA: &str = r#"{"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
        "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 22, "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": null, "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "transformers_version": "4.35.0", "use_cache": true, "vocab_size": 32000}"#;
    const PHI2: &str = r#"{"architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 50256,
        "embd_pdrop": 0.0, "eos_token_id": 50256, "hidden_act": "gelu_new", "hidden_size": 2560,
        "intermediate_size": 10240, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
        "model_type": "phi", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "partial_rotary_factor": 0.4, "qk_layernorm": false, "resid_pdrop": 0.1, "rope_scaling": null,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float16", "vocab_size": 51200}"#;
    // transformers 5 layout: rope_parameters and dtype.
    const QWEN25_V5: &str = r#"{"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643,
        "dtype": "bfloat16", "eos_token_id": [151645, 151643], "hidden_act": "silu", "hidden_size": 896,
        "intermediate_size": 4864, "max_position_embeddings": 32768, "model_type": "qwen2",
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "tie_word_embeddings": true,
        "vocab_size": 151936}"#;
    const LLAMA3_SCALED: &str = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0}"#;

    #[test]
    fn reads_tinyllama_phi_and_qwen_in_both_layouts() {
        let t = ModelConfig::parse(TINYLLAMA, "t").unwrap();
        assert_eq!((t.family, t.num_layers, t.num_kv_heads, t.head_dim), (Family::Llama, 22, 4, 64));
        assert_eq!((t.norm_eps, t.rope_theta, t.rope_scaling.clone()), (1e-5, 10_000.0, None));
        assert_eq!((t.bos_token_id, t.eos_token_ids.clone(), t.dtype.as_deref()), (Some(1), vec![2], Some("bfloat16")));
        assert!(!t.qkv_bias && !t.tie_word_embeddings);

        let p = ModelConfig::parse(PHI2, "p").unwrap();
        assert_eq!((p.family, p.head_dim, p.rotary_dim(), p.hidden_act.as_str()), (Family::Phi, 80, 32, "gelu_new"));
        assert!(p.qkv_bias);

        let q = ModelConfig::parse(QWEN25_V5, "q").unwrap();
        assert_eq!((q.family, q.rope_theta, q.num_kv_heads, q.head_dim), (Family::Qwen2, 1_000_000.0, 2, 64));
        assert_eq!(q.rope_scaling, None, "rope_type default is no scaling");
        assert_eq!((q.eos_token_ids.clone(), q.dtype.as_deref(), q.tie_word_embeddings), (vec![151645, 151643], Some("bfloat16"), true));
        assert!(q.qkv_bias);
    }

    #[test]
    fn rope_scaling_from_either_place() {
        let l = ModelConfig::parse(LLAMA3_SCALED, "l").unwrap();
        let s = l.rope_scaling.unwrap();
        assert_eq!((s.kind.as_str(), s.factor), ("llama3", 32.0));
        assert_eq!(s.extra["original_max_position_embeddings"], 8192);
        let v5 = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_hidden_layers": 2, "vocab_size": 100,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "linear", "factor": 2.0}}"#;
        let m = ModelConfig::parse(v5, "m").unwrap();
        assert_eq!(m.rope_theta, 500_000.0);
        let s = m.rope_scaling.unwrap();
        assert_eq!((s.kind.as_str(), s.factor, s.extra.len()), ("linear", 2.0, 0));
    }

    #[test]
    fn wrong_folders_get_a_sentence() {
        let dir = std::env::temp_dir().join(format!("lathe-cfg-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = ModelConfig::load(&dir).unwrap_err().to_string();
        assert!(err.starts_with("No config.json in") && err.contains("Hugging Face model folder"), "{err}");
        std::fs::write(dir.join("config.json"), "{\"model_type\": ").unwrap();
        assert!(ModelConfig::load(&dir).unwrap_err().to_string().contains("is not valid JSON"));
        std::fs::write(dir.join("config.json"), r#"{"model_type": "bert", "hidden_size": 8}"#).unwrap();
        let err = ModelConfig::load(&dir).unwrap_err().to_string();
        assert!(err.contains("\"bert\"") && err.contains("llama, phi and qwen2"), "{err}");
        std::fs::write(dir.join("config.json"), r#"{"model_type": "llama", "hidden_size": 8}"#).unwrap();
        assert!(ModelConfig::load(&dir).unwrap_err().to_string().contains("lacks num_attention_heads"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
