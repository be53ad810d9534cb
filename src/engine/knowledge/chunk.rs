//! Cutting a document into chunks for retrieval, following its structure: Markdown sections (the
//! heading path kept with each chunk), paragraphs, fenced code blocks kept whole, top-level
//! definitions in source code, and reStructuredText titles; HTML is read as text, and PDF as the
//! text `pdftotext` gives (its pages, split by form feeds, are the sections: "page N"). Blocks are packed
//! into chunks of at most `budget` tokens (counted by the embedding model's tokenizer, through
//! `count`), each chunk starting with up to `overlap` tokens of the one before it; a block bigger
//! than the budget is cut at lines, and a line bigger than it at words. Every chunk knows its
//! 1-based first and last line.

use std::path::Path;

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Markdown,
    Text,
    Rst,
    Code,
    Html,
    /// Text extracted from a PDF, pages separated by form feeds.
    Pdf,
}

impl Kind {
    /// The kind of a file from its extension; None for files lathe does not ingest.
    pub fn of(path: &Path) -> Option<Kind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "md" | "markdown" | "mdx" => Kind::Markdown,
            "txt" | "text" | "log" | "csv" | "tsv" => Kind::Text,
            "rst" => Kind::Rst,
            "html" | "htm" => Kind::Html,
            "pdf" => Kind::Pdf,
            "rs" | "py" | "js" | "ts" | "tsx" | "jsx" | "go" | "c" | "h" | "cc" | "cpp" | "hpp" | "java" | "kt" | "swift" | "rb" | "php" | "cs" | "scala"
            | "sh" | "bash" | "zsh" | "lua" | "sql" | "toml" | "yaml" | "yml" | "json" | "ini" | "cfg" => Kind::Code,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub text: String,
    /// 1-based, inclusive.
    pub first_line: usize,
    pub last_line: usize,
    /// The Markdown or reStructuredText headings above the chunk, outermost first.
    pub headings: Vec<String>,
}

/// A structural unit: lines first..=last of the document, under `headings`.
#[derive(Debug, Clone)]
struct Block {
    lines: Vec<String>,
    first: usize,
    headings: Vec<String>,
    /// The first block of a section: packing never carries a chunk across it.
    starts_section: bool,
}

/// The document's blocks, in order.
fn blocks(text: &str, kind: Kind) -> Vec<Block> {
    let owned;
    let text = if kind == Kind::Html {
        owned = html_text(text);
        owned.as_str()
    } else {
        text
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut first = 1;
    let mut new_section = true;
    let mut in_fence = false;
    let mut page = 1;
    let path = |h: &[(usize, String)]| h.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
    let flush = |cur: &mut Vec<String>, first: usize, headings: &[(usize, String)], new_section: &mut bool, out: &mut Vec<Block>| {
        while cur.last().is_some_and(|l| l.trim().is_empty()) {
            cur.pop();
        }
        if !cur.is_empty() {
            out.push(Block { lines: std::mem::take(cur), first, headings: path(headings), starts_section: *new_section });
            *new_section = false;
        }
        cur.clear();
    };
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if kind == Kind::Pdf && (i == 0 || line.contains('\u{c}')) {
            // A new page: its own section.
            page += line.matches('\u{c}').count();
            flush(&mut cur, first, &headings, &mut new_section, &mut out);
            headings = vec![(1, format!("page {page}"))];
            new_section = true;
            first = n;
            let rest = line.replace('\u{c}', "");
            if !rest.trim().is_empty() {
                cur.push(rest);
            }
            continue;
        }
        let trimmed = line.trim();
        if kind == Kind::Markdown && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            if !in_fence {
                flush(&mut cur, first, &headings, &mut new_section, &mut out);
                first = n;
            }
            cur.push(line.to_string());
            in_fence = !in_fence;
            if !in_fence {
                flush(&mut cur, first, &headings, &mut new_section, &mut out);
                first = n + 1;
            }
            continue;
        }
        if in_fence {
            cur.push(line.to_string());
            continue;
        }
        // A Markdown ATX heading, or a reStructuredText title (a line underlined by =, -, ~, ^).
        let heading = match kind {
            Kind::Markdown if trimmed.starts_with('#') => {
                let level = trimmed.chars().take_while(|&c| c == '#').count();
                (level <= 6 && trimmed[level..].starts_with(' ')).then(|| (level, trimmed[level..].trim().to_string()))
            }
            Kind::Rst => lines.get(i + 1).and_then(|next| {
                let level = underline(next)?;
                (!trimmed.is_empty() && underline(trimmed).is_none() && next.trim().len() >= trimmed.chars().count()).then(|| (level, trimmed.to_string()))
            }),
            _ => None,
        };
        if let Some((level, title)) = heading {
            flush(&mut cur, first, &headings, &mut new_section, &mut out);
            headings.retain(|(l, _)| *l < level);
            headings.push((level, title));
            new_section = true;
            first = n;
            cur.push(line.to_string());
            continue;
        }
        if kind == Kind::Rst && cur.len() == 1 && underline(trimmed).is_some() {
            // The underline of the title just read.
            cur.push(line.to_string());
            continue;
        }
        let boundary = if kind == Kind::Code {
            // A new top-level item: an unindented line after a blank one.
            !line.starts_with([' ', '\t']) && !trimmed.is_empty() && lines.get(i.wrapping_sub(1)).is_some_and(|p| p.trim().is_empty()) && !cur.is_empty()
        } else {
            trimmed.is_empty()
        };
        if boundary {
            flush(&mut cur, first, &headings, &mut new_section, &mut out);
            first = n;
        }
        // Blank lines separate prose blocks; in code they stay inside an item.
        if kind == Kind::Code || !trimmed.is_empty() {
            if cur.is_empty() {
                first = n;
            }
            cur.push(line.to_string());
        }
    }
    flush(&mut cur, first, &headings, &mut new_section, &mut out);
    out
}

