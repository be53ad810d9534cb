//! The help overlay, generated from the keymap so it always matches what the keys do.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::widgets::{centered, pane_block};
use crate::app::keymap::Mode;
use crate::app::state::App;

pub fn lines(app: &App) -> Vec<Line<'static>> {
    let theme = app.theme();
    let mut out = Vec::new();
    for mode in Mode::ALL {
        let rows = app.keymap.describe(mode);
        if rows.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(Line::raw(""));
        }
        out.push(Line::styled(mode.title().to_string(), theme.accent()));
        let key_w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).min(22);
        for (keys, what) in rows {
            out.push(Line::from(vec![
                Span::styled(format!("  {keys:<key_w$}  "), theme.key()),
                Span::styled(what, theme.text()),
            ]));
        }
    }
    out.push(Line::raw(""));
    out.push(Line::styled(
        format!("Workspace: {}   Theme: {}", app.workspace.display(), app.theme().name),
        theme.muted(),
    ));
    out
}

pub fn render(f: &mut Frame, area: Rect, app: &App, scroll: u16) {
    let theme = app.theme();
    let content = lines(app);
    let rect = centered(area, 72.min(area.width.saturating_sub(4)).max(40), area.height.saturating_sub(2).max(8));
    let visible = rect.height.saturating_sub(2);
    let max_scroll = (content.len() as u16).saturating_sub(visible);
    let scroll = scroll.min(max_scroll);
    let close = app.keymap.hint(Mode::Help, &crate::app::action::Action::Close);
    let title = if max_scroll > 0 { format!("Keys (↑↓ to scroll, {close} to close)") } else { format!("Keys ({close} to close)") };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(content).scroll((scroll, 0)).style(theme.overlay()).block(pane_block(theme, &title, true)),
        rect,
    );
}
