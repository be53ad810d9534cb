//! GGUF export. lathe merges the adapter in candle, writes F32 or F16 tensors under llama.cpp's
//! names with the architecture, tokenizer and chat-template metadata that llama.cpp reads, and
//! leaves other quantizations to llama.cpp's quantizer (`llama_model_quantize`), so a Q8_0 or
//! Q4_K_M file is exactly what `llama-quantize` would make. Every file is written beside its
//! destination and renamed into place: a failure leaves no half file.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use serde_json::Value;

use crate::engine::train::config::{Family, ModelConfig};
use crate::engine::train::text::{TextCodec, PLAIN_TEMPLATE};
use crate::engine::train::trainer;

use super::imatrix::{ForQuantizer, Imatrix};
pub use super::quant::Quant;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Exported {
    pub path: PathBuf,
    pub modelfile: PathBuf,
    pub bytes: u64,
    pub tensors: usize,
}

/// The tokenizer as llama.cpp's "gpt2" (byte-level BPE) vocabulary.
/// The tokenizer as llama.cpp's vocabulary: "gpt2" (byte-level BPE with merges) or "llama"
/// (SentencePiece-style BPE with byte fallback, merged by score).
struct Vocab {
    kind: &'static str,
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
    /// For "llama": a score per token; higher merges first.
    scores: Vec<f32>,
    unk: Option<u32>,
    add_bos: bool,
    pre: &'static str,
}

fn vocab(dir: &Path, codec: &TextCodec, rows: usize, family: Family) -> Result<Vocab, String> {
    let path = dir.join("tokenizer.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?)
        .map_err(|e| format!("{} is not valid JSON ({e}).", path.display()))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(format!(
            "The tokenizer in {} is a {} model; GGUF export handles BPE tokenizers (byte-level like Qwen2, Phi and lathe's demo, or SentencePiece-style like TinyLlama and Llama 2).",
            dir.display(),
            model["type"].as_str().unwrap_or("unknown")
        ));
    }
    let spm = model["byte_fallback"].as_bool() == Some(true);
    let mut tokens: Vec<Option<String>> = vec![None; rows];
    let mut types = vec![1i32; rows];
    let mut put = |id: u64, s: &str, ty: i32| {
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some(s.to_string());
            types[id as usize] = ty;
        }
    };
    for (s, id) in model["vocab"].as_object().into_iter().flatten() {
        put(id.as_u64().unwrap_or(u64::MAX), s, 1);
    }
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        let special = t["special"].as_bool().unwrap_or(false);
        put(t["id"].as_u64().unwrap_or(u64::MAX), t["content"].as_str().unwrap_or(""), if special { 3 } else { 4 });
    }
    let mut types_out = types;
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                // Rows of the embedding beyond the tokenizer (padded vocabularies).
                types_out[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")),
            _ => String::new(),
        })
        .collect();
    let pre = &json["pre_tokenizer"];
    let pre = if spm {
        "default"
    } else if pre["type"].as_str() == Some("ByteLevel") && pre["use_regex"].as_bool() != Some(false) {
        "gpt-2"
    } else if family == Family::Qwen2 {
        "qwen2"
    } else {
        return Err(format!(
            "The pre-tokenizer in {} is not GPT-2's byte-level split, and lathe does not know which llama.cpp pre-tokenizer matches it.",
            path.display()
        ));
    };
    let add_bos = match &codec.bos {
        Some((_, id)) => codec.tok.encode("a", true).map(|e| e.get_ids().first() == Some(id)).unwrap_or(false),
        None => false,
    };
    let unk = model["unk_token"].as_str().and_then(|u| tokens.iter().position(|t| t == u)).map(|i| i as u32);
    let (kind, scores, merges) = if spm {
        // SentencePiece BPE ranks pieces by score, and Hugging Face's conversion keeps them in
        // that order by id: the score of an ordinary piece is minus its id. Byte pieces
        // (<0x41>) are byte-fallback tokens, the unknown token is unknown.
        for (i, t) in tokens.iter().enumerate() {
            if Some(i as u32) == unk {
                types_out[i] = 2;
            } else if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && types_out[i] == 1 {
                types_out[i] = 6;
            }
        }
        let scores = types_out.iter().enumerate().map(|(i, &ty)| if ty == 1 { -(i as f32) } else { 0.0 }).collect();
        ("llama", scores, Vec::new())
    } else {
        ("gpt2", Vec::new(), merges)
    };
    Ok(Vocab { kind, tokens, types: types_out, merges, scores, unk, add_bos, pre })
}

