//! The shared vocabulary of inference: a chat message, sampling settings, an answer's figures and
//! why it stopped. Engines, the service and every front end speak it; it imports nothing of lathe.

use serde::{Deserialize, Serialize};

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
