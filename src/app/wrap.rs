//! Word wrapping by display width, and each chat side's cache of wrapped turns: a frame wraps
//! again only the turn whose text changed (the answer streaming), or all of them once when the
//! width changes.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Word-wraps `text` to `width` terminal columns (display width: wide characters count two,
/// combining marks none), keeping explicit line breaks.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
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

/// The wrapped body of each turn, at one width.
#[derive(Debug, Clone, Default)]
pub struct WrapCache {
    width: usize,
    /// Per turn: the text it was wrapped from, whether it carried the streaming cursor, its lines.
    turns: Vec<(String, bool, Vec<String>)>,
    /// How many turns were wrapped again by the last `update` (for the test).
    pub rewrapped: usize,
}

impl WrapCache {
    /// Brings the cache up to `texts` (each turn's text, and whether the cursor follows it) at
    /// `width`; only what changed is wrapped again.
    pub fn update<'a>(&mut self, texts: impl Iterator<Item = (&'a str, bool)>, width: usize) {
        if width != self.width {
            self.turns.clear();
            self.width = width;
        }
        self.rewrapped = 0;
        let mut n = 0;
        for (i, (text, cursor)) in texts.enumerate() {
            n = i + 1;
            let same = self.turns.get(i).is_some_and(|(t, c, _)| *c == cursor && t == text);
            if same {
                continue;
            }
            let lines = if cursor { wrap(&format!("{text}▌"), width) } else { wrap(text, width) };
            let entry = (text.to_string(), cursor, lines);
            if i < self.turns.len() {
                self.turns[i] = entry;
            } else {
                self.turns.push(entry);
            }
            self.rewrapped += 1;
        }
        self.turns.truncate(n);
    }

    /// Turn `i`'s lines (as of the last `update`).
    pub fn lines(&self, i: usize) -> &[String] {
        self.turns.get(i).map(|t| t.2.as_slice()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_and_breaks() {
        assert_eq!(wrap("the quick brown fox", 10), ["the quick", "brown fox"]);
        assert_eq!(wrap("a\n\nb", 10), ["a", "", "b"]);
        assert_eq!(wrap("abcdefghijkl", 5), ["abcde", "fghij", "kl"]);
        // Wide characters take two columns; control characters none.
        assert_eq!(wrap("日本語の文", 4), ["日本", "語の", "文"]);
        assert_eq!(wrap("a\u{7}b", 5), ["ab"]);
    }

    #[test]
    fn only_the_turn_that_grew_is_wrapped_again() {
        let mut c = WrapCache::default();
        c.update([("hello there", false), ("the answer", true)].into_iter(), 8);
        assert_eq!((c.rewrapped, c.lines(1)), (2, &["the", "answer▌"].map(String::from)[..]));
        c.update([("hello there", false), ("the answer grows", true)].into_iter(), 8);
        assert_eq!(c.rewrapped, 1);
        c.update([("hello there", false), ("the answer grows", false)].into_iter(), 8);
        assert_eq!((c.rewrapped, c.lines(1).last().map(String::as_str)), (1, Some("grows")));
        // A new width wraps everything once; a shorter conversation drops what followed.
        c.update([("hello there", false)].into_iter(), 20);
        assert_eq!((c.rewrapped, c.lines(0), c.lines(1).len()), (1, &["hello there".to_string()][..], 0));
    }
}
