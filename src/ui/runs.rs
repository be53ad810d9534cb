//! The Runs pane: every run in the workspace with its status, best eval loss, duration, model and
//! view; Enter opens one (parameters, curves), m and c compare two.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::widgets::{duration, empty_state, key_hints, pane_block, scroll_overlay, EmptyState};
use crate::app::action::Action;
use crate::app::keymap::Mode;
use crate::app::state::App;
use crate::engine::types::RunStatus;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Runs", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let rows = app.training.runs.rows();
    match &app.training.runs.list {
        Some(Err(e)) => {
            f.render_widget(Paragraph::new(Line::styled(e.clone(), theme.error())), inner);
            return;
        }
        _ if rows.is_empty() => {
            let key = |a: Action| app.keymap.hint(Mode::Training, &a);
            let how = format!("Start one in the Training pane: {} trains the demo model, {} a run on your model.", key(Action::StartDemo), key(Action::NewRun));
            empty_state(
                f,
                inner,
                theme,
                &EmptyState {
                    headline: "No runs recorded",
                    what: "Every training run is kept here with its parameters, per-step metrics, eval results and artifacts (also in lathe.runs and lathe.metrics for SQL).",
                    how: &how,
                },
            );
            return;
        }
        _ => {}
    }
    let f4 = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let mark = if app.training.runs.marked.as_deref() == Some(r.id.as_str()) { "*" } else { " " };
            let status_style = match r.status {
                RunStatus::Completed | RunStatus::StoppedEarly => theme.ok(),
                RunStatus::Running | RunStatus::Paused => theme.accent(),
                RunStatus::Failed => theme.error(),
                RunStatus::Starting | RunStatus::Cancelled | RunStatus::Interrupted => theme.warn(),
            };
            let model = std::path::Path::new(&r.model).file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            Row::new(vec![
                Cell::from(format!("{mark}{}", r.id)),
                Cell::from(Span::styled(r.status.words(), status_style)),
                Cell::from(r.method.clone()),
                Cell::from(r.optimizer.clone()),
                Cell::from(format!("{}/{}", r.step.unwrap_or(0), r.total_steps.unwrap_or(0))),
                Cell::from(f4(r.best_eval_loss)),
                Cell::from(r.exact_match.map(|a| format!("{:.1}%", a * 100.0)).unwrap_or_else(|| "-".into())),
                Cell::from(duration(r.duration_s.unwrap_or(0.0))),
                Cell::from(r.view.clone()),
                Cell::from(model),
            ])
        })
        .collect();
    let header = Row::new(["  id", "status", "method", "optimizer", "step", "best eval", "exact", "time", "view", "model"]).style(theme.muted());
    let mut widths = vec![
        Constraint::Length(22),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(12),
        Constraint::Min(8),
    ];
    // Narrow panes keep the columns that tell runs apart; the rest is in the detail view.
    let (body, header) = if inner.width < 110 {
        let keep = [0usize, 1, 4, 5, 6, 7];
        widths = keep.iter().map(|&i| widths[i]).collect();
        // Below the six columns' width ids lose their date, not their distinguishing end, and the
        // other columns take what their values need.
        let short = inner.width < 64;
        if short {
            widths = [12, 11, 9, 6, 6, 5].into_iter().map(Constraint::Length).collect();
        }
        let rows: Vec<Row> = rows
            .iter()
            .map(|r| {
                let mark = if app.training.runs.marked.as_deref() == Some(r.id.as_str()) { "*" } else { " " };
                Row::new(vec![
                    Cell::from(format!("{mark}{}", if short { short_id(&r.id) } else { &r.id })),
                    Cell::from(r.status.words()),
                    Cell::from(format!("{}/{}", r.step.unwrap_or(0), r.total_steps.unwrap_or(0))),
                    Cell::from(f4(r.best_eval_loss)),
                    Cell::from(r.exact_match.map(|a| format!("{:.1}%", a * 100.0)).unwrap_or_else(|| "-".into())),
                    Cell::from(duration(r.duration_s.unwrap_or(0.0))),
                ])
            })
            .collect();
        let best = if short { "best" } else { "best eval" };
        (rows, Row::new(["  id", "status", "step", best, "exact", "time"]).style(theme.muted()))
    } else {
        (body, header)
    };
    let table = Table::new(body, widths).header(header).row_highlight_style(theme.selection()).column_spacing(1);
    let mut state = TableState::default().with_selected(Some(app.training.runs.selected));
    let [list, keys] = ratatui::layout::Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    f.render_stateful_widget(table, list, &mut state);
    f.render_widget(
        Paragraph::new(Line::styled(
            key_hints(
                &app.keymap,
                Mode::Runs,
                &[
                    (Action::OpenRun, "open"),
                    (Action::MarkRun, "mark"),
                    (Action::CompareRuns, "compare"),
                    (Action::ResumeRun, "resume"),
                    (Action::ExportRun, "export"),
                    (Action::QuantReports, "quant"),
                    (Action::RefreshRuns, "reload"),
                ],
                keys.width,
            ),
            theme.muted(),
        )),
        keys,
    );
}

/// A run's details, or two runs compared.
pub fn detail(f: &mut Frame, area: Rect, app: &App) {
    let Some((title, lines)) = &app.training.runs.detail else { return };
    let lines: Vec<Line> = lines.iter().map(|l| Line::styled(l.clone(), app.theme().text())).collect();
    let close = app.keymap.hint(Mode::Viewer, &Action::Close);
    scroll_overlay(f, area, app.theme(), &format!("{title} (↑↓ scroll, {close} closes)"), lines, app.training.runs.detail_scroll);
}

/// A run id without its date (`20261204-052136-6c95` is `052136-6c95`), where a narrow pane
/// would otherwise cut every id to the same date; the time and the random tail tell runs apart.
fn short_id(id: &str) -> &str {
    match id.split_once('-') {
        Some((date, rest)) if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty() => rest,
        _ => id,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_ids_drop_the_date_only() {
        assert_eq!(super::short_id("20261204-052136-6c95"), "052136-6c95");
        assert_eq!(super::short_id("my-run"), "my-run");
        assert_eq!(super::short_id("20261204-"), "20261204-");
    }
}
