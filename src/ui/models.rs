//! The Models pane: the model library (the workspace's models/, added paths, the Hugging Face cache
//! and the local Ollama store) with what each model is and the memory it needs. Enter chats with a
//! GGUF model; e exports a Hugging Face folder as GGUF.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::widgets::{empty_state, key_hints, pane_block, EmptyState};
use crate::app::action::Action;
use crate::app::keymap::Mode;
use crate::app::state::App;
use crate::units::bytes;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Models", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let list = match &app.models.list {
        None => {
            let e = EmptyState { headline: "Looking for models", what: "Scanning models/, added paths, the Hugging Face cache and Ollama.", how: "" };
            return empty_state(f, inner, theme, &e);
        }
        Some(Err(e)) => return f.render_widget(Paragraph::new(Line::styled(e.clone(), theme.error())), inner),
        Some(Ok(l)) if l.is_empty() => {
            let serve = if app.server.is_some() { "stops serving" } else { "serves the workspace over HTTP (lathe serve)" };
            let how = format!(
                "`lathe models add PATH` adds a file or folder; `lathe export RUN` writes a trained run as GGUF; {} scans again; {} {serve}.",
                app.keymap.hint(Mode::Models, &Action::RefreshModels),
                app.keymap.hint(Mode::Models, &Action::ToggleServing)
            );
            let e = EmptyState {
                headline: "No models found",
                what: "GGUF files and Hugging Face folders in the workspace's models/, the Hugging Face cache (~/.cache/huggingface/hub) and Ollama (~/.ollama/models) appear here.",
                how: &how,
            };
            return empty_state(f, inner, theme, &e);
        }
        Some(Ok(l)) => l,
    };
    let wide = inner.width >= 110;
    let rows: Vec<Row> = list
        .iter()
        .map(|e| {
            let style = if e.problem.is_some() { theme.error() } else { theme.text() };
            let mut cells = vec![
                Cell::from(Span::styled(e.name.clone(), style)),
                Cell::from(e.architecture.clone()),
                Cell::from(crate::present::params(e.params)),
                Cell::from(e.quantization.clone()),
                Cell::from(bytes(e.file_size)),
                Cell::from(bytes(e.ram_needed)),
            ];
            if wide {
                cells.insert(1, Cell::from(e.source.clone()));
                cells.insert(2, Cell::from(e.format.clone()));
                cells.push(Cell::from(e.context_length.to_string()));
            }
            Row::new(cells)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec!["name", "source", "kind", "arch", "params", "quant", "size", "RAM", "context"],
            vec![
                Constraint::Min(24),
                Constraint::Length(11),
                Constraint::Length(4),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(7),
            ],
        )
    } else {
        (
            vec!["name", "arch", "params", "quant", "size", "RAM"],
            vec![Constraint::Min(16), Constraint::Length(7), Constraint::Length(7), Constraint::Length(8), Constraint::Length(10), Constraint::Length(10)],
        )
    };
    let table = Table::new(rows, widths).header(Row::new(header).style(theme.muted())).row_highlight_style(theme.selection()).column_spacing(1);
    let [top, detail, keys] = Layout::vertical([Constraint::Min(1), Constraint::Length(2), Constraint::Length(1)]).areas(inner);
    let mut state = TableState::default().with_selected(Some(app.models.selected));
    f.render_stateful_widget(table, top, &mut state);
    if let Some(e) = list.get(app.models.selected) {
        let second = match &e.problem {
            Some(p) => Line::styled(p.clone(), theme.error()),
            None => Line::styled(format!("{} · {}", e.source, e.path.display()), theme.muted()),
        };
        f.render_widget(Paragraph::new(vec![Line::styled(e.name.clone(), theme.accent()), second]), detail);
    }
    let serve = if app.server.is_some() { "stop serving" } else { "serve" };
    let hints = key_hints(&app.keymap, Mode::Models, &[(Action::ChatWithModel, "chat"), (Action::ExportModel, "export as GGUF"), (Action::RefreshModels, "scan again"), (Action::ToggleServing, serve)], keys.width);
    f.render_widget(Paragraph::new(Line::styled(hints, theme.muted())), keys);
}
