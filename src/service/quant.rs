//! Quantization that knows the user's data: what an importance matrix is computed from (a view's
//! training split, a text file) or read from (a file llama-imatrix or lathe wrote), and computing
//! it for an export with the model as it was trained (a run: its base with its adapter).

use std::path::{Path, PathBuf};

use crate::engine::data::views::Split;
use crate::engine::data::Catalog;
use crate::engine::export::imatrix::{self, Imatrix};
use crate::engine::train::base::BasePrecision;
use crate::engine::train::text::TextCodec;
use crate::engine::train::trainer;

/// Tokens an importance matrix is computed over when the user names no count.
pub const DEFAULT_TOKENS: usize = 10_000;
/// Tokens per chunk of a text file (llama-imatrix's default context), at most the model's.
pub const TEXT_CHUNK: usize = 512;

/// Where an export's importance matrix comes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Calibration {
    /// A GGUF or legacy .dat importance matrix.
    File(PathBuf),
    /// A view's training split (never its eval split), each example as training reads it.
    View { name: String, tokens: Option<usize> },
    /// A text file, cut into 512-token chunks as llama-imatrix cuts it.
    Text { path: PathBuf, tokens: Option<usize> },
}

impl Calibration {
    /// `--imatrix X`: a .gguf or .dat file is a matrix, any other file a calibration text, and
    /// anything else a view's name.
    pub fn parse(spec: &str, tokens: Option<usize>) -> Calibration {
        let p = Path::new(spec);
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match (p.is_file(), ext.as_str()) {
            (true, "gguf" | "dat") => Calibration::File(p.to_path_buf()),
            (true, _) => Calibration::Text { path: p.to_path_buf(), tokens },
            _ => Calibration::View { name: spec.to_string(), tokens },
        }
    }

    /// Whether the matrix is computed (not read from a file).
    pub fn computed(&self) -> bool {
        !matches!(self, Calibration::File(_))
    }
}

/// The importance matrix for `model_dir` (+ `adapter`) from `calibration`; `progress` hears how
/// far the forward passes are (false stops; an empty message only asks whether to go on). `cat`
/// reads a view's examples.
pub fn importance_matrix(
    cat: Option<&Catalog>,
    model_dir: &Path,
    adapter: Option<&Path>,
    name: &str,
    calibration: &Calibration,
    progress: &mut dyn FnMut(String) -> bool,
) -> Result<Imatrix, String> {
    let (model, codec) = match calibration {
        Calibration::File(path) => return Imatrix::load(path),
        _ => trainer::load_for_eval(model_dir, adapter, BasePrecision::F32)?,
    };
    let max_len = model.cfg.max_position_embeddings.clamp(16, TEXT_CHUNK);
    let Some(Chunks { chunks, dataset, chunk_size }) = calibration_chunks(cat, &codec, max_len, calibration)? else { unreachable!("a file was read above") };
    let total: usize = chunks.iter().map(Vec::len).sum();
    let t = std::time::Instant::now();
    // Said every 5% (and at the end); asked whether to go on after every sequence.
    let mut said = usize::MAX;
    let stats = imatrix::collect(&model, &chunks, &mut |done, of| {
        let step = done * 20 / of.max(1);
        if step == said && done < of {
            return progress(String::new());
        }
        said = step;
        progress(format!("importance matrix: {done}/{of} sequences ({:.0} tokens/s)", total as f64 * done as f64 / of as f64 / t.elapsed().as_secs_f64().max(1e-9)))
    })?;
    Ok(Imatrix::from_stats(stats, vec![dataset], chunk_size as u32, chunks.len() as u32, name))
}

/// The token sequences a matrix is computed over, what they are (for the file's
/// imatrix.datasets) and the chunk length.
pub struct Chunks {
    pub chunks: Vec<Vec<u32>>,
    pub dataset: String,
    pub chunk_size: usize,
}

/// The calibration data as the forward passes read it (None for a matrix file): a text cut into
/// `max_len`-token chunks, or a view's training examples, each truncated to `max_len`, until the
/// tokens asked for are reached.
pub fn calibration_chunks(cat: Option<&Catalog>, codec: &TextCodec, max_len: usize, calibration: &Calibration) -> Result<Option<Chunks>, String> {
    Ok(Some(match calibration {
        Calibration::File(_) => return Ok(None),
        Calibration::Text { path, tokens } => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("Cannot read {} ({e}); give a UTF-8 text file.", path.display()))?;
            let ids = codec.tok.encode(text.as_str(), true).map_err(|e| format!("The tokenizer failed on {} ({e}).", path.display()))?.get_ids().to_vec();
            let want = tokens.unwrap_or(DEFAULT_TOKENS);
            // BOS first in each chunk only where the tokenizer puts one first (llama.cpp's add_bos).
            let bos = codec.bos.as_ref().map(|b| b.1).filter(|b| ids.first() == Some(b));
            let chunks = imatrix::text_chunks(&ids, max_len, bos, want);
            let have = chunks.len() * max_len;
            if chunks.is_empty() || (tokens.is_some() && have < want) {
                return Err(format!("{} has {} tokens in whole {max_len}-token chunks and {want} were asked for; give a longer text or a smaller --imatrix-tokens.", path.display(), have));
            }
            Chunks { chunks, dataset: path.display().to_string(), chunk_size: max_len }
        }
        Calibration::View { name, tokens } => {
            let cat = cat.ok_or("A view needs the workspace's catalog.")?;
            let examples = cat.examples(name, Split::Train, None).map_err(|e| e.to_string())?;
            let want = tokens.unwrap_or(DEFAULT_TOKENS);
            let (mut chunks, mut have) = (Vec::new(), 0usize);
            for ex in &examples {
                if have >= want {
                    break;
                }
                let mut ids = codec.encode(ex)?.ids;
                ids.truncate(max_len);
                // llama.cpp skips matrices fed fewer than 16 rows at once; so does this.
                if ids.len() >= 16 {
                    have += ids.len();
                    chunks.push(ids);
                }
            }
            if chunks.is_empty() || (tokens.is_some() && have < want) {
                return Err(format!("View {name}'s training split has {have} tokens in examples of 16 tokens or more and {want} were asked for; pass a smaller --imatrix-tokens or a larger view."));
            }
            Chunks { chunks, dataset: format!("view {name} (train split)"), chunk_size: max_len }
        }
    }))
}

/// Where an export computed from data keeps its importance matrix: beside the GGUF, so
/// llama-quantize (or the next export) can use it again.
pub fn beside(out: &Path) -> PathBuf {
    out.with_extension("imatrix.gguf")
}
