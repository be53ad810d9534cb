//! The app's state and its one reducer, `App::update`. The reducer never blocks and never does
//! I/O: it changes plain values and returns `Command`s for the engines.

use std::path::PathBuf;

use tui_textarea::{Input, Key, TextArea};

use super::action::{Action, Command, KeyPress, PaneId, TextKey};
use super::data::{DataFocus, DataState};
use super::keymap::{Keymap, Mode};
use super::models::{ModelsPane, Picked};
use super::shell::{Ctx, Level, Notice, Overlay, Prompt, PromptKind};
use super::training::TrainingPanes;
use crate::engine::data::worker::DataEvent;
use crate::engine::data::DatasetInfo;
use crate::engine::jobs::{JobInfo, JobKind, JobStatus};
use crate::engine::sysmon::SysSample;
use crate::engine::types::RunStatus;
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

/// How many readings the sparklines keep.
pub const HISTORY: usize = 120;

/// The System pane's data: the newest reading and short histories for sparklines.
#[derive(Debug, Clone, Default)]
pub struct SysState {
    pub latest: Option<SysSample>,
    pub cpu: Vec<u64>,
    pub mem: Vec<u64>,
    pub per_core: Vec<Vec<u64>>,
}

impl SysState {
    fn push(&mut self, s: SysSample) {
        fn keep(v: &mut Vec<u64>, x: u64) {
            if v.len() == HISTORY {
                v.remove(0);
            }
            v.push(x);
        }
        keep(&mut self.cpu, s.cpu_total.round() as u64);
        let mem_pct = (s.mem_used * 100).checked_div(s.mem_total).unwrap_or(0);
        keep(&mut self.mem, mem_pct);
        self.per_core.resize_with(s.cpu_per_core.len(), Vec::new);
        for (h, c) in self.per_core.iter_mut().zip(&s.cpu_per_core) {
            keep(h, c.round() as u64);
        }
        self.latest = Some(s);
    }
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
    pub jobs: Vec<JobInfo>,
    /// The catalog's datasets once the data engine has listed them; Err says why it could not.
    pub datasets: Option<Result<Vec<DatasetInfo>, String>>,
    pub data: DataState,
    pub prompt: Option<Prompt>,
    /// The path of the import waiting for a yes/no on replacing a dataset.
    pub replace_target: Option<String>,
    pub chat: super::chat::ChatState,
    pub models: ModelsPane,
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
            jobs: Vec::new(),
            datasets: None,
            data: DataState::default(),
            prompt: None,
            replace_target: None,
            chat: Default::default(),
            models: ModelsPane::default(),
            notices: Vec::new(),
            training: TrainingPanes::default(),
            should_quit: false,
            dirty: true,
        }
    }

    /// The workspace's layout (paths only; nothing is opened).
    fn ws(&self) -> crate::engine::workspace::Workspace {
        crate::engine::workspace::Workspace { root: self.workspace.clone() }
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
            Some(Overlay::RunDetail) => Mode::Viewer,
            Some(Overlay::Chats) => Mode::ChatList,
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

    /// Up on the editor's first line or Down on its last recalls history, as in a shell.
    fn at_editor_edge(&self, k: &KeyPress) -> bool {
        if k.ctrl || k.alt || k.shift {
            return false;
        }
        let (row, _) = self.data.editor.cursor();
        match k.key {
            TextKey::Up => row == 0,
            TextKey::Down => row + 1 >= self.data.editor.lines().len() && self.data.history_pos.is_some(),
            _ => false,
        }
    }

    fn submit_prompt(&mut self) -> Vec<Command> {
        let Some(p) = self.prompt.take() else { return vec![] };
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
                self.chat.start_compare(path.clone().into());
                vec![Command::LoadCompareModel(path)]
            }
            PromptKind::Model => {
                self.chat.model = super::chat::ChatModel::Loading(path.clone().into());
                vec![Command::LoadChatModel(path)]
            }
            PromptKind::Export => match &self.data.result {
                Some(r) => vec![Command::ExportResult { sql: r.sql.clone(), path }],
                None => vec![],
            },
        }
    }

    /// The text box that has the keyboard, if any.
    fn focused_text(&mut self) -> Option<&mut TextArea<'static>> {
        match self.mode() {
            Mode::Chat => Some(&mut self.chat.input),
            Mode::Sql => Some(&mut self.data.editor),
            Mode::Prompt => self.prompt.as_mut().map(|p| &mut p.input),
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
                    _ => {}
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
                if matches!(self.overlay, Some(Overlay::ConfirmQuit | Overlay::ConfirmReplace)) {
                    self.overlay = None;
                    self.replace_target = None;
                }
            }
            Action::OpenImport => {
                if self.focus == PaneId::Data {
                    self.prompt = Some(Prompt::new(PromptKind::Import, ""));
                    self.overlay = Some(Overlay::Prompt);
                }
            }
            Action::OpenExport => {
                if self.data.result.as_ref().is_some_and(|r| r.shape.is_some() && !r.running) {
                    self.prompt = Some(Prompt::new(PromptKind::Export, "result.csv"));
                    self.overlay = Some(Overlay::Prompt);
                } else {
                    self.notify(Level::Info, "Run a query first: its result is what gets exported.");
                }
            }
            Action::Complete => {
                if let Some(p) = &self.prompt {
                    out.push(Command::CompletePath(p.text()));
                } else if self.mode() == Mode::Sql {
                    self.data.complete();
                }
            }
            Action::PathCompletions(list) => {
                if let Some(p) = &mut self.prompt {
                    let typed = p.text();
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
                if self.mode() == Mode::Grid =>
            {
                let page = self.size.1.saturating_sub(10).max(1) as u64;
                out.extend(self.data.move_selection(&action, page));
            }
            Action::ScrollUp | Action::ScrollDown if matches!(self.overlay, Some(Overlay::TrainForm | Overlay::ChatSettings)) => {
                let form = if self.overlay == Some(Overlay::ChatSettings) { &mut self.chat.form } else { &mut self.training.form };
                if let Some(f) = form {
                    let n = f.fields.len();
                    f.selected = if action == Action::ScrollUp { (f.selected + n - 1) % n } else { (f.selected + 1) % n };
                }
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown
                if self.overlay == Some(Overlay::RunDetail) =>
            {
                let s = &mut self.training.runs.detail_scroll;
                *s = match action {
                    Action::ScrollUp => s.saturating_sub(1),
                    Action::PageUp => s.saturating_sub(10),
                    Action::PageDown => s.saturating_add(10),
                    _ => s.saturating_add(1),
                };
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom
                if self.mode() == Mode::Runs =>
            {
                match action {
                    Action::ScrollUp => self.training.runs.move_by(-1),
                    Action::ScrollDown => self.training.runs.move_by(1),
                    Action::PageUp => self.training.runs.move_by(-10),
                    Action::PageDown => self.training.runs.move_by(10),
                    Action::Top => self.training.runs.move_by(-(1 << 30)),
                    _ => self.training.runs.move_by(1 << 30),
                }
            }
            Action::ScrollUp | Action::ScrollDown if matches!(self.overlay, Some(Overlay::Row | Overlay::Views)) => {
                let s = &mut self.data.viewer_scroll;
                *s = if action == Action::ScrollUp { s.saturating_sub(1) } else { s.saturating_add(1) };
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown if matches!(self.mode(), Mode::Chat | Mode::ChatList) => {
                self.chat.update(action, &mut cx!(self), &mut out);
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom
                if self.mode() == Mode::Models =>
            {
                self.models.update(action, &mut cx!(self), &mut out);
            }
            Action::ScrollLeft | Action::ScrollRight | Action::Top | Action::Bottom => {}
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
            | Action::Chat(_)
            | Action::ChatCompare(_)
            | Action::NewChat
            | Action::OpenChats
            | Action::ChatList { .. }
            | Action::ChatOpened(_)
            | Action::OpenChat
            | Action::ExportChat => self.chat.update(action, &mut cx!(self), &mut out),
            Action::StopGeneration => {
                if self.chat.any_streaming() {
                    out.push(Command::StopGeneration);
                } else {
                    out.extend(self.update(Action::FocusNext));
                }
            }
            Action::ExportRun => match self.training.runs.rows().get(self.training.runs.selected).cloned() {
                Some(r) if r.artifacts.is_some() && r.status != RunStatus::Running => {
                    let out_path = crate::service::export_path(&self.ws(), &crate::service::run_export_name(&r.id), crate::engine::export::gguf::Quant::F16);
                    self.notify(Level::Info, format!("Exporting run {} to {} (a job; it joins the Models pane when done).", r.id, out_path.display()));
                    out.push(Command::ExportRun { id: r.id.clone(), out: out_path.display().to_string() });
                }
                Some(r) => self.notify(Level::Info, format!("Run {} has nothing to export yet: finish or resume it first.", r.id)),
                None => self.notify(Level::Info, "No run selected."),
            },
            Action::RefreshModels | Action::Models { .. } | Action::ChatWithModel | Action::ExportModel => {
                if let Picked::Chat(path) = self.models.update(action, &mut cx!(self), &mut out) {
                    self.chat.open_model(path);
                }
            }
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
            Action::Text(k) if self.mode() == Mode::Sql && self.at_editor_edge(&k) => {
                self.data.recall(k.key == TextKey::Up);
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
                        _ => {}
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
                if let Some(t) = self.focused_text() {
                    t.input(textarea_input(k));
                }
            }
            Action::Paste(s) => {
                if let Some(t) = self.focused_text() {
                    // Terminals send \r for newlines in pastes.
                    t.insert_str(s.replace("\r\n", "\n").replace('\r', "\n"));
                }
            }
            Action::RunQuery => {
                if self.focus == PaneId::Data {
                    match self.data.run() {
                        Ok(cmd) => out.push(cmd),
                        Err(msg) => self.notify(Level::Info, msg),
                    }
                }
            }
            Action::CancelQuery => {
                if self.data.running() {
                    out.push(Command::CancelQuery);
                } else if self.data.focus == DataFocus::Grid {
                    self.data.focus = DataFocus::Editor;
                } else if let Some((i, _)) = self.current_notice() {
                    self.notices.remove(i);
                }
            }
            Action::SwitchDataFocus => {
                self.data.focus = match self.data.focus {
                    DataFocus::Editor => DataFocus::Grid,
                    DataFocus::Grid => DataFocus::Editor,
                }
            }
            Action::PreviewViews => {
                self.data.viewer_scroll = 0;
                self.data.views_preview = None;
                self.overlay = Some(Overlay::Views);
                out.push(Command::PreviewViews);
            }
            Action::HistoryPrev => self.data.recall(true),
            Action::HistoryNext => self.data.recall(false),
            Action::ViewRow => {
                if self.data.result.as_ref().is_some_and(|r| r.row_cells(r.row).is_some()) {
                    self.data.viewer_scroll = 0;
                    self.overlay = Some(Overlay::Row);
                }
            }
            Action::Resize(w, h) => self.size = (w, h),
            Action::Sys(s) => self.sys.push(s),
            Action::Job(ev) => {
                JobInfo::apply(&mut self.jobs, &ev);
                if let crate::engine::jobs::JobEvent::Started { id, kind: JobKind::Train, .. } = &ev {
                    if let Some(r) = self.training.live.as_mut() {
                        r.job = Some(*id);
                    }
                }
                if let crate::engine::jobs::JobEvent::Finished { id, status } = &ev {
                    let title = self.jobs.iter().find(|j| j.id == *id).map(|j| j.title.clone());
                    let title = title.unwrap_or_default();
                    let job = self.jobs.iter().find(|j| j.id == *id).cloned();
                    let kind = job.as_ref().map(|j| j.kind);
                    match status {
                        // A run's end is told by its TrainDone, in the run's words.
                        _ if kind == Some(JobKind::Train) => {}
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
                        _ => {}
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
                }
                DataEvent::Datasets(list) => self.datasets = Some(Ok(list)),
                DataEvent::Unavailable(msg) => {
                    self.notify(Level::Error, msg.clone());
                    self.datasets = Some(Err(msg));
                }
                DataEvent::Failed(msg) => self.notify(Level::Error, msg),
                _ => {}
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
            | Action::FormChecked(_) => out.extend(self.training.update(action, &mut cx!(self))),
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
mod tests {
    use super::*;
    use crate::engine::infer::worker::ChatEvent;
    use crate::engine::jobs::{JobEvent, JobKind};
    use std::collections::BTreeMap;

    fn app() -> App {
        let (km, _) = Keymap::load(&BTreeMap::new());
        App::new(km, Theme::default_theme(), PathBuf::from("/ws"))
    }

    fn typed(c: char) -> Action {
        Action::Text(KeyPress { key: TextKey::Char(c), ctrl: false, alt: false, shift: false })
    }

    #[test]
    fn focus_cycles_both_ways_and_jumps() {
        let mut a = app();
        a.update(Action::FocusPrev);
        assert_eq!(a.focus, PaneId::Models);
        a.update(Action::FocusNext);
        assert_eq!(a.focus, PaneId::Training);
        a.update(Action::Focus(PaneId::System));
        assert_eq!(a.focus, PaneId::System);
    }

    #[test]
    fn zoom_toggles_and_esc_unzooms() {
        let mut a = app();
        a.update(Action::ToggleZoom);
        assert!(a.zoomed);
        a.update(Action::Close);
        assert!(!a.zoomed);
    }

    #[test]
    fn help_opens_scrolls_and_closes() {
        let mut a = app();
        a.update(Action::ToggleHelp);
        assert_eq!(a.mode(), Mode::Help);
        a.update(Action::ScrollDown);
        a.update(Action::ScrollDown);
        a.update(Action::ScrollUp);
        assert_eq!(a.overlay, Some(Overlay::Help { scroll: 1 }));
        a.update(Action::Close);
        assert_eq!(a.overlay, None);
    }

    #[test]
    fn quit_asks_first_while_a_job_runs() {
        let mut a = app();
        a.update(Action::Job(JobEvent::Started { id: 1, kind: JobKind::Stress, title: "burn".into() }));
        assert!(a.update(Action::Quit).is_empty(), "quit with a job running asks first");
        assert!(!a.should_quit);
        assert_eq!(a.mode(), Mode::Confirm);
        a.update(Action::Deny);
        assert!(!a.should_quit && a.overlay.is_none());
        a.update(Action::Quit);
        assert_eq!(a.update(Action::Confirm), vec![Command::CancelAllJobs]);
        assert!(a.should_quit);
    }

    #[test]
    fn quit_without_jobs_is_immediate() {
        let mut a = app();
        a.update(Action::Quit);
        assert!(a.should_quit);
    }

    #[test]
    fn signals_quit_without_asking_and_cancel_jobs() {
        let mut a = app();
        a.update(Action::Job(JobEvent::Started { id: 1, kind: JobKind::Train, title: "t".into() }));
        assert_eq!(a.update(Action::ForceQuit("SIGHUP".into())), vec![Command::CancelAllJobs]);
        assert!(a.should_quit);
    }

    #[test]
    fn typing_goes_to_the_chat_box_only_when_it_has_focus() {
        let mut a = app();
        a.update(typed('x'));
        assert!(a.chat.input.is_empty());
        a.update(Action::Focus(PaneId::Chat));
        for c in "hi".chars() {
            a.update(typed(c));
        }
        a.update(Action::Newline);
        a.update(Action::Paste("a\r\nb".into()));
        assert_eq!(a.chat.input.lines(), ["hi", "a", "b"]);
    }

    #[test]
    fn a_finished_answer_saves_the_conversation_and_ctrl_n_starts_another() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::Chat(ChatEvent::Loaded { path: "m.gguf".into(), architecture: "llama".into(), context_size: 64, has_template: true }));
        a.update(Action::Paste("hi".into()));
        a.update(Action::Send);
        let id = a.chat.streaming.unwrap();
        assert!(a.update(Action::Chat(ChatEvent::Token { id, text: "yo".into() })).is_empty());
        let stats = answer_stats();
        let cmds = a.update(Action::Chat(ChatEvent::Done { id, stats }));
        let [Command::SaveChat(r)] = cmds.as_slice() else { panic!("{cmds:?}") };
        assert_eq!((r.title.as_str(), r.turns.len(), r.model.as_str()), ("hi", 2, "m.gguf"));
        let first = r.id.clone();
        a.update(Action::NewChat);
        assert!(a.chat.turns.is_empty() && a.chat.id.is_none());
        // Reopening puts it back.
        a.update(Action::ChatOpened(Ok(r.clone())));
        assert_eq!((a.chat.turns.len(), a.chat.id.clone()), (2, Some(first)));
        assert!(matches!(a.update(Action::ExportChat).as_slice(), [Command::ExportChat { .. }]));
    }

    #[test]
    fn compare_sends_each_message_to_both_models() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::Chat(ChatEvent::Loaded { path: "a.gguf".into(), architecture: "llama".into(), context_size: 64, has_template: true }));
        a.update(Action::Compare);
        assert_eq!(a.overlay, Some(Overlay::Prompt));
        a.update(Action::Paste("b.gguf".into()));
        assert_eq!(a.update(Action::Confirm), vec![Command::LoadCompareModel("b.gguf".into())]);
        // A message sent while the second model loads goes to the first only, and says so.
        a.update(Action::Paste("early".into()));
        let cmds = a.update(Action::Send);
        assert!(matches!(cmds.as_slice(), [Command::Generate { .. }, Command::SaveChat(_)]), "{cmds:?}");
        assert!(a.notices.last().is_some_and(|n| n.text.contains("still loading")), "{:?}", a.notices.last().map(|n| &n.text));
        let early = a.chat.streaming.unwrap();
        a.update(Action::Chat(ChatEvent::Done { id: early, stats: answer_stats() }));
        a.update(Action::ChatCompare(ChatEvent::Loaded { path: "b.gguf".into(), architecture: "qwen2".into(), context_size: 64, has_template: true }));
        a.update(Action::Paste("hi".into()));
        let cmds = a.update(Action::Send);
        // The message is saved on both sides as it is sent.
        let [Command::Generate { .. }, Command::GenerateCompare { .. }, Command::SaveChat(r)] = cmds.as_slice() else { panic!("{cmds:?}") };
        assert_eq!((r.turns.last().map(|t| t.text.as_str()), r.compare.as_ref().map(|c| c.turns.len())), (Some("hi"), Some(1)));
        let b_id = a.chat.compare.as_ref().unwrap().streaming.unwrap();
        a.update(Action::ChatCompare(ChatEvent::Token { id: b_id, text: "B says".into() }));
        assert_eq!(a.chat.compare.as_ref().unwrap().turns.last().unwrap().text, "B says");
        assert!(a.chat.turns.last().unwrap().text.is_empty());
        assert_eq!(a.update(Action::StopGeneration), vec![Command::StopGeneration]);

        // Both answers end; each end saves the conversation, the second with both sides.
        let a_id = a.chat.streaming.unwrap();
        a.update(Action::Chat(ChatEvent::Token { id: a_id, text: "A says".into() }));
        let cmds = a.update(Action::Chat(ChatEvent::Done { id: a_id, stats: answer_stats() }));
        assert!(matches!(cmds.as_slice(), [Command::SaveChat(_)]), "{cmds:?}");
        let cmds = a.update(Action::ChatCompare(ChatEvent::Done { id: b_id, stats: answer_stats() }));
        let [Command::SaveChat(r)] = cmds.as_slice() else { panic!("{cmds:?}") };
        let side = r.compare.as_ref().expect("the second side is saved");
        // The first side also holds the exchange from before the second model loaded.
        assert_eq!((r.turns.len(), r.turns[3].text.as_str(), side.model.as_str(), side.turns.len(), side.turns[1].text.as_str()), (4, "A says", "b.gguf", 2, "B says"));
        let saved = r.clone();

        // Ctrl-R asks both models again, each replacing its own last answer.
        let cmds = a.update(Action::Regenerate);
        assert!(matches!(cmds.as_slice(), [Command::Generate { .. }, Command::GenerateCompare { .. }]), "{cmds:?}");
        assert_eq!((a.chat.turns.len(), a.chat.compare.as_ref().unwrap().turns.len()), (4, 2));
        assert!(a.chat.compare.as_ref().unwrap().turns[1].text.is_empty());
        a.update(Action::StopGeneration);
        a.update(Action::Chat(ChatEvent::Failed { id: a.chat.streaming.unwrap(), error: "stopped".into() }));
        let b2 = a.chat.compare.as_ref().unwrap().streaming.unwrap();
        a.update(Action::ChatCompare(ChatEvent::Failed { id: b2, error: "stopped".into() }));

        // Reopening the saved comparison puts each side's answers back.
        a.update(Action::ChatOpened(Ok(saved)));
        assert_eq!((a.chat.turns[3].text.as_str(), a.chat.compare.as_ref().unwrap().turns[1].text.as_str()), ("A says", "B says"));
        // Closing frees the second model.
        assert_eq!(a.update(Action::Compare), vec![Command::CloseCompare]);
        assert!(a.chat.compare.is_none());
    }

    fn answer_stats() -> crate::engine::types::Stats {
        crate::engine::types::Stats {
            prompt_tokens: 3,
            reused_tokens: 0,
            prompt_secs: 0.1,
            first_token_secs: 0.1,
            generated_tokens: 1,
            generation_secs: 0.1,
            context_used: 4,
            context_size: 64,
            stop: crate::engine::types::StopReason::EndOfTurn,
        }
    }

    fn typed_key(key: TextKey) -> Action {
        Action::Text(KeyPress { key, ctrl: false, alt: false, shift: false })
    }

    #[test]
    fn the_settings_panel_sets_the_system_prompt_and_sampling() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::ChatSettings);
        assert_eq!(a.mode(), Mode::Form);
        a.update(Action::Paste("Answer briefly.".into()));
        a.update(Action::ScrollDown);
        for _ in 0..3 {
            a.update(typed_key(TextKey::Backspace));
        }
        a.update(Action::Paste("x".into()));
        a.update(Action::Confirm);
        // A bad number keeps the panel open and says which field.
        assert_eq!(a.overlay, Some(Overlay::ChatSettings));
        assert!(matches!(&a.chat.form.as_ref().unwrap().check, Some(Err(e)) if e.contains("temperature")));
        a.update(typed_key(TextKey::Backspace));
        a.update(Action::Paste("0".into()));
        a.update(Action::Confirm);
        assert_eq!(a.overlay, None);
        assert_eq!((a.chat.system.as_deref(), a.chat.sampling.temperature), (Some("Answer briefly."), 0.0));
    }

    #[test]
    fn up_edits_an_earlier_message_and_resending_replaces_what_followed() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::Chat(ChatEvent::Loaded { path: "m.gguf".into(), architecture: "llama".into(), context_size: 64, has_template: true }));
        let stats = answer_stats();
        for msg in ["first", "second"] {
            a.update(Action::Paste(msg.into()));
            a.update(Action::Send);
            let id = a.chat.streaming.unwrap();
            a.update(Action::Chat(ChatEvent::Done { id, stats: stats.clone() }));
        }
        assert_eq!(a.chat.turns.len(), 4);
        a.update(typed_key(TextKey::Up));
        assert_eq!(a.chat.input.lines(), ["second"]);
        a.update(typed_key(TextKey::Up));
        assert_eq!((a.chat.input.lines(), a.chat.editing), (&["first".to_string()][..], Some(0)));
        a.update(typed_key(TextKey::Down));
        a.update(typed_key(TextKey::Up));
        a.update(Action::Paste(" again".into()));
        let cmds = a.update(Action::Send);
        let [Command::Generate { messages, .. }, Command::SaveChat(_)] = cmds.as_slice() else { panic!("{cmds:?}") };
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].content, "first again");
        assert_eq!(a.chat.turns.len(), 2);
        assert_eq!(a.chat.editing, None);
    }

    #[test]
    fn the_last_answer_goes_to_the_clipboard() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::CopyAnswer);
        assert!(a.notices.last().unwrap().text.contains("No answer"));
        a.update(Action::Chat(ChatEvent::Loaded { path: "m.gguf".into(), architecture: "llama".into(), context_size: 64, has_template: true }));
        a.update(Action::Paste("hi".into()));
        a.update(Action::Send);
        let id = a.chat.streaming.unwrap();
        a.update(Action::Chat(ChatEvent::Token { id, text: "héllo".into() }));
        assert_eq!(a.update(Action::CopyAnswer), vec![Command::CopyToClipboard("héllo".into())]);
    }

    #[test]
    fn enter_on_a_gguf_model_opens_it_in_chat() {
        use crate::engine::infer::library::ModelEntry;
        let mut a = app();
        let cmds = a.update(Action::Focus(PaneId::Models));
        assert_eq!(cmds, vec![Command::RefreshModels { request: a.models.request }]);
        let entry = |name: &str, format: &str| ModelEntry {
            name: name.into(),
            path: format!("/m/{name}").into(),
            source: "workspace".into(),
            format: format.into(),
            architecture: "llama".into(),
            params: 1,
            quantization: "F16".into(),
            context_length: 1,
            file_size: 1,
            ram_needed: 1,
            problem: None,
        };
        a.update(Action::Models { request: a.models.request, result: Ok(vec![entry("folder", "hf"), entry("m.gguf", "gguf")]) });
        let cmds = a.update(Action::ExportModel);
        assert!(matches!(cmds.as_slice(), [Command::ExportModel { .. }]), "{cmds:?}");
        assert!(a.update(Action::ChatWithModel).is_empty());
        a.update(Action::ScrollDown);
        a.update(Action::ScrollDown);
        assert_eq!(a.models.selected, 1);
        assert_eq!(a.update(Action::ChatWithModel), vec![Command::LoadChatModel("/m/m.gguf".into())]);
        assert_eq!(a.focus, PaneId::Chat);
    }

    #[test]
    fn sending_without_a_model_says_so_and_keeps_the_text() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::Send);
        assert!(a.notices.last().unwrap().text.starts_with("Nothing to send"));
        a.update(typed('y'));
        a.update(Action::Send);
        assert!(a.notices.last().unwrap().text.contains("No model is loaded"));
        assert_eq!(a.chat.input.lines(), ["y"]);
        // Esc with nothing streaming moves on; while an answer streams it stops it.
        a.update(Action::StopGeneration);
        assert_eq!(a.focus, PaneId::System);
        a.update(Action::Focus(PaneId::Chat));
        a.update(Action::Chat(crate::engine::infer::worker::ChatEvent::Loaded {
            path: "m.gguf".into(),
            architecture: "llama".into(),
            context_size: 64,
            has_template: false,
        }));
        let cmds = a.update(Action::Send);
        assert!(matches!(cmds.as_slice(), [Command::Generate { .. }, Command::SaveChat(_)]), "{cmds:?}");
        assert!(a.chat.input.is_empty());
        assert_eq!(a.update(Action::StopGeneration), vec![Command::StopGeneration]);
        assert_eq!(a.focus, PaneId::Chat);
    }

    #[test]
    fn errors_show_before_newer_info_and_esc_dismisses_them_in_turn() {
        let mut a = app();
        a.notify(Level::Error, "bad theme");
        a.notify(Level::Info, "imported");
        assert_eq!(a.current_notice().unwrap().1.text, "bad theme");
        a.update(Action::Close);
        assert_eq!(a.current_notice().unwrap().1.text, "imported");
        a.update(Action::Close);
        assert!(a.current_notice().is_none());
    }

    #[test]
    fn import_prompt_completes_submits_and_asks_before_replacing() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Data));
        a.update(Action::OpenImport);
        assert_eq!(a.mode(), Mode::Prompt);
        a.update(Action::Paste("/data/pe".into()));
        assert_eq!(a.update(Action::Complete), vec![Command::CompletePath("/data/pe".into())]);
        a.update(Action::PathCompletions(vec!["/data/people.csv".into(), "/data/people2.csv".into()]));
        assert_eq!(a.prompt.as_ref().unwrap().text(), "/data/people");
        a.update(Action::PathCompletions(vec!["/data/people.csv".into()]));
        assert_eq!(
            a.update(Action::Confirm),
            vec![Command::ImportDataset { path: "/data/people.csv".into(), replace: false }]
        );
        assert!(a.overlay.is_none());
        // The import job fails because the name is taken: lathe asks, and yes replaces.
        a.update(Action::Job(JobEvent::Started { id: 4, kind: JobKind::Import, title: "import people.csv".into() }));
        a.update(Action::Job(JobEvent::Finished {
            id: 4,
            status: JobStatus::Exists("A dataset named people already exists; pass --replace".into()),
        }));
        assert_eq!(a.overlay, Some(Overlay::ConfirmReplace));
        assert_eq!(
            a.update(Action::Confirm),
            vec![Command::ImportDataset { path: "/data/people.csv".into(), replace: true }]
        );
        // A finished import refreshes the datasets.
        a.update(Action::Job(JobEvent::Started { id: 5, kind: JobKind::Import, title: "import".into() }));
        a.update(Action::Job(JobEvent::Progress { id: 5, fraction: Some(1.0), message: "imported people: 2 rows".into() }));
        let cmds = a.update(Action::Job(JobEvent::Finished { id: 5, status: JobStatus::Done }));
        assert!(cmds.contains(&Command::RefreshDatasets));
        assert_eq!(a.current_notice().unwrap().1.text, "imported people: 2 rows");
    }

    #[test]
    fn up_and_down_at_the_editor_edges_walk_the_history() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Data));
        a.update(Action::Data(DataEvent::History(vec!["select 1".into(), "select 2".into()])));
        let key = |k| Action::Text(KeyPress { key: k, ctrl: false, alt: false, shift: false });
        a.update(key(TextKey::Up));
        assert_eq!(a.data.editor.lines(), ["select 2"]);
        a.update(key(TextKey::Up));
        assert_eq!(a.data.editor.lines(), ["select 1"]);
        a.update(key(TextKey::Down));
        assert_eq!(a.data.editor.lines(), ["select 2"]);
        // Inside a multi-line statement, arrows move the cursor.
        a.update(Action::Newline);
        a.update(key(TextKey::Up));
        assert_eq!(a.data.editor.lines(), ["select 2", ""]);
        assert_eq!(a.data.editor.cursor().0, 0);
    }

    #[test]
    fn export_needs_a_result() {
        let mut a = app();
        a.update(Action::Focus(PaneId::Data));
        a.update(Action::OpenExport);
        assert!(a.overlay.is_none());
        assert!(a.notices.last().unwrap().text.starts_with("Run a query first"));
    }

    #[test]
    fn an_older_runs_answer_does_not_overwrite_a_newer_one() {
        use crate::engine::data::runs::RunRow;
        let mut a = app();
        let [Command::RefreshRuns { request: first }] = a.update(Action::Focus(PaneId::Runs))[..] else { panic!() };
        let [Command::RefreshRuns { request: second }] = a.update(Action::RefreshRuns)[..] else { panic!() };
        assert!(second > first);
        let row = |id: &str| RunRow { id: id.into(), ..Default::default() };
        a.update(Action::Runs { request: second, result: Ok(vec![row("new-1"), row("new-2")]) });
        // The first request's answer arrives late: it is dropped.
        a.update(Action::Runs { request: first, result: Ok(vec![row("old")]) });
        assert_eq!(a.training.runs.rows().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["new-1", "new-2"]);
    }

    #[test]
    fn job_events_fold_into_the_status_list() {
        let mut a = app();
        // The service records jobs in lathe.jobs; the reducer only shows them.
        assert!(a.update(Action::Job(JobEvent::Started { id: 7, kind: JobKind::Export, title: "export".into() })).is_empty());
        assert!(a.update(Action::Job(JobEvent::Progress { id: 7, fraction: Some(0.25), message: "q8_0".into() })).is_empty());
        assert_eq!(a.running_jobs().next().unwrap().fraction, Some(0.25));
        assert!(a.update(Action::Job(JobEvent::Finished { id: 7, status: JobStatus::Failed("disk full".into()) })).is_empty());
        assert_eq!(a.running_jobs().count(), 0);
        let n = a.notices.last().unwrap();
        assert_eq!((n.level, n.text.as_str()), (Level::Error, "export failed: disk full"));
    }

    #[test]
    fn samples_build_bounded_histories() {
        let mut a = app();
        for i in 0..(HISTORY + 10) {
            a.update(Action::Sys(SysSample {
                cpu_per_core: vec![i as f32 % 100.0, 50.0],
                cpu_total: 10.0,
                mem_used: 1,
                mem_total: 4,
                ..SysSample::default()
            }));
        }
        assert_eq!(a.sys.cpu.len(), HISTORY);
        assert_eq!(a.sys.per_core.len(), 2);
        assert_eq!(*a.sys.mem.last().unwrap(), 25);
    }

    #[test]
    fn next_theme_cycles_through_all_shipped() {
        let mut a = app();
        let mut names = vec![a.theme().name.clone()];
        for _ in 1..a.themes.len() {
            a.update(Action::NextTheme);
            names.push(a.theme().name.clone());
        }
        assert_eq!(names, ["dark", "light", "high-contrast", "basic16"]);
        a.update(Action::NextTheme);
        assert_eq!(a.theme().name, "dark");
    }

    #[test]
    fn stress_and_cancel_become_commands() {
        let mut a = app();
        assert_eq!(
            a.update(Action::StartStress { threads: 2, seconds: None }),
            vec![Command::StartStress { threads: 2, seconds: None }]
        );
        assert_eq!(a.update(Action::CancelJob(3)), vec![Command::CancelJob(3)]);
    }
}
