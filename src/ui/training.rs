//! The Training pane. Its engine is not in this build yet, so it shows an honest empty state:
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
        "Training",
        focused,
        &EmptyState {
            headline: "No training run",
            what: "The active fine-tuning run will show here: step, epoch, tokens per second, learning rate, eval results and time left.",
            how: "Not in this build yet: training (LoRA and full fine-tuning on candle) arrives with the training engine.",
        },
    );
}
