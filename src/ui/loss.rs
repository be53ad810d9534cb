//! The Loss pane. Its engine is not in this build yet, so it shows an honest empty state:
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
        "Loss",
        focused,
        &EmptyState {
            headline: "No loss to chart",
            what: "Training and eval loss will be charted here, step by step, while a run trains.",
            how: "Not in this build yet: the chart fills once the training engine lands.",
        },
    );
}
