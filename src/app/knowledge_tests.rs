//! The Knowledge pane's reducer tests: collections listed, a search typed and run, results
//! opened, paths added, syncs, drops (asked first) and an ingest's progress and report.

use super::*;
use crate::engine::jobs::{JobEvent, JobKind, JobStatus};
use crate::engine::knowledge::ingest::{Phase, Progress, Report};
use crate::engine::knowledge::store::{CollectionInfo, Hit, ModelId, SearchMode};
use crate::service::SearchResult;
use std::collections::BTreeMap;

fn app() -> App {
    let (km, _) = Keymap::load(&BTreeMap::new());
    App::new(km, Theme::default_theme(), PathBuf::from("/ws"))
}

fn typed(c: char) -> Action {
    Action::Text(KeyPress { key: TextKey::Char(c), ctrl: false, alt: false, shift: false })
}

pub fn collection(name: &str, sources: &[&str]) -> CollectionInfo {
    CollectionInfo {
        name: name.into(),
        model: ModelId {
            name: "all-MiniLM-L6-v2".into(),
            dir: "/models/all-MiniLM-L6-v2".into(),
            dim: 384,
            pooling: "mean".into(),
            normalize: true,
            max_len: 256,
            fingerprint: "0".into(),
        },
        documents: 42,
        chunks: 1234,
        bytes: 3 << 20,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        version: 7,
        vector_index: false,
        text_index: true,
        path: format!("/ws/vectors/{name}.lance"),
    }
}

pub fn hit(rank: usize, path: &str, text: &str) -> Hit {
    Hit {
        rank,
        score: 1.0 / (60.0 + rank as f64),
        chunk_id: format!("{rank:032}"),
        path: path.into(),
        first_line: 3 * rank as u32,
        last_line: 3 * rank as u32 + 2,
        headings: "Garden > Pests".into(),
        text: text.into(),
        vector_rank: Some(rank),
        text_rank: None,
    }
}

/// An app on the Knowledge pane with two collections listed.
fn listed() -> App {
    let mut a = app();
    let out = a.update(Action::Focus(PaneId::Knowledge));
    assert_eq!(out, vec![Command::ListCollections { request: 1 }]);
    a.update(Action::Collections { request: 1, result: Ok(vec![collection("notes", &["/home/u/notes"]), collection("empty", &[])]) });
    a
}

#[test]
fn a_search_is_typed_run_and_opened() {
    let mut a = listed();
    assert_eq!(a.mode(), Mode::Knowledge);
    // An older listing's answer is dropped.
    a.update(Action::Collections { request: 0, result: Ok(vec![]) });
    assert_eq!(a.knowledge.collections().len(), 2);
    a.update(Action::FocusSearch);
    assert_eq!(a.mode(), Mode::KbSearch);
    assert!(a.text_input_focused());
    // Results follow the typing, one search on its way at a time: the first letter is searched,
    // the rest waits for its answer, and then the newest text is searched.
    let req = |q: &str| crate::service::SearchRequest { collection: "notes".into(), query: q.into(), mode: SearchMode::Hybrid, k: 10, path: None, model: None };
    let mut sent = Vec::new();
    for c in "aphids".chars() {
        sent.extend(a.update(typed(c)));
    }
    assert_eq!(sent, vec![Command::SearchCollection { request: 1, req: req("a") }]);
    assert!(a.knowledge.searching);
    let out = a.update(Action::Searched { request: 1, result: Ok(SearchResult { hits: vec![], mode: SearchMode::Hybrid, millis: 3.0, truncated: false }) });
    assert_eq!(out, vec![Command::SearchCollection { request: 2, req: req("aphids") }]);
    // Enter searches at once; the answer to the older request is dropped.
    let out = a.update(Action::Search);
    assert_eq!(out, vec![Command::SearchCollection { request: 3, req: req("aphids") }]);
    let hits = vec![hit(1, "/home/u/notes/garden.md", "Aphids gather under the leaves."), hit(2, "/home/u/notes/roses.md", "Roses too.")];
    a.update(Action::Searched { request: 2, result: Ok(SearchResult { hits: vec![], mode: SearchMode::Hybrid, millis: 3.0, truncated: false }) });
    assert!(a.knowledge.searching);
    a.update(Action::Searched { request: 3, result: Ok(SearchResult { hits, mode: SearchMode::Hybrid, millis: 12.0, truncated: false }) });
    assert!(!a.knowledge.searching);
    assert_eq!(a.knowledge.results.as_ref().unwrap().0, "aphids");
    a.update(Action::LeaveSearch);
    assert_eq!((a.mode(), a.knowledge.focus), (Mode::Knowledge, crate::app::knowledge::KbFocus::Results));
    a.update(Action::ScrollDown);
    a.update(Action::ScrollDown);
    assert_eq!(a.knowledge.hit, 1);
    a.update(Action::OpenHit);
    assert_eq!(a.overlay, Some(Overlay::Chunk { scroll: 0 }));
    assert_eq!(a.mode(), Mode::Viewer);
    a.update(Action::ScrollDown);
    assert_eq!(a.overlay, Some(Overlay::Chunk { scroll: 1 }));
    a.update(Action::Close);
    assert_eq!(a.overlay, None);
    // Another mode searches again at once; a stale answer is dropped.
    let out = a.update(Action::CycleSearchMode);
    assert!(matches!(&out[..], [Command::SearchCollection { request: 4, req }] if req.mode == SearchMode::Vector), "{out:?}");
    a.update(Action::Searched { request: 3, result: Err("old".into()) });
    assert!(a.knowledge.searching);
    // Moving to another collection clears the results, which were the other's.
    a.update(Action::SwitchKbFocus);
    a.update(Action::ScrollDown);
    assert_eq!((a.knowledge.selected, a.knowledge.results.is_none()), (1, true));
}

