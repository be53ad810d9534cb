//! The Chat pane: a header with the model and the context in use, the transcript (wrapped,
//! following the stream unless scrolled up), and a tui-textarea input.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::theme::Theme;
use super::widgets::{empty_state, pane_block, EmptyState};
use crate::app::action::Action;
use crate::app::chat::{ChatModel, ChatState};
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
    f.render_widget(Paragraph::new(header(&app.chat, theme, &app.keymap)), head);
    match &app.chat.model {
        ChatModel::Ready { .. } if app.chat.compare.is_some() => {
            let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).spacing(1).areas(transcript);
            let lines = transcript_lines(&app.chat, theme, left.width.max(1) as usize);
            bottom(f, left, lines, app.chat.scroll);
            if let (Some(side), Some(view)) = (&app.chat.compare, app.chat.compare_view()) {
                let [head_b, body_b] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(right);
                f.render_widget(Paragraph::new(header(&view, theme, &app.keymap)), head_b);
                match &side.model {
                    ChatModel::Ready { .. } => bottom(f, body_b, transcript_lines(&view, theme, body_b.width.max(1) as usize), app.chat.scroll),
                    ChatModel::Loading(p) => f.render_widget(Paragraph::new(Line::styled(format!("loading {}", p.display()), theme.muted())), body_b),
                    ChatModel::Failed(e) => f.render_widget(Paragraph::new(Line::styled(e.clone(), theme.error())).wrap(ratatui::widgets::Wrap { trim: true }), body_b),
                    ChatModel::None => {}
                }
            }
        }
        ChatModel::Ready { .. } if !app.chat.turns.is_empty() => {
            let lines = transcript_lines(&app.chat, theme, transcript.width.max(1) as usize);
            bottom(f, transcript, lines, app.chat.scroll);
        }
        ChatModel::Ready { .. } => empty_state(
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
        ChatModel::Loading(p) => {
            let what = format!("Loading {} with llama.cpp.", p.display());
            empty_state(f, transcript, theme, &EmptyState { headline: "Loading", what: &what, how: "" })
        }
        ChatModel::Failed(e) => empty_state(
            f,
            transcript,
            theme,
            &EmptyState { headline: "The model did not load", what: e, how: &format!("{} opens another GGUF file.", key(Action::LoadModel)) },
        ),
        ChatModel::None => empty_state(
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

/// The last lines that fit, `scroll` lines up from the bottom.
fn bottom(f: &mut Frame, area: Rect, lines: Vec<Line<'static>>, scroll: u16) {
    let h = area.height as usize;
    let top = lines.len().saturating_sub(h).saturating_sub(scroll as usize);
    f.render_widget(Paragraph::new(lines[top..].to_vec()), area);
}

fn header<'a>(c: &ChatState, theme: &Theme, keymap: &Keymap) -> Line<'a> {
    match &c.model {
        ChatModel::Ready { path, architecture, context_size, has_template } => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let context = if *context_size == 0 { String::new() } else { format!("  context {}/{}", c.context_used, context_size) };
            let name = if *context_size == 0 { path.display().to_string() } else { name };
            let mut spans = vec![Span::styled(name, theme.accent()), Span::styled(format!("  {architecture}{context}"), theme.muted())];
            if !has_template {
                spans.push(Span::styled("  plain prompt format (no template)", theme.muted()));
            }
            if c.streaming.is_some() {
                spans.push(Span::styled(format!("  ● answering ({} stops)", keymap.hint(Mode::Chat, &Action::StopGeneration)), theme.warn()));
            }
            if let Some(i) = c.editing {
                let n = c.turns[..i].iter().filter(|t| t.role == "user").count() + 1;
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

/// Word-wraps `text` to `width` terminal columns (display width: wide characters count two,
/// combining marks none), keeping explicit line breaks.
fn wrap(text: &str, width: usize) -> Vec<String> {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    let width = width.max(2);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in para.split(' ') {
            let w = word.width();
            if len > 0 && len + 1 + w > width {
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            // A word longer than the line is cut.
            for c in word.chars() {
                // Control characters from a model's output are shown as nothing.
                let cw = if c.is_control() { continue } else { c.width().unwrap_or(0) };
                if len + cw > width {
                    out.push(std::mem::take(&mut line));
                    len = 0;
                }
                line.push(c);
                len += cw;
            }
        }
        out.push(line);
    }
    out
}

pub fn transcript_lines(c: &ChatState, theme: &Theme, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(s) = c.system.as_ref().filter(|s| !s.is_empty()) {
        lines.push(Line::from(Span::styled("system", theme.muted())));
        lines.extend(wrap(s, width).into_iter().map(|l| Line::from(Span::styled(l, theme.muted()))));
        lines.push(Line::default());
    }
    if c.dropped > 0 {
        lines.push(Line::from(Span::styled(
            format!("── the {} oldest messages below no longer fit the context; the model did not see them ──", c.dropped),
            theme.warn(),
        )));
    }
    let last = c.turns.len().saturating_sub(1);
    for (i, t) in c.turns.iter().enumerate() {
        let (who, style) = if t.role == "user" { ("you", theme.accent()) } else { ("model", theme.ok()) };
        lines.push(Line::from(Span::styled(who, style)));
        let streaming = i == last && c.streaming.is_some();
        let mut body = t.text.clone();
        if streaming {
            body.push('▌');
        }
        lines.extend(wrap(&body, width).into_iter().map(|l| Line::from(Span::styled(l, theme.text()))));
        if let Some(s) = &t.stats {
            let cached = if s.reused_tokens > 0 { format!(", {} cached", s.reused_tokens) } else { String::new() };
            lines.push(Line::from(Span::styled(
                format!(
                    "{} tokens · {:.1} tok/s · first token {:.2} s · prompt {} tokens{cached}",
                    s.generated_tokens,
                    s.tokens_per_s(),
                    s.first_token_secs,
                    s.prompt_tokens
                ),
                theme.muted(),
            )));
        }
        if let Some(e) = &t.error {
            lines.extend(wrap(e, width).into_iter().map(|l| Line::from(Span::styled(l, theme.error()))));
        }
        lines.push(Line::default());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrapping_keeps_words_and_breaks() {
        assert_eq!(wrap("the quick brown fox", 10), ["the quick", "brown fox"]);
        assert_eq!(wrap("a\n\nb", 10), ["a", "", "b"]);
        assert_eq!(wrap("abcdefghijkl", 5), ["abcde", "fghij", "kl"]);
        // Wide characters take two columns; control characters none.
        assert_eq!(wrap("日本語の文", 4), ["日本", "語の", "文"]);
        assert_eq!(wrap("a\u{7}b", 5), ["ab"]);
    }
}
