//! The app's state and its one reducer, `App::update`. The reducer never blocks and never does
//! I/O: it changes plain values and returns `Command`s for the engines.

use std::path::PathBuf;

use tui_textarea::{Input, Key, TextArea};

use super::action::{Action, Command, KeyPress, PaneId, TextKey};
use super::data::{DataFocus, DataState};
use super::keymap::{Keymap, Mode};
use super::knowledge::KnowledgePane;
use super::models::{ModelsPane, Picked};
use super::shell::{Ctx, Level, Notice, Overlay, Prompt, PromptKind};
use super::system::SysState;
use super::training::TrainingPanes;
use crate::engine::data::worker::DataEvent;
use crate::engine::data::DatasetInfo;
use crate::engine::jobs::{JobInfo, JobKind, JobStatus};
use crate::engine::knowledge::ingest::DATASET;
use crate::ui::theme::Theme;

/// The context a pane's update gets: the shell's fields, borrowed apart from the panes.
macro_rules! cx {
    ($app:ident) => {
        Ctx {
            keymap: &$app.keymap,
            workspace: &$app.workspace,
            height: $app.size.1,
            notices: &mut $app.notices,
            focus: &mut $app.focus,
            overlay: &mut $app.overlay,
            prompt: &mut $app.prompt,
        }
    };
}

/// The server the workstation is attached to: where it listens and its last figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLink {
    pub address: String,
    pub status: Option<crate::service::attached::ServerStatus>,
}

pub struct App {
    pub focus: PaneId,
    pub zoomed: bool,
    pub overlay: Option<Overlay>,
    pub size: (u16, u16),
    pub keymap: Keymap,
    pub themes: Vec<Theme>,
    pub theme_idx: usize,
    pub workspace: PathBuf,
    pub sys: SysState,
    /// The `lathe serve` that owns the workspace, when the workstation works through it.
    pub server: Option<ServerLink>,
    pub jobs: Vec<JobInfo>,
    /// The catalog's datasets once the data engine has listed them; Err says why it could not.
    pub datasets: Option<Result<Vec<DatasetInfo>, String>>,
    pub data: DataState,
    pub prompt: Option<Prompt>,
    /// The path of the import waiting for a yes/no on replacing a dataset.
    pub replace_target: Option<String>,
    pub chat: super::chat::ChatState,
    pub models: ModelsPane,
    pub knowledge: KnowledgePane,
    pub notices: Vec<Notice>,
    /// The Training, Loss and Runs panes.
    pub training: TrainingPanes,
    pub should_quit: bool,
    /// Something changed since the last frame.
    pub dirty: bool,
}

impl App {
    /// `themes[0]` is the one in use at start; the shipped ones follow for cycling.
    pub fn new(keymap: Keymap, theme: Theme, workspace: PathBuf) -> App {
        let mut themes = vec![theme.clone()];
        for (name, _) in crate::ui::theme::SHIPPED {
            if *name != theme.name {
                let t = Theme::shipped(name).expect("shipped");
                themes.push(if theme.mono { t.monochrome() } else { t });
            }
        }
        App {
            focus: PaneId::Training,
            zoomed: false,
            overlay: None,
            size: (80, 24),
            keymap,
            themes,
            theme_idx: 0,
            workspace,
            sys: SysState::default(),
            server: None,
            jobs: Vec::new(),
            datasets: None,
            data: DataState::default(),
            prompt: None,
            replace_target: None,
            chat: Default::default(),
            models: ModelsPane::default(),
            knowledge: KnowledgePane::default(),
            notices: Vec::new(),
            training: TrainingPanes::default(),
            should_quit: false,
            dirty: true,
        }
    }

    pub fn theme(&self) -> &Theme {
        &self.themes[self.theme_idx]
    }

