//! The shared vocabulary of inference and runs: a model reference (a file or a server), a chat
//! message, sampling settings, an answer's figures and why it stopped, a run's status. Engines, the
//! service and every front end speak it; it imports nothing of lathe.

use serde::{Deserialize, Serialize};

/// What a chat side runs: a GGUF file through llama.cpp, or a model on a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelRef {
    File(std::path::PathBuf),
    Server(Remote),
}

/// A model on an Ollama or OpenAI-compatible server (`engine::infer::remote` talks to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Remote {
    /// An Ollama server, e.g. http://localhost:11434, and a model it has.
    Ollama { base: String, model: String },
    /// An OpenAI-compatible server's base URL (…/v1), a model, and an API key (never serialized,
    /// so never saved, streamed or shown).
    OpenAi {
        base: String,
        model: String,
        #[serde(skip)]
        api_key: Option<String>,
    },
}

impl Remote {
    /// Reads a model spec: `ollama:MODEL[@HOST:PORT]` or `openai:MODEL@http(s)://HOST[:PORT]/v1`
    /// (the API key, if any, from $LATHE_API_KEY or $OPENAI_API_KEY). Anything else is not a
    /// server spec (None); Some(Err) says what a malformed one lacks.
    pub fn parse(spec: &str) -> Option<Result<Remote, String>> {
        if let Some(rest) = spec.strip_prefix("ollama:") {
            let (model, host) = match rest.rsplit_once('@') {
                Some((m, h)) => (m, h.to_string()),
                None => (rest, std::env::var("OLLAMA_HOST").unwrap_or_else(|_| "localhost:11434".into())),
            };
            let base = if host.starts_with("http") { host.trim_end_matches('/').to_string() } else { format!("http://{host}") };
            return Some(if model.is_empty() { Err("Name the Ollama model: ollama:NAME (e.g. ollama:qwen2.5:0.5b).".into()) } else { Ok(Remote::Ollama { base, model: model.into() }) });
        }
        let rest = spec.strip_prefix("openai:")?;
        Some(match rest.split_once('@') {
            Some((m, base)) if !m.is_empty() && !base.is_empty() => {
                let api_key = std::env::var("LATHE_API_KEY").or_else(|_| std::env::var("OPENAI_API_KEY")).ok();
                Ok(Remote::OpenAi { base: base.trim_end_matches('/').into(), model: m.into(), api_key })
            }
            _ => Err("Give the model and the server: openai:MODEL@http://HOST:PORT/v1 (or https://…).".into()),
        })
    }
}

/// An OpenAI-compatible server the user added to the model library under a short name: its
/// models are listed and answered as `NAME/MODEL`, with the API key read from the environment
/// variable `key_env` (the variable's name is kept, never the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelServer {
    pub name: String,
    pub base: String,
    pub key_env: Option<String>,
}

impl ModelServer {
    /// One of its models, with the key as the environment holds it now.
    pub fn remote(&self, model: &str) -> Remote {
        let api_key = self.key_env.as_deref().and_then(|v| std::env::var(v).ok());
        Remote::OpenAi { base: self.base.clone(), model: model.into(), api_key }
    }

    /// The name a server gets when the user gives none: its host (`localhost`, `api.openai.com`).
    pub fn default_name(base: &str) -> String {
        let rest = base.split_once("://").map_or(base, |(_, r)| r);
        let host = rest.split('/').next().unwrap_or(rest);
        let host = if host.starts_with('[') { host.split(']').next().unwrap_or(host).trim_start_matches('[') } else { host.split(':').next().unwrap_or(host) };
        host.to_string()
    }
}

impl ModelRef {
    /// The name a header shows: a file's name, a server model's spec.
    pub fn label(&self) -> String {
        match self {
            ModelRef::File(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string()),
            ModelRef::Server(_) => self.to_string(),
        }
    }
}

