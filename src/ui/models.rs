//! The Models pane. Its engine is not in this build yet, so it shows an honest empty state:
//! what will appear here and what brings it.

use ratatui::layout::Rect;
use ratatui::Frame;

use super::widgets::{empty_pane, EmptyState};
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    empty_pane(
        f,
        area,
        app.theme(),
        "Models",
        focused,
        &EmptyState {
            headline: "No model library yet",
            what: "GGUF files and Hugging Face folders from the workspace's models/ folder, the Hugging Face cache and Ollama will be listed here.",
            how: "Not in this build yet: the model library arrives with the chat engine.",
        },
    );
}
