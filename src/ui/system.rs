//! The System pane: live CPU per core, memory, swap, the workspace's disk, lathe's own process and
//! GPUs, with short histories. Readings come from the sysmon engine thread.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

use super::theme::Theme;
use super::widgets::{bytes, pane_block};
use crate::app::state::App;

/// A text meter: `label ▕████░░░░▏ right`.
fn meter<'a>(theme: &Theme, label: &str, fraction: f64, right: String, bar_w: usize) -> Line<'a> {
    let f = fraction.clamp(0.0, 1.0);
    let filled = (f * bar_w as f64).round() as usize;
    Line::from(vec![
        Span::styled(format!("{label:<6}"), theme.muted()),
        Span::styled("▕", theme.muted()),
        Span::styled("█".repeat(filled), theme.level(f)),
        Span::styled("░".repeat(bar_w - filled), theme.muted()),
        Span::styled("▏", theme.muted()),
        Span::styled(format!(" {right}"), theme.text()),
    ])
}

fn frac(used: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { used as f64 / total as f64 }
}

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let block = pane_block(theme, "System", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(s) = &app.sys.latest else {
        f.render_widget(Paragraph::new(Line::styled("Taking the first reading…", theme.muted())), inner);
        return;
    };
    let cpu_right = format!(
        "{:>5.1}%  load {:.2} {:.2} {:.2}",
        s.cpu_total, s.load_avg[0], s.load_avg[1], s.load_avg[2]
    );
    let mem_right = format!("{} / {}", bytes(s.mem_used), bytes(s.mem_total));
    let swap_right = format!("{} / {}", bytes(s.swap_used), bytes(s.swap_total));
    let disk_right = s
        .disk
        .as_ref()
        .map(|d| format!("{} / {}  {}", bytes(d.used), bytes(d.total), d.mount_point.display()));
    // The bar takes what the label and the longest figure leave.
    let longest = [Some(&cpu_right), Some(&mem_right), Some(&swap_right), disk_right.as_ref()]
        .into_iter()
        .flatten()
        .map(|r| r.chars().count())
        .max()
        .unwrap_or(0);
    let bar_w = (inner.width as usize).saturating_sub(6 + 3 + longest).clamp(4, 40);

    let mut lines = vec![
        meter(theme, "CPU", s.cpu_total as f64 / 100.0, cpu_right, bar_w),
        meter(theme, "Mem", frac(s.mem_used, s.mem_total), mem_right, bar_w),
        if s.swap_total == 0 {
            Line::from(vec![Span::styled(format!("{:<6}", "Swap"), theme.muted()), Span::styled("none", theme.text())])
        } else {
            meter(theme, "Swap", frac(s.swap_used, s.swap_total), swap_right, bar_w)
        },
        match (&s.disk, disk_right) {
            (Some(d), Some(right)) => meter(theme, "Disk", frac(d.used, d.total), right, bar_w),
            _ => Line::from(vec![
                Span::styled(format!("{:<6}", "Disk"), theme.muted()),
                Span::styled("workspace disk not found", theme.warn()),
            ]),
        },
        Line::from(vec![
            Span::styled(format!("{:<6}", "lathe"), theme.muted()),
            Span::styled(format!("RSS {}  CPU {:.1}%", bytes(s.proc_rss), s.proc_cpu), theme.text()),
        ]),
    ];
    if let Some(link) = &app.server {
        lines.extend(server_lines(theme, link));
    }
    if s.gpus.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<6}", "GPU"), theme.muted()),
            Span::styled("none seen by sysinfo", theme.muted()),
        ]));
    }
    for g in &s.gpus {
        let mem = match (g.mem_used, g.mem_total) {
            (Some(u), Some(t)) => format!("  {} / {}", bytes(u), bytes(t)),
            _ => String::new(),
        };
        let usage = g.usage.map(|u| format!("{u:.0}%")).unwrap_or_else(|| "–".into());
        lines.push(Line::from(vec![
            Span::styled(format!("{:<6}", "GPU"), theme.muted()),
            Span::styled(format!("{}  {usage}{mem}", g.name), theme.text()),
        ]));
    }

    let meters_h = (lines.len() as u16).min(inner.height);
    let rest_h = inner.height - meters_h;
    let cores = s.cpu_per_core.len() as u16;
    // History sparklines get what the per-core rows leave, at most 6 rows.
    let spark_h = rest_h.saturating_sub(cores + 1).min(6);
    let [meters_area, spark_area, cores_area] = Layout::vertical([
        Constraint::Length(meters_h),
        Constraint::Length(spark_h),
        Constraint::Min(0),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(lines), meters_area);

    if spark_h >= 2 {
        let [cpu_a, mem_a] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(spark_area);
        sparkline(f, cpu_a, theme, "CPU history", &app.sys.cpu, 100);
        sparkline(f, mem_a, theme, "Memory history", &app.sys.mem, 100);
    }

    if cores_area.height >= 2 {
        let header = Line::styled("Per core", theme.muted());
        f.render_widget(Paragraph::new(header), Rect { height: 1, ..cores_area });
        let rows = Rect { y: cores_area.y + 1, height: cores_area.height - 1, ..cores_area };
        draw_cores(f, rows, app, theme);
    }
}

