//! Sentence embeddings from a local Hugging Face folder of the BERT family (all-MiniLM, bge, e5,
//! gte) or nomic-bert (nomic-embed-text: rotary positions, SwiGLU, in nomic's own layout), run in
//! candle in f32. How to embed is read from the folder's sentence-transformers files,
//! as sentence-transformers reads them: `modules.json` (the modules, and whether the result is
//! normalised), the pooling module's `config.json` (CLS, mean or max), `sentence_bert_config.json`
//! or `tokenizer_config.json` (the maximum length) and `config_sentence_transformers.json`
//! (query/document prompts), in the layouts of sentence-transformers 2 to 6. BERT-family models
//! run through lathe's own forward pass (bert.rs, texts packed without padding); nomic-bert through
//! candle's, texts padded to the longest of each batch with an attention mask.

mod bert;
mod kernels;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::nomic_bert::{Config as NomicConfig, NomicBertModel};
use serde_json::Value;

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's ([CLS]) vector.
    Cls,
    /// The mean over the text's tokens (padding excluded).
    Mean,
    /// The element-wise maximum over the text's tokens.
    Max,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
        }
    }
}

/// What an embedding folder says about itself: everything a collection records of its model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedSpec {
    /// The folder's name (all-MiniLM-L6-v2, bge-small-en-v1.5, ...).
    pub name: String,
    pub dir: PathBuf,
    pub dim: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Tokens per text, the special ones included; longer texts are truncated.
    pub max_len: usize,
    /// Prompt names to the text put before each input ("query" → "query: " for e5).
    pub prompts: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{0} does not exist; give the folder of a sentence-embedding model (config.json, model.safetensors, tokenizer.json, modules.json).")]
    Missing(String),
    #[error("{path} is {what}, not a sentence-embedding model; give a BERT-family embedding folder (all-MiniLM-L6-v2, bge, e5, gte).")]
    NotEmbedding { path: String, what: String },
    #[error("{path} has no {file}; lathe reads the sentence-transformers files to know how to pool, so copy the whole model folder.")]
    NoConfig { path: String, file: String },
    #[error("{path}: {why}")]
    Unsupported { path: String, why: String },
    #[error("{path} has no prompt named {name:?}; it has: {have}.")]
    NoPrompt { path: String, name: String, have: String },
    #[error("cannot read {path} ({why}); the file may be damaged, copy the model folder again.")]
    Damaged { path: String, why: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

fn read_json(path: &Path) -> Result<Value, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::Damaged { path: path.display().to_string(), why: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Damaged { path: path.display().to_string(), why: e.to_string() })
}

