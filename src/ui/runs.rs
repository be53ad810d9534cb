//! The Runs pane. Its engine is not in this build yet, so it shows an honest empty state:
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
        "Runs",
        focused,
        &EmptyState {
            headline: "No runs recorded",
            what: "Every training run, with its parameters, metrics and artifacts, will be listed here to compare and export.",
            how: "Not in this build yet: runs are recorded once the training engine lands.",
        },
    );
}
