//! The Chat pane's state: the loaded model, the conversation, the answer being streamed.

use std::path::PathBuf;

use super::action::Action;
use super::keymap::{Keymap, Mode};
use crate::engine::infer::worker::ChatEvent;
use crate::engine::types::{Message, Sampling, Stats, StopReason};

/// Why a message cannot be sent (or an answer asked again) now. The text stays in the box; the
/// reducer words the reason with the live keymap.
#[derive(Debug, Clone, PartialEq)]
pub enum NotSent {
    Empty,
    Streaming,
    Loading(PathBuf),
    NoModel,
    NothingToRegenerate,
}

impl NotSent {
    pub fn sentence(&self, km: &Keymap) -> String {
        match self {
            NotSent::Empty => "Nothing to send: type a message first.".into(),
            NotSent::Streaming => streaming_sentence(km),
            NotSent::Loading(p) => format!("{} is still loading.", p.display()),
            NotSent::NoModel => format!(
                "No model is loaded: press {} to open a GGUF file (or start with `lathe chat --model FILE`).",
                km.hint(Mode::Chat, &Action::LoadModel)
            ),
            NotSent::NothingToRegenerate => "Nothing to regenerate yet: send a message first.".into(),
        }
    }
}

/// "An answer is still streaming; Esc stops it.", with the key the keymap binds.
pub fn streaming_sentence(km: &Keymap) -> String {
    format!("An answer is still streaming; {} stops it.", km.hint(Mode::Chat, &Action::StopGeneration))
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatModel {
    None,
    Loading(PathBuf),
    Ready { path: PathBuf, architecture: String, context_size: usize, has_template: bool },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: String,
    pub text: String,
    pub stats: Option<Stats>,
    pub error: Option<String>,
}

impl Turn {
    fn new(role: &str, text: &str) -> Turn {
        Turn { role: role.into(), text: text.into(), stats: None, error: None }
    }
}

/// The second model of a side-by-side comparison: the same conversation, its own answers.
#[derive(Debug, Clone)]
pub struct Side {
    pub model: ChatModel,
    pub turns: Vec<Turn>,
    pub streaming: Option<u64>,
    pub context_used: usize,
}

#[derive(Debug, Clone)]
pub struct ChatState {
    /// With a second model open, each message goes to both and the answers stream side by side.
    pub compare: Option<Side>,
    pub model: ChatModel,
    pub turns: Vec<Turn>,
    pub system: Option<String>,
    pub sampling: Sampling,
    /// The id of the answer being streamed.
    pub streaming: Option<u64>,
    next_id: u64,
    /// Lines scrolled up from the bottom of the transcript (0 follows the stream).
    pub scroll: u16,
    /// Turns at the start of the conversation that the last answer's context left out.
    pub dropped: usize,
    pub context_used: usize,
    /// The saved conversation's id (given at its first message).
    pub id: Option<String>,
    /// The earlier message being edited (an index into `turns`): sending replaces it and
    /// everything after it.
    pub editing: Option<usize>,
    /// The saved conversations, while their list is open, and the selected one.
    pub list: Option<Vec<crate::engine::data::chats::ChatSummary>>,
    pub list_selected: usize,
    /// The newest listing of saved conversations asked for; an older answer is dropped.
    pub list_request: u64,
    /// The message box.
    pub input: tui_textarea::TextArea<'static>,
    /// The conversation's settings panel (system prompt, sampling) while it is open.
    pub form: Option<super::train::TrainForm>,
}

impl Default for ChatState {
    fn default() -> Self {
        ChatState {
            compare: None,
            model: ChatModel::None,
            turns: Vec::new(),
            system: None,
            sampling: Sampling::default(),
            streaming: None,
            next_id: 1,
            scroll: 0,
            dropped: 0,
            context_used: 0,
            id: None,
            editing: None,
            list: None,
            list_selected: 0,
            list_request: 0,
            input: Default::default(),
            form: None,
        }
    }
}

/// The settings panel's fields (Ctrl-P): the system prompt and the sampling parameters of this
/// conversation.
pub fn settings_form(system: &Option<String>, s: &Sampling) -> super::train::TrainForm {
    use super::train::Field;
    let f = |label, value: String, hint| Field { label, value, hint };
    super::train::TrainForm {
        fields: vec![
            f("system prompt", system.clone().unwrap_or_default(), "sent first in every turn; empty for none"),
            f("temperature", s.temperature.to_string(), "0 answers greedily (the same every time)"),
            f("top k", s.top_k.to_string(), "sample from the k most likely tokens (0: all)"),
            f("top p", s.top_p.to_string(), "nucleus sampling (1: off)"),
            f("min p", s.min_p.to_string(), "drop tokens below this share of the best one (0: off)"),
            f("repeat penalty", s.repeat_penalty.to_string(), "1 is off"),
            f("seed", s.seed.to_string(), "for repeatable sampling"),
            f("max tokens", s.max_tokens.to_string(), "the longest answer"),
            f("stop", s.stop.join(" | "), "texts that end an answer, separated by |"),
        ],
        selected: 0,
        check: None,
    }
}

/// Reads the panel back; Err names the field to fix.
pub fn apply_settings(form: &super::train::TrainForm, base: &Sampling) -> Result<(Option<String>, Sampling), String> {
    fn num<T: std::str::FromStr>(label: &str, v: &str) -> Result<T, String> {
        v.trim().parse().map_err(|_| format!("{label}: {v:?} is not a number."))
    }
    let v = |i: usize| form.fields[i].value.as_str();
    let mut s = base.clone();
    s.temperature = num("temperature", v(1))?;
    s.top_k = num("top k", v(2))?;
    s.top_p = num("top p", v(3))?;
    s.min_p = num("min p", v(4))?;
    s.repeat_penalty = num("repeat penalty", v(5))?;
    s.seed = num("seed", v(6))?;
    s.max_tokens = num("max tokens", v(7))?;
    s.stop = v(8).split('|').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect();
    if s.temperature < 0.0 || !(0.0..=1.0).contains(&s.top_p) || !(0.0..=1.0).contains(&s.min_p) || s.repeat_penalty <= 0.0 || s.max_tokens == 0 {
        return Err("Out of range: temperature ≥ 0, top p and min p in 0..1, repeat penalty > 0, max tokens ≥ 1.".into());
    }
    let system = Some(v(0).to_string()).filter(|x| !x.trim().is_empty());
    Ok((system, s))
}

/// What the reducer asks of the chat engine.
#[derive(Debug)]
pub enum ChatCommand {
    Generate { id: u64, messages: Vec<Message>, sampling: Sampling },
}

impl ChatState {
    pub fn ready(&self) -> bool {
        matches!(self.model, ChatModel::Ready { .. })
    }

    /// Sends `text` as the user's next message; Err says why not (the text stays in the box).
    pub fn send(&mut self, text: &str) -> Result<ChatCommand, NotSent> {
        if text.trim().is_empty() {
            return Err(NotSent::Empty);
        }
        self.check_ready()?;
        if let Some(i) = self.editing.take() {
            self.turns.truncate(i);
            if let Some(side) = &mut self.compare {
                side.turns.truncate(i);
            }
            self.dropped = 0;
        }
        self.turns.push(Turn::new("user", text));
        Ok(self.start_answer())
    }

    /// Steps to the user message before (`back`) or after the one being edited; returns its text
    /// for the input box, or None when stepping past the newest (the box empties).
    pub fn step_edit(&mut self, back: bool) -> Option<String> {
        let users: Vec<usize> = self.turns.iter().enumerate().filter(|(_, t)| t.role == "user").map(|(i, _)| i).collect();
        let next = match (self.editing, back) {
            (None, true) => users.last().copied(),
            (None, false) => None,
            (Some(cur), true) => users.iter().rev().find(|&&i| i < cur).copied().or(Some(cur)),
            (Some(cur), false) => users.iter().find(|&&i| i > cur).copied(),
        };
        self.editing = next;
        next.map(|i| self.turns[i].text.clone())
    }

    /// Asks again for the last answer (it is replaced).
    pub fn regenerate(&mut self) -> Result<ChatCommand, NotSent> {
        self.check_ready()?;
        if !drop_last_answer(&mut self.turns) {
            return Err(NotSent::NothingToRegenerate);
        }
        Ok(self.start_answer())
    }

    /// Opens a second model beside the first, from the conversation so far.
    pub fn start_compare(&mut self, path: PathBuf) {
        // The answer still streaming on the first side is not part of the shared history.
        let done = if self.streaming.is_some() { self.turns.len().saturating_sub(1) } else { self.turns.len() };
        self.compare = Some(Side { model: ChatModel::Loading(path), turns: self.turns[..done].to_vec(), streaming: None, context_used: 0 });
    }

    /// The second model's answer to the message just sent, when a comparison is open and ready.
    pub fn send_compare(&mut self, text: &str) -> Option<ChatCommand> {
        let side = self.compare.as_mut().filter(|s| matches!(s.model, ChatModel::Ready { .. }) && s.streaming.is_none())?;
        side.turns.push(Turn::new("user", text));
        self.start_compare_answer()
    }

    /// The second model answers its last message again (its last answer is replaced), when a
    /// comparison is open and ready: Ctrl-R regenerates both sides.
    pub fn regenerate_compare(&mut self) -> Option<ChatCommand> {
        let side = self.compare.as_mut().filter(|s| matches!(s.model, ChatModel::Ready { .. }) && s.streaming.is_none())?;
        if !drop_last_answer(&mut side.turns) {
            return None;
        }
        self.start_compare_answer()
    }

    /// Starts the second model's answer to its conversation so far.
    fn start_compare_answer(&mut self) -> Option<ChatCommand> {
        let id = self.next_id;
        let side = self.compare.as_mut()?;
        self.next_id += 1;
        let messages = conversation(&self.system, &side.turns);
        let sampling = self.sampling.clone();
        side.turns.push(Turn::new("assistant", ""));
        side.streaming = Some(id);
        Some(ChatCommand::Generate { id, messages, sampling })
    }

    /// An event of the second model's engine.
    pub fn on_compare_event(&mut self, ev: ChatEvent) -> Option<String> {
        let side = self.compare.as_mut()?;
        match ev {
            ChatEvent::Loaded { path, architecture, context_size, has_template } => {
                side.model = ChatModel::Ready { path, architecture, context_size, has_template };
                None
            }
            ChatEvent::LoadFailed(e) => {
                side.model = ChatModel::Failed(e.clone());
                Some(e)
            }
            ev => stream_event(&mut side.turns, &mut side.streaming, &mut side.context_used, ev),
        }
    }

    /// The second model's side as a conversation of its own, for drawing.
    pub fn compare_view(&self) -> Option<ChatState> {
        let side = self.compare.as_ref()?;
        Some(ChatState {
            model: side.model.clone(),
            turns: side.turns.clone(),
            streaming: side.streaming,
            context_used: side.context_used,
            dropped: 0,
            compare: None,
            list: None,
            ..self.clone()
        })
    }

    /// Asks the service for the saved conversations.
    pub fn list_chats(&mut self) -> super::action::Command {
        self.list_request += 1;
        super::action::Command::ListChats { request: self.list_request }
    }

    pub fn any_streaming(&self) -> bool {
        self.streaming.is_some() || self.compare.as_ref().is_some_and(|s| s.streaming.is_some())
    }

    fn check_ready(&self) -> Result<(), NotSent> {
        if self.any_streaming() {
            return Err(NotSent::Streaming);
        }
        match &self.model {
            ChatModel::Ready { .. } => Ok(()),
            ChatModel::Loading(p) => Err(NotSent::Loading(p.clone())),
            _ => Err(NotSent::NoModel),
        }
    }

    /// The conversation as it is saved, with the second model's side when comparing.
    pub fn record(&self) -> Option<crate::engine::data::chats::ChatRecord> {
        use crate::engine::data::chats::{title_of, ChatRecord, ComparedSide};
        let id = self.id.clone()?;
        let turns = saved_turns(&self.turns);
        let compare = self.compare.as_ref().filter(|c| c.turns.iter().any(|t| t.role == "assistant")).map(|c| ComparedSide { model: model_name(&c.model), turns: saved_turns(&c.turns) });
        Some(ChatRecord {
            id,
            title: title_of(&turns),
            model: model_name(&self.model),
            system: self.system.clone(),
            turns,
            sampling: self.sampling.clone(),
            updated_at: String::new(),
            compare,
        })
    }

    /// A saved conversation back in the pane (the models loaded now stay). An open comparison
    /// takes the saved second side's answers, or the conversation without answers when it has none.
    pub fn reopen(&mut self, r: crate::engine::data::chats::ChatRecord) {
        let turns = |v: Vec<crate::engine::data::chats::SavedTurn>| v.into_iter().map(|t| Turn { role: t.role, text: t.text, stats: t.stats, error: None }).collect::<Vec<_>>();
        self.turns = turns(r.turns);
        self.system = r.system;
        self.sampling = r.sampling;
        self.id = Some(r.id);
        self.dropped = 0;
        self.scroll = 0;
        let first_side = self.turns.clone();
        if let Some(side) = &mut self.compare {
            side.turns = match r.compare {
                Some(c) => turns(c.turns),
                None => first_side.into_iter().filter(|t| t.role == "user").collect(),
            };
            side.context_used = 0;
        }
    }

    pub fn clear(&mut self) {
        self.turns.clear();
        self.context_used = 0;
        if let Some(side) = &mut self.compare {
            side.turns.clear();
            side.context_used = 0;
        }
        self.id = None;
        self.dropped = 0;
        self.scroll = 0;
    }

    fn start_answer(&mut self) -> ChatCommand {
        if self.id.is_none() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.id = Some(format!("chat-{}-{:04x}", now.as_secs(), now.subsec_nanos() % 0x10000));
        }
        let messages = conversation(&self.system, &self.turns);
        let id = self.next_id;
        self.next_id += 1;
        self.turns.push(Turn::new("assistant", ""));
        self.streaming = Some(id);
        self.scroll = 0;
        ChatCommand::Generate { id, messages, sampling: self.sampling.clone() }
    }

    /// An engine event; returns an error message worth a notice, if any.
    pub fn on_event(&mut self, ev: ChatEvent) -> Option<String> {
        match ev {
            ChatEvent::Loaded { path, architecture, context_size, has_template } => {
                self.model = ChatModel::Ready { path, architecture, context_size, has_template };
                self.context_used = 0;
                None
            }
            ChatEvent::LoadFailed(e) => {
                self.model = ChatModel::Failed(e.clone());
                Some(e)
            }
            ChatEvent::Started { id, dropped } if Some(id) == self.streaming => {
                self.dropped = dropped;
                None
            }
            ev => stream_event(&mut self.turns, &mut self.streaming, &mut self.context_used, ev),
        }
    }
}