impl EmbedSpec {
    /// Reads the folder's configs (no weights): what `Embedder::load` will do, or why it cannot.
    pub fn read(dir: &Path) -> Result<EmbedSpec, EmbedError> {
        let p = dir.display().to_string();
        if !dir.is_dir() {
            return Err(EmbedError::Missing(p));
        }
        let config = dir.join("config.json");
        if !config.exists() {
            return Err(EmbedError::NoConfig { path: p, file: "config.json".into() });
        }
        let cfg = read_json(&config)?;
        let model_type = cfg["model_type"].as_str().unwrap_or("?").to_string();
        let arch = cfg["architectures"][0].as_str().unwrap_or("").to_string();
        if arch.ends_with("ForCausalLM") {
            return Err(EmbedError::NotEmbedding { path: p, what: format!("a causal language model ({model_type})") });
        }
        if model_type != "bert" && model_type != "nomic_bert" {
            return Err(EmbedError::NotEmbedding { path: p, what: format!("a {model_type:?} model (lathe embeds with BERT and nomic-bert models)") });
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Err(EmbedError::NoConfig { path: p, file: "modules.json".into() });
        }
        let modules = read_json(&modules_path)?;
        let modules = modules.as_array().cloned().unwrap_or_default();
        let kind = |m: &Value| m["type"].as_str().unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
        let pool_dir = modules.iter().find(|m| kind(m) == "Pooling").and_then(|m| m["path"].as_str()).ok_or_else(|| {
            EmbedError::Unsupported { path: p.clone(), why: "its modules.json lists no Pooling module; lathe cannot tell how to pool it.".into() }
        })?;
        if let Some(other) = modules.iter().map(kind).find(|k| !matches!(k.as_str(), "Transformer" | "Pooling" | "Normalize")) {
            return Err(EmbedError::Unsupported { path: p, why: format!("its modules.json has a {other} module, which lathe does not run (it runs Transformer, Pooling and Normalize).") });
        }
        let normalize = modules.iter().any(|m| kind(m) == "Normalize");
        let pool_cfg = dir.join(pool_dir).join("config.json");
        if !pool_cfg.exists() {
            return Err(EmbedError::NoConfig { path: p, file: format!("{pool_dir}/config.json") });
        }
        let pc = read_json(&pool_cfg)?;
        let unsupported = |mode: &str| EmbedError::Unsupported {
            path: p.clone(),
            why: format!("{} asks for {mode} pooling, which lathe does not do (it does cls, mean and max).", pool_cfg.display()),
        };
        // sentence-transformers 6 writes `pooling_mode`; earlier versions one flag per mode.
        let pooling = match pc.get("pooling_mode").and_then(Value::as_str) {
            Some("cls") => Pooling::Cls,
            Some("mean") => Pooling::Mean,
            Some("max") => Pooling::Max,
            Some(other) => return Err(unsupported(other)),
            None => {
                let on = |k: &str| pc[format!("pooling_mode_{k}")].as_bool().unwrap_or(false);
                if let Some(other) = ["mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"].into_iter().find(|k| on(k)) {
                    return Err(unsupported(other));
                }
                match (on("cls_token"), on("mean_tokens"), on("max_tokens")) {
                    (true, false, false) => Pooling::Cls,
                    (false, true, false) => Pooling::Mean,
                    (false, false, true) => Pooling::Max,
                    _ => return Err(EmbedError::Unsupported { path: p, why: format!("{} sets no single pooling mode (cls, mean or max).", pool_cfg.display()) }),
                }
            }
        };
        if pc.get("include_prompt").and_then(Value::as_bool) == Some(false) {
            return Err(EmbedError::Unsupported { path: p, why: format!("{} pools without the prompt's tokens, which lathe does not do.", pool_cfg.display()) });
        }
        // The maximum length: sentence_bert_config.json's max_seq_length (sentence-transformers
        // before 6), else the tokenizer's model_max_length (6 writes it there only), capped by the
        // position table.
        let positions = cfg["max_position_embeddings"].as_u64().or(cfg["n_positions"].as_u64()).unwrap_or(512) as usize;
        let number_in = |file: &str, key: &str| -> Result<Option<usize>, EmbedError> {
            let path = dir.join(file);
            Ok(if path.exists() { read_json(&path)?[key].as_u64().map(|n| n as usize) } else { None })
        };
        let max_len = match number_in("sentence_bert_config.json", "max_seq_length")? {
            Some(n) => n,
            None => number_in("tokenizer_config.json", "model_max_length")?.unwrap_or(positions),
        }
        .min(positions);
        let st = dir.join("config_sentence_transformers.json");
        let prompts = if st.exists() {
            read_json(&st)?["prompts"]
                .as_object()
                .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let dim = cfg["hidden_size"].as_u64().or(cfg["n_embd"].as_u64()).ok_or_else(|| EmbedError::Damaged { path: config.display().to_string(), why: "no hidden_size".into() })? as usize;
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| p.clone());
        Ok(EmbedSpec { name, dir: dir.to_path_buf(), dim, pooling, normalize, max_len, prompts })
    }

    /// The text put before each input for `prompt` (a name from the folder's prompts).
    pub fn prompt(&self, name: &str) -> Result<&str, EmbedError> {
        self.prompts.get(name).map(String::as_str).ok_or_else(|| EmbedError::NoPrompt {
            path: self.dir.display().to_string(),
            name: name.to_string(),
            have: if self.prompts.is_empty() { "none".into() } else { self.prompts.keys().cloned().collect::<Vec<_>>().join(", ") },
        })
    }
}

/// The network that gives token vectors.
enum Encoder {
    Bert(bert::Bert),
    Nomic(NomicBertModel),
}

/// A loaded embedding model.
pub struct Embedder {
    pub spec: EmbedSpec,
    model: Encoder,
    tok: tokenizers::Tokenizer,
    pad_id: u32,
    device: Device,
}

/// The vectors of `Embedder::embed`, and which texts were longer than the model takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Indices of the texts cut at the model's maximum length.
    pub truncated: Vec<usize>,
}

/// Texts per forward pass.
pub const BATCH: usize = 32;