    /// The keymap mode the next key press is looked up in.
    pub fn mode(&self) -> Mode {
        match self.overlay {
            Some(Overlay::Help { .. }) => Mode::Help,
            Some(Overlay::ConfirmQuit) => Mode::Confirm,
            Some(Overlay::Row) => Mode::Viewer,
            Some(Overlay::Prompt) => Mode::Prompt,
            Some(Overlay::ConfirmReplace) => Mode::Confirm,
            Some(Overlay::Views) => Mode::Viewer,
            Some(Overlay::TrainForm) | Some(Overlay::ChatSettings) => Mode::Form,
            Some(Overlay::RunDetail | Overlay::QuantReport) => Mode::Viewer,
            Some(Overlay::Chats) => Mode::ChatList,
            Some(Overlay::Chunk { .. }) => Mode::Viewer,
            Some(Overlay::ConfirmDropCollection) => Mode::Confirm,
            None if self.focus == PaneId::Knowledge => self.knowledge.mode(),
            None if self.focus == PaneId::Training => Mode::Training,
            None if self.focus == PaneId::Loss => Mode::Loss,
            None if self.focus == PaneId::Runs => Mode::Runs,
            None if self.focus == PaneId::Models => Mode::Models,
            None if self.focus == PaneId::Chat => Mode::Chat,
            None if self.focus == PaneId::Data && self.data.focus == DataFocus::Editor => Mode::Sql,
            None if self.focus == PaneId::Data => Mode::Grid,
            None => Mode::Global,
        }
    }

    /// A text box has the keyboard: plain characters are typing.
    pub fn text_input_focused(&self) -> bool {
        self.mode().is_text_input()
    }

    pub fn running_jobs(&self) -> impl Iterator<Item = &JobInfo> {
        self.jobs.iter().filter(|j| j.status == JobStatus::Running)
    }

    fn submit_prompt(&mut self) -> Vec<Command> {
        let Some(p) = self.prompt.take() else { return vec![] };
        if p.kind == PromptKind::AttachKb {
            // Empty detaches, so it is an answer too.
            let known: Option<Vec<String>> = self.knowledge.list.as_ref().and_then(|l| l.as_ref().ok()).map(|l| l.iter().map(|c| c.name.clone()).collect());
            self.chat.attach(&p.text(), known.as_deref(), &mut cx!(self));
            return vec![];
        }
        let path = p.text().trim().to_string();
        if path.is_empty() {
            self.prompt = Some(p);
            return vec![];
        }
        match p.kind {
            PromptKind::Import => {
                self.replace_target = Some(path.clone());
                vec![Command::ImportDataset { path, replace: false }]
            }
            PromptKind::CompareModel => {
                self.chat.open_side(path.clone());
                vec![Command::LoadChatModel { side: 1, name: path }]
            }
            PromptKind::Model => {
                self.chat.open_model(path.clone());
                vec![Command::LoadChatModel { side: 0, name: path }]
            }
            PromptKind::Export => match &self.data.result {
                Some(r) => vec![Command::ExportResult { sql: r.sql.clone(), path }],
                None => vec![],
            },
            PromptKind::KbAdd => self.knowledge.submit_add(path).into_iter().collect(),
            PromptKind::AttachKb => unreachable!("answered in submit_prompt"),
        }
    }