/// What a model is asked: the system prompt, if any, then the turns (an answer that failed
/// without any text is left out).
fn conversation(system: &Option<String>, turns: &[Turn]) -> Vec<Message> {
    let system = system.as_ref().filter(|s| !s.trim().is_empty()).map(|s| Message { role: "system".into(), content: s.clone() });
    let said = turns.iter().filter(|t| t.error.is_none() || !t.text.is_empty()).map(|t| Message { role: t.role.clone(), content: t.text.clone() });
    system.into_iter().chain(said).collect()
}

/// Removes the last answer, if any; true when a user message is then last (there is something
/// to answer again).
fn drop_last_answer(turns: &mut Vec<Turn>) -> bool {
    if turns.last().is_some_and(|t| t.role == "assistant") {
        turns.pop();
    }
    turns.last().is_some_and(|t| t.role == "user")
}

/// The turns as saved; an answer that has not produced any text yet is left out.
fn saved_turns(turns: &[Turn]) -> Vec<crate::engine::data::chats::SavedTurn> {
    let end = if turns.last().is_some_and(|t| t.role == "assistant" && t.text.is_empty() && t.stats.is_none() && t.error.is_none()) { turns.len() - 1 } else { turns.len() };
    turns[..end].iter().map(|t| crate::engine::data::chats::SavedTurn { role: t.role.clone(), text: t.text.clone(), stats: t.stats.clone() }).collect()
}