/// The heading level a reStructuredText underline gives (by its character), or None for a line
/// that is not one: one punctuation character repeated.
fn underline(line: &str) -> Option<usize> {
    let u = line.trim();
    let c = u.chars().next()?;
    let level = "=-~^\"'`#*+".find(c)? + 1;
    u.chars().all(|x| x == c).then_some(level)
}

/// HTML as text: tags dropped (script and style with their content), block tags as line breaks,
/// the common entities decoded.
pub fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else { break };
        let tag = rest[open + 1..open + close].trim().to_ascii_lowercase();
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        rest = &rest[open + close + 1..];
        if (name == "script" || name == "style") && !tag.starts_with('/') {
            let end = format!("</{name}");
            match rest.to_ascii_lowercase().find(&end) {
                Some(e) => rest = &rest[e..],
                None => rest = "",
            }
            continue;
        }
        if matches!(name.as_str(), "p" | "div" | "br" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "pre" | "section" | "article" | "table" | "ul" | "ol") {
            out.push_str("\n\n");
        }
    }
    if !rest.contains('<') {
        out.push_str(rest);
    }
    out.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// The document's chunks (see the module's first lines).
pub fn chunk(text: &str, kind: Kind, budget: usize, overlap: usize, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let budget = budget.max(8);
    // Pieces no bigger than the budget: a block, or its lines, or a line's words.
    let mut pieces: Vec<(String, usize, usize, Vec<String>, bool)> = Vec::new();
    for b in blocks(text, kind) {
        let whole = b.lines.join("\n");
        if count(&whole) <= budget {
            pieces.push((whole, b.first, b.first + b.lines.len() - 1, b.headings, b.starts_section));
            continue;
        }
        let mut section = b.starts_section;
        for (k, line) in b.lines.iter().enumerate() {
            let n = b.first + k;
            if count(line) <= budget {
                pieces.push((line.clone(), n, n, b.headings.clone(), section));
            } else {
                let mut part = String::new();
                for w in line.split_whitespace() {
                    if !part.is_empty() && count(&format!("{part} {w}")) > budget {
                        pieces.push((std::mem::take(&mut part), n, n, b.headings.clone(), section));
                        section = false;
                    }
                    if !part.is_empty() {
                        part.push(' ');
                    }
                    part.push_str(w);
                }
                if !part.is_empty() {
                    pieces.push((part, n, n, b.headings.clone(), section));
                }
            }
            section = false;
        }
    }
    // Pack pieces into chunks; a new one starts with the previous one's tail (up to `overlap`).
    let mut out: Vec<Chunk> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let text_of = |ids: &[usize]| ids.iter().map(|&i| pieces[i].0.as_str()).collect::<Vec<_>>().join("\n");
    let emit = |ids: &[usize], out: &mut Vec<Chunk>| {
        if let (Some(&a), Some(&z)) = (ids.first(), ids.last()) {
            out.push(Chunk { text: text_of(ids), first_line: pieces[a].1, last_line: pieces[z].2, headings: pieces[z].3.clone() });
        }
    };
    for (i, piece) in pieces.iter().enumerate() {
        let starts_section = piece.4;
        let mut next: Vec<usize> = cur.clone();
        next.push(i);
        if !cur.is_empty() && (starts_section || count(&text_of(&next)) > budget) {
            emit(&cur, &mut out);
            // The overlap: the previous chunk's last pieces, within the section, up to `overlap`.
            let mut tail: Vec<usize> = Vec::new();
            if !starts_section && overlap > 0 {
                for &j in cur.iter().rev() {
                    let mut t = vec![j];
                    t.extend(&tail);
                    let mut with = t.clone();
                    with.push(i);
                    if count(&text_of(&t)) > overlap || count(&text_of(&with)) > budget {
                        break;
                    }
                    tail = t;
                }
            }
            cur = tail;
        }
        cur.push(i);
    }
    emit(&cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    const DOC: &str = "# Guide\n\nIntro paragraph one.\n\n## Install\n\nRun the installer.\nThen restart.\n\n```sh\nmake install\n\nmake check\n```\n\n## Use\n\nOpen the app.\n";

    #[test]
    fn pdf_text_is_cut_at_its_pages() {
        // pdftotext's output: each page ends with a form feed.
        let text = "Title page\n\nAbstract text.\n\u{c}Second page starts.\n\nMore.\n\u{c}\u{c}Fourth page.\n\u{c}";
        let c = chunk(text, Kind::Pdf, 100, 0, &words);
        let got: Vec<(usize, String, String)> = c.iter().map(|c| (c.first_line, c.headings.join(" > "), c.text.clone())).collect();
        assert_eq!(
            got,
            vec![
                (1, "page 1".into(), "Title page\nAbstract text.".into()),
                (4, "page 2".into(), "Second page starts.\nMore.".into()),
                (7, "page 4".into(), "Fourth page.".into()),
            ]
        );
    }

    #[test]
    fn markdown_chunks_follow_sections_and_keep_code_blocks_whole() {
        let c = chunk(DOC, Kind::Markdown, 100, 0, &words);
        let got: Vec<(usize, usize, Vec<&str>)> = c.iter().map(|c| (c.first_line, c.last_line, c.headings.iter().map(String::as_str).collect())).collect();
        assert_eq!(got, vec![(1, 3, vec!["Guide"]), (5, 14, vec!["Guide", "Install"]), (16, 18, vec!["Guide", "Use"])]);
        assert!(c[1].text.contains("make install\n\nmake check"), "{}", c[1].text);
        // Lines are the document's own.
        let lines: Vec<&str> = DOC.lines().collect();
        assert_eq!(lines[c[2].first_line - 1], "## Use");
    }

    #[test]
    fn a_small_budget_cuts_blocks_and_overlaps_within_a_section() {
        let text = (1..=12).map(|i| format!("Sentence number {i} here.")).collect::<Vec<_>>().join("\n");
        let c = chunk(&text, Kind::Text, 8, 4, &words);
        assert!(c.iter().all(|c| words(&c.text) <= 8), "{c:?}");
        // Each chunk after the first begins with the last line of the one before it.
        for w in c.windows(2) {
            assert_eq!(w[1].first_line, w[0].last_line, "{w:?}");
        }
        assert_eq!((c.first().unwrap().first_line, c.last().unwrap().last_line), (1, 12));
        // A line longer than the budget is cut at words.
        let long = "word ".repeat(30);
        let c = chunk(&long, Kind::Text, 10, 0, &words);
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|c| words(&c.text) == 10 && c.first_line == 1));
    }

    #[test]
    fn code_splits_at_top_level_items_and_rst_titles_are_headings() {
        let code = "import os\n\ndef a():\n    x = 1\n\n    return x\n\ndef b():\n    pass\n";
        let c = chunk(code, Kind::Code, 6, 0, &words);
        let spans: Vec<(usize, usize)> = c.iter().map(|c| (c.first_line, c.last_line)).collect();
        assert_eq!(spans, vec![(1, 1), (3, 6), (8, 9)], "{c:?}");
        // With room, consecutive items share a chunk.
        let c = chunk(code, Kind::Code, 100, 0, &words);
        assert_eq!((c.len(), c[0].first_line, c[0].last_line), (1, 1, 9));
        let rst = "Title\n=====\n\nText under it.\n\nPart\n----\n\nMore text.\n";
        let c = chunk(rst, Kind::Rst, 100, 0, &words);
        assert_eq!(c.iter().map(|c| c.headings.clone()).collect::<Vec<_>>(), vec![vec!["Title".to_string()], vec!["Title".into(), "Part".into()]]);
    }

    #[test]
    fn html_is_read_as_text() {
        let t = html_text("<html><head><style>p{}</style><script>var x=1;</script></head><body><h1>Hi</h1><p>A &amp; B</p></body></html>");
        assert!(t.contains("Hi") && t.contains("A & B") && !t.contains("var x") && !t.contains("p{}"), "{t}");
        assert_eq!(Kind::of(Path::new("a/b.MD")), Some(Kind::Markdown));
        assert_eq!(Kind::of(Path::new("x.bin")), None);
        assert_eq!(Kind::of(Path::new("paper.PDF")), Some(Kind::Pdf));
    }
}
