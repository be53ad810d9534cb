//! The service: the one API of a workspace, called alike by the workstation (`app/`), the CLI and
//! (next) the HTTP server. It is the only owner of the workspace's resources: the catalog (the data
//! worker, this process's single DuckDB writer), jobs (each recorded in `lathe.jobs`, whoever
//! started it), the chat sides and their thread policy, the conversation saver, training control,
//! model lookup and listing, run checks and export naming. Calls return at once with a value or
//! an id; long work reports `Event`s (plain serde data) to the subscriber given at start. Nothing
//! here blocks its caller on the catalog: work that needs it waits for it on its own thread.

pub mod attached;
mod changes;
mod chat;
mod event;
pub mod knowledge;
pub mod models;
pub mod owner;
pub mod quant;
pub mod quant_report;
mod remote;
mod train;
mod workspace;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub use attached::Records;
pub use event::{Event, ServiceError, TrainPlan};
pub use knowledge::{SearchRequest, SearchResult};
pub use models::{export_path, run_export_name, ModelSource};
pub use train::{plan, TrainWhat};

/// The catalog for a one-shot CLI command in its own process (sql, data, runs, chats, eval, model
/// lookup): the one door through which the CLI reaches the workspace's database, so that `lathe
/// serve` can answer these for its clients instead. A catalog held by another process is `Busy`.
pub fn open_catalog(ws: &Workspace) -> Result<Catalog, ServiceError> {
    Catalog::open_workspace(ws).map_err(|e| match (&e, owner::Owner::find(ws)) {
        // The holder is the workspace's server: say so, and how to get the workspace back.
        (DataError::Locked { .. }, Some(o)) => ServiceError::Busy(format!(
            "lathe serve (pid {}, http://{}) owns this workspace and this command does not go through it yet; stop it with `kill -TERM {}` and run the command again.",
            o.pid, o.address, o.pid
        )),
        _ => ServiceError::from(e),
    })
}

use crate::engine::data::chats::ChatRecord;
use crate::engine::data::import::complete_path;
use crate::engine::data::worker::{DataRequest, DataWorker};
use crate::engine::data::{Catalog, DataError, ImportOptions};
use crate::engine::export::gguf::{self, Quant};
use crate::engine::infer::llama::Options as LoadOptions;
use crate::engine::jobs::{self, JobError, JobEvent, JobId, JobInfo, JobKind, Jobs};
use crate::engine::sysmon::SysMonitor;
use crate::engine::types::{Message, Sampling};
use crate::engine::workspace::Workspace;

/// Where events go: the subscriber's callback, called from the service's threads.
pub type Emit = Arc<dyn Fn(Event) + Send + Sync>;

/// Waits on the caller's thread (never a UI's) for a connection to the catalog, up to the limit.
pub(crate) type CatalogWaiter = Box<dyn FnOnce(Duration) -> Result<Catalog, DataError> + Send>;

/// How a service starts.
#[derive(Clone, Default)]
pub struct Settings {
    /// How often the system monitor samples (None: no monitor; the CLI has no use for it).
    pub sample_interval: Option<Duration>,
    /// How chat models are loaded (context, threads, batch).
    pub chat: LoadOptions,
    /// Answers for API clients, several at once (`lathe serve`): the slot engine's settings.
    pub serving: Option<crate::engine::infer::slots::Config>,
    /// When a `lathe serve` owns the workspace, work through it (the workstation) instead of
    /// opening the catalog here.
    pub attach: bool,
}

pub struct Service {
    // Jobs first: their sink holds a way to the data worker, which must be gone before the worker
    // is dropped (it joins its thread once every sender is gone).
    jobs: Jobs,
    recorder: Arc<Mutex<Option<mpsc::Sender<DataRequest>>>>,
    ws: Option<Workspace>,
    emit: Emit,
    chat: chat::ChatSides,
    training: train::Training,
    embedders: knowledge::Embedders,
    serving: Option<crate::engine::infer::slots::Slots>,
    _sysmon: Option<SysMonitor>,
    data: Option<DataWorker>,
    /// The server that owns the workspace, when this service works through it.
    remote: Option<remote::Remote>,
}

