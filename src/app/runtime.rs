//! The event loop: terminal input, engine events and signals feed one reducer; commands go out to
//! the engines; the screen is drawn from state only when something changed, at a capped rate,
//! after every queued message has been reduced.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyEventKind};
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::Terminal;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::action::{Action, Command};
use super::keymap::key_press;
use super::state::App;
use crate::engine::jobs::{self, JobError, JobKind, Jobs};
use crate::engine::data::import::complete_path;
use crate::engine::data::worker::{DataEvent, DataRequest, DataWorker};
use crate::engine::data::{Catalog, ExportSource, ImportOptions};
use crate::engine::sysmon::SysMonitor;
use crate::engine::train::demo;
use crate::engine::train::trainer::{self, Control, RunSpec, TrainEvent};
use crate::engine::workspace::Workspace;

/// The engines the TUI drives, each owning its resources on its own thread(s).
pub struct Engines {
    pub jobs: Jobs,
    ws: Option<Workspace>,
    train_pause: Arc<std::sync::atomic::AtomicBool>,
    tx: UnboundedSender<Action>,
    _sysmon: Option<SysMonitor>,
    pub data: Option<DataWorker>,
    chat: crate::engine::infer::worker::ChatWorker,
    /// The second model of a comparison.
    chat_b: crate::engine::infer::worker::ChatWorker,
    /// How chat models are loaded (context, threads, batch: `lathe chat --ctx/--threads`).
    pub chat_options: crate::engine::infer::llama::Options,
    /// Whether a second model is open: the two then split the threads.
    comparing: bool,
    /// Whether a training run is computing (set by its job): chat then takes half the threads
    /// it would, since llama.cpp's threads spin-wait for each other and lose to a busy core.
    training: Arc<std::sync::atomic::AtomicBool>,
    /// The thread counts each chat worker was last given.
    threads_now: [i32; 2],
    /// Saves conversations in the order they were asked for, on a thread of its own.
    chat_saver: Option<(std::sync::mpsc::Sender<crate::engine::data::chats::ChatRecord>, std::thread::JoinHandle<()>)>,
}

impl Engines {
    /// Starts the engines; their events arrive as Actions on `tx`.
    /// Without a workspace (tests, benchmarks) only the job runner starts.
    pub fn start(tx: UnboundedSender<Action>, workspace: Option<(&Workspace, Duration)>) -> Engines {
        let job_tx = tx.clone();
        let jobs = Jobs::new(Arc::new(move |ev| {
            let _ = job_tx.send(Action::Job(ev));
        }));
        let data = workspace.map(|(ws, _)| {
            let tx = tx.clone();
            DataWorker::spawn(ws.clone(), move |ev| {
                let _ = tx.send(Action::Data(ev));
            })
        });
        let sys_tx = tx.clone();
        let sysmon = workspace.map(|(ws, every)| {
            SysMonitor::spawn(ws.root.clone(), every, move |s| sys_tx.send(Action::Sys(s)).is_ok())
        });
        let chat_tx = tx.clone();
        let chat = crate::engine::infer::worker::ChatWorker::spawn(move |ev| {
            let _ = chat_tx.send(Action::Chat(ev));
        });
        let chat_tx = tx.clone();
        let chat_b = crate::engine::infer::worker::ChatWorker::spawn(move |ev| {
            let _ = chat_tx.send(Action::ChatCompare(ev));
        });
        Engines {
            jobs,
            ws: workspace.map(|(ws, _)| ws.clone()),
            train_pause: Arc::default(),
            tx,
            _sysmon: sysmon,
            data,
            chat,
            chat_b,
            chat_options: Default::default(),
            comparing: false,
            training: Arc::default(),
            threads_now: [0; 2],
            chat_saver: None,
        }
    }

