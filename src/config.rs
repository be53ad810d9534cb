//! Configuration: the TOML file at the XDG config path, then environment, then flags, into one
//! struct. A bad file never stops lathe: its problem is kept in `problems` and shown on screen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file's shape. Every field is optional; unknown keys are reported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The workspace folder.
    pub home: Option<PathBuf>,
    /// A shipped theme name or the path of a theme file.
    pub theme: Option<String>,
    /// How often the System pane samples, in milliseconds.
    pub sample_interval_ms: Option<u64>,
    /// The most frames drawn per second.
    pub max_fps: Option<u32>,
    /// Keymap overrides: `[keys.MODE]` tables of `"key" = "action"` (or "none" to unbind).
    #[serde(default)]
    pub keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the command line says; it wins over everything else.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub home: Option<PathBuf>,
    pub theme: Option<String>,
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub theme: String,
    pub sample_interval: Duration,
    pub max_fps: u32,
    pub keys: BTreeMap<String, BTreeMap<String, String>>,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where themes named by the user are looked for besides the shipped ones.
    pub themes_dir: Option<PathBuf>,
    pub no_color: bool,
    /// Problems found while loading, one sentence each, to show on screen.
    pub problems: Vec<String>,
}

pub const DEFAULT_THEME: &str = "dark";

impl Config {
    /// Loads from the real environment.
    pub fn load(flags: &Flags) -> Config {
        Config::load_with(flags, &|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Loads with an injected environment (tests pass their own).
    pub fn load_with(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Config {
        let config_dir = env("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))
            .map(|d| d.join("lathe"));
        let data_dir = env("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local/share")))
            .unwrap_or_else(std::env::temp_dir);

        let mut problems = Vec::new();
        let explicit = flags.config.clone().or_else(|| env("LATHE_CONFIG").map(PathBuf::from));
        let path = explicit.clone().or_else(|| config_dir.as_ref().map(|d| d.join("config.toml")));
        let mut file = ConfigFile::default();
        let mut read_from = None;
        if let Some(p) = &path {
            match std::fs::read_to_string(p) {
                Ok(text) => match toml::from_str::<ConfigFile>(&text) {
                    Ok(f) => {
                        file = f;
                        read_from = Some(p.clone());
                    }
                    Err(e) => problems.push(format!(
                        "Config {} is invalid and was ignored ({}); fix it or remove it.",
                        p.display(),
                        one_line(&e.to_string())
                    )),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {}
                Err(e) => problems.push(format!(
                    "Config {} could not be read ({e}); defaults are in use.",
                    p.display()
                )),
            }
        }

        let home = flags
            .home
            .clone()
            .or_else(|| env("LATHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from))
            .or(file.home.clone())
            .unwrap_or_else(|| data_dir.join("lathe"));
        let theme = flags
            .theme
            .clone()
            .or_else(|| env("LATHE_THEME").filter(|v| !v.is_empty()))
            .or(file.theme.clone())
            .unwrap_or_else(|| DEFAULT_THEME.to_string());
        let mut sample_ms = file.sample_interval_ms.unwrap_or(1000);
        if !(250..=60_000).contains(&sample_ms) {
            problems.push(format!(
                "sample_interval_ms = {sample_ms} is outside 250..60000; using 1000."
            ));
            sample_ms = 1000;
        }
        let mut max_fps = file.max_fps.unwrap_or(60);
        if !(1..=240).contains(&max_fps) {
            problems.push(format!("max_fps = {max_fps} is outside 1..240; using 60."));
            max_fps = 60;
        }
        Config {
            home,
            theme,
            sample_interval: Duration::from_millis(sample_ms),
            max_fps,
            keys: file.keys,
            file: read_from,
            themes_dir: config_dir.map(|d| d.join("themes")),
            // https://no-color.org: any non-empty value turns colour off.
            no_color: env("NO_COLOR").is_some_and(|v| !v.is_empty()),
            problems,
        }
    }
}

/// TOML errors span several lines with a source excerpt; the status bar needs one.
pub fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lathe-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn defaults_follow_xdg() {
        let c = Config::load_with(&Flags::default(), &env_of(&[("HOME", "/h")]));
        assert_eq!(c.home, PathBuf::from("/h/.local/share/lathe"));
        assert_eq!(c.theme, "dark");
        assert!(c.problems.is_empty());
        let c = Config::load_with(
            &Flags::default(),
            &env_of(&[("HOME", "/h"), ("XDG_DATA_HOME", "/d"), ("XDG_CONFIG_HOME", "/c")]),
        );
        assert_eq!(c.home, PathBuf::from("/d/lathe"));
        assert_eq!(c.themes_dir, Some(PathBuf::from("/c/lathe/themes")));
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tmp("prec");
        std::fs::create_dir_all(dir.join("lathe")).unwrap();
        std::fs::write(dir.join("lathe/config.toml"), "home = '/from-file'\ntheme = 'light'\n").unwrap();
        let xdg = dir.to_str().unwrap();
        let c = Config::load_with(&Flags::default(), &env_of(&[("XDG_CONFIG_HOME", xdg)]));
        assert_eq!((c.home.to_str().unwrap(), c.theme.as_str()), ("/from-file", "light"));
        let c = Config::load_with(
            &Flags::default(),
            &env_of(&[("XDG_CONFIG_HOME", xdg), ("LATHE_HOME", "/from-env")]),
        );
        assert_eq!(c.home, PathBuf::from("/from-env"));
        let flags = Flags { home: Some("/from-flag".into()), theme: Some("basic16".into()), config: None };
        let c = Config::load_with(&flags, &env_of(&[("XDG_CONFIG_HOME", xdg), ("LATHE_HOME", "/e")]));
        assert_eq!((c.home.to_str().unwrap(), c.theme.as_str()), ("/from-flag", "basic16"));
    }

    #[test]
    fn a_bad_config_is_reported_and_defaults_used() {
        let dir = tmp("bad");
        let p = dir.join("bad.toml");
        std::fs::write(&p, "theme = [unclosed\n").unwrap();
        let flags = Flags { config: Some(p.clone()), ..Flags::default() };
        let c = Config::load_with(&flags, &env_of(&[("HOME", "/h")]));
        assert_eq!(c.theme, "dark");
        assert_eq!(c.problems.len(), 1);
        assert!(c.problems[0].contains("invalid") && !c.problems[0].contains('\n'), "{:?}", c.problems);

        std::fs::write(&p, "colour = 'x'\n").unwrap();
        let c = Config::load_with(&flags, &env_of(&[]));
        assert!(c.problems[0].contains("unknown field"), "{:?}", c.problems);

        let missing = Flags { config: Some(dir.join("nope.toml")), ..Flags::default() };
        let c = Config::load_with(&missing, &env_of(&[]));
        assert!(c.problems[0].contains("could not be read"), "{:?}", c.problems);
    }

    #[test]
    fn out_of_range_numbers_fall_back() {
        let dir = tmp("range");
        let p = dir.join("c.toml");
        std::fs::write(&p, "max_fps = 0\nsample_interval_ms = 5\n").unwrap();
        let c = Config::load_with(&Flags { config: Some(p), ..Flags::default() }, &env_of(&[]));
        assert_eq!((c.max_fps, c.sample_interval), (60, Duration::from_secs(1)));
        assert_eq!(c.problems.len(), 2);
    }

    #[test]
    fn no_color_needs_a_value() {
        assert!(Config::load_with(&Flags::default(), &env_of(&[("NO_COLOR", "1")])).no_color);
        assert!(!Config::load_with(&Flags::default(), &env_of(&[("NO_COLOR", "")])).no_color);
    }
}
