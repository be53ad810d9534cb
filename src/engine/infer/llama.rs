//! GGUF chat through llama.cpp: load a model, render the conversation with the model's own Jinja
//! chat template (from the GGUF metadata; minijinja, not llama.cpp's built-in detection), and
//! stream tokens with a sampler chain. A [`Session`] owns one context and keeps its KV cache
//! across turns: each turn decodes only the tokens that differ from what the cache already holds.
//! The context is not Send: a session lives on the thread that made it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::engine::data::views::Example;
use crate::engine::types::{Message, Sampling, Stats, StopReason};
use crate::engine::train::text::{chat_prompt, render_template, PLAIN_TEMPLATE};
use crate::units::bytes;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's process-wide backend, initialised once; its logs go to lathe's log file.
pub fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| format!("llama.cpp did not start: {e}"))
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// How a model is loaded and its context made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Context size in tokens (0: the model's training context, at most 4096).
    pub ctx: u32,
    pub threads: i32,
    /// Tokens per decode call while reading the prompt.
    pub batch: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { ctx: 0, threads: default_threads(), batch: 512 }
    }
}

/// llama.cpp's threads: one per physical core (as llama.cpp itself picks; a second thread on a
/// hyperthreaded core slows generation), and no more than this process may use.
pub fn default_threads() -> i32 {
    let allowed = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let physical = sysinfo::System::physical_core_count().unwrap_or(allowed);
    physical.clamp(1, allowed) as i32
}

/// The metadata key of a question from the view a model was trained on, which lathe's exports of
/// a run write (`export::gguf::Provenance`) and the Chat pane offers as a first message.
pub const EXAMPLE_PROMPT_KEY: &str = "lathe.example_prompt";

/// A loaded GGUF model.
pub struct Gguf {
    pub model: LlamaModel,
    pub path: PathBuf,
    pub architecture: String,
    /// The chat template from the metadata, or `None` (lathe then uses its plain format).
    pub template: Option<String>,
    /// A question from the view the model was trained on (`lathe.example_prompt`), if any.
    pub example: Option<String>,
    bos: String,
    eos: String,
}

impl Gguf {
    pub fn load(path: &Path) -> Result<Gguf, String> {
        // The library's description of the file: its problem if it has one, else what it needs.
        let entry = super::library::gguf_entry(path, String::new(), "");
        if let Some(problem) = entry.problem {
            return Err(problem);
        }
        let (arch, need) = (entry.architecture, entry.ram_needed);
        let free = crate::engine::sysmon::available_memory();
        if need > free {
            return Err(format!(
                "{} needs about {} of memory and {} is free; close other programs or use a smaller quantization.",
                path.display(),
                bytes(need),
                bytes(free)
            ));
        }
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|_| {
            format!(
                "llama.cpp could not load {} (architecture {arch:?}); this llama.cpp build may not support it. logs/lathe.log has llama.cpp's reason.",
                path.display()
            )
        })?;
        // The GGUF's own template, else one in a tokenizer_config.json beside the file.
        let template = model.meta_val_str("tokenizer.chat_template").ok().filter(|t| !t.trim().is_empty()).or_else(|| {
            let cfg = path.parent()?.join("tokenizer_config.json");
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cfg).ok()?).ok()?;
            v["chat_template"].as_str().map(str::to_string)
        });
        let example = model.meta_val_str(EXAMPLE_PROMPT_KEY).ok().filter(|t| !t.trim().is_empty());
        let vocab = model.vocab();
        let text = |t: LlamaToken| vocab.text(t).and_then(|c| c.to_str().ok()).unwrap_or_default().to_string();
        let (bos, eos) = (text(vocab.bos()), text(vocab.eos()));
        Ok(Gguf { model, path: path.to_path_buf(), architecture: arch, template, example, bos, eos })
    }

    /// The conversation as the model's prompt text.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        render_template(self.template.as_deref().unwrap_or(PLAIN_TEMPLATE), messages, add_generation_prompt, &self.bos, &self.eos)
    }

    /// Tokens of a rendered prompt: special tokens in the text are parsed, and BOS is added where
    /// the model wants one and the template did not write it.
    pub fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let add = vocab.should_add_bos() && (self.bos.is_empty() || !text.starts_with(&self.bos));
        vocab.tokenize(text.as_bytes(), add, true)
    }

    pub fn session(&self, opts: &Options) -> Result<Session<'_>, String> {
        let train_ctx = self.model.n_ctx_train();
        let n_ctx = if opts.ctx == 0 { train_ctx.clamp(1, 4096) } else { opts.ctx };
        let params = LlamaContextParams::default()
            .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
            .with_n_batch(opts.batch.max(1))
            .with_n_ubatch(opts.batch.max(1))
            .with_n_threads(opts.threads.max(1))
            .with_n_threads_batch(opts.threads.max(1));
        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| format!("llama.cpp could not make a {n_ctx}-token context ({e}); try a smaller --ctx."))?;
        Ok(Session { gguf: self, ctx, cached: Vec::new(), batch: opts.batch.max(1) as usize, threads: opts.threads.max(1) })
    }
}