    /// The threads for one chat side now: all of `chat_options`', halved when two models answer at
    /// once, halved again while a training run computes. With every core each, two 1B models on 2
    /// cores did not reach a first token in 30 s; beside a training run, generation ran at 25
    /// tok/s on 2 threads and 38 on 1.
    fn side_threads(&self) -> i32 {
        let mut t = self.chat_options.threads;
        if self.comparing {
            t /= 2;
        }
        let paused = self.train_pause.load(std::sync::atomic::Ordering::Relaxed);
        if self.training.load(std::sync::atomic::Ordering::Relaxed) && !paused {
            t /= 2;
        }
        t.max(1)
    }

    /// Saves a conversation: in order (a message is saved when sent, then with its answer) and
    /// off the UI thread.
    fn save_chat(&mut self, record: crate::engine::data::chats::ChatRecord) {
        if self.chat_saver.is_none() {
            let Some(wait_catalog) = self.data.as_ref().map(|d| d.catalog_waiter()) else { return };
            let tx = self.tx.clone();
            let (saves, rx) = std::sync::mpsc::channel::<crate::engine::data::chats::ChatRecord>();
            let handle = std::thread::spawn(move || {
                // A conversation begun as the workstation opens is saved once the catalog is.
                let cat = match wait_catalog(Duration::from_secs(60)) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Action::Failure(format!("Conversations cannot be saved: {e}.")));
                        return;
                    }
                };
                for r in rx {
                    if let Err(e) = cat.save_chat(&r) {
                        let _ = tx.send(Action::Failure(format!("The conversation could not be saved: {e}")));
                    }
                }
            });
            self.chat_saver = Some((saves, handle));
        }
        if let Some((saves, _)) = &self.chat_saver {
            let _ = saves.send(record);
        }
    }

    /// Waits for the conversation saves asked for so far (at exit).
    pub fn finish_saves(&mut self) {
        if let Some((saves, handle)) = self.chat_saver.take() {
            drop(saves);
            let _ = handle.join();
        }
    }

    /// Loads a model on one side (0: the first, 1: the comparison) with the threads for now. A
    /// name that is not a file or a server (e.g. `tiny:latest` from the Ollama store) is looked up
    /// in the model library first, on a thread of its own.
    fn load_side(&mut self, side: usize, path: String) {
        let opts = crate::engine::infer::llama::Options { threads: self.side_threads(), ..self.chat_options.clone() };
        self.threads_now[side] = opts.threads;
        let worker = if side == 0 { self.chat.clone() } else { self.chat_b.clone() };
        let plain = Path::new(&path).is_file() || crate::engine::infer::remote::parse_spec(&path).is_some();
        let Some(ws) = self.ws.clone().filter(|_| !plain) else {
            worker.load(path.into(), opts);
            return;
        };
        let cat = self.data.as_ref().and_then(|d| d.job_catalog()).and_then(|c| c.ok());
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let added = cat.map(|c| c.model_paths().unwrap_or_default()).unwrap_or_default();
            match crate::engine::infer::library::resolve_name(&ws.models_dir(), added, &path) {
                Ok(found) => worker.load(found, opts),
                Err(e) => {
                    // As with a file that fails to load, the side is left without a model.
                    worker.unload();
                    let ev = crate::engine::infer::worker::ChatEvent::LoadFailed(e);
                    let _ = tx.send(if side == 0 { Action::Chat(ev) } else { Action::ChatCompare(ev) });
                }
            }
        });
    }

    /// Gives a side the threads for now, if that changed since it was last told (a new context:
    /// its next answer decodes the conversation again).
    fn retune_side(&mut self, side: usize) {
        let t = self.side_threads();
        if self.threads_now[side] != t {
            self.threads_now[side] = t;
            let worker = if side == 0 { &self.chat } else { &self.chat_b };
            worker.set_threads(t);
        }
    }

    /// A catalog connection for a job, or a notice saying why there is none.
    fn job_catalog(&self) -> Option<Catalog> {
        match self.data.as_ref().and_then(|d| d.job_catalog()) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                let _ = self.tx.send(Action::Data(DataEvent::Failed(e.to_string())));
                None
            }
            None => {
                let _ = self.tx.send(Action::Data(DataEvent::Failed("The catalog is not open yet; try again in a moment.".into())));
                None
            }
        }
    }

    fn send_data(&self, req: DataRequest) {
        if let Some(d) = &self.data {
            d.send(req);
        }
    }

    pub fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::RunQuery { id, sql } => self.send_data(DataRequest::Query { id, sql }),
            Command::FetchPage { id, sql, offset } => self.send_data(DataRequest::Page { id, sql, offset }),
            Command::RecordJob(j) => self.send_data(DataRequest::RecordJob(j)),
            Command::RefreshDatasets => self.send_data(DataRequest::ListDatasets),
            Command::PreviewViews => self.send_data(DataRequest::PreviewViews),
            Command::CompletePath(typed) => {
                // A listing can be slow (a big folder, a network mount): off the UI thread.
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(Action::PathCompletions(complete_path(&typed, 200)));
                });
            }
            Command::ImportDataset { path, replace } => {
                let Some(cat) = self.job_catalog() else { return };
                let title = format!("import {}", Path::new(&path).file_name().map(|f| f.to_string_lossy()).unwrap_or_default());
                self.jobs.spawn(JobKind::Import, title, move |ctx| {
                    ctx.progress(None, format!("reading {path}"));
                    let opts = ImportOptions { name: None, replace };
                    let d = cat.import(Path::new(&path), &opts).map_err(|e| JobError::Failed(e.to_string()))?;
                    ctx.progress(Some(1.0), format!("Imported {}: {} rows, {} columns.", d.name, d.rows, d.columns));
                    Ok(())
                });
            }
            Command::ExportResult { sql, path } => {
                let Some(cat) = self.job_catalog() else { return };
                let title = format!("export {}", Path::new(&path).file_name().map(|f| f.to_string_lossy()).unwrap_or_default());
                self.jobs.spawn(JobKind::Export, title, move |ctx| {
                    let rows = cat
                        .export(&ExportSource::Query(sql), Path::new(&path))
                        .map_err(|e| JobError::Failed(e.to_string()))?;
                    ctx.progress(Some(1.0), format!("Wrote {rows} rows to {path}."));
                    Ok(())
                });
            }
            Command::CancelQuery => {
                if let Some(d) = &self.data {
                    d.cancel();
                }
            }
            Command::StartStress { threads, seconds } => {
                self.jobs.spawn(JobKind::Stress, format!("{threads} busy threads"), move |ctx| {
                    jobs::stress(ctx, threads, seconds.map(Duration::from_secs))
                });
            }
            Command::CancelJob(id) => {
                // A paused run must wake to see its cancel.
                self.train_pause.store(false, std::sync::atomic::Ordering::Relaxed);
                self.jobs.cancel(id)
            }
            Command::CancelAllJobs => {
                self.train_pause.store(false, std::sync::atomic::Ordering::Relaxed);
                self.jobs.cancel_all()
            }
            Command::StartTraining(spec) => self.train(TrainWhat::Spec(spec)),
            Command::StartDemo => self.train(TrainWhat::Demo),
            Command::ResumeRun(id) => self.train(TrainWhat::Resume(id)),
            Command::PauseTraining(p) => self.train_pause.store(p, std::sync::atomic::Ordering::Relaxed),
            Command::CheckTraining(spec) => {
                let Some(cat) = self.job_catalog() else { return };
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(Action::FormChecked(check_training(&cat, &spec)));
                });
            }
            Command::RefreshRuns => {
                let Some(cat) = self.job_catalog() else { return };
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(Action::Runs(cat.runs().map_err(|e| e.to_string())));
                });
            }
            Command::LoadChatModel(path) => self.load_side(0, path),
            Command::Generate { id, messages, sampling } => {
                self.retune_side(0);
                self.chat.generate(id, messages, sampling);
            }
            Command::StopGeneration => {
                self.chat.stop();
                self.chat_b.stop();
            }
            Command::LoadCompareModel(path) => {
                self.comparing = true;
                self.retune_side(0);
                self.load_side(1, path);
            }
            Command::CloseCompare => {
                self.comparing = false;
                self.chat_b.stop();
                self.chat_b.unload();
                self.retune_side(0);
            }
            Command::GenerateCompare { id, messages, sampling } => {
                self.retune_side(1);
                self.chat_b.generate(id, messages, sampling);
            }
            Command::RefreshModels => {
                let Some(ws) = self.ws.clone() else { return };
                // Quietly without the catalog while it is still opening (at start): the scan on
                // focusing the Models pane picks up the added paths.
                let cat = self.data.as_ref().and_then(|d| d.job_catalog()).and_then(|c| c.ok());
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let added = cat.map(|c| c.model_paths().unwrap_or_default()).unwrap_or_default();
                    let roots = crate::engine::infer::library::Roots::standard(&ws.models_dir(), added);
                    let mut list = crate::engine::infer::library::scan(&roots);
                    list.extend(crate::engine::infer::library::ollama_server());
                    let _ = tx.send(Action::Models(Ok(list)));
                });
            }
            Command::SaveChat(record) => self.save_chat(record),
            Command::ListChats => {
                let Some(cat) = self.job_catalog() else { return };
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(Action::ChatList(cat.chats().map_err(|e| e.to_string())));
                });
            }
            Command::LoadChat(id) => {
                let Some(cat) = self.job_catalog() else { return };
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(Action::ChatOpened(cat.chat(&id).map_err(|e| e.to_string())));
                });
            }
            Command::ExportChat { record, dir } => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(match crate::engine::data::chats::write_exports(&record, Path::new(&dir)) {
                        Ok((md, _)) => Action::Info(format!("Wrote {} and its .json beside it.", md.display())),
                        Err(e) => Action::Failure(e),
                    });
                });
            }
            Command::CopyToClipboard(text) => {
                use std::io::Write;
                // OSC 52: the terminal (local, or at the far end of SSH) sets its clipboard.
                let mut o = std::io::stdout().lock();
                let _ = write!(o, "\x1b]52;c;{}\x07", crate::units::base64(text.as_bytes()));
                let _ = o.flush();
            }
            Command::ExportRun { id, out } => {
                let Some(cat) = self.job_catalog() else { return };
                // The run's folders are looked up in the job, off the UI thread.
                self.export_job(format!("export run {id}"), out, move || cat.run(&id).map_err(|e| e.to_string())?.weights());
            }
            Command::ExportModel { dir, out } => {
                let title = format!("export {}", Path::new(&out).file_name().map(|f| f.to_string_lossy()).unwrap_or_default());
                self.export_job(title, out, move || Ok((dir.into(), None)));
            }
            Command::LoadRunMetrics { id, overlay } => {
                let Some(cat) = self.job_catalog() else { return };
                let tx = self.tx.clone();
                std::thread::spawn(move || match cat.metrics(&id) {
                    Ok(metrics) => {
                        let _ = tx.send(Action::RunMetrics { id, overlay, metrics });
                    }
                    Err(e) => {
                        let _ = tx.send(Action::Data(DataEvent::Failed(e.to_string())));
                    }
                });
            }
        }
    }
}

