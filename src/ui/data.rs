//! The Data pane: a schema browser (datasets with their columns), the SQL editor, and a results
//! grid that draws only the rows on screen from the pages the data engine has sent.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::theme::Theme;
use super::widgets::{centered, empty_state, pane_block, EmptyState};
use crate::app::action::Action;
use crate::app::data::{DataFocus, ResultState};
use crate::app::keymap::Mode;
use crate::app::state::App;

const MAX_COL: usize = 40;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Data", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    match &app.datasets {
        None => {
            f.render_widget(Paragraph::new(Line::styled("Opening the workspace catalog…", theme.muted())), inner);
            return;
        }
        Some(Err(msg)) => {
            empty_state(f, inner, theme, &EmptyState { headline: "Catalog unavailable", what: msg, how: "" });
            return;
        }
        Some(Ok(_)) => {}
    }
    let main = if inner.width >= 100 {
        let [schema, main] = Layout::horizontal([Constraint::Length(30), Constraint::Min(40)]).areas(inner);
        draw_schema(f, schema, app, theme);
        main
    } else {
        inner
    };
    let ed_h = (app.data.editor.lines().len() as u16 + 2).clamp(4, 8).min(main.height.saturating_sub(4).max(3));
    let [editor, status, grid] =
        Layout::vertical([Constraint::Length(ed_h), Constraint::Length(1), Constraint::Min(0)]).areas(main);
    draw_editor(f, editor, app, theme, focused && app.data.focus == DataFocus::Editor);
    draw_status(f, status, app, theme);
    match &app.data.result {
        Some(r) if r.shape.is_some() => draw_grid(f, grid, r, theme, focused && app.data.focus == DataFocus::Grid),
        _ if app.data.result.is_none() => {
            let km = &app.keymap;
            let key = |a: Action| km.hint(Mode::Sql, &a);
            let run = match run_keys(app) {
                (one, Some(other)) => format!("{one} (or {other})"),
                (one, None) => one,
            };
            let lines = vec![
                Line::styled(format!("Write SQL above and press {run} to run it."), theme.muted()),
                Line::styled(
                    format!(
                        "{} moves between the editor and the results; {} / {} recall past queries.",
                        key(Action::SwitchDataFocus),
                        key(Action::HistoryPrev),
                        key(Action::HistoryNext)
                    ),
                    theme.muted(),
                ),
                Line::styled("Datasets are tables; lathe's own tables are in the lathe schema (lathe.query_history, lathe.views).", theme.muted()),
            ];
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), grid);
        }
        _ => {}
    }
}

