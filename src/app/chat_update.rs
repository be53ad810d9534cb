//! The Chat pane's update: what its keys do to the conversation (send, ask again, edit an earlier
//! message, compare, settings, saved conversations, attach a knowledge collection) and how the
//! chat sides' events and retrieved sources fold into it.
//! Pure: it returns commands for the service and changes only the pane and the shell's `Ctx`.

use tui_textarea::TextArea;

use super::action::{Action, Command, PaneId, TextKey};
use super::chat::{apply_settings, settings_form, streaming_sentence, ChatModel, ChatState};
use super::keymap::Mode;
use super::shell::{Ctx, Level, Overlay, Prompt, PromptKind};

impl ChatState {
    /// The pane's actions and its sides' events. The app routes here only what is the Chat
    /// pane's (keys while the chat box has focus, the saved-conversations list, chat events).
    pub fn update(&mut self, action: Action, cx: &mut Ctx, out: &mut Vec<Command>) {
        match action {
            Action::Send => self.send_input(cx, out),
            Action::Regenerate => match self.regenerate() {
                Ok(asks) => out.extend(asks),
                Err(e) => cx.notify(Level::Info, e.sentence(cx.keymap)),
            },
            Action::ChatSettings => {
                self.form = Some(settings_form(&self.system, &self.sampling));
                *cx.overlay = Some(Overlay::ChatSettings);
            }
            Action::Compare => {
                if self.close_side() {
                    out.push(Command::CloseCompare);
                    cx.notify(Level::Info, "Comparison closed.");
                } else {
                    *cx.prompt = Some(Prompt::new(PromptKind::CompareModel, ""));
                    *cx.overlay = Some(Overlay::Prompt);
                }
            }
            Action::LoadModel => {
                *cx.prompt = Some(Prompt::new(PromptKind::Model, ""));
                *cx.overlay = Some(Overlay::Prompt);
            }
            Action::AttachKb => {
                *cx.prompt = Some(Prompt::new(PromptKind::AttachKb, self.kb.as_deref().unwrap_or("")));
                *cx.overlay = Some(Overlay::Prompt);
            }
            Action::Retrieved { id, result } => match self.on_retrieved(id, result) {
                Ok(asks) => out.extend(asks),
                Err(e) => {
                    cx.notify(Level::Error, e);
                    out.extend(self.record().map(Command::SaveChat));
                }
            },
            Action::CopyAnswer => match self.main().turns.iter().rev().find(|t| t.role == "assistant" && !t.text.is_empty()) {
                Some(t) => {
                    let n = t.text.chars().count();
                    out.push(Command::CopyToClipboard(t.text.clone()));
                    cx.notify(Level::Info, format!("Copied the last answer ({n} characters) to the clipboard."));
                }
                None => cx.notify(Level::Info, "No answer to copy yet."),
            },
            Action::Chat { side, event } => {
                let ends = self.ends_answer(side, &event);
                match self.on_event(side, event) {
                    Some(e) if side == 0 => cx.notify(Level::Error, e),
                    Some(e) => cx.notify(Level::Error, format!("Second model: {e}")),
                    None => {}
                }
                if ends {
                    out.extend(self.record().map(Command::SaveChat));
                }
            }
            Action::NewChat => {
                if self.any_streaming() {
                    cx.notify(Level::Info, streaming_sentence(cx.keymap));
                } else {
                    self.clear();
                }
            }
            Action::OpenChats => out.push(self.list_chats()),
            Action::ChatList { request, .. } if request != self.list_request => {}
            Action::ChatList { result: Ok(list), .. } => {
                if list.is_empty() {
                    cx.notify(Level::Info, "No saved conversations yet: each one is saved as its answers arrive.");
                } else {
                    self.list = Some(list);
                    self.list_selected = 0;
                    *cx.overlay = Some(Overlay::Chats);
                }
            }
            Action::ChatList { result: Err(e), .. } | Action::ChatOpened(Err(e)) => cx.notify(Level::Error, e),
            Action::OpenChat => {
                let picked = self.list.as_ref().and_then(|l| l.get(self.list_selected)).map(|c| c.id.clone());
                *cx.overlay = None;
                self.list = None;
                if self.any_streaming() {
                    cx.notify(Level::Info, streaming_sentence(cx.keymap));
                } else if let Some(id) = picked {
                    out.push(Command::LoadChat(id));
                }
            }
            Action::ChatOpened(Ok(r)) => {
                let note = format!("Reopened \"{}\" ({} messages; saved with {}).", r.title, r.turns.len(), r.model);
                self.reopen(r);
                *cx.focus = PaneId::Chat;
                cx.notify(Level::Info, note);
            }
            Action::ExportChat => match self.record() {
                Some(record) => out.push(Command::ExportChat { record, dir: cx.ws().chats_dir().display().to_string() }),
                None => cx.notify(Level::Info, "Nothing to export yet: send a message first."),
            },
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown if *cx.overlay == Some(Overlay::Chats) => {
                let n = self.list.as_ref().map(|l| l.len()).unwrap_or(0);
                let s = &mut self.list_selected;
                let up = matches!(action, Action::ScrollUp | Action::PageUp);
                *s = if up { s.saturating_sub(1) } else { (*s + 1).min(n.saturating_sub(1)) };
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown => {
                let page = cx.height.saturating_sub(10).max(1);
                self.scroll = match action {
                    Action::ScrollUp => self.scroll.saturating_add(1),
                    Action::PageUp => self.scroll.saturating_add(page),
                    Action::PageDown => self.scroll.saturating_sub(page),
                    _ => self.scroll.saturating_sub(1),
                };
            }
            // Up in an empty box (or while editing) steps back through your messages to edit and
            // resend one; Down steps forward, past the newest back to an empty box.
            Action::Text(k) if k.key == TextKey::Up || k.key == TextKey::Down => {
                let text = self.step_edit(k.key == TextKey::Up);
                self.input = TextArea::default();
                if let Some(t) = text {
                    self.input.insert_str(t);
                }
            }
            other => debug_assert!(false, "the Chat pane got {other:?}"),
        }
    }

    /// Whether an arrow key in the chat box steps through earlier messages rather than moving the
    /// cursor: Up in an empty box or on the first line while editing, Down on the last line
    /// while editing.
    pub fn steps_edit(&self, key: &TextKey) -> bool {
        let line = self.input.cursor().0;
        match key {
            TextKey::Up => (self.editing.is_some() || self.input.is_empty()) && line == 0,
            TextKey::Down => self.editing.is_some() && line + 1 >= self.input.lines().len(),
            _ => false,
        }
    }

    /// Applies the settings panel (Enter in it); the panel stays open while a value is wrong.
    pub fn apply_form(&mut self) {
        if let Some(form) = &mut self.form {
            match apply_settings(form, &self.sampling) {
                Ok((system, sampling)) => {
                    self.system = system;
                    self.sampling = sampling;
                    self.form = None;
                }
                Err(e) => form.check = Some(Err(e)),
            }
        }
    }

    /// Attaches a collection (the prompt's answer; empty detaches). `known`: the collections as
    /// last listed, when they were.
    pub fn attach(&mut self, name: &str, known: Option<&[String]>, cx: &mut Ctx) {
        let name = name.trim();
        if name.is_empty() {
            if self.kb.take().is_some() {
                cx.notify(Level::Info, "Answers no longer draw on a collection.");
            }
            return;
        }
        if let Some(known) = known.filter(|k| !k.iter().any(|n| n == name)) {
            let have = if known.is_empty() { "there are none yet (`lathe kb create NAME --model DIR`)".to_string() } else { format!("there are {}", known.join(", ")) };
            cx.notify(Level::Error, format!("There is no collection {name:?}; {have}."));
            return;
        }
        self.kb = Some(name.to_string());
        cx.notify(Level::Info, format!("Each message now retrieves its {} best chunks from {name} and the answer cites them.", crate::engine::knowledge::ground::SOURCES));
    }

    /// Opens a model picked elsewhere (the Models pane, the prompt) on side 0, by name.
    pub fn open_model(&mut self, name: String) {
        self.sides[0].model = ChatModel::Loading(name);
    }

    fn send_input(&mut self, cx: &mut Ctx, out: &mut Vec<Command>) {
        let text = self.input.lines().join("\n");
        match self.send(&text) {
            Ok(asks) => {
                self.input = TextArea::default();
                out.extend(asks);
                // A compared side that sat the message out says why.
                match self.compared().map(|c| &c.model) {
                    Some(ChatModel::Loading(name)) => {
                        cx.notify(Level::Info, format!("{name} is still loading, so only the first model answers this message."))
                    }
                    Some(ChatModel::Failed(_)) => {
                        let close = cx.keymap.hint(Mode::Chat, &Action::Compare);
                        cx.notify(Level::Info, format!("The second model did not load, so only the first answers; {close} closes the comparison."))
                    }
                    Some(ChatModel::Ready { .. } | ChatModel::None) | None => {}
                }
                // The message is saved now, not only with its answer.
                out.extend(self.record().map(Command::SaveChat));
            }
            // The text stays in the box.
            Err(e) => cx.notify(Level::Info, e.sentence(cx.keymap)),
        }
    }
}
