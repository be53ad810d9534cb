//! The importance matrix llama.cpp's quantizer weighs rounding errors by: for each projection of
//! each block, the mean over calibration tokens of every input channel's square. lathe computes it
//! with its own candle forward pass (a run: its base with its adapter) over the user's data, keeps
//! it in llama.cpp's GGUF imatrix format (`<weight>.in_sum2` and `<weight>.counts` tensors, the
//! `imatrix.*` keys llama-quantize asks for), so llama.cpp's tools read lathe's files and lathe
//! reads theirs (and the legacy `.dat` layout), and hands it to `llama_model_quantize` as the
//! C array of `llama_model_imatrix_data` it takes.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{Device, Tensor};

use crate::engine::train::model::{Ctx, InputStats, Model};

/// One projection's sums: per input channel, the sum of squares over `count` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub sum2: Vec<f32>,
    pub count: f32,
}

/// An importance matrix and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    /// Per weight name (`blk.0.attn_q.weight`).
    pub entries: BTreeMap<String, Entry>,
    /// What it was computed on (a view, a file).
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    /// The model it was made for, where the file says (lathe's do; llama.cpp's do not).
    pub model: Option<String>,
}

/// A file's sums: one matrix per entry (dense models).
impl Imatrix {
    pub fn from_stats(stats: InputStats, datasets: Vec<String>, chunk_size: u32, chunk_count: u32, model: &str) -> Imatrix {
        let entries = stats.sums.into_iter().map(|(k, (s, n))| (k, Entry { sum2: s.into_iter().map(|v| v as f32).collect(), count: n as f32 })).collect();
        Imatrix { entries, datasets, chunk_count, chunk_size, model: Some(model.to_string()) }
    }

    /// Tokens it was computed over (the most any projection saw).
    pub fn tokens(&self) -> u64 {
        self.entries.values().map(|e| e.count as u64).max().unwrap_or(0)
    }

