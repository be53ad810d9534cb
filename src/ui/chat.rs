//! The Chat pane: a transcript above a tui-textarea input. The input is live; the transcript stays
//! empty until the chat engine lands, and says so.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

use super::widgets::{empty_state, pane_block, EmptyState};
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Chat", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let input_h = (app.chat_input.lines().len() as u16 + 2).clamp(3, (inner.height / 2).max(3));
    let [transcript, input] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(input_h)]).areas(inner);
    empty_state(
        f,
        transcript,
        theme,
        &EmptyState {
            headline: "No model loaded",
            what: "Your messages and the model's streamed answers, with tokens per second, will appear here.",
            how: "Not in this build yet: chat with GGUF models arrives with the llama.cpp engine.",
        },
    );
    // The widget carries its own style; a clone per frame is cheap next to drawing.
    let mut ta = app.chat_input.clone();
    ta.set_block(
        Block::default()
            .borders(Borders::TOP)
            .border_style(theme.border(false))
            .title(ratatui::text::Span::styled(" message ", theme.muted())),
    );
    ta.set_style(theme.text());
    ta.set_placeholder_style(theme.muted());
    ta.set_cursor_line_style(ratatui::style::Style::default());
    if focused {
        ta.set_cursor_style(theme.selection());
    } else {
        ta.set_cursor_style(theme.text());
    }
    f.render_widget(&ta, input);
}