fn model_name(m: &ChatModel) -> String {
    match m {
        ChatModel::Ready { path, .. } | ChatModel::Loading(path) => path.display().to_string(),
        _ => String::new(),
    }
}

/// An answer's stream event applied to one side's turns: the text grows, the figures or the error
/// land on the last turn, and the side stops streaming. Returns an error worth a notice.
fn stream_event(turns: &mut [Turn], streaming: &mut Option<u64>, context_used: &mut usize, ev: ChatEvent) -> Option<String> {
    match ev {
        ChatEvent::Token { id, text } if Some(id) == *streaming => {
            if let Some(t) = turns.last_mut() {
                t.text.push_str(&text);
            }
            None
        }
        ChatEvent::Done { id, stats } if Some(id) == *streaming => {
            *streaming = None;
            *context_used = stats.context_used;
            if let Some(t) = turns.last_mut() {
                if stats.stop == StopReason::ContextFull {
                    t.error = Some("the context is full: the answer was cut here".into());
                }
                t.stats = Some(stats);
            }
            None
        }
        ChatEvent::Failed { id, error } if Some(id) == *streaming => {
            *streaming = None;
            if let Some(t) = turns.last_mut() {
                t.error = Some(error.clone());
            }
            Some(error)
        }
        // Events of an answer that is no longer current.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> ChatState {
        let mut c = ChatState::default();
        c.on_event(ChatEvent::Loaded { path: "m.gguf".into(), architecture: "llama".into(), context_size: 256, has_template: true });
        c
    }

    fn stats(stop: StopReason) -> Stats {
        Stats {
            prompt_tokens: 10,
            reused_tokens: 0,
            prompt_secs: 0.1,
            first_token_secs: 0.1,
            generated_tokens: 3,
            generation_secs: 0.1,
            context_used: 13,
            context_size: 256,
            stop,
        }
    }

    #[test]
    fn a_message_streams_into_an_answer() {
        let mut c = ChatState::default();
        assert_eq!(c.send("hi").unwrap_err(), NotSent::NoModel);
        let mut c2 = ready();
        assert!(c2.send("  ").is_err());
        let ChatCommand::Generate { id, messages, .. } = c2.send("hi").unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(c2.send("again").unwrap_err(), NotSent::Streaming);
        c2.on_event(ChatEvent::Token { id, text: "Hel".into() });
        c2.on_event(ChatEvent::Token { id: id + 7, text: "stale".into() });
        c2.on_event(ChatEvent::Token { id, text: "lo".into() });
        c2.on_event(ChatEvent::Done { id, stats: stats(StopReason::EndOfTurn) });
        assert_eq!(c2.turns.last().unwrap().text, "Hello");
        assert_eq!(c2.context_used, 13);
        // A second turn carries the whole conversation; regenerate replaces the last answer.
        let ChatCommand::Generate { messages, .. } = c2.send("more").unwrap();
        assert_eq!(messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "assistant", "user"]);
        let id2 = c2.streaming.unwrap();
        c2.on_event(ChatEvent::Failed { id: id2, error: "boom".into() });
        assert_eq!(c2.turns.last().unwrap().error.as_deref(), Some("boom"));
        let ChatCommand::Generate { messages, .. } = c2.regenerate().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(c2.turns.len(), 4);
    }
}