impl Service {
    /// Opens the workspace (the catalog opens on the data worker's thread) and starts the engines.
    /// Without a workspace (tests, benchmarks) only jobs and chat run.
    pub fn start(ws: Option<&Workspace>, opts: Settings, emit: impl Fn(Event) + Send + Sync + 'static) -> Service {
        let emit: Emit = Arc::new(emit);
        let attached = ws.filter(|_| opts.attach).and_then(attached::Attached::find);
        let data = ws.filter(|_| attached.is_none()).map(|ws| {
            let emit = emit.clone();
            DataWorker::spawn(ws.clone(), move |ev| emit(Event::Data(ev)))
        });
        let recorder = Arc::new(Mutex::new(data.as_ref().and_then(|d| d.requests())));
        let jobs = Jobs::new(job_sink(recorder.clone(), emit.clone()));
        let sysmon = ws.zip(opts.sample_interval).map(|(ws, every)| {
            let emit = emit.clone();
            SysMonitor::spawn(ws.root.clone(), every, move |s| {
                emit(Event::Sys(s));
                true
            })
        });
        let mut chat = chat::ChatSides::start(&emit);
        chat.options = opts.chat;
        let serving = opts.serving.map(crate::engine::infer::slots::Slots::start);
        let remote = attached.map(|a| remote::Remote::start(a, emit.clone()));
        Service { jobs, recorder, ws: ws.cloned(), emit, chat, training: train::Training::default(), embedders: Default::default(), serving, _sysmon: sysmon, data, remote }
    }

    /// The address of the server this service works through, if it does.
    pub fn attached_to(&self) -> Option<String> {
        self.remote.as_ref().map(|r| r.address())
    }

    /// Hands the workspace to a `lathe serve` started in the background (on 127.0.0.1:8080, or a
    /// free port when that is taken) and works through it from then on: its jobs outlive this
    /// process. The catalog closes here first (the server is its one writer); `Event::Serving`
    /// says how it went, and `reattach` follows either way. Refused while a job runs here.
    pub fn start_serving(&mut self) {
        let Some(ws) = self.ws.clone() else { return };
        if self.remote.is_some() {
            return;
        }
        if self.jobs.running() > 0 || self.training.busy() {
            return (self.emit)(Event::Serving(Err("A job is running here; let it finish (or cancel it) before handing the workspace to lathe serve.".into())));
        }
        *self.recorder.lock().unwrap() = None;
        let (data, emit) = (self.data.take(), self.emit.clone());
        std::thread::spawn(move || {
            // Dropping the worker closes the catalog (its thread finishes what it runs, then
            // checkpoints): off the caller's thread, and before the server opens it.
            drop(data);
            let args = |listen: &str| ["serve", "--listen", listen].map(std::ffi::OsString::from);
            let started = owner::spawn_server(&ws, &args("127.0.0.1:8080")).or_else(|e| match e.contains("cannot listen") {
                true => owner::spawn_server(&ws, &args("127.0.0.1:0")),
                false => Err(e),
            });
            emit(Event::Serving(started.map(|o| o.address.to_string())));
        });
    }

    /// Stops the server this service works through (SIGTERM: it drains and exits); its events
    /// stream ends and `Event::Detached` follows once it has gone.
    pub fn stop_serving(&self) {
        if let (Some(r), Some(ws)) = (&self.remote, &self.ws) {
            if let Some(o) = owner::Owner::find(ws).filter(|o| o.address.to_string() == r.address()) {
                // SAFETY: a plain signal to the server this workspace records as its owner.
                unsafe { libc::kill(o.pid as libc::pid_t, libc::SIGTERM) };
            }
        }
    }

    /// After the server it worked through has gone (`Event::Detached`): through the workspace's
    /// new owner if one runs already, else with the catalog opened here again.
    pub fn reattach(&mut self) {
        let Some(ws) = self.ws.clone() else { return };
        if self.remote.is_none() && self.data.is_some() {
            return;
        }
        self.remote = None;
        match attached::Attached::find(&ws) {
            Some(a) => self.remote = Some(remote::Remote::start(a, self.emit.clone())),
            None => {
                let emit = self.emit.clone();
                let data = DataWorker::spawn(ws, move |ev| emit(Event::Data(ev)));
                *self.recorder.lock().unwrap() = data.requests();
                self.data = Some(data);
            }
        }
    }

    /// The slot engine that answers API clients (a handle: clones reach the same engine), when
    /// the service was started with `Settings::serving`.
    pub fn serving(&self) -> Option<crate::engine::infer::slots::Slots> {
        self.serving.clone()
    }

