//! The demo run: a tiny Llama-architecture model built from scratch (a byte-level BPE tokenizer
//! trained here with the `tokenizers` crate, random init) and trained on the bundled `instruct`
//! view. It is an ordinary run; only its base model and its config are made here.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::json;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, PreTokenizerWrapper, Tokenizer};

use super::config::ModelConfig;
use super::model::{Model, RandomInit, Trainable};
use super::rng::Rng;
use super::spec::{RunSpec, TrainConfig};
use super::weights::save_atomic;
use crate::engine::data::views::{Example, Split};
use crate::engine::data::Catalog;

pub const DEMO_VIEW: &str = "instruct";
pub const DEMO_BASE: &str = "lathe-demo-base";
const SPECIALS: &[&str] = &["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"];
/// One turn per role, closed by <|end|> (the model's EOS).
pub const DEMO_TEMPLATE: &str = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// The demo's shape: small enough to train in minutes on two cores.
pub fn demo_config_json(vocab: usize) -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "vocab_size": vocab,
        "bos_token_id": 0,
        "eos_token_id": 6,
        "pad_token_id": 2,
        "torch_dtype": "float32",
        "attention_bias": false,
        "mlp_bias": false
    })
}

/// The demo's training settings.
pub fn demo_train_config() -> TrainConfig {
    TrainConfig {
        method: "full".into(),
        lr: 6e-4,
        weight_decay: 0.01,
        warmup_ratio: 0.05,
        micro_batch: 16,
        grad_accum: 1,
        max_len: 64,
        epochs: 6.0,
        eval_every: 50,
        eval_max: 200,
        checkpoint_every: 100,
        exact_match: 200,
        max_new_tokens: 12,
        seed: 42,
        ..TrainConfig::default()
    }
}

/// The demo's tokenizer: byte-level BPE whose merges spell out, left to right, each word that
/// starts with a space or a capital and occurs at least `min_count` times in `texts`. Whole
/// instruction words become single tokens, while a lowercase letter run (an input word) has no
/// merge that applies and stays one token per letter: the demo's tasks are about letters, and a
/// merge inside them would hide the letters from the model. Built from the `tokenizers` crate's
/// BPE model and byte-level pre-tokenizer, so llama.cpp and transformers read it like any BPE.
pub fn word_tokenizer(texts: &[String], min_count: usize) -> Result<Tokenizer, String> {
    use std::collections::BTreeMap;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let pre = ByteLevel::new(false, true, true);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in texts {
        let mut p = PreTokenizedString::from(t.as_str());
        pre.pre_tokenize(&mut p).map_err(|e| e.to_string())?;
        for (w, _, _) in p.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            *counts.entry(w.to_string()).or_default() += 1;
        }
    }
    let mut vocab: Vec<String> = Vec::new();
    for s in SPECIALS {
        vocab.push(s.to_string());
    }
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    for c in alphabet {
        vocab.push(c.to_string());
    }
    let mut merges: Vec<(String, String)> = Vec::new();
    let mut known: std::collections::HashSet<String> = vocab.iter().cloned().collect();
    for (w, n) in &counts {
        let first = w.chars().next().unwrap_or(' ');
        if *n < min_count || w.chars().count() < 2 || !(first == 'Ġ' || first.is_ascii_uppercase()) {
            continue;
        }
        let chars: Vec<char> = w.chars().collect();
        let mut cur = chars[0].to_string();
        for c in &chars[1..] {
            let next = format!("{cur}{c}");
            if known.insert(next.clone()) {
                merges.push((cur.clone(), c.to_string()));
                vocab.push(next.clone());
            }
            cur = next;
        }
    }
    let map: std::collections::HashMap<String, u32> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(map.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges).build().map_err(|e| e.to_string())?;
    let mut tok = Tokenizer::new(ModelWrapper::BPE(bpe));
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(pre)));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let specials: Vec<AddedToken> = SPECIALS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    tok.add_special_tokens(specials).map_err(|e| format!("tokenizer: {e}"))?;
    Ok(tok)
}

/// Makes (once) the demo's base model folder under `models_dir`: tokenizer, config, random
/// weights. Returns its path.
pub fn ensure_base(catalog: &Catalog, models_dir: &Path) -> Result<PathBuf, String> {
    let dir = models_dir.join(DEMO_BASE);
    if dir.join("model.safetensors").exists() && dir.join("tokenizer.json").exists() {
        return Ok(dir);
    }
    let examples = catalog.examples(DEMO_VIEW, Split::Train, None).map_err(|e| e.to_string())?;
    // Merges come from the instructions only, so the answers' letters and digits stay single
    // tokens: the tasks are about characters.
    let texts: Vec<String> = examples
        .iter()
        .filter_map(|e| match e {
            Example::Alpaca { instruction, .. } => Some(instruction.clone()),
            _ => None,
        })
        .collect();
    if texts.is_empty() {
        return Err(format!("The demo needs the bundled view {DEMO_VIEW}; it is missing or empty in this workspace."));
    }
    let tok = word_tokenizer(&texts, 2)?;
    let vocab = tok.get_vocab_size(true);
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let io = |e: std::io::Error| format!("cannot write the demo model: {e}");
    tok.save(tmp.join("tokenizer.json"), false).map_err(|e| format!("cannot save the tokenizer: {e}"))?;
    let tcfg = json!({
        "bos_token": "<s>",
        "eos_token": "<|end|>",
        "pad_token": "<pad>",
        "add_bos_token": false,
        "model_max_length": 128,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": DEMO_TEMPLATE,
    });
    std::fs::write(tmp.join("tokenizer_config.json"), serde_json::to_string_pretty(&tcfg).unwrap()).map_err(io)?;
    let cfg_json = demo_config_json(vocab);
    // Check the ids the config names against the tokenizer.
    for (key, tokname) in [("bos_token_id", "<s>"), ("eos_token_id", "<|end|>"), ("pad_token_id", "<pad>")] {
        let want = cfg_json[key].as_u64().unwrap() as u32;
        if tok.token_to_id(tokname) != Some(want) {
            return Err(format!("demo tokenizer: {tokname} is not id {want}"));
        }
    }
    std::fs::write(tmp.join("config.json"), serde_json::to_string_pretty(&cfg_json).unwrap()).map_err(io)?;
    let cfg = ModelConfig::load(&tmp).map_err(|e| e.to_string())?;
    let device = Device::Cpu;
    let mut init = RandomInit { rng: Rng::new(20261126), std: 0.02, device: device.clone() };
    let model = Model::build(&cfg, &mut init, &Trainable::None, &mut Rng::new(0), &device)?;
    save_atomic(&model.merged_tensors().map_err(|e| e.to_string())?, &tmp.join("model.safetensors"), None)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io)?;
    Ok(dir)
}

pub fn demo_spec(catalog: &Catalog, models_dir: &Path) -> Result<RunSpec, String> {
    let model = ensure_base(catalog, models_dir)?;
    Ok(RunSpec { model, view: DEMO_VIEW.into(), config: demo_train_config() })
}