impl Engines {
    /// Exports a model folder (and adapter, from `weights`) as GGUF f16 in a job; the model
    /// library is scanned again when it is written.
    fn export_job(
        &mut self,
        title: String,
        out: String,
        weights: impl FnOnce() -> Result<(std::path::PathBuf, Option<std::path::PathBuf>), String> + Send + 'static,
    ) {
        let tx = self.tx.clone();
        self.jobs.spawn(JobKind::Export, title, move |ctx| {
            let (model, adapter) = weights().map_err(JobError::Failed)?;
            let e = crate::engine::export::gguf::export(&model, adapter.as_deref(), Path::new(&out), crate::engine::export::gguf::Quant::F16, &mut |phase| {
                ctx.progress(None, phase.to_string())
            })
            .map_err(JobError::Failed)?;
            ctx.progress(Some(1.0), format!("Wrote {} ({} tensors).", e.path.display(), e.tensors));
            let _ = tx.send(Action::RefreshModels);
            Ok(())
        });
    }
}

enum TrainWhat {
    Spec(Box<RunSpec>),
    Demo,
    Resume(String),
}

/// The form's check: memory estimate against what is free, token lengths, two examples with
/// their loss mask.
fn check_training(cat: &Catalog, spec: &RunSpec) -> Result<Vec<String>, String> {
    let mcfg = crate::engine::train::config::ModelConfig::load(&spec.model).map_err(|e| e.to_string())?;
    let need = trainer::memory_estimate(&mcfg, &spec.config);
    let avail = trainer::available_memory();
    let p = trainer::preview(cat, spec, 2)?;
    let mut out = vec![
        format!(
            "memory: about {} of {} available{}",
            crate::units::bytes(need),
            crate::units::bytes(avail),
            if need > avail { " (will not fit: lower max length or micro-batch, or use LoRA)" } else { "" }
        ),
        format!("{} train / {} eval examples", p.train_examples, p.eval_examples),
        format!(
            "tokens per example: min {} median {} p95 {} max {}; {} longer than {}",
            p.lengths.min, p.lengths.median, p.lengths.p95, p.lengths.max, p.lengths.truncated, spec.config.max_len
        ),
    ];
    let top = p.lengths.histogram.iter().map(|h| h.1).max().unwrap_or(1).max(1);
    for (upper, n) in &p.lengths.histogram {
        out.push(format!("  ≤{upper:>5} {:<30} {n}", "█".repeat(n * 30 / top)));
    }
    out.push("examples (trained tokens in [brackets]):".into());
    for e in p.examples {
        out.push(format!("  {}", e.replace('\n', "⏎")));
    }
    Ok(out)
}

