//! The quantization reports overlay (opened from the Runs pane): one report's files in a table
//! (size, perplexity, KL divergence from the f16 file, same top token, exact match, speeds) over a
//! chart of KL divergence against size, without and with the importance matrix, the best
//! trade-off marked in both; a file made with the matrix says how much of the perplexity gap to
//! f16 the matrix closed.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table};
use ratatui::Frame;

use super::widgets::{bytes, centered, empty_state, pane_block, EmptyState};
use crate::app::action::Action;
use crate::app::keymap::Mode;
use crate::app::state::App;
use crate::engine::data::quant_evals::{best_tradeoff, gap_closed};

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let runs = &app.training.runs;
    let ids = runs.quant_ids();
    let km = &app.keymap;
    let keys = if ids.len() > 1 {
        format!("{}/{} report {}/{}, {} closes", km.hint(Mode::Viewer, &Action::PrevReport), km.hint(Mode::Viewer, &Action::NextReport), runs.quant_shown + 1, ids.len(), km.hint(Mode::Viewer, &Action::Close))
    } else {
        format!("{} closes", km.hint(Mode::Viewer, &Action::Close))
    };
    let rect = centered(area, area.width.saturating_sub(4).max(30), area.height.saturating_sub(2).max(8));
    f.render_widget(Clear, rect);
    let title = format!("Quantization ({keys})");
    let block = pane_block(theme, &title, true).style(theme.overlay());
    let inner = block.inner(rect);
    f.render_widget(block, rect);
    let rows = match &runs.quant {
        None => return f.render_widget(Paragraph::new(Line::styled("Loading the reports…", theme.muted())), inner),
        Some(Err(e)) => return f.render_widget(Paragraph::new(Line::styled(e.clone(), theme.error())), inner),
        Some(Ok(_)) => runs.quant_rows(),
    };
    if rows.is_empty() {
        let e = EmptyState {
            headline: "No quantization reports",
            what: "A report makes each quantized type of a run or model (with and without an importance matrix from your data) and measures it against the f16 file on held-out data: size, perplexity, KL divergence, exact match, speed.",
            how: "Make one with: lathe quant report RUN --view VIEW",
        };
        return empty_state(f, inner, theme, &e);
    }
    let best = best_tradeoff(&rows);
    let head = &rows[0];
    let about = format!("{} on {}: {} sequences of up to {} tokens; KL divergence from the f16 file ({})", head.source, head.eval, head.chunks, head.n_ctx, head.created_at.get(..16).unwrap_or(""));
    let table_h = (rows.len() as u16 + 1).min(inner.height.saturating_sub(6) / 2 + 1).max(2);
    let [top, table_area, chart_area, foot] = Layout::vertical([Constraint::Length(1), Constraint::Length(table_h), Constraint::Min(4), Constraint::Length(1)]).areas(inner);
    f.render_widget(Paragraph::new(Line::styled(about, theme.muted())), top);

    let wide = inner.width >= 100;
    let f1 = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mark = if best == Some(i) { "*" } else { " " };
            let mut cells = vec![
                Cell::from(format!("{mark}{}", r.label())),
                Cell::from(bytes(r.size_bytes)),
                Cell::from(format!("{:.3}", r.ppl)),
                Cell::from(format!("{:.5}", r.kld)),
                Cell::from(format!("{:.1}%", r.same_top * 100.0)),
                Cell::from(r.exact_match.map(|e| format!("{:.1}%", e * 100.0)).unwrap_or_else(|| "-".into())),
                Cell::from(gap_closed(&rows, r)),
            ];
            if wide {
                cells.push(Cell::from(f1(r.prompt_tps)));
                cells.push(Cell::from(f1(r.gen_tps)));
            }
            let style = if best == Some(i) { theme.ok() } else { theme.text() };
            Row::new(cells).style(style)
        })
        .collect();
    let mut header = vec![" type", "size", "perplexity", "KL div.", "same top", "exact", "gap closed"];
    let mut widths = vec![Constraint::Length(16), Constraint::Length(10), Constraint::Length(10), Constraint::Length(8), Constraint::Length(8), Constraint::Length(6), Constraint::Length(10)];
    if wide {
        header.extend(["prompt/s", "gen/s"]);
        widths.extend([Constraint::Length(9), Constraint::Length(7)]);
    }
    let table = Table::new(body, widths).header(Row::new(header).style(theme.muted())).column_spacing(1);
    f.render_widget(table, table_area);

    // KL divergence against size (MiB): the files without the matrix, with it, and the pick.
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let pts = |with: bool| rows.iter().filter(|r| r.imatrix == with).map(|r| (mib(r.size_bytes), r.kld)).collect::<Vec<_>>();
    let (plain, weighed) = (pts(false), pts(true));
    let pick: Vec<(f64, f64)> = best.map(|i| vec![(mib(rows[i].size_bytes), rows[i].kld)]).unwrap_or_default();
    let (x_hi, y_hi) = rows.iter().fold((0.0f64, 0.0f64), |(x, y), r| (x.max(mib(r.size_bytes)), y.max(r.kld)));
    let (x_hi, y_hi) = (x_hi * 1.05 + 1e-9, y_hi * 1.1 + 1e-9);
    let muted = theme.muted();
    let sets = vec![
        Dataset::default().name("without matrix").marker(Marker::Dot).graph_type(GraphType::Scatter).style(theme.warn()).data(&plain),
        Dataset::default().name("with matrix").marker(Marker::Dot).graph_type(GraphType::Scatter).style(theme.accent()).data(&weighed),
        Dataset::default().name("best trade-off").marker(Marker::Block).graph_type(GraphType::Scatter).style(theme.ok()).data(&pick),
    ];
    let sets: Vec<Dataset> = sets.into_iter().zip([plain.len(), weighed.len(), pick.len()]).filter(|(_, n)| *n > 0).map(|(d, _)| d).collect();
    let chart = Chart::new(sets)
        .x_axis(Axis::default().bounds([0.0, x_hi]).labels(vec![Span::styled("0", muted), Span::styled(format!("{x_hi:.0} MiB"), muted)]).style(muted))
        .y_axis(Axis::default().bounds([0.0, y_hi]).labels(vec![Span::styled("0", muted), Span::styled(format!("KLD {y_hi:.4}"), muted)]).style(muted))
        .legend_position(Some(ratatui::widgets::LegendPosition::TopRight))
        .style(Style::default());
    f.render_widget(chart, chart_area);
    let foot_text = match best.map(|i| &rows[i]) {
        Some(b) => format!("* best trade-off: {}, {} (the knee of quality against size)", b.label(), bytes(b.size_bytes)),
        None => "No file lies below the line from the smallest file to f16: none is marked.".into(),
    };
    f.render_widget(Paragraph::new(Line::styled(foot_text, theme.muted())), foot);
}
