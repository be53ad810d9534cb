//! Collections: one Lance dataset per collection, `vectors/NAME.lance` in the workspace, that
//! lancedb and pylance open as they are. The embedding model's identity is in the schema's
//! metadata (set once, at creation); the sources the user added are in the table metadata. Each
//! row is one chunk: a stable id, its document's path and hash, its place (lines, headings), its
//! text and hash, and its vector. Writes are Lance commits (atomic: a killed writer leaves the
//! last commit readable). Search is exact (flat) below `ANN_MIN_ROWS` chunks and through an
//! IVF-HNSW-SQ index above; full text goes through Lance's BM25 inverted index; hybrid fuses the
//! two by reciprocal rank. Lance is async: this module runs it on its own small runtime and offers
//! blocking calls, made from service threads (never from inside an async task).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use lance::dataset::{MergeInsertBuilder, WhenMatched, WhenNotMatched, WhenNotMatchedBySource, WriteMode, WriteParams};
use lance::deps::arrow_array::{
    Array, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchIterator, StringArray, UInt32Array,
};
use lance::deps::arrow_schema::{DataType, Field, Schema};
use lance::index::vector::VectorIndexParams;
use lance::index::DatasetIndexExt;
use lance::Dataset;
use lance_index::scalar::inverted::tokenizer::InvertedIndexParams;
use lance_index::scalar::FullTextSearchQuery;
use lance_index::vector::hnsw::builder::HnswBuildParams;
use lance_index::vector::ivf::IvfBuildParams;
use lance_index::vector::sq::builder::SQBuildParams;
use lance_index::IndexType;
use lance_linalg::distance::DistanceType;
use serde::{Deserialize, Serialize};

use crate::engine::embed::EmbedSpec;

/// Chunks from which the vector column gets an ANN index; below it, search is exact. Measured by
/// `lathe bench kb` (all-MiniLM-L6-v2, 384 dimensions, 2 Zen 4 cores): exact search's p50 grows
/// with the collection (24 ms at 16k chunks, 54 ms at 40k, 127 ms at 104k) while the index's
/// stays near 9 ms (104k, recall@10 1.000 against exact); at 16k exact is already 2.6 times
/// slower, and the index builds there in a few seconds.
pub const ANN_MIN_ROWS: usize = 15_000;
/// Reciprocal rank fusion's constant (as lancedb and the original paper use).
pub const RRF_K: f64 = 60.0;

const VECTOR_INDEX: &str = "vector_idx";
const TEXT_INDEX: &str = "text_idx";
const META_SOURCES: &str = "lathe.sources";

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("There is no collection {0:?}; `lathe kb list` shows the collections and `lathe kb create NAME --model DIR` makes one.")]
    NotFound(String),
    #[error("A collection named {0:?} exists already; pick another name, or drop it first with `lathe kb drop {0}`.")]
    Exists(String),
    #[error("{0:?} cannot name a collection; use letters, digits, '-' and '_' (up to 64).")]
    BadName(String),
    #[error("Collection {collection:?} was made with {made_with}, not {given}; use the model it was made with, or make a new collection for {given}.")]
    ModelMismatch { collection: String, made_with: String, given: String },
    #[error("Collection {0:?} is empty; add documents with `lathe kb add {0} PATH`.")]
    Empty(String),
    #[error("Collection {0:?} has no text index yet; `lathe kb sync {0}` builds it.")]
    NoTextIndex(String),
    #[error("{0} does not exist; give a file, a folder, a glob pattern or dataset:NAME.COLUMN.")]
    NoPath(String),
    /// A `dataset:NAME.COLUMN` source the catalog cannot give (a sentence from it).
    #[error("{0}")]
    Dataset(String),
    #[error("Collection {name:?} was made with {model}, which is not at {dir} any more; pass the model's folder with --model.")]
    ModelGone { name: String, model: String, dir: String },
    #[error(transparent)]
    Embed(#[from] crate::engine::embed::EmbedError),
    #[error("Writing collection {name:?} failed ({why}); is the disk full? It stays readable at its last commit, and `lathe kb sync {name}` completes it.")]
    Write { name: String, why: String },
    #[error("Reading collection {name:?} failed ({why}).")]
    Read { name: String, why: String },
}

