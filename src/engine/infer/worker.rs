//! The chat engine thread: owns one llama.cpp model and its session (the context is not Send),
//! takes requests over a channel and streams events back. Each answer is rendered from the whole
//! conversation with the model's template; the session's KV cache means only the new turn is
//! decoded. When a conversation no longer fits the context, its oldest turns after the system
//! prompt are left out, and the answer's event says how many.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::llama::{Gguf, Options};
use crate::engine::types::{Message, ModelRef, Remote, Sampling, Stats};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChatEvent {
    Loaded { model: ModelRef, architecture: String, context_size: usize, has_template: bool },
    LoadFailed(String),
    /// The loaded file carries a question from the view it was trained on (lathe's exports of a
    /// run do), to offer as a first message.
    Example(String),
    /// An answer started: how many of the oldest turns were left out to fit the context.
    Started { id: u64, dropped: usize },
    Token { id: u64, text: String },
    Done { id: u64, stats: Stats },
    Failed { id: u64, error: String },
}

enum Request {
    Load { model: ModelRef, opts: Options },
    Generate { id: u64, messages: Vec<Message>, sampling: Sampling },
    /// Compute with this many threads from the next answer on (a new context; the next turn
    /// decodes the conversation again).
    Threads(i32),
    /// Let go of the model and its memory.
    Unload,
}

/// A handle on the engine thread (clones talk to the same thread).
#[derive(Clone)]
pub struct ChatWorker {
    tx: Sender<Request>,
    stop: Arc<AtomicBool>,
}

impl ChatWorker {
    pub fn spawn(emit: impl Fn(ChatEvent) + Send + 'static) -> ChatWorker {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let _ = std::thread::Builder::new().name("lathe-chat".into()).spawn(move || serve(rx, &flag, &emit));
        ChatWorker { tx, stop }
    }

    pub fn load(&self, model: ModelRef, opts: Options) {
        let _ = self.tx.send(Request::Load { model, opts });
    }

    pub fn generate(&self, id: u64, messages: Vec<Message>, sampling: Sampling) {
        self.stop.store(false, Ordering::Relaxed);
        let _ = self.tx.send(Request::Generate { id, messages, sampling });
    }

    /// Changes the loaded model's thread count (after the answer being generated, if any): two
    /// models answering at once share the cores rather than both spinning on all of them.
    pub fn set_threads(&self, threads: i32) {
        let _ = self.tx.send(Request::Threads(threads));
    }

    /// Frees the model (after the answer being generated, if any).
    pub fn unload(&self) {
        let _ = self.tx.send(Request::Unload);
    }

    /// Stops the answer being generated (the text so far is kept).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(rx: Receiver<Request>, stop: &AtomicBool, emit: &dyn Fn(ChatEvent)) {
    let mut next = rx.recv().ok();
    while let Some(req) = next.take() {
        match req {
            Request::Generate { id, .. } => {
                emit(ChatEvent::Failed { id, error: "No model is loaded; load one first.".into() });
                next = rx.recv().ok();
            }
            // Nothing is loaded: the next load says its own threads.
            Request::Threads(_) | Request::Unload => next = rx.recv().ok(),
            Request::Load { model: ModelRef::Server(remote), .. } => next = serve_remote(remote, &rx, stop, emit),
            Request::Load { model: ModelRef::File(path), mut opts } => {
                let g = match Gguf::load(&path) {
                    Ok(g) => g,
                    Err(e) => {
                        emit(ChatEvent::LoadFailed(e));
                        next = rx.recv().ok();
                        continue;
                    }
                };
                let mut session = match g.session(&opts) {
                    Ok(s) => s,
                    Err(e) => {
                        emit(ChatEvent::LoadFailed(e));
                        next = rx.recv().ok();
                        continue;
                    }
                };
                emit(ChatEvent::Loaded {
                    model: ModelRef::File(path.clone()),
                    architecture: g.architecture.clone(),
                    context_size: session.context_size(),
                    has_template: g.template.is_some(),
                });
                if let Some(example) = &g.example {
                    emit(ChatEvent::Example(example.clone()));
                }
                // Serve this model until another is asked for.
                loop {
                    match rx.recv() {
                        Ok(Request::Generate { id, messages, sampling }) => {
                            let n_ctx = session.context_size();
                            let reserve = sampling.max_tokens.min(n_ctx / 4).max(1);
                            let mut msgs = messages;
                            let mut dropped = 0;
                            let prompt = loop {
                                let text = match g.render(&msgs, true) {
                                    Ok(t) => t,
                                    Err(e) => break Err(e),
                                };
                                let toks = g.tokenize(&text);
                                let first = msgs.iter().position(|m| m.role != "system");
                                let turns = msgs.iter().filter(|m| m.role != "system").count();
                                if toks.len() + reserve <= n_ctx || turns <= 1 {
                                    break Ok(toks);
                                }
                                if let Some(i) = first {
                                    msgs.remove(i);
                                    dropped += 1;
                                }
                            };
                            match prompt {
                                Err(e) => emit(ChatEvent::Failed { id, error: e }),
                                Ok(toks) => {
                                    emit(ChatEvent::Started { id, dropped });
                                    match session.generate(&toks, &sampling, stop, &mut |t| emit(ChatEvent::Token { id, text: t.to_string() })) {
                                        Ok((_, stats)) => emit(ChatEvent::Done { id, stats }),
                                        Err(error) => emit(ChatEvent::Failed { id, error }),
                                    }
                                }
                            }
                        }
                        Ok(Request::Threads(n)) if n != opts.threads => {
                            let want = Options { threads: n, ..opts.clone() };
                            match g.session(&want) {
                                Ok(fresh) => {
                                    session = fresh;
                                    opts = want;
                                }
                                Err(e) => tracing::warn!("kept {} threads: {e}", opts.threads),
                            }
                        }
                        Ok(Request::Threads(_)) => {}
                        Ok(Request::Unload) => {
                            next = rx.recv().ok();
                            break;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// Serves a remote model until another is asked for; returns that request.
fn serve_remote(remote: Remote, rx: &Receiver<Request>, stop: &AtomicBool, emit: &dyn Fn(ChatEvent)) -> Option<Request> {
    if let Err(e) = remote.check() {
        emit(ChatEvent::LoadFailed(e));
        return rx.recv().ok();
    }
    let kind = match remote {
        Remote::Ollama { .. } => "ollama server",
        Remote::OpenAi { .. } => "openai-compatible server",
    };
    emit(ChatEvent::Loaded { model: ModelRef::Server(remote.clone()), architecture: kind.into(), context_size: 0, has_template: true });
    loop {
        match rx.recv() {
            Ok(Request::Generate { id, messages, sampling }) => {
                emit(ChatEvent::Started { id, dropped: 0 });
                match remote.generate(&messages, &sampling, stop, &mut |t| emit(ChatEvent::Token { id, text: t.to_string() })) {
                    Ok((_, stats)) => emit(ChatEvent::Done { id, stats }),
                    Err(error) => emit(ChatEvent::Failed { id, error }),
                }
            }
            Ok(Request::Threads(_)) => {}
            Ok(Request::Unload) => return rx.recv().ok(),
            Ok(other) => return Some(other),
            Err(_) => return None,
        }
    }
}
