//! Themes: TOML files mapping style keys to colours. The shipped themes are embedded; a user theme
//! (a path, or a name under the config's themes/ folder) overrides any subset of keys on top of
//! the theme it `extends` (dark by default). A broken file is reported and the default used.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The shipped themes, in the order `t` cycles through them.
pub const SHIPPED: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("high-contrast", include_str!("../../themes/high-contrast.toml")),
    ("basic16", include_str!("../../themes/basic16.toml")),
];

macro_rules! theme_keys {
    ($($key:ident),* $(,)?) => {
        /// A theme file: every colour optional, so a user file may set only what it changes.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ThemeFile {
            pub name: Option<String>,
            pub extends: Option<String>,
            #[serde(default)]
            pub colors: ColorsFile,
        }

        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ColorsFile {
            $(pub $key: Option<String>,)*
        }

        /// Resolved colours, one per style key.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Colors {
            $(pub $key: Color,)*
        }

        impl Colors {
            fn overlay(&mut self, file: &ColorsFile) -> Result<(), String> {
                $(
                    if let Some(v) = &file.$key {
                        self.$key = parse_color(v)
                            .ok_or_else(|| format!("{} = {:?} is not a colour", stringify!($key), v))?;
                    }
                )*
                Ok(())
            }

            fn all_reset() -> Colors {
                Colors { $($key: Color::Reset,)* }
            }

            /// Every key, for the tests that check the shipped themes set them all.
            pub fn keys() -> &'static [&'static str] {
                &[$(stringify!($key),)*]
            }

            pub fn set_keys(file: &ColorsFile) -> Vec<&'static str> {
                let mut v = Vec::new();
                $(if file.$key.is_some() { v.push(stringify!($key)); })*
                v
            }
        }
    };
}

theme_keys!(
    bg, fg, muted, accent, border, border_focus, title, title_focus, tab, tab_active_fg,
    tab_active_bg, status_fg, status_bg, key, error, warn, ok, gauge_low, gauge_mid, gauge_high,
    spark, selection_fg, selection_bg, user, assistant, overlay_bg,
);

/// Accepts names (`red`, `light-red`, `reset`), `#rrggbb` and 256-colour indexes.
pub fn parse_color(s: &str) -> Option<Color> {
    Color::from_str(s.trim()).ok()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub c: Colors,
    /// NO_COLOR: colours are all terminal defaults and emphasis comes from bold / reverse.
    pub mono: bool,
}

impl Theme {
    /// A shipped theme by name.
    pub fn shipped(name: &str) -> Option<Theme> {
        let (_, text) = SHIPPED.iter().find(|(n, _)| *n == name)?;
        let file: ThemeFile = toml::from_str(text).expect("shipped theme parses");
        let mut c = Colors::all_reset();
        c.overlay(&file.colors).expect("shipped theme colours parse");
        Some(Theme { name: name.to_string(), c, mono: false })
    }

    pub fn default_theme() -> Theme {
        Theme::shipped(crate::config::DEFAULT_THEME).expect("default theme is shipped")
    }

    /// Parses a theme file's text over the theme it extends.
    pub fn from_toml(text: &str, fallback_name: &str) -> Result<Theme, String> {
        let file: ThemeFile =
            toml::from_str(text).map_err(|e| crate::config::one_line(&e.to_string()))?;
        let base_name = file.extends.as_deref().unwrap_or(crate::config::DEFAULT_THEME);
        let mut theme = Theme::shipped(base_name).ok_or_else(|| {
            format!("extends = {base_name:?} names no shipped theme ({})", shipped_names())
        })?;
        theme.c.overlay(&file.colors)?;
        theme.name = file.name.unwrap_or_else(|| fallback_name.to_string());
        Ok(theme)
    }

