//! The Chat pane: a header with the model and the context in use, the transcript (wrapped,
//! following the stream unless scrolled up), and a tui-textarea input.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use super::widgets::{centered_lines, empty_state, pane_block, EmptyState};
use crate::app::action::Action;
use crate::app::chat::{ChatModel, ChatState, Side};
use crate::app::wrap::wrap;
use crate::app::keymap::{Keymap, Mode};
use crate::app::state::App;

pub fn render(f: &mut Frame, area: Rect, app: &App, focused: bool) {
    let theme = app.theme();
    let key = |a: Action| app.keymap.hint(Mode::Chat, &a);
    let block = pane_block(theme, "Chat", focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let input_h = (app.chat.input.lines().len() as u16 + 2).clamp(3, (inner.height / 2).max(3));
    let [head, transcript, input] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(input_h)]).areas(inner);
    let chat = &app.chat;
    let first = chat.main();
    f.render_widget(Paragraph::new(header(chat, first, theme, &app.keymap)), head);
    match (&first.model, chat.compared()) {
        (ChatModel::Ready { .. }, Some(second)) => {
            let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).spacing(1).areas(transcript);
            draw_transcript(f, left, chat, first, theme);
            let [head_b, body_b] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(right);
            f.render_widget(Paragraph::new(header(chat, second, theme, &app.keymap)), head_b);
            match &second.model {
                ChatModel::Ready { .. } => draw_transcript(f, body_b, chat, second, theme),
                ChatModel::Loading(name) => f.render_widget(Paragraph::new(Line::styled(format!("loading {name}"), theme.muted())), body_b),
                ChatModel::Failed(e) => f.render_widget(Paragraph::new(Line::styled(e.clone(), theme.error())).wrap(ratatui::widgets::Wrap { trim: true }), body_b),
                ChatModel::None => {}
            }
        }
        (ChatModel::Ready { .. }, None) if !first.turns.is_empty() => draw_transcript(f, transcript, chat, first, theme),
        (ChatModel::Ready { .. }, None) if first.example.is_some() => {
            let how = format!("the Up arrow puts it in the box · {} sends · {} opens another model", key(Action::Send), key(Action::LoadModel));
            example_state(f, transcript, theme, first.example.as_deref().unwrap_or_default(), &how)
        }
        (ChatModel::Ready { .. }, None) => empty_state(
            f,
            transcript,
            theme,
            &EmptyState {
                headline: "Ready",
                what: "Type a message below; the answer streams here with its tokens per second.",
                how: &format!(
                    "{} sends · {} stops an answer · {} asks again · {} opens another model",
                    key(Action::Send),
                    key(Action::StopGeneration),
                    key(Action::Regenerate),
                    key(Action::LoadModel)
                ),
            },
        ),
        (ChatModel::Loading(name), _) => {
            let what = format!("Loading {name}.");
            empty_state(f, transcript, theme, &EmptyState { headline: "Loading", what: &what, how: "" })
        }
        (ChatModel::Failed(e), _) => empty_state(
            f,
            transcript,
            theme,
            &EmptyState { headline: "The model did not load", what: e, how: &format!("{} opens another GGUF file.", key(Action::LoadModel)) },
        ),
        (ChatModel::None, _) => empty_state(
            f,
            transcript,
            theme,
            &EmptyState {
                headline: "No model loaded",
                what: "Chat with a GGUF model through llama.cpp: answers stream with tokens per second and context use.",
                how: &format!(
                    "{} opens a .gguf file; `lathe export RUN` makes one from a training run; `lathe chat --model FILE` starts here.",
                    key(Action::LoadModel)
                ),
            },
        ),
    }
    // The widget carries its own style; a clone per frame is cheap next to drawing.
    let mut ta = app.chat.input.clone();
    ta.set_block(
        Block::default()
            .borders(Borders::TOP)
            .border_style(theme.border(false))
            .title(Span::styled(" message ", theme.muted())),
    );
    ta.set_style(theme.text());
    ta.set_placeholder_text(format!("Type a message ({} sends, {} for a new line)", key(Action::Send), key(Action::Newline)));
    ta.set_placeholder_style(theme.muted());
    ta.set_cursor_line_style(ratatui::style::Style::default());
    if focused {
        ta.set_cursor_style(theme.selection());
    } else {
        ta.set_cursor_style(theme.text());
    }
    f.render_widget(&ta, input);
}