fn draw_schema(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let mut lines = Vec::new();
    let rows_of = |name: &str| {
        app.datasets
            .as_ref()
            .and_then(|d| d.as_ref().ok())
            .and_then(|l| l.iter().find(|d| d.name == name))
            .map(|d| d.rows.to_string())
    };
    if app.data.schema.is_empty() {
        lines.push(Line::styled("no tables", theme.muted()));
    }
    for (table, cols) in &app.data.schema {
        let rows = rows_of(table).map(|r| format!(" {r} rows")).unwrap_or_default();
        lines.push(Line::from(vec![Span::styled(table.clone(), theme.accent()), Span::styled(rows, theme.muted())]));
        for (c, t) in cols {
            lines.push(Line::from(vec![Span::styled(format!("  {c} "), theme.text()), Span::styled(t.clone(), theme.muted())]));
        }
    }
    let block = Block::default().borders(Borders::RIGHT).border_style(theme.border(false));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

/// The first two keys that run a query, as the keymap binds them.
fn run_keys(app: &App) -> (String, Option<String>) {
    let mut keys = app.keymap.keys_for(Mode::Sql, &Action::RunQuery).into_iter();
    (keys.next().unwrap_or_else(|| "(unbound)".into()), keys.next())
}

fn draw_editor(f: &mut Frame, area: Rect, app: &App, theme: &Theme, active: bool) {
    let mut ed = app.data.editor.clone();
    ed.set_block(
        Block::default()
            .borders(Borders::BOTTOM)
            .border_style(theme.border(active))
            .title(Span::styled(" SQL ", if active { theme.title(true) } else { theme.muted() })),
    );
    ed.set_style(theme.text());
    // The example query's hint names the keys the keymap binds (drawn here, so it follows a remap).
    let run = match run_keys(app) {
        (one, Some(other)) => format!("{one} or {other}"),
        (one, None) => one,
    };
    ed.set_placeholder_text(match app.data.example() {
        Some(example) => format!("{example}   ({run} runs)"),
        None => format!("Type a SQL statement   ({run} runs)"),
    });
    ed.set_placeholder_style(theme.muted());
    ed.set_cursor_line_style(ratatui::style::Style::default());
    ed.set_cursor_style(if active { theme.selection() } else { theme.text() });
    f.render_widget(&ed, area);
}

fn draw_status(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let line = match &app.data.result {
        _ if !app.data.completions.is_empty() => Line::styled(
            format!("completions: {}", app.data.completions.join("  ")),
            theme.muted(),
        ),
        None => Line::styled(format!("{} completes keywords, tables and columns", app.keymap.hint(Mode::Sql, &Action::Complete)), theme.muted()),
        Some(r) if r.running => Line::styled(format!("running… ({} cancels)", app.keymap.hint(Mode::Sql, &Action::CancelQuery)), theme.warn()),
        Some(r) if r.error.is_some() && r.shape.is_none() => {
            Line::styled(r.error.clone().unwrap_or_default(), theme.error())
        }
        Some(r) => {
            let total = r.total.unwrap_or(0);
            let ms = r.elapsed_ms.map(|m| format!(" · {m:.1} ms")).unwrap_or_default();
            let pos = if total > 0 { format!(" · row {} col {}", r.row + 1, r.col + 1) } else { String::new() };
            let err = r.error.as_ref().map(|e| format!(" · {e}")).unwrap_or_default();
            Line::from(vec![
                Span::styled(format!("{total} row{}", if total == 1 { "" } else { "s" }), theme.ok()),
                Span::styled(format!("{ms}{pos}"), theme.muted()),
                Span::styled(err, theme.error()),
            ])
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

fn clip(s: &str, w: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' || c == '\t' { ' ' } else { c }).collect();
    if flat.chars().count() <= w {
        format!("{flat:<w$}")
    } else {
        let mut t: String = flat.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn draw_grid(f: &mut Frame, area: Rect, r: &ResultState, theme: &Theme, active: bool) {
    let Some(shape) = &r.shape else { return };
    if area.height < 3 || shape.columns.is_empty() {
        return;
    }
    let body_h = (area.height - 2) as u64;
    let top = if r.row < body_h { 0 } else { r.row - body_h + 1 };
    let total = r.known_rows();
    let gutter = total.max(1).to_string().len().max(3);
    // Width of each column from its header, type and the visible values.
    let widths: Vec<usize> = (0..shape.columns.len())
        .map(|c| {
            let mut w = shape.columns[c].chars().count().max(shape.types[c].chars().count());
            for row in top..(top + body_h).min(total) {
                if let Some(cells) = r.row_cells(row) {
                    w = w.max(cells.get(c).map(|s| s.chars().count()).unwrap_or(0));
                }
            }
            w.min(MAX_COL)
        })
        .collect();
    // The first column shown: as far left as possible with the selected one still on screen.
    let avail = (area.width as usize).saturating_sub(gutter + 1);
    let mut first = r.col;
    let mut used = widths[r.col] + 1;
    while first > 0 && used + widths[first - 1] < avail {
        first -= 1;
        used += widths[first] + 1;
    }
    let mut cols = Vec::new();
    let mut w_sum = 0;
    for (c, w) in widths.iter().enumerate().skip(first) {
        if w_sum + w + 1 > avail && !cols.is_empty() {
            break;
        }
        cols.push(c);
        w_sum += w + 1;
    }
    let mut lines = Vec::new();
    let head = |texts: &dyn Fn(usize) -> String, style| {
        let mut spans = vec![Span::raw(" ".repeat(gutter + 1))];
        for &c in &cols {
            spans.push(Span::styled(clip(&texts(c), widths[c]), style));
            spans.push(Span::raw(" "));
        }
        Line::from(spans)
    };
    lines.push(head(&|c| shape.columns[c].clone(), theme.accent()));
    lines.push(head(&|c| shape.types[c].clone(), theme.muted()));
    for row in top..(top + body_h).min(total) {
        let selected = row == r.row;
        let mut spans = vec![Span::styled(format!("{:>gutter$} ", row + 1), theme.muted())];
        match r.row_cells(row) {
            Some(cells) => {
                for &c in &cols {
                    let text = clip(cells.get(c).map(String::as_str).unwrap_or(""), widths[c]);
                    let mut style = if cells.get(c).is_some_and(|v| v == "NULL") { theme.muted() } else { theme.text() };
                    if selected && active {
                        style = if c == r.col { theme.selection() } else { style.add_modifier(Modifier::BOLD) };
                    }
                    spans.push(Span::styled(text, style));
                    spans.push(Span::raw(" "));
                }
            }
            None => spans.push(Span::styled("…", theme.muted())),
        }
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines), area);
}

/// The selected row in full: each column with its type and whole value.
pub fn row_viewer(f: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let Some(r) = &app.data.result else { return };
    let (Some(shape), Some(cells)) = (&r.shape, r.row_cells(r.row)) else { return };
    let mut lines = Vec::new();
    for (i, name) in shape.columns.iter().enumerate() {
        lines.push(Line::from(vec![
            Span::styled(name.clone(), theme.accent()),
            Span::styled(format!("  {}", shape.types[i]), theme.muted()),
        ]));
        for l in cells.get(i).map(String::as_str).unwrap_or("").lines() {
            lines.push(Line::styled(format!("  {l}"), theme.text()));
        }
    }
    let close = app.keymap.hint(Mode::Viewer, &Action::Close);
    scroll_overlay(f, area, app, &format!("Row {} ({close} closes)", r.row + 1), lines);
}

/// The path prompt of import and export, with the completions found so far.
pub fn prompt(f: &mut Frame, area: Rect, app: &App) {
    use crate::app::shell::PromptKind;
    let theme = app.theme();
    let Some(p) = &app.prompt else { return };
    let (tab, enter) = (app.keymap.hint(Mode::Prompt, &Action::Complete), app.keymap.hint(Mode::Prompt, &Action::Confirm));
    let title = match p.kind {
        PromptKind::Import => format!("Import a file, glob or folder ({tab} completes, {enter} imports)"),
        PromptKind::Export => format!("Export the result to .csv, .parquet or .jsonl ({tab} completes, {enter} writes)"),
        PromptKind::CompareModel => format!("A second model to answer beside the first: a GGUF file, ollama:MODEL or openai:MODEL@URL ({enter} loads)"),
        PromptKind::AttachKb => format!("The knowledge collection answers draw on; empty for none ({tab} completes, {enter} attaches)"),
        PromptKind::KbAdd => {
            let name = app.knowledge.add_target.clone().unwrap_or_default();
            format!("Add a file, folder, glob or dataset:NAME.COLUMN to {name} ({tab} completes, {enter} adds)")
        }
        PromptKind::Model => format!("Open a GGUF file or a library name, or ollama:MODEL[@HOST:PORT] or openai:MODEL@http(s)://HOST:PORT/v1 ({enter} loads)"),
    };
    let shown = p.completions.len().min(8) as u16;
    let rect = centered(area, area.width.saturating_sub(4).clamp(30, 100), 3 + shown + u16::from(shown > 0) + 1);
    f.render_widget(Clear, rect);
    let block = pane_block(theme, &title, true).style(theme.overlay());
    let inner = block.inner(rect);
    f.render_widget(block, rect);
    let [input, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let mut ta = p.input.clone();
    ta.set_style(theme.text());
    ta.set_cursor_line_style(ratatui::style::Style::default());
    ta.set_cursor_style(theme.selection());
    f.render_widget(&ta, input);
    let mut lines: Vec<Line> = p.completions.iter().take(8).map(|c| Line::styled(c.clone(), theme.muted())).collect();
    if p.completions.len() > 8 {
        lines.push(Line::styled(format!("… {} more", p.completions.len() - 8), theme.muted()));
    }
    if !lines.is_empty() {
        lines.insert(0, Line::raw(""));
    }
    f.render_widget(Paragraph::new(lines), list);
}

/// The training-set views: name, format, split sizes, the query, and the first examples.
pub fn views_preview(f: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let mut lines = Vec::new();
    match &app.data.views_preview {
        None => lines.push(Line::styled("Reading the views…", theme.muted())),
        Some(v) if v.is_empty() => lines.push(Line::styled(
            "No training-set views; define one with `lathe data view create NAME --sql QUERY --format FORMAT`.",
            theme.muted(),
        )),
        Some(v) => {
            for (name, r) in v {
                match r {
                    Ok((info, examples)) => {
                        lines.push(Line::from(vec![
                            Span::styled(name.clone(), theme.accent()),
                            Span::styled(
                                format!(
                                    "  {}  {} train / {} eval ({:.0}% held out)",
                                    info.format.name(),
                                    info.train_rows,
                                    info.eval_rows,
                                    info.eval_fraction * 100.0
                                ),
                                theme.muted(),
                            ),
                        ]));
                        lines.push(Line::styled(format!("  {}", info.sql), theme.muted()));
                        for (i, ex) in examples.iter().enumerate() {
                            lines.push(Line::styled(format!("  example {}", i + 1), theme.key()));
                            for l in ex.lines() {
                                lines.push(Line::styled(format!("    {l}"), theme.text()));
                            }
                        }
                    }
                    Err(e) => {
                        lines.push(Line::styled(name.clone(), theme.accent()));
                        lines.push(Line::styled(format!("  {e}"), theme.error()));
                    }
                }
                lines.push(Line::raw(""));
            }
        }
    }
    let close = app.keymap.hint(Mode::Viewer, &Action::Close);
    scroll_overlay(f, area, app, &format!("Training-set views (↑↓ scroll, {close} closes)"), lines);
}

/// A near-full-size box of wrapped text that scrolls with the viewer keys.
fn scroll_overlay(f: &mut Frame, area: Rect, app: &App, title: &str, lines: Vec<Line>) {
    super::widgets::scroll_overlay(f, area, app.theme(), title, lines, app.data.viewer_scroll);
}