/// One context with its KV cache.
pub struct Session<'m> {
    gguf: &'m Gguf,
    ctx: LlamaContext<'m>,
    /// The tokens whose keys and values the cache holds, in order.
    cached: Vec<LlamaToken>,
    batch: usize,
    threads: i32,
}

impl<'m> Session<'m> {
    pub fn context_size(&self) -> usize {
        self.ctx.n_ctx() as usize
    }

    pub fn context_used(&self) -> usize {
        self.cached.len()
    }

    /// One decode call, in its turn on the CPU ([`super::turns`]).
    fn decode(&mut self, batch: &mut LlamaBatch) -> Result<(), llama_cpp_2::DecodeError> {
        let _turn = super::turns::take(self.threads);
        self.ctx.decode(batch)
    }

    /// Brings the cache to `tokens`, decoding only what differs from what it holds; returns how many
    /// were reused. With `all_logits`, the logits of every decoded position come back.
    fn feed(&mut self, tokens: &[LlamaToken], all_logits: bool) -> Result<(usize, Vec<Vec<f32>>), String> {
        if tokens.is_empty() {
            return Err("Nothing to send: the prompt is empty.".into());
        }
        if tokens.len() > self.context_size() {
            return Err(format!(
                "The prompt is {} tokens and the context holds {}; shorten it, or load the model with a larger context.",
                tokens.len(),
                self.context_size()
            ));
        }
        let mut keep = self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        if keep == tokens.len() {
            // The last token is decoded again: its logits are where sampling starts.
            keep -= 1;
        }
        if keep < self.cached.len() {
            if !self.ctx.clear_kv_cache_seq(Some(0), Some(keep as u32), None).unwrap_or(false) {
                self.ctx.clear_kv_cache();
                keep = 0;
            }
            self.cached.truncate(keep);
        }
        let mut out = Vec::new();
        let mut batch = LlamaBatch::new(self.batch, 1);
        let rest = &tokens[keep..];
        for (ci, chunk) in rest.chunks(self.batch).enumerate() {
            batch.clear();
            for (i, t) in chunk.iter().enumerate() {
                let pos = keep + ci * self.batch + i;
                let last = pos + 1 == tokens.len();
                batch.add(*t, pos as i32, &[0], all_logits || last).map_err(|e| e.to_string())?;
            }
            self.decode(&mut batch).map_err(|e| format!("llama.cpp could not decode the prompt ({e})."))?;
            self.cached.extend_from_slice(chunk);
            if all_logits {
                for i in 0..chunk.len() {
                    out.push(self.ctx.get_logits_ith(i as i32).to_vec());
                }
            }
        }
        Ok((keep, out))
    }