/// A side's transcript in `area`: the last lines that fit, `chat.scroll` lines up from the bottom.
/// The empty conversation of a model trained by lathe: a question from its training view, since a
/// small fine-tuned model answers well only what is asked the way it was taught.
fn example_state(f: &mut Frame, area: Rect, theme: &Theme, example: &str, how: &str) {
    let mut lines = vec![
        Line::styled("Ready", theme.accent()),
        Line::raw(""),
        Line::styled("This model was fine-tuned by lathe. Ask as it was taught; a held-out question of its view:", theme.text()),
        Line::raw(""),
    ];
    lines.extend(example.lines().map(|l| Line::styled(l.to_string(), theme.ok())));
    lines.extend([Line::raw(""), Line::styled(how.to_string(), theme.muted())]);
    centered_lines(f, area, lines);
}

fn draw_transcript(f: &mut Frame, area: Rect, chat: &ChatState, side: &Side, theme: &Theme) {
    let want = area.height as usize + chat.scroll as usize;
    let lines = transcript_lines(chat, side, theme, area.width.max(1) as usize, want);
    let top = lines.len().saturating_sub(area.height as usize).saturating_sub(chat.scroll as usize);
    f.render_widget(Paragraph::new(lines[top..].to_vec()), area);
}

fn header<'a>(c: &ChatState, side: &Side, theme: &Theme, keymap: &Keymap) -> Line<'a> {
    match &side.model {
        ChatModel::Ready { model, architecture, context_size, has_template } => {
            let context = if *context_size == 0 { String::new() } else { format!("  context {}/{}", side.context_used, context_size) };
            let mut spans = vec![Span::styled(model.label(), theme.accent()), Span::styled(format!("  {architecture}{context}"), theme.muted())];
            if !has_template {
                spans.push(Span::styled("  plain prompt format (no template)", theme.muted()));
            }
            if let Some(kb) = &c.kb {
                spans.push(Span::styled(format!("  sources: {kb}"), theme.accent()));
            }
            if side.streaming.is_some() {
                spans.push(Span::styled(format!("  ● answering ({} stops)", keymap.hint(Mode::Chat, &Action::StopGeneration)), theme.warn()));
            }
            if let Some(i) = c.editing {
                let n = side.turns[..i.min(side.turns.len())].iter().filter(|t| t.role == "user").count() + 1;
                spans.push(Span::styled(format!("  editing your message {n}: {} resends it and replaces what followed", keymap.hint(Mode::Chat, &Action::Send)), theme.warn()));
            }
            Line::from(spans)
        }
        _ => Line::from(Span::styled("no model", theme.muted())),
    }
}

/// The saved conversations (Ctrl-L): newest first; Enter reopens one.
pub fn saved_list(f: &mut Frame, area: Rect, app: &App) {
    use ratatui::widgets::{Cell, Clear, Row, Table, TableState};
    let theme = app.theme();
    let Some(list) = &app.chat.list else { return };
    let r = super::widgets::centered(area, area.width.saturating_sub(8).min(110), (list.len() as u16 + 4).min(area.height.saturating_sub(2)));
    f.render_widget(Clear, r);
    let key = |a: Action| app.keymap.hint(Mode::ChatList, &a);
    let title = format!("Saved conversations ({} reopens, {} closes)", key(Action::OpenChat), key(Action::Close));
    let block = pane_block(theme, &title, true);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let rows: Vec<Row> = list
        .iter()
        .map(|c| {
            let model = std::path::Path::new(&c.model).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Row::new(vec![Cell::from(c.updated_at.clone()), Cell::from(c.title.clone()), Cell::from(format!("{}", c.turns)), Cell::from(model)])
        })
        .collect();
    let widths = [Constraint::Length(16), Constraint::Min(20), Constraint::Length(4), Constraint::Length(24)];
    let table = Table::new(rows, widths)
        .header(Row::new(["saved", "title", "msgs", "model"]).style(theme.muted()))
        .row_highlight_style(theme.selection())
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(app.chat.list_selected));
    f.render_stateful_widget(table, inner, &mut state);
}