/// The server the workstation is attached to: where, its process and memory; then its answers
/// and its jobs.
fn server_lines<'a>(theme: &Theme, link: &crate::app::state::ServerLink) -> [Line<'a>; 2] {
    let (process, work) = match &link.status {
        None => (String::new(), "asking…".to_string()),
        Some(st) => {
            let model = if st.model_loading { "loading a model" } else if st.model_loaded { "model loaded" } else { "no model loaded" };
            let speed = if st.generation_s > 0.0 { format!("  {:.1} tok/s", st.generated_tokens as f64 / st.generation_s) } else { String::new() };
            (
                format!("pid {}  RSS {}", st.pid, bytes(st.rss_bytes)),
                format!("answering {}/{} (waiting {})  {} requests{speed}  {model}  jobs {}", st.running, st.slots, st.waiting, st.requests, st.jobs_running),
            )
        }
    };
    [
        Line::from(vec![
            Span::styled(format!("{:<6}", "serve"), theme.muted()),
            Span::styled(format!("{}  ", link.address), theme.key()),
            Span::styled(process, theme.text()),
        ]),
        Line::from(vec![Span::raw(" ".repeat(6)), Span::styled(work, theme.text())]),
    ]
}

fn sparkline(f: &mut Frame, area: Rect, theme: &Theme, title: &str, data: &[u64], max: u64) {
    let [t, s] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    f.render_widget(Paragraph::new(Line::styled(title.to_string(), theme.muted())), t);
    // Newest at the right: show the tail that fits.
    let tail = &data[data.len().saturating_sub(area.width as usize)..];
    f.render_widget(Sparkline::default().data(tail).max(max).style(theme.spark()), s);
}

/// One row per core: a bar and, when wide enough, that core's history. Many cores flow into
/// several columns.
fn draw_cores(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(s) = &app.sys.latest else { return };
    let n = s.cpu_per_core.len();
    if n == 0 || area.height == 0 {
        return;
    }
    let cols = n.div_ceil(area.height as usize).max(1);
    let col_w = area.width / cols as u16;
    for (i, usage) in s.cpu_per_core.iter().enumerate() {
        let col = (i / area.height as usize) as u16;
        let row = (i % area.height as usize) as u16;
        if col_w < 14 || col as usize >= cols {
            break;
        }
        let x = area.x + col * col_w;
        let rect = Rect::new(x, area.y + row, col_w.saturating_sub(1), 1);
        let bar_w = ((rect.width as usize).saturating_sub(14) / 2).clamp(4, 20);
        let line = meter(theme, &format!("cpu{i}"), *usage as f64 / 100.0, format!("{usage:>3.0}%"), bar_w);
        let used = line.width() as u16 + 1;
        f.render_widget(Paragraph::new(line), rect);
        if rect.width > used + 8 {
            let spark_rect = Rect::new(rect.x + used, rect.y, rect.width - used, 1);
            if let Some(h) = app.sys.per_core.get(i) {
                let tail = &h[h.len().saturating_sub(spark_rect.width as usize)..];
                f.render_widget(Sparkline::default().data(tail).max(100).style(theme.spark()), spark_rect);
            }
        }
    }
}
