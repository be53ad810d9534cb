//! Knowledge as the service offers it: collections made, listed and dropped; documents ingested in
//! a job (progress on the subscription, cancellable); searches. Embedding models are loaded once
//! and kept while the service lives (queries reuse them). Every change is mirrored into
//! `lathe.collections` through the data worker, in order, so SQL sees the collections. The
//! blocking calls (`kb_*`) are for headless callers and the server's worker threads; the
//! workstation uses the ones that answer with an event.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Event, Service, ServiceError};
use crate::engine::data::worker::DataRequest;
use crate::engine::embed::{EmbedError, EmbedSpec, Embedder};
use crate::engine::jobs::{JobError, JobId, JobKind};
use crate::engine::knowledge::ingest::{self, IngestOptions, Report};
use crate::engine::knowledge::store::{Collection, CollectionInfo, Hit, KbError, SearchMode};
use crate::engine::workspace::Workspace;

impl From<KbError> for ServiceError {
    fn from(e: KbError) -> Self {
        match e {
            KbError::NotFound(_) | KbError::NoPath(_) | KbError::ModelGone { .. } => ServiceError::NotFound(e.to_string()),
            KbError::Exists(_) => ServiceError::AlreadyExists(e.to_string()),
            KbError::Embed(EmbedError::Run(_)) | KbError::Write { .. } | KbError::Read { .. } => ServiceError::Engine(e.to_string()),
            _ => ServiceError::Invalid(e.to_string()),
        }
    }
}

impl From<EmbedError> for ServiceError {
    fn from(e: EmbedError) -> Self {
        ServiceError::from(KbError::Embed(e))
    }
}

/// A search as a client asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub collection: String,
    pub query: String,
    pub mode: SearchMode,
    pub k: usize,
    /// Only paths that start with it (absolute) or hold it.
    pub path: Option<String>,
    /// The model's folder, when it is no longer where the collection recorded it.
    pub model: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    pub mode: SearchMode,
    /// Embedding the query and searching, in milliseconds.
    pub millis: f64,
    /// The query was longer than the model takes and was cut there.
    pub truncated: bool,
}

/// A loaded embedding model and the folder it came from.
type Loaded = (PathBuf, Arc<Embedder>);

/// Loaded embedding models, by folder.
#[derive(Default, Clone)]
pub(super) struct Embedders(Arc<Mutex<Vec<Loaded>>>);

impl Embedders {
    fn get(&self, dir: &Path) -> Result<Arc<Embedder>, EmbedError> {
        let mut held = self.0.lock().unwrap();
        if let Some((_, e)) = held.iter().find(|(d, _)| d == dir) {
            return Ok(e.clone());
        }
        let e = Arc::new(Embedder::load(dir)?);
        // One or two models are plenty to keep.
        if held.len() >= 2 {
            held.remove(0);
        }
        held.push((dir.to_path_buf(), e.clone()));
        Ok(e)
    }
}

/// The collection's model: `model` when given (refused if it is another model), else the folder
/// the collection recorded.
fn model_for(coll: &Collection, model: Option<&Path>) -> Result<PathBuf, KbError> {
    match model {
        Some(dir) => {
            coll.check_model(&EmbedSpec::read(dir)?)?;
            Ok(dir.to_path_buf())
        }
        None => coll.model_dir(),
    }
}

fn vectors(ws: Option<&Workspace>) -> Result<PathBuf, ServiceError> {
    ws.map(|w| w.vectors_dir()).ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))
}

/// Every collection's figures.
pub fn list(vectors: &Path) -> Result<Vec<CollectionInfo>, ServiceError> {
    Collection::names(vectors).iter().map(|n| Ok(Collection::open(vectors, n)?.info()?)).collect()
}

/// One search, blocking.
fn search(vectors: &Path, embedders: &Embedders, req: &SearchRequest) -> Result<SearchResult, ServiceError> {
    let start = Instant::now();
    let coll = Collection::open(vectors, &req.collection)?;
    if req.query.trim().is_empty() {
        return Err(ServiceError::Invalid("The query is empty; type what you are looking for.".into()));
    }
    let k = req.k.clamp(1, 1000);
    let (vector, truncated) = if req.mode == SearchMode::Text {
        (Vec::new(), false)
    } else {
        let e = embedders.get(&model_for(&coll, req.model.as_deref())?)?;
        let prompt = e.spec.prompts.get("query").cloned().unwrap_or_default();
        let mut done = e.embed(&[req.query.as_str()], &prompt)?;
        (done.vectors.remove(0), !done.truncated.is_empty())
    };
    let hits = coll.search(req.mode, &req.query, &vector, k, req.path.as_deref())?;
    Ok(SearchResult { hits, mode: req.mode, millis: start.elapsed().as_secs_f64() * 1e3, truncated })
}

