//! From training-set rows to token ids with a loss mask: the model's own tokenizer
//! (tokenizer.json) and chat template (the Jinja template in tokenizer_config.json or
//! chat_template.jinja, rendered with minijinja the way transformers renders it).

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::engine::data::views::Example;
use crate::engine::types::Message;

pub struct TextCodec {
    pub tok: Tokenizer,
    template: Option<String>,
    pub bos: Option<(String, u32)>,
    pub eos: Option<(String, u32)>,
}

/// Token ids of one example and, for each token, whether the model is trained to predict it.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub train: Vec<bool>,
}

impl Encoded {
    pub fn trained_tokens(&self) -> usize {
        self.train.iter().skip(1).filter(|&&t| t).count()
    }
    /// Index of the first trained token (where the completion starts).
    pub fn completion_start(&self) -> Option<usize> {
        self.train.iter().position(|&t| t)
    }
}

fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextCodec {
    pub fn load(dir: &Path) -> Result<TextCodec, String> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(format!(
                "No tokenizer.json in {}; lathe needs the fast tokenizer file that Hugging Face model folders carry.",
                dir.display()
            ));
        }
        let tok = Tokenizer::from_file(&path)
            .map_err(|e| format!("{} cannot be read as a tokenizer ({e}); copy the model folder again.", path.display()))?;
        let cfg: Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                format!("{}/tokenizer_config.json is not valid JSON ({e}); fix or remove it.", dir.display())
            })?,
            Err(_) => Value::Null,
        };
        let mut template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        if template.is_none() {
            if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
                template = Some(t);
            }
        }
        let lookup = |s: Option<String>| s.and_then(|s| tok.token_to_id(&s).map(|id| (s, id)));
        let bos = lookup(token_string(cfg.get("bos_token")));
        let eos = lookup(token_string(cfg.get("eos_token")));
        let codec = TextCodec { tok, template, bos, eos };
        if let Some(t) = &codec.template {
            template_env(t).map_err(|e| format!("The chat template in {} does not parse ({e}).", dir.display()))?;
        }
        Ok(codec)
    }

    pub fn from_parts(tok: Tokenizer, template: Option<String>, bos: Option<(String, u32)>, eos: Option<(String, u32)>) -> TextCodec {
        TextCodec { tok, template, bos, eos }
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// The model's own chat template, if it has one.
    pub fn template_source(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// The chat template applied to `messages`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let Some(t) = &self.template else {
            return Ok(plain_chat(messages, add_generation_prompt));
        };
        let bos = self.bos.as_ref().map(|b| b.0.as_str()).unwrap_or_default();
        let eos = self.eos.as_ref().map(|b| b.0.as_str()).unwrap_or_default();
        render_template(t, messages, add_generation_prompt, bos, eos)
    }

    fn ids(&self, text: &str, special: bool) -> Result<Vec<u32>, String> {
        Ok(self.tok.encode(text, special).map_err(|e| format!("tokenizer: {e}"))?.get_ids().to_vec())
    }

    /// Text segments with their "trained" flag, for one example.
    fn segments(&self, ex: &Example) -> Result<(Vec<(String, bool)>, bool), String> {
        let messages = match ex {
            Example::Text { text } => return Ok((vec![(text.clone(), true)], true)),
            Example::Completion { prompt, completion } => {
                return Ok((vec![(prompt.clone(), false), (completion.clone(), true)], true));
            }
            Example::Alpaca { instruction, input, output } => alpaca_messages(instruction, input.as_deref(), output),
            Example::Chat { messages } => messages.clone(),
        };
        let mut segs = Vec::new();
        let mut done = String::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let prompt = self.render(&messages[..i], true)?;
            let full = self.render(&messages[..=i], false)?;
            if !prompt.starts_with(&done) || !full.starts_with(&prompt) {
                // A template that rewrites earlier turns: train on the whole new tail.
                let tail = full.strip_prefix(done.as_str()).unwrap_or(&full).to_string();
                segs.push((tail, true));
            } else {
                segs.push((prompt[done.len()..].to_string(), false));
                segs.push((full[prompt.len()..].to_string(), true));
            }
            done = full;
        }
        // Without a template lathe's plain format adds no end marker; the EOS is appended.
        Ok((segs, self.template.is_none()))
    }

    /// Token ids with the loss mask: only completion (assistant) tokens are trained, plus the EOS
    /// that ends them where lathe appends one.
    pub fn encode(&self, ex: &Example) -> Result<Encoded, String> {
        let (segs, append_eos) = self.segments(ex)?;
        let templated = self.template.is_some() && !matches!(ex, Example::Text { .. } | Example::Completion { .. });
        let mut ids = Vec::new();
        let mut train = Vec::new();
        for (i, (text, t)) in segs.iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            // transformers tokenizes rendered chat text without adding special tokens (the
            // template writes them); raw text gets the tokenizer's own BOS handling once.
            let special = !templated && i == 0;
            let part = self.ids(text, special)?;
            train.extend(std::iter::repeat_n(*t, part.len()));
            if special && *t {
                // BOS (and other added specials) is never a target.
                for (j, id) in part.iter().enumerate() {
                    if Some(*id) == self.bos.as_ref().map(|b| b.1) {
                        train[ids.len() + j] = false;
                    }
                }
            }
            ids.extend(part);
        }
        if append_eos && !matches!(ex, Example::Text { .. }) {
            if let Some((_, e)) = &self.eos {
                ids.push(*e);
                train.push(true);
            }
        }
        Ok(Encoded { ids, train })
    }

    /// The prompt of an example (everything before the first trained token) and the expected
    /// answer text: what exact-match evaluation generates from and compares with.
    pub fn prompt_and_answer(&self, ex: &Example) -> Result<(Vec<u32>, String), String> {
        let enc = self.encode(ex)?;
        let start = enc.completion_start().unwrap_or(enc.ids.len());
        let answer = match ex {
            Example::Alpaca { output, .. } => output.clone(),
            Example::Completion { completion, .. } => completion.clone(),
            Example::Chat { messages } => messages.iter().rev().find(|m| m.role == "assistant").map(|m| m.content.clone()).unwrap_or_default(),
            Example::Text { .. } => String::new(),
        };
        Ok((enc.ids[..start].to_vec(), answer))
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tok.decode(ids, true).unwrap_or_default()
    }

    /// Token ids that end generation: EOS and, for templated models, the template's turn end
    /// when it is a single special token.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.eos.iter().map(|e| e.1).collect();
        for s in ["<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>"] {
            if let Some(id) = self.tok.token_to_id(s) {
                v.push(id);
            }
        }
        v.sort();
        v.dedup();
        v
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
}

