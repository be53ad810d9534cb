//! The Knowledge pane: the collections as the service last listed them, the search box and its
//! results, the running ingest's progress, and what its keys do: search (as you type, one search
//! in flight at a time, or Enter), open
//! a result in the viewer, add a path to the selected collection (asked for, with completion),
//! sync it again, drop it (asked first), cycle the search mode.

use tui_textarea::TextArea;

use super::action::{Action, Command};
use super::keymap::Mode;
use super::shell::{Ctx, Level, Overlay, Prompt, PromptKind};
use crate::engine::jobs::JobId;
use crate::engine::knowledge::ingest::Progress;
use crate::engine::knowledge::store::{CollectionInfo, Hit, SearchMode};
use crate::service::{SearchRequest, SearchResult};

/// Results asked for per search.
pub const RESULTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KbFocus {
    /// The collections (and, once there are results, the results below them).
    #[default]
    List,
    /// The search box (a text input).
    Search,
    Results,
}

#[derive(Debug, Clone, Default)]
pub struct KnowledgePane {
    pub list: Option<Result<Vec<CollectionInfo>, String>>,
    pub selected: usize,
    pub focus: KbFocus,
    pub query: TextArea<'static>,
    pub mode: SearchMode,
    /// The last search's answer and the query it answered.
    pub results: Option<(String, Result<SearchResult, String>)>,
    pub hit: usize,
    /// Whether a search is on its way.
    pub searching: bool,
    /// The query changed while a search was on its way: search again when it answers.
    retype: bool,
    /// The running ingest: its job, its collection and where it is.
    pub ingest: Option<(JobId, String, Option<Progress>)>,
    /// The collection waiting for a yes/no on dropping it.
    pub drop_target: Option<String>,
    /// The collection the path prompt adds to.
    pub add_target: Option<String>,
    request: u64,
    search_request: u64,
    /// The query of the search on its way.
    asked: String,
}

impl KnowledgePane {
    pub fn collections(&self) -> &[CollectionInfo] {
        match &self.list {
            Some(Ok(l)) => l,
            _ => &[],
        }
    }

    pub fn current(&self) -> Option<&CollectionInfo> {
        self.collections().get(self.selected)
    }

    pub fn hits(&self) -> &[Hit] {
        match &self.results {
            Some((_, Ok(r))) => &r.hits,
            _ => &[],
        }
    }

    pub fn query_text(&self) -> String {
        self.query.lines().join(" ")
    }

    /// Asks the service for the collections again.
    pub fn refresh(&mut self) -> Command {
        self.request += 1;
        Command::ListCollections { request: self.request }
    }

    /// Where the keys go: the search box is a text input.
    pub fn mode(&self) -> Mode {
        if self.focus == KbFocus::Search {
            Mode::KbSearch
        } else {
            Mode::Knowledge
        }
    }

