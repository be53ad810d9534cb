//! The model library: GGUF files and Hugging Face folders that the user already has, found where
//! they live (the workspace's models/, paths added with `lathe models add`, the Hugging Face cache
//! and a local Ollama store), described from their headers without loading them.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
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
    let content = match read_header(path) {
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
    e.params = content.tensors.iter().map(|t| t.elems).sum();
    e.context_length = get("context_length").unwrap_or(0);
    e.quantization = as_u64(md.get("general.file_type"))
        .and_then(|ft| FILE_TYPES.iter().find(|(id, _)| *id as u64 == ft).map(|(_, n)| n.to_string()))
        .unwrap_or_else(|| {
            // The dtype holding the most weights.
            let mut by: std::collections::BTreeMap<String, u64> = Default::default();
            for t in &content.tensors {
                let name = ggml_type(t.kind).map(|(n, _, _)| n.to_string()).unwrap_or_else(|| format!("type {}", t.kind));
                *by.entry(name).or_default() += t.elems;
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
    let len = std::fs::metadata(path).map(|m| m.len()).map_err(|e| format!("Cannot open {} ({e}); check the path.", path.display()))?;
    let content = read_header(path)?;
    // Where the last tensor ends, over the types whose sizes are known (llama.cpp's newer ones
    // are left out of this check, not refused).
    let end = content
        .tensors
        .iter()
        .filter_map(|t| {
            let (_, block, size) = ggml_type(t.kind)?;
            Some(t.offset + t.elems / block * size)
        })
        .max()
        .unwrap_or(0);
    if content.data_offset + end > len {
        return Err(format!(
            "{} is truncated ({} of the {} it needs); download or export it again.",
            path.display(),
            bytes(len),
            bytes(content.data_offset + end)
        ));
    }
    match content.metadata.get("general.architecture") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("{} has no general.architecture; it is not a model llama.cpp can run.", path.display())),
    }
}

/// A ggml type's name, values per block and bytes per block, for the types whose layout lathe
/// knows (None for the others, which are not size-checked).
fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2K", 256, 84),
        11 => ("Q3K", 256, 110),
        12 => ("Q4K", 256, 144),
        13 => ("Q5K", 256, 176),
        14 => ("Q6K", 256, 210),
        15 => ("Q8K", 256, 292),
        20 => ("IQ4_NL", 32, 18),
        23 => ("IQ4_XS", 256, 136),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

/// One tensor of a GGUF header: its name, its dimensions (innermost first: a matrix's row width
/// is `dims[0]`), its elements, its ggml type id and where its data starts.
struct TensorHead {
    name: String,
    dims: Vec<u64>,
    elems: u64,
    kind: u32,
    offset: u64,
}

/// A GGUF file's header, read by lathe itself rather than by candle, which refuses a file whose
/// tensor types it does not know (the IQ types llama.cpp quantizes to).
struct Header {
    metadata: std::collections::HashMap<String, Value>,
    tensors: Vec<TensorHead>,
    data_offset: u64,
}

/// The row width of every matrix in a GGUF file, by tensor name: what decides which quantization
/// types its rows can be stored in.
pub fn matrix_widths(path: &Path) -> Result<std::collections::BTreeMap<String, usize>, String> {
    Ok(read_header(path)?.tensors.into_iter().filter(|t| t.dims.len() == 2).map(|t| (t.name, t.dims[0] as usize)).collect())
}

fn read_header(path: &Path) -> Result<Header, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("Cannot open {} ({e}); check the path.", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let damaged = |why: &str| format!("{} is a damaged GGUF file ({why}); download or export it again.", path.display());
    let mut pos = 0u64;
    let mut take = |r: &mut std::io::BufReader<std::fs::File>, n: usize| -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).map_err(|_| damaged("it ends inside its header"))?;
        pos += n as u64;
        Ok(b)
    };
    if take(&mut r, 4).ok().as_deref() != Some(b"GGUF") {
        return Err(format!("{} is not a GGUF file; point at a .gguf model (or export one with `lathe export`).", path.display()));
    }
    let u32_of = |b: Vec<u8>| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let u64_of = |b: Vec<u8>| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let version = u32_of(take(&mut r, 4)?);
    if !(2..=3).contains(&version) {
        return Err(damaged(&format!("GGUF version {version}; llama.cpp writes 2 and 3")));
    }
    let n_tensors = u64_of(take(&mut r, 8)?);
    let n_kv = u64_of(take(&mut r, 8)?);
    if n_tensors > 1 << 20 || n_kv > 1 << 20 {
        return Err(damaged("impossible counts"));
    }
    fn string(take: &mut dyn FnMut(usize) -> Result<Vec<u8>, String>) -> Result<String, String> {
        let b = take(8)?;
        let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        if n > 1 << 26 {
            return Err("a string longer than 64 MiB".into());
        }
        Ok(String::from_utf8_lossy(&take(n as usize)?).into_owned())
    }
    fn value(kind: u32, take: &mut dyn FnMut(usize) -> Result<Vec<u8>, String>) -> Result<Value, String> {
        let mut n = |k: usize| take(k);
        Ok(match kind {
            0 => Value::U8(n(1)?[0]),
            1 => Value::I8(n(1)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(n(2)?.try_into().unwrap_or_default())),
            3 => Value::I16(i16::from_le_bytes(n(2)?.try_into().unwrap_or_default())),
            4 => Value::U32(u32::from_le_bytes(n(4)?.try_into().unwrap_or_default())),
            5 => Value::I32(i32::from_le_bytes(n(4)?.try_into().unwrap_or_default())),
            6 => Value::F32(f32::from_le_bytes(n(4)?.try_into().unwrap_or_default())),
            7 => Value::Bool(n(1)?[0] != 0),
            8 => Value::String(string(take)?),
            9 => {
                let inner = u32::from_le_bytes(n(4)?.try_into().unwrap_or_default());
                let count = u64::from_le_bytes(n(8)?.try_into().unwrap_or_default());
                if count > 1 << 26 {
                    return Err("an array of more than 64M values".into());
                }
                let mut items = Vec::with_capacity(count.min(1 << 16) as usize);
                for _ in 0..count {
                    items.push(value(inner, take)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(n(8)?.try_into().unwrap_or_default())),
            11 => Value::I64(i64::from_le_bytes(n(8)?.try_into().unwrap_or_default())),
            12 => Value::F64(f64::from_le_bytes(n(8)?.try_into().unwrap_or_default())),
            other => return Err(format!("a value of unknown type {other}")),
        })
    }
    let mut next = |k: usize| take(&mut r, k);
    let mut metadata = std::collections::HashMap::new();
    for _ in 0..n_kv {
        let key = string(&mut next).map_err(|e| damaged(&e))?;
        let kind = u32_of(next(4)?);
        let v = value(kind, &mut next).map_err(|e| damaged(&e))?;
        metadata.insert(key, v);
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = string(&mut next).map_err(|e| damaged(&e))?;
        let n_dims = u32_of(next(4)?);
        if n_dims > 8 {
            return Err(damaged("a tensor of more than 8 dimensions"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(u64_of(next(8)?));
        }
        let elems = dims.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        let kind = u32_of(next(4)?);
        let offset = u64_of(next(8)?);
        tensors.push(TensorHead { name, dims, elems, kind, offset });
    }
    let align = match metadata.get("general.alignment") {
        Some(Value::U32(a)) if *a > 0 => *a as u64,
        _ => 32,
    };
    Ok(Header { metadata, tensors, data_offset: pos.div_ceil(align) * align })
}


#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF file by hand: one string key, one tensor of `kind` holding `elems` values of
    /// `bytes_per_block` per 256, the data `data_bytes` long.
    fn gguf(kind: u32, elems: u64, data_bytes: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend((t.len() as u64).to_le_bytes());
            b.extend(t.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "blk.0.attn_q.weight");
        b.extend(2u32.to_le_bytes());
        b.extend(256u64.to_le_bytes());
        b.extend((elems / 256).to_le_bytes());
        b.extend(kind.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(vec![0u8; data_bytes]);
        b
    }

    #[test]
    fn headers_with_types_candle_does_not_know_are_read() {
        let dir = std::env::temp_dir().join(format!("lathe-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // IQ4_XS (type 23): 136 bytes per 256 values; candle's reader refuses the type.
        let p = dir.join("iq4.gguf");
        std::fs::write(&p, gguf(23, 512, 272)).unwrap();
        assert_eq!(check_file(&p), Ok("llama".to_string()));
        // Q4_0 (type 2, known): 18 bytes per 32 values; cut short, it is truncated.
        std::fs::write(&p, gguf(2, 512, 100)).unwrap();
        assert!(check_file(&p).unwrap_err().contains("is truncated"));
        std::fs::write(&p, gguf(2, 512, 288)).unwrap();
        assert_eq!(check_file(&p), Ok("llama".to_string()));
        std::fs::write(&p, &gguf(2, 512, 288)[..40]).unwrap();
        assert!(check_file(&p).unwrap_err().contains("damaged GGUF file"));
        std::fs::write(&p, b"nope").unwrap();
        assert!(check_file(&p).unwrap_err().contains("not a GGUF file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
