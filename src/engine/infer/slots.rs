//! Several answers from one GGUF model at once, as llama-server's slots do: one llama.cpp context
//! holds up to `slots` sequences (a unified KV cache, its tokens shared equally), and every step
//! decodes one batch with the next token of each answering sequence and a piece of each new
//! prompt. A prompt that starts as one in flight does (requests arriving together with one system
//! prompt) reads only what differs: the shared start is copied between sequences of the cache.
//! Requests beyond the slots wait in a queue of bounded length; a request when it is full
//! is refused at once (`Full`), never held. The engine thread owns the model and its context
//! (neither is Send); a request's events go back over its own channel, and a request whose
//! receiver is gone (the client left) stops at the next step. A request for another model waits
//! until the answers in flight end, then that model replaces the loaded one.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::llama::{backend, sampler_chain, Gguf, Streamed};
use crate::engine::types::{Message, Sampling, Stats, StopReason};

/// What is answered.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Raw text, continued (special tokens in it are parsed).
    Text(String),
}

/// One request.
pub struct Request {
    pub model: PathBuf,
    pub prompt: Prompt,
    pub sampling: Sampling,
    /// A GBNF grammar the answer must follow (root rule `root`).
    pub grammar: Option<String>,
    pub events: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// What a request hears, in order: `Started`, `Text`s (the first, maybe empty, when the first
/// token is sampled), then `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A slot took it: how long it waited, and its prompt's length in tokens.
    Started { waited_secs: f64, prompt_tokens: usize },
    Text(String),
    Done(Stats),
    Failed(GenError),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenError {
    #[error("{0}")]
    Load(String),
    #[error("The prompt is {tokens} tokens and a request may use {limit}; shorten it.")]
    PromptTooLong { tokens: usize, limit: usize },
    #[error("{0}")]
    Template(String),
    #[error("The grammar was refused by llama.cpp; check the schema or grammar.")]
    Grammar,
    #[error("logit_bias names token {token}, and this model's tokens are 0 to {last}; use ids from its tokenizer.")]
    UnknownToken { token: i32, last: i32 },
    #[error("llama.cpp failed while answering ({0}).")]
    Decode(String),
    #[error("The server is stopping; send the request again once it is back.")]
    Stopping,
}

/// The queue was full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sequences decoded together.
    pub slots: usize,
    /// Tokens of context in all, shared equally by the slots (0: the model's training context,
    /// at most `DEFAULT_CTX`), as llama-server divides its context among its slots.
    pub ctx: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    pub threads: i32,
    /// Tokens per decode call.
    pub batch: usize,
}

/// The context made when `Config::ctx` is 0 and the model was trained on more.
pub const DEFAULT_CTX: usize = 8192;

/// Running totals, for /metrics and the System pane.
#[derive(Debug, Default)]
pub struct Figures {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub rejected: AtomicU64,
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Microseconds, summed over requests.
    pub prompt_us: AtomicU64,
    pub generation_us: AtomicU64,
    pub first_token_us: AtomicU64,
    pub queue_us: AtomicU64,
    /// Requests a slot took (the count behind `queue_us`).
    pub admitted: AtomicU64,
    /// Answers that ended well (the count behind the token and time sums).
    pub answered: AtomicU64,
    /// Tokens each request may use (prompt and answer), once a model is loaded.
    pub per_slot: AtomicUsize,
    /// A model is being loaded.
    pub loading: AtomicBool,
    /// Models loaded so far (0 or 1 at a time).
    pub loaded: AtomicUsize,
}

enum Msg {
    Work(Request, Instant),
    /// Refuse what waits and take nothing new; answers in flight end.
    Drain,
}

/// A handle on the engine thread.
#[derive(Clone)]
pub struct Slots {
    tx: Sender<Msg>,
    pub figures: Arc<Figures>,
    pub config: Config,
    draining: Arc<AtomicBool>,
}

impl Slots {
    pub fn start(config: Config) -> Slots {
        let (tx, rx) = channel();
        let figures = Arc::new(Figures::default());
        let (f, c) = (figures.clone(), config.clone());
        let _ = std::thread::Builder::new().name("lathe-slots".into()).spawn(move || engine(rx, &c, &f));
        Slots { tx, figures, config, draining: Arc::new(AtomicBool::new(false)) }
    }

