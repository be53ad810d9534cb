//! Reading a Hugging Face model folder's weights: model.safetensors, or shards listed by
//! model.safetensors.index.json; f32, f16 and bf16 are read and converted to f32 (or kept in
//! 16 bits where a frozen weight is held so). Each tensor is
//! read from the file when asked for (not memory-mapped), so a model quantized as it loads never
//! has the whole file resident: the kernel's page cache holds it, not this process.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use candle_core::{DType, Device, Tensor};

use super::model::WeightSource;

pub struct SafetensorsSource {
    files: Vec<std::fs::File>,
    /// Where each tensor lies: its file, dtype, shape and byte range.
    index: HashMap<String, Entry>,
    names: HashSet<String>,
    dir: PathBuf,
    device: Device,
}

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

/// The safetensors files of a model folder.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| format!("cannot read {}: {e}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON ({e}); copy the model folder again.", index.display()))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
            format!("{} has no weight_map; copy the model folder again.", index.display())
        })?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        if let Some(p) = paths.iter().find(|p| !p.exists()) {
            return Err(format!("{} lists {} but the file is missing; copy every shard of the model.", index.display(), p.display()));
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut any: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && !p.to_string_lossy().contains("adapter_model"))
        .collect();
    any.sort();
    if any.is_empty() {
        return Err(format!(
            "{} has no model.safetensors (or index); lathe reads safetensors weights, so convert .bin checkpoints first.",
            dir.display()
        ));
    }
    Ok(any)
}

impl SafetensorsSource {
    pub fn open(dir: &Path, device: &Device) -> Result<SafetensorsSource, String> {
        let damaged = |p: &Path, why: String| format!("cannot read the weights in {} ({why}); the file may be truncated, copy it again.", p.display());
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in weight_files(dir)?.into_iter().enumerate() {
            let file = std::fs::File::open(&path).map_err(|e| damaged(&path, e.to_string()))?;
            let size = file.metadata().map_err(|e| damaged(&path, e.to_string()))?.len();
            let mut len = [0u8; 8];
            file.read_exact_at(&mut len, 0).map_err(|e| damaged(&path, e.to_string()))?;
            let n = u64::from_le_bytes(len);
            if n > size.saturating_sub(8) || n > 100 << 20 {
                return Err(damaged(&path, "its header length is wrong".into()));
            }
            let mut header = vec![0u8; n as usize];
            file.read_exact_at(&mut header, 8).map_err(|e| damaged(&path, e.to_string()))?;
            let meta: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).map_err(|e| damaged(&path, e.to_string()))?;
            for (name, v) in meta {
                if name == "__metadata__" {
                    continue;
                }
                let dtype = match v["dtype"].as_str() {
                    Some("F32") => DType::F32,
                    Some("F16") => DType::F16,
                    Some("BF16") => DType::BF16,
                    Some("F64") => DType::F64,
                    Some("U8") => DType::U8,
                    Some("U32") => DType::U32,
                    Some("I64") => DType::I64,
                    other => return Err(format!("tensor {name} in {} is stored as {}, which lathe does not read; convert the checkpoint to f32, f16 or bf16.", path.display(), other.unwrap_or("?"))),
                };
                let shape: Vec<usize> = v["shape"].as_array().map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect()).unwrap_or_default();
                let offsets: Vec<u64> = v["data_offsets"].as_array().map(|a| a.iter().filter_map(|d| d.as_u64()).collect()).unwrap_or_default();
                let [a, b] = offsets[..] else { return Err(damaged(&path, format!("tensor {name} has no data offsets"))) };
                let len = (b.saturating_sub(a)) as usize;
                if 8 + n + b > size || len != shape.iter().product::<usize>() * dtype.size_in_bytes() {
                    return Err(damaged(&path, format!("tensor {name} runs past the end of the file")));
                }
                index.insert(name, Entry { file: i, dtype, shape, start: 8 + n + a, len });
            }
            files.push(file);
        }
        let names = index.keys().cloned().collect();
        Ok(SafetensorsSource { files, index, names, dir: dir.to_path_buf(), device: device.clone() })
    }
}