impl Engines {
    fn train(&mut self, what: TrainWhat) {
        let Some(ws) = self.ws.clone() else { return };
        // A run started as the workstation opens waits for the catalog in its own thread.
        let Some(wait_catalog) = self.data.as_ref().map(|d| d.catalog_waiter()) else { return };
        let tx = self.tx.clone();
        let pause = self.train_pause.clone();
        pause.store(false, std::sync::atomic::Ordering::Relaxed);
        let title = match &what {
            TrainWhat::Spec(s) => s.view.clone(),
            TrainWhat::Demo => "demo".to_string(),
            TrainWhat::Resume(id) => format!("resume {id}"),
        };
        let training = self.training.clone();
        self.jobs.spawn(JobKind::Train, title, move |ctx| {
            /// Clears the flag however the run ends (a panic included).
            struct Computing(Arc<std::sync::atomic::AtomicBool>);
            impl Drop for Computing {
                fn drop(&mut self) {
                    self.0.store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let cat = match wait_catalog(Duration::from_secs(60)) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Action::TrainDone(Err(format!("The run cannot start: {e}."))));
                    return Ok(());
                }
            };
            training.store(true, std::sync::atomic::Ordering::Relaxed);
            let _computing = Computing(training);
            let control = Control { cancel: ctx.cancel_flag(), pause };
            let mut on = |ev: TrainEvent| {
                if let TrainEvent::Step(m) = &ev {
                    ctx.progress(Some(m.step as f32 / m.total.max(1) as f32), format!("step {}/{}", m.step, m.total));
                }
                let _ = tx.send(Action::Train(ev));
            };
            let result = match what {
                TrainWhat::Spec(spec) => trainer::start(&cat, &ws.runs_dir(), *spec, &control, &mut on),
                TrainWhat::Demo => demo::demo_spec(&cat, &ws.models_dir()).and_then(|spec| trainer::start(&cat, &ws.runs_dir(), spec, &control, &mut on)),
                TrainWhat::Resume(id) => trainer::resume(&cat, &ws.runs_dir(), &id, &control, &mut on),
            };
            let _ = tx.send(Action::TrainDone(result.map(|o| (o.run_id, o.ending.status().to_string()))));
            Ok(())
        });
    }
}

