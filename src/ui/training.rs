//! The Training pane. Its engine is not in this build yet, so it shows an honest empty state:
//! what will appear here and what brings it.

use ratatui::layout::Rect;
use ratatui::Frame;

use super::widgets::{empty_state, pane_block, EmptyState};
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Training", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    empty_state(
        f,
        inner,
        theme,
        &EmptyState {
            headline: "No training run",
            what: "The active fine-tuning run will show here: step, epoch, tokens per second, learning rate, eval results and time left.",
            how: "Not in this build yet: training (LoRA and full fine-tuning on candle) arrives with the training engine.",
        },
    );
}