/// An Alpaca row as a conversation: the instruction (and input, after a blank line) from the user.
fn alpaca_messages(instruction: &str, input: Option<&str>, output: &str) -> Vec<Message> {
    let user = match input.filter(|s| !s.is_empty()) {
        Some(i) => format!("{instruction}\n\n{i}"),
        None => instruction.to_string(),
    };
    vec![Message { role: "user".into(), content: user }, Message { role: "assistant".into(), content: output.to_string() }]
}

/// The conversation up to an example's last answer, and that answer: what a chat model is asked
/// and should say. `None` for raw-text and completion rows, which have no conversation.
pub fn chat_prompt(ex: &Example) -> Option<(Vec<Message>, String)> {
    let mut messages = match ex {
        Example::Alpaca { instruction, input, output } => alpaca_messages(instruction, input.as_deref(), output),
        Example::Chat { messages } => messages.clone(),
        _ => return None,
    };
    let last = messages.iter().rposition(|m| m.role == "assistant")?;
    let answer = messages[last].content.clone();
    messages.truncate(last);
    Some((messages, answer))
}

/// `plain_chat` as a Jinja chat template: what a GGUF export of a model without a template carries,
/// so that llama.cpp and lathe's chat prompt it the way it was trained.
pub const PLAIN_TEMPLATE: &str = r#"{%- for m in messages -%}
{%- if m['role'] == 'system' -%}{{ m['content'] + '\n\n' }}
{%- elif m['role'] == 'user' -%}{{ '### Instruction:\n' + m['content'] + '\n\n' }}
{%- else -%}{{ '### Response:\n' + m['content'] + '\n\n' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '### Response:\n' }}{%- endif -%}"#;