    /// A connection to the catalog for a headless caller (the CLI), once it is open: blocks up to
    /// `max`. Never call it from a UI thread.
    pub fn wait_catalog(&self, max: Duration) -> Result<Catalog, ServiceError> {
        let wait = self.catalog().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        wait(max).map_err(ServiceError::from)
    }

    /// A waiter for a catalog connection, for work on its own thread; None without a workspace.
    fn catalog(&self) -> Option<CatalogWaiter> {
        self.data.as_ref().map(|d| Box::new(d.catalog_waiter()) as CatalogWaiter)
    }

    /// Runs `work` on a thread of its own with a catalog connection, or reports why there is none.
    fn with_catalog(&self, work: impl FnOnce(Catalog) + Send + 'static) {
        let Some(wait) = self.catalog() else { return };
        let emit = self.emit.clone();
        std::thread::spawn(move || match wait(Duration::from_secs(60)) {
            Ok(cat) => work(cat),
            Err(e) => emit(Event::Failure(e.to_string())),
        });
    }

    fn send_data(&self, req: DataRequest) {
        if let Some(d) = &self.data {
            d.send(req);
        }
    }

    // Data: queries on the data worker, imports and exports as jobs.

    pub fn query(&self, id: u64, sql: String) {
        if let Some(r) = &self.remote {
            return r.query(id, sql);
        }
        self.send_data(DataRequest::Query { id, sql });
    }
    pub fn page(&self, id: u64, sql: String, offset: u64) {
        if let Some(r) = &self.remote {
            return r.page(id, sql, offset);
        }
        self.send_data(DataRequest::Page { id, sql, offset });
    }
    pub fn cancel_query(&self) {
        if let Some(d) = &self.data {
            d.cancel();
        }
    }
    pub fn refresh_datasets(&self) {
        if let Some(r) = &self.remote {
            return r.refresh_datasets();
        }
        self.send_data(DataRequest::ListDatasets);
    }
    pub fn preview_views(&self) {
        if let Some(r) = &self.remote {
            return r.preview_views();
        }
        self.send_data(DataRequest::PreviewViews);
    }

    /// Completions of a typed path (a listing can be slow: a big folder, a network mount).
    pub fn complete_path(&self, typed: String) {
        let emit = self.emit.clone();
        std::thread::spawn(move || {
            let list = complete_path(&typed, 200);
            emit(Event::PathCompletions { typed, list })
        });
    }

    /// Imports a file, glob or folder as a dataset in a job. A name that exists fails the job
    /// with `JobStatus::Exists` unless `replace`.
    pub fn import(&mut self, path: String, name: Option<String>, replace: bool) -> Option<JobId> {
        if let Some(r) = &self.remote {
            r.import(path, name, replace);
            return None;
        }
        let wait = self.catalog()?;
        let title = file_name(&path);
        Some(self.jobs.spawn(JobKind::Import, title, move |ctx| {
            let cat = wait(Duration::from_secs(60)).map_err(|e| JobError::Failed(e.to_string()))?;
            ctx.progress(None, format!("reading {path}"));
            let d = cat.import(Path::new(&path), &ImportOptions { name, replace }).map_err(|e| match e {
                DataError::Exists(m) => JobError::Exists(m),
                e => JobError::Failed(e.to_string()),
            })?;
            ctx.progress(Some(1.0), format!("Imported {}: {} rows, {} columns.", d.name, d.rows, d.columns));
            Ok(())
        }))
    }

    // Jobs.

    /// Keeps `threads` cores busy (`lathe bench ui` checks the UI stays responsive beside it).
    pub fn stress(&mut self, threads: usize, seconds: Option<u64>) -> JobId {
        self.jobs.spawn(JobKind::Stress, format!("{threads} busy threads"), move |ctx| jobs::stress(ctx, threads, seconds.map(Duration::from_secs)))
    }
    pub fn cancel_job(&self, id: JobId) {
        if let Some(r) = &self.remote {
            return r.cancel_job(id);
        }
        // A paused run must wake to see its cancel.
        self.training.set_paused(false);
        self.jobs.cancel(id);
    }
    pub fn cancel_all_jobs(&self) {
        self.training.set_paused(false);
        self.jobs.cancel_all();
    }

    // Training.