/// The embedding model a collection was made with: what a query or an ingest must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    pub name: String,
    pub dir: String,
    pub dim: usize,
    pub pooling: String,
    pub normalize: bool,
    pub max_len: usize,
    /// A hash of the folder's config.json and the head and length of its weights.
    pub fingerprint: String,
}

impl ModelId {
    pub fn of(spec: &EmbedSpec) -> ModelId {
        let mut h = blake3::Hasher::new();
        if let Ok(cfg) = std::fs::read(spec.dir.join("config.json")) {
            h.update(&cfg);
        }
        if let Ok(mut f) = std::fs::File::open(spec.dir.join("model.safetensors")) {
            use std::io::Read;
            let mut head = vec![0u8; 1 << 16];
            let n = f.read(&mut head).unwrap_or(0);
            h.update(&head[..n]);
            h.update(&f.metadata().map(|m| m.len()).unwrap_or(0).to_le_bytes());
        }
        ModelId {
            name: spec.name.clone(),
            dir: spec.dir.display().to_string(),
            dim: spec.dim,
            pooling: spec.pooling.name().into(),
            normalize: spec.normalize,
            max_len: spec.max_len,
            fingerprint: h.finalize().to_hex()[..16].to_string(),
        }
    }

    /// The same model (wherever its folder is now).
    pub fn same_as(&self, other: &ModelId) -> bool {
        self.fingerprint == other.fingerprint && self.dim == other.dim && self.pooling == other.pooling && self.normalize == other.normalize
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([("lathe.model".to_string(), serde_json::to_string(self).unwrap_or_default())])
    }

    fn from_metadata(meta: &HashMap<String, String>) -> Option<ModelId> {
        serde_json::from_str(meta.get("lathe.model")?).ok()
    }
}

/// One chunk as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub chunk_id: String,
    pub path: String,
    pub first_line: u32,
    pub last_line: u32,
    /// Heading path, outermost first, joined by " > ".
    pub headings: String,
    pub text: String,
    pub hash: String,
    pub file_hash: String,
    pub vector: Vec<f32>,
}

impl ChunkRow {
    /// The id of a chunk: its document, its first line and its text. Stable across re-ingests of
    /// an unchanged place; hybrid search breaks score ties by it.
    pub fn id_of(path: &str, first_line: u32, text: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(path.as_bytes());
        h.update(&[0]);
        h.update(&first_line.to_le_bytes());
        h.update(text.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }
}

/// What `lathe kb list` and the Knowledge pane show of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub name: String,
    pub model: ModelId,
    pub documents: usize,
    pub chunks: usize,
    /// Bytes on disk (every version kept).
    pub bytes: u64,
    pub sources: Vec<String>,
    pub version: u64,
    pub vector_index: bool,
    pub text_index: bool,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Vector,
    Text,
}

impl SearchMode {
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Vector => "vector",
            SearchMode::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Result<SearchMode, String> {
        match s {
            "hybrid" => Ok(SearchMode::Hybrid),
            "vector" => Ok(SearchMode::Vector),
            "text" => Ok(SearchMode::Text),
            _ => Err(format!("{s:?} is not a search mode; use hybrid, vector or text.")),
        }
    }
}

/// One search result. `score` is the mode's own: cosine similarity (vector), BM25 (text), or the
/// fused reciprocal-rank score (hybrid); the ranks say where each list had it (1-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub rank: usize,
    pub score: f64,
    pub chunk_id: String,
    pub path: String,
    pub first_line: u32,
    pub last_line: u32,
    pub headings: String,
    pub text: String,
    pub vector_rank: Option<usize>,
    pub text_rank: Option<usize>,
}

