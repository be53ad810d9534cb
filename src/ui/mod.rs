//! Rendering only: layout, one file per pane, shared widgets, themes. Everything here draws from
//! `&App` and changes nothing.

pub mod chat;
pub mod data;
pub mod help;
pub mod knowledge;
pub mod loss;
pub mod models;
pub mod quant;
pub mod runs;
pub mod status;
pub mod system;
pub mod theme;
pub mod training;
pub mod widgets;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::action::PaneId;
use crate::app::shell::Overlay;
use crate::app::state::App;

/// Below this the layout cannot show a pane sensibly; we ask for a bigger window instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;
/// From this size up, all panes are shown at once in a grid.
pub const GRID_WIDTH: u16 = 140;
pub const GRID_HEIGHT: u16 = 36;

/// The pane registry: every pane's renderer, in one place.
fn render_pane(f: &mut Frame, area: Rect, app: &App, pane: PaneId) {
    let focused = app.focus == pane && app.overlay.is_none();
    match pane {
        PaneId::Training => training::render(f, area, app, focused),
        PaneId::Loss => loss::render(f, area, app, focused),
        PaneId::Data => data::render(f, area, app, focused),
        PaneId::Chat => chat::render(f, area, app, focused),
        PaneId::System => system::render(f, area, app, focused),
        PaneId::Runs => runs::render(f, area, app, focused),
        PaneId::Models => models::render(f, area, app, focused),
        PaneId::Knowledge => knowledge::render(f, area, app, focused),
    }
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let theme = app.theme();
    f.render_widget(Block::default().style(theme.base()), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(f, area, app);
        return;
    }
    let [tabs, body, status_line] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(f, tabs, app);
    if app.zoomed || area.width < GRID_WIDTH || area.height < GRID_HEIGHT {
        render_pane(f, body, app, app.focus);
    } else {
        draw_grid(f, body, app);
    }
    status::render(f, status_line, app);
    match app.overlay {
        Some(Overlay::Help { scroll }) => help::render(f, body, app, scroll),
        Some(Overlay::ConfirmQuit) => confirm_quit(f, body, app),
        Some(Overlay::Row) => data::row_viewer(f, body, app),
        Some(Overlay::Prompt) => data::prompt(f, body, app),
        Some(Overlay::Views) => data::views_preview(f, body, app),
        Some(Overlay::TrainForm) => training::form(f, body, app),
        Some(Overlay::RunDetail) => runs::detail(f, body, app),
        Some(Overlay::QuantReport) => quant::render(f, body, app),
        Some(Overlay::Chats) => chat::saved_list(f, body, app),
        Some(Overlay::ChatSettings) => training::chat_settings(f, body, app),
        Some(Overlay::Chunk { scroll }) => knowledge::chunk_viewer(f, body, app, scroll),
        Some(Overlay::ConfirmDropCollection) => {
            let name = app.knowledge.drop_target.clone().unwrap_or_default();
            confirm(f, body, app, "Drop collection?", vec![
                Line::raw(format!("Drop {name}: its chunks, vectors and indices are deleted.")),
                Line::raw("Your documents stay where they are."),
            ], "drop", "keep");
        }
        Some(Overlay::ConfirmReplace) => {
            let path = app.replace_target.clone().unwrap_or_default();
            confirm(f, body, app, "Replace dataset?", vec![
                Line::raw(format!("Importing {path}: a dataset of that name already exists.")),
                Line::raw("Replace it with this data?"),
            ], "replace", "keep");
        }
        None => {}
    }
}

/// The wide layout: training and data work on the left, the machine and lists on the right.
fn draw_grid(f: &mut Frame, area: Rect, app: &App) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(64), Constraint::Percentage(36)]).areas(area);
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(left);
    let [training, loss] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(top);
    let [data, chat] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    let [system, runs, models, knowledge] = Layout::vertical([
        Constraint::Percentage(40),
        Constraint::Percentage(20),
        Constraint::Percentage(20),
        Constraint::Percentage(20),
    ])
    .areas(right);
    for (pane, rect) in [
        (PaneId::Training, training),
        (PaneId::Loss, loss),
        (PaneId::Data, data),
        (PaneId::Chat, chat),
        (PaneId::System, system),
        (PaneId::Runs, runs),
        (PaneId::Models, models),
        (PaneId::Knowledge, knowledge),
    ] {
        render_pane(f, rect, app, pane);
    }
}

fn draw_tabs(f: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let mut spans = vec![Span::styled(" lathe ", theme.accent()), Span::raw(" ")];
    // Short titles when the full ones do not fit.
    let full: usize = PaneId::ALL.iter().map(|p| p.title().len() + 4).sum::<usize>() + 8;
    let short = (area.width as usize) < full;
    for p in PaneId::ALL {
        let label = if short && p != app.focus {
            format!(" {} {} ", p.index() + 1, &p.title()[..3])
        } else {
            format!(" {} {} ", p.index() + 1, p.title())
        };
        spans.push(Span::styled(label, theme.tab(p == app.focus)));
    }
    if app.zoomed {
        spans.push(Span::styled(" [zoom]", theme.muted()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn too_small(f: &mut Frame, area: Rect, app: &App) {
    let theme = app.theme();
    let text = vec![
        Line::styled("Terminal too small", theme.error()),
        Line::raw(format!("{}x{} now", area.width, area.height)),
        Line::raw(format!("Enlarge the window to at least {MIN_WIDTH}x{MIN_HEIGHT}.")),
    ];
    let h = (text.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    let rect = Rect::new(area.x, y, area.width, h);
    f.render_widget(
        Paragraph::new(text).alignment(ratatui::layout::Alignment::Center).wrap(Wrap { trim: true }),
        rect,
    );
}

fn confirm_quit(f: &mut Frame, area: Rect, app: &App) {
    let jobs: Vec<String> = app.running_jobs().map(|j| j.kind.words(&j.title)).collect();
    let lines = vec![
        Line::raw(format!("{} job(s) running: {}", jobs.len(), jobs.join(", "))),
        Line::raw("Quitting cancels them; what they already saved stays."),
    ];
    confirm(f, area, app, "Quit lathe?", lines, "quit", "stay");
}

/// A yes/no box with the confirm mode's keys.
fn confirm(f: &mut Frame, area: Rect, app: &App, title: &str, mut lines: Vec<Line>, yes_what: &str, no_what: &str) {
    use crate::app::action::Action;
    use crate::app::keymap::Mode;
    let theme = app.theme();
    let yes = app.keymap.key_for(Mode::Confirm, &Action::Confirm, false);
    let no = app.keymap.key_for(Mode::Confirm, &Action::Deny, false);
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::styled(yes.unwrap_or_else(|| "y".into()), theme.key()),
        Span::raw(format!(" {yes_what}   ")),
        Span::styled(no.unwrap_or_else(|| "n".into()), theme.key()),
        Span::raw(format!(" {no_what}")),
    ]));
    let rect = widgets::centered(area, 60, lines.len() as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).style(theme.overlay()).block(widgets::pane_block(theme, title, true)),
        rect,
    );
}