    /// Writes it as llama.cpp's GGUF imatrix, beside `path` first and renamed into place.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        use gguf_file::Value as V;
        let mut meta: Vec<(String, V)> = vec![
            ("general.type".into(), V::String("imatrix".into())),
            ("imatrix.datasets".into(), V::Array(self.datasets.iter().map(|d| V::String(d.clone())).collect())),
            ("imatrix.chunk_count".into(), V::U32(self.chunk_count)),
            ("imatrix.chunk_size".into(), V::U32(self.chunk_size)),
        ];
        if let Some(m) = &self.model {
            meta.push(("general.name".into(), V::String(m.clone())));
        }
        let mut tensors = Vec::new();
        for (name, e) in &self.entries {
            let cpu = &Device::Cpu;
            let sums = Tensor::from_slice(&e.sum2, (1, e.sum2.len()), cpu).map_err(|e| e.to_string())?;
            let counts = Tensor::from_slice(&[e.count], (1, 1), cpu).map_err(|e| e.to_string())?;
            tensors.push((format!("{name}.in_sum2"), QTensor::quantize(&sums, candle_core::quantized::GgmlDType::F32).map_err(|e| e.to_string())?));
            tensors.push((format!("{name}.counts"), QTensor::quantize(&counts, candle_core::quantized::GgmlDType::F32).map_err(|e| e.to_string())?));
        }
        let tmp = partial(path);
        let written = (|| -> Result<(), String> {
            let f = std::fs::File::create(&tmp).map_err(|e| format!("Cannot write {} ({e}).", tmp.display()))?;
            let mut w = std::io::BufWriter::new(f);
            let m: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let t: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
            gguf_file::write(&mut w, &m, &t).map_err(|e| format!("Writing {} failed ({e}); is the disk full?", path.display()))?;
            let f = w.into_inner().map_err(|e| format!("Writing {} failed ({e}); is the disk full?", path.display()))?;
            f.sync_all().map_err(|e| format!("Writing {} failed ({e}); is the disk full?", path.display()))?;
            std::fs::rename(&tmp, path).map_err(|e| format!("Cannot move {} into place ({e}).", path.display()))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Reads a GGUF imatrix (lathe's or llama-imatrix's) or a legacy `.dat` one.
    pub fn load(path: &Path) -> Result<Imatrix, String> {
        let mut f = std::fs::File::open(path).map_err(|e| format!("Cannot read {} ({e}); give an importance-matrix file (.gguf or .dat).", path.display()))?;
        let mut magic = [0u8; 4];
        f.read_exact(&mut magic).map_err(|_| format!("{} is empty; give an importance-matrix file.", path.display()))?;
        f.rewind().map_err(|e| e.to_string())?;
        if &magic == b"GGUF" {
            load_gguf(path, &mut f)
        } else {
            load_dat(path, &mut f)
        }
    }

    /// The means (sum / count; 1 where nothing was counted, as llama-quantize does), in the
    /// order of `entries`.
    pub fn means(&self) -> Vec<(String, Vec<f32>)> {
        self.entries.iter().map(|(k, e)| (k.clone(), e.sum2.iter().map(|s| if e.count > 0.0 { s / e.count } else { 1.0 }).collect())).collect()
    }

    /// Whether it fits a model whose 2-D weights are `shapes` (name, input width): every entry
    /// names one of them with its width, and most of them are covered. Err names both models.
    pub fn check_fits(&self, shapes: &BTreeMap<String, usize>, model: &str) -> Result<(), String> {
        let made_for = self.model.clone().unwrap_or_else(|| format!("a model fed {}", self.datasets.first().cloned().unwrap_or_else(|| "other data".into())));
        let covered = shapes.keys().filter(|k| k.starts_with("blk.") && self.entries.contains_key(*k)).count();
        let wanted = shapes.keys().filter(|k| k.starts_with("blk.")).count();
        for (name, e) in &self.entries {
            match shapes.get(name) {
                Some(&w) if w == e.sum2.len() => {}
                Some(&w) => return Err(format!("The importance matrix was made for {made_for}, not {model}: it holds {} inputs for {name}, which has {w}; make one for {model}.", e.sum2.len())),
                None => return Err(format!("The importance matrix was made for {made_for}, not {model}: {model} has no {name}; make one for {model}.")),
            }
        }
        if covered * 2 < wanted {
            return Err(format!("The importance matrix was made for {made_for}, not {model}: it covers {covered} of the {wanted} matrices of {model}; make one for {model}."));
        }
        Ok(())
    }
}

/// The C array `llama_model_quantize` takes, with the strings and values it points at (kept
/// alive as long as it is).
pub struct ForQuantizer {
    names: Vec<CString>,
    values: Vec<Vec<f32>>,
    array: Vec<llama_cpp_sys_2::llama_model_imatrix_data>,
}

impl ForQuantizer {
    pub fn new(m: &Imatrix) -> ForQuantizer {
        let (names, values): (Vec<CString>, Vec<Vec<f32>>) = m.means().into_iter().map(|(k, v)| (CString::new(k).unwrap_or_default(), v)).unzip();
        let mut array: Vec<_> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| llama_cpp_sys_2::llama_model_imatrix_data { name: n.as_ptr(), data: v.as_ptr(), size: v.len() })
            .collect();
        // The end: a null name.
        array.push(llama_cpp_sys_2::llama_model_imatrix_data { name: std::ptr::null(), data: std::ptr::null(), size: 0 });
        ForQuantizer { names, values, array }
    }

    pub fn as_ptr(&self) -> *const llama_cpp_sys_2::llama_model_imatrix_data {
        debug_assert_eq!(self.names.len() + 1, self.array.len());
        debug_assert_eq!(self.values.len() + 1, self.array.len());
        self.array.as_ptr()
    }
}

/// Runs `model` over `chunks` of token ids (each one forward pass; the head is skipped: only the
/// projections' inputs are wanted) and sums every projection's input. `on_chunk(done, of)` after
/// each; false stops (Err "stopped").
pub fn collect(model: &Model, chunks: &[Vec<u32>], on_chunk: &mut dyn FnMut(usize, usize) -> bool) -> Result<InputStats, String> {
    let mut ctx = Ctx::eval();
    ctx.inputs = Some(InputStats::default());
    for (i, ids) in chunks.iter().enumerate() {
        let t = Tensor::new(ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(|e| e.to_string())?;
        let tabs = model.rope_tables(ids.len()).map_err(|e| e.to_string())?;
        let mut x = model.embed(&t).map_err(|e| e.to_string())?;
        for b in 0..model.blocks.len() {
            x = model.block(b, &x, &tabs, &mut ctx).map_err(|e| e.to_string())?;
        }
        if !on_chunk(i + 1, chunks.len()) {
            return Err("stopped".into());
        }
    }
    Ok(ctx.inputs.unwrap_or_default())
}

/// Token chunks of a text as llama.cpp's imatrix tool reads it: the whole text tokenized once,
/// cut into `n_ctx`-token chunks (the tail that fills none left out), BOS first in each where the
/// model has one; as many chunks as `max_tokens` asks (all of them when it asks more).
pub fn text_chunks(ids: &[u32], n_ctx: usize, bos: Option<u32>, max_tokens: usize) -> Vec<Vec<u32>> {
    let want = max_tokens.div_ceil(n_ctx.max(1));
    ids.chunks_exact(n_ctx.max(1))
        .take(want)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect()
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn load_gguf(path: &Path, f: &mut std::fs::File) -> Result<Imatrix, String> {
    use gguf_file::Value as V;
    let bad = |why: String| format!("{} is not an importance matrix llama.cpp can read ({why}).", path.display());
    let content = gguf_file::Content::read(f).map_err(|e| bad(e.to_string()))?;
    let text = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    let number = |k: &str| content.metadata.get(k).and_then(|v| v.to_u32().ok()).unwrap_or(0);
    let datasets = match content.metadata.get("imatrix.datasets") {
        Some(V::Array(a)) => a.iter().filter_map(|v| v.to_string().ok().cloned()).collect(),
        _ => Vec::new(),
    };
    let mut entries = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().filter(|k| k.ends_with(".in_sum2")).collect();
    names.sort();
    if names.is_empty() {
        return Err(bad("it holds no .in_sum2 tensors".into()));
    }
    let read = |f: &mut std::fs::File, name: &str| -> Result<Vec<f32>, String> {
        let t = content.tensor(f, name, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
        t.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(|e| bad(e.to_string()))
    };
    for n in names {
        let base = n.trim_end_matches(".in_sum2").to_string();
        let sum2 = read(f, n)?;
        let counts = read(f, &format!("{base}.counts")).map_err(|_| bad(format!("{base} has sums but no counts")))?;
        if counts.len() != 1 {
            return Err(bad(format!("{base} has {} expert matrices; lathe exports dense models only", counts.len())));
        }
        entries.insert(base, Entry { sum2, count: counts[0] });
    }
    Ok(Imatrix { entries, datasets, chunk_count: number("imatrix.chunk_count"), chunk_size: number("imatrix.chunk_size"), model: text("general.name") })
}

/// The legacy layout: i32 entries; per entry i32 name length, name, i32 ncall, i32 nval, f32 ×
/// nval (each the mean times ncall); then optionally i32 chunks and a dataset name.
fn load_dat(path: &Path, f: &mut std::fs::File) -> Result<Imatrix, String> {
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let bad = || format!("{} is neither a GGUF nor a legacy .dat importance matrix; give a file llama-imatrix or lathe wrote.", path.display());
    let mut at = 0usize;
    let i32_at = |at: &mut usize| -> Result<i32, String> {
        let b = bytes.get(*at..*at + 4).ok_or_else(bad)?;
        *at += 4;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let n = i32_at(&mut at)?;
    if !(1..=1_000_000).contains(&n) {
        return Err(bad());
    }
    let mut entries = BTreeMap::new();
    for _ in 0..n {
        let len = i32_at(&mut at)?;
        let name = bytes.get(at..at + len.max(0) as usize).ok_or_else(bad)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
        at += len as usize;
        let ncall = i32_at(&mut at)?;
        let nval = i32_at(&mut at)?;
        if nval < 1 {
            return Err(bad());
        }
        let raw = bytes.get(at..at + 4 * nval as usize).ok_or_else(bad)?;
        at += 4 * nval as usize;
        let sum2 = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        // Stored values are means times ncall: as sums over ncall "tokens" they give the mean back.
        entries.insert(name, Entry { sum2, count: ncall.max(0) as f32 });
    }
    let chunks = i32_at(&mut at).unwrap_or(0);
    let dataset = i32_at(&mut at).ok().and_then(|len| bytes.get(at..at + len.max(0) as usize)).map(|b| String::from_utf8_lossy(b).into_owned());
    Ok(Imatrix { entries, datasets: dataset.into_iter().collect(), chunk_count: chunks.max(0) as u32, chunk_size: 0, model: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_as_llama_cpp_cuts_them() {
        let ids: Vec<u32> = (10..30).collect();
        assert_eq!(text_chunks(&ids, 8, Some(1), 100), vec![vec![1, 11, 12, 13, 14, 15, 16, 17], vec![1, 19, 20, 21, 22, 23, 24, 25]]);
        assert_eq!(text_chunks(&ids, 8, None, 5).len(), 1);
    }

    #[test]
    fn files_round_trip_and_legacy_files_read() {
        let dir = std::env::temp_dir().join(format!("lathe-imatrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut entries = BTreeMap::new();
        entries.insert("blk.0.attn_q.weight".to_string(), Entry { sum2: vec![2.0, 4.0, 6.0], count: 2.0 });
        entries.insert("blk.0.ffn_down.weight".to_string(), Entry { sum2: vec![1.0, 0.5], count: 0.0 });
        let m = Imatrix { entries, datasets: vec!["view chat".into()], chunk_count: 3, chunk_size: 512, model: Some("tiny".into()) };
        let path = dir.join("m.gguf");
        m.save(&path).unwrap();
        assert_eq!(Imatrix::load(&path).unwrap(), m);
        assert_eq!(m.means()[0].1, vec![1.0, 2.0, 3.0]);
        assert_eq!(m.means()[1].1, vec![1.0, 1.0]);

        // The legacy layout: one entry of two values over 4 calls, 7 chunks, a dataset name.
        let mut dat = Vec::new();
        dat.extend(1i32.to_le_bytes());
        let name = b"blk.0.attn_k.weight";
        dat.extend((name.len() as i32).to_le_bytes());
        dat.extend(name);
        dat.extend(4i32.to_le_bytes());
        dat.extend(2i32.to_le_bytes());
        for v in [8.0f32, 12.0] {
            dat.extend(v.to_le_bytes());
        }
        dat.extend(7i32.to_le_bytes());
        dat.extend(3i32.to_le_bytes());
        dat.extend(b"a.t");
        let p = dir.join("m.dat");
        std::fs::write(&p, &dat).unwrap();
        let l = Imatrix::load(&p).unwrap();
        assert_eq!(l.means(), vec![("blk.0.attn_k.weight".to_string(), vec![2.0, 3.0])]);
        assert_eq!((l.chunk_count, l.datasets.clone()), (7, vec!["a.t".to_string()]));
        std::fs::write(&p, b"nonsense").unwrap();
        assert!(Imatrix::load(&p).unwrap_err().contains("neither a GGUF nor"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_matrix_for_another_model_is_refused_with_both_names() {
        let mut entries = BTreeMap::new();
        entries.insert("blk.0.attn_q.weight".to_string(), Entry { sum2: vec![1.0; 4], count: 1.0 });
        let m = Imatrix { entries, datasets: vec![], chunk_count: 1, chunk_size: 4, model: Some("phi-2".into()) };
        let shapes: BTreeMap<String, usize> = [("blk.0.attn_q.weight".to_string(), 8)].into();
        let e = m.check_fits(&shapes, "tinyllama").unwrap_err();
        assert!(e.contains("made for phi-2, not tinyllama") && e.contains("holds 4 inputs"), "{e}");
        let shapes: BTreeMap<String, usize> = [("blk.0.attn_q.weight".to_string(), 4)].into();
        assert_eq!(m.check_fits(&shapes, "tinyllama"), Ok(()));
    }
}