/// Hugging Face Llama keeps each head's rotary halves apart; llama.cpp's llama graph rotates
/// adjacent pairs, so q and k rows are interleaved the way HF's converter does it.
fn permute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((heads, 2, out / heads / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

fn arch(cfg: &ModelConfig) -> &'static str {
    match cfg.family {
        Family::Llama => "llama",
        Family::Qwen2 => "qwen2",
        Family::Phi => "phi2",
    }
}

/// Hugging Face names to llama.cpp's, with the llama row permutation.
fn gguf_tensors(cfg: &ModelConfig, hf: BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = Vec::new();
    for (name, t) in hf {
        let n = name.strip_prefix("model.").unwrap_or(&name);
        let mapped = match n {
            "embed_tokens.weight" => "token_embd.weight".to_string(),
            "norm.weight" => "output_norm.weight".into(),
            "final_layernorm.weight" => "output_norm.weight".into(),
            "final_layernorm.bias" => "output_norm.bias".into(),
            "lm_head.weight" => "output.weight".into(),
            "lm_head.bias" => "output.bias".into(),
            _ => {
                let rest = n.strip_prefix("layers.").ok_or_else(|| format!("unexpected tensor {name}"))?;
                let (idx, field) = rest.split_once('.').ok_or_else(|| format!("unexpected tensor {name}"))?;
                let (module, kind) = field.rsplit_once('.').ok_or_else(|| format!("unexpected tensor {name}"))?;
                let m = match module {
                    "input_layernorm" => "attn_norm",
                    "post_attention_layernorm" => "ffn_norm",
                    "self_attn.q_proj" => "attn_q",
                    "self_attn.k_proj" => "attn_k",
                    "self_attn.v_proj" => "attn_v",
                    "self_attn.o_proj" | "self_attn.dense" => "attn_output",
                    "mlp.gate_proj" => "ffn_gate",
                    "mlp.up_proj" | "mlp.fc1" => "ffn_up",
                    "mlp.down_proj" | "mlp.fc2" => "ffn_down",
                    other => return Err(format!("unexpected tensor {name} ({other})")),
                };
                format!("blk.{idx}.{m}.{kind}")
            }
        };
        let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
        let t = if cfg.family == Family::Llama && mapped.ends_with("attn_q.weight") {
            permute(&t, cfg.num_heads).map_err(|e| e.to_string())?
        } else if cfg.family == Family::Llama && mapped.ends_with("attn_k.weight") {
            permute(&t, cfg.num_kv_heads).map_err(|e| e.to_string())?
        } else {
            t
        };
        out.push((mapped, t));
    }
    Ok(out)
}

fn metadata(cfg: &ModelConfig, name: &str, quant: Quant, v: &Vocab, codec: &TextCodec) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value as V;
    let a = arch(cfg);
    let rot = (cfg.head_dim as f64 * cfg.partial_rotary_factor) as u32;
    let mut m: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(a.into())),
        ("general.name".into(), V::String(name.into())),
        ("general.file_type".into(), V::U32(quant.ftype())),
        (format!("{a}.context_length"), V::U32(cfg.max_position_embeddings as u32)),
        (format!("{a}.embedding_length"), V::U32(cfg.hidden_size as u32)),
        (format!("{a}.block_count"), V::U32(cfg.num_layers as u32)),
        (format!("{a}.feed_forward_length"), V::U32(cfg.intermediate_size as u32)),
        (format!("{a}.attention.head_count"), V::U32(cfg.num_heads as u32)),
        (format!("{a}.attention.head_count_kv"), V::U32(cfg.num_kv_heads as u32)),
        (format!("{a}.rope.freq_base"), V::F32(cfg.rope_theta as f32)),
        (format!("{a}.rope.dimension_count"), V::U32(rot)),
    ];
    if cfg.family == Family::Phi {
        m.push((format!("{a}.attention.layer_norm_epsilon"), V::F32(cfg.norm_eps as f32)));
    } else {
        m.push((format!("{a}.attention.layer_norm_rms_epsilon"), V::F32(cfg.norm_eps as f32)));
    }
    if let Some(s) = cfg.rope_scaling.as_ref().filter(|s| s.kind == "linear") {
        m.push((format!("{a}.rope.scaling.type"), V::String("linear".into())));
        m.push((format!("{a}.rope.scaling.factor"), V::F32(s.factor as f32)));
    }
    let strings = |xs: &[String]| V::Array(xs.iter().map(|s| V::String(s.clone())).collect());
    m.push(("tokenizer.ggml.model".into(), V::String(v.kind.into())));
    m.push(("tokenizer.ggml.pre".into(), V::String(v.pre.into())));
    m.push(("tokenizer.ggml.tokens".into(), strings(&v.tokens)));
    m.push(("tokenizer.ggml.token_type".into(), V::Array(v.types.iter().map(|&t| V::I32(t)).collect())));
    if v.kind == "llama" {
        m.push(("tokenizer.ggml.scores".into(), V::Array(v.scores.iter().map(|&x| V::F32(x)).collect())));
        m.push(("tokenizer.ggml.add_space_prefix".into(), V::Bool(true)));
    } else {
        m.push(("tokenizer.ggml.merges".into(), strings(&v.merges)));
    }
    if let Some(u) = v.unk {
        m.push(("tokenizer.ggml.unknown_token_id".into(), V::U32(u)));
    }
    if let Some((_, id)) = &codec.bos {
        m.push(("tokenizer.ggml.bos_token_id".into(), V::U32(*id)));
    }
    if let Some((_, id)) = &codec.eos {
        m.push(("tokenizer.ggml.eos_token_id".into(), V::U32(*id)));
        m.push(("tokenizer.ggml.padding_token_id".into(), V::U32(*id)));
    }
    m.push(("tokenizer.ggml.add_bos_token".into(), V::Bool(v.add_bos)));
    m.push(("tokenizer.ggml.add_eos_token".into(), V::Bool(false)));
    m.push(("tokenizer.chat_template".into(), V::String(codec.template_source().unwrap_or(PLAIN_TEMPLATE).to_string())));
    m
}