/// One search for a headless caller that runs no service (`lathe chat --kb`): the collection's
/// model is loaded for it.
pub fn search_once(ws: &Workspace, req: &SearchRequest) -> Result<SearchResult, ServiceError> {
    search(&ws.vectors_dir(), &Embedders::default(), req)
}

/// Texts embedded by a model folder: what `lathe embed` prints (and the server's embeddings
/// route answers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embeddings {
    pub model: String,
    pub dimension: usize,
    pub pooling: &'static str,
    pub normalized: bool,
    pub max_tokens: usize,
    pub prompt: Option<String>,
    pub vectors: Vec<Vec<f32>>,
    /// The texts (by position) longer than `max_tokens`, cut there.
    #[serde(skip)]
    pub truncated: Vec<usize>,
    /// Tokens the model read, over all texts (special ones included).
    #[serde(skip)]
    pub tokens: usize,
}

fn embed(embedders: &Embedders, model: &Path, prompt: Option<&str>, texts: &[String]) -> Result<Embeddings, ServiceError> {
    // The folder is checked (and a prompt looked up) before its weights are read.
    let spec = EmbedSpec::read(model)?;
    let prefix = prompt.map(|p| spec.prompt(p).map(str::to_string)).transpose()?.unwrap_or_default();
    let e = embedders.get(model)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let done = e.embed(&refs, &prefix)?;
    let mut tokens = 0;
    for t in texts {
        tokens += e.tokens(&format!("{prefix}{t}"))?.len();
    }
    Ok(Embeddings {
        tokens,
        model: spec.name.clone(),
        dimension: spec.dim,
        pooling: spec.pooling.name(),
        normalized: spec.normalize,
        max_tokens: spec.max_len,
        prompt: prompt.map(str::to_string),
        vectors: done.vectors,
        truncated: done.truncated,
    })
}

/// Embeds `texts` for a headless caller that runs no service (`lathe embed`), with the model's
/// prompt named `prompt` (e5's "query") put before each.
pub fn embed_once(model: &Path, prompt: Option<&str>, texts: &[String]) -> Result<Embeddings, ServiceError> {
    embed(&Embedders::default(), model, prompt, texts)
}

impl Service {
    /// Mirrors the collections into lathe.collections (in the data worker's order).
    fn mirror_collections(&self) {
        if let (Ok(dir), Some(d)) = (vectors(self.ws.as_ref()), &self.data) {
            match list(&dir) {
                Ok(l) => d.send(DataRequest::Collections(l)),
                Err(e) => tracing::warn!("could not list the collections: {e}"),
            }
        }
    }

    /// Makes an empty collection for the embedding model in `model`.
    pub fn kb_create(&self, name: &str, model: &Path) -> Result<CollectionInfo, ServiceError> {
        let spec = EmbedSpec::read(model)?;
        let coll = Collection::create(&vectors(self.ws.as_ref())?, name, &spec)?;
        let info = coll.info()?;
        self.mirror_collections();
        Ok(info)
    }

    pub fn kb_list(&self) -> Result<Vec<CollectionInfo>, ServiceError> {
        let l = list(&vectors(self.ws.as_ref())?)?;
        if let Some(d) = &self.data {
            d.send(DataRequest::Collections(l.clone()));
        }
        Ok(l)
    }

    pub fn kb_drop(&self, name: &str) -> Result<(), ServiceError> {
        Collection::drop_collection(&vectors(self.ws.as_ref())?, name)?;
        self.mirror_collections();
        Ok(())
    }

    /// Searches a collection (blocking: loads its model the first time).
    pub fn kb_search(&self, req: &SearchRequest) -> Result<SearchResult, ServiceError> {
        search(&vectors(self.ws.as_ref())?, &self.embedders, req)
    }

    /// The folder of the embedding model `name`: a folder path, or a name the library lists as an
    /// embedding model.
    pub fn embedding_model(&self, name: &str) -> Result<PathBuf, ServiceError> {
        if Path::new(name).is_dir() {
            return Ok(PathBuf::from(name));
        }
        self.library_embedding_model(name)
    }