impl SafetensorsSource {
    /// The tensor as stored, checked against `shape`.
    fn read(&self, name: &str, shape: &[usize]) -> Result<Tensor, String> {
        if !self.names.contains(name) {
            return Err(format!(
                "the weights in {} have no tensor {name}; the folder does not match its config.json.",
                self.dir.display()
            ));
        }
        let e = &self.index[name];
        let mut bytes = vec![0u8; e.len];
        self.files[e.file].read_exact_at(&mut bytes, e.start).map_err(|err| format!("cannot read {name} from {} ({err}); copy the model folder again.", self.dir.display()))?;
        let t = Tensor::from_raw_buffer(&bytes, e.dtype, &e.shape, &self.device).map_err(|err| format!("cannot load {name}: {err}"))?;
        drop(bytes);
        if t.dims() != shape {
            return Err(format!(
                "tensor {name} in {} has shape {:?} but config.json implies {:?}; the folder does not match its config.",
                self.dir.display(),
                t.dims(),
                shape
            ));
        }
        Ok(t)
    }
}

impl WeightSource for SafetensorsSource {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, String> {
        self.read(name, shape)?.to_dtype(DType::F32).map_err(|e| e.to_string())
    }
    fn get_stored(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, String> {
        let t = self.read(name, shape)?;
        match t.dtype() {
            DType::BF16 | DType::F16 => Ok(t),
            _ => t.to_dtype(DType::F32).map_err(|e| e.to_string()),
        }
    }
    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Writes tensors to `path` as safetensors, through a temp file renamed into place.
pub fn save_atomic(tensors: &BTreeMap<String, Tensor>, path: &Path, metadata: Option<std::collections::HashMap<String, String>>) -> Result<(), String> {
    let tmp = path.with_extension("safetensors.tmp");
    let res = (|| -> anyhow::Result<()> {
        let mut owned = Vec::new();
        for (name, t) in tensors {
            let t = t.contiguous()?;
            let shape = t.dims().to_vec();
            let bytes: Vec<u8> = match t.dtype() {
                DType::F32 => t.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
                DType::U32 => t.flatten_all()?.to_vec1::<u32>()?.iter().flat_map(|x| x.to_le_bytes()).collect(),
                DType::U8 => t.flatten_all()?.to_vec1::<u8>()?,
                other => anyhow::bail!("cannot save dtype {other:?}"),
            };
            let dt = match t.dtype() {
                DType::U32 => safetensors::Dtype::U32,
                DType::U8 => safetensors::Dtype::U8,
                _ => safetensors::Dtype::F32,
            };
            owned.push((name.clone(), dt, shape, bytes));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, dt, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b)?)))
            .collect::<Result<_, safetensors::SafeTensorError>>()?;
        let bytes = safetensors::tensor::serialize(views, metadata)?;
        drop(owned);
        let mut file = std::fs::File::create(&tmp)?;
        use std::io::Write;
        file.write_all(&bytes)?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {} ({e}); free some disk space and try again.", path.display()));
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot move {} into place: {e}", path.display()))
}

/// Reads every tensor of one safetensors file as f32 (or u32 or u8 where stored so).
pub fn load_all(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>, String> {
    let map = candle_core::safetensors::load(path, device).map_err(|e| format!("cannot read {} ({e}); the file may be damaged.", path.display()))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let v = if matches!(v.dtype(), DType::F16 | DType::BF16 | DType::F64) { v.to_dtype(DType::F32).map_err(|e| e.to_string())? } else { v };
        out.insert(k, v);
    }
    Ok(out)
}

/// FNV-1a, 64 bit: a stable hash for run records.
pub fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
/// FNV-1a's offset basis: the starting value of a hash.
pub const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of a model's weights: every byte of files up to 256 MB; for larger files the size and
/// 64 KB read from every 64 MB (a sampled fingerprint, so a 2 GB model is hashed in milliseconds
/// without reading it all).
pub fn model_hash(dir: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = FNV0;
    for f in super::weights::weight_files(dir).unwrap_or_default() {
        let Ok(mut file) = std::fs::File::open(&f) else { continue };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        h = fnv(&len.to_le_bytes(), h);
        let (step, chunk) = if len <= 256 << 20 { (len.max(1), len as usize) } else { (64 << 20, 64 << 10) };
        let mut buf = vec![0u8; chunk];
        let mut off = 0u64;
        while off < len {
            let n = chunk.min((len - off) as usize);
            if file.seek(SeekFrom::Start(off)).is_err() || file.read_exact(&mut buf[..n]).is_err() {
                break;
            }
            h = fnv(&buf[..n], h);
            off += step;
        }
    }
    format!("{h:016x}")
}
