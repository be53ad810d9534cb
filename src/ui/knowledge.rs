//! The Knowledge pane: the collections (model, documents, chunks, size, indices), a running
//! ingest's progress, the search box with its mode, and the results (rank, score, `path:line`, the
//! heading path and a snippet with the query's words marked). The chunk viewer shows one result
//! in full.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::theme::Theme;
use super::widgets::{empty_state, key_hints, pane_block, scroll_overlay, thousands, EmptyState};
use crate::app::action::Action;
use crate::app::knowledge::KbFocus;
use crate::app::keymap::Mode;
use crate::app::state::App;
use crate::engine::knowledge::store::Hit;
use crate::units::bytes;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let kb = &app.knowledge;
    let block = pane_block(theme, "Knowledge", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let list = match &kb.list {
        None => {
            let e = EmptyState { headline: "Reading the collections", what: "Collections live in the workspace's vectors/ folder.", how: "" };
            return empty_state(f, inner, theme, &e);
        }
        Some(Err(e)) => return f.render_widget(Paragraph::new(Line::styled(e.clone(), theme.error())), inner),
        Some(Ok(l)) if l.is_empty() => {
            let how = format!(
                "`lathe kb create NAME --model DIR` makes one (DIR: a sentence-embedding folder such as all-MiniLM-L6-v2); then {} here adds files, folders or globs, or `lathe kb add NAME PATH`.",
                app.keymap.hint(Mode::Knowledge, &Action::AddToCollection)
            );
            let e = EmptyState {
                headline: "No collections",
                what: "A collection holds your documents (Markdown, text, reStructuredText, code, HTML), cut along their structure and embedded, for search and for chat to cite.",
                how: &how,
            };
            return empty_state(f, inner, theme, &e);
        }
        Some(Ok(l)) => l,
    };
    let hits = kb.hits();
    let list_rows = (list.len() as u16 + 1).min(if kb.results.is_some() { 4 } else { inner.height.saturating_sub(4).max(2) });
    let progress_rows = u16::from(kb.ingest.is_some());
    let [table_area, progress_area, search_area, results_area, keys] = Layout::vertical([
        Constraint::Length(list_rows),
        Constraint::Length(progress_rows),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(inner);

    let wide = inner.width >= 90;
    let rows: Vec<Row> = list
        .iter()
        .map(|c| {
            let mut cells = vec![
                Cell::from(c.name.clone()),
                Cell::from(c.model.name.clone()),
                Cell::from(thousands(c.documents)),
                Cell::from(thousands(c.chunks)),
                Cell::from(bytes(c.bytes)),
            ];
            if wide {
                let idx = match (c.vector_index, c.text_index) {
                    (true, true) => "ANN + text",
                    (false, true) => "exact + text",
                    (true, false) => "ANN",
                    (false, false) => "none yet",
                };
                cells.push(Cell::from(idx));
            }
            Row::new(cells)
        })
        .collect();
    let mut header = vec!["collection", "model", "docs", "chunks", "size"];
    let mut widths = vec![Constraint::Min(12), Constraint::Min(12), Constraint::Length(7), Constraint::Length(8), Constraint::Length(9)];
    if wide {
        header.push("search");
        widths.push(Constraint::Length(12));
    }
    let highlight = if kb.focus == KbFocus::List { theme.selection() } else { theme.accent() };
    let table = Table::new(rows, widths).header(Row::new(header).style(theme.muted())).row_highlight_style(highlight).column_spacing(1);
    let mut state = TableState::default().with_selected(Some(kb.selected));
    f.render_stateful_widget(table, table_area, &mut state);

    if let Some((_, name, p)) = &kb.ingest {
        let text = match p {
            Some(p) => format!("ingesting into {name}: {}", crate::service::knowledge::progress_line(p)),
            None => format!("ingesting into {name}: loading the model"),
        };
        f.render_widget(Paragraph::new(Line::styled(text, theme.accent())), progress_area);
    }

    search_box(f, search_area, app, theme);
    results(f, results_area, app, theme, hits);

    let hints = if kb.focus == KbFocus::Search {
        key_hints(&app.keymap, Mode::KbSearch, &[(Action::Search, "search"), (Action::CycleSearchMode, "mode"), (Action::LeaveSearch, "back")], keys.width)
    } else {
        key_hints(
            &app.keymap,
            Mode::Knowledge,
            &[
                (Action::FocusSearch, "search"),
                (Action::OpenHit, "open"),
                (Action::AddToCollection, "add"),
                (Action::SyncCollection, "sync"),
                (Action::DropCollection, "drop"),
                (Action::CycleSearchMode, "mode"),
            ],
            keys.width,
        )
    };
    f.render_widget(Paragraph::new(Line::styled(hints, theme.muted())), keys);
}

fn search_box(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let kb = &app.knowledge;
    let label = format!("[{}] ", kb.mode.name());
    let [label_area, input] = Layout::horizontal([Constraint::Length(label.len() as u16), Constraint::Min(1)]).areas(area);
    f.render_widget(Paragraph::new(Span::styled(label, theme.accent())), label_area);
    if kb.focus == KbFocus::Search || !kb.query_text().is_empty() {
        let mut ta = kb.query.clone();
        ta.set_style(theme.text());
        ta.set_cursor_line_style(Style::default());
        ta.set_cursor_style(if kb.focus == KbFocus::Search { theme.selection() } else { theme.text() });
        f.render_widget(&ta, input);
    } else {
        let hint = format!("{} to search {}", app.keymap.hint(Mode::Knowledge, &Action::FocusSearch), kb.current().map(|c| c.name.as_str()).unwrap_or(""));
        f.render_widget(Paragraph::new(Line::styled(hint, theme.muted())), input);
    }
}

fn results(f: &mut Frame, area: Rect, app: &App, theme: &Theme, hits: &[Hit]) {
    let kb = &app.knowledge;
    let mut lines: Vec<Line> = Vec::new();
    match &kb.results {
        _ if kb.searching => lines.push(Line::styled("searching…", theme.muted())),
        None => {}
        Some((_, Err(e))) => lines.push(Line::styled(e.clone(), theme.error())),
        Some((q, Ok(r))) if r.hits.is_empty() => lines.push(Line::styled(format!("Nothing found for {q:?} ({:.0} ms).", r.millis), theme.muted())),
        Some((q, Ok(r))) => {
            let terms = terms(q);
            let per_hit = if area.height as usize > hits.len() * 3 { 2 } else { 1 };
            // Keep the selected result on screen.
            let fits = (area.height as usize).saturating_sub(1) / (per_hit + 1).max(1);
            let first = kb.hit.saturating_sub(fits.saturating_sub(1));
            for (i, h) in hits.iter().enumerate().skip(first) {
                let selected = kb.focus == KbFocus::Results && i == kb.hit;
                let style = if selected { theme.selection() } else { theme.text() };
                let place = if h.headings.is_empty() { String::new() } else { format!("  {}", h.headings) };
                lines.push(Line::from(vec![
                    Span::styled(format!("{:>2}. {:.4}  ", h.rank, h.score), style),
                    Span::styled(format!("{}:{}", short_path(&h.path), h.first_line), if selected { style } else { theme.accent() }),
                    Span::styled(place, theme.muted()),
                ]));
                for l in h.text.lines().filter(|l| !l.trim().is_empty()).take(per_hit) {
                    let mut spans = vec![Span::raw("    ")];
                    spans.extend(marked(l, &terms, theme));
                    lines.push(Line::from(spans));
                }
            }
            lines.push(Line::styled(format!("{} results · {} · {:.0} ms", r.hits.len(), r.mode.name(), r.millis), theme.muted()));
        }
    }
    f.render_widget(Paragraph::new(lines), area);
}

/// The query's words, lowercased, for marking.
fn terms(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 1).map(str::to_lowercase).collect()
}

/// A line with the query's words in the key style.
fn marked<'a>(line: &str, terms: &[String], theme: &Theme) -> Vec<Span<'a>> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut word = String::new();
    let flush_word = |word: &mut String, plain: &mut String, out: &mut Vec<Span<'a>>| {
        if word.is_empty() {
            return;
        }
        if terms.iter().any(|t| word.to_lowercase().starts_with(t.as_str())) {
            if !plain.is_empty() {
                out.push(Span::styled(std::mem::take(plain), theme.text()));
            }
            out.push(Span::styled(std::mem::take(word), theme.key()));
        } else {
            plain.push_str(word);
            word.clear();
        }
    };
    for c in line.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush_word(&mut word, &mut plain, &mut out);
            plain.push(c);
        }
    }
    flush_word(&mut word, &mut plain, &mut out);
    if !plain.is_empty() {
        out.push(Span::styled(plain, theme.text()));
    }
    out
}