    /// Queues a request, or refuses it when `queue` requests already wait.
    pub fn submit(&self, req: Request) -> Result<(), Full> {
        let f = &self.figures;
        if self.draining.load(Ordering::Relaxed) {
            let _ = req.events.send(Event::Failed(GenError::Stopping));
            return Ok(());
        }
        // Reserve a place first, so two submits cannot both take the last one.
        if f.waiting.fetch_add(1, Ordering::SeqCst) >= self.config.queue + self.free_slots() {
            f.waiting.fetch_sub(1, Ordering::SeqCst);
            f.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(Full);
        }
        f.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.send(Msg::Work(req, Instant::now())) {
            f.waiting.fetch_sub(1, Ordering::SeqCst);
            let Msg::Work(req, _) = e.0 else { return Ok(()) };
            let _ = req.events.send(Event::Failed(GenError::Load("The model engine has stopped; restart lathe serve.".into())));
        }
        Ok(())
    }

    fn free_slots(&self) -> usize {
        self.config.slots.saturating_sub(self.figures.running.load(Ordering::SeqCst))
    }

    /// From now on nothing new is taken and what waits is refused; answers in flight end.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Drain);
    }
}

fn engine(rx: Receiver<Msg>, config: &Config, figures: &Figures) {
    let mut queue: VecDeque<(Request, Instant)> = VecDeque::new();
    let mut draining = false;
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(Msg::Work(r, at)) => queue.push_back((r, at)),
                Ok(Msg::Drain) => draining = true,
                Err(_) => return,
            }
        }
        if draining {
            refuse_all(&mut queue, figures);
            continue;
        }
        let Some(path) = queue.front().map(|(r, _)| r.model.clone()) else { continue };
        figures.loading.store(true, Ordering::Relaxed);
        let model = Gguf::load(&path);
        let made = match &model {
            Ok(g) => context(g, config).map(|c| (g, c)),
            Err(e) => Err(e.clone()),
        };
        figures.loading.store(false, Ordering::Relaxed);
        match made {
            Ok((g, (ctx, per_slot))) => {
                figures.loaded.store(1, Ordering::Relaxed);
                figures.per_slot.store(per_slot, Ordering::Relaxed);
                let slots = config.slots.max(1);
                let batch = LlamaBatch::new(config.batch.max(slots), 1);
                let mut run = Run { g, ctx, batch, per_slot, config, figures, slots: (0..slots).map(|_| None).collect(), cached: vec![Vec::new(); slots] };
                let go_on = run.serve(&path, &rx, &mut queue, &mut draining);
                drop(run);
                figures.loaded.store(0, Ordering::Relaxed);
                if !go_on {
                    return;
                }
            }
            Err(e) => {
                // Every waiting request for this file hears why.
                queue.retain(|(r, _)| {
                    if r.model != path {
                        return true;
                    }
                    figures.waiting.fetch_sub(1, Ordering::SeqCst);
                    let _ = r.events.send(Event::Failed(GenError::Load(e.clone())));
                    false
                });
            }
        }
    }
}

fn refuse_all(queue: &mut VecDeque<(Request, Instant)>, figures: &Figures) {
    for (r, _) in queue.drain(..) {
        figures.waiting.fetch_sub(1, Ordering::SeqCst);
        let _ = r.events.send(Event::Failed(GenError::Stopping));
    }
}

/// The model's context and the tokens each slot may use.
fn context<'m>(g: &'m Gguf, config: &Config) -> Result<(LlamaContext<'m>, usize), String> {
    let slots = config.slots.max(1);
    let total = if config.ctx == 0 { (g.model.n_ctx_train() as usize).clamp(1, DEFAULT_CTX) } else { config.ctx };
    let per_slot = (total / slots).max(1);
    let n_ctx = (per_slot * slots) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
        .with_n_seq_max(config.slots as u32)
        .with_kv_unified(true)
        .with_n_batch(config.batch as u32)
        .with_n_ubatch(config.batch as u32)
        .with_n_threads(config.threads.max(1))
        .with_n_threads_batch(config.threads.max(1));
    let ctx = g
        .model
        .new_context(backend()?, params)
        .map_err(|e| format!("llama.cpp could not make a {n_ctx}-token context for {slots} slots ({e}); serve with fewer slots or a smaller context."))?;
    Ok((ctx, per_slot))
}

/// One sequence being answered.
struct Slot {
    req: Request,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens in the cache so far.
    fed: usize,
    /// Prompt tokens found in the cache (from the sequence's last answer, or copied from another
    /// sequence's).
    reused: usize,
    /// Another slot whose prompt starts as this one's does, and how many tokens they share: this
    /// one reads nothing until that one has read them, then takes them from its cache (requests
    /// that arrive together with one system prompt read it once).
    follows: Option<(usize, usize)>,
    /// Answer tokens decoded into the cache (what the next request may reuse).
    decoded: Vec<LlamaToken>,
    /// The token sampled last, to be decoded next.
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    out: Streamed,
    generated: usize,
    started: Instant,
    prompt_secs: f64,
    first_token_secs: Option<f64>,
    gen_started: Option<Instant>,
}

