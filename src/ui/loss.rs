//! The Loss pane: train and eval loss of the live run as a chart, with smoothing, a log scale,
//! zoom to the last N steps, and another recorded run drawn beside it.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::widgets::{empty_state, pane_block, EmptyState};
use crate::app::action::Action;
use crate::app::keymap::Mode;
use crate::app::state::App;
use crate::app::train::smooth;

fn window(points: &[(f64, f64)], from: f64, log: bool) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.0 >= from && p.1.is_finite() && (!log || p.1 > 0.0))
        .map(|&(x, y)| (x, if log { y.ln() } else { y }))
        .collect()
}

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let c = &app.training.chart;
    let title = format!(
        "Loss  smooth {}  log {}  last {}{}",
        if c.smooth { "on" } else { "off" },
        if c.log { "on" } else { "off" },
        c.last.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
        c.overlay.as_ref().map(|o| format!("  vs {}", o.0)).unwrap_or_default()
    );
    let block = pane_block(theme, &title, focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let (train, eval) = match &app.training.live {
        Some(r) => (r.train_points.clone(), r.eval_points.clone()),
        None => (Vec::new(), Vec::new()),
    };
    if train.is_empty() && c.overlay.is_none() {
        let key = |m: Mode, a: Action| app.keymap.hint(m, &a);
        let how = format!(
            "Start a run in the Training pane ({}: the demo). Here: {} smoothing, {} log scale, {} and {} zoom, {} overlay a run.",
            key(Mode::Training, Action::StartDemo),
            key(Mode::Loss, Action::ToggleSmooth),
            key(Mode::Loss, Action::ToggleLogScale),
            key(Mode::Loss, Action::ZoomIn),
            key(Mode::Loss, Action::ZoomOut),
            key(Mode::Loss, Action::OverlayRun)
        );
        empty_state(
            f,
            inner,
            theme,
            &EmptyState {
                headline: "No loss to chart yet",
                what: "Train and eval loss are charted here step by step while a run trains; another recorded run can be drawn beside it.",
                how: &how,
            },
        );
        return;
    }
    let train = if c.smooth { smooth(&train) } else { train };
    let (o_train, o_eval) = match &c.overlay {
        Some((_, t, e)) => (if c.smooth { smooth(t) } else { t.clone() }, e.clone()),
        None => (Vec::new(), Vec::new()),
    };
    let max_x = train.iter().chain(&eval).chain(&o_train).map(|p| p.0).fold(1.0, f64::max);
    let from = c.last.map(|n| (max_x - n as f64).max(0.0)).unwrap_or(0.0);
    let sets = [
        window(&train, from, c.log),
        window(&eval, from, c.log),
        window(&o_train, from, c.log),
        window(&o_eval, from, c.log),
    ];
    let ys: Vec<f64> = sets.iter().flatten().map(|p| p.1).collect();
    if ys.is_empty() {
        let out = app.keymap.hint(Mode::Loss, &Action::ZoomOut);
        f.render_widget(Paragraph::new(Line::styled(format!("No points in this window; press {out} to zoom out."), theme.muted())), inner);
        return;
    }
    let lo = ys.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    // A loss is never negative: on a linear axis the padding stops at zero.
    let (lo, hi) = (if !c.log && lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad }, hi + pad);
    let label = |v: f64| if c.log { format!("{:.3}", v.exp()) } else { format!("{v:.3}") };
    let muted = theme.muted();
    let datasets = vec![
        Dataset::default().name("train").marker(Marker::Braille).graph_type(GraphType::Line).style(theme.accent()).data(&sets[0]),
        Dataset::default().name("eval").marker(Marker::Dot).graph_type(GraphType::Line).style(theme.ok()).data(&sets[1]),
        Dataset::default().name("other train").marker(Marker::Braille).graph_type(GraphType::Line).style(muted).data(&sets[2]),
        Dataset::default().name("other eval").marker(Marker::Dot).graph_type(GraphType::Scatter).style(theme.warn()).data(&sets[3]),
    ];
    let datasets: Vec<Dataset> = datasets.into_iter().zip(&sets).filter(|(_, s)| !s.is_empty()).map(|(d, _)| d).collect();
    let chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds([from, max_x])
                .labels(vec![Span::styled(format!("{from:.0}"), muted), Span::styled(format!("step {max_x:.0}"), muted)])
                .style(muted),
        )
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels(vec![Span::styled(label(lo), muted), Span::styled(label((lo + hi) / 2.0), muted), Span::styled(label(hi), muted)])
                .style(muted),
        )
        .legend_position(Some(ratatui::widgets::LegendPosition::TopRight))
        .style(Style::default());
    f.render_widget(chart, inner);
}