/// In the add prompt, Tab after `dataset:` completes dataset and column names from the schema
/// the Data pane last read (a path is completed by the service instead).
#[test]
fn a_dataset_column_is_completed_in_the_add_prompt() {
    let mut a = listed();
    a.data.schema = vec![
        ("faq".into(), vec![("question".into(), "VARCHAR".into()), ("answer".into(), "VARCHAR".into())]),
        ("fruit".into(), vec![("name".into(), "VARCHAR".into())]),
    ];
    a.update(Action::AddToCollection);
    for c in "dataset:fa".chars() {
        a.update(typed(c));
    }
    assert!(a.update(Action::Complete).is_empty());
    let p = a.prompt.as_ref().unwrap();
    assert_eq!((p.text(), p.completions.clone()), ("dataset:faq.".to_string(), vec!["dataset:faq.question".to_string(), "dataset:faq.answer".to_string()]));
    a.update(typed('a'));
    a.update(Action::Complete);
    assert_eq!(a.prompt.as_ref().unwrap().text(), "dataset:faq.answer");
    assert_eq!(a.update(Action::Confirm), vec![Command::IngestCollection { name: "notes".into(), paths: vec!["dataset:faq.answer".into()] }]);
    // Anything else is a path, completed by the service.
    a.update(Action::AddToCollection);
    a.update(typed('/'));
    assert_eq!(a.update(Action::Complete), vec![Command::CompletePath("/".into())]);
}

#[test]
fn paths_are_added_synced_and_collections_dropped_after_asking() {
    let mut a = listed();
    a.update(Action::AddToCollection);
    assert_eq!(a.mode(), Mode::Prompt);
    for c in "/home/u/more".chars() {
        a.update(typed(c));
    }
    let out = a.update(Action::Confirm);
    assert_eq!(out, vec![Command::IngestCollection { name: "notes".into(), paths: vec!["/home/u/more".into()] }]);
    assert_eq!(a.overlay, None);
    assert_eq!(a.update(Action::SyncCollection), vec![Command::IngestCollection { name: "notes".into(), paths: vec![] }]);
    // A collection without sources says how to add one instead.
    a.update(Action::ScrollDown);
    assert!(a.update(Action::SyncCollection).is_empty());
    assert!(a.notices.last().unwrap().text.contains("has no sources yet; a adds"), "{:?}", a.notices);
    // Dropping asks; no keeps it, yes drops it and lists again.
    a.update(Action::DropCollection);
    assert_eq!(a.overlay, Some(Overlay::ConfirmDropCollection));
    assert!(a.update(Action::Deny).is_empty());
    assert_eq!((a.overlay, a.knowledge.drop_target.clone()), (None, None));
    a.update(Action::DropCollection);
    assert_eq!(a.update(Action::Confirm), vec![Command::DropCollection { name: "empty".into(), request: 2 }]);
}

#[test]
fn an_ingest_shows_its_progress_then_its_report() {
    let mut a = listed();
    a.update(Action::Job(JobEvent::Started { id: 9, kind: JobKind::Ingest, title: "notes".into() }));
    assert_eq!(a.knowledge.ingest.as_ref().map(|(j, n, _)| (*j, n.as_str())), Some((9, "notes")));
    let p = Progress { phase: Phase::Embedding, files_done: 3, files_total: 10, chunks: 96, bytes_done: 30, bytes_total: 100, chunks_per_s: 31.5, eta_s: Some(7.0) };
    a.update(Action::IngestProgress { job: 9, progress: p.clone() });
    assert_eq!(a.knowledge.ingest.as_ref().and_then(|(_, _, p)| p.clone()), Some(p));
    // A second sync waits for it.
    assert!(a.update(Action::SyncCollection).is_empty());
    let report = Report { added: 10, chunks: 320, seconds: 10.2, ..Default::default() };
    let out = a.update(Action::Ingested { job: 9, result: Ok(report) });
    assert_eq!(out, vec![Command::ListCollections { request: 2 }]);
    assert!(a.knowledge.ingest.is_none());
    assert!(a.notices.last().unwrap().text.starts_with("notes: 10 added"), "{:?}", a.notices);
    // The job's end adds no second notice.
    let n = a.notices.len();
    a.update(Action::Job(JobEvent::Finished { id: 9, status: JobStatus::Done }));
    assert_eq!(a.notices.len(), n);
}

