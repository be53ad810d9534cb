//! The status bar: running jobs with progress, the newest notice, and the keys that matter.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::app::action::Action;
use crate::app::keymap::Mode;
use crate::app::shell::Level;
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let mut spans: Vec<Span> = Vec::new();
    // The workspace's owner is a server: its jobs go on when the workstation closes.
    if let Some(s) = &app.server {
        spans.push(Span::styled(format!(" ⇄ serve {} ", s.address), theme.key()));
    }
    for j in app.running_jobs() {
        let pct = j.fraction.map(|p| format!(" {:.0}%", p * 100.0)).unwrap_or_default();
        spans.push(Span::styled(format!(" ● {}{pct} ", j.kind.words(&j.title)), theme.accent()));
    }
    if let Some((_, n)) = app.current_notice() {
        let style = match n.level {
            Level::Info => theme.text(),
            Level::Warn => theme.warn(),
            Level::Error => theme.error(),
        };
        let more = if app.notices.len() > 1 { format!(" (+{})", app.notices.len() - 1) } else { String::new() };
        spans.push(Span::styled(format!(" {}{more}", n.text), style));
    }
    let km = &app.keymap;
    let text = app.text_input_focused();
    let mode = app.mode();
    let key = |a: Action| km.key_for(Mode::Global, &a, text).unwrap_or_default();
    let here = |a: Action| km.key_for(mode, &a, text).unwrap_or_default();
    let hints = vec![(key(Action::ToggleHelp), "help"), (key(Action::FocusNext), "pane"), (key(Action::ToggleZoom), "zoom")];
    let mut first: Vec<(String, &str)> = match mode {
        Mode::Chat => vec![(here(Action::Send), "send")],
        Mode::Sql => vec![(here(Action::RunQuery), "run"), (here(Action::SwitchDataFocus), "results")],
        Mode::Grid => vec![(here(Action::ViewRow), "row"), (here(Action::SwitchDataFocus), "editor")],
        _ => vec![],
    };
    if app.data.running() && matches!(mode, Mode::Sql | Mode::Grid) {
        first.insert(0, (here(Action::CancelQuery), "cancel query"));
    }
    first.extend(hints);
    let mut hints = first;
    if !app.notices.is_empty() {
        hints.push((key(Action::Close), "dismiss"));
    }
    hints.push((key(Action::Quit), "quit"));
    let mut right: Vec<Span> = Vec::new();
    for (k, what) in hints {
        right.push(Span::styled(k, theme.key()));
        right.push(Span::styled(format!(" {what}  "), theme.status()));
    }
    let right_w: usize = right.iter().map(|s| s.width()).sum();
    let left_w: usize = spans.iter().map(|s| s.width()).sum();
    let width = area.width as usize;
    // The hints give way to jobs and messages when the bar is full.
    if left_w + right_w < width {
        spans.push(Span::styled(" ".repeat(width - left_w - right_w), theme.status()));
        spans.extend(right);
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(theme.status()), area);
}