/// A path as the user thinks of it: under the home folder as ~, else whole.
fn short_path(path: &str) -> String {
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() && path.starts_with(&format!("{home}/")) => format!("~{}", &path[home.len()..]),
        _ => path.to_string(),
    }
}

/// The selected result in full: where it is, then its text.
pub fn chunk_viewer(f: &mut Frame, area: Rect, app: &App, scroll: u16) {
    let theme = app.theme();
    let Some(h) = app.knowledge.hits().get(app.knowledge.hit) else { return };
    let mut lines = vec![Line::styled(format!("{}:{}-{}", h.path, h.first_line, h.last_line), theme.accent())];
    if !h.headings.is_empty() {
        lines.push(Line::styled(h.headings.clone(), theme.muted()));
    }
    let ranks = match (h.vector_rank, h.text_rank) {
        (Some(v), Some(t)) => format!("vector rank {v}, text rank {t}"),
        (Some(v), None) => format!("vector rank {v}"),
        (None, Some(t)) => format!("text rank {t}"),
        (None, None) => String::new(),
    };
    lines.push(Line::styled(format!("score {:.4}  {ranks}", h.score), theme.muted()));
    lines.push(Line::raw(""));
    let terms = app.knowledge.results.as_ref().map(|(q, _)| terms(q)).unwrap_or_default();
    for l in h.text.lines() {
        lines.push(Line::from(marked(l, &terms, theme)));
    }
    let close = app.keymap.hint(Mode::Viewer, &Action::Close);
    scroll_overlay(f, area, theme, &format!("Result {} ({close} closes)", h.rank), lines, scroll);
}