    /// Resolves `--theme NAME|PATH`: a path to a file, a file in `themes_dir`, or a shipped name.
    /// On failure returns the default theme and a sentence saying what went wrong.
    pub fn resolve(spec: &str, themes_dir: Option<&Path>) -> (Theme, Option<String>) {
        match Theme::try_resolve(spec, themes_dir) {
            Ok(t) => (t, None),
            Err(e) => (Theme::default_theme(), Some(e)),
        }
    }

    fn try_resolve(spec: &str, themes_dir: Option<&Path>) -> Result<Theme, String> {
        let looks_like_path = spec.contains('/') || spec.ends_with(".toml");
        let user_file: Option<PathBuf> = if looks_like_path {
            Some(PathBuf::from(spec))
        } else {
            themes_dir.map(|d| d.join(format!("{spec}.toml"))).filter(|p| p.is_file())
        };
        match user_file {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    format!("Theme {} could not be read ({e}); using the default theme.", p.display())
                })?;
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                Theme::from_toml(&text, stem.as_deref().unwrap_or(spec)).map_err(|e| {
                    format!("Theme {} is invalid ({e}); fix it or pick another with --theme.", p.display())
                })
            }
            None => Theme::shipped(spec).ok_or_else(|| {
                format!("No theme named {spec:?}; choose one of {} or give a file path.", shipped_names())
            }),
        }
    }

    /// The same theme with every colour removed, for NO_COLOR.
    pub fn monochrome(mut self) -> Theme {
        self.c = Colors::all_reset();
        self.mono = true;
        self
    }

    // Styles the panes use. In mono, emphasis is carried by modifiers alone.

    pub fn base(&self) -> Style {
        Style::default().fg(self.c.fg).bg(self.c.bg)
    }
    pub fn text(&self) -> Style {
        Style::default().fg(self.c.fg)
    }
    pub fn muted(&self) -> Style {
        let s = Style::default().fg(self.c.muted);
        if self.mono { s.add_modifier(Modifier::DIM) } else { s }
    }
    pub fn accent(&self) -> Style {
        Style::default().fg(self.c.accent).add_modifier(Modifier::BOLD)
    }
    pub fn border(&self, focused: bool) -> Style {
        if focused {
            Style::default().fg(self.c.border_focus).add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(self.c.border)
        }
    }
    pub fn title(&self, focused: bool) -> Style {
        if focused {
            let s = Style::default().fg(self.c.title_focus).add_modifier(Modifier::BOLD);
            if self.mono { s.add_modifier(Modifier::REVERSED) } else { s }
        } else {
            Style::default().fg(self.c.title)
        }
    }
    pub fn tab(&self, active: bool) -> Style {
        if active {
            let s = Style::default()
                .fg(self.c.tab_active_fg)
                .bg(self.c.tab_active_bg)
                .add_modifier(Modifier::BOLD);
            if self.mono { s.add_modifier(Modifier::REVERSED) } else { s }
        } else {
            Style::default().fg(self.c.tab)
        }
    }
    pub fn status(&self) -> Style {
        let s = Style::default().fg(self.c.status_fg).bg(self.c.status_bg);
        if self.mono { s.add_modifier(Modifier::REVERSED) } else { s }
    }
    pub fn key(&self) -> Style {
        Style::default().fg(self.c.key).add_modifier(Modifier::BOLD)
    }
    pub fn error(&self) -> Style {
        Style::default().fg(self.c.error).add_modifier(Modifier::BOLD)
    }
    pub fn warn(&self) -> Style {
        Style::default().fg(self.c.warn)
    }
    pub fn ok(&self) -> Style {
        Style::default().fg(self.c.ok)
    }
    pub fn spark(&self) -> Style {
        Style::default().fg(self.c.spark)
    }
    pub fn selection(&self) -> Style {
        let s = Style::default().fg(self.c.selection_fg).bg(self.c.selection_bg);
        if self.mono { s.add_modifier(Modifier::REVERSED) } else { s }
    }
    pub fn overlay(&self) -> Style {
        Style::default().fg(self.c.fg).bg(self.c.overlay_bg)
    }
    /// A gauge's colour by how full it is.
    pub fn level(&self, fraction: f64) -> Style {
        let c = if fraction >= 0.85 {
            self.c.gauge_high
        } else if fraction >= 0.6 {
            self.c.gauge_mid
        } else {
            self.c.gauge_low
        };
        Style::default().fg(c)
    }
}