    /// Starts a run (a spec, the demo, a resume) in a job; None without a workspace.
    pub fn train(&mut self, what: TrainWhat) -> Option<JobId> {
        if let Some(r) = &self.remote {
            r.train(what);
            return None;
        }
        let (ws, wait) = (self.ws.clone()?, self.catalog()?);
        Some(self.training.spawn(&mut self.jobs, ws, wait, self.emit.clone(), what))
    }
    pub fn pause_training(&self, paused: bool) {
        if let Some(r) = &self.remote {
            return r.pause_training(paused);
        }
        self.training.set_paused(paused);
    }
    /// Checks a run before it starts, off the caller's thread (`Event::TrainChecked`).
    pub fn check_training(&self, spec: crate::engine::train::spec::RunSpec) {
        if let Some(r) = &self.remote {
            return r.check_training(spec);
        }
        let emit = self.emit.clone();
        self.with_catalog(move |cat| emit(Event::TrainChecked(plan(&cat, &spec))));
    }

    // Runs.

    pub fn list_runs(&self, request: u64) {
        if let Some(r) = &self.remote {
            return r.list_runs(request);
        }
        let emit = self.emit.clone();
        self.with_catalog(move |cat| emit(Event::Runs { request, result: cat.runs().map_err(ServiceError::from) }));
    }
    pub fn run_metrics(&self, id: String, overlay: bool) {
        if let Some(r) = &self.remote {
            return r.run_metrics(id, overlay);
        }
        let emit = self.emit.clone();
        self.with_catalog(move |cat| match cat.metrics(&id) {
            Ok(metrics) => emit(Event::RunMetrics { id, overlay, metrics }),
            Err(e) => emit(Event::Failure(e.to_string())),
        });
    }

    // Models: the library and GGUF exports.

    /// Scans the model library (the workspace's models/, added paths, the Hugging Face cache,
    /// Ollama's store and server). Without the catalog yet (at start), added paths are left out:
    /// the next listing has them.
    pub fn list_models(&self, request: u64) {
        if let Some(r) = &self.remote {
            return r.list_models(request);
        }
        let Some(ws) = self.ws.clone() else { return };
        let wait = self.catalog();
        let emit = self.emit.clone();
        std::thread::spawn(move || {
            let cat = wait.and_then(|w| w(Duration::ZERO).ok());
            emit(Event::Models { request, result: Ok(models::list(&ws, cat.as_ref())) });
        });
    }

    /// `list_models` for a headless caller (the server's threads): blocks up to 10 s for the
    /// catalog (its added paths).
    pub fn models(&self) -> Vec<crate::engine::infer::library::ModelEntry> {
        let Some(ws) = &self.ws else { return Vec::new() };
        let cat = self.wait_catalog(Duration::from_secs(10)).ok();
        models::list(ws, cat.as_ref())
    }

    /// What answers for the library's model named `name` over the API: a GGUF file, a model of
    /// the Ollama server the library lists (`ollama:NAME`, at this machine's OLLAMA_HOST) or of an
    /// OpenAI-compatible server the user added (`SERVER/MODEL`): a request never names a host or a
    /// path. A Hugging Face folder is said to need an export.
    pub fn chat_model(&self, name: &str) -> Result<crate::engine::types::ModelRef, ServiceError> {
        use crate::engine::types::{ModelRef, Remote};
        if let Some(model) = name.strip_prefix("ollama:").filter(|m| !m.is_empty() && !m.contains('@')) {
            return match Remote::parse(&format!("ollama:{model}")) {
                Some(Ok(r @ Remote::Ollama { .. })) => Ok(ModelRef::Server(r)),
                _ => Err(ServiceError::NotFound(format!("There is no model named {name:?}; GET /v1/models lists them."))),
            };
        }
        // The disks only: a request does not wait on an Ollama server being asked for its list.
        let ws = self.ws.as_ref().ok_or_else(|| ServiceError::Invalid("There is no workspace; pass --home DIR.".into()))?;
        let cat = self.wait_catalog(Duration::from_secs(10)).ok();
        if let Some(found) = models::server_model(cat.as_ref(), name) {
            return Ok(found);
        }
        let found = models::local(ws, cat.as_ref()).into_iter().find(|m| m.name == name);
        match found {
            Some(m) if m.format == "gguf" => m.problem.map_or(Ok(ModelRef::File(m.path)), |p| Err(ServiceError::Invalid(p))),
            Some(m) if m.format == "embedding" => Err(ServiceError::Invalid(format!("{name} is an embedding model; use it with /v1/embeddings."))),
            Some(_) => Err(ServiceError::Invalid(format!("{name} is a Hugging Face folder; export it to GGUF first (lathe export {name})."))),
            None => Err(ServiceError::NotFound(format!("There is no model named {name:?}; GET /v1/models lists them."))),
        }
    }