    /// The text box that has the keyboard, if any.
    fn focused_text(&mut self) -> Option<&mut TextArea<'static>> {
        match self.mode() {
            Mode::Chat => Some(&mut self.chat.input),
            Mode::Sql => Some(&mut self.data.editor),
            Mode::Prompt => self.prompt.as_mut().map(|p| &mut p.input),
            Mode::KbSearch => Some(&mut self.knowledge.query),
            _ => None,
        }
    }

    /// The notice the status bar shows: the newest of the most severe.
    pub fn current_notice(&self) -> Option<(usize, &Notice)> {
        self.notices.iter().enumerate().max_by_key(|(i, n)| (n.level, *i))
    }

    pub fn notify(&mut self, level: Level, text: impl Into<String>) {
        self.notices.push(Notice { level, text: text.into() });
        self.dirty = true;
    }

    /// The reducer.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        self.dirty = true;
        let mut out = Vec::new();
        match action {
            Action::Quit => {
                if self.running_jobs().next().is_some() {
                    self.overlay = Some(Overlay::ConfirmQuit);
                } else {
                    self.should_quit = true;
                }
            }
            Action::ForceQuit(reason) => {
                tracing::info!(%reason, "quitting");
                out.push(Command::CancelAllJobs);
                self.should_quit = true;
            }
            Action::Confirm => {
                match self.overlay {
                    Some(Overlay::ConfirmQuit) => {
                        out.push(Command::CancelAllJobs);
                        self.should_quit = true;
                    }
                    Some(Overlay::Prompt) => out.extend(self.submit_prompt()),
                    Some(Overlay::TrainForm) => out.extend(self.training.submit_form(&mut cx!(self))),
                    Some(Overlay::ChatSettings) => self.chat.apply_form(),
                    Some(Overlay::ConfirmReplace) => {
                        if let Some(path) = self.replace_target.take() {
                            out.push(Command::ImportDataset { path, replace: true });
                        }
                    }
                    Some(Overlay::ConfirmDropCollection) => self.knowledge.confirm_drop(&mut out),
                    // Enter in a viewer or the help closes it (below); with nothing open it does nothing.
                    Some(Overlay::Help { .. } | Overlay::Row | Overlay::Views | Overlay::RunDetail | Overlay::QuantReport | Overlay::Chats | Overlay::Chunk { .. }) | None => {}
                }
                if self.overlay == Some(Overlay::ChatSettings) && self.chat.form.is_some() {
                    // The panel stays open when a value is wrong.
                } else if self.overlay == Some(Overlay::TrainForm) {
                    // The form stays open when it has a problem to show.
                } else if self.overlay != Some(Overlay::Prompt) || self.prompt.is_none() {
                    self.overlay = None;
                }
            }
            Action::Deny => {
                if matches!(self.overlay, Some(Overlay::ConfirmQuit | Overlay::ConfirmReplace | Overlay::ConfirmDropCollection)) {
                    self.overlay = None;
                    self.replace_target = None;
                    self.knowledge.drop_target = None;
                }
            }
            Action::Complete => {
                if let Some(p) = self.prompt.as_mut().filter(|p| p.kind == PromptKind::AttachKb) {
                    // Collection names, as last listed.
                    let typed = p.text();
                    let names: Vec<String> = self.knowledge.collections().iter().map(|c| c.name.clone()).filter(|n| n.starts_with(typed.trim())).collect();
                    match names.as_slice() {
                        [one] => *p = Prompt::new(PromptKind::AttachKb, one),
                        _ => p.completions = names,
                    }
                } else if let Some(p) = self.prompt.as_mut().filter(|p| p.kind == PromptKind::KbAdd && p.text().starts_with(DATASET)) {
                    // A dataset's column: names from the catalog's schema, as last read.
                    let typed = p.text();
                    let names: Vec<String> = self
                        .data
                        .schema
                        .iter()
                        .flat_map(|(t, cols)| cols.iter().map(move |(c, _)| format!("{DATASET}{t}.{c}")))
                        .filter(|n| n.starts_with(typed.trim()))
                        .collect();
                    match crate::engine::data::import::common_prefix(&names).filter(|c| c.len() > typed.len()) {
                        Some(longer) => *p = Prompt { completions: names, ..Prompt::new(PromptKind::KbAdd, &longer) },
                        None => p.completions = names,
                    }
                } else if let Some(p) = &self.prompt {
                    out.push(Command::CompletePath(p.text()));
                } else if self.mode() == Mode::Sql {
                    self.data.complete();
                }
            }
            // Completions of what the prompt held when they were asked for; stale once it changed.
            Action::PathCompletions { typed, list } => {
                if let Some(p) = self.prompt.as_mut().filter(|p| p.text() == typed) {
                    let grow = crate::engine::data::import::common_prefix(&list).filter(|c| c.len() > typed.len());
                    if let Some(longer) = grow {
                        *p = Prompt { completions: list, ..Prompt::new(p.kind, &longer) };
                    } else {
                        p.completions = list;
                    }
                }
            }
            Action::FocusNext | Action::FocusPrev | Action::Focus(_) => {
                let n = PaneId::ALL.len();
                self.focus = match action {
                    Action::FocusNext => PaneId::ALL[(self.focus.index() + 1) % n],
                    Action::FocusPrev => PaneId::ALL[(self.focus.index() + n - 1) % n],
                    Action::Focus(p) => p,
                    _ => self.focus,
                };
                if self.focus == PaneId::Runs {
                    out.push(self.training.runs.refresh());
                }
                if self.focus == PaneId::Models {
                    out.push(self.models.refresh());
                }
                if self.focus == PaneId::Knowledge {
                    out.push(self.knowledge.refresh());
                }
            }
            Action::ToggleZoom => self.zoomed = !self.zoomed,
            Action::ToggleHelp => {
                self.overlay = match self.overlay {
                    Some(Overlay::Help { .. }) => None,
                    _ => Some(Overlay::Help { scroll: 0 }),
                }
            }
            Action::Close => {
                if self.overlay.is_some() {
                    self.overlay = None;
                    self.prompt = None;
                    self.chat.form = None;
                } else if let Some((i, _)) = self.current_notice() {
                    self.notices.remove(i);
                } else if self.zoomed {
                    self.zoomed = false;
                }
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::ScrollLeft
            | Action::ScrollRight | Action::Top | Action::Bottom
                if self.mode() == Mode::Grid || matches!(self.overlay, Some(Overlay::Row | Overlay::Views)) =>
            {
                self.data.update(action, &mut cx!(self), &mut out);
            }
            Action::ScrollUp | Action::ScrollDown if matches!(self.overlay, Some(Overlay::TrainForm | Overlay::ChatSettings)) => {
                let form = if self.overlay == Some(Overlay::ChatSettings) { &mut self.chat.form } else { &mut self.training.form };
                if let Some(f) = form {
                    let n = f.fields.len();
                    f.selected = if action == Action::ScrollUp { (f.selected + n - 1) % n } else { (f.selected + 1) % n };
                }
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::PrevReport | Action::NextReport
                if matches!(self.overlay, Some(Overlay::RunDetail | Overlay::QuantReport)) =>
            {
                out.extend(self.training.update(action, &mut cx!(self)));
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom
                if self.mode() == Mode::Runs =>
            {
                out.extend(self.training.update(action, &mut cx!(self)));
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown if matches!(self.mode(), Mode::Chat | Mode::ChatList) => {
                self.chat.update(action, &mut cx!(self), &mut out);
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom
                if self.mode() == Mode::Models =>
            {
                self.models.update(action, &mut cx!(self), &mut out);
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom
                if self.mode() == Mode::Knowledge =>
            {
                self.knowledge.update(action, &mut cx!(self), &mut out);
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown if matches!(self.overlay, Some(Overlay::Chunk { .. })) => {
                if let Some(Overlay::Chunk { scroll }) = &mut self.overlay {
                    let page = self.size.1.saturating_sub(8).max(1);
                    *scroll = match action {
                        Action::ScrollUp => scroll.saturating_sub(1),
                        Action::ScrollDown => scroll.saturating_add(1),
                        Action::PageUp => scroll.saturating_sub(page),
                        _ => scroll.saturating_add(page),
                    };
                }
            }
            Action::ScrollLeft | Action::ScrollRight | Action::PrevReport | Action::NextReport | Action::Top | Action::Bottom => {}
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown => {
                if let Some(Overlay::Help { scroll }) = &mut self.overlay {
                    let page = self.size.1.saturating_sub(8).max(1);
                    *scroll = match action {
                        Action::ScrollUp => scroll.saturating_sub(1),
                        Action::ScrollDown => scroll.saturating_add(1),
                        Action::PageUp => scroll.saturating_sub(page),
                        _ => scroll.saturating_add(page),
                    };
                }
            }
            Action::NextTheme => {
                self.theme_idx = (self.theme_idx + 1) % self.themes.len();
                let name = self.theme().name.clone();
                self.notify(Level::Info, format!("Theme: {name} (set it for good with --theme or theme = in config.toml)"));
            }
            Action::Send if self.mode() != Mode::Chat => {}
            Action::Send
            | Action::Regenerate
            | Action::ChatSettings
            | Action::Compare
            | Action::LoadModel
            | Action::CopyAnswer
            | Action::Chat { .. }
            | Action::NewChat
            | Action::OpenChats
            | Action::ChatList { .. }
            | Action::ChatOpened(_)
            | Action::OpenChat
            | Action::Retrieved { .. }
            | Action::ExportChat => self.chat.update(action, &mut cx!(self), &mut out),
            Action::StopGeneration => {
                if self.chat.cancel_retrieval() {
                    self.notify(Level::Info, "Stopped before the sources arrived.");
                } else if self.chat.any_streaming() {
                    out.push(Command::StopGeneration);
                } else {
                    out.extend(self.update(Action::FocusNext));
                }
            }
            Action::RefreshModels | Action::Models { .. } | Action::ChatWithModel | Action::ExportModel => {
                if let Picked::Chat(name) = self.models.update(action, &mut cx!(self), &mut out) {
                    self.chat.open_model(name);
                }
            }
            Action::AttachKb => {
                self.chat.update(action, &mut cx!(self), &mut out);
                // The collections' names, for completion and the check.
                out.push(self.knowledge.refresh());
            }
            Action::FocusSearch
            | Action::LeaveSearch
            | Action::Search
            | Action::CycleSearchMode
            | Action::SwitchKbFocus
            | Action::OpenHit
            | Action::AddToCollection
            | Action::SyncCollection
            | Action::DropCollection
            | Action::RefreshCollections
            | Action::Collections { .. }
            | Action::Searched { .. }
            | Action::IngestProgress { .. }
            | Action::Ingested { .. } => self.knowledge.update(action, &mut cx!(self), &mut out),
            Action::Failure(e) => self.notify(Level::Error, e),
            Action::Info(m) => self.notify(Level::Info, m),
            Action::Newline => {
                if let Some(t) = self.focused_text() {
                    t.insert_newline();
                }
            }
            Action::Text(k) if self.mode() == Mode::Chat && !k.ctrl && !k.alt && self.chat.steps_edit(&k.key) => {
                self.chat.update(Action::Text(k), &mut cx!(self), &mut out);
            }
            Action::Text(k) if self.mode() == Mode::Sql && self.data.steps_history(&k) => {
                self.data.update(Action::Text(k), &mut cx!(self), &mut out);
            }
            Action::Text(k) if self.mode() == Mode::Form => {
                let form = if self.overlay == Some(Overlay::ChatSettings) { &mut self.chat.form } else { &mut self.training.form };
                if let Some(f) = form {
                    match k.key {
                        TextKey::Char(c) if !k.ctrl && !k.alt => f.current().push(c),
                        TextKey::Backspace => {
                            f.current().pop();
                        }
                        TextKey::Down => f.selected = (f.selected + 1) % f.fields.len(),
                        TextKey::Up => f.selected = (f.selected + f.fields.len() - 1) % f.fields.len(),
                        // A form's fields are one line each, edited at their end.
                        TextKey::Char(_) | TextKey::Enter | TextKey::Delete | TextKey::Left | TextKey::Right | TextKey::Home | TextKey::End => {}
                        TextKey::PageUp | TextKey::PageDown | TextKey::Tab | TextKey::Other => {}
                    }
                    f.check = None;
                }
            }
            Action::Paste(s) if self.mode() == Mode::Form => {
                let form = if self.overlay == Some(Overlay::ChatSettings) { &mut self.chat.form } else { &mut self.training.form };
                if let Some(f) = form {
                    f.current().push_str(s.trim());
                    f.check = None;
                }
            }
            Action::Text(k) => {
                self.data.completions.clear();
                let changed = self.focused_text().is_some_and(|t| t.input(textarea_input(k)));
                if changed && self.mode() == Mode::KbSearch {
                    self.knowledge.typed(&mut out);
                }
            }
            Action::Paste(s) => {
                if let Some(t) = self.focused_text() {
                    // Terminals send \r for newlines in pastes.
                    t.insert_str(s.replace("\r\n", "\n").replace('\r', "\n"));
                }
                if self.mode() == Mode::KbSearch {
                    self.knowledge.typed(&mut out);
                }
            }
            Action::OpenImport
            | Action::OpenExport
            | Action::RunQuery
            | Action::SwitchDataFocus
            | Action::PreviewViews
            | Action::HistoryPrev
            | Action::HistoryNext
            | Action::ViewRow => self.data.update(action, &mut cx!(self), &mut out),
            Action::CancelQuery => {
                if self.data.running() {
                    out.push(Command::CancelQuery);
                } else if self.data.focus == DataFocus::Grid {
                    self.data.focus = DataFocus::Editor;
                } else if let Some((i, _)) = self.current_notice() {
                    self.notices.remove(i);
                }
            }
            Action::Resize(w, h) => self.size = (w, h),
            Action::Sys(s) => self.sys.push(s),
            Action::Server(s) => self.server = Some(ServerLink { address: s.address.clone(), status: Some(s) }),
            Action::ToggleServing if self.server.is_some() => {
                self.notify(Level::Info, "Stopping lathe serve; its running jobs checkpoint and end.");
                out.push(Command::StopServing);
            }
            Action::ToggleServing if self.running_jobs().next().is_some() => {
                self.notify(Level::Warn, "A job is running here; let it finish (or cancel it) before handing the workspace to lathe serve.");
            }
            Action::ToggleServing => {
                self.notify(Level::Info, "Starting lathe serve in the background…");
                out.push(Command::StartServing);
            }
            Action::Serving(r) => {
                match r {
                    Ok(address) => self.notify(Level::Info, format!("lathe serve owns the workspace at http://{address}: its jobs go on when the workstation closes.")),
                    Err(e) => self.notify(Level::Error, e),
                }
                // Through the new server, or with the catalog here again.
                out.push(Command::Reattach);
            }
            Action::Detached(why) => {
                self.server = None;
                // Its jobs are gone from here; what they saved is in the catalog.
                self.jobs.clear();
                self.notify(Level::Warn, format!("{why}; the workstation opens the workspace itself again."));
                out.push(Command::Reattach);
            }
            Action::Job(ev) => {
                JobInfo::apply(&mut self.jobs, &ev);
                if let crate::engine::jobs::JobEvent::Started { id, kind: JobKind::Train, .. } = &ev {
                    self.training.job_started(*id);
                }
                if let crate::engine::jobs::JobEvent::Started { id, kind: JobKind::Ingest, title } = &ev {
                    self.knowledge.ingest_started(*id, title);
                }
                if let crate::engine::jobs::JobEvent::Finished { id, status } = &ev {
                    let title = self.jobs.iter().find(|j| j.id == *id).map(|j| j.kind.words(&j.title));
                    let title = title.unwrap_or_default();
                    let job = self.jobs.iter().find(|j| j.id == *id).cloned();
                    let kind = job.as_ref().map(|j| j.kind);
                    match status {
                        // A run's end is told by its TrainDone, an ingest's by its report.
                        _ if matches!(kind, Some(JobKind::Train | JobKind::Ingest)) => {}
                        JobStatus::Exists(_) if kind == Some(JobKind::Import) => {
                            // Ask before overwriting; the path is remembered from the prompt.
                            self.overlay = Some(Overlay::ConfirmReplace);
                        }
                        JobStatus::Failed(msg) | JobStatus::Exists(msg) => self.notify(Level::Error, format!("{title} failed: {msg}")),
                        JobStatus::Cancelled => self.notify(Level::Info, format!("{title} cancelled")),
                        JobStatus::Done if matches!(kind, Some(JobKind::Import | JobKind::Export)) => {
                            let msg = job.map(|j| j.message).unwrap_or_default();
                            self.notify(Level::Info, msg);
                            out.push(Command::RefreshDatasets);
                        }
                        // A stress job's end needs no notice.
                        JobStatus::Done | JobStatus::Running => {}
                    }
                    // Finished jobs leave the status bar; their results live in the catalog.
                    self.jobs.retain(|j| j.status == JobStatus::Running);
                }
            }
            Action::Data(ev) => {
                self.data.apply(&ev);
                match ev {
                    DataEvent::Opened { seeded } => {
                        if !seeded.is_empty() {
                            self.notify(Level::Info, format!("New workspace: imported the demo datasets {}", seeded.join(", ")));
                        }
                        out.push(self.training.runs.refresh());
                        // The grid shows the collections too.
                        out.push(self.knowledge.refresh());
                    }
                    DataEvent::Datasets(list) => self.datasets = Some(Ok(list)),
                    DataEvent::Unavailable(msg) => {
                        self.notify(Level::Error, msg.clone());
                        self.datasets = Some(Err(msg));
                    }
                    DataEvent::Failed(msg) => self.notify(Level::Error, msg),
                    // The Data pane folded these in above.
                    DataEvent::Schema(_)
                    | DataEvent::History(_)
                    | DataEvent::QueryShape { .. }
                    | DataEvent::QueryCount { .. }
                    | DataEvent::QueryPage { .. }
                    | DataEvent::QueryFailed { .. }
                    | DataEvent::ViewPreview(_) => {}
                }
            }
            Action::StartStress { threads, seconds } => out.push(Command::StartStress { threads, seconds }),
            Action::StartDemo
            | Action::NewRun
            | Action::PauseRun
            | Action::CancelRun
            | Action::ResumeRun
            | Action::CheckForm
            | Action::ToggleSmooth
            | Action::ToggleLogScale
            | Action::ZoomIn
            | Action::ZoomOut
            | Action::OverlayRun
            | Action::OpenRun
            | Action::MarkRun
            | Action::CompareRuns
            | Action::RefreshRuns
            | Action::Train(_)
            | Action::TrainDone(_)
            | Action::Runs { .. }
            | Action::RunMetrics { .. }
            | Action::FormChecked(_)
            | Action::QuantReports
            | Action::QuantEvals { .. }
            | Action::QuantReported
            | Action::ExportRun => out.extend(self.training.update(action, &mut cx!(self))),
            Action::CancelJob(id) => out.push(Command::CancelJob(id)),
        }
        out
    }
}



fn textarea_input(k: KeyPress) -> Input {
    let key = match k.key {
        TextKey::Char(c) => Key::Char(c),
        TextKey::Enter => Key::Enter,
        TextKey::Backspace => Key::Backspace,
        TextKey::Delete => Key::Delete,
        TextKey::Left => Key::Left,
        TextKey::Right => Key::Right,
        TextKey::Up => Key::Up,
        TextKey::Down => Key::Down,
        TextKey::Home => Key::Home,
        TextKey::End => Key::End,
        TextKey::PageUp => Key::PageUp,
        TextKey::PageDown => Key::PageDown,
        TextKey::Tab => Key::Tab,
        TextKey::Other => Key::Null,
    };
    Input { key, ctrl: k.ctrl, alt: k.alt, shift: k.shift }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "knowledge_tests.rs"]
mod knowledge_tests;