    /// Reads `tokens` on a fresh cache in batches and hands the logits of each position from
    /// `first` on to `on_row(position, logits)` (the rows before `first` are read as context only,
    /// their logits not even computed): what perplexity and KL divergence are measured on.
    pub fn score(&mut self, tokens: &[LlamaToken], first: usize, on_row: &mut dyn FnMut(usize, &[f32])) -> Result<(), String> {
        if tokens.len() > self.context_size() {
            return Err(format!("A chunk of {} tokens does not fit the {}-token context.", tokens.len(), self.context_size()));
        }
        self.ctx.clear_kv_cache();
        self.cached.clear();
        let mut batch = LlamaBatch::new(self.batch, 1);
        for (ci, chunk) in tokens.chunks(self.batch).enumerate() {
            batch.clear();
            let start = ci * self.batch;
            for (i, t) in chunk.iter().enumerate() {
                batch.add(*t, (start + i) as i32, &[0], start + i >= first).map_err(|e| e.to_string())?;
            }
            self.decode(&mut batch).map_err(|e| format!("llama.cpp could not decode the text ({e})."))?;
            for i in 0..chunk.len() {
                if start + i >= first {
                    on_row(start + i, self.ctx.get_logits_ith(i as i32));
                }
            }
            self.cached.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// The logits llama.cpp gives at every position of `ids` (a fresh cache): for parity checks.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, String> {
        self.ctx.clear_kv_cache();
        self.cached.clear();
        let toks: Vec<LlamaToken> = ids.iter().map(|&i| LlamaToken(i as i32)).collect();
        Ok(self.feed(&toks, true)?.1)
    }

    /// Greedy continuation of `ids` (token ids in, token ids out): for parity checks.
    pub fn greedy(&mut self, ids: &[u32], max_new: usize) -> Result<Vec<u32>, String> {
        let toks: Vec<LlamaToken> = ids.iter().map(|&i| LlamaToken(i as i32)).collect();
        let s = Sampling { temperature: 0.0, repeat_penalty: 1.0, max_tokens: max_new, ..Default::default() };
        let mut out = Vec::new();
        self.run(&toks, &s, &AtomicBool::new(false), &mut |_| {}, &mut |t| out.push(t.0 as u32))?;
        Ok(out)
    }

    /// For benchmarks: reads `prompt` in batches on a fresh cache, then decodes `n` tokens one at a
    /// time with the greedy sampler (end-of-turn tokens are decoded too, so every run makes `n`).
    /// Returns (prompt seconds, seconds to the first token, generation seconds).
    pub fn bench(&mut self, prompt: &[u32], n: usize) -> Result<(f64, f64, f64), String> {
        self.ctx.clear_kv_cache();
        self.cached.clear();
        let toks: Vec<LlamaToken> = prompt.iter().map(|&i| LlamaToken(i as i32)).collect();
        let t0 = Instant::now();
        self.feed(&toks, false)?;
        let pp = t0.elapsed().as_secs_f64();
        let mut sampler = LlamaSampler::greedy();
        let mut batch = LlamaBatch::new(1, 1);
        let t1 = Instant::now();
        let mut first = 0.0;
        for i in 0..n {
            let tok = sampler.sample(&self.ctx, -1);
            if i == 0 {
                first = t0.elapsed().as_secs_f64();
            }
            batch.clear();
            batch.add(tok, self.cached.len() as i32, &[0], true).map_err(|e| e.to_string())?;
            self.decode(&mut batch).map_err(|e| format!("llama.cpp could not decode ({e})."))?;
            self.cached.push(tok);
        }
        Ok((pp, first, t1.elapsed().as_secs_f64()))
    }

    /// Streams an answer to `prompt` (a rendered, tokenized conversation): `on_text` gets each new
    /// piece of text as soon as it is whole UTF-8 and cannot be the start of a stop string.
    pub fn generate(&mut self, prompt: &[LlamaToken], s: &Sampling, cancel: &AtomicBool, on_text: &mut dyn FnMut(&str)) -> Result<(String, Stats), String> {
        self.run(prompt, s, cancel, on_text, &mut |_| {})
    }

    fn run(
        &mut self,
        prompt: &[LlamaToken],
        s: &Sampling,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
        on_token: &mut dyn FnMut(LlamaToken),
    ) -> Result<(String, Stats), String> {
        let n_ctx = self.context_size();
        if prompt.len() >= n_ctx {
            return Err(format!(
                "The prompt is {} tokens and the context holds {n_ctx}; shorten it, or load the model with a larger context.",
                prompt.len()
            ));
        }
        let t0 = Instant::now();
        let (reused, _) = self.feed(prompt, false)?;
        let prompt_secs = t0.elapsed().as_secs_f64();
        let vocab = self.gguf.model.vocab();
        let mut sampler = sampler_chain(s, vocab.n_tokens());
        let tail = prompt.len().saturating_sub(s.repeat_last_n.max(0) as usize);
        sampler.accept_many(&prompt[tail..]);
        let mut out = Streamed::default();
        let mut first = None;
        let mut generated = 0usize;
        let t_gen = Instant::now();
        let mut batch = LlamaBatch::new(1, 1);
        let stop = loop {
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Cancelled;
            }
            if generated >= s.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.cached.len() >= n_ctx {
                break StopReason::ContextFull;
            }
            let tok = sampler.sample(&self.ctx, -1);
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            if vocab.is_eog(tok) {
                break StopReason::EndOfTurn;
            }
            on_token(tok);
            generated += 1;
            if out.push(&vocab.token_to_piece(tok, false, None), &s.stop, on_text) {
                break StopReason::StopString;
            }
            batch.clear();
            batch.add(tok, self.cached.len() as i32, &[0], true).map_err(|e| e.to_string())?;
            self.decode(&mut batch).map_err(|e| format!("llama.cpp could not decode ({e})."))?;
            self.cached.push(tok);
        };
        if stop != StopReason::StopString {
            out.finish(on_text);
        }
        let text = out.text;
        let stats = Stats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prompt_secs,
            first_token_secs: first.unwrap_or(prompt_secs),
            generated_tokens: generated,
            generation_secs: t_gen.elapsed().as_secs_f64(),
            context_used: self.cached.len(),
            context_size: n_ctx,
            stop,
        };
        Ok((text, stats))
    }
}