    pub fn update(&mut self, action: Action, cx: &mut Ctx, out: &mut Vec<Command>) {
        let key = |cx: &Ctx, a: Action| cx.keymap.hint(Mode::Knowledge, &a);
        match action {
            Action::RefreshCollections => out.push(self.refresh()),
            Action::Collections { request, .. } if request != self.request => {}
            Action::Collections { result, .. } => {
                let n = result.as_ref().map(|l| l.len()).unwrap_or(0);
                self.selected = self.selected.min(n.saturating_sub(1));
                self.list = Some(result);
            }
            Action::FocusSearch => {
                if self.current().is_some() {
                    self.focus = KbFocus::Search;
                } else {
                    cx.notify(Level::Info, "There is no collection to search; `lathe kb create NAME --model DIR` makes one.");
                }
            }
            Action::LeaveSearch => self.focus = if self.hits().is_empty() { KbFocus::List } else { KbFocus::Results },
            Action::CycleSearchMode => {
                self.mode = match self.mode {
                    SearchMode::Hybrid => SearchMode::Vector,
                    SearchMode::Vector => SearchMode::Text,
                    SearchMode::Text => SearchMode::Hybrid,
                };
                if self.results.is_some() {
                    self.search(cx, out);
                }
            }
            Action::Search => self.search(cx, out),
            Action::Searched { request, .. } if request != self.search_request => {}
            Action::Searched { result, .. } => {
                self.searching = false;
                self.hit = 0;
                let was_cut = matches!(&self.results, Some((_, Ok(r))) if r.truncated);
                if result.as_ref().is_ok_and(|r| r.truncated) && !was_cut {
                    cx.notify(Level::Info, "The query was longer than the model takes and was cut there.");
                }
                self.results = Some((self.asked.clone(), result));
                if std::mem::take(&mut self.retype) {
                    self.typed(out);
                }
            }
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom => {
                let (n, cur) = match self.focus {
                    KbFocus::Results => (self.hits().len(), self.hit),
                    _ => (self.collections().len(), self.selected),
                };
                let (n, cur) = (n as i64, cur as i64);
                let next = match action {
                    Action::ScrollUp => cur - 1,
                    Action::ScrollDown => cur + 1,
                    Action::PageUp => cur - 5,
                    Action::PageDown => cur + 5,
                    Action::Top => 0,
                    _ => n - 1,
                }
                .clamp(0, (n - 1).max(0)) as usize;
                if self.focus == KbFocus::Results {
                    self.hit = next;
                } else if next != self.selected {
                    self.selected = next;
                    // Results belong to the collection they were searched in.
                    self.results = None;
                }
            }
            Action::SwitchKbFocus => {
                self.focus = match self.focus {
                    KbFocus::List if !self.hits().is_empty() => KbFocus::Results,
                    _ => KbFocus::List,
                }
            }
            Action::OpenHit => match self.focus {
                KbFocus::Results if !self.hits().is_empty() => *cx.overlay = Some(Overlay::Chunk { scroll: 0 }),
                _ => self.update(Action::FocusSearch, cx, out),
            },
            Action::AddToCollection => match self.current() {
                Some(c) => {
                    self.add_target = Some(c.name.clone());
                    *cx.prompt = Some(Prompt::new(PromptKind::KbAdd, ""));
                    *cx.overlay = Some(Overlay::Prompt);
                }
                None => cx.notify(Level::Info, "There is no collection to add to; `lathe kb create NAME --model DIR` makes one."),
            },
            Action::SyncCollection => match (self.current(), &self.ingest) {
                (_, Some((_, busy, _))) => cx.notify(Level::Info, format!("An ingest into {busy} is running; wait for it or cancel it from the status bar.")),
                (Some(c), None) if c.sources.is_empty() => {
                    let msg = format!("{} has no sources yet; {} adds a file, folder or glob.", c.name, key(cx, Action::AddToCollection));
                    cx.notify(Level::Info, msg)
                }
                (Some(c), None) => out.push(Command::IngestCollection { name: c.name.clone(), paths: Vec::new() }),
                (None, None) => {}
            },
            Action::DropCollection => {
                if let Some(c) = self.current() {
                    self.drop_target = Some(c.name.clone());
                    *cx.overlay = Some(Overlay::ConfirmDropCollection);
                }
            }
            Action::IngestProgress { job, progress } => {
                if let Some((j, _, p)) = &mut self.ingest {
                    if *j == job {
                        *p = Some(progress);
                    }
                }
            }
            Action::Ingested { job, result } => {
                let name = match &self.ingest {
                    Some((j, name, _)) if *j == job => name.clone(),
                    _ => String::new(),
                };
                self.ingest = None;
                match result {
                    Ok(r) => {
                        let mut msg = format!("{name}: {}", crate::service::knowledge::report_line(&r));
                        if let Some(s) = r.skipped.first() {
                            msg.push_str(&format!(" (first skipped: {}: {})", s.path, s.reason));
                        }
                        cx.notify(Level::Info, msg);
                    }
                    Err(e) => cx.notify(Level::Error, e),
                }
                out.push(self.refresh());
            }
            other => debug_assert!(false, "the Knowledge pane got {other:?}"),
        }
    }

    /// An ingest into collection `name` (from the prompt, a sync or another client) got its job.
    pub fn ingest_started(&mut self, job: JobId, name: &str) {
        self.ingest = Some((job, name.to_string(), None));
    }

    fn search(&mut self, cx: &mut Ctx, out: &mut Vec<Command>) {
        if self.query_text().trim().is_empty() {
            cx.notify(Level::Info, "Type what you are looking for first.");
            return;
        }
        self.send_search(out);
    }

    /// The search box's text changed: its results follow, one search in flight at a time (the
    /// newest text is searched when the one on its way answers).
    pub fn typed(&mut self, out: &mut Vec<Command>) {
        if self.query_text().trim().is_empty() {
            self.results = None;
            self.retype = false;
        } else if self.searching {
            self.retype = true;
        } else {
            self.send_search(out);
        }
    }

    fn send_search(&mut self, out: &mut Vec<Command>) {
        let Some(collection) = self.current().map(|c| c.name.clone()) else { return };
        let query = self.query_text();
        self.search_request += 1;
        self.searching = true;
        // This search has the newest text: nothing waits behind it.
        self.retype = false;
        self.asked = query.clone();
        let req = SearchRequest { collection, query, mode: self.mode, k: RESULTS, path: None, model: None };
        out.push(Command::SearchCollection { request: self.search_request, req });
    }

    /// The dropped collection after a yes (the answer lists the collections again).
    pub fn confirm_drop(&mut self, out: &mut Vec<Command>) {
        if let Some(name) = self.drop_target.take() {
            self.results = None;
            self.request += 1;
            out.push(Command::DropCollection { name, request: self.request });
        }
    }

    /// The path the prompt asked for, added to its collection.
    pub fn submit_add(&mut self, path: String) -> Option<Command> {
        Some(Command::IngestCollection { name: self.add_target.take()?, paths: vec![path] })
    }
}