    /// Exports a run (its base with its adapter merged, or its trained weights) or a Hugging Face
    /// folder as GGUF, in a job; `Event::Exported` says what was written.
    /// With `imatrix`, the quantization is weighed by an importance matrix read from a file or
    /// computed from the user's data (then saved beside the export as NAME.imatrix.gguf).
    pub fn export(&mut self, source: ModelSource, out: PathBuf, quant: Quant, imatrix: Option<quant::Calibration>) -> Option<JobId> {
        if let Some(r) = &self.remote {
            r.export(source, quant, imatrix);
            return None;
        }
        let title = file_name(&out.display().to_string());
        // A run's weights and a view's examples are read from the catalog, in the job.
        let wait = match (&source, &imatrix) {
            (ModelSource::Run(_), _) | (_, Some(quant::Calibration::View { .. })) => Some(self.catalog()?),
            _ => None,
        };
        let emit = self.emit.clone();
        Some(self.jobs.spawn(JobKind::Export, title, move |ctx| {
            let cat = match wait {
                Some(wait) => Some(wait(Duration::from_secs(60)).map_err(|e| JobError::Failed(e.to_string()))?),
                None => None,
            };
            let name = source.name();
            let (model, adapter, about) = match (source, &cat) {
                (ModelSource::Run(id), Some(cat)) => {
                    let run = cat.run(&id).map_err(|_| JobError::Failed(format!("{id:?} is neither a model folder nor a run id; `lathe runs list` shows the runs.")))?;
                    let (model, adapter) = run.weights().map_err(JobError::Failed)?;
                    (model, adapter, Some(models::provenance(cat, &run)))
                }
                (ModelSource::Run(_), None) => return Err(JobError::Failed("Exporting a run needs the workspace's catalog.".into())),
                (ModelSource::Folder(dir), _) => (dir, None, None),
            };
            let matrix = match &imatrix {
                None => None,
                Some(calibration) => {
                    let m = quant::importance_matrix(cat.as_ref(), &model, adapter.as_deref(), &name, calibration, &mut |msg| {
                        if !msg.is_empty() {
                            ctx.progress(None, msg);
                        }
                        !ctx.is_cancelled()
                    })
                    .map_err(|e| if ctx.is_cancelled() { JobError::Cancelled } else { JobError::Failed(e) })?;
                    if calibration.computed() {
                        let keep = quant::beside(&out);
                        m.save(&keep).map_err(JobError::Failed)?;
                        ctx.progress(None, format!("importance matrix over {} tokens saved to {}", m.tokens(), keep.display()));
                    }
                    Some(m)
                }
            };
            let e = gguf::export_with(&model, adapter.as_deref(), &out, quant, matrix.as_ref(), about.as_ref(), &mut |phase| ctx.progress(None, phase.to_string())).map_err(JobError::Failed)?;
            ctx.progress(Some(1.0), format!("Wrote {} ({} tensors).", e.path.display(), e.tensors));
            emit(Event::Exported(e));
            Ok(())
        }))
    }

    /// Makes and measures quantized files of a run or a folder on held-out data, in a job
    /// (`quant_report::run`); `Event::QuantReported` carries the figures, which are also in
    /// lathe.quant_evals as each file is measured.
    pub fn quant_report(&mut self, spec: quant_report::ReportSpec) -> Option<JobId> {
        if let Some(r) = &self.remote {
            r.quant_report(spec);
            return None;
        }
        let models_dir = self.ws.as_ref()?.models_dir();
        let wait = self.catalog()?;
        let emit = self.emit.clone();
        Some(self.jobs.spawn(JobKind::Quantize, spec.source.name(), move |ctx| {
            let cat = wait(Duration::from_secs(60)).map_err(|e| JobError::Failed(e.to_string()))?;
            // An empty message only asks whether to go on.
            let report = quant_report::run(&cat, &models_dir, &spec, &mut |fraction, msg| {
                if !msg.is_empty() {
                    ctx.progress(fraction, msg);
                }
                !ctx.is_cancelled()
            });
            match report {
                Ok(r) => {
                    emit(Event::QuantReported(r));
                    Ok(())
                }
                Err(quant_report::ReportError::Cancelled) => Err(JobError::Cancelled),
                Err(quant_report::ReportError::Failed(e)) => Err(JobError::Failed(e)),
            }
        }))
    }

