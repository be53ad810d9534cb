//! The shell's vocabulary, shared by the app and its panes: overlays, the path prompt, notices,
//! and `Ctx`, what a pane's update may use or change outside its own state.

use std::path::Path;

use tui_textarea::TextArea;

use super::action::PaneId;
use super::keymap::Keymap;
use crate::engine::workspace::Workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    Help { scroll: u16 },
    ConfirmQuit,
    /// The Data pane's selected row in full.
    Row,
    /// A path is asked for; the prompt's state is `App::prompt`.
    Prompt,
    /// An import would overwrite a dataset: asks first.
    ConfirmReplace,
    /// The training-set views with examples (the text is in `DataState::views_preview`).
    Views,
    /// The new-run form.
    TrainForm,
    /// A run's details, or two runs compared (text in `RunsState::detail`).
    RunDetail,
    /// The quantization reports (`RunsState::quant`).
    QuantReport,
    /// The saved conversations.
    Chats,
    /// The conversation's system prompt and sampling parameters.
    ChatSettings,
    /// The Knowledge pane's selected result in full.
    Chunk { scroll: u16 },
    /// Dropping a collection: asks first.
    ConfirmDropCollection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    Import,
    Export,
    Model,
    CompareModel,
    /// A file, folder or glob to add to a knowledge collection.
    KbAdd,
    /// The knowledge collection the chat's answers draw on.
    AttachKb,
}

pub struct Prompt {
    pub kind: PromptKind,
    pub input: TextArea<'static>,
    pub completions: Vec<String>,
}

impl Prompt {
    pub fn new(kind: PromptKind, text: &str) -> Prompt {
        let mut input = TextArea::default();
        input.insert_str(text);
        Prompt { kind, input, completions: Vec::new() }
    }

    pub fn text(&self) -> String {
        self.input.lines().join("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

/// What a pane's update may use or change outside its own state: the keymap (for hints), the
/// workspace's paths, the notices, the focus, the overlay and the prompt.
pub struct Ctx<'a> {
    pub keymap: &'a Keymap,
    pub workspace: &'a Path,
    /// The terminal's height in rows (a page of scrolling).
    pub height: u16,
    pub notices: &'a mut Vec<Notice>,
    pub focus: &'a mut PaneId,
    pub overlay: &'a mut Option<Overlay>,
    /// The path prompt, while one is asked for.
    pub prompt: &'a mut Option<Prompt>,
}

impl Ctx<'_> {
    pub fn notify(&mut self, level: Level, text: impl Into<String>) {
        self.notices.push(Notice { level, text: text.into() });
    }

    /// The workspace's layout (paths only; nothing is opened).
    pub fn ws(&self) -> Workspace {
        Workspace { root: self.workspace.to_path_buf() }
    }
}
