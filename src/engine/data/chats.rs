//! Saved conversations: `lathe.chats`, one row per conversation (its turns and settings as JSON),
//! reopened from the Chat pane and exported to Markdown or JSON.

use duckdb::params;
use serde::{Deserialize, Serialize};

use super::{Catalog, DataError};
use crate::engine::types::{Sampling, Stats};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTurn {
    pub role: String,
    pub text: String,
    #[serde(default)]
    pub stats: Option<Stats>,
    /// The sources an answer was given (a conversation with a knowledge collection attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<crate::engine::knowledge::ground::Retrieval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRecord {
    pub id: String,
    pub title: String,
    /// The model file it was held with.
    pub model: String,
    pub system: Option<String>,
    pub turns: Vec<SavedTurn>,
    pub sampling: Sampling,
    /// Set by the catalog.
    #[serde(default)]
    pub updated_at: String,
    /// The second model's answers, when the conversation was a comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<ComparedSide>,
}

/// The other side of a comparison: its model and its own copy of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparedSide {
    pub model: String,
    pub turns: Vec<SavedTurn>,
}

/// One line per conversation for the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSummary {
    pub id: String,
    pub title: String,
    pub model: String,
    pub turns: usize,
    pub updated_at: String,
}

/// A title from the first user message: its first line, at most 60 characters.
pub fn title_of(turns: &[SavedTurn]) -> String {
    let first = turns.iter().find(|t| t.role == "user").map(|t| t.text.as_str()).unwrap_or("");
    let line = first.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut t: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        t.push('…');
    }
    if t.is_empty() {
        "(untitled)".into()
    } else {
        t
    }
}

fn markdown_turns(s: &mut String, turns: &[SavedTurn], model_heading: &str) {
    for t in turns {
        let who = if t.role == "user" { "You" } else { model_heading };
        s.push_str(&format!("## {who}\n\n{}\n\n", t.text.trim_end()));
        if let Some(r) = t.retrieval.as_ref().filter(|r| !r.sources.is_empty()) {
            s.push_str(&format!("Sources ({}):\n\n", r.collection));
            for src in &r.sources {
                s.push_str(&format!("{}. `{}`{}\n", src.n, src.place(), if src.headings.is_empty() { String::new() } else { format!(" ({})", src.headings) }));
            }
            s.push('\n');
        }
        if let Some(st) = &t.stats {
            s.push_str(&format!("_{} tokens at {:.1} tok/s, first token {:.2} s_\n\n", st.generated_tokens, st.tokens_per_s(), st.first_token_secs));
        }
    }
}

impl ChatRecord {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("# {}\n\nModel: `{}` · saved {}\n\n", self.title, self.model, self.updated_at);
        if let Some(c) = &self.compare {
            s.push_str(&format!("Compared with: `{}` (its answers follow the first model's)\n\n", c.model));
        }
        if let Some(sys) = self.system.as_ref().filter(|s| !s.is_empty()) {
            s.push_str(&format!("**System:** {sys}\n\n"));
        }
        markdown_turns(&mut s, &self.turns, if self.compare.is_some() { "Model A" } else { "Model" });
        if let Some(c) = &self.compare {
            s.push_str(&format!("---\n\n# Model B: `{}`\n\n", c.model));
            markdown_turns(&mut s, &c.turns, "Model B");
        }
        s
    }
}

/// Writes `DIR/ID.md` and `DIR/ID.json` (each written beside and renamed into place).
pub fn write_exports(c: &ChatRecord, dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("Cannot create {} ({e}).", dir.display()))?;
    let md = dir.join(format!("{}.md", c.id));
    let json = dir.join(format!("{}.json", c.id));
    for (path, text) in [(&md, c.to_markdown()), (&json, serde_json::to_string_pretty(c).unwrap_or_default())] {
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("Cannot write {} ({e}); is the disk full?", path.display())
            })?;
    }
    Ok((md, json))
}

impl Catalog {
    pub fn save_chat(&self, c: &ChatRecord) -> Result<(), DataError> {
        let turns = serde_json::to_string(&c.turns).map_err(|e| DataError::User(e.to_string()))?;
        let sampling = serde_json::to_string(&c.sampling).map_err(|e| DataError::User(e.to_string()))?;
        let compare = match &c.compare {
            Some(side) => Some(serde_json::to_string(side).map_err(|e| DataError::User(e.to_string()))?),
            None => None,
        };
        // One save at a time in this process (both sides of a comparison end within moments, each
        // saving), and an existing row is updated in place: DuckDB checks a primary key eagerly,
        // so a delete and re-insert of the same id (INSERT OR REPLACE) can collide with another
        // connection's open transaction.
        static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
        let updated = self.conn.execute(
            "UPDATE lathe.chats SET title = ?, model = ?, system = ?, turns = ?, sampling = ?, compare = ?, updated_at = current_timestamp WHERE id = ?",
            params![c.title, c.model, c.system, turns, sampling, compare, c.id],
        )?;
        if updated == 0 {
            self.conn.execute(
                "INSERT INTO lathe.chats (id, title, model, system, turns, sampling, updated_at, compare) VALUES (?, ?, ?, ?, ?, ?, current_timestamp, ?)",
                params![c.id, c.title, c.model, c.system, turns, sampling, compare],
            )?;
        }
        Ok(())
    }

