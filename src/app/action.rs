//! The messages of the loop: `Action` (what happened or what the user wants) goes into the
//! reducer; `Command` (work for an engine) comes out. Both are plain data.

use serde::{Deserialize, Serialize};

use crate::engine::data::worker::DataEvent;
use crate::engine::jobs::{JobEvent, JobId};
use crate::engine::sysmon::SysSample;

/// The panes, in tab order. Their digit key is their position + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaneId {
    Training,
    Loss,
    Data,
    Chat,
    System,
    Runs,
    Models,
    Knowledge,
}

impl PaneId {
    pub const ALL: [PaneId; 8] = [
        PaneId::Training,
        PaneId::Loss,
        PaneId::Data,
        PaneId::Chat,
        PaneId::System,
        PaneId::Runs,
        PaneId::Models,
        PaneId::Knowledge,
    ];

    pub fn title(self) -> &'static str {
        match self {
            PaneId::Training => "Training",
            PaneId::Loss => "Loss",
            PaneId::Data => "Data",
            PaneId::Chat => "Chat",
            PaneId::System => "System",
            PaneId::Runs => "Runs",
            PaneId::Models => "Models",
            PaneId::Knowledge => "Knowledge",
        }
    }

    pub fn index(self) -> usize {
        PaneId::ALL.iter().position(|p| *p == self).unwrap()
    }

    pub fn name(self) -> &'static str {
        match self {
            PaneId::Training => "training",
            PaneId::Loss => "loss",
            PaneId::Data => "data",
            PaneId::Chat => "chat",
            PaneId::System => "system",
            PaneId::Runs => "runs",
            PaneId::Models => "models",
            PaneId::Knowledge => "knowledge",
        }
    }

    pub fn from_name(s: &str) -> Option<PaneId> {
        PaneId::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// A key as plain data, for text input (crossterm's event type stays in app/).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPress {
    pub key: TextKey,
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextKey {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    PageUp,
    PageDown,
    Tab,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    // Bindable from the keymap.
    Quit,
    FocusNext,
    FocusPrev,
    Focus(PaneId),
    ToggleZoom,
    ToggleHelp,
    /// Closes the top overlay, or dismisses the newest notice.
    Close,
    ScrollUp,
    ScrollDown,
    PageUp,
    PageDown,
    NextTheme,
    Confirm,
    Deny,
    /// Sends the chat input.
    Send,
    /// A newline in a text input.
    Newline,
    RunQuery,
    /// Stops the running query; with none running, leaves the grid for the editor.
    CancelQuery,
    SwitchDataFocus,
    HistoryPrev,
    HistoryNext,
    ScrollLeft,
    ScrollRight,
    /// In the quantization overlay: the run's previous or next report.
    PrevReport,
    NextReport,
    Top,
    Bottom,
    /// Shows the selected row in full.
    ViewRow,
    /// Asks for a file, glob or folder to import as a dataset.
    OpenImport,
    /// Asks for a file to write the current result to.
    OpenExport,
    /// Completes the path being typed.
    Complete,
    /// Shows the training-set views with example rows.
    PreviewViews,
    /// Trains the bundled demo model (a new run).
    StartDemo,
    /// Opens the new-run form.
    NewRun,
    /// Pauses or resumes the run that is training.
    PauseRun,
    /// Cancels the run that is training (its last checkpoint stays).
    CancelRun,
    /// Resumes the selected (Runs pane) or last interrupted run from its checkpoint.
    ResumeRun,
    /// Asks the engine to check the form: memory estimate and a preview.
    CheckForm,
    ToggleSmooth,
    ToggleLogScale,
    ZoomIn,
    ZoomOut,
    /// Draws the next recorded run beside the live curves (cycles; off after the last).
    OverlayRun,
    OpenRun,
    MarkRun,
    CompareRuns,
    RefreshRuns,
    /// Stops the answer being streamed; with none, moves to the next pane.
    StopGeneration,
    /// Asks for a GGUF file to chat with.
    LoadModel,
    /// Asks again for the last answer.
    Regenerate,
    /// Copies the last answer to the clipboard (OSC 52: works over SSH).
    CopyAnswer,
    /// Opens a second model to answer side by side (or closes it).
    Compare,
    /// The conversation's system prompt and sampling parameters.
    ChatSettings,
    /// Starts a new conversation (the current one is saved already).
    NewChat,
    /// Lists the saved conversations.
    OpenChats,
    /// Reopens the conversation selected in the list.
    OpenChat,
    /// Writes the conversation as Markdown and JSON into the workspace's chats/ folder.
    ExportChat,
    /// Asks for a knowledge collection for answers to draw on (empty: none).
    AttachKb,
    /// The sources retrieved for the chat's held answers.
    Retrieved { id: u64, result: Result<crate::service::SearchResult, String> },
    /// The saved conversations, answering list request `request`.
    ChatList { request: u64, result: Result<Vec<crate::engine::data::chats::ChatSummary>, String> },
    ChatOpened(Result<crate::engine::data::chats::ChatRecord, String>),
    /// A message from an engine for the status bar.
    Info(String),
    Failure(String),
    /// Exports the selected run (its base with the adapter merged) as GGUF f16 into models/.
    ExportRun,
    /// Opens the quantization reports (the selected run's first).
    QuantReports,
    /// Every report's rows, answering list request `request`.
    QuantEvals { request: u64, result: Result<Vec<crate::engine::data::quant_evals::QuantEval>, String> },
    /// A report finished: the open list is stale.
    QuantReported,
    /// Opens the selected model in the Chat pane.
    ChatWithModel,
    /// Exports the selected Hugging Face folder as GGUF (f16) into the workspace's models/.
    ExportModel,
    RefreshModels,
    /// The model library, scanned by the engine.
    Models { request: u64, result: Result<Vec<crate::engine::infer::library::ModelEntry>, String> },
    /// Moves to the Knowledge pane's search box.
    FocusSearch,
    /// Leaves the search box (for the results, when there are some).
    LeaveSearch,
    /// Searches the selected collection for what the box holds.
    Search,
    /// Hybrid, vector, text, and round again.
    CycleSearchMode,
    /// Between the collections and the results.
    SwitchKbFocus,
    /// Shows the selected result in full (in the list: to the search box).
    OpenHit,
    /// Asks for a file, folder or glob to add to the selected collection.
    AddToCollection,
    /// Reads the selected collection's sources again.
    SyncCollection,
    /// Drops the selected collection (asks first).
    DropCollection,
    RefreshCollections,
    Collections { request: u64, result: Result<Vec<crate::engine::knowledge::store::CollectionInfo>, String> },
    Searched { request: u64, result: Result<crate::service::SearchResult, String> },
    IngestProgress { job: JobId, progress: crate::engine::knowledge::ingest::Progress },
    Ingested { job: JobId, result: Result<crate::engine::knowledge::ingest::Report, String> },
    /// Completions found by the engine.
    PathCompletions { typed: String, list: Vec<String> },
    // Input that is not a binding.
    Text(KeyPress),
    Paste(String),
    Resize(u16, u16),
    /// SIGTERM, SIGHUP or the like: quit now, without asking.
    ForceQuit(String),
    // From engines.
    Sys(SysSample),
    /// The figures of the `lathe serve` this workstation is attached to.
    Server(crate::service::attached::ServerStatus),
    /// That server has gone (why).
    Detached(String),
    /// Hand the workspace to a `lathe serve` in the background, or stop the one attached to.
    ToggleServing,
    /// The server started for this workstation listens at this address, or why not.
    Serving(Result<String, String>),
    Job(JobEvent),
    Data(DataEvent),
    Train(crate::engine::train::trainer::TrainEvent),
    /// An event of a chat side's engine (0: the conversation's model, 1: the compared one).
    Chat { side: usize, event: crate::engine::infer::worker::ChatEvent },
    /// A training job ended: the run id and how, or why it failed.
    TrainDone(Result<(String, crate::engine::types::RunStatus), String>),
    /// The recorded runs, answering list request `request` (an older answer is dropped).
    Runs { request: u64, result: Result<Vec<crate::engine::data::runs::RunRow>, String> },
    /// Metrics of a recorded run, for its detail view (`overlay` false) or the chart overlay.
    RunMetrics { id: String, overlay: bool, metrics: Vec<crate::engine::data::runs::MetricRow> },
    /// The engine's check of the new-run form.
    FormChecked(Result<Vec<String>, String>),
    /// Starts a job that keeps `threads` cores busy (used to test responsiveness).
    StartStress { threads: usize, seconds: Option<u64> },
    CancelJob(JobId),
}

impl Action {
    /// The keymap's name for a bindable action, e.g. `focus training`.
    pub fn parse_binding(s: &str) -> Option<Action> {
        let s = s.trim();
        if let Some(pane) = s.strip_prefix("focus ") {
            return PaneId::from_name(pane.trim()).map(Action::Focus);
        }
        Some(match s {
            "quit" => Action::Quit,
            "focus_next" => Action::FocusNext,
            "focus_prev" => Action::FocusPrev,
            "zoom" => Action::ToggleZoom,
            "help" => Action::ToggleHelp,
            "close" => Action::Close,
            "scroll_up" => Action::ScrollUp,
            "scroll_down" => Action::ScrollDown,
            "page_up" => Action::PageUp,
            "page_down" => Action::PageDown,
            "next_theme" => Action::NextTheme,
            "confirm" => Action::Confirm,
            "deny" => Action::Deny,
            "send" => Action::Send,
            "newline" => Action::Newline,
            "run_query" => Action::RunQuery,
            "cancel_query" => Action::CancelQuery,
            "switch_data_focus" => Action::SwitchDataFocus,
            "history_prev" => Action::HistoryPrev,
            "history_next" => Action::HistoryNext,
            "scroll_left" => Action::ScrollLeft,
            "scroll_right" => Action::ScrollRight,
            "previous_report" => Action::PrevReport,
            "next_report" => Action::NextReport,
            "top" => Action::Top,
            "bottom" => Action::Bottom,
            "view_row" => Action::ViewRow,
            "import" => Action::OpenImport,
            "export_result" => Action::OpenExport,
            "complete" => Action::Complete,
            "preview_views" => Action::PreviewViews,
            "start_demo" => Action::StartDemo,
            "new_run" => Action::NewRun,
            "pause_run" => Action::PauseRun,
            "cancel_run" => Action::CancelRun,
            "resume_run" => Action::ResumeRun,
            "check_form" => Action::CheckForm,
            "smooth" => Action::ToggleSmooth,
            "log_scale" => Action::ToggleLogScale,
            "zoom_in" => Action::ZoomIn,
            "zoom_out" => Action::ZoomOut,
            "overlay_run" => Action::OverlayRun,
            "open_run" => Action::OpenRun,
            "mark_run" => Action::MarkRun,
            "compare_runs" => Action::CompareRuns,
            "refresh_runs" => Action::RefreshRuns,
            "stop_generation" => Action::StopGeneration,
            "load_model" => Action::LoadModel,
            "regenerate" => Action::Regenerate,
            "chat_with_model" => Action::ChatWithModel,
            "copy_answer" => Action::CopyAnswer,
            "compare" => Action::Compare,
            "chat_settings" => Action::ChatSettings,
            "new_chat" => Action::NewChat,
            "open_chats" => Action::OpenChats,
            "open_chat" => Action::OpenChat,
            "export_chat" => Action::ExportChat,
            "attach_kb" => Action::AttachKb,
            "export_run" => Action::ExportRun,
            "quant_reports" => Action::QuantReports,
            "export_model" => Action::ExportModel,
            "refresh_models" => Action::RefreshModels,
            "toggle_serving" => Action::ToggleServing,
            "focus_search" => Action::FocusSearch,
            "leave_search" => Action::LeaveSearch,
            "search" => Action::Search,
            "search_mode" => Action::CycleSearchMode,
            "switch_kb_focus" => Action::SwitchKbFocus,
            "open_hit" => Action::OpenHit,
            "add_to_collection" => Action::AddToCollection,
            "sync_collection" => Action::SyncCollection,
            "drop_collection" => Action::DropCollection,
            "refresh_collections" => Action::RefreshCollections,
            _ => return None,
        })
    }

    /// One line for the help overlay.
    pub fn describe(&self) -> String {
        match self {
            Action::Quit => "quit (asks first while a job runs)".into(),
            Action::FocusNext => "next pane".into(),
            Action::FocusPrev => "previous pane".into(),
            Action::Focus(p) => format!("go to {}", p.title()),
            Action::ToggleZoom => "zoom the pane to full screen and back".into(),
            Action::ToggleHelp => "this help".into(),
            Action::Close => "close / dismiss message".into(),
            Action::ScrollUp => "scroll up".into(),
            Action::ScrollDown => "scroll down".into(),
            Action::PageUp => "page up".into(),
            Action::PageDown => "page down".into(),
            Action::NextTheme => "next theme".into(),
            Action::Confirm => "yes".into(),
            Action::Deny => "no".into(),
            Action::Send => "send the message".into(),
            Action::Newline => "new line".into(),
            Action::RunQuery => "run the query".into(),
            Action::CancelQuery => "cancel the running query (or back to the editor)".into(),
            Action::SwitchDataFocus => "switch between SQL editor and results".into(),
            Action::HistoryPrev => "previous query from history".into(),
            Action::HistoryNext => "next query from history".into(),
            Action::ScrollLeft => "column left".into(),
            Action::ScrollRight => "column right".into(),
            Action::PrevReport => "previous quantization report".into(),
            Action::NextReport => "next quantization report".into(),
            Action::Top => "first row".into(),
            Action::Bottom => "last row".into(),
            Action::ViewRow => "show the row in full".into(),
            Action::OpenImport => "import a file, glob or folder as a dataset".into(),
            Action::OpenExport => "export the result to .csv, .parquet or .jsonl".into(),
            Action::Complete => "complete the name or path".into(),
            Action::PreviewViews => "preview the training-set views".into(),
            Action::StartDemo => "train the demo model from scratch (a new run)".into(),
            Action::NewRun => "new run: model, view, hyper-parameters".into(),
            Action::PauseRun => "pause / resume the run".into(),
            Action::CancelRun => "cancel the run (keeps its last checkpoint)".into(),
            Action::ResumeRun => "resume an interrupted or cancelled run".into(),
            Action::CheckForm => "check: memory estimate and token preview".into(),
            Action::ToggleSmooth => "smoothing on / off".into(),
            Action::ToggleLogScale => "log scale on / off".into(),
            Action::ZoomIn => "zoom to the last 500 / 100 / 20 steps".into(),
            Action::ZoomOut => "zoom out".into(),
            Action::OverlayRun => "overlay another run's curves (cycles)".into(),
            Action::OpenRun => "open the run: parameters and curves".into(),
            Action::MarkRun => "mark the run to compare".into(),
            Action::CompareRuns => "compare the marked run with the selected one".into(),
            Action::RefreshRuns => "reload the runs".into(),
            Action::StopGeneration => "stop the answer (or next pane when none streams)".into(),
            Action::LoadModel => "open a GGUF model to chat with".into(),
            Action::Regenerate => "ask again for the last answer".into(),
            Action::ChatWithModel => "chat with the selected GGUF model".into(),
            Action::CopyAnswer => "copy the last answer to the clipboard (OSC 52, works over SSH)".into(),
            Action::NewChat => "new conversation (this one stays saved)".into(),
            Action::Compare => "compare: a second model answers side by side (again: close it)".into(),
            Action::ChatSettings => "system prompt and sampling parameters of this conversation".into(),
            Action::OpenChats => "saved conversations".into(),
            Action::OpenChat => "reopen the conversation".into(),
            Action::ExportChat => "write the conversation as Markdown and JSON into chats/".into(),
            Action::AttachKb => "answer from a knowledge collection (sources cited; empty: none)".into(),
            Action::ExportRun => "export the run as GGUF (f16) into models/".into(),
            Action::QuantReports => "quantization reports: each type's size and quality on held-out data (lathe quant report)".into(),
            Action::ExportModel => "export the selected model folder as GGUF (f16) into models/".into(),
            Action::RefreshModels => "scan for models again".into(),
            Action::ToggleServing => "serve: hand the workspace to lathe serve in the background (jobs outlive the workstation), or stop it".into(),
            Action::FocusSearch => "search the selected collection".into(),
            Action::LeaveSearch => "leave the search box".into(),
            Action::Search => "search".into(),
            Action::CycleSearchMode => "search mode: hybrid, vector, text".into(),
            Action::SwitchKbFocus => "switch between the collections and the results".into(),
            Action::OpenHit => "show the result in full".into(),
            Action::AddToCollection => "add a file, folder or glob to the collection".into(),
            Action::SyncCollection => "sync: re-read the collection's sources (only changes are embedded)".into(),
            Action::DropCollection => "drop the collection (asks first)".into(),
            Action::RefreshCollections => "list the collections again".into(),
            other => format!("{other:?}"),
        }
    }
}

/// Work for an engine, produced by the reducer and carried out by the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    RunQuery { id: u64, sql: String },
    FetchPage { id: u64, sql: String, offset: u64 },
    CancelQuery,
    StartStress { threads: usize, seconds: Option<u64> },
    CancelJob(JobId),
    CancelAllJobs,
    CompletePath(String),
    ImportDataset { path: String, replace: bool },
    ExportResult { sql: String, path: String },
    RefreshDatasets,
    PreviewViews,
    StartTraining(Box<crate::engine::train::spec::RunSpec>),
    StartDemo,
    ResumeRun(String),
    PauseTraining(bool),
    CheckTraining(Box<crate::engine::train::spec::RunSpec>),
    RefreshRuns { request: u64 },
    LoadRunMetrics { id: String, overlay: bool },
    ListQuantEvals { request: u64 },
    /// Loads a model on a chat side by name: a path, a library name or a server spec.
    LoadChatModel { side: usize, name: String },
    Generate { side: usize, id: u64, messages: Vec<crate::engine::types::Message>, sampling: crate::engine::types::Sampling },
    StopGeneration,
    RefreshModels { request: u64 },
    ExportModel { dir: String, out: String },
    ExportRun { id: String, out: String },
    /// Puts text on the terminal's clipboard with OSC 52.
    CopyToClipboard(String),
    SaveChat(crate::engine::data::chats::ChatRecord),
    /// The comparison closed: the second model is freed and the first gets every thread back.
    CloseCompare,
    ListChats { request: u64 },
    LoadChat(String),
    ExportChat { record: crate::engine::data::chats::ChatRecord, dir: String },
    ListCollections { request: u64 },
    /// The top chunks of a collection for a chat message (`Action::Retrieved` answers).
    Retrieve { id: u64, collection: String, query: String },
    SearchCollection { request: u64, req: crate::service::SearchRequest },
    /// Adds paths to a collection (none: syncs its sources) in a job.
    IngestCollection { name: String, paths: Vec<String> },
    /// Drops a collection; the answer is the list, for request `request`.
    DropCollection { name: String, request: u64 },
    /// The server went: work through the workspace's new owner, or open it here again.
    Reattach,
    StartServing,
    StopServing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_round_trip_through_names() {
        for p in PaneId::ALL {
            assert_eq!(Action::parse_binding(&format!("focus {}", p.name())), Some(Action::Focus(p)));
        }
        assert_eq!(Action::parse_binding("quit"), Some(Action::Quit));
        assert_eq!(Action::parse_binding("focus nowhere"), None);
        assert_eq!(Action::parse_binding("explode"), None);
    }

    #[test]
    fn actions_and_commands_are_plain_data() {
        let a = Action::StartStress { threads: 2, seconds: Some(3) };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        let c = Command::CancelJob(4);
        assert_eq!(serde_json::from_str::<Command>(&serde_json::to_string(&c).unwrap()).unwrap(), c);
    }
}