/// Lance's runtime: two workers are plenty for one laptop's collections.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("lance").enable_all().build().expect("a tokio runtime for lance")
    })
}

/// Runs a Lance future to its end. A caller on a thread that drives another runtime (the
/// workstation's loop) may not block it: the future then runs from a thread of its own.
fn block<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt().block_on(f);
    }
    std::thread::scope(|s| s.spawn(|| rt().block_on(f)).join().expect("a Lance call panicked"))
}

fn check_name(name: &str) -> Result<(), KbError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(KbError::BadName(name.to_string()))
    }
}

/// A SQL string literal for a Lance filter.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn schema(dim: usize, model: &ModelId) -> Arc<Schema> {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let u = |n: &str| Field::new(n, DataType::UInt32, false);
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Arc::new(Schema::new_with_metadata(
        vec![
            s("chunk_id"),
            s("path"),
            u("first_line"),
            u("last_line"),
            s("headings"),
            s("text"),
            s("hash"),
            s("file_hash"),
            Field::new("vector", DataType::FixedSizeList(item, dim as i32), false),
        ],
        model.to_metadata(),
    ))
}

fn batch(schema: &Arc<Schema>, rows: &[ChunkRow], dim: usize) -> Result<RecordBatch, String> {
    let strs = |f: &dyn Fn(&ChunkRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as Arc<dyn Array>;
    let u32s = |f: &dyn Fn(&ChunkRow) -> u32| Arc::new(UInt32Array::from_iter_values(rows.iter().map(f))) as Arc<dyn Array>;
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        if r.vector.len() != dim {
            return Err(format!("a vector of {} values in a collection of dimension {dim}", r.vector.len()));
        }
        flat.extend_from_slice(&r.vector);
    }
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let vectors = FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(flat)), None).map_err(|e| e.to_string())?;
    RecordBatch::try_new(
        schema.clone(),
        vec![
            strs(&|r| &r.chunk_id),
            strs(&|r| &r.path),
            u32s(&|r| r.first_line),
            u32s(&|r| r.last_line),
            strs(&|r| &r.headings),
            strs(&|r| &r.text),
            strs(&|r| &r.hash),
            strs(&|r| &r.file_hash),
            Arc::new(vectors),
        ],
    )
    .map_err(|e| e.to_string())
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    b.column_by_name(name)?.as_any().downcast_ref::<StringArray>()
}
fn column_u32<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a UInt32Array> {
    b.column_by_name(name)?.as_any().downcast_ref::<UInt32Array>()
}
fn column_f32<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a Float32Array> {
    b.column_by_name(name)?.as_any().downcast_ref::<Float32Array>()
}

/// An open collection.
pub struct Collection {
    pub name: String,
    pub model: ModelId,
    path: PathBuf,
    ds: Dataset,
}

impl Collection {
    pub fn path_of(vectors: &Path, name: &str) -> PathBuf {
        vectors.join(format!("{name}.lance"))
    }

    /// Makes an empty collection for `spec`'s model.
    pub fn create(vectors: &Path, name: &str, spec: &EmbedSpec) -> Result<Collection, KbError> {
        check_name(name)?;
        let path = Self::path_of(vectors, name);
        if path.exists() {
            return Err(KbError::Exists(name.to_string()));
        }
        let model = ModelId::of(spec);
        let schema = schema(spec.dim, &model);
        let empty = RecordBatchIterator::new(Vec::<Result<RecordBatch, lance::deps::arrow_schema::ArrowError>>::new(), schema);
        let params = WriteParams { mode: WriteMode::Create, ..Default::default() };
        let uri = path.display().to_string();
        let write = |e: lance::Error| KbError::Write { name: name.to_string(), why: e.to_string() };
        let mut ds = block(Dataset::write(empty, uri.as_str(), Some(params))).map_err(write)?;
        // The text index from the start (rows added later are searched too, and folded in by
        // `update_indices`), so full-text search never meets a collection without one.
        let text = InvertedIndexParams::default();
        block(ds.create_index(&["text"], IndexType::Inverted, Some(TEXT_INDEX.into()), &text, true)).map_err(write)?;
        Ok(Collection { name: name.to_string(), model, path, ds })
    }