impl Embedder {
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let spec = EmbedSpec::read(dir)?;
        let damaged = |path: &Path, why: String| EmbedError::Damaged { path: path.display().to_string(), why };
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| damaged(&cfg_path, e.to_string()))?;
        let cfg: Value = serde_json::from_str(&text).map_err(|e| damaged(&cfg_path, e.to_string()))?;
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(EmbedError::NoConfig { path: dir.display().to_string(), file: "model.safetensors".into() });
        }
        let bytes = std::fs::read(&weights).map_err(|e| damaged(&weights, e.to_string()))?;
        let device = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(|e| damaged(&weights, e.to_string()))?;
        // Texts are cut to the shorter of the model's length and its position table.
        let (model, pad, positions) = if cfg["model_type"] == "nomic_bert" {
            let nc: NomicConfig = serde_json::from_str(&text).map_err(|e| damaged(&cfg_path, e.to_string()))?;
            (Encoder::Nomic(NomicBertModel::load(vb, &nc).map_err(|e| damaged(&weights, e.to_string()))?), 0, usize::MAX)
        } else {
            let shape = bert::Shape::read(&cfg).map_err(|why| EmbedError::Unsupported { path: dir.display().to_string(), why: format!("{why}.") })?;
            let (pad, positions) = (shape.pad, shape.positions);
            let model = bert::Bert::load(vb, shape, cfg["model_type"].as_str()).map_err(|e| damaged(&weights, e.to_string()))?;
            (Encoder::Bert(model), pad, positions)
        };
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(EmbedError::NoConfig { path: dir.display().to_string(), file: "tokenizer.json".into() });
        }
        let mut tok = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| damaged(&tok_path, e.to_string()))?;
        // Truncated to the model's length; padded here, to the longest of each batch.
        tok.with_padding(None);
        tok.with_truncation(Some(tokenizers::TruncationParams { max_length: spec.max_len.min(positions), ..Default::default() }))
            .map_err(|e| damaged(&tok_path, e.to_string()))?;
        let pad_id = tok.token_to_id("[PAD]").unwrap_or(pad);
        Ok(Embedder { spec, model, tok, pad_id, device })
    }

    /// Token ids of a text as the model sees it (prompt included, truncated).
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        Ok(self.tok.encode(text, true).map_err(|e| EmbedError::Run(e.to_string()))?.get_ids().to_vec())
    }

    /// One vector per text, with `prompt` (a prompt's text, see `EmbedSpec::prompt`) before each.
    /// Texts are embedded in batches of similar length (fewer padded tokens), in input order out.
    pub fn embed(&self, texts: &[&str], prompt: &str) -> Result<Embedded, EmbedError> {
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let encs = self.tok.encode_batch(inputs, true).map_err(|e| EmbedError::Run(e.to_string()))?;
        let mut order: Vec<usize> = (0..encs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encs[i].get_ids().len()));
        let mut out = vec![Vec::new(); encs.len()];
        for batch in order.chunks(BATCH) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| encs[i].get_ids()).collect();
            let vecs = self.forward(&ids).map_err(|e| EmbedError::Run(e.to_string()))?;
            for (&i, v) in batch.iter().zip(vecs) {
                out[i] = v;
            }
        }
        let truncated = (0..encs.len()).filter(|&i| !encs[i].get_overflowing().is_empty()).collect();
        Ok(Embedded { vectors: out, truncated })
    }

    fn forward(&self, ids: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let (h, lens) = (self.spec.dim, ids.iter().map(|i| i.len()).collect::<Vec<_>>());
        let packed = match &self.model {
            Encoder::Bert(m) => m.forward(ids)?,
            Encoder::Nomic(m) => {
                let (b, t) = (ids.len(), lens.iter().copied().max().unwrap_or(1).max(1));
                let mut flat = Vec::with_capacity(b * t);
                let mut mask = Vec::with_capacity(b * t);
                for row in ids {
                    flat.extend(row.iter().copied().chain(std::iter::repeat_n(self.pad_id, t - row.len())));
                    mask.extend((0..t).map(|j| if j < row.len() { 1u32 } else { 0 }));
                }
                let ids_t = Tensor::from_vec(flat, (b, t), &self.device)?;
                let mask_t = Tensor::from_vec(mask, (b, t), &self.device)?;
                let hidden = m.forward(&ids_t, Some(&ids_t.zeros_like()?), Some(&mask_t))?.to_vec3::<f32>()?;
                hidden.into_iter().zip(&lens).flat_map(|(rows, &n)| rows.into_iter().take(n).flatten()).collect()
            }
        };
        let mut at = 0;
        let mut out = Vec::with_capacity(ids.len());
        for &n in &lens {
            let rows = &packed[at * h..(at + n) * h];
            at += n;
            let mut v = pool(rows, h, self.spec.pooling);
            if self.spec.normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// One text's vector from its token rows (n × h), as sentence-transformers pools.
fn pool(rows: &[f32], h: usize, pooling: Pooling) -> Vec<f32> {
    let n = rows.len() / h;
    match pooling {
        Pooling::Cls => rows[..h].to_vec(),
        Pooling::Mean => {
            let mut v = vec![0f32; h];
            rows.chunks(h).for_each(|r| v.iter_mut().zip(r).for_each(|(v, x)| *v += x));
            let inv = 1.0 / (n as f32).max(1e-9);
            v.iter_mut().for_each(|x| *x *= inv);
            v
        }
        Pooling::Max => {
            let mut v = vec![f32::NEG_INFINITY; h];
            rows.chunks(h).for_each(|r| v.iter_mut().zip(r).for_each(|(v, x)| *v = v.max(*x)));
            v
        }
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
