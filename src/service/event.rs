//! What the service says back: `Event`s on the subscription (plain serde data, the wire format a
//! server streams to its clients), the typed `ServiceError` each front end words its own way, and
//! the typed plan of a training run that the CLI and the workstation each present.

use serde::{Deserialize, Serialize};

use crate::engine::data::chats::{ChatRecord, ChatSummary};
use crate::engine::data::runs::{MetricRow, RunRow};
use crate::engine::data::worker::DataEvent;
use crate::engine::data::DataError;
use crate::engine::infer::library::ModelEntry;
use crate::engine::infer::worker::ChatEvent;
use crate::engine::jobs::JobEvent;
use crate::engine::sysmon::SysSample;
use crate::engine::train::text::LengthStats;
use crate::engine::train::trainer::{Outcome, TrainEvent};

/// Why a call failed, by kind. The message is a sentence that says what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Another process or job holds what the call needs.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
    /// Not allowed to this caller, however it is asked (a write through read-only SQL).
    #[error("{0}")]
    Refused(String),
    /// An engine failed doing what was asked (a database error, a full disk, a crash).
    #[error("{0}")]
    Engine(String),
}

impl From<DataError> for ServiceError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Locked { .. } => ServiceError::Busy(e.to_string()),
            DataError::Exists(_) => ServiceError::AlreadyExists(e.to_string()),
            DataError::User(m) => ServiceError::Invalid(m),
            DataError::Refused(m) => ServiceError::Refused(m),
            DataError::Db(_) | DataError::Io(_) => ServiceError::Engine(e.to_string()),
        }
    }
}

/// What a training run would be, checked before it starts: the memory it needs against what is
/// free, the split, the token lengths and two examples with their trained tokens in [brackets].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub memory_needed: u64,
    pub memory_available: u64,
    /// What the run would need as LoRA on a 4-bit base (QLoRA), when its base is f32.
    pub memory_4bit: Option<u64>,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub max_len: usize,
    pub lengths: LengthStats,
    pub examples: Vec<String>,
}

impl TrainPlan {
    pub fn fits(&self) -> bool {
        self.memory_needed <= self.memory_available
    }
}

/// Everything the service reports. List answers carry the request id they answer, so a client
/// drops one that a newer request has overtaken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Data(DataEvent),
    Job(JobEvent),
    Sys(SysSample),
    /// A chat side's event: side 0 is the conversation's model, side 1 the one compared with it.
    Chat { side: usize, event: ChatEvent },
    Train(TrainEvent),
    /// A training run ended, or could not start.
    TrainDone(Result<Outcome, String>),
    TrainChecked(Result<TrainPlan, ServiceError>),
    Runs { request: u64, result: Result<Vec<RunRow>, ServiceError> },
    /// A run's metrics, for its detail view or (`overlay`) the loss chart.
    RunMetrics { id: String, overlay: bool, metrics: Vec<MetricRow> },
    Models { request: u64, result: Result<Vec<ModelEntry>, ServiceError> },
    /// An export wrote a model (the library has changed).
    Exported(crate::engine::export::gguf::Exported),
    /// A quantization report finished (its rows are in lathe.quant_evals).
    QuantReported(super::quant_report::Report),
    /// Every quantization report's rows (`Service::list_quant_evals`).
    QuantEvals { request: u64, result: Result<Vec<crate::engine::data::quant_evals::QuantEval>, ServiceError> },
    Chats { request: u64, result: Result<Vec<ChatSummary>, ServiceError> },
    ChatOpened(Result<ChatRecord, ServiceError>),
    Collections { request: u64, result: Result<Vec<crate::engine::knowledge::store::CollectionInfo>, ServiceError> },
    Searched { request: u64, result: Result<super::SearchResult, ServiceError> },
    /// The sources for a chat message (`Service::retrieve`).
    Retrieved { id: u64, result: Result<super::SearchResult, ServiceError> },
    /// An ingest job's progress.
    Ingest { job: crate::engine::jobs::JobId, progress: crate::engine::knowledge::ingest::Progress },
    /// An ingest job's outcome (a cancelled one's report says so).
    Ingested { job: crate::engine::jobs::JobId, result: Result<crate::engine::knowledge::ingest::Report, ServiceError> },
    /// Completions of `typed` (the request: a client drops them once its text has changed).
    PathCompletions { typed: String, list: Vec<String> },
    Info(String),
    Failure(String),
    /// The figures of the server this service works through (every two seconds).
    Server(super::attached::ServerStatus),
    /// The server this service worked through has gone (a sentence saying so); `reattach` next.
    Detached(String),
    /// A server started by `start_serving` listens at this address, or why it does not.
    Serving(Result<String, String>),
}