    pub fn open(vectors: &Path, name: &str) -> Result<Collection, KbError> {
        check_name(name)?;
        let path = Self::path_of(vectors, name);
        if !path.join("_versions").is_dir() {
            return Err(KbError::NotFound(name.to_string()));
        }
        let read = |e: lance::Error| KbError::Read { name: name.to_string(), why: e.to_string() };
        let ds = block(Dataset::open(&path.display().to_string())).map_err(read)?;
        let model = ModelId::from_metadata(&ds.schema().metadata)
            .ok_or_else(|| KbError::Read { name: name.to_string(), why: "it records no embedding model; it was not made by lathe".into() })?;
        Ok(Collection { name: name.to_string(), model, path, ds })
    }

    /// Names of the collections under `vectors`, sorted.
    pub fn names(vectors: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(vectors)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".lance").map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .collect();
        out.sort();
        out
    }

    /// Removes a collection's files.
    pub fn drop_collection(vectors: &Path, name: &str) -> Result<(), KbError> {
        check_name(name)?;
        let path = Self::path_of(vectors, name);
        if !path.exists() {
            return Err(KbError::NotFound(name.to_string()));
        }
        std::fs::remove_dir_all(&path).map_err(|e| KbError::Write { name: name.to_string(), why: e.to_string() })
    }

    /// Refuses a model other than the collection's.
    pub fn check_model(&self, spec: &EmbedSpec) -> Result<(), KbError> {
        let given = ModelId::of(spec);
        if self.model.same_as(&given) {
            Ok(())
        } else {
            let made_with = if self.model.name == given.name { format!("{} ({})", self.model.name, self.model.dir) } else { self.model.name.clone() };
            let given = if self.model.name == given.name { format!("{} ({})", given.name, given.dir) } else { given.name };
            Err(KbError::ModelMismatch { collection: self.name.clone(), made_with, given })
        }
    }

    /// The folder of the collection's model, or why it is gone.
    pub fn model_dir(&self) -> Result<PathBuf, KbError> {
        let dir = PathBuf::from(&self.model.dir);
        if dir.join("config.json").exists() {
            Ok(dir)
        } else {
            Err(KbError::ModelGone { name: self.name.clone(), model: self.model.name.clone(), dir: self.model.dir.clone() })
        }
    }

    fn read_err(&self, e: impl std::fmt::Display) -> KbError {
        KbError::Read { name: self.name.clone(), why: e.to_string() }
    }
    fn write_err(&self, e: impl std::fmt::Display) -> KbError {
        KbError::Write { name: self.name.clone(), why: e.to_string() }
    }

    pub fn sources(&self) -> Vec<String> {
        self.ds.metadata().get(META_SOURCES).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
    }

    /// Records the sources (files, folders, globs) that `sync` reads again.
    pub fn set_sources(&mut self, sources: &[String]) -> Result<(), KbError> {
        let json = serde_json::to_string(sources).unwrap_or_default();
        let r = block(async { self.ds.update_metadata([(META_SOURCES, json.as_str())]).await });
        r.map(|_| ()).map_err(|e| self.write_err(e))
    }

    pub fn chunks(&self) -> Result<usize, KbError> {
        block(self.ds.count_rows(None)).map_err(|e| self.read_err(e))
    }

    /// Each document's path and content hash.
    pub fn documents(&self) -> Result<BTreeMap<String, String>, KbError> {
        let mut out = BTreeMap::new();
        let batches = block(async {
            let mut scan = self.ds.scan();
            scan.project(&["path", "file_hash"])?;
            let batch = scan.try_into_batch().await?;
            Ok::<_, lance::Error>(batch)
        });
        let b = batches.map_err(|e| self.read_err(e))?;
        if let (Some(p), Some(h)) = (column(&b, "path"), column(&b, "file_hash")) {
            for i in 0..b.num_rows() {
                out.entry(p.value(i).to_string()).or_insert_with(|| h.value(i).to_string());
            }
        }
        Ok(out)
    }

    /// Replaces the chunks of the documents at `paths` with `rows` (which hold their new chunks;
    /// a path with no rows loses its chunks), in one commit.
    pub fn replace(&mut self, paths: &[String], rows: &[ChunkRow]) -> Result<(), KbError> {
        if paths.is_empty() && rows.is_empty() {
            return Ok(());
        }
        let list = paths.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ");
        let predicate = format!("path IN ({list})");
        if rows.is_empty() {
            let r = block(self.ds.delete(&predicate));
            return r.map(|_| ()).map_err(|e| self.write_err(e));
        }
        let schema = schema(self.model.dim, &self.model);
        let b = batch(&schema, rows, self.model.dim).map_err(|e| self.write_err(e))?;
        let ds = Arc::new(self.ds.clone());
        let r = block(async {
            let mut m = MergeInsertBuilder::try_new(ds.clone(), vec!["chunk_id".to_string()])?;
            m.when_matched(WhenMatched::UpdateAll).when_not_matched(WhenNotMatched::InsertAll);
            if !paths.is_empty() {
                m.when_not_matched_by_source(WhenNotMatchedBySource::delete_if(&ds, &predicate)?);
            }
            let job = m.try_build()?;
            job.execute_reader(RecordBatchIterator::new(vec![Ok(b)], schema)).await
        });
        let (ds, _) = r.map_err(|e| self.write_err(e))?;
        self.ds = (*ds).clone();
        Ok(())
    }

    /// Appends chunks in one commit, replacing nothing (bulk loads: `lathe bench kb`).
    pub fn append(&mut self, rows: &[ChunkRow]) -> Result<(), KbError> {
        let schema = schema(self.model.dim, &self.model);
        let b = batch(&schema, rows, self.model.dim).map_err(|e| self.write_err(e))?;
        let r = block(self.ds.append(RecordBatchIterator::new(vec![Ok(b)], schema), None));
        r.map_err(|e| self.write_err(e))
    }

    /// Every chunk with its vector (small collections; `lathe bench kb` copies them).
    pub fn rows(&self) -> Result<Vec<ChunkRow>, KbError> {
        let r = block(async { self.ds.scan().try_into_batch().await });
        let b = r.map_err(|e| self.read_err(e))?;
        let vectors = b.column_by_name("vector").and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>());
        let (Some(p), Some(hash), Some(fh), Some(vectors)) = (Placed::of(&b), column(&b, "hash"), column(&b, "file_hash"), vectors) else {
            return Err(self.read_err("a column is missing or of another type"));
        };
        let values = vectors.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| self.read_err("the vectors are not f32"))?;
        let dim = self.model.dim;
        Ok((0..b.num_rows())
            .map(|i| {
                let h = p.hit(i, 0);
                ChunkRow {
                    chunk_id: h.chunk_id,
                    path: h.path,
                    first_line: h.first_line,
                    last_line: h.last_line,
                    headings: h.headings,
                    text: h.text,
                    hash: hash.value(i).to_string(),
                    file_hash: fh.value(i).to_string(),
                    vector: values.values()[i * dim..(i + 1) * dim].to_vec(),
                }
            })
            .collect())
    }

    fn index_names(&self) -> Result<Vec<String>, KbError> {
        let r = block(self.ds.load_indices());
        Ok(r.map_err(|e| self.read_err(e))?.iter().map(|i| i.name.clone()).collect())
    }

    /// Brings the indices up to date: the text index made or extended; the vector index made once
    /// the collection reaches `ANN_MIN_ROWS` and extended after. Returns what it did, in words.
    pub fn update_indices(&mut self) -> Result<Vec<String>, KbError> {
        let rows = self.chunks()?;
        let mut did = Vec::new();
        if rows == 0 {
            return Ok(did);
        }
        let have = self.index_names()?;
        let (has_text, has_vector) = (have.iter().any(|n| n == TEXT_INDEX), have.iter().any(|n| n == VECTOR_INDEX));
        if !has_text {
            let params = InvertedIndexParams::default();
            let r = block(self.ds.create_index(&["text"], IndexType::Inverted, Some(TEXT_INDEX.into()), &params, true));
            r.map_err(|e| self.write_err(e))?;
            did.push("built the text index".to_string());
        }
        if !has_vector && rows >= ANN_MIN_ROWS {
            // About sqrt(rows) partitions, as Lance advises.
            let partitions = ((rows as f64).sqrt() as usize).clamp(1, 4096);
            let params = VectorIndexParams::with_ivf_hnsw_sq_params(
                DistanceType::Cosine,
                IvfBuildParams::new(partitions),
                HnswBuildParams::default(),
                SQBuildParams::default(),
            );
            let r = block(self.ds.create_index(&["vector"], IndexType::Vector, Some(VECTOR_INDEX.into()), &params, true));
            r.map_err(|e| self.write_err(e))?;
            did.push(format!("built the vector index ({partitions} partitions)"));
        }
        if has_text || has_vector {
            let r = block(self.ds.optimize_indices(&Default::default()));
            r.map_err(|e| self.write_err(e))?;
            did.push("brought the indices up to date".to_string());
        }
        Ok(did)
    }

    /// Merges small files left by many commits, when there are many.
    pub fn compact(&mut self) -> Result<bool, KbError> {
        if self.ds.count_fragments() < 16 {
            return Ok(false);
        }
        let r = block(lance::dataset::optimize::compact_files(&mut self.ds, Default::default(), None));
        r.map(|_| true).map_err(|e| self.write_err(e))
    }

    pub fn info(&self) -> Result<CollectionInfo, KbError> {
        let have = self.index_names()?;
        let bytes = walk_bytes(&self.path);
        Ok(CollectionInfo {
            name: self.name.clone(),
            model: self.model.clone(),
            documents: self.documents()?.len(),
            chunks: self.chunks()?,
            bytes,
            sources: self.sources(),
            version: self.ds.version().version,
            vector_index: have.iter().any(|n| n == VECTOR_INDEX),
            text_index: have.iter().any(|n| n == TEXT_INDEX),
            path: self.path.display().to_string(),
        })
    }

    /// A path filter: the paths that start with `f` when it is absolute, else those that hold it.
    fn path_filter(f: &str) -> String {
        let escaped = f.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let pattern = if f.starts_with('/') { format!("{escaped}%") } else { format!("%{escaped}%") };
        format!("path LIKE {}", quote(&pattern))
    }

    /// The `k` nearest chunks to `query` by cosine similarity; `exact` skips the ANN index (the
    /// reference its recall is measured against).
    pub fn search_vector(&self, query: &[f32], k: usize, filter: Option<&str>, exact: bool) -> Result<Vec<Hit>, KbError> {
        let q = Float32Array::from(query.to_vec());
        let indexed = !exact && self.index_names()?.iter().any(|n| n == VECTOR_INDEX);
        let r = block(async {
            let mut scan = self.ds.scan();
            scan.nearest("vector", &q, k)?;
            scan.distance_metric(DistanceType::Cosine);
            if indexed {
                // Enough partitions, a wide enough walk of each partition's graph (Lance's default
                // ef is 1.5x the candidates: 0.94 recall@10 in one bench run at 104k chunks), and
                // exact distances for the candidates, that recall stays high.
                scan.minimum_nprobes(20);
                scan.refine(4);
                scan.ef((8 * k).max(100));
            } else {
                scan.use_index(false);
            }
            if let Some(f) = filter {
                scan.prefilter(true);
                scan.filter(&Self::path_filter(f))?;
            }
            scan.project(&["chunk_id", "path", "first_line", "last_line", "headings", "text"])?;
            scan.try_into_batch().await
        });
        let b = r.map_err(|e| self.read_err(e))?;
        let mut hits = hits_of(&b);
        if let Some(d) = column_f32(&b, "_distance") {
            for (i, h) in hits.iter_mut().enumerate() {
                h.score = 1.0 - d.value(i) as f64;
                h.vector_rank = Some(i + 1);
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(&b.chunk_id)));
        rerank(&mut hits);
        Ok(hits)
    }

    /// The `k` best chunks for `query` by BM25.
    pub fn search_text(&self, query: &str, k: usize, filter: Option<&str>) -> Result<Vec<Hit>, KbError> {
        if !self.index_names()?.iter().any(|n| n == TEXT_INDEX) {
            return Err(KbError::NoTextIndex(self.name.clone()));
        }
        let r = block(async {
            let mut scan = self.ds.scan();
            let fts = FullTextSearchQuery::new(query.to_string()).with_column("text".to_string())?.limit(Some(k as i64));
            scan.full_text_search(fts)?;
            if let Some(f) = filter {
                scan.prefilter(true);
                scan.filter(&Self::path_filter(f))?;
            }
            scan.limit(Some(k as i64), None)?;
            scan.project(&["chunk_id", "path", "first_line", "last_line", "headings", "text"])?;
            scan.try_into_batch().await
        });
        let b = r.map_err(|e| self.read_err(e))?;
        let mut hits = hits_of(&b);
        if let Some(s) = column_f32(&b, "_score") {
            for (i, h) in hits.iter_mut().enumerate() {
                h.score = s.value(i) as f64;
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(&b.chunk_id)));
        for (i, h) in hits.iter_mut().enumerate() {
            h.text_rank = Some(i + 1);
        }
        rerank(&mut hits);
        Ok(hits)
    }

    /// Search in `mode`; hybrid fuses the two lists (each `candidates(k)` long) by reciprocal rank.
    pub fn search(&self, mode: SearchMode, text: &str, vector: &[f32], k: usize, filter: Option<&str>) -> Result<Vec<Hit>, KbError> {
        if self.chunks()? == 0 {
            return Err(KbError::Empty(self.name.clone()));
        }
        match mode {
            SearchMode::Vector => self.search_vector(vector, k, filter, false),
            SearchMode::Text => self.search_text(text, k, filter),
            SearchMode::Hybrid => {
                // The two searches at once, each on its own thread.
                let n = candidates(k);
                let (v, t) = std::thread::scope(|s| {
                    let t = s.spawn(|| self.search_text(text, n, filter));
                    let v = self.search_vector(vector, n, filter, false);
                    (v, t.join())
                });
                let t = t.map_err(|_| KbError::Read { name: self.name.clone(), why: "the text search panicked".into() })?;
                Ok(fuse(v?, t?, k))
            }
        }
    }
}