/// Renders a chat template the way transformers does (trim and lstrip blocks, Python string
/// methods, `raise_exception`).
pub fn render_template(template: &str, messages: &[Message], add_generation_prompt: bool, bos: &str, eos: &str) -> Result<String, String> {
    let env = template_env(template).map_err(|e| format!("the chat template does not parse: {e}"))?;
    let tpl = env.get_template("chat").map_err(|e| e.to_string())?;
    tpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| format!("the chat template failed: {e}"))
}

fn template_env(template: &str) -> Result<minijinja::Environment<'_>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    // Today's date, as transformers gives templates (Llama 3's system header shows it).
    env.add_function("strftime_now", |fmt: String| -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        crate::units::strftime_date(&fmt, now.as_secs() as i64)
    });
    env.add_template("chat", template)?;
    Ok(env)
}

/// lathe's format for models without a chat template (base models): Alpaca-style headers.
fn plain_chat(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut s = String::new();
    for m in messages {
        match m.role.as_str() {
            "system" => s.push_str(&format!("{}\n\n", m.content)),
            "user" => s.push_str(&format!("### Instruction:\n{}\n\n", m.content)),
            _ => s.push_str(&format!("### Response:\n{}\n\n", m.content)),
        }
    }
    if add_generation_prompt {
        s.push_str("### Response:\n");
    }
    s
}

/// Token lengths of encoded examples: what the start form and `lathe train` preview show.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LengthStats {
    pub count: usize,
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    pub truncated: usize,
    /// (upper bound, count) buckets for a histogram.
    pub histogram: Vec<(usize, usize)>,
}

pub fn length_stats(lengths: &[usize], max_len: usize) -> LengthStats {
    let mut v = lengths.to_vec();
    v.sort_unstable();
    let at = |q: f64| if v.is_empty() { 0 } else { v[((v.len() - 1) as f64 * q).round() as usize] };
    let max = v.last().copied().unwrap_or(0);
    let top = max.max(1);
    let buckets = 8usize;
    let width = top.div_ceil(buckets).max(1);
    let mut histogram: Vec<(usize, usize)> = (1..=buckets).map(|i| (i * width, 0)).collect();
    for &l in &v {
        let b = ((l.max(1) - 1) / width).min(buckets - 1);
        histogram[b].1 += 1;
    }
    LengthStats {
        count: v.len(),
        min: v.first().copied().unwrap_or(0),
        median: at(0.5),
        p95: at(0.95),
        max,
        truncated: v.iter().filter(|&&l| l > max_len).count(),
        histogram,
    }
}

/// One example drawn as tokens with its mask: trained tokens in [brackets].
pub fn render_mask(codec: &TextCodec, enc: &Encoded) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < enc.ids.len() {
        let t = enc.train[i];
        let mut j = i;
        while j < enc.ids.len() && enc.train[j] == t {
            j += 1;
        }
        let text = codec.tok.decode(&enc.ids[i..j], false).unwrap_or_default();
        if t {
            out.push('[');
            out.push_str(&text);
            out.push(']');
        } else {
            out.push_str(&text);
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_template_renders_as_plain_chat() {
        let m = |role: &str, content: &str| Message { role: role.into(), content: content.into() };
        let convs = [
            vec![m("user", "Reverse: a b c")],
            vec![m("system", "Be brief."), m("user", "Sort: c a b"), m("assistant", "a b c"), m("user", "Again")],
        ];
        for c in &convs {
            for gen in [false, true] {
                assert_eq!(render_template(PLAIN_TEMPLATE, c, gen, "", "").unwrap(), plain_chat(c, gen));
            }
        }
    }
}
