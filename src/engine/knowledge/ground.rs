//! Grounding a chat message in a collection: the retrieved chunks become numbered sources in the
//! last user message (so the model's own chat template carries them, whatever its roles), with an
//! instruction to cite them as [1], [2]; the sources are kept (path, lines, headings) to show under
//! the answer and to save with the conversation. Earlier turns stay as they were typed.

use serde::{Deserialize, Serialize};

use super::store::Hit;
use crate::engine::types::Message;

/// Chunks retrieved for each message.
pub const SOURCES: usize = 4;

/// One source of an answer, as shown under it and saved with the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Its number in the prompt: [1], [2]...
    pub n: usize,
    pub collection: String,
    pub path: String,
    pub first_line: u32,
    pub last_line: u32,
    pub headings: String,
    pub score: f64,
}

impl Source {
    /// `path:first-last`.
    pub fn place(&self) -> String {
        if self.first_line == self.last_line {
            format!("{}:{}", self.path, self.first_line)
        } else {
            format!("{}:{}-{}", self.path, self.first_line, self.last_line)
        }
    }
}

/// What retrieval gave one message: its sources and how long it took.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Retrieval {
    pub collection: String,
    pub sources: Vec<Source>,
    pub millis: f64,
}

/// The sources of `hits`, numbered from 1.
pub fn sources(collection: &str, hits: &[Hit]) -> Vec<Source> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| Source {
            n: i + 1,
            collection: collection.to_string(),
            path: h.path.clone(),
            first_line: h.first_line,
            last_line: h.last_line,
            headings: h.headings.clone(),
            score: h.score,
        })
        .collect()
}

/// The user's question with the numbered sources before it and the instruction to cite them.
pub fn grounded_question(question: &str, hits: &[Hit], sources: &[Source]) -> String {
    if hits.is_empty() {
        return question.to_string();
    }
    let mut s = String::from(
        "Answer the question using the numbered sources below. Cite the sources you use as [1], [2]. If they do not hold the answer, say so.\n\n",
    );
    for (h, src) in hits.iter().zip(sources) {
        let under = if h.headings.is_empty() { String::new() } else { format!(" ({})", h.headings) };
        s.push_str(&format!("[{}] {}{under}\n{}\n\n", src.n, src.place(), h.text.trim()));
    }
    s.push_str(&format!("Question: {question}"));
    s
}

/// The conversation with its last user message grounded in `hits`.
pub fn grounded(messages: &[Message], hits: &[Hit], sources: &[Source]) -> Vec<Message> {
    let mut out = messages.to_vec();
    if let Some(last) = out.iter_mut().rev().find(|m| m.role == "user") {
        last.content = grounded_question(&last.content, hits, sources);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(path: &str, first: u32, last: u32, headings: &str, text: &str) -> Hit {
        Hit {
            rank: 1,
            score: 0.5,
            chunk_id: "x".into(),
            path: path.into(),
            first_line: first,
            last_line: last,
            headings: headings.into(),
            text: text.into(),
            vector_rank: None,
            text_rank: None,
        }
    }

    #[test]
    fn the_last_question_gets_numbered_sources() {
        let hits = vec![hit("/n/garden.md", 7, 9, "Garden > Pests", "Aphids hide.\n"), hit("/n/a.txt", 2, 2, "", "Water them.")];
        let src = sources("notes", &hits);
        assert_eq!((src[0].n, src[1].n, src[0].place(), src[1].place()), (1, 2, "/n/garden.md:7-9".into(), "/n/a.txt:2".into()));
        let msgs = vec![
            Message { role: "user".into(), content: "hi".into() },
            Message { role: "assistant".into(), content: "hello".into() },
            Message { role: "user".into(), content: "aphids?".into() },
        ];
        let g = grounded(&msgs, &hits, &src);
        assert_eq!((g[0].content.as_str(), g[1].content.as_str()), ("hi", "hello"));
        assert!(g[2].content.starts_with("Answer the question using the numbered sources below."));
        assert!(g[2].content.contains("[1] /n/garden.md:7-9 (Garden > Pests)\nAphids hide.\n\n[2] /n/a.txt:2\nWater them.\n\nQuestion: aphids?"), "{}", g[2].content);
        // Nothing retrieved: the question as typed.
        assert_eq!(grounded(&msgs, &[], &[])[2].content, "aphids?");
    }
}