/// Called with the state after each frame is drawn.
pub type FrameHook = Box<dyn FnMut(&App)>;

pub struct LoopOptions {
    pub max_fps: u32,
    /// Quit right after the first frame is on screen (for `lathe bench ui`).
    pub exit_after_first_frame: bool,
    /// Called after every frame is drawn (benchmarks measure latency with it).
    pub on_frame: Option<FrameHook>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions { max_fps: 60, exit_after_first_frame: false, on_frame: None }
    }
}

/// Turns one terminal event into an action through the keymap.
pub fn map_event(app: &App, ev: Event) -> Option<Action> {
    match ev {
        // Key releases (kitty protocol, Windows) would double every key.
        Event::Key(k) if k.kind != KeyEventKind::Release => {
            tracing::trace!(?k, mode = ?app.mode(), "key");
            let text = app.text_input_focused();
            match app.keymap.resolve(app.mode(), text, &k) {
                Some(a) => Some(a),
                None if text => Some(Action::Text(key_press(&k))),
                None => None,
            }
        }
        Event::Paste(s) => Some(Action::Paste(s)),
        Event::Resize(w, h) => Some(Action::Resize(w, h)),
        _ => None,
    }
}

fn reduce(app: &mut App, engines: &mut Engines, action: Action) {
    if !matches!(action, Action::Sys(_) | Action::Job(crate::engine::jobs::JobEvent::Progress { .. })) {
        tracing::trace!(?action, "action");
    }
    for cmd in app.update(action) {
        engines.execute(cmd);
    }
}

