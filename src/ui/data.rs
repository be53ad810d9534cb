//! The Data pane: the workspace catalog's datasets (from the data engine). The SQL editor and the
//! results grid are not in this build yet, and the pane says so.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::widgets::{bytes, empty_state, pane_block, EmptyState};
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Data", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let list = match &app.datasets {
        None => {
            f.render_widget(Paragraph::new(Line::styled("Opening the workspace catalog…", theme.muted())), inner);
            return;
        }
        Some(Err(msg)) => {
            empty_state(f, inner, theme, &EmptyState { headline: "Catalog unavailable", what: msg, how: "" });
            return;
        }
        Some(Ok(list)) => list,
    };
    if list.is_empty() {
        empty_state(
            f,
            inner,
            theme,
            &EmptyState {
                headline: "No datasets",
                what: "Datasets you import (CSV, Parquet, JSON, JSONL) are listed here.",
                how: "Import with `lathe data import PATH`.",
            },
        );
        return;
    }
    let note_h = 3.min(inner.height.saturating_sub(2));
    let [table_area, note_area] = Layout::vertical([Constraint::Min(2), Constraint::Length(note_h)]).areas(inner);
    let header = Row::new(["dataset", "rows", "cols", "size", "source"].map(|h| Cell::from(h).style(theme.accent())));
    let rows = list.iter().map(|d| {
        Row::new(vec![
            Cell::from(d.name.clone()).style(theme.text()),
            Cell::from(d.rows.to_string()).style(theme.text()),
            Cell::from(d.columns.to_string()).style(theme.text()),
            Cell::from(bytes(d.source_bytes)).style(theme.muted()),
            Cell::from(d.source.clone()).style(theme.muted()),
        ])
    });
    let table = Table::new(
        rows,
        [Constraint::Length(16), Constraint::Length(9), Constraint::Length(5), Constraint::Length(10), Constraint::Min(10)],
    )
    .header(header)
    .column_spacing(2);
    f.render_widget(table, table_area);
    f.render_widget(
        Paragraph::new(Line::styled(
            "The SQL editor and results grid are not in this build yet; `lathe sql` runs queries while the workstation is closed.",
            theme.muted(),
        ))
        .wrap(Wrap { trim: true }),
        note_area,
    );
}
