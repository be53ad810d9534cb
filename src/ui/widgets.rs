//! Pieces the panes share: the pane frame, the empty state, sizes and centring.

use ratatui::layout::{Alignment, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::theme::Theme;
use crate::app::action::Action;
use crate::app::keymap::{Keymap, Mode};
pub use crate::units::{bytes, duration};

/// "Enter chat  e export": each action's key as the live keymap binds it in `mode`, then what it
/// does. Every key named on screen comes from here or from `Keymap::hint`, so a remapped key shows.
/// The hints that fit in `width` columns, in order, whole: one cut in the middle reads as a
/// different key (the help overlay lists them all).
pub fn key_hints(km: &Keymap, mode: Mode, hints: &[(Action, &str)], width: u16) -> String {
    let mut out = String::new();
    for (a, what) in hints {
        let hint = format!("{} {what}", km.hint(mode, a));
        let sep = if out.is_empty() { 0 } else { 2 };
        if out.chars().count() + sep + hint.chars().count() > width as usize {
            break;
        }
        if sep > 0 {
            out.push_str("  ");
        }
        out.push_str(&hint);
    }
    out
}

pub fn pane_block<'a>(theme: &Theme, title: &'a str, focused: bool) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Rounded })
        .border_style(theme.border(focused))
        .title(Span::styled(format!(" {title} "), theme.title(focused)))
}

/// What a pane shows before its engine has anything: a headline, what will appear, how to start.
pub struct EmptyState<'a> {
    pub headline: &'a str,
    pub what: &'a str,
    pub how: &'a str,
}

pub fn empty_state(f: &mut Frame, area: Rect, theme: &Theme, e: &EmptyState) {
    let lines = vec![
        Line::styled(e.headline.to_string(), theme.accent()),
        Line::raw(""),
        Line::styled(e.what.to_string(), theme.text()),
        Line::raw(""),
        Line::styled(e.how.to_string(), theme.muted()),
    ];
    centered_lines(f, area, lines);
}

/// Lines centred in `area`: vertically when there is room, each wrapped to the width.
pub fn centered_lines(f: &mut Frame, area: Rect, lines: Vec<Line>) {
    let width = area.width.saturating_sub(2).max(1);
    let needed: u16 = lines
        .iter()
        .map(|l| (l.width() as u16).div_ceil(width).max(1))
        .sum();
    let top = area.height.saturating_sub(needed) / 2;
    let rect = Rect::new(area.x + 1, area.y + top, width, area.height - top);
    f.render_widget(
        Paragraph::new(lines).alignment(Alignment::Center).wrap(Wrap { trim: true }),
        rect,
    );
}

pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}


/// A whole pane whose engine is not in this build: its frame and an honest empty state.
pub fn empty_pane(f: &mut Frame, area: Rect, theme: &Theme, title: &str, focused: bool, e: &EmptyState) {
    let block = pane_block(theme, title, focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    empty_state(f, inner, theme, e);
}

/// A centred, scrollable text overlay over `area`.
pub fn scroll_overlay(f: &mut Frame, area: Rect, theme: &Theme, title: &str, lines: Vec<Line>, scroll: u16) {
    let rect = centered(area, area.width.saturating_sub(6).max(30), area.height.saturating_sub(2).max(6));
    f.render_widget(ratatui::widgets::Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .style(theme.overlay())
            .block(pane_block(theme, title, true)),
        rect,
    );
}

/// Thousands separators: 934784 -> 934,784.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
