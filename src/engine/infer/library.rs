//! The model library: GGUF files and Hugging Face folders that the user already has, found where
//! they live (the workspace's models/, paths added with `lathe models add`, the Hugging Face cache
//! and a local Ollama store), described from their headers without loading them.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use serde::{Deserialize, Serialize};

use crate::engine::train::config::ModelConfig;
use crate::units::bytes;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    /// A GGUF file or a Hugging Face folder.
    pub path: PathBuf,
    /// workspace, added, huggingface or ollama.
    pub source: String,
    /// gguf or hf.
    pub format: String,
    pub architecture: String,
    pub params: u64,
    pub quantization: String,
    pub context_length: u64,
    pub file_size: u64,
    /// Memory to run it: a GGUF's weights plus its KV cache at a 4096-token (or its own, if
    /// shorter) context through llama.cpp; a Hugging Face folder's f32 weights in lathe.
    pub ram_needed: u64,
    /// Why the entry could not be read, if it could not.
    pub problem: Option<String>,
}

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    pub workspace: Option<PathBuf>,
    pub added: Vec<PathBuf>,
    pub huggingface: Option<PathBuf>,
    pub ollama: Option<PathBuf>,
}

impl Roots {
    /// The usual places: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; $OLLAMA_MODELS or
    /// ~/.ollama/models.
    pub fn standard(workspace_models: &Path, added: Vec<PathBuf>) -> Roots {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let home = env("HOME");
        let huggingface = env("HF_HUB_CACHE")
            .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| home.as_ref().map(|h| h.join(".cache/huggingface/hub")));
        let ollama = env("OLLAMA_MODELS").or_else(|| home.as_ref().map(|h| h.join(".ollama/models")));
        Roots { workspace: Some(workspace_models.to_path_buf()), added, huggingface, ollama }
    }
}

const FILE_TYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (32, "BF16"),
];

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I32(x) => Some(*x as u64),
        Value::I64(x) => Some(*x as u64),
        _ => None,
    }
}

fn entry(name: String, path: PathBuf, source: &str, format: &str) -> ModelEntry {
    ModelEntry {
        name,
        path,
        source: source.into(),
        format: format.into(),
        architecture: String::new(),
        params: 0,
        quantization: String::new(),
        context_length: 0,
        file_size: 0,
        ram_needed: 0,
        problem: None,
    }
}

/// Describes a GGUF file from its header.
pub fn gguf_entry(path: &Path, name: String, source: &str) -> ModelEntry {
    let mut e = entry(name, path.to_path_buf(), source, "gguf");
    e.file_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if let Err(problem) = check_file(path) {
        e.problem = Some(problem);
        return e;
    }
    let content = match std::fs::File::open(path).map_err(|e| e.to_string()).and_then(|f| {
        gguf_file::Content::read(&mut std::io::BufReader::new(f)).map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(p) => {
            e.problem = Some(p);
            return e;
        }
    };
    let md = &content.metadata;
    let arch = match md.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => "?".into(),
    };
    let get = |k: &str| as_u64(md.get(&format!("{arch}.{k}")));
    e.params = content.tensor_infos.values().map(|t| t.shape.elem_count() as u64).sum();
    e.context_length = get("context_length").unwrap_or(0);
    e.quantization = as_u64(md.get("general.file_type"))
        .and_then(|ft| FILE_TYPES.iter().find(|(id, _)| *id as u64 == ft).map(|(_, n)| n.to_string()))
        .unwrap_or_else(|| {
            // The dtype holding the most weights.
            let mut by: std::collections::BTreeMap<String, u64> = Default::default();
            for t in content.tensor_infos.values() {
                *by.entry(format!("{:?}", t.ggml_dtype)).or_default() += t.shape.elem_count() as u64;
            }
            by.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k).unwrap_or_default()
        });
    let layers = get("block_count").unwrap_or(0);
    let embd = get("embedding_length").unwrap_or(0);
    let heads = get("attention.head_count").unwrap_or(1).max(1);
    let kv_heads = get("attention.head_count_kv").unwrap_or(heads);
    let ctx = if e.context_length == 0 { 4096 } else { e.context_length.min(4096) };
    // K and V in f16 for every layer and position, and llama.cpp's compute buffers.
    let kv = layers * ctx * kv_heads * (embd / heads) * 2 * 2;
    e.ram_needed = e.file_size + kv + (64 << 20);
    e.architecture = arch;
    e
}