/// Runs until the app quits or the input ends.
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    engines: &mut Engines,
    mut input: S,
    mut rx: UnboundedReceiver<Action>,
    mut opts: LoopOptions,
) -> io::Result<()>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin + Send + 'static,
{
    // Input is read on its own task and forwarded to a channel, so the loop can drain it with
    // try_recv. (Polling crossterm's EventStream with a no-op waker to drain it would leave its
    // wake-up thread holding that waker, and keys would wait for the next engine event.)
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<io::Result<Event>>();
    let reader = tokio::spawn(async move {
        while let Some(ev) = input.next().await {
            if in_tx.send(ev).is_err() {
                break;
            }
        }
    });
    let result = run_inner(terminal, app, engines, &mut in_rx, &mut rx, &mut opts).await;
    reader.abort();
    result
}

async fn run_inner<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    engines: &mut Engines,
    input: &mut UnboundedReceiver<io::Result<Event>>,
    rx: &mut UnboundedReceiver<Action>,
    opts: &mut LoopOptions,
) -> io::Result<()> {
    let frame = Duration::from_secs(1) / opts.max_fps.max(1);
    let size = terminal.size()?;
    app.update(Action::Resize(size.width, size.height));
    let mut last_draw: Option<Instant> = None;
    let mut input_open = true;
    loop {
        if app.dirty {
            let due = last_draw.map(|t| t + frame).unwrap_or_else(Instant::now);
            if Instant::now() >= due {
                terminal.draw(|f| crate::ui::draw(f, app))?;
                app.dirty = false;
                last_draw = Some(Instant::now());
                if let Some(cb) = opts.on_frame.as_mut() {
                    cb(app);
                }
                if opts.exit_after_first_frame {
                    return Ok(());
                }
            }
        }
        // Wait for the next message, or for the next frame slot when a draw is pending.
        let deadline = app.dirty.then(|| last_draw.map(|t| t + frame).unwrap_or_else(Instant::now));
        tokio::select! {
            ev = input.recv(), if input_open => match ev {
                Some(Ok(ev)) => {
                    if let Some(a) = map_event(app, ev) {
                        reduce(app, engines, a);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => input_open = false,
            },
            msg = rx.recv() => match msg {
                Some(a) => reduce(app, engines, a),
                None if !input_open => return Ok(()),
                None => {}
            },
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
        // Drain everything already queued before drawing once.
        loop {
            let mut progressed = false;
            while let Ok(a) = rx.try_recv() {
                reduce(app, engines, a);
                progressed = true;
            }
            if input_open {
                loop {
                    match input.try_recv() {
                        Ok(Ok(ev)) => {
                            if let Some(a) = map_event(app, ev) {
                                reduce(app, engines, a);
                            }
                            progressed = true;
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            input_open = false;
                            break;
                        }
                    }
                }
            }
            if !progressed || app.should_quit {
                break;
            }
        }
        if app.should_quit {
            return Ok(());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

/// Everything the TUI needs, made from the config.
pub struct Launch {
    pub app: App,
    /// Commands to run once the engines have started (e.g. load a chat model).
    pub initial: Vec<Command>,
    pub workspace: Workspace,
    pub sample_interval: Duration,
    pub max_fps: u32,
    /// How chat models are loaded.
    pub chat_options: crate::engine::infer::llama::Options,
}

/// Opens the workstation in the real terminal and runs it to the end.
pub fn run_terminal(launch: Launch) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let Launch { mut app, workspace, sample_interval, max_fps, initial, chat_options } = launch;
        let (tx, rx) = mpsc::unbounded_channel();
        spawn_signal_listener(tx.clone())?;
        let mut engines = Engines::start(tx.clone(), Some((&workspace, sample_interval)));
        engines.chat_options = chat_options;
        for c in initial {
            engines.execute(c);
        }
        let mut guard = super::terminal::TerminalGuard::enter()?;
        let opts = LoopOptions {
            max_fps,
            exit_after_first_frame: std::env::var_os("LATHE_EXIT_AFTER_FIRST_FRAME").is_some(),
            on_frame: std::env::var_os("LATHE_DEBUG_PANIC_AFTER_FIRST_FRAME")
                .map(|_| Box::new(|_: &App| panic!("panic requested by LATHE_DEBUG_PANIC_AFTER_FIRST_FRAME")) as FrameHook),
        };
        let (input_tx, input) = futures::channel::mpsc::unbounded();
        spawn_input_thread(input_tx);
        let result = run(&mut guard.terminal, &mut app, &mut engines, input, rx, opts).await;
        // An answer cut off by the exit (a quit, or the SSH link dropping) is saved as far as it
        // got, and every save asked for lands before the process ends.
        if app.chat.any_streaming() {
            if let Some(r) = app.chat.record() {
                engines.execute(Command::SaveChat(r));
            }
        }
        engines.finish_saves();
        engines.jobs.cancel_all();
        drop(guard);
        tracing::info!("workstation closed");
        result.map_err(anyhow::Error::from)
    })
}

/// Reads the terminal on its own OS thread. crossterm retries a read that returns end-of-file
/// (the terminal is gone, e.g. the SSH link dropped) without end; on this thread that can only
/// cost the poll window, and the thread notices the hang-up and reports it, so lathe exits.
fn spawn_input_thread(tx: futures::channel::mpsc::UnboundedSender<io::Result<Event>>) {
    use crossterm::event;
    let _ = std::thread::Builder::new().name("lathe-input".into()).spawn(move || loop {
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => {
                let ev = event::read();
                let failed = ev.is_err();
                if tx.unbounded_send(ev).is_err() || failed {
                    return;
                }
            }
            Ok(false) => {
                if tx.is_closed() {
                    return;
                }
                if !terminal_alive() {
                    tracing::warn!("the terminal hung up");
                    let _ = tx.unbounded_send(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the terminal hung up")));
                    return;
                }
            }
            Err(e) => {
                let _ = tx.unbounded_send(Err(e));
                return;
            }
        }
    });
}

/// A hung-up terminal fails tcgetattr (EIO); a live one answers.
fn terminal_alive() -> bool {
    // SAFETY: tcgetattr writes into the zeroed termios we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(libc::STDOUT_FILENO, &mut t) == 0
    }
}

/// SIGTERM, SIGHUP (the SSH link dropped) and SIGINT (from outside; Ctrl-C in raw mode is a key)
/// become a ForceQuit, so the loop ends and the guard restores the terminal.
fn spawn_signal_listener(tx: UnboundedSender<Action>) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!("received {name}");
        let _ = tx.send(Action::ForceQuit(name.into()));
    });
    Ok(())
}
