//! Key bindings as data: the shipped keymap.toml, overlaid by the user's `[keys.MODE]` tables,
//! turned into a lookup from (mode, key) to `Action`. The help overlay is generated from the same
//! table, so it cannot drift from what the keys do.

use std::collections::BTreeMap;
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Serialize;

use super::action::{Action, KeyPress, TextKey};

pub const SHIPPED_KEYMAP: &str = include_str!("keymap.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Mode {
    Global,
    Chat,
    Sql,
    Grid,
    Viewer,
    Prompt,
    Help,
    Confirm,
    Training,
    Loss,
    Runs,
    Models,
    ChatList,
    Form,
    Knowledge,
    KbSearch,
}

impl Mode {
    /// Modes whose focus is a text input: plain characters are typed there, not obeyed.
    pub fn is_text_input(self) -> bool {
        matches!(self, Mode::Chat | Mode::Sql | Mode::Prompt | Mode::Form | Mode::KbSearch)
    }

    pub const ALL: [Mode; 16] = [
        Mode::Global,
        Mode::Training,
        Mode::Loss,
        Mode::Chat,
        Mode::Sql,
        Mode::Grid,
        Mode::Viewer,
        Mode::Runs,
        Mode::Models,
        Mode::Knowledge,
        Mode::KbSearch,
        Mode::ChatList,
        Mode::Form,
        Mode::Prompt,
        Mode::Help,
        Mode::Confirm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Global => "global",
            Mode::Chat => "chat",
            Mode::Sql => "sql",
            Mode::Grid => "grid",
            Mode::Viewer => "viewer",
            Mode::Prompt => "prompt",
            Mode::Help => "help",
            Mode::Confirm => "confirm",
            Mode::Training => "training",
            Mode::Loss => "loss",
            Mode::Runs => "runs",
            Mode::Models => "models",
            Mode::ChatList => "chat_list",
            Mode::Form => "form",
            Mode::Knowledge => "knowledge",
            Mode::KbSearch => "kb_search",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Mode::Global => "Everywhere",
            Mode::Chat => "In the chat box",
            Mode::Sql => "In the SQL editor",
            Mode::Grid => "In the results grid",
            Mode::Viewer => "In the row viewer",
            Mode::Prompt => "When asked for a path",
            Mode::Help => "In this help",
            Mode::Confirm => "When asked yes/no",
            Mode::Training => "In the Training pane",
            Mode::Loss => "In the Loss pane",
            Mode::Runs => "In the Runs pane",
            Mode::Models => "In the Models pane",
            Mode::ChatList => "In the list of saved conversations",
            Mode::Form => "In the new-run form",
            Mode::Knowledge => "In the Knowledge pane",
            Mode::KbSearch => "In the knowledge search box",
        }
    }

    fn from_name(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A key with its modifiers, normalised so that what the terminal sends matches what the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeySpec {
    code: KeyCodeOrd,
    ctrl: bool,
    alt: bool,
    shift: bool,
}

/// KeyCode without the variants lathe never binds, and with an order for stable help output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyCodeOrd {
    Char(char),
    F(u8),
    Named(&'static str),
}

const NAMED: &[(&str, KeyCode)] = &[
    ("tab", KeyCode::Tab),
    ("backtab", KeyCode::BackTab),
    ("enter", KeyCode::Enter),
    ("esc", KeyCode::Esc),
    ("backspace", KeyCode::Backspace),
    ("delete", KeyCode::Delete),
    ("insert", KeyCode::Insert),
    ("up", KeyCode::Up),
    ("down", KeyCode::Down),
    ("left", KeyCode::Left),
    ("right", KeyCode::Right),
    ("home", KeyCode::Home),
    ("end", KeyCode::End),
    ("pageup", KeyCode::PageUp),
    ("pagedown", KeyCode::PageDown),
];

impl KeySpec {
    pub fn parse(s: &str) -> Result<KeySpec, String> {
        let lower = s.trim();
        let mut parts: Vec<&str> = lower.split('+').collect();
        // "ctrl++" or "+" means the plus key itself.
        if lower.ends_with("++") || lower == "+" {
            parts.retain(|p| !p.is_empty());
            parts.push("+");
        }
        let key = parts.pop().filter(|k| !k.is_empty()).ok_or_else(|| format!("empty key in {s:?}"))?;
        let (mut ctrl, mut alt, mut shift) = (false, false, false);
        for m in parts {
            match m.to_ascii_lowercase().as_str() {
                "ctrl" | "control" => ctrl = true,
                "alt" | "meta" => alt = true,
                "shift" => shift = true,
                other => return Err(format!("unknown modifier {other:?} in {s:?}")),
            }
        }
        let code = if key.chars().count() == 1 {
            KeyCodeOrd::Char(key.chars().next().unwrap())
        } else {
            let k = key.to_ascii_lowercase();
            if k == "space" {
                KeyCodeOrd::Char(' ')
            } else if let Some(n) = k.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
                if !(1..=12).contains(&n) {
                    return Err(format!("no key f{n}"));
                }
                KeyCodeOrd::F(n)
            } else if let Some((name, _)) = NAMED.iter().find(|(n, _)| *n == k) {
                KeyCodeOrd::Named(name)
            } else {
                return Err(format!("unknown key {key:?} in {s:?}"));
            }
        };
        Ok(KeySpec { code, ctrl, alt, shift }.normalised())
    }

    pub fn from_event(ev: &KeyEvent) -> Option<KeySpec> {
        let code = match ev.code {
            KeyCode::Char(c) => KeyCodeOrd::Char(c),
            KeyCode::F(n) => KeyCodeOrd::F(n),
            other => KeyCodeOrd::Named(NAMED.iter().find(|(_, c)| *c == other)?.0),
        };
        let m = ev.modifiers;
        Some(
            KeySpec {
                code,
                ctrl: m.contains(KeyModifiers::CONTROL),
                alt: m.contains(KeyModifiers::ALT),
                shift: m.contains(KeyModifiers::SHIFT),
            }
            .normalised(),
        )
    }

    /// Shift is part of a character ('?' is shift+/ on most layouts), and shift+tab is BackTab.
    fn normalised(mut self) -> KeySpec {
        match self.code {
            KeyCodeOrd::Char(c) => {
                if self.shift && c.is_ascii_lowercase() {
                    self.code = KeyCodeOrd::Char(c.to_ascii_uppercase());
                }
                if self.ctrl && c.is_ascii_uppercase() {
                    self.code = KeyCodeOrd::Char(c.to_ascii_lowercase());
                }
                self.shift = false;
            }
            KeyCodeOrd::Named("tab") if self.shift => {
                self.code = KeyCodeOrd::Named("backtab");
                self.shift = false;
            }
            KeyCodeOrd::Named("backtab") => self.shift = false,
            _ => {}
        }
        self
    }

    /// A plain character, which a text input takes as typing.
    pub fn is_text(&self) -> bool {
        matches!(self.code, KeyCodeOrd::Char(_)) && !self.ctrl && !self.alt
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("Ctrl-")?;
        }
        if self.alt {
            f.write_str("Alt-")?;
        }
        if self.shift {
            f.write_str("Shift-")?;
        }
        match self.code {
            KeyCodeOrd::Char(' ') => f.write_str("Space"),
            KeyCodeOrd::Char(c) if self.ctrl || self.alt => write!(f, "{}", c.to_ascii_uppercase()),
            KeyCodeOrd::Char(c) => write!(f, "{c}"),
            KeyCodeOrd::F(n) => write!(f, "F{n}"),
            KeyCodeOrd::Named("backtab") => f.write_str("Shift-Tab"),
            KeyCodeOrd::Named("pageup") => f.write_str("PgUp"),
            KeyCodeOrd::Named("pagedown") => f.write_str("PgDn"),
            KeyCodeOrd::Named(n) => {
                let mut cs = n.chars();
                let first = cs.next().unwrap().to_ascii_uppercase();
                write!(f, "{first}{}", cs.as_str())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Keymap {
    modes: BTreeMap<Mode, BTreeMap<KeySpec, Action>>,
    /// Where each key was listed: the shipped file's order, then the user's. A hint names an
    /// action's first-listed key (Esc, not q, closes a viewer).
    listed: BTreeMap<(Mode, KeySpec), usize>,
}

impl Keymap {
    /// The shipped keymap with the user's overrides; problems in the overrides are returned as
    /// sentences and the offending entries skipped.
    pub fn load(overrides: &BTreeMap<String, BTreeMap<String, String>>) -> (Keymap, Vec<String>) {
        let shipped: BTreeMap<String, BTreeMap<String, String>> =
            toml::from_str(SHIPPED_KEYMAP).expect("shipped keymap parses");
        let mut km = Keymap { modes: BTreeMap::new(), listed: BTreeMap::new() };
        km.listed = listing_order(SHIPPED_KEYMAP).into_iter().enumerate().map(|(i, k)| (k, i)).collect();
        let errs = km.apply(&shipped);
        assert!(errs.is_empty(), "shipped keymap: {errs:?}");
        let problems = km
            .apply(overrides)
            .into_iter()
            .map(|e| format!("Key binding ignored: {e}; fix [keys] in config.toml."))
            .collect();
        (km, problems)
    }

    fn apply(&mut self, tables: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
        let mut errs = Vec::new();
        for (mode_name, table) in tables {
            let Some(mode) = Mode::from_name(mode_name) else {
                errs.push(format!("no mode named {mode_name:?} (use global, chat, sql, grid, viewer, prompt, help or confirm)"));
                continue;
            };
            for (key, action) in table {
                let spec = match KeySpec::parse(key) {
                    Ok(s) => s,
                    Err(e) => {
                        errs.push(e);
                        continue;
                    }
                };
                let map = self.modes.entry(mode).or_default();
                if action.trim() == "none" {
                    map.remove(&spec);
                } else if let Some(a) = Action::parse_binding(action) {
                    map.insert(spec, a);
                    let next = self.listed.len();
                    self.listed.entry((mode, spec)).or_insert(next);
                } else {
                    errs.push(format!("{key:?} = {action:?} names no action"));
                }
            }
        }
        errs
    }

    /// What a key press does in a mode. `text_input` is true while a text box has focus: plain
    /// characters are then typing, not commands.
    pub fn resolve(&self, mode: Mode, text_input: bool, ev: &KeyEvent) -> Option<Action> {
        let spec = KeySpec::from_event(ev)?;
        let lookup = |m: Mode| self.modes.get(&m).and_then(|t| t.get(&spec)).cloned();
        match mode {
            Mode::Help | Mode::Confirm | Mode::Viewer => lookup(mode),
            // A path prompt is a text box that sees only its own keys.
            Mode::Prompt | Mode::Form => lookup(mode),
            Mode::Chat
            | Mode::Sql
            | Mode::Grid
            | Mode::Global
            | Mode::Training
            | Mode::Loss
            | Mode::Runs
            | Mode::Models
            | Mode::ChatList
            | Mode::Knowledge
            | Mode::KbSearch => {
                if let Some(a) = lookup(mode) {
                    return Some(a);
                }
                if text_input && spec.is_text() {
                    return None;
                }
                lookup(Mode::Global)
            }
        }
    }

    /// Every binding of a mode, grouped by action in a stable order, for the help overlay.
    pub fn describe(&self, mode: Mode) -> Vec<(String, String)> {
        let mut by_action: Vec<(Action, Vec<KeySpec>)> = Vec::new();
        for (spec, action) in self.modes.get(&mode).into_iter().flatten() {
            match by_action.iter_mut().find(|(a, _)| a == action) {
                Some((_, keys)) => keys.push(*spec),
                None => by_action.push((action.clone(), vec![*spec])),
            }
        }
        by_action.sort_by_key(|(a, _)| action_order(a));
        by_action
            .into_iter()
            .map(|(a, mut keys)| {
                // Plain keys first: they are what people type.
                keys.sort_by_key(|k| (k.ctrl || k.alt || k.shift, *k));
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                (keys.join(" "), a.describe())
            })
            .collect()
    }

    /// The key the status bar and the confirm dialog show for an action: a plain key when there
    /// is one, and never a plain character while a text input has focus (it would be typed).
    pub fn key_for(&self, mode: Mode, action: &Action, text_input: bool) -> Option<String> {
        self.bound(mode, action, text_input).min_by_key(|k| (k.ctrl || k.alt || k.shift, **k)).map(|k| k.to_string())
    }

    /// Every key of an action in a mode, as hints name them: plain keys first, each group in the
    /// order the keymap lists them, and no plain character where the mode is a text input.
    pub fn keys_for(&self, mode: Mode, action: &Action) -> Vec<String> {
        let mut keys: Vec<&KeySpec> = self.bound(mode, action, mode.is_text_input()).collect();
        keys.sort_by_key(|k| (k.ctrl || k.alt || k.shift, self.listed.get(&(mode, **k)).copied().unwrap_or(usize::MAX), **k));
        keys.iter().map(|k| k.to_string()).collect()
    }

    /// The key a hint on screen names for an action in a mode; a binding removed in the config
    /// reads "(unbound)", so a hint never names a key that does nothing.
    pub fn hint(&self, mode: Mode, action: &Action) -> String {
        self.keys_for(mode, action).into_iter().next().unwrap_or_else(|| "(unbound)".into())
    }

    fn bound<'a>(&'a self, mode: Mode, action: &'a Action, text_input: bool) -> impl Iterator<Item = &'a KeySpec> {
        self.modes.get(&mode).into_iter().flatten().filter(move |(k, a)| *a == action && !(text_input && k.is_text())).map(|(k, _)| k)
    }
}

/// The (mode, key) of each binding in a keymap file, in the order the file lists them.
fn listing_order(text: &str) -> Vec<(Mode, KeySpec)> {
    let mut mode = None;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            mode = Mode::from_name(name);
        } else if let (Some(m), Some(rest)) = (mode, line.strip_prefix('"')) {
            if let Some(spec) = rest.find("\" =").and_then(|end| KeySpec::parse(&rest[..end]).ok()) {
                out.push((m, spec));
            }
        }
    }
    out
}

fn action_order(a: &Action) -> (u8, usize) {
    match a {
        Action::Focus(p) => (3, p.index()),
        Action::FocusNext => (1, 0),
        Action::FocusPrev => (2, 0),
        Action::ToggleHelp => (0, 0),
        Action::ToggleZoom => (4, 0),
        Action::NextTheme => (5, 0),
        Action::Send | Action::RunQuery => (6, 0),
        Action::Newline | Action::CancelQuery => (7, 0),
        Action::SwitchDataFocus | Action::HistoryPrev | Action::HistoryNext | Action::ViewRow => (8, 0),
        Action::OpenImport | Action::OpenExport | Action::Complete | Action::PreviewViews => (8, 3),
        Action::ScrollUp | Action::ScrollDown | Action::PageUp | Action::PageDown => (8, 1),
        Action::ScrollLeft | Action::ScrollRight | Action::PrevReport | Action::NextReport | Action::Top | Action::Bottom => (8, 2),
        Action::Confirm => (9, 0),
        Action::Deny => (10, 0),
        Action::Close => (11, 0),
        Action::Quit => (12, 0),
        _ => (13, 0),
    }
}

/// A crossterm key as the plain-data `KeyPress` text inputs take.
pub fn key_press(ev: &KeyEvent) -> KeyPress {
    let key = match ev.code {
        KeyCode::Char(c) => TextKey::Char(c),
        KeyCode::Enter => TextKey::Enter,
        KeyCode::Backspace => TextKey::Backspace,
        KeyCode::Delete => TextKey::Delete,
        KeyCode::Left => TextKey::Left,
        KeyCode::Right => TextKey::Right,
        KeyCode::Up => TextKey::Up,
        KeyCode::Down => TextKey::Down,
        KeyCode::Home => TextKey::Home,
        KeyCode::End => TextKey::End,
        KeyCode::PageUp => TextKey::PageUp,
        KeyCode::PageDown => TextKey::PageDown,
        KeyCode::Tab => TextKey::Tab,
        _ => TextKey::Other,
    };
    let m = ev.modifiers;
    KeyPress {
        key,
        ctrl: m.contains(KeyModifiers::CONTROL),
        alt: m.contains(KeyModifiers::ALT),
        shift: m.contains(KeyModifiers::SHIFT),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hints_name_the_first_listed_key() {
        let (km, _) = Keymap::load(&BTreeMap::new());
        assert_eq!(km.hint(Mode::Viewer, &Action::Close), "Esc");
        assert_eq!(km.hint(Mode::Help, &Action::Close), "Esc");
        assert_eq!(km.hint(Mode::Loss, &Action::ZoomIn), "+");
        assert_eq!(km.keys_for(Mode::Sql, &Action::RunQuery), ["F5", "Ctrl-R", "Ctrl-Enter"]);
        // A text input never names a plain character for its own keys.
        assert_eq!(km.keys_for(Mode::Chat, &Action::Newline), ["Alt-Enter", "Ctrl-J"]);
        let mut o: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        o.entry("viewer".into()).or_default().insert("esc".into(), "none".into());
        o.entry("viewer".into()).or_default().insert("x".into(), "close".into());
        let (km, problems) = Keymap::load(&o);
        assert!(problems.is_empty());
        assert_eq!(km.hint(Mode::Viewer, &Action::Close), "Enter");
        assert_eq!(km.keys_for(Mode::Viewer, &Action::Close), ["Enter", "q", "x"]);
        assert_eq!(km.hint(Mode::Viewer, &Action::Top), "(unbound)");
    }

    use super::*;
    use crate::app::action::PaneId;

    fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn the_shipped_keymap_parses_and_covers_every_pane() {
        let (km, problems) = Keymap::load(&BTreeMap::new());
        assert!(problems.is_empty());
        for p in PaneId::ALL {
            let digit = char::from_digit(p.index() as u32 + 1, 10).unwrap();
            let ev = key(KeyCode::Char(digit), KeyModifiers::NONE);
            assert_eq!(km.resolve(Mode::Global, false, &ev), Some(Action::Focus(p)));
        }
    }

    #[test]
    fn terminals_spellings_of_the_same_key_match() {
        let (km, _) = Keymap::load(&BTreeMap::new());
        // '?' arrives with or without SHIFT depending on the terminal.
        for m in [KeyModifiers::NONE, KeyModifiers::SHIFT] {
            assert_eq!(km.resolve(Mode::Global, false, &key(KeyCode::Char('?'), m)), Some(Action::ToggleHelp));
        }
        assert_eq!(
            km.resolve(Mode::Global, false, &key(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Some(Action::FocusPrev)
        );
        assert_eq!(
            km.resolve(Mode::Global, false, &key(KeyCode::Char('C'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
    }

    #[test]
    fn text_inputs_take_plain_characters() {
        let (km, _) = Keymap::load(&BTreeMap::new());
        let q = key(KeyCode::Char('q'), KeyModifiers::NONE);
        assert_eq!(km.resolve(Mode::Chat, true, &q), None);
        assert_eq!(km.resolve(Mode::Chat, true, &key(KeyCode::Char('3'), KeyModifiers::NONE)), None);
        assert_eq!(km.resolve(Mode::Chat, true, &key(KeyCode::Tab, KeyModifiers::NONE)), Some(Action::FocusNext));
        assert_eq!(km.resolve(Mode::Chat, true, &key(KeyCode::Enter, KeyModifiers::NONE)), Some(Action::Send));
        assert_eq!(km.resolve(Mode::Chat, true, &key(KeyCode::Enter, KeyModifiers::ALT)), Some(Action::Newline));
        assert_eq!(km.resolve(Mode::Chat, true, &key(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
    }

    #[test]
    fn overlays_only_see_their_own_table() {
        let (km, _) = Keymap::load(&BTreeMap::new());
        let three = key(KeyCode::Char('3'), KeyModifiers::NONE);
        assert_eq!(km.resolve(Mode::Help, false, &three), None);
        assert_eq!(km.resolve(Mode::Confirm, false, &key(KeyCode::Char('y'), KeyModifiers::NONE)), Some(Action::Confirm));
    }

    #[test]
    fn user_overrides_rebind_unbind_and_report_mistakes() {
        let mut o: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        o.entry("global".into()).or_default().insert("x".into(), "quit".into());
        o.entry("global".into()).or_default().insert("q".into(), "none".into());
        o.entry("global".into()).or_default().insert("ctrl+shift+nope".into(), "quit".into());
        o.entry("global".into()).or_default().insert("w".into(), "fly".into());
        o.entry("nowhere".into()).or_default().insert("a".into(), "quit".into());
        let (km, problems) = Keymap::load(&o);
        assert_eq!(km.resolve(Mode::Global, false, &key(KeyCode::Char('x'), KeyModifiers::NONE)), Some(Action::Quit));
        assert_eq!(km.resolve(Mode::Global, false, &key(KeyCode::Char('q'), KeyModifiers::NONE)), None);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| p.ends_with("config.toml.")));
    }

    #[test]
    fn help_rows_group_keys_by_action() {
        let (km, _) = Keymap::load(&BTreeMap::new());
        let rows = km.describe(Mode::Global);
        assert_eq!(rows[0], ("? F1".to_string(), "this help".to_string()));
        assert!(rows.iter().any(|(k, d)| k == "q Ctrl-C" && d.starts_with("quit")), "{rows:?}");
        assert_eq!(KeySpec::parse("shift+tab").unwrap().to_string(), "Shift-Tab");
        assert!(KeySpec::parse("f13").is_err());
        assert!(KeySpec::parse("hyper+a").is_err());
        // Left/Right page a viewer's quantization reports (their own actions), a grid's columns.
        let viewer = km.describe(Mode::Viewer);
        assert!(viewer.iter().any(|(k, d)| k.contains("Right") && d == "next quantization report"), "{viewer:?}");
        assert!(km.describe(Mode::Grid).iter().any(|(_, d)| d == "column right"));
    }
}
