//! Remote backends: an Ollama server (/api/chat, NDJSON stream) and any OpenAI-compatible server
//! (/v1/chat/completions, server-sent events), reached over HTTP/1.1, plain or TLS (engine/http.rs).
//! Answers stream token by token like the llama.cpp engine's, with the same stop and figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{json, Value};

use crate::engine::http::request;
use crate::engine::types::{Message, Sampling, Stats, StopReason};

pub use crate::engine::types::Remote;

/// A model a server offers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RemoteModel {
    pub name: String,
    pub size: u64,
    pub details: String,
    pub family: String,
    pub quantization: String,
}

impl Remote {
    pub fn describe(&self) -> String {
        match self {
            Remote::Ollama { base, model } => format!("ollama:{model} at {base}"),
            Remote::OpenAi { base, model, .. } => format!("{model} at {base}"),
        }
    }

    fn not_running(&self, e: String) -> String {
        match self {
            Remote::Ollama { base, .. } if e.starts_with("Nothing answers") => {
                format!("Ollama is not running at {base}; start it with `ollama serve` (or give ollama:MODEL@HOST:PORT).")
            }
            _ => e,
        }
    }

    /// The models the server has.
    pub fn models(&self) -> Result<Vec<RemoteModel>, String> {
        let mut text = String::new();
        let (url, key) = match self {
            Remote::Ollama { base, .. } => (format!("{base}/api/tags"), None),
            Remote::OpenAi { base, api_key, .. } => (format!("{base}/models"), api_key.as_deref()),
        };
        request("GET", &url, None, key, &mut |l| {
            text.push_str(l);
            text.push('\n');
            true
        })
        .map_err(|e| self.not_running(e))?;
        let v: Value = serde_json::from_str(&text).map_err(|_| format!("{url} did not answer with a model list."))?;
        Ok(match self {
            Remote::Ollama { .. } => v["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| RemoteModel {
                    name: m["name"].as_str().unwrap_or("").into(),
                    size: m["size"].as_u64().unwrap_or(0),
                    details: format!(
                        "{} {} {}",
                        m["details"]["family"].as_str().unwrap_or(""),
                        m["details"]["parameter_size"].as_str().unwrap_or(""),
                        m["details"]["quantization_level"].as_str().unwrap_or("")
                    )
                    .trim()
                    .to_string(),
                    family: m["details"]["family"].as_str().unwrap_or("").into(),
                    quantization: m["details"]["quantization_level"].as_str().unwrap_or("").into(),
                })
                .collect(),
            Remote::OpenAi { .. } => v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| RemoteModel {
                    name: m["id"].as_str().unwrap_or("").into(),
                    size: 0,
                    details: m["owned_by"].as_str().unwrap_or("").into(),
                    family: String::new(),
                    quantization: String::new(),
                })
                .collect(),
        })
    }

    /// Checks the server is there and has the model.
    pub fn check(&self) -> Result<(), String> {
        let list = self.models()?;
        let model = match self {
            Remote::Ollama { model, .. } | Remote::OpenAi { model, .. } => model,
        };
        let has = list.iter().any(|m| &m.name == model || m.name == format!("{model}:latest"));
        if !has && !list.is_empty() {
            let names: Vec<&str> = list.iter().take(8).map(|m| m.name.as_str()).collect();
            return Err(format!("The server has no model {model:?}; it has {}.", names.join(", ")));
        }
        Ok(())
    }

    /// Streams an answer to `messages`.
    pub fn generate(&self, messages: &[Message], s: &Sampling, cancel: &AtomicBool, on_text: &mut dyn FnMut(&str)) -> Result<(String, Stats), String> {
        let t0 = Instant::now();
        let mut first = None;
        let mut text = String::new();
        let mut pieces = 0usize;
        let mut server_tokens: Option<(usize, f64, usize)> = None;
        let mut finished = false;
        let mut stopped = false;
        let (url, body, key) = match self {
            Remote::Ollama { base, model } => {
                let mut options = json!({"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
                    "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n, "num_predict": s.max_tokens, "stop": s.stop});
                if s.seed != 0 {
                    options["seed"] = json!(s.seed);
                }
                (format!("{base}/api/chat"), json!({"model": model, "messages": messages, "stream": true, "options": options}), None)
            }
            Remote::OpenAi { base, model, api_key } => {
                let mut b = json!({"model": model, "messages": messages, "stream": true, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens});
                if !s.stop.is_empty() {
                    b["stop"] = json!(s.stop);
                }
                if s.seed != 0 {
                    b["seed"] = json!(s.seed);
                }
                (format!("{base}/chat/completions"), b, api_key.as_deref())
            }
        };
        let ollama = matches!(self, Remote::Ollama { .. });
        let result = request("POST", &url, Some(&body.to_string()), key, &mut |line| {
            if cancel.load(Ordering::Relaxed) {
                stopped = true;
                return false;
            }
            let data = if ollama { line } else { line.strip_prefix("data:").map(str::trim).unwrap_or("") };
            if data.is_empty() {
                return true;
            }
            if data == "[DONE]" {
                finished = true;
                return false;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else { return true };
            let piece = if ollama { v["message"]["content"].as_str() } else { v["choices"][0]["delta"]["content"].as_str() };
            if let Some(p) = piece.filter(|p| !p.is_empty()) {
                first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                pieces += 1;
                text.push_str(p);
                on_text(p);
            }
            if ollama && v["done"].as_bool() == Some(true) {
                finished = true;
                if let (Some(n), Some(ns)) = (v["eval_count"].as_u64(), v["eval_duration"].as_u64()) {
                    server_tokens = Some((n as usize, ns as f64 / 1e9, v["prompt_eval_count"].as_u64().unwrap_or(0) as usize));
                }
                return false;
            }
            if !ollama && v["choices"][0]["finish_reason"].is_string() {
                finished = true;
            }
            true
        });
        result.map_err(|e| self.not_running(e))?;
        if !finished && !stopped {
            return Err(format!("{} closed the stream before the answer ended; the text so far is kept.", self.describe()));
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let first_secs = first.unwrap_or(elapsed);
        let (generated, gen_secs, prompt_tokens) = server_tokens.unwrap_or((pieces, (elapsed - first_secs).max(1e-9), 0));
        Ok((
            text,
            Stats {
                prompt_tokens,
                reused_tokens: 0,
                prompt_secs: first_secs,
                first_token_secs: first_secs,
                generated_tokens: generated,
                generation_secs: gen_secs,
                context_used: 0,
                context_size: 0,
                stop: if stopped { StopReason::Cancelled } else { StopReason::EndOfTurn },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_the_backend() {
        assert_eq!(Remote::parse("m.gguf"), None);
        assert_eq!(
            Remote::parse("ollama:qwen2.5:0.5b@10.0.0.2:11434"),
            Some(Ok(Remote::Ollama { base: "http://10.0.0.2:11434".into(), model: "qwen2.5:0.5b".into() }))
        );
        assert!(matches!(Remote::parse("openai:gpt@http://h:8000/v1/"), Some(Ok(Remote::OpenAi { ref base, .. })) if base == "http://h:8000/v1"));
        assert!(Remote::parse("openai:gpt").unwrap().is_err());
    }
}