impl Slot {
    /// Tokens in the cache.
    fn pos(&self) -> usize {
        self.fed + self.generated.saturating_sub(usize::from(self.next.is_some()))
    }
}

struct Run<'m, 'c> {
    g: &'m Gguf,
    ctx: LlamaContext<'m>,
    /// Reused by every step.
    batch: LlamaBatch<'static>,
    per_slot: usize,
    config: &'c Config,
    figures: &'c Figures,
    slots: Vec<Option<Slot>>,
    /// Per sequence, the tokens its cache holds from the answer it gave last: a request that
    /// starts the same way (the next turn of a conversation, a repeated system prompt) reads
    /// only what follows, as llama-server's `cache_prompt` does.
    cached: Vec<Vec<LlamaToken>>,
}

impl Run<'_, '_> {
    /// Answers requests for `path` until one for another model is first in the queue and nothing
    /// is in flight (true), or the handle is gone (false).
    fn serve(&mut self, path: &Path, rx: &Receiver<Msg>, queue: &mut VecDeque<(Request, Instant)>, draining: &mut bool) -> bool {
        loop {
            let busy = self.slots.iter().any(Option::is_some);
            // Wait for work when there is nothing to do, else take what has arrived.
            let first = if busy || !queue.is_empty() {
                rx.try_recv().ok()
            } else {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return false,
                }
            };
            for m in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match m {
                    Msg::Work(r, at) => queue.push_back((r, at)),
                    Msg::Drain => *draining = true,
                }
            }
            if *draining {
                refuse_all(queue, self.figures);
            }
            self.admit(path, queue);
            if self.slots.iter().all(Option::is_none) {
                if queue.front().is_some_and(|(r, _)| r.model != path) {
                    return true;
                }
                continue;
            }
            if let Err(e) = self.step() {
                for i in 0..self.slots.len() {
                    self.finish(i, Err(GenError::Decode(e.clone())));
                }
            }
        }
    }

    /// Fills free slots from the front of the queue (requests for this model, in order), each
    /// into the free sequence whose cache shares the longest start with it.
    fn admit(&mut self, path: &Path, queue: &mut VecDeque<(Request, Instant)>) {
        while self.slots.iter().any(Option::is_none) {
            if queue.front().is_none_or(|(r, _)| r.model != path) {
                return;
            }
            let Some((req, at)) = queue.pop_front() else { return };
            self.figures.waiting.fetch_sub(1, Ordering::SeqCst);
            if req.events.is_closed() {
                continue;
            }
            let waited = at.elapsed();
            self.figures.queue_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            self.figures.admitted.fetch_add(1, Ordering::Relaxed);
            match self.prepare(&req) {
                Err(e) => {
                    let _ = req.events.send(Event::Failed(e));
                }
                Ok((prompt, sampler)) => {
                    let (free, reused) = self.reuse(&prompt);
                    let follows = self.leader(&prompt, reused);
                    let _ = req.events.send(Event::Started { waited_secs: waited.as_secs_f64(), prompt_tokens: prompt.len() });
                    self.figures.running.fetch_add(1, Ordering::SeqCst);
                    self.slots[free] = Some(Slot {
                        req,
                        prompt,
                        fed: reused,
                        reused,
                        follows,
                        decoded: Vec::new(),
                        next: None,
                        sampler,
                        out: Streamed::default(),
                        generated: 0,
                        started: Instant::now(),
                        prompt_secs: 0.0,
                        first_token_secs: None,
                        gen_started: None,
                    });
                }
            }
        }
    }

    /// The free sequence to answer `prompt` in and how many of its first tokens are in that
    /// sequence's cache already (the rest of the cache is dropped). One token at least is read
    /// again: its logits give the first answer token.
    fn reuse(&mut self, prompt: &[LlamaToken]) -> (usize, usize) {
        let common = |c: &Vec<LlamaToken>| c.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len().saturating_sub(1));
        let free = (0..self.slots.len()).filter(|&i| self.slots[i].is_none());
        let best = free.max_by_key(|&i| (common(&self.cached[i]), std::cmp::Reverse(i))).unwrap_or(0);
        let mut n = common(&self.cached[best]);
        // Positions n.. go; a cache that cannot drop part of a sequence is cleared whole.
        if !matches!(self.ctx.clear_kv_cache_seq(Some(best as u32), Some(n as u32), None), Ok(true)) {
            let _ = self.ctx.clear_kv_cache_seq(Some(best as u32), None, None);
            n = 0;
        }
        self.cached[best].clear();
        (best, n)
    }

    /// The answering slot whose prompt shares the longest start with `prompt`, longer than the
    /// `reused` tokens its own sequence holds, and how long that start is (one token at least is
    /// left to read: its logits give the first answer token).
    fn leader(&self, prompt: &[LlamaToken], reused: usize) -> Option<(usize, usize)> {
        let shared = |s: &Slot| s.prompt.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len().saturating_sub(1));
        let (j, n) = self.slots.iter().enumerate().filter_map(|(j, s)| Some((j, shared(s.as_ref()?)))).max_by_key(|&(j, n)| (n, std::cmp::Reverse(j)))?;
        (n > reused).then_some((j, n))
    }

    /// Followers whose leader has read the shared tokens copy them into their own sequence (the
    /// cache is unified: the cells are shared, not duplicated); one whose leader has ended reads
    /// its prompt itself.
    fn take_shared(&mut self) {
        for i in 0..self.slots.len() {
            let Some((j, upto)) = self.slots[i].as_ref().and_then(|s| s.follows) else { continue };
            match self.slots[j].as_ref().map(|l| l.fed >= upto) {
                Some(false) => continue,
                Some(true) => {
                    let Some(s) = self.slots[i].as_mut() else { continue };
                    if self.ctx.copy_kv_cache_seq(j as i32, i as i32, Some(s.fed as u32), Some(upto as u32)).is_ok() {
                        s.fed = upto;
                        s.reused = upto;
                    }
                    s.follows = None;
                }
                None => {
                    if let Some(s) = self.slots[i].as_mut() {
                        s.follows = None;
                    }
                }
            }
        }
    }

    /// The request's tokens and sampler, or why it cannot run.
    fn prepare(&self, req: &Request) -> Result<(Vec<LlamaToken>, LlamaSampler), GenError> {
        let text = match &req.prompt {
            Prompt::Chat(messages) => self.g.render(messages, true).map_err(GenError::Template)?,
            Prompt::Text(t) => t.clone(),
        };
        let prompt = self.g.tokenize(&text);
        let limit = self.per_slot;
        if prompt.is_empty() || prompt.len() >= limit {
            return Err(GenError::PromptTooLong { tokens: prompt.len(), limit });
        }
        let s = &req.sampling;
        let n_vocab = self.g.model.vocab().n_tokens();
        if let Some(&(token, _)) = s.logit_bias.iter().find(|(t, _)| !(0..n_vocab).contains(t)) {
            return Err(GenError::UnknownToken { token, last: n_vocab - 1 });
        }
        let chain = sampler_chain(s, n_vocab);
        let mut sampler = match &req.grammar {
            Some(gbnf) => LlamaSampler::chain_simple([LlamaSampler::grammar(&self.g.model, gbnf, "root").map_err(|_| GenError::Grammar)?, chain]),
            None => chain,
        };
        // The penalties see the prompt's end, as in the Chat pane.
        if s.repeat_penalty != 1.0 || s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
            let tail = prompt.len().saturating_sub(s.repeat_last_n.max(0) as usize);
            sampler.accept_many(&prompt[tail..]);
        }
        Ok((prompt, sampler))
    }

    /// One decode call over every slot, then one token sampled for each slot whose prompt is in.
    fn step(&mut self) -> Result<(), String> {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.req.events.is_closed()) {
                self.finish(i, Ok(StopReason::Cancelled));
            }
        }
        self.take_shared();
        let batch = &mut self.batch;
        batch.clear();
        // (slot, the batch row whose logits it samples from)
        let mut sample_at = Vec::new();
        // Answering sequences first: one token each keeps every answer moving.
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(s) = slot {
                if let Some(tok) = s.next {
                    sample_at.push((i, batch.n_tokens()));
                    batch.add(tok, s.pos() as i32, &[i as i32], true).map_err(|e| e.to_string())?;
                }
            }
        }
        for s in self.slots.iter_mut().flatten() {
            if let Some(tok) = s.next {
                s.decoded.push(tok);
            }
        }
        // Then prompts, as much as the batch holds.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let room = self.config.batch.saturating_sub(batch.n_tokens() as usize);
            if s.fed == s.prompt.len() || room == 0 || s.follows.is_some() {
                continue;
            }
            let take = room.min(s.prompt.len() - s.fed);
            for k in 0..take {
                let pos = s.fed + k;
                let last = pos + 1 == s.prompt.len();
                if last {
                    sample_at.push((i, batch.n_tokens()));
                }
                batch.add(s.prompt[pos], pos as i32, &[i as i32], last).map_err(|e| e.to_string())?;
            }
            s.fed += take;
            if s.fed == s.prompt.len() {
                s.prompt_secs = s.started.elapsed().as_secs_f64();
            }
        }
        if batch.n_tokens() == 0 {
            return Ok(());
        }
        let _turn = super::turns::take(self.config.threads);
        self.ctx.decode(batch).map_err(|e| e.to_string())?;
        for (i, row) in sample_at {
            let ended = self.sample(i, row);
            if let Some(reason) = ended {
                self.finish(i, Ok(reason));
            }
        }
        Ok(())
    }

    /// Samples slot i's next token from batch row `row`; the stop reason if its answer ended.
    fn sample(&mut self, i: usize, row: i32) -> Option<StopReason> {
        let vocab = self.g.model.vocab();
        let s = self.slots[i].as_mut()?;
        let tok = s.sampler.sample(&self.ctx, row);
        if s.first_token_secs.is_none() {
            s.first_token_secs = Some(s.started.elapsed().as_secs_f64());
            s.gen_started = Some(Instant::now());
            // The first token is said at once, even when it has no text (an end of turn, or a
            // piece that is not whole UTF-8 yet): the client's time to first token is real.
            let _ = s.req.events.send(Event::Text(String::new()));
        }
        s.next = None;
        if vocab.is_eog(tok) {
            return Some(StopReason::EndOfTurn);
        }
        s.generated += 1;
        let events = &s.req.events;
        if s.out.push(&vocab.token_to_piece(tok, false, None), &s.req.sampling.stop, &mut |t| {
            let _ = events.send(Event::Text(t.to_string()));
        }) {
            return Some(StopReason::StopString);
        }
        if s.generated >= s.req.sampling.max_tokens {
            return Some(StopReason::MaxTokens);
        }
        if s.fed + s.generated >= self.per_slot {
            return Some(StopReason::ContextFull);
        }
        s.next = Some(tok);
        None
    }

    /// Ends slot i's answer (if it has one), says how, and frees its sequence.
    fn finish(&mut self, i: usize, how: Result<StopReason, GenError>) {
        let Some(mut s) = self.slots[i].take() else { return };
        // Who waited for this one's prompt reads it itself.
        for f in self.slots.iter_mut().flatten() {
            if f.follows.is_some_and(|(j, _)| j == i) {
                f.follows = None;
            }
        }
        // The cache keeps what was decoded for the next request to reuse; after a failed decode
        // nothing in it is trusted.
        if matches!(how, Err(GenError::Decode(_))) {
            let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
        } else {
            let mut kept = s.prompt[..s.fed].to_vec();
            kept.extend(&s.decoded);
            self.cached[i] = kept;
        }
        self.figures.running.fetch_sub(1, Ordering::SeqCst);
        let events = &s.req.events;
        let event = match how {
            Err(e) => Event::Failed(e),
            Ok(stop) => {
                if stop != StopReason::StopString {
                    s.out.finish(&mut |t| {
                        let _ = events.send(Event::Text(t.to_string()));
                    });
                }
                let generation_secs = s.gen_started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                let f = self.figures;
                f.answered.fetch_add(1, Ordering::Relaxed);
                f.prompt_tokens.fetch_add((s.prompt.len() - s.reused) as u64, Ordering::Relaxed);
                f.generated_tokens.fetch_add(s.generated as u64, Ordering::Relaxed);
                f.prompt_us.fetch_add((s.prompt_secs * 1e6) as u64, Ordering::Relaxed);
                f.generation_us.fetch_add((generation_secs * 1e6) as u64, Ordering::Relaxed);
                f.first_token_us.fetch_add((s.first_token_secs.unwrap_or(0.0) * 1e6) as u64, Ordering::Relaxed);
                Event::Done(Stats {
                    prompt_tokens: s.prompt.len(),
                    reused_tokens: s.reused,
                    prompt_secs: s.prompt_secs,
                    first_token_secs: s.first_token_secs.unwrap_or(s.prompt_secs),
                    generated_tokens: s.generated,
                    generation_secs,
                    context_used: s.fed + s.generated,
                    context_size: self.per_slot,
                    stop,
                })
            }
        };
        let _ = events.send(event);
    }
}