/// Describes a Hugging Face folder from config.json and the safetensors headers.
pub fn hf_entry(dir: &Path, name: String, source: &str) -> ModelEntry {
    // A sentence-embedding folder (BERT family with its sentence-transformers files) is listed as
    // such: it embeds documents for knowledge collections; it does not chat or train.
    if let Ok(spec) = crate::engine::embed::EmbedSpec::read(dir) {
        let mut e = entry(name, dir.to_path_buf(), source, "embedding");
        e.architecture = format!("bert · {} · {}d", spec.pooling.name(), spec.dim);
        e.context_length = spec.max_len as u64;
        let weights = dir.join("model.safetensors");
        e.file_size = std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0);
        match safetensors_params(&weights) {
            Ok((n, dtype)) => {
                e.params = n;
                e.quantization = dtype;
            }
            Err(p) => e.problem = Some(p),
        }
        e.ram_needed = e.params * 4 + (64 << 20);
        return e;
    }
    let mut e = entry(name, dir.to_path_buf(), source, "hf");
    let cfg = match ModelConfig::load(dir) {
        Ok(c) => c,
        Err(err) => {
            // Not one of the families lathe trains: still listed, from config.json alone.
            let raw: Option<serde_json::Value> = std::fs::read_to_string(dir.join("config.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
            e.architecture = raw.as_ref().and_then(|v| v["model_type"].as_str()).unwrap_or("?").to_string();
            e.problem = Some(err.to_string());
            return e;
        }
    };
    e.architecture = format!("{:?}", cfg.family).to_lowercase();
    e.context_length = cfg.max_position_embeddings as u64;
    e.quantization = cfg.dtype.clone().unwrap_or_default();
    match crate::engine::train::weights::weight_files(dir) {
        Ok(files) => {
            for f in files {
                e.file_size += std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                match safetensors_params(&f) {
                    Ok((n, dtype)) => {
                        e.params += n;
                        if e.quantization.is_empty() {
                            e.quantization = dtype;
                        }
                    }
                    Err(p) => e.problem = Some(p),
                }
            }
        }
        Err(p) => e.problem = Some(p),
    }
    e.ram_needed = e.params * 4 + (128 << 20);
    e
}

/// Parameter count and the first tensor's dtype, from a safetensors header (no weights read).
fn safetensors_params(path: &Path) -> Result<(u64, String), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| format!("{} is not a safetensors file.", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(format!("{} has an implausible header; it may be damaged.", path.display()));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(|_| format!("{} is truncated.", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&buf).map_err(|_| format!("{} has a damaged header.", path.display()))?;
    let mut total = 0u64;
    let mut dtype = String::new();
    for (k, t) in v.as_object().into_iter().flatten() {
        if k == "__metadata__" {
            continue;
        }
        if dtype.is_empty() {
            dtype = t["dtype"].as_str().unwrap_or("").to_lowercase();
        }
        total += t["shape"].as_array().map(|s| s.iter().map(|d| d.as_u64().unwrap_or(0)).product::<u64>()).unwrap_or(0);
    }
    Ok((total, dtype))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// GGUF files and model folders in `dir` and its direct subfolders.
fn scan_folder(dir: &Path, source: &str, out: &mut Vec<ModelEntry>) {
    if dir.join("config.json").exists() {
        out.push(hf_entry(dir, file_name(dir), source));
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut items: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    items.sort();
    for p in items {
        let hidden = file_name(&p).starts_with('.');
        if hidden {
            continue;
        }
        if p.is_file() && p.extension().is_some_and(|x| x == "gguf") {
            out.push(gguf_entry(&p, file_name(&p), source));
        } else if p.is_dir() && p.join("config.json").exists() {
            out.push(hf_entry(&p, file_name(&p), source));
        } else if p.is_dir() {
            if let Ok(inner) = std::fs::read_dir(&p) {
                let mut files: Vec<PathBuf> = inner.flatten().map(|e| e.path()).filter(|f| f.extension().is_some_and(|x| x == "gguf")).collect();
                files.sort();
                for f in files {
                    out.push(gguf_entry(&f, format!("{}/{}", file_name(&p), file_name(&f)), source));
                }
            }
        }
    }
}

/// The Hugging Face hub cache: models--ORG--NAME/snapshots/REV (the one refs/main names, else
/// the newest), as a model folder and any GGUF files in it.
fn scan_huggingface(hub: &Path, out: &mut Vec<ModelEntry>) {
    let Ok(rd) = std::fs::read_dir(hub) else { return };
    let mut repos: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| file_name(p).starts_with("models--")).collect();
    repos.sort();
    for repo in repos {
        let name = file_name(&repo).trim_start_matches("models--").replacen("--", "/", 1);
        let snaps = repo.join("snapshots");
        let rev = std::fs::read_to_string(repo.join("refs/main")).ok().map(|s| s.trim().to_string());
        let snap = match rev.map(|r| snaps.join(r)).filter(|p| p.is_dir()) {
            Some(p) => p,
            None => {
                let Ok(rd) = std::fs::read_dir(&snaps) else { continue };
                match rd.flatten().max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok()) {
                    Some(e) => e.path(),
                    None => continue,
                }
            }
        };
        if snap.join("config.json").exists() {
            out.push(hf_entry(&snap, name.clone(), "huggingface"));
        }
        if let Ok(rd) = std::fs::read_dir(&snap) {
            let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|f| f.extension().is_some_and(|x| x == "gguf")).collect();
            files.sort();
            for f in files {
                out.push(gguf_entry(&f, format!("{name}/{}", file_name(&f)), "huggingface"));
            }
        }
    }
}

/// A local Ollama store: manifests/REGISTRY/NAMESPACE/MODEL/TAG name a GGUF blob by digest.
fn scan_ollama(models: &Path, out: &mut Vec<ModelEntry>) {
    let manifests = models.join("manifests");
    let mut stack = vec![manifests.clone()];
    let mut found = Vec::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found.sort();
    for m in found {
        let Ok(rel) = m.strip_prefix(&manifests) else { continue };
        let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if parts.len() < 2 {
            continue;
        }
        let (model, tag) = (&parts[parts.len() - 2], &parts[parts.len() - 1]);
        let ns = if parts.len() >= 3 { parts[parts.len() - 3].as_str() } else { "library" };
        let name = if ns == "library" { format!("{model}:{tag}") } else { format!("{ns}/{model}:{tag}") };
        let Some(v) = std::fs::read_to_string(&m).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else { continue };
        let Some(digest) = v["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["mediaType"].as_str() == Some("application/vnd.ollama.image.model"))
            .and_then(|l| l["digest"].as_str())
        else {
            continue;
        };
        let blob = models.join("blobs").join(digest.replace(':', "-"));
        let mut e = gguf_entry(&blob, name, "ollama");
        if !blob.exists() {
            e.problem = Some(format!("Ollama's manifest names {digest}, which is not in {}.", models.join("blobs").display()));
        }
        out.push(e);
    }
}

/// The models of the Ollama server at $OLLAMA_HOST (default localhost:11434), when one runs: they
/// chat through the server (`ollama:NAME`), nothing is read from disk.
pub fn ollama_server() -> Vec<ModelEntry> {
    let host = std::env::var("OLLAMA_HOST").unwrap_or_else(|_| "localhost:11434".into());
    let base = if host.starts_with("http") { host } else { format!("http://{host}") };
    let remote = super::remote::Remote::Ollama { base: base.clone(), model: String::new() };
    remote
        .models()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let mut e = entry(format!("ollama:{}", m.name), PathBuf::from(format!("ollama:{}@{}", m.name, base.trim_start_matches("http://"))), "ollama server", "remote");
            e.architecture = m.family;
            e.quantization = m.quantization;
            e.file_size = m.size;
            e
        })
        .collect()
}