/// The spec a user types for it (`ollama:MODEL@BASE`, `openai:MODEL@BASE`, or the path); it
/// parses back to the same reference.
impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRef::File(p) => write!(f, "{}", p.display()),
            ModelRef::Server(Remote::Ollama { base, model }) => write!(f, "ollama:{model}@{base}"),
            ModelRef::Server(Remote::OpenAi { base, model, .. }) => write!(f, "openai:{model}@{base}"),
        }
    }
}

/// One turn of a conversation (also a training example's turn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Sampling settings for one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 samples greedily.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub seed: u32,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// OpenAI's penalties: subtracted from a token's logit per time it appeared (frequency) or
    /// once if it did (presence), over the last `repeat_last_n` tokens.
    #[serde(default)]
    pub frequency_penalty: f32,
    #[serde(default)]
    pub presence_penalty: f32,
    /// OpenAI's logit_bias: (token id, bias) added to the token's logit before sampling; -100
    /// bans a token, 100 all but forces it.
    #[serde(default)]
    pub logit_bias: Vec<(i32, f32)>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 0,
            max_tokens: 512,
            stop: Vec::new(),
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The model ended its turn.
    EndOfTurn,
    MaxTokens,
    StopString,
    Cancelled,
    ContextFull,
}

/// Figures for one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub prompt_tokens: usize,
    /// Prompt tokens the KV cache already held.
    pub reused_tokens: usize,
    pub prompt_secs: f64,
    pub first_token_secs: f64,
    pub generated_tokens: usize,
    pub generation_secs: f64,
    pub context_used: usize,
    pub context_size: usize,
    pub stop: StopReason,
}

impl Stats {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        (self.prompt_tokens - self.reused_tokens) as f64 / self.prompt_secs.max(1e-9)
    }
    pub fn tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_secs.max(1e-9)
    }
}

/// Where a training run stands. Stored in `lathe.runs.status` as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Asked for; its job has not reported yet (the workstation's own state, never stored).
    #[default]
    Starting,
    Running,
    Paused,
    Completed,
    StoppedEarly,
    Cancelled,
    /// The process training it went away; `lathe train --resume` continues it.
    Interrupted,
    Failed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Starting,
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::StoppedEarly,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
        RunStatus::Failed,
    ];

    /// The stored name: `stopped_early`.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::StoppedEarly => "stopped_early",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }

    /// A stored name back; an unknown one (a newer lathe's) reads as failed.
    pub fn parse(name: &str) -> RunStatus {
        RunStatus::ALL.into_iter().find(|s| s.name() == name).unwrap_or(RunStatus::Failed)
    }

    /// The name in words: `stopped early`.
    pub fn words(self) -> &'static str {
        match self {
            RunStatus::StoppedEarly => "stopped early",
            s => s.name(),
        }
    }

    /// Training now (or about to, or paused in the middle).
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Starting | RunStatus::Running | RunStatus::Paused)
    }

    /// Ended before its last step: resuming continues it.
    pub fn is_resumable(self) -> bool {
        matches!(self, RunStatus::Interrupted | RunStatus::Cancelled | RunStatus::Failed)
    }

    /// Trained to the end (all steps, or early stopping).
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::StoppedEarly)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_reference_prints_as_the_spec_it_parses_from() {
        for spec in ["ollama:qwen2.5:0.5b@http://10.0.0.2:11434", "openai:m1@https://h:8000/v1"] {
            let r = ModelRef::Server(Remote::parse(spec).unwrap().unwrap());
            assert_eq!(r.to_string(), spec);
        }
        assert_eq!(Remote::parse("ollama:tiny@h:1").unwrap().unwrap(), Remote::Ollama { base: "http://h:1".into(), model: "tiny".into() });
        assert!(Remote::parse("openai:gpt").unwrap().is_err());
        assert!(Remote::parse("/models/a.gguf").is_none());
        assert_eq!(ModelRef::File("/m/a-q8_0.gguf".into()).label(), "a-q8_0.gguf");
        // The key is never part of the wire form.
        let key = ModelRef::Server(Remote::OpenAi { base: "http://h/v1".into(), model: "m".into(), api_key: Some("sk-secret".into()) });
        assert!(!serde_json::to_string(&key).unwrap().contains("sk-secret"));
    }
}