/// How many of each list hybrid search fuses: `k`, as lancedb's hybrid query takes its limit from
/// each leg. Deeper lists drown a chunk that one leg ranks first under chunks that sit low in
/// both (each of those scores two terms): on the labeled set of `lathe bench kb`, depths 5 and 10
/// gave recall@5 1.000, depths 20, 50 and 100 gave 0.975 (the text leg's best chunk outranked).
pub fn candidates(k: usize) -> usize {
    k
}

/// Reciprocal rank fusion: each chunk scores the sum of 1/(RRF_K + rank) over the lists that
/// have it (ranks from 1); ties go to the smaller chunk id.
pub fn fuse(vector: Vec<Hit>, text: Vec<Hit>, k: usize) -> Vec<Hit> {
    let mut by_id: HashMap<String, Hit> = HashMap::new();
    for (list, is_vector) in [(vector, true), (text, false)] {
        for (i, h) in list.into_iter().enumerate() {
            let rank = i + 1;
            let e = by_id.entry(h.chunk_id.clone()).or_insert_with(|| Hit { score: 0.0, vector_rank: None, text_rank: None, ..h });
            e.score += 1.0 / (RRF_K + rank as f64);
            if is_vector {
                e.vector_rank = Some(rank);
            } else {
                e.text_rank = Some(rank);
            }
        }
    }
    let mut hits: Vec<Hit> = by_id.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(&b.chunk_id)));
    hits.truncate(k);
    rerank(&mut hits);
    hits
}