#[test]
fn with_no_collection_the_keys_say_what_to_do() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Knowledge));
    a.update(Action::Collections { request: 1, result: Ok(vec![]) });
    a.update(Action::FocusSearch);
    assert_eq!(a.mode(), Mode::Knowledge);
    assert!(a.notices.last().unwrap().text.contains("lathe kb create"));
    a.update(Action::AddToCollection);
    assert_eq!(a.overlay, None);
}

/// With a collection attached, a message waits for its sources, then is asked with them as
/// numbered sources; the answer keeps them (saved with the conversation).
#[test]
fn a_chat_message_waits_for_its_sources_and_cites_them() {
    use crate::engine::infer::worker::ChatEvent;
    use crate::engine::types::ModelRef;
    let mut a = listed();
    a.update(Action::Chat { side: 0, event: ChatEvent::Loaded { model: ModelRef::File("m.gguf".into()), architecture: "llama".into(), context_size: 2048, has_template: true } });
    a.update(Action::Focus(PaneId::Chat));
    // Attaching asks for the name, and lists the collections for completion and the check.
    let out = a.update(Action::AttachKb);
    assert_eq!(out, vec![Command::ListCollections { request: 2 }]);
    a.update(Action::Collections { request: 2, result: Ok(vec![collection("notes", &["/n"])]) });
    for c in "nope".chars() {
        a.update(typed(c));
    }
    a.update(Action::Confirm);
    assert_eq!(a.chat.kb, None);
    assert!(a.notices.last().unwrap().text.contains("There is no collection \"nope\"; there are notes."), "{:?}", a.notices);
    a.update(Action::AttachKb);
    a.update(Action::Complete);
    assert_eq!(a.prompt.as_ref().map(|p| p.text()), Some("notes".into()));
    a.update(Action::Confirm);
    assert_eq!(a.chat.kb.as_deref(), Some("notes"));

    for c in "aphids?".chars() {
        a.update(typed(c));
    }
    let out = a.update(Action::Send);
    assert_eq!(out.first(), Some(&Command::Retrieve { id: 1, collection: "notes".into(), query: "aphids?".into() }), "{out:?}");
    assert!(!out.iter().any(|c| matches!(c, Command::Generate { .. })));
    assert!(a.chat.any_streaming());
    let hits = vec![hit(1, "/n/garden.md", "Aphids hide under leaves.")];
    let out = a.update(Action::Retrieved { id: 1, result: Ok(SearchResult { hits, mode: SearchMode::Hybrid, millis: 21.0, truncated: false }) });
    let Some(Command::Generate { messages, .. }) = out.first() else { panic!("{out:?}") };
    let asked = &messages.last().unwrap().content;
    assert!(asked.contains("[1] /n/garden.md:3-5 (Garden > Pests)\nAphids hide under leaves.") && asked.ends_with("Question: aphids?"), "{asked}");
    let r = a.chat.main().turns.last().unwrap().retrieval.clone().unwrap();
    assert_eq!((r.collection.as_str(), r.sources.len(), r.millis), ("notes", 1, 21.0));

    // A failed retrieval ends the answer with the reason; Esc before the sources stops it.
    a.update(Action::Chat { side: 0, event: ChatEvent::Failed { id: 1, error: "stop".into() } });
    for c in "more?".chars() {
        a.update(typed(c));
    }
    a.update(Action::Send);
    a.update(Action::Retrieved { id: 2, result: Err("Collection \"notes\" is empty.".into()) });
    assert!(!a.chat.any_streaming());
    assert!(a.chat.main().turns.last().unwrap().error.as_deref().unwrap().starts_with("No sources from notes"));
    for c in "again".chars() {
        a.update(typed(c));
    }
    a.update(Action::Send);
    assert!(a.chat.held.is_some());
    a.update(Action::StopGeneration);
    assert!(a.chat.held.is_none() && !a.chat.any_streaming());
    assert!(a.update(Action::Retrieved { id: 3, result: Ok(SearchResult { hits: vec![], mode: SearchMode::Hybrid, millis: 1.0, truncated: false }) }).is_empty());
}