pub fn shipped_names() -> String {
    SHIPPED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_theme_parses_and_sets_every_key() {
        for (name, text) in SHIPPED {
            let file: ThemeFile = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let set = Colors::set_keys(&file.colors);
            let missing: Vec<_> = Colors::keys().iter().filter(|k| !set.contains(k)).collect();
            assert!(missing.is_empty(), "{name} lacks {missing:?}");
            assert!(Theme::shipped(name).is_some());
        }
    }

    #[test]
    fn basic16_uses_only_the_sixteen_ansi_colours() {
        let t = Theme::shipped("basic16").unwrap();
        let all = [
            t.c.bg, t.c.fg, t.c.muted, t.c.accent, t.c.border, t.c.border_focus, t.c.title,
            t.c.title_focus, t.c.tab, t.c.tab_active_fg, t.c.tab_active_bg, t.c.status_fg,
            t.c.status_bg, t.c.key, t.c.error, t.c.warn, t.c.ok, t.c.gauge_low, t.c.gauge_mid,
            t.c.gauge_high, t.c.spark, t.c.selection_fg, t.c.selection_bg, t.c.user, t.c.assistant,
            t.c.overlay_bg,
        ];
        for c in all {
            assert!(!matches!(c, Color::Rgb(..) | Color::Indexed(_)), "{c:?} is not one of the 16");
        }
    }

    #[test]
    fn a_user_theme_overrides_a_subset() {
        let t = Theme::from_toml("extends = 'light'\n[colors]\naccent = '#ff0000'\n", "mine").unwrap();
        let light = Theme::shipped("light").unwrap();
        assert_eq!(t.c.accent, Color::Rgb(255, 0, 0));
        assert_eq!(t.c.fg, light.c.fg);
        assert_eq!(t.name, "mine");
    }

    #[test]
    fn broken_themes_fall_back_with_a_sentence() {
        let dir = std::env::temp_dir().join(format!("lathe-theme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            ("syntax.toml", "[colors\n"),
            ("badcolor.toml", "[colors]\nfg = 'notacolour'\n"),
            ("unknown.toml", "[colors]\nfgg = 'red'\n"),
            ("base.toml", "extends = 'nope'\n"),
        ];
        for (file, text) in cases {
            let p = dir.join(file);
            std::fs::write(&p, text).unwrap();
            let (t, err) = Theme::resolve(p.to_str().unwrap(), None);
            assert_eq!(t, Theme::default_theme());
            let err = err.unwrap_or_else(|| panic!("{file}: no error"));
            assert!(err.contains("invalid") && !err.contains('\n'), "{file}: {err}");
        }
        let (_, err) = Theme::resolve("no-such-theme", Some(&dir));
        assert!(err.unwrap().contains("choose one of dark, light"));
        let (_, err) = Theme::resolve("/no/such/file.toml", None);
        assert!(err.unwrap().contains("could not be read"));
    }

    #[test]
    fn a_named_user_theme_is_found_in_the_themes_dir() {
        let dir = std::env::temp_dir().join(format!("lathe-theme-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sunset.toml"), "[colors]\naccent = 'magenta'\n").unwrap();
        let (t, err) = Theme::resolve("sunset", Some(&dir));
        assert!(err.is_none());
        assert_eq!((t.name.as_str(), t.c.accent), ("sunset", Color::Magenta));
    }

    #[test]
    fn monochrome_has_no_colour() {
        let t = Theme::default_theme().monochrome();
        assert_eq!(t.c.fg, Color::Reset);
        assert!(t.tab(true).add_modifier.contains(Modifier::REVERSED));
    }
}
