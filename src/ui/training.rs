//! The Training pane: the run this session trains (status, progress, loss, eval, learning rate,
//! gradient norm, speed, memory, time left) and the new-run form with its memory estimate and
//! token preview.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::theme::Theme;
use super::widgets::{bytes, centered, duration, empty_state, pane_block, thousands, EmptyState};
use crate::app::action::{Action, PaneId};
use crate::app::keymap::Mode;
use crate::app::state::App;
use crate::app::train::LiveRun;
use crate::engine::types::RunStatus;

fn status_style(theme: &Theme, status: RunStatus) -> ratatui::style::Style {
    match status {
        RunStatus::Running | RunStatus::Starting => theme.accent(),
        RunStatus::Completed | RunStatus::StoppedEarly => theme.ok(),
        RunStatus::Paused | RunStatus::Cancelled | RunStatus::Interrupted => theme.warn(),
        RunStatus::Failed => theme.error(),
    }
}

fn bar(theme: &Theme, fraction: f64, width: usize) -> Vec<Span<'static>> {
    let f = fraction.clamp(0.0, 1.0);
    let filled = (f * width as f64).round() as usize;
    vec![
        Span::styled("▕", theme.muted()),
        Span::styled("█".repeat(filled), theme.accent()),
        Span::styled("░".repeat(width - filled), theme.muted()),
        Span::styled("▏", theme.muted()),
    ]
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

fn pair<'a>(theme: &Theme, a: (&str, String), b: (&str, String), col: usize) -> Vec<Line<'a>> {
    // A narrow pane (the grid's Training cell) gets one figure per line.
    if col == 0 {
        return vec![
            Line::from(vec![Span::styled(format!("{:<10}", a.0), theme.muted()), Span::styled(a.1, theme.text())]),
            Line::from(vec![Span::styled(format!("{:<10}", b.0), theme.muted()), Span::styled(b.1, theme.text())]),
        ];
    }
    vec![Line::from(vec![
        Span::styled(format!("{:<10}", a.0), theme.muted()),
        Span::styled(format!("{:<w$}", a.1, w = col.saturating_sub(10)), theme.text()),
        Span::styled(format!("{:<10}", b.0), theme.muted()),
        Span::styled(b.1, theme.text()),
    ])]
}

fn run_lines<'a>(theme: &Theme, r: &LiveRun, width: u16) -> Vec<Line<'a>> {
    let w = width as usize;
    let col = if w < 64 { 0 } else { (w / 2).clamp(20, 40) };
    let frac = if r.total > 0 { r.step as f64 / r.total as f64 } else { 0.0 };
    // label 10, the bar's ends 2, " 1234/5678 " and "epoch 12.34": keep the line unwrapped.
    let tail = format!(" {}/{} ", r.step, r.total).len() + format!("epoch {:.2}", r.epoch).len();
    let bar_w = w.saturating_sub(12 + tail).clamp(3, 60);
    // The base precision and optimizer, where the line has room for them.
    let head_len = if r.id.is_empty() { 7 } else { 4 + r.id.len() } + 2 + r.status.words().len() + if r.method.is_empty() { 0 } else { 2 + r.method.len() };
    let held = if r.base.is_empty() { String::new() } else { format!(" · {} base · {}", r.base, r.optimizer) };
    let held = if head_len + held.chars().count() <= w { held } else { String::new() };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(if r.id.is_empty() { "new run".to_string() } else { format!("run {}", r.id) }, theme.accent()),
            Span::raw("  "),
            Span::styled(r.status.words(), status_style(theme, r.status)),
            Span::styled(if r.method.is_empty() { String::new() } else { format!("  {}", r.method) }, theme.text()),
            Span::styled(held, theme.muted()),
        ]),
        Line::from(vec![Span::styled("model     ", theme.muted()), Span::styled(r.model.clone(), theme.text())]),
        Line::from(vec![
            Span::styled("view      ", theme.muted()),
            Span::styled(
                if r.train_examples > 0 { format!("{}  ({} train / {} eval)", r.view, r.train_examples, r.eval_examples) } else { r.view.clone() },
                theme.text(),
            ),
        ]),
    ];
    let mut progress = vec![Span::styled("step      ", theme.muted())];
    progress.extend(bar(theme, frac, bar_w));
    progress.push(Span::styled(format!(" {}/{} ", r.step, r.total), theme.text()));
    progress.push(Span::styled(format!("epoch {:.2}", r.epoch), theme.muted()));
    lines.push(Line::from(progress));
    let c = if col == 0 { 0 } else { col + 8 };
    lines.extend(pair(
        theme,
        ("loss", format!("{} ({} avg)", opt(r.loss), opt(r.smooth))),
        ("eval", format!("{} (best {})", opt(r.eval_loss), opt(r.best_eval))),
        c,
    ));
    lines.extend(pair(theme, ("lr", format!("{:.2e}", r.lr)), ("grad norm", format!("{:.3}", r.grad_norm)), c));
    lines.extend(pair(theme, ("speed", format!("{:.0} tok/s", r.tokens_per_s)), ("RSS", bytes(r.rss)), c));
    lines.extend(pair(theme, ("elapsed", duration(r.elapsed_s)), ("ETA", r.eta_s().map(duration).unwrap_or_else(|| "-".into())), c));
    if r.total_params > 0 {
        lines.push(Line::from(vec![
            Span::styled("params    ", theme.muted()),
            Span::styled(format!("{} trainable of {}", thousands(r.trainable_params), thousands(r.total_params)), theme.text()),
        ]));
    }
    if let Some((c, t)) = r.accuracy {
        lines.push(Line::from(vec![
            Span::styled("accuracy  ", theme.muted()),
            Span::styled(format!("{c}/{t} exact match on eval ({:.1}%)", 100.0 * c as f64 / t.max(1) as f64), theme.ok()),
        ]));
    }
    if let Some(m) = &r.message {
        lines.push(Line::styled(m.clone(), theme.muted()));
    }
    lines
}