/// At least the last `want` lines of a side's transcript at `width` (all of it when it is
/// shorter). Turns are wrapped through the side's cache, so a frame wraps again only the answer
/// that grew; lines are built only for the turns that show.
pub fn transcript_lines(c: &ChatState, side: &Side, theme: &Theme, width: usize, want: usize) -> Vec<Line<'static>> {
    let streaming_last = side.streaming.is_some();
    let last = side.turns.len().saturating_sub(1);
    let mut cache = side.wrapped.borrow_mut();
    cache.update(side.turns.iter().enumerate().map(|(i, t)| (t.text.as_str(), i == last && streaming_last)), width);
    // Newest turn first, until enough lines are built.
    let mut blocks: Vec<Vec<Line<'static>>> = Vec::new();
    let mut count = 0;
    for (i, t) in side.turns.iter().enumerate().rev() {
        if count >= want {
            break;
        }
        let (who, style) = if t.role == "user" { ("you", theme.accent()) } else { ("model", theme.ok()) };
        let mut block = vec![Line::from(Span::styled(who, style))];
        block.extend(cache.lines(i).iter().map(|l| Line::from(Span::styled(l.clone(), theme.text()))));
        if i == last && streaming_last && c.held.is_some() {
            block.push(Line::from(Span::styled(format!("retrieving sources from {}…", c.kb.as_deref().unwrap_or("")), theme.muted())));
        }
        if let Some(r) = &t.retrieval {
            let text = if r.sources.is_empty() {
                format!("no sources: nothing in {} matched", r.collection)
            } else {
                let list: Vec<String> = r.sources.iter().map(|s| format!("[{}] {}", s.n, s.place())).collect();
                format!("sources: {}", list.join("  "))
            };
            block.extend(wrap(&text, width).into_iter().map(|l| Line::from(Span::styled(l, theme.accent()))));
        }
        if let Some(s) = &t.stats {
            let cached = if s.reused_tokens > 0 { format!(", {} cached", s.reused_tokens) } else { String::new() };
            let retrieval = t.retrieval.as_ref().map(|r| format!(" · retrieval {:.0} ms", r.millis)).unwrap_or_default();
            block.push(Line::from(Span::styled(
                format!(
                    "{} tokens · {:.1} tok/s · first token {:.2} s · prompt {} tokens{cached}{retrieval}",
                    s.generated_tokens,
                    s.tokens_per_s(),
                    s.first_token_secs,
                    s.prompt_tokens
                ),
                theme.muted(),
            )));
        }
        if let Some(e) = &t.error {
            block.extend(wrap(e, width).into_iter().map(|l| Line::from(Span::styled(l, theme.error()))));
        }
        block.push(Line::default());
        count += block.len();
        blocks.push(block);
    }
    let mut lines = Vec::with_capacity(count + 4);
    if blocks.len() == side.turns.len() {
        if let Some(s) = c.system.as_ref().filter(|s| !s.is_empty()) {
            lines.push(Line::from(Span::styled("system", theme.muted())));
            lines.extend(wrap(s, width).into_iter().map(|l| Line::from(Span::styled(l, theme.muted()))));
            lines.push(Line::default());
        }
        if side.dropped > 0 {
            lines.push(Line::from(Span::styled(
                format!("── the {} oldest messages below no longer fit the context; the model did not see them ──", side.dropped),
                theme.warn(),
            )));
        }
    }
    lines.extend(blocks.into_iter().rev().flatten());
    lines
}