/// The models of the OpenAI-compatible servers the user added, named `SERVER/MODEL`; a server
/// that does not answer is one entry, `SERVER/`, that says why.
pub fn openai_servers(servers: &[crate::engine::types::ModelServer]) -> Vec<ModelEntry> {
    let mut list = Vec::new();
    for s in servers {
        match s.remote("").models() {
            Ok(models) => list.extend(models.into_iter().map(|m| {
                let name = format!("{}/{}", s.name, m.name);
                entry(name.clone(), PathBuf::from(name), "openai server", "remote")
            })),
            Err(e) => {
                let mut e_ = entry(format!("{}/", s.name), PathBuf::from(&s.base), "openai server", "remote");
                e_.problem = Some(format!("{} did not list its models: {e}", s.base));
                list.push(e_);
            }
        }
    }
    list
}

/// The GGUF a name stands for: a file, one in the workspace's models/ folder (with or without
/// .gguf), or a library entry (an added path, the Hugging Face cache, the Ollama store by `name`
/// or `name:latest`). Err says why not in one sentence.
pub fn resolve_name(workspace_models: &Path, added: Vec<PathBuf>, name: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(p);
    }
    for cand in [workspace_models.join(name), workspace_models.join(format!("{name}.gguf"))] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    let list = scan(&Roots::standard(workspace_models, added));
    let wanted = [name.to_string(), format!("{name}.gguf"), format!("{name}:latest")];
    match list.iter().find(|e| wanted.contains(&e.name)) {
        Some(e) if e.problem.is_some() => Err(format!("{}: {}", e.name, e.problem.clone().unwrap_or_default())),
        Some(e) if e.format != "gguf" => Err(format!("{} is a Hugging Face folder; export it first: lathe export {} --out FILE.gguf", e.name, e.path.display())),
        Some(e) => Ok(e.path.clone()),
        None => Err(format!(
            "No model {name:?}: not a file, not in {} and not in the model library (`lathe models list`); give a .gguf path.",
            workspace_models.display()
        )),
    }
}