fn keys_line<'a>(theme: &Theme, keys: &[(String, &str)]) -> Line<'a> {
    let mut spans = Vec::new();
    for (i, (k, what)) in keys.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled("  ", theme.muted()));
        }
        spans.push(Span::styled(k.to_string(), theme.key()));
        spans.push(Span::styled(format!(" {what}"), theme.muted()));
    }
    Line::from(spans)
}

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "Training", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let key = |m: Mode, a: Action| app.keymap.hint(m, &a);
    let Some(r) = &app.training.live else {
        let how = format!(
            "{} trains the demo model from scratch (a few minutes on a laptop CPU); {} starts a run on your model and view; {} resumes an interrupted run.",
            key(Mode::Training, Action::StartDemo),
            key(Mode::Training, Action::NewRun),
            key(Mode::Training, Action::ResumeRun)
        );
        empty_state(
            f,
            inner,
            theme,
            &EmptyState {
                headline: "No run in this session",
                what: "A run shows here while it trains: step, epoch, loss, eval loss, learning rate, gradient norm, tokens per second, memory and time left.",
                how: &how,
            },
        );
        return;
    };
    let mut lines = run_lines(theme, r, inner.width);
    let keys: Vec<(String, &str)> = if r.is_active() {
        vec![
            (key(Mode::Training, Action::PauseRun), if r.status == RunStatus::Paused { "resume" } else { "pause" }),
            (key(Mode::Training, Action::CancelRun), "cancel"),
            (key(Mode::Global, Action::Focus(PaneId::Loss)), "loss chart"),
        ]
    } else {
        vec![
            (key(Mode::Training, Action::StartDemo), "demo"),
            (key(Mode::Training, Action::NewRun), "new run"),
            (key(Mode::Training, Action::ResumeRun), "resume"),
            (key(Mode::Global, Action::Focus(PaneId::Runs)), "runs"),
        ]
    };
    let room = inner.height as usize;
    if lines.len() < room {
        lines.resize(room - 1, Line::raw(""));
        lines.push(keys_line(theme, &keys));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}

/// The new-run form.
pub fn form(f: &mut Frame, area: Rect, app: &App) {
    let Some(form) = &app.training.form else { return };
    let key = |a: Action| app.keymap.hint(Mode::Form, &a);
    let idle = format!("{} checks memory and shows the tokens the model will train on.", key(Action::CheckForm));
    let keys = [(key(Action::Confirm), "start"), (key(Action::CheckForm), "check"), (format!("{}/↑↓", key(Action::ScrollDown)), "field"), (key(Action::Close), "close")];
    form_overlay(f, area, app, form, "New run", &idle, &keys);
}

/// The chat settings panel (Ctrl-P in the Chat pane).
pub fn chat_settings(f: &mut Frame, area: Rect, app: &App) {
    let Some(form) = &app.chat.form else { return };
    let key = |a: Action| app.keymap.hint(Mode::Form, &a);
    let keys = [(key(Action::Confirm), "apply"), ("↑↓".to_string(), "field"), (key(Action::Close), "close")];
    form_overlay(f, area, app, form, "Chat settings", "These apply to the next answers of this conversation.", &keys);
}

fn form_overlay(f: &mut Frame, area: Rect, app: &App, form: &crate::app::train::TrainForm, title: &str, idle: &str, keys: &[(String, &str)]) {
    let theme = app.theme();
    let rect = centered(area, area.width.saturating_sub(4).clamp(40, 110), area.height.saturating_sub(2).max(10));
    f.render_widget(Clear, rect);
    let block = pane_block(theme, title, true);
    let inner = block.inner(rect);
    f.render_widget(block.style(theme.overlay()), rect);
    let mut lines = Vec::new();
    for (i, field) in form.fields.iter().enumerate() {
        let sel = i == form.selected;
        let value = if sel { format!("{}▏", field.value) } else { field.value.clone() };
        lines.push(Line::from(vec![
            Span::styled(format!("{} {:<20}", if sel { "›" } else { " " }, field.label), if sel { theme.accent() } else { theme.muted() }),
            Span::styled(value, if sel { theme.selection() } else { theme.text() }),
        ]));
    }
    lines.push(Line::styled(format!("  {}", form.fields[form.selected].hint), theme.muted()));
    lines.push(Line::raw(""));
    match &form.check {
        None => lines.push(Line::styled(idle.to_string(), theme.muted())),
        Some(Ok(check)) => lines.extend(check.iter().map(|l| Line::styled(l.clone(), theme.text()))),
        Some(Err(e)) => lines.push(Line::styled(e.clone(), theme.error())),
    }
    let room = inner.height as usize;
    if lines.len() < room {
        lines.resize(room - 1, Line::raw(""));
    } else {
        lines.truncate(room.saturating_sub(1));
    }
    lines.push(keys_line(theme, keys));
    f.render_widget(Paragraph::new(lines), inner);
}