    /// The library's embedding model named `name`, by name only (what the server takes: a request
    /// never names a path).
    pub fn library_embedding_model(&self, name: &str) -> Result<PathBuf, ServiceError> {
        let ws = self.ws.as_ref().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        let cat = self.wait_catalog(std::time::Duration::from_secs(30)).ok();
        super::models::local(ws, cat.as_ref())
            .into_iter()
            .find(|m| m.format == "embedding" && m.name == name)
            .map(|m| m.path)
            .ok_or_else(|| ServiceError::NotFound(format!("There is no embedding model named {name:?}; the model list shows the embedding models, or give a folder's path.")))
    }

    /// Embeds `texts` with the model in `model` (kept loaded for the next call).
    pub fn embed(&self, model: &Path, prompt: Option<&str>, texts: &[String]) -> Result<Embeddings, ServiceError> {
        embed(&self.embedders, model, prompt, texts)
    }

    /// The collections, answered with `Event::Collections`.
    pub fn list_collections(&self, request: u64) {
        if let Some(r) = &self.remote {
            return r.list_collections(request);
        }
        let (dir, emit) = (vectors(self.ws.as_ref()), self.emit.clone());
        std::thread::spawn(move || emit(Event::Collections { request, result: dir.and_then(|d| list(&d)) }));
    }

    /// A search, answered with `Event::Searched`.
    pub fn search_collection(&self, request: u64, req: SearchRequest) {
        if let Some(r) = &self.remote {
            return r.search_collection(request, req);
        }
        let (dir, emit, embedders) = (vectors(self.ws.as_ref()), self.emit.clone(), self.embedders.clone());
        std::thread::spawn(move || emit(Event::Searched { request, result: dir.and_then(|d| search(&d, &embedders, &req)) }));
    }

    /// The sources for a chat message: the collection's best chunks for it (hybrid search),
    /// answered with `Event::Retrieved`.
    pub fn retrieve(&self, id: u64, collection: String, query: String) {
        let (dir, emit, embedders) = (vectors(self.ws.as_ref()), self.emit.clone(), self.embedders.clone());
        let req = SearchRequest { collection, query, mode: SearchMode::Hybrid, k: crate::engine::knowledge::ground::SOURCES, path: None, model: None };
        if let Some(r) = &self.remote {
            return r.retrieve(id, req);
        }
        std::thread::spawn(move || emit(Event::Retrieved { id, result: dir.and_then(|d| search(&d, &embedders, &req)) }));
    }

    /// `kb_ingest` for the workstation: a refusal arrives as `Event::Failure`.
    pub fn ingest_collection(&mut self, name: String, paths: Vec<String>) {
        if let Some(r) = &self.remote {
            return r.ingest_collection(name, paths);
        }
        if let Err(e) = self.kb_ingest(&name, &paths, None) {
            (self.emit)(Event::Failure(e.to_string()));
        }
    }

    /// Drops a collection off the caller's thread; the answer is the new list (`Event::Collections`
    /// for `request`), after a sentence saying what happened.
    pub fn drop_collection(&self, name: String, request: u64) {
        if let Some(r) = &self.remote {
            return r.drop_collection(name, request);
        }
        let (dir, emit) = (vectors(self.ws.as_ref()), self.emit.clone());
        let recorder = self.recorder.clone();
        std::thread::spawn(move || {
            let dir = match dir {
                Ok(d) => d,
                Err(e) => return emit(Event::Failure(e.to_string())),
            };
            match Collection::drop_collection(&dir, &name) {
                Ok(()) => emit(Event::Info(format!("Dropped collection {name}."))),
                Err(e) => emit(Event::Failure(e.to_string())),
            }
            let result = list(&dir);
            if let (Ok(l), Some(tx)) = (&result, recorder.lock().unwrap().as_ref()) {
                let _ = tx.send(DataRequest::Collections(l.clone()));
            }
            emit(Event::Collections { request, result });
        });
    }