    pub fn list_quant_evals(&self, request: u64) {
        if let Some(r) = &self.remote {
            return r.list_quant_evals(request);
        }
        let emit = self.emit.clone();
        self.with_catalog(move |cat| emit(Event::QuantEvals { request, result: cat.quant_evals().map_err(ServiceError::from) }));
    }

    // Chat: side 0 is the conversation's model, side 1 the one compared with it.

    pub fn load_model(&mut self, side: usize, name: String) {
        if let Some(r) = &self.remote {
            // A model of the library (by name or path) is answered by the server; any other
            // file or server loads here.
            let find = r.chat_model(name);
            let busy = self.training.busy();
            return self.chat.load_found(side, busy, &self.emit, find);
        }
        let (busy, ws, wait) = (self.training.busy(), self.ws.clone(), self.catalog());
        self.chat.load(side, name, busy, ws, wait, &self.emit);
    }
    pub fn generate(&mut self, side: usize, id: u64, messages: Vec<Message>, sampling: Sampling) {
        let busy = self.training.busy();
        self.chat.generate(side, id, messages, sampling, busy);
    }
    pub fn stop_generation(&self) {
        self.chat.stop();
    }
    pub fn close_compare(&mut self) {
        let busy = self.training.busy();
        self.chat.close_compare(busy);
    }
    /// Saves a conversation (in the order asked for, off the caller's thread).
    pub fn save_chat(&mut self, record: ChatRecord) {
        if let Some(r) = &self.remote {
            return r.save_chat(record);
        }
        let wait = self.catalog();
        self.chat.save(record, wait, &self.emit);
    }
    pub fn list_chats(&self, request: u64) {
        if let Some(r) = &self.remote {
            return r.list_chats(request);
        }
        let emit = self.emit.clone();
        self.with_catalog(move |cat| emit(Event::Chats { request, result: cat.chats().map_err(ServiceError::from) }));
    }
    pub fn open_chat(&self, id: String) {
        if let Some(r) = &self.remote {
            return r.open_chat(id);
        }
        let emit = self.emit.clone();
        self.with_catalog(move |cat| emit(Event::ChatOpened(cat.chat(&id).map_err(ServiceError::from))));
    }
    /// Writes a conversation as Markdown and JSON into `dir`.
    pub fn export_chat(&self, record: ChatRecord, dir: PathBuf) {
        let emit = self.emit.clone();
        std::thread::spawn(move || {
            emit(match crate::engine::data::chats::write_exports(&record, &dir) {
                Ok((md, _)) => Event::Info(format!("Wrote {} and its .json beside it.", md.display())),
                Err(e) => Event::Failure(e),
            })
        });
    }

    /// At exit: every conversation save asked for lands, running jobs are asked to stop, and the
    /// job records queued so far reach the catalog.
    pub fn shutdown(mut self) {
        self.chat.finish_saves();
        self.jobs.cancel_all();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Job threads may outlive the service; they must not keep the data worker's channel open.
        *self.recorder.lock().unwrap() = None;
    }
}

/// The jobs' sink: each event to the subscriber, and each start and end to `lathe.jobs` (in the
/// data worker's order, so a record queued before the service closes is written).
fn job_sink(recorder: Arc<Mutex<Option<mpsc::Sender<DataRequest>>>>, emit: Emit) -> jobs::Sink {
    let known: Mutex<Vec<JobInfo>> = Mutex::new(Vec::new());
    Arc::new(move |ev: JobEvent| {
        let mut known = known.lock().unwrap();
        JobInfo::apply(&mut known, &ev);
        let ended = match &ev {
            JobEvent::Started { id, .. } => Some((*id, false)),
            JobEvent::Finished { id, .. } => Some((*id, true)),
            JobEvent::Progress { .. } => None,
        };
        if let Some((id, finished)) = ended {
            if let (Some(j), Some(tx)) = (known.iter().find(|j| j.id == id), recorder.lock().unwrap().as_ref()) {
                let _ = tx.send(DataRequest::RecordJob(j.clone()));
            }
            if finished {
                known.retain(|j| j.id != id);
            }
        }
        drop(known);
        emit(Event::Job(ev));
    })
}

fn file_name(path: &str) -> String {
    Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}
