//! The Chat pane's state: its sides (the conversation's model, and the model compared with it),
//! each side's turns and the answer it streams, the system prompt and sampling, the saved
//! conversations list and the message box; and the attached knowledge collection, whose sources
//! each message waits for before its answers start.

use super::action::{Action, Command};
use super::keymap::{Keymap, Mode};
use crate::engine::infer::worker::ChatEvent;
use crate::engine::knowledge::ground::{self, Retrieval};
use crate::engine::types::{Message, ModelRef, Sampling, Stats, StopReason};

/// Why a message cannot be sent (or an answer asked again) now. The text stays in the box; the
/// reducer words the reason with the live keymap.
#[derive(Debug, Clone, PartialEq)]
pub enum NotSent {
    Empty,
    Streaming,
    Loading(String),
    NoModel,
    NothingToRegenerate,
}

impl NotSent {
    pub fn sentence(&self, km: &Keymap) -> String {
        match self {
            NotSent::Empty => "Nothing to send: type a message first.".into(),
            NotSent::Streaming => streaming_sentence(km),
            NotSent::Loading(name) => format!("{name} is still loading."),
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

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ChatModel {
    #[default]
    None,
    /// Asked for by this name (a path, a library name or a server spec); the service resolves it.
    Loading(String),
    Ready { model: ModelRef, architecture: String, context_size: usize, has_template: bool },
    Failed(String),
}

impl ChatModel {
    /// The model's reference as saved with a conversation (empty when none is loaded).
    fn name(&self) -> String {
        match self {
            ChatModel::Ready { model, .. } => model.to_string(),
            ChatModel::Loading(name) => name.clone(),
            ChatModel::None | ChatModel::Failed(_) => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: String,
    pub text: String,
    pub stats: Option<Stats>,
    pub error: Option<String>,
    /// The sources the answer was given, when a collection is attached.
    pub retrieval: Option<Retrieval>,
}

impl Turn {
    fn new(role: &str, text: &str) -> Turn {
        Turn { role: role.into(), text: text.into(), stats: None, error: None, retrieval: None }
    }
}

/// One model answering the conversation: side 0 is the conversation's model, side 1 the model
/// compared with it. Each side holds its own turns (the same messages, its own answers).
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub model: ChatModel,
    pub turns: Vec<Turn>,
    /// The id of the answer being streamed.
    pub streaming: Option<u64>,
    pub context_used: usize,
    /// Turns at the start of the conversation that the last answer's context left out.
    pub dropped: usize,
    /// A question from the model's training view, offered while the conversation is empty.
    pub example: Option<String>,
    /// The turns as last wrapped for the screen (filled while drawing).
    pub wrapped: std::cell::RefCell<super::wrap::WrapCache>,
}

impl Side {
    pub fn ready(&self) -> bool {
        matches!(self.model, ChatModel::Ready { .. })
    }

    /// Ready for the next message: loaded, and not answering.
    fn free(&self) -> bool {
        self.ready() && self.streaming.is_none()
    }

    /// An engine event; returns an error message worth a notice, if any.
    fn on_event(&mut self, ev: ChatEvent) -> Option<String> {
        match ev {
            ChatEvent::Loaded { model, architecture, context_size, has_template } => {
                self.model = ChatModel::Ready { model, architecture, context_size, has_template };
                self.context_used = 0;
                self.example = None;
                None
            }
            ChatEvent::Example(text) => {
                self.example = Some(text);
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
            ChatEvent::Token { id, text } if Some(id) == self.streaming => {
                if let Some(t) = self.turns.last_mut() {
                    t.text.push_str(&text);
                }
                None
            }
            ChatEvent::Done { id, stats } if Some(id) == self.streaming => {
                self.streaming = None;
                self.context_used = stats.context_used;
                if let Some(t) = self.turns.last_mut() {
                    if stats.stop == StopReason::ContextFull {
                        t.error = Some("the context is full: the answer was cut here".into());
                    }
                    t.stats = Some(stats);
                }
                None
            }
            ChatEvent::Failed { id, error } if Some(id) == self.streaming => {
                self.streaming = None;
                if let Some(t) = self.turns.last_mut() {
                    t.error = Some(error.clone());
                }
                Some(error)
            }
            // Events of an answer that is no longer current.
            ChatEvent::Started { .. } | ChatEvent::Token { .. } | ChatEvent::Done { .. } | ChatEvent::Failed { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChatState {
    /// Side 0 always; side 1 while a comparison is open (each message then goes to both and the
    /// answers stream side by side).
    pub sides: Vec<Side>,
    pub system: Option<String>,
    pub sampling: Sampling,
    next_id: u64,
    /// Lines scrolled up from the bottom of the transcript (0 follows the stream).
    pub scroll: u16,
    /// The saved conversation's id (given at its first message).
    pub id: Option<String>,
    /// The earlier message being edited (an index into the turns): sending replaces it and
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
    /// The knowledge collection each message retrieves its sources from.
    pub kb: Option<String>,
    /// Answers waiting for their sources: the retrieval's id and their Generate commands.
    pub held: Option<(u64, Vec<Command>)>,
    retrieval_id: u64,
}

impl Default for ChatState {
    fn default() -> Self {
        ChatState {
            sides: vec![Side::default()],
            system: None,
            sampling: Sampling::default(),
            next_id: 1,
            scroll: 0,
            id: None,
            editing: None,
            list: None,
            list_selected: 0,
            list_request: 0,
            input: Default::default(),
            form: None,
            kb: None,
            held: None,
            retrieval_id: 0,
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

impl ChatState {
    /// The conversation's own model (side 0).
    pub fn main(&self) -> &Side {
        &self.sides[0]
    }

    /// The compared model's side, while a comparison is open.
    pub fn compared(&self) -> Option<&Side> {
        self.sides.get(1)
    }

    pub fn ready(&self) -> bool {
        self.main().ready()
    }

    /// Sends `text` as the user's next message to every side that can answer now; Err says why
    /// not (the text stays in the box). Side 0 always answers; a compared side still loading, or
    /// that failed to load, sits the message out.
    pub fn send(&mut self, text: &str) -> Result<Vec<Command>, NotSent> {
        if text.trim().is_empty() {
            return Err(NotSent::Empty);
        }
        self.check_ready()?;
        if let Some(i) = self.editing.take() {
            for side in &mut self.sides {
                side.turns.truncate(i);
                side.dropped = 0;
            }
        }
        let answering: Vec<usize> = (0..self.sides.len()).filter(|&i| self.sides[i].free()).collect();
        for &i in &answering {
            self.sides[i].turns.push(Turn::new("user", text));
        }
        Ok(self.answer(answering, text))
    }

    /// Starts the answers of `sides` to `question`: at once, or, with a collection attached, once
    /// its sources are retrieved (`on_retrieved`).
    fn answer(&mut self, sides: Vec<usize>, question: &str) -> Vec<Command> {
        let asks: Vec<Command> = sides.into_iter().map(|i| self.start_answer(i)).collect();
        let Some(kb) = self.kb.clone() else { return asks };
        self.retrieval_id += 1;
        self.held = Some((self.retrieval_id, asks));
        vec![Command::Retrieve { id: self.retrieval_id, collection: kb, query: question.to_string() }]
    }

    /// The sources for the held answers arrived: each is asked with them in its last message.
    /// Err: the answers end with the reason, and it is returned for a notice.
    pub fn on_retrieved(&mut self, id: u64, result: Result<crate::service::SearchResult, String>) -> Result<Vec<Command>, String> {
        let Some((held_id, asks)) = self.held.take() else { return Ok(vec![]) };
        if held_id != id {
            self.held = Some((held_id, asks));
            return Ok(vec![]);
        }
        let collection = self.kb.clone().unwrap_or_default();
        match result {
            Ok(r) => Ok(asks
                .into_iter()
                .map(|c| match c {
                    Command::Generate { side, id, messages, sampling } => {
                        let sources = ground::sources(&collection, &r.hits);
                        let messages = ground::grounded(&messages, &r.hits, &sources);
                        if let Some(t) = self.sides.get_mut(side).and_then(|s| s.turns.last_mut()) {
                            t.retrieval = Some(Retrieval { collection: collection.clone(), sources, millis: r.millis });
                        }
                        Command::Generate { side, id, messages, sampling }
                    }
                    other => other,
                })
                .collect()),
            Err(e) => {
                let why = format!("No sources from {collection}: {e}");
                for side in &mut self.sides {
                    if side.streaming.take().is_some() {
                        if let Some(t) = side.turns.last_mut() {
                            t.error = Some(why.clone());
                        }
                    }
                }
                Err(why)
            }
        }
    }

    /// Stops answers still waiting for their sources; false when none was.
    pub fn cancel_retrieval(&mut self) -> bool {
        if self.held.take().is_none() {
            return false;
        }
        for side in &mut self.sides {
            if side.streaming.take().is_some() && side.turns.last().is_some_and(|t| t.role == "assistant" && t.text.is_empty()) {
                side.turns.pop();
            }
        }
        true
    }

    /// Steps to the user message before (`back`) or after the one being edited; returns its text
    /// for the input box, or None when stepping past the newest (the box empties).
    pub fn step_edit(&mut self, back: bool) -> Option<String> {
        let turns = &self.sides[0].turns;
        let users: Vec<usize> = turns.iter().enumerate().filter(|(_, t)| t.role == "user").map(|(i, _)| i).collect();
        if users.is_empty() && back && self.editing.is_none() {
            // Nothing said yet: the model's own example question, when its file has one.
            return self.sides[0].example.clone();
        }
        let next = match (self.editing, back) {
            (None, true) => users.last().copied(),
            (None, false) => None,
            (Some(cur), true) => users.iter().rev().find(|&&i| i < cur).copied().or(Some(cur)),
            (Some(cur), false) => users.iter().find(|&&i| i > cur).copied(),
        };
        self.editing = next;
        next.map(|i| turns[i].text.clone())
    }

    /// Every ready side answers its last message again (its last answer is replaced).
    pub fn regenerate(&mut self) -> Result<Vec<Command>, NotSent> {
        self.check_ready()?;
        if !drop_last_answer(&mut self.sides[0].turns) {
            return Err(NotSent::NothingToRegenerate);
        }
        let mut sides = vec![0];
        for i in 1..self.sides.len() {
            if self.sides[i].free() && drop_last_answer(&mut self.sides[i].turns) {
                sides.push(i);
            }
        }
        let question = self.sides[0].turns.last().map(|t| t.text.clone()).unwrap_or_default();
        Ok(self.answer(sides, &question))
    }

    /// Opens a second side beside the first, from the conversation so far, loading `name`.
    pub fn open_side(&mut self, name: String) {
        let first = self.main();
        // The answer still streaming on the first side is not part of the shared history.
        let done = if first.streaming.is_some() { first.turns.len().saturating_sub(1) } else { first.turns.len() };
        let turns = first.turns[..done].to_vec();
        self.sides.truncate(1);
        self.sides.push(Side { model: ChatModel::Loading(name), turns, ..Side::default() });
    }

    /// Closes the compared side; false when none was open.
    pub fn close_side(&mut self) -> bool {
        self.sides.len() > 1 && {
            self.sides.truncate(1);
            true
        }
    }

    /// A side's engine event; returns an error message worth a notice, if any.
    pub fn on_event(&mut self, side: usize, ev: ChatEvent) -> Option<String> {
        self.sides.get_mut(side)?.on_event(ev)
    }

    /// Whether `ev` ends the answer a side is streaming.
    pub fn ends_answer(&self, side: usize, ev: &ChatEvent) -> bool {
        let streaming = self.sides.get(side).and_then(|s| s.streaming);
        matches!(ev, ChatEvent::Done { id, .. } | ChatEvent::Failed { id, .. } if Some(*id) == streaming)
    }

    /// Asks the service for the saved conversations.
    pub fn list_chats(&mut self) -> Command {
        self.list_request += 1;
        Command::ListChats { request: self.list_request }
    }

    pub fn any_streaming(&self) -> bool {
        self.sides.iter().any(|s| s.streaming.is_some())
    }

    fn check_ready(&self) -> Result<(), NotSent> {
        if self.any_streaming() {
            return Err(NotSent::Streaming);
        }
        match &self.main().model {
            ChatModel::Ready { .. } => Ok(()),
            ChatModel::Loading(name) => Err(NotSent::Loading(name.clone())),
            ChatModel::None | ChatModel::Failed(_) => Err(NotSent::NoModel),
        }
    }

    /// The conversation as it is saved, with the second model's side when comparing.
    pub fn record(&self) -> Option<crate::engine::data::chats::ChatRecord> {
        use crate::engine::data::chats::{title_of, ChatRecord, ComparedSide};
        let id = self.id.clone()?;
        let turns = saved_turns(&self.main().turns);
        let compare = self.compared().filter(|c| c.turns.iter().any(|t| t.role == "assistant")).map(|c| ComparedSide { model: c.model.name(), turns: saved_turns(&c.turns) });
        Some(ChatRecord {
            id,
            title: title_of(&turns),
            model: self.main().model.name(),
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
        let turns = |v: Vec<crate::engine::data::chats::SavedTurn>| {
            v.into_iter().map(|t| Turn { role: t.role, text: t.text, stats: t.stats, error: None, retrieval: t.retrieval }).collect::<Vec<_>>()
        };
        let first = turns(r.turns);
        let second = match r.compare {
            Some(c) => turns(c.turns),
            None => first.iter().filter(|t| t.role == "user").cloned().collect(),
        };
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.turns = if i == 0 { first.clone() } else { second.clone() };
            side.context_used = 0;
            side.dropped = 0;
        }
        self.system = r.system;
        self.sampling = r.sampling;
        self.id = Some(r.id);
        self.scroll = 0;
    }

    pub fn clear(&mut self) {
        self.cancel_retrieval();
        for side in &mut self.sides {
            side.turns.clear();
            side.context_used = 0;
            side.dropped = 0;
        }
        self.id = None;
        self.scroll = 0;
    }

    /// Starts side `i`'s answer to its conversation so far.
    fn start_answer(&mut self, i: usize) -> Command {
        if self.id.is_none() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.id = Some(format!("chat-{}-{:04x}", now.as_secs(), now.subsec_nanos() % 0x10000));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.scroll = 0;
        let side = &mut self.sides[i];
        let messages = conversation(&self.system, &side.turns);
        side.turns.push(Turn::new("assistant", ""));
        side.streaming = Some(id);
        Command::Generate { side: i, id, messages, sampling: self.sampling.clone() }
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
    turns[..end].iter().map(|t| crate::engine::data::chats::SavedTurn { role: t.role.clone(), text: t.text.clone(), stats: t.stats.clone(), retrieval: t.retrieval.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> ChatState {
        let mut c = ChatState::default();
        c.on_event(0, ChatEvent::Loaded { model: ModelRef::File("m.gguf".into()), architecture: "llama".into(), context_size: 256, has_template: true });
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

    fn asked(cmds: Vec<Command>) -> (u64, Vec<Message>) {
        match cmds.as_slice() {
            [Command::Generate { side: 0, id, messages, .. }] => (*id, messages.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_models_example_is_offered_until_something_is_said() {
        let mut c = ready();
        assert_eq!(c.step_edit(true), None);
        c.on_event(0, ChatEvent::Example("Add the two numbers.\n\n1 + 2".into()));
        assert_eq!(c.step_edit(true).as_deref(), Some("Add the two numbers.\n\n1 + 2"));
        assert_eq!(c.editing, None, "the example is not an edit of a sent message");
        let _ = c.send("hi").unwrap();
        assert_eq!(c.step_edit(true).as_deref(), Some("hi"), "once something is said, Up steps back through it");
        c.on_event(0, ChatEvent::Loaded { model: ModelRef::File("other.gguf".into()), architecture: "llama".into(), context_size: 256, has_template: true });
        assert_eq!(c.main().example, None, "another model drops the first one's example");
    }

    #[test]
    fn a_message_streams_into_an_answer() {
        let mut c = ChatState::default();
        assert_eq!(c.send("hi").unwrap_err(), NotSent::NoModel);
        let mut c2 = ready();
        assert!(c2.send("  ").is_err());
        let (id, messages) = asked(c2.send("hi").unwrap());
        assert_eq!(messages.len(), 1);
        assert_eq!(c2.send("again").unwrap_err(), NotSent::Streaming);
        c2.on_event(0, ChatEvent::Token { id, text: "Hel".into() });
        c2.on_event(0, ChatEvent::Token { id: id + 7, text: "stale".into() });
        c2.on_event(0, ChatEvent::Token { id, text: "lo".into() });
        c2.on_event(0, ChatEvent::Done { id, stats: stats(StopReason::EndOfTurn) });
        assert_eq!(c2.main().turns.last().unwrap().text, "Hello");
        assert_eq!(c2.main().context_used, 13);
        // A second turn carries the whole conversation; regenerate replaces the last answer.
        let (id2, messages) = asked(c2.send("more").unwrap());
        assert_eq!(messages.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "assistant", "user"]);
        c2.on_event(0, ChatEvent::Failed { id: id2, error: "boom".into() });
        assert_eq!(c2.main().turns.last().unwrap().error.as_deref(), Some("boom"));
        let (_, messages) = asked(c2.regenerate().unwrap());
        assert_eq!(messages.len(), 3);
        assert_eq!(c2.main().turns.len(), 4);
        // Events for a side that is not open are dropped.
        assert_eq!(c2.on_event(1, ChatEvent::LoadFailed("x".into())), None);
    }
}
