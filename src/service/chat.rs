//! The chat sides: two llama.cpp (or remote) workers, side 0 the conversation's model and side 1
//! the model compared with it, their thread policy, and the saver that writes conversations in
//! the order they were asked for, on a thread of its own.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{CatalogWaiter, Emit, Event, ServiceError};
use crate::engine::data::chats::ChatRecord;
use crate::engine::infer::llama::Options;
use crate::engine::infer::worker::{ChatEvent, ChatWorker};
use crate::engine::types::{Message, ModelRef, Sampling};
use crate::engine::workspace::Workspace;

pub(super) struct ChatSides {
    workers: [ChatWorker; 2],
    /// How models are loaded (context, threads, batch: `lathe chat --ctx/--threads`).
    pub(super) options: Options,
    /// Whether a second model is open: the two then split the threads.
    comparing: bool,
    /// The thread counts each side was last given.
    threads_now: [i32; 2],
    saver: Option<(mpsc::Sender<ChatRecord>, JoinHandle<()>)>,
}

impl ChatSides {
    pub(super) fn start(emit: &Emit) -> ChatSides {
        let side = |n: usize| {
            let emit = emit.clone();
            ChatWorker::spawn(move |event| emit(Event::Chat { side: n, event }))
        };
        ChatSides { workers: [side(0), side(1)], options: Options::default(), comparing: false, threads_now: [0; 2], saver: None }
    }

    /// The threads for one side now: all of `options`', halved when two models answer at once,
    /// halved again while a training run computes. With every core each, two 1B models on 2 cores
    /// did not reach a first token in 30 s; beside a training run, generation ran at 25 tok/s on
    /// 2 threads and 38 on 1.
    fn side_threads(&self, training: bool) -> i32 {
        let mut t = self.options.threads;
        if self.comparing {
            t /= 2;
        }
        if training {
            t /= 2;
        }
        t.max(1)
    }

    /// Loads on a side the model `find` finds, on a thread of its own (a lookup can wait on a
    /// server: the workspace's owner, asked which model a name is).
    pub(super) fn load_found(&mut self, side: usize, training: bool, emit: &Emit, find: impl FnOnce() -> Result<ModelRef, ServiceError> + Send + 'static) {
        let load = self.loader(side, training, emit);
        std::thread::spawn(move || load(find()));
    }

    /// What loads a side's model once it is found (with the threads for now), or says why there
    /// is none.
    fn loader(&mut self, side: usize, training: bool, emit: &Emit) -> impl FnOnce(Result<ModelRef, ServiceError>) + Send + 'static {
        if side == 1 {
            self.comparing = true;
            self.retune(0, training);
        }
        let opts = Options { threads: self.side_threads(training), ..self.options.clone() };
        self.threads_now[side] = opts.threads;
        let worker = self.workers[side].clone();
        let emit = emit.clone();
        // As with a file that fails to load, a name that names nothing leaves the side without a model.
        move |found: Result<ModelRef, ServiceError>| match found {
            Ok(model) => worker.load(model, opts),
            Err(e) => {
                worker.unload();
                emit(Event::Chat { side, event: ChatEvent::LoadFailed(e.to_string()) });
            }
        }
    }

    /// Loads a model on a side with the threads for now. A name that is not a file or a server
    /// (`tiny:latest` from the Ollama store, a library name) is looked up in the model library on
    /// a thread of its own.
    pub(super) fn load(&mut self, side: usize, name: String, training: bool, ws: Option<Workspace>, catalog: Option<CatalogWaiter>, emit: &Emit) {
        let load = self.loader(side, training, emit);
        match (super::models::direct(&name), ws) {
            (Some(found), _) => load(found),
            (None, None) => load(Err(ServiceError::NotFound(format!("No model {name:?}: give a .gguf path or ollama:NAME.")))),
            (None, Some(ws)) => {
                std::thread::spawn(move || {
                    let cat = catalog.and_then(|wait| wait(Duration::from_secs(10)).ok());
                    load(super::models::resolve(&ws, cat.as_ref(), &name));
                });
            }
        }
    }

    /// Gives a side the threads for now, if that changed since it was last told (a new context:
    /// its next answer decodes the conversation again).
    pub(super) fn retune(&mut self, side: usize, training: bool) {
        let t = self.side_threads(training);
        if self.threads_now[side] != t {
            self.threads_now[side] = t;
            self.workers[side].set_threads(t);
        }
    }

    pub(super) fn generate(&mut self, side: usize, id: u64, messages: Vec<Message>, sampling: Sampling, training: bool) {
        self.retune(side, training);
        self.workers[side].generate(id, messages, sampling);
    }

    pub(super) fn stop(&self) {
        for w in &self.workers {
            w.stop();
        }
    }

    /// The comparison closed: the second model is freed and the first gets every thread back.
    pub(super) fn close_compare(&mut self, training: bool) {
        self.comparing = false;
        self.workers[1].stop();
        self.workers[1].unload();
        self.retune(0, training);
    }

    /// Saves a conversation in order (a message when sent, then with its answer), off the
    /// caller's thread. A conversation begun as the workspace opens is saved once the catalog is.
    pub(super) fn save(&mut self, record: ChatRecord, catalog: Option<CatalogWaiter>, emit: &Emit) {
        if self.saver.is_none() {
            let Some(wait) = catalog else { return };
            let emit = emit.clone();
            let (saves, rx) = mpsc::channel::<ChatRecord>();
            let handle = std::thread::spawn(move || {
                let cat = match wait(Duration::from_secs(60)) {
                    Ok(c) => c,
                    Err(e) => return emit(Event::Failure(format!("Conversations cannot be saved: {e}."))),
                };
                for r in rx {
                    if let Err(e) = cat.save_chat(&r) {
                        emit(Event::Failure(format!("The conversation could not be saved: {e}")));
                    }
                }
            });
            self.saver = Some((saves, handle));
        }
        if let Some((saves, _)) = &self.saver {
            let _ = saves.send(record);
        }
    }

    /// Waits for the saves asked for so far.
    pub(super) fn finish_saves(&mut self) {
        if let Some((saves, handle)) = self.saver.take() {
            drop(saves);
            let _ = handle.join();
        }
    }
}
