//! The Data pane's state and its part of the reducer: the SQL editor, query history, and the
//! results grid, which holds only a few pages of a result of any size and asks for more as the
//! selection moves.

use std::collections::{BTreeMap, BTreeSet};

use tui_textarea::TextArea;

use super::action::{Action, Command, KeyPress, PaneId, TextKey};
use super::shell::{Ctx, Level, Overlay, Prompt, PromptKind};
use crate::engine::data::paging::Shape;
use crate::engine::data::worker::{DataEvent, TableSchema, ViewPreviews, PAGE};


/// Pages kept in memory; farther ones are dropped and fetched again when needed.
pub const MAX_PAGES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFocus {
    Editor,
    Grid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultState {
    pub id: u64,
    pub sql: String,
    pub shape: Option<Shape>,
    pub total: Option<u64>,
    pub pages: BTreeMap<u64, Vec<Vec<String>>>,
    pub pending: BTreeSet<u64>,
    pub running: bool,
    pub error: Option<String>,
    pub elapsed_ms: Option<f64>,
    /// The selected cell.
    pub row: u64,
    pub col: usize,
}

impl ResultState {
    /// Rows known so far: the total once counted, else what the first page showed.
    pub fn known_rows(&self) -> u64 {
        self.total.unwrap_or_else(|| self.pages.get(&0).map(|p| p.len() as u64).unwrap_or(0))
    }

    pub fn row_cells(&self, row: u64) -> Option<&Vec<String>> {
        let off = row / PAGE * PAGE;
        self.pages.get(&off).and_then(|p| p.get((row - off) as usize))
    }
}

const KEYWORDS: &[&str] = &[
    "select", "from", "where", "group", "by", "order", "having", "limit", "offset", "join", "left", "right",
    "inner", "outer", "full", "cross", "on", "using", "as", "and", "or", "not", "in", "is", "null", "like",
    "ilike", "between", "case", "when", "then", "else", "end", "distinct", "union", "all", "except",
    "intersect", "with", "asc", "desc", "count", "sum", "avg", "min", "max", "cast", "insert", "into",
    "values", "update", "set", "delete", "create", "table", "view", "drop", "alter", "describe", "summarize",
    "pragma", "copy", "to", "true", "false", "length", "lower", "upper", "unnest", "struct_pack", "list",
    "read_csv", "read_parquet", "read_json", "sample", "qualify", "pivot", "unpivot",
];

pub struct DataState {
    pub editor: TextArea<'static>,
    pub focus: DataFocus,
    pub history: Vec<String>,
    /// Where Ctrl-P/Ctrl-N are in the history; None while editing new text.
    pub history_pos: Option<usize>,
    pub schema: TableSchema,
    pub result: Option<ResultState>,
    pub next_id: u64,
    /// The row viewer's scroll, when it is open.
    pub viewer_scroll: u16,
    /// Candidates of the last completion that matched several names.
    pub completions: Vec<String>,
    /// The views and their examples, once the engine has sent them.
    pub views_preview: Option<ViewPreviews>,
}


impl Default for DataState {
    fn default() -> Self {
        DataState {
            editor: TextArea::default(),
            focus: DataFocus::Editor,
            history: Vec::new(),
            history_pos: None,
            schema: Vec::new(),
            result: None,
            next_id: 1,
            viewer_scroll: 0,
            completions: Vec::new(),
            views_preview: None,
        }
    }
}

impl DataState {
    pub fn running(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.running)
    }

    fn set_editor(&mut self, text: &str) {
        let mut ed = TextArea::new(text.lines().map(str::to_string).collect());
        ed.move_cursor(tui_textarea::CursorMove::Bottom);
        ed.move_cursor(tui_textarea::CursorMove::End);
        self.editor = ed;
    }

    /// The statement an empty editor shows (greyed) and runs when asked to: the first rows of the
    /// demo dataset, else of the first table.
    pub fn example(&self) -> Option<String> {
        let tables = || self.schema.iter().map(|(t, _)| t);
        let table = tables().find(|t| *t == "instruct").or_else(|| tables().next())?;
        let plain = table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !table.starts_with(|c: char| c.is_ascii_digit());
        let name = if plain { table.clone() } else { crate::engine::data::import::quote_ident(table) };
        Some(format!("SELECT * FROM {name} LIMIT 10"))
    }

    /// Runs the editor's text (an empty editor runs its example, which then stays in it); returns
    /// the command or a sentence for the status bar.
    pub fn run(&mut self) -> Result<Command, String> {
        let mut sql = self.editor.lines().join("\n").trim().to_string();
        if sql.is_empty() {
            sql = self.example().ok_or("Nothing to run: the catalog has no tables yet; type a SQL statement, or import a file with `lathe data import`.")?;
            self.set_editor(&sql);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.history.retain(|h| *h != sql);
        self.history.push(sql.clone());
        self.history_pos = None;
        self.result = Some(ResultState {
            id,
            sql: sql.clone(),
            shape: None,
            total: None,
            pages: BTreeMap::new(),
            pending: BTreeSet::new(),
            running: true,
            error: None,
            elapsed_ms: None,
            row: 0,
            col: 0,
        });
        Ok(Command::RunQuery { id, sql })
    }

    /// Completes the word before the cursor from SQL keywords, table names and column names
    /// (only that table's columns after `table.`). Extends to the longest common prefix; when
    /// several names remain, they are kept in `completions` for the pane to show.
    pub fn complete(&mut self) {
        let (row, col) = self.editor.cursor();
        let line = self.editor.lines().get(row).cloned().unwrap_or_default();
        let before: Vec<char> = line.chars().take(col).collect();
        let start = before
            .iter()
            .rposition(|c| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let word: String = before[start..].iter().collect();
        let (table, stem) = match word.rsplit_once('.') {
            Some((t, s)) => (Some(t.to_string()), s.to_string()),
            None => (None, word.clone()),
        };
        if stem.is_empty() && table.is_none() {
            self.completions.clear();
            return;
        }
        let lower = stem.to_lowercase();
        let mut names: Vec<String> = match &table {
            Some(t) => self
                .schema
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(t))
                .flat_map(|(_, cols)| cols.iter().map(|(c, _)| c.clone()))
                .collect(),
            None => {
                let upper = stem.chars().next().is_some_and(|c| c.is_uppercase());
                let kw = KEYWORDS.iter().map(|k| if upper { k.to_uppercase() } else { k.to_string() });
                let tables = self.schema.iter().map(|(t, _)| t.clone());
                let cols = self.schema.iter().flat_map(|(_, cols)| cols.iter().map(|(c, _)| c.clone()));
                kw.chain(tables).chain(cols).collect()
            }
        };
        names.retain(|n| n.to_lowercase().starts_with(&lower));
        names.sort();
        names.dedup();
        let Some(common) = crate::engine::data::import::common_prefix(&names) else {
            self.completions.clear();
            return;
        };
        if common.chars().count() > stem.chars().count() {
            let rest: String = common.chars().skip(stem.chars().count()).collect();
            self.editor.insert_str(rest);
        }
        self.completions = if names.len() > 1 { names } else { Vec::new() };
    }

    pub fn recall(&mut self, older: bool) {
        if self.history.is_empty() {
            return;
        }
        let last = self.history.len() - 1;
        let pos = match (self.history_pos, older) {
            (None, true) => Some(last),
            (None, false) => None,
            (Some(p), true) => Some(p.saturating_sub(1)),
            (Some(p), false) if p >= last => None,
            (Some(p), false) => Some(p + 1),
        };
        self.history_pos = pos;
        let text = pos.map(|p| self.history[p].clone()).unwrap_or_default();
        self.set_editor(&text);
    }

    /// Moves the grid's selection; returns the page fetch it needs, if any.
    pub fn move_selection(&mut self, action: &Action, page_rows: u64) -> Option<Command> {
        let r = self.result.as_mut()?;
        let rows = r.known_rows();
        let cols = r.shape.as_ref().map(|s| s.columns.len()).unwrap_or(0);
        let last = rows.saturating_sub(1);
        match action {
            Action::ScrollUp => r.row = r.row.saturating_sub(1),
            Action::ScrollDown => r.row = (r.row + 1).min(last),
            Action::PageUp => r.row = r.row.saturating_sub(page_rows),
            Action::PageDown => r.row = (r.row + page_rows).min(last),
            Action::Top => r.row = 0,
            Action::Bottom => r.row = last,
            Action::ScrollLeft => r.col = r.col.saturating_sub(1),
            Action::ScrollRight => r.col = (r.col + 1).min(cols.saturating_sub(1)),
            other => debug_assert!(false, "not a grid movement: {other:?}"),
        }
        let need = r.row / PAGE * PAGE;
        if r.pages.contains_key(&need) || r.pending.contains(&need) || rows == 0 {
            return None;
        }
        r.pending.insert(need);
        Some(Command::FetchPage { id: r.id, sql: r.sql.clone(), offset: need })
    }

    /// Folds a data engine event in; results of older queries are dropped.
    pub fn apply(&mut self, ev: &DataEvent) {
        let current = |id: &u64, r: &Option<ResultState>| r.as_ref().is_some_and(|r| r.id == *id);
        match ev {
            DataEvent::Schema(s) => self.schema = s.clone(),
            DataEvent::ViewPreview(v) => self.views_preview = Some(v.clone()),
            DataEvent::History(h) => {
                // Keep what was run this session after what the catalog remembers.
                let mine = std::mem::take(&mut self.history);
                self.history = h.clone();
                for q in mine {
                    self.history.retain(|x| *x != q);
                    self.history.push(q);
                }
            }
            DataEvent::QueryShape { id, shape, rows } if current(id, &self.result) => {
                let r = self.result.as_mut().unwrap();
                r.shape = Some(shape.clone());
                r.pages.insert(0, rows.clone());
            }
            DataEvent::QueryCount { id, total, elapsed_ms } if current(id, &self.result) => {
                let r = self.result.as_mut().unwrap();
                r.total = Some(*total);
                r.elapsed_ms = Some(*elapsed_ms);
                r.running = false;
            }
            DataEvent::QueryPage { id, offset, rows } if current(id, &self.result) => {
                let r = self.result.as_mut().unwrap();
                r.pending.remove(offset);
                r.pages.insert(*offset, rows.clone());
                // Keep the pages nearest the selection: memory stays flat however far one scrolls.
                while r.pages.len() > MAX_PAGES {
                    let sel = r.row;
                    let far = *r.pages.keys().max_by_key(|o| o.abs_diff(sel)).unwrap();
                    r.pages.remove(&far);
                }
            }
            DataEvent::QueryFailed { id, error } if current(id, &self.result) => {
                let r = self.result.as_mut().unwrap();
                r.error = Some(error.clone());
                r.running = false;
                // A failed page fetch leaves what was shown; a failed query shows the error.
                r.pending.clear();
            }
            // Answers to a query that is no longer shown.
            DataEvent::QueryShape { .. } | DataEvent::QueryCount { .. } | DataEvent::QueryPage { .. } | DataEvent::QueryFailed { .. } => {}
            // The shell folds these in (datasets, notices) before the pane sees them.
            DataEvent::Opened { .. } | DataEvent::Datasets(_) | DataEvent::Unavailable(_) | DataEvent::Failed(_) => {}
        }
    }
}

impl DataState {
    /// The Data pane's actions: queries, history, the grid, the row and views viewers, and the
    /// import and export prompts.
    pub fn update(&mut self, action: Action, cx: &mut Ctx, out: &mut Vec<Command>) {
        match action {
            Action::OpenImport => {
                if *cx.focus == PaneId::Data {
                    *cx.prompt = Some(Prompt::new(PromptKind::Import, ""));
                    *cx.overlay = Some(Overlay::Prompt);
                }
            }
            Action::OpenExport => {
                if self.result.as_ref().is_some_and(|r| r.shape.is_some() && !r.running) {
                    *cx.prompt = Some(Prompt::new(PromptKind::Export, "result.csv"));
                    *cx.overlay = Some(Overlay::Prompt);
                } else {
                    cx.notify(Level::Info, "Run a query first: its result is what gets exported.");
                }
            }
            Action::RunQuery => {
                if *cx.focus == PaneId::Data {
                    match self.run() {
                        Ok(cmd) => out.push(cmd),
                        Err(msg) => cx.notify(Level::Info, msg),
                    }
                }
            }
            Action::SwitchDataFocus => {
                self.focus = match self.focus {
                    DataFocus::Editor => DataFocus::Grid,
                    DataFocus::Grid => DataFocus::Editor,
                }
            }
            Action::PreviewViews => {
                self.viewer_scroll = 0;
                self.views_preview = None;
                *cx.overlay = Some(Overlay::Views);
                out.push(Command::PreviewViews);
            }
            Action::HistoryPrev => self.recall(true),
            Action::HistoryNext => self.recall(false),
            Action::ViewRow => {
                if self.result.as_ref().is_some_and(|r| r.row_cells(r.row).is_some()) {
                    self.viewer_scroll = 0;
                    *cx.overlay = Some(Overlay::Row);
                }
            }
            Action::ScrollUp | Action::ScrollDown if cx.overlay.is_some() => {
                let s = &mut self.viewer_scroll;
                *s = if action == Action::ScrollUp { s.saturating_sub(1) } else { s.saturating_add(1) };
            }
            // The row and views viewers scroll a line at a time.
            Action::PageUp | Action::PageDown | Action::ScrollLeft | Action::ScrollRight | Action::Top | Action::Bottom if cx.overlay.is_some() => {}
            Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown | Action::ScrollLeft
            | Action::ScrollRight | Action::Top | Action::Bottom
                if cx.overlay.is_none() =>
            {
                let page = cx.height.saturating_sub(10).max(1) as u64;
                out.extend(self.move_selection(&action, page));
            }
            Action::Text(k) => {
                self.recall(k.key == TextKey::Up);
            }
            other => debug_assert!(false, "the Data pane got {other:?}"),
        }
    }

    /// Up on the editor's first line or Down on its last recalls history, as in a shell.
    pub fn steps_history(&self, k: &KeyPress) -> bool {
        if k.ctrl || k.alt || k.shift {
            return false;
        }
        let (row, _) = self.editor.cursor();
        match k.key {
            TextKey::Up => row == 0,
            TextKey::Down => row + 1 >= self.editor.lines().len() && self.history_pos.is_some(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(total: u64) -> DataState {
        let mut d = DataState::default();
        d.editor.insert_str("select * from t");
        let Ok(Command::RunQuery { id, .. }) = d.run() else { panic!() };
        let rows: Vec<Vec<String>> = (0..PAGE.min(total)).map(|i| vec![i.to_string()]).collect();
        d.apply(&DataEvent::QueryShape { id, shape: Shape { columns: vec!["i".into()], types: vec!["BIGINT".into()] }, rows });
        d.apply(&DataEvent::QueryCount { id, total, elapsed_ms: 3.0 });
        d
    }

    #[test]
    fn running_needs_text_and_records_history() {
        let mut d = DataState::default();
        assert!(d.run().is_err());
        d.editor.insert_str("select 1");
        assert_eq!(d.run(), Ok(Command::RunQuery { id: 1, sql: "select 1".into() }));
        assert!(d.running());
        assert_eq!(d.history, ["select 1"]);
    }

    #[test]
    fn stale_results_are_dropped() {
        let mut d = ready(10);
        d.apply(&DataEvent::QueryFailed { id: 99, error: "old".into() });
        assert!(d.result.as_ref().unwrap().error.is_none());
    }

    #[test]
    fn scrolling_fetches_pages_and_keeps_only_a_few() {
        let mut d = ready(10_000_000);
        assert_eq!(d.move_selection(&Action::ScrollDown, 20), None);
        let cmd = d.move_selection(&Action::Bottom, 20).unwrap();
        let last_page = (10_000_000 - 1) / PAGE * PAGE;
        assert_eq!(cmd, Command::FetchPage { id: 1, sql: "select * from t".into(), offset: last_page });
        // Asking again while it is pending sends nothing.
        assert_eq!(d.move_selection(&Action::ScrollUp, 20), None);
        for k in 0..20u64 {
            let off = k * PAGE * 1000;
            d.result.as_mut().unwrap().row = off;
            d.apply(&DataEvent::QueryPage { id: 1, offset: off, rows: vec![vec![off.to_string()]; PAGE as usize] });
        }
        let r = d.result.as_ref().unwrap();
        assert!(r.pages.len() <= MAX_PAGES);
        assert!(r.pages.contains_key(&(19 * PAGE * 1000)), "the page at the selection was dropped");
    }

    #[test]
    fn selection_stays_inside_the_result() {
        let mut d = ready(3);
        for _ in 0..10 {
            d.move_selection(&Action::ScrollDown, 20);
            d.move_selection(&Action::ScrollRight, 20);
        }
        let r = d.result.as_ref().unwrap();
        assert_eq!((r.row, r.col), (2, 0));
        d.move_selection(&Action::PageUp, 20);
        assert_eq!(d.result.as_ref().unwrap().row, 0);
    }

    #[test]
    fn completion_uses_keywords_tables_and_columns() {
        let mut d = DataState {
            schema: vec![("instruct".into(), vec![("task".into(), "VARCHAR".into()), ("input".into(), "VARCHAR".into())])],
            ..DataState::default()
        };
        d.editor.insert_str("sel");
        d.complete();
        assert_eq!(d.editor.lines(), ["select"]);
        d.editor.insert_str(" * from instr");
        d.complete();
        assert_eq!(d.editor.lines(), ["select * from instruct"]);
        d.editor.insert_str(" where instruct.t");
        d.complete();
        assert_eq!(d.editor.lines(), ["select * from instruct where instruct.task"]);
        d.editor.insert_str(" and in");
        d.complete();
        // "in", "inner", "input", "insert", "instruct", "intersect", "into": several remain.
        assert!(d.completions.contains(&"input".to_string()) && d.completions.contains(&"instruct".to_string()));
        assert!(d.editor.lines()[0].ends_with(" and in"));
        let mut u = DataState::default();
        u.editor.insert_str("SEL");
        u.complete();
        assert_eq!(u.editor.lines(), ["SELECT"]);
    }

    #[test]
    fn an_empty_editor_runs_its_example() {
        let mut d = DataState::default();
        assert!(d.run().unwrap_err().contains("no tables yet"));
        d.apply(&DataEvent::Schema(vec![("chat".into(), vec![]), ("my table".into(), vec![])]));
        assert_eq!(d.example().as_deref(), Some("SELECT * FROM chat LIMIT 10"));
        d.apply(&DataEvent::Schema(vec![("my \"t\"".into(), vec![])]));
        assert_eq!(d.example().as_deref(), Some("SELECT * FROM \"my \"\"t\"\"\" LIMIT 10"));
        d.apply(&DataEvent::Schema(vec![("chat".into(), vec![]), ("instruct".into(), vec![])]));
        let Ok(Command::RunQuery { sql, .. }) = d.run() else { panic!("no query ran") };
        assert_eq!(sql, "SELECT * FROM instruct LIMIT 10");
        assert_eq!(d.editor.lines(), [sql.as_str()], "the example stays in the editor to be edited");
    }

    #[test]
    fn history_recall_walks_back_and_forth() {
        let mut d = DataState::default();
        d.apply(&DataEvent::History(vec!["select 1".into(), "select 2".into()]));
        d.recall(true);
        assert_eq!(d.editor.lines(), ["select 2"]);
        d.recall(true);
        d.recall(true);
        assert_eq!(d.editor.lines(), ["select 1"]);
        d.recall(false);
        assert_eq!(d.editor.lines(), ["select 2"]);
        d.recall(false);
        assert!(d.editor.is_empty());
    }
}