/// Greedy answers through llama.cpp, scored against the expected ones.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactMatch {
    pub correct: usize,
    /// Examples with an answer to compare with.
    pub asked: usize,
    pub generated: usize,
    pub generation_secs: f64,
}

/// Greedy answers through llama.cpp to each example's prompt, rendered with the GGUF's template,
/// compared with the expected answers (trimmed). The same rule as the training run's exact match
/// in candle.
pub fn exact_match(g: &Gguf, session: &mut Session, examples: &[Example], max_new: usize) -> Result<ExactMatch, String> {
    let s = Sampling { temperature: 0.0, repeat_penalty: 1.0, max_tokens: max_new, ..Default::default() };
    let mut m = ExactMatch::default();
    for ex in examples {
        let Some((messages, answer)) = chat_prompt(ex) else { continue };
        if answer.is_empty() {
            continue;
        }
        let prompt = g.tokenize(&g.render(&messages, true)?);
        let (text, stats) = session.generate(&prompt, &s, &AtomicBool::new(false), &mut |_| {})?;
        m.asked += 1;
        m.generated += stats.generated_tokens;
        m.generation_secs += stats.generation_secs;
        if text.trim() == answer.trim() {
            m.correct += 1;
        }
    }
    Ok(m)
}

/// Sampled tokens' bytes as text safe to stream: only whole UTF-8 goes out, and nothing that
/// could be the start of a stop string until it is known not to be one.
#[derive(Debug, Default)]
pub struct Streamed {
    /// The answer so far (cut before a stop string once one is found).
    pub text: String,
    emitted: usize,
    pending: Vec<u8>,
}

impl Streamed {
    /// Adds a token's bytes; `on_text` gets what may be shown now. True when a stop string
    /// appeared: the text ends before it, and generation should stop.
    pub fn push(&mut self, bytes: &[u8], stop: &[String], on_text: &mut dyn FnMut(&str)) -> bool {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Bytes that can never become UTF-8: shown as the replacement character.
            Err(_) => self.pending.len(),
        };
        self.text.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
        self.pending.drain(..valid);
        if let Some(at) = stop.iter().filter(|x| !x.is_empty()).filter_map(|x| self.text.find(x.as_str())).min() {
            self.text.truncate(at);
            if self.emitted < self.text.len() {
                on_text(&self.text[self.emitted..]);
            }
            self.emitted = self.text.len();
            return true;
        }
        let hold = stop.iter().map(|x| held_back(&self.text, x)).max().unwrap_or(0);
        let safe = self.text.len() - hold;
        if safe > self.emitted {
            on_text(&self.text[self.emitted..safe]);
            self.emitted = safe;
        }
        false
    }

    /// The end (not at a stop string): what was held back goes out.
    pub fn finish(&mut self, on_text: &mut dyn FnMut(&str)) {
        if self.emitted < self.text.len() {
            on_text(&self.text[self.emitted..]);
            self.emitted = self.text.len();
        }
    }
}

/// How many bytes at the end of `text` could be the start of `stop` (held back from streaming).
fn held_back(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

pub fn sampler_chain(s: &Sampling, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    // llama.cpp indexes the logits by these ids unchecked: only the model's own tokens pass.
    let biases: Vec<LlamaLogitBias> = s.logit_bias.iter().filter(|(t, _)| (0..n_vocab).contains(t)).map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b)).collect();
    if !biases.is_empty() {
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if s.repeat_penalty != 1.0 || s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(n_vocab, s.repeat_last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty));
    }
    if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
    }
    LlamaSampler::chain_simple(chain)
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn a_possible_stop_string_start_is_held_back() {
        assert_eq!(held_back("The answer is ##", "###"), 2);
        assert_eq!(held_back("The answer", "###"), 0);
        assert_eq!(held_back("x</", "</s>"), 2);
        assert_eq!(held_back("é<", "<|end|>"), 1);
    }
}
