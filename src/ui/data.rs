//! The Data pane. Its engine is not in this build yet, so it shows an honest empty state:
//! what will appear here and what brings it.

use ratatui::layout::Rect;
use ratatui::Frame;

use super::widgets::{empty_state, pane_block, EmptyState};
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Data", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    empty_state(
        f,
        inner,
        theme,
        &EmptyState {
            headline: "No datasets yet",
            what: "The workspace's datasets (lathe.duckdb), a SQL editor and a scrollable results grid will be here.",
            how: "Not in this build yet: import and SQL arrive with the DuckDB data engine.",
        },
    );
}