/// A sibling path for temporary output: `name.gguf` -> `.name.gguf.<tag>.partial`.
fn partial(out: &Path, tag: &str) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export.gguf".into());
    out.with_file_name(format!(".{name}.{tag}.partial"))
}

/// Removes the file when dropped unless disarmed: no half file survives an error or a panic.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `model_dir` (with `adapter` merged in, if given) as a GGUF file at `out`, and an Ollama
/// Modelfile beside it. `progress` gets a phase description as the export goes.
pub fn export(model_dir: &Path, adapter: Option<&Path>, out: &Path, quant: Quant, progress: &mut dyn FnMut(&str)) -> Result<Exported, String> {
    export_with(model_dir, adapter, out, quant, None, None, progress)
}

/// Where an exported model came from, kept in its metadata (llama.cpp's quantizer copies it into
/// every file made from it): `general.description` for any reader, and `lathe.example_prompt`, a
/// held-out question of the view it was trained on, which the Chat pane offers as a first message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    pub description: String,
    pub example_prompt: Option<String>,
}

/// `export`, its quantization weighed by an importance matrix when one is given (a type that
/// needs one is refused without it; one made for another model is refused).
pub fn export_with(
    model_dir: &Path,
    adapter: Option<&Path>,
    out: &Path,
    quant: Quant,
    imatrix: Option<&Imatrix>,
    about: Option<&Provenance>,
    progress: &mut dyn FnMut(&str),
) -> Result<Exported, String> {
    if out.extension().and_then(|e| e.to_str()) != Some("gguf") {
        return Err(format!("{} should end in .gguf.", out.display()));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("Cannot create {} ({e}).", parent.display()))?;
    }
    progress("loading and merging the weights");
    let (model, codec) = trainer::load_for_eval(model_dir, adapter, crate::engine::train::base::BasePrecision::F32)?;
    let cfg = model.cfg.clone();
    if cfg.rope_scaling.as_ref().is_some_and(|s| s.kind != "linear" && s.kind != "llama3") {
        return Err(format!(
            "{} uses {} rope scaling, which lathe's GGUF export does not write yet; export a model without it.",
            model_dir.display(),
            cfg.rope_scaling.as_ref().map(|s| s.kind.as_str()).unwrap_or("")
        ));
    }
    let hf = model.merged_tensors().map_err(|e| e.to_string())?;
    drop(model);
    let rows = hf.get("model.embed_tokens.weight").map(|t| t.dim(0).unwrap_or(0)).unwrap_or(cfg.vocab_size);
    let v = vocab(model_dir, &codec, rows, cfg.family)?;
    let mut tensors = gguf_tensors(&cfg, hf)?;
    let label = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let widths: BTreeMap<String, usize> = tensors.iter().filter(|(_, t)| t.rank() == 2).map(|(n, t)| (n.clone(), t.dim(1).unwrap_or(0))).collect();
    check_type(quant, imatrix, &widths, &label)?;
    if cfg.rope_scaling.as_ref().is_some_and(|s| s.kind == "llama3") {
        // llama.cpp applies Llama 3's scaling as per-frequency divisors (rope_freqs).
        let scaled = crate::engine::train::model::inv_freq(&cfg)?;
        let rot = scaled.len() * 2;
        let factors: Vec<f32> = scaled
            .iter()
            .enumerate()
            .map(|(i, f)| (1.0 / cfg.rope_theta.powf(2.0 * i as f64 / rot as f64)) as f32 / f)
            .collect();
        let n = factors.len();
        tensors.push(("rope_freqs.weight".into(), Tensor::from_vec(factors, n, &candle_core::Device::Cpu).map_err(|e| e.to_string())?));
    }
    let name = label;
    // Quantized files come from an F16 file through llama.cpp's quantizer.
    let base = if quant == Quant::F32 { Quant::F32 } else { Quant::F16 };
    let mut meta = metadata(&cfg, &name, base, &v, &codec);
    if let Some(about) = about {
        meta.push(("general.description".into(), gguf_file::Value::String(about.description.clone())));
        if let Some(p) = &about.example_prompt {
            meta.push((crate::engine::infer::llama::EXAMPLE_PROMPT_KEY.into(), gguf_file::Value::String(p.clone())));
        }
    }
    progress(&format!("writing {} tensors ({})", tensors.len(), base.name()));
    let mut qt = Vec::with_capacity(tensors.len());
    for (n, t) in &tensors {
        let dt = if base == Quant::F16 && t.rank() == 2 { GgmlDType::F16 } else { GgmlDType::F32 };
        qt.push((n.clone(), QTensor::quantize(t, dt).map_err(|e| e.to_string())?));
    }
    drop(tensors);
    let first = partial(out, base.name());
    let mut guard_first = Cleanup(Some(first.clone()));
    {
        let f = std::fs::File::create(&first).map_err(|e| format!("Cannot write {} ({e}).", first.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let meta_refs: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = qt.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &meta_refs, &t_refs).map_err(|e| format!("Writing {} failed ({e}); is the disk full?", out.display()))?;
        let f = w.into_inner().map_err(|e| format!("Writing {} failed ({e}); is the disk full?", out.display()))?;
        f.sync_all().map_err(|e| format!("Writing {} failed ({e}); is the disk full?", out.display()))?;
    }
    let n_tensors = qt.len();
    drop(qt);
    let done = if quant == base {
        first.clone()
    } else {
        progress(&format!("quantizing to {} with llama.cpp", quant.name()));
        let second = partial(out, quant.name());
        let mut guard = Cleanup(Some(second.clone()));
        quantize(&first, &second, quant, imatrix)?;
        guard.0 = None;
        second
    };
    let mut guard_done = Cleanup(Some(done.clone()));
    std::fs::rename(&done, out).map_err(|e| format!("Cannot move the export into place at {} ({e}).", out.display()))?;
    guard_done.0 = None;
    if done == first {
        guard_first.0 = None;
    }
    drop(guard_first);
    let modelfile = out.with_extension("Modelfile");
    let mf = modelfile_text(out, &codec);
    std::fs::write(&modelfile, mf).map_err(|e| format!("Cannot write {} ({e}).", modelfile.display()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Exported { path: out.to_path_buf(), modelfile, bytes, tensors: n_tensors })
}

/// Whether `quant` can be made of these tensors: a type that needs an importance matrix has one,
/// a given matrix fits the model, and some matrix has rows that fill the type's blocks (else
/// llama.cpp would store every one in a fallback type, and the file would not be the type named).
fn check_type(quant: Quant, imatrix: Option<&Imatrix>, widths: &BTreeMap<String, usize>, model: &str) -> Result<(), String> {
    if quant.needs_imatrix() && imatrix.is_none() {
        return Err(format!("{} needs an importance matrix: add --imatrix VIEW (computed from your data) or --imatrix FILE.", quant.name()));
    }
    if quant.is_float() && imatrix.is_some() {
        return Err(format!("{} is not quantized, so an importance matrix has nothing to weigh; drop --imatrix or pick a quantized type.", quant.name()));
    }
    if let Some(m) = imatrix {
        m.check_fits(widths, model)?;
    }
    if !fits(quant, widths) {
        let mut seen: Vec<usize> = widths.values().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        let seen: Vec<String> = seen.iter().map(|w| w.to_string()).collect();
        return Err(format!(
            "{} stores rows in blocks of {} values and every matrix of {model} has rows of {}; llama.cpp would store them all in another type. Pick q8_0, q5_0, q4_0 or iq4_nl (blocks of 32).",
            quant.name(),
            quant.block(),
            seen.join(", ")
        ));
    }
    Ok(())
}

/// Whether some matrix of the layers has rows that fill `quant`'s blocks (matrices by name, with
/// their row widths).
pub fn fits(quant: Quant, widths: &BTreeMap<String, usize>) -> bool {
    let block = quant.block();
    block <= 1 || widths.iter().any(|(n, w)| n.starts_with("blk.") && w % block == 0)
}

/// Quantizes an f16 (or f32) GGUF file to `out` with llama.cpp, weighed by `imatrix` when given,
/// after the same checks as an export (`model` names the model in their sentences). No partial
/// file is left behind when it fails.
pub fn quantize_file(src: &Path, out: &Path, quant: Quant, imatrix: Option<&Imatrix>, model: &str) -> Result<u64, String> {
    let widths = crate::engine::infer::library::matrix_widths(src)?;
    check_type(quant, imatrix, &widths, model)?;
    let tmp = partial(out, quant.name());
    let mut guard = Cleanup(Some(tmp.clone()));
    quantize(src, &tmp, quant, imatrix)?;
    std::fs::rename(&tmp, out).map_err(|e| format!("Cannot move the file into place at {} ({e}).", out.display()))?;
    guard.0 = None;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

fn quantize(src: &Path, dst: &Path, quant: Quant, imatrix: Option<&Imatrix>) -> Result<(), String> {
    let weights = imatrix.map(ForQuantizer::new);
    crate::engine::infer::llama::backend()?;
    let c_src = CString::new(src.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    let c_dst = CString::new(dst.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: default params from llama.cpp, then plain fields set; both paths are valid C strings
    // that outlive the call.
    let rc = unsafe {
        let mut p = llama_cpp_sys_2::llama_model_quantize_default_params();
        p.ftype = quant.ftype();
        if let Some(w) = &weights {
            p.imatrix = w.as_ptr();
        }
        p.nthread = std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(1);
        llama_cpp_sys_2::llama_model_quantize(c_src.as_ptr(), c_dst.as_ptr(), &p)
    };
    if rc != 0 {
        return Err(format!(
            "llama.cpp could not write the {} file (code {rc}): if the disk is full, free space and run again; logs/lathe.log has llama.cpp's reason.",
            quant.name()
        ));
    }
    Ok(())
}

/// An Ollama Modelfile: `ollama create NAME -f FILE.Modelfile` (FROM is resolved against the
/// Modelfile's folder). The templates lathe itself makes (its plain format for a model without
/// one, and the demo's) are spelled out as Go templates that render a conversation exactly as the
/// Jinja does, with their stop words. A model with another template of its own gets no TEMPLATE
/// and no stop: Ollama matches the GGUF's template against the ones it knows (taking their stop
/// words too, which a stop written here would replace) or renders the Jinja itself.
fn modelfile_text(gguf: &Path, codec: &TextCodec) -> String {
    let file = gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut s = format!("# Made by lathe. Load with: ollama create NAME -f {}\nFROM ./{file}\n", gguf.with_extension("Modelfile").file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let same = |a: &str, b: &str| a.trim() == b.trim();
    let (template, stops): (&str, &[&str]) = match codec.template_source() {
        None => (OLLAMA_PLAIN, &["### Instruction:"]),
        Some(t) if same(t, crate::engine::train::text::PLAIN_TEMPLATE) => (OLLAMA_PLAIN, &["### Instruction:"]),
        Some(t) if same(t, crate::engine::train::demo::DEMO_TEMPLATE) => (OLLAMA_DEMO, &["<|end|>", "<|user|>"]),
        Some(_) => {
            s.push_str("# The chat template and its stop words come from the GGUF's tokenizer.chat_template.\n");
            return s;
        }
    };
    s.push_str(&format!("TEMPLATE \"\"\"{template}\"\"\"\n"));
    let eos = codec.eos.as_ref().map(|(t, _)| t.as_str());
    for stop in stops.iter().copied().chain(eos.filter(|e| !stops.contains(e))) {
        s.push_str(&format!("PARAMETER stop \"{}\"\n", stop.replace('"', "\\\"")));
    }
    s
}

/// lathe's plain format as an Ollama (Go) template; the text after `.Response` ends each earlier
/// turn and is left off the last.
const OLLAMA_PLAIN: &str = "{{ if .System }}{{ .System }}\n\n{{ end }}### Instruction:\n{{ .Prompt }}\n\n### Response:\n{{ .Response }}\n\n";
/// The demo model's format as an Ollama (Go) template.
const OLLAMA_DEMO: &str = "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}<|user|>\n{{ .Prompt }}<|end|>\n<|assistant|>\n{{ .Response }}<|end|>\n";