    pub fn chats(&self) -> Result<Vec<ChatSummary>, DataError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, title, coalesce(model || ' vs ' || json_extract_string(compare, '$.model'), model), json_array_length(turns::JSON), \
             strftime(updated_at, '%Y-%m-%d %H:%M') FROM lathe.chats ORDER BY updated_at DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ChatSummary { id: r.get(0)?, title: r.get(1)?, model: r.get(2)?, turns: r.get::<_, i64>(3)? as usize, updated_at: r.get(4)? })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn chat(&self, id: &str) -> Result<ChatRecord, DataError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, title, model, system, turns, sampling, strftime(updated_at, '%Y-%m-%d %H:%M'), compare FROM lathe.chats WHERE id = ?",
        )?;
        let mut rows = stmt.query(params![id])?;
        let Some(r) = rows.next()? else {
            return Err(DataError::User(format!("No conversation {id:?}; `lathe chats list` shows them.")));
        };
        let turns: String = r.get(4)?;
        let sampling: String = r.get(5)?;
        let compare: Option<String> = r.get(7)?;
        Ok(ChatRecord {
            id: r.get(0)?,
            title: r.get(1)?,
            model: r.get(2)?,
            system: r.get(3)?,
            turns: serde_json::from_str(&turns).map_err(|e| DataError::User(format!("conversation {id} is damaged: {e}")))?,
            sampling: serde_json::from_str(&sampling).unwrap_or_default(),
            updated_at: r.get(6)?,
            compare: compare.and_then(|c| serde_json::from_str(&c).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::StopReason;

    #[test]
    fn conversations_round_trip_and_export() {
        let dir = std::env::temp_dir().join(format!("lathe-chats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cat = Catalog::open(&dir.join("lathe.duckdb")).unwrap();
        let stats = Stats {
            prompt_tokens: 9,
            reused_tokens: 0,
            prompt_secs: 0.1,
            first_token_secs: 0.12,
            generated_tokens: 2,
            generation_secs: 0.05,
            context_used: 11,
            context_size: 256,
            stop: StopReason::EndOfTurn,
        };
        let turns = vec![
            SavedTurn { role: "user".into(), text: "Add the two numbers.\n\n3 + 4".into(), stats: None, retrieval: None },
            SavedTurn { role: "assistant".into(), text: "7".into(), stats: Some(stats), retrieval: None },
        ];
        let mut c = ChatRecord {
            id: "chat-1".into(),
            title: title_of(&turns),
            model: "/m/demo.gguf".into(),
            system: Some("Be exact.".into()),
            turns,
            sampling: Sampling::default(),
            updated_at: String::new(),
            compare: None,
        };
        assert_eq!(c.title, "Add the two numbers.");
        cat.save_chat(&c).unwrap();
        c.turns.push(SavedTurn { role: "user".into(), text: "again".into(), stats: None, retrieval: None });
        cat.save_chat(&c).unwrap();
        let list = cat.chats().unwrap();
        assert_eq!((list.len(), list[0].turns), (1, 3));
        let back = cat.chat("chat-1").unwrap();
        assert_eq!((back.turns.clone(), back.system.clone()), (c.turns.clone(), c.system.clone()));
        assert!(cat.chat("nope").unwrap_err().to_string().contains("No conversation"));
        let (md, json) = write_exports(&back, &dir.join("chats")).unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(text.starts_with("# Add the two numbers.") && text.contains("## Model\n\n7") && text.contains("**System:** Be exact."), "{text}");
        let again: ChatRecord = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        assert_eq!(again.turns, back.turns);

        // A comparison keeps the second model's side, and both export.
        c.id = "chat-2".into();
        c.compare = Some(ComparedSide {
            model: "/m/base.gguf".into(),
            turns: vec![c.turns[0].clone(), SavedTurn { role: "assistant".into(), text: "8".into(), stats: None, retrieval: None }],
        });
        cat.save_chat(&c).unwrap();
        let back = cat.chat("chat-2").unwrap();
        assert_eq!(back.compare, c.compare);
        assert_eq!(cat.chat("chat-1").unwrap().compare, None);
        // The list names both models of a comparison.
        let models: Vec<String> = cat.chats().unwrap().into_iter().map(|c| c.model).collect();
        assert!(models.contains(&"/m/demo.gguf vs /m/base.gguf".to_string()) && models.contains(&"/m/demo.gguf".to_string()), "{models:?}");
        let (md, _) = write_exports(&back, &dir.join("chats")).unwrap();
        let text = std::fs::read_to_string(md).unwrap();
        assert!(text.contains("Compared with: `/m/base.gguf`") && text.contains("## Model A\n\n7") && text.contains("## Model B\n\n8"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn saves_of_one_conversation_from_several_threads_all_land() {
        // Both sides of a comparison end at about the same time and save from their own threads,
        // each on its own connection to the catalog.
        let dir = std::env::temp_dir().join(format!("lathe-chats-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cat = Catalog::open(&dir.join("lathe.duckdb")).unwrap();
        let record = |n: usize| ChatRecord {
            id: "chat-race".into(),
            title: "t".into(),
            model: "m".into(),
            system: None,
            turns: (0..n).map(|i| SavedTurn { role: "user".into(), text: format!("{i}"), stats: None, retrieval: None }).collect(),
            sampling: Sampling::default(),
            updated_at: String::new(),
            compare: None,
        };
        for round in 0..5 {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let c = cat.try_clone().unwrap();
                    let r = record(round * 4 + t + 1);
                    std::thread::spawn(move || c.save_chat(&r))
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        }
        assert_eq!(cat.chats().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