/// Every model the roots hold (a path found twice is listed once).
pub fn scan(roots: &Roots) -> Vec<ModelEntry> {
    let mut out = Vec::new();
    if let Some(w) = &roots.workspace {
        scan_folder(w, "workspace", &mut out);
    }
    for p in &roots.added {
        if p.is_file() {
            out.push(gguf_entry(p, file_name(p), "added"));
        } else if p.is_dir() {
            scan_folder(p, "added", &mut out);
        } else {
            let mut e = entry(file_name(p), p.clone(), "added", "?");
            e.problem = Some(format!("{} is gone; `lathe models add` it again where it now lives.", p.display()));
            out.push(e);
        }
    }
    if let Some(h) = &roots.huggingface {
        scan_huggingface(h, &mut out);
    }
    if let Some(o) = &roots.ollama {
        scan_ollama(o, &mut out);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(std::fs::canonicalize(&e.path).unwrap_or_else(|_| e.path.clone())));
    out
}
/// Reads the GGUF header and checks the file holds every tensor it lists: a clear message for a
/// file that is not GGUF or was cut short, before llama.cpp sees it.
pub fn check_file(path: &Path) -> Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("Cannot open {} ({e}); check the path.", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut magic = [0u8; 4];
    use std::io::Read;
    if f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(format!("{} is not a GGUF file; point at a .gguf model (or export one with `lathe export`).", path.display()));
    }
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut std::io::BufReader::new(f))
        .map_err(|e| format!("{} is a damaged GGUF file ({e}); download or export it again.", path.display()))?;
    let end = content
        .tensor_infos
        .values()
        .map(|t| {
            let elems = t.shape.elem_count();
            t.offset + (elems / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64
        })
        .max()
        .unwrap_or(0);
    if content.tensor_data_offset + end > len {
        return Err(format!(
            "{} is truncated ({} of the {} it needs); download or export it again.",
            path.display(),
            bytes(len),
            bytes(content.tensor_data_offset + end)
        ));
    }
    let arch = match content.metadata.get("general.architecture") {
        Some(candle_core::quantized::gguf_file::Value::String(s)) => s.clone(),
        _ => return Err(format!("{} has no general.architecture; it is not a model llama.cpp can run.", path.display())),
    };
    Ok(arch)
}