fn rerank(hits: &mut [Hit]) {
    for (i, h) in hits.iter_mut().enumerate() {
        h.rank = i + 1;
    }
}

/// The columns every read of chunks uses: where a chunk is and what it says.
struct Placed<'a> {
    id: &'a StringArray,
    path: &'a StringArray,
    first: &'a UInt32Array,
    last: &'a UInt32Array,
    head: &'a StringArray,
    text: &'a StringArray,
}

impl<'a> Placed<'a> {
    fn of(b: &'a RecordBatch) -> Option<Self> {
        Some(Placed {
            id: column(b, "chunk_id")?,
            path: column(b, "path")?,
            first: column_u32(b, "first_line")?,
            last: column_u32(b, "last_line")?,
            head: column(b, "headings")?,
            text: column(b, "text")?,
        })
    }

    /// Row `i` as the `rank`th hit, unscored.
    fn hit(&self, i: usize, rank: usize) -> Hit {
        Hit {
            rank,
            score: 0.0,
            chunk_id: self.id.value(i).to_string(),
            path: self.path.value(i).to_string(),
            first_line: self.first.value(i),
            last_line: self.last.value(i),
            headings: self.head.value(i).to_string(),
            text: self.text.value(i).to_string(),
            vector_rank: None,
            text_rank: None,
        }
    }
}