    /// Ingests `paths` (files, folders, globs, `dataset:NAME.COLUMN`; recorded as the collection's
    /// sources) into a collection in a job; with no paths, reads every recorded source again (a
    /// sync). The paths (a dataset column in the catalog) and the model are checked before the job
    /// starts. `Event::Ingest` reports progress and
    /// `Event::Ingested` the outcome.
    pub fn kb_ingest(&mut self, name: &str, paths: &[String], model: Option<&Path>) -> Result<JobId, ServiceError> {
        let dir = vectors(self.ws.as_ref())?;
        let mut coll = Collection::open(&dir, name)?;
        let model_dir = model_for(&coll, model)?;
        let mut sources = coll.sources();
        let todo = if paths.is_empty() {
            if sources.is_empty() {
                return Err(ServiceError::Invalid(format!("Collection {name:?} has no sources yet; add some with `lathe kb add {name} PATH`.")));
            }
            sources.clone()
        } else {
            let new = paths.iter().map(|p| ingest::normalize_source(p)).collect::<Result<Vec<_>, _>>()?;
            for (table, column) in new.iter().filter_map(|s| ingest::dataset_source(s)) {
                let cat = self.wait_catalog(std::time::Duration::from_secs(60))?;
                ingest::Rows::each_row(&cat, table, column, &mut |_, _| false).map_err(KbError::Dataset)?;
            }
            for s in &new {
                if !sources.contains(s) {
                    sources.push(s.clone());
                }
            }
            coll.set_sources(&sources)?;
            new
        };
        let (emit, embedders) = (self.emit.clone(), self.embedders.clone());
        let recorder = self.recorder.clone();
        let catalog = if todo.iter().any(|s| s.starts_with(ingest::DATASET)) { self.catalog() } else { None };
        let title = name.to_string();
        Ok(self.jobs.spawn(JobKind::Ingest, title, move |ctx| {
            let job = ctx.id;
            let fail = |e: ServiceError| {
                emit(Event::Ingested { job, result: Err(e.clone()) });
                JobError::Failed(e.to_string())
            };
            ctx.progress(None, format!("loading {}", model_dir.display()));
            let embedder = embedders.get(&model_dir).map_err(|e| fail(e.into()))?;
            let catalog = catalog.map(|wait| wait(std::time::Duration::from_secs(60))).transpose().map_err(|e| fail(e.into()))?;
            crate::engine::alloc::keep_freed_memory();
            let cancel = ctx.cancel_flag();
            let mut on_progress = |p: &ingest::Progress| {
                ctx.progress(p.fraction(), progress_line(p));
                emit(Event::Ingest { job, progress: p.clone() });
            };
            let r = ingest::ingest(&mut coll, &embedder, &todo, catalog.as_ref().map(|c| c as &dyn ingest::Rows), &IngestOptions::default(), &cancel, &mut on_progress);
            crate::engine::alloc::release_free_memory();
            // The collection changed even when the ingest stopped part way.
            if let (Ok(l), Some(tx)) = (list(&dir), recorder.lock().unwrap().as_ref()) {
                let _ = tx.send(DataRequest::Collections(l));
            }
            let report = r.map_err(|e| fail(e.into()))?;
            let cancelled = report.cancelled;
            ctx.progress(Some(1.0), report_line(&report));
            emit(Event::Ingested { job, result: Ok(report) });
            if cancelled {
                Err(JobError::Cancelled)
            } else {
                Ok(())
            }
        }))
    }
}

/// An ingest's progress in words (the job line, the CLI's status line).
pub fn progress_line(p: &ingest::Progress) -> String {
    use ingest::Phase;
    match p.phase {
        Phase::Scanning => "reading and hashing files".into(),
        Phase::Indexing => format!("{} chunks written; updating the indices", p.chunks),
        Phase::Embedding => {
            let eta = p.eta_s.map(|s| format!(", {} left", crate::units::duration(s))).unwrap_or_default();
            format!("{}/{} files, {} chunks, {:.1} chunks/s{eta}", p.files_done, p.files_total, p.chunks, p.chunks_per_s)
        }
    }
}

/// What an ingest did, in one line.
pub fn report_line(r: &Report) -> String {
    let mut s = format!(
        "{} added, {} updated, {} unchanged, {} removed; {} chunks in {:.1} s",
        r.added, r.updated, r.unchanged, r.removed, r.chunks, r.seconds
    );
    if !r.skipped.is_empty() {
        s.push_str(&format!("; {} skipped", r.skipped.len()));
    }
    if r.cancelled {
        s.push_str("; cancelled (what was committed stays; sync again to finish)");
    }
    s
}