fn hits_of(b: &RecordBatch) -> Vec<Hit> {
    Placed::of(b).map(|p| (0..b.num_rows()).map(|i| p.hit(i, i + 1)).collect()).unwrap_or_default()
}

fn walk_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir).into_iter().flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str) -> Hit {
        Hit {
            rank: 0,
            score: 0.0,
            chunk_id: id.into(),
            path: String::new(),
            first_line: 1,
            last_line: 1,
            headings: String::new(),
            text: String::new(),
            vector_rank: None,
            text_rank: None,
        }
    }

    #[test]
    fn fusion_sums_reciprocal_ranks_from_one_and_breaks_ties_by_id() {
        let v = vec![hit("a"), hit("b"), hit("c")];
        let t = vec![hit("c"), hit("d"), hit("a")];
        let out = fuse(v, t, 10);
        let ids: Vec<&str> = out.iter().map(|h| h.chunk_id.as_str()).collect();
        // a: 1/61 + 1/63; c: 1/63 + 1/61 (a tie, a first); b: 1/62; d: 1/62 (a tie, b first).
        assert_eq!(ids, ["a", "c", "b", "d"]);
        assert!((out[0].score - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-12);
        assert_eq!((out[0].vector_rank, out[0].text_rank), (Some(1), Some(3)));
        assert_eq!((out[3].vector_rank, out[3].text_rank), (None, Some(2)));
        assert_eq!(out.iter().map(|h| h.rank).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(fuse(vec![hit("x"), hit("y")], vec![], 1).len(), 1);
    }

    #[test]
    fn names_are_checked_and_filters_quoted() {
        assert!(check_name("notes_2024-v1").is_ok());
        for bad in ["", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(matches!(check_name(bad), Err(KbError::BadName(_))), "{bad}");
        }
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(Collection::path_filter("/docs/a_b"), r"path LIKE '/docs/a\_b%'");
        assert_eq!(Collection::path_filter("100%"), r"path LIKE '%100\%%'");
    }
}
