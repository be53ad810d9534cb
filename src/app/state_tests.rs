//! The workstation reducer's unit tests: keys and events in, state and commands out.

use super::*;
use crate::app::system::HISTORY;
use crate::engine::sysmon::SysSample;
use crate::engine::infer::worker::ChatEvent;
use crate::engine::jobs::{JobEvent, JobKind};
use std::collections::BTreeMap;

fn app() -> App {
    let (km, _) = Keymap::load(&BTreeMap::new());
    App::new(km, Theme::default_theme(), PathBuf::from("/ws"))
}

fn typed(c: char) -> Action {
    Action::Text(KeyPress { key: TextKey::Char(c), ctrl: false, alt: false, shift: false })
}

#[test]
fn focus_cycles_both_ways_and_jumps() {
    let mut a = app();
    a.update(Action::FocusPrev);
    assert_eq!(a.focus, PaneId::Knowledge);
    a.update(Action::FocusNext);
    assert_eq!(a.focus, PaneId::Training);
    a.update(Action::Focus(PaneId::System));
    assert_eq!(a.focus, PaneId::System);
}

#[test]
fn zoom_toggles_and_esc_unzooms() {
    let mut a = app();
    a.update(Action::ToggleZoom);
    assert!(a.zoomed);
    a.update(Action::Close);
    assert!(!a.zoomed);
}

#[test]
fn help_opens_scrolls_and_closes() {
    let mut a = app();
    a.update(Action::ToggleHelp);
    assert_eq!(a.mode(), Mode::Help);
    a.update(Action::ScrollDown);
    a.update(Action::ScrollDown);
    a.update(Action::ScrollUp);
    assert_eq!(a.overlay, Some(Overlay::Help { scroll: 1 }));
    a.update(Action::Close);
    assert_eq!(a.overlay, None);
}

#[test]
fn quit_asks_first_while_a_job_runs() {
    let mut a = app();
    a.update(Action::Job(JobEvent::Started { id: 1, kind: JobKind::Stress, title: "burn".into() }));
    assert!(a.update(Action::Quit).is_empty(), "quit with a job running asks first");
    assert!(!a.should_quit);
    assert_eq!(a.mode(), Mode::Confirm);
    a.update(Action::Deny);
    assert!(!a.should_quit && a.overlay.is_none());
    a.update(Action::Quit);
    assert_eq!(a.update(Action::Confirm), vec![Command::CancelAllJobs]);
    assert!(a.should_quit);
}

#[test]
fn quit_without_jobs_is_immediate() {
    let mut a = app();
    a.update(Action::Quit);
    assert!(a.should_quit);
}

#[test]
fn signals_quit_without_asking_and_cancel_jobs() {
    let mut a = app();
    a.update(Action::Job(JobEvent::Started { id: 1, kind: JobKind::Train, title: "t".into() }));
    assert_eq!(a.update(Action::ForceQuit("SIGHUP".into())), vec![Command::CancelAllJobs]);
    assert!(a.should_quit);
}

#[test]
fn typing_goes_to_the_chat_box_only_when_it_has_focus() {
    let mut a = app();
    a.update(typed('x'));
    assert!(a.chat.input.is_empty());
    a.update(Action::Focus(PaneId::Chat));
    for c in "hi".chars() {
        a.update(typed(c));
    }
    a.update(Action::Newline);
    a.update(Action::Paste("a\r\nb".into()));
    assert_eq!(a.chat.input.lines(), ["hi", "a", "b"]);
}

#[test]
fn a_finished_answer_saves_the_conversation_and_ctrl_n_starts_another() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::Chat { side: 0, event: ChatEvent::Loaded { model: crate::engine::types::ModelRef::File("m.gguf".into()), architecture: "llama".into(), context_size: 64, has_template: true } });
    a.update(Action::Paste("hi".into()));
    a.update(Action::Send);
    let id = a.chat.main().streaming.unwrap();
    assert!(a.update(Action::Chat { side: 0, event: ChatEvent::Token { id, text: "yo".into() } }).is_empty());
    let stats = answer_stats();
    let cmds = a.update(Action::Chat { side: 0, event: ChatEvent::Done { id, stats } });
    let [Command::SaveChat(r)] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!((r.title.as_str(), r.turns.len(), r.model.as_str()), ("hi", 2, "m.gguf"));
    let first = r.id.clone();
    a.update(Action::NewChat);
    assert!(a.chat.main().turns.is_empty() && a.chat.id.is_none());
    // Reopening puts it back.
    a.update(Action::ChatOpened(Ok(r.clone())));
    assert_eq!((a.chat.main().turns.len(), a.chat.id.clone()), (2, Some(first)));
    assert!(matches!(a.update(Action::ExportChat).as_slice(), [Command::ExportChat { .. }]));
}

#[test]
fn compare_sends_each_message_to_both_models() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::Chat { side: 0, event: ChatEvent::Loaded { model: crate::engine::types::ModelRef::File("a.gguf".into()), architecture: "llama".into(), context_size: 64, has_template: true } });
    a.update(Action::Compare);
    assert_eq!(a.overlay, Some(Overlay::Prompt));
    a.update(Action::Paste("b.gguf".into()));
    assert_eq!(a.update(Action::Confirm), vec![Command::LoadChatModel { side: 1, name: "b.gguf".into() }]);
    // A message sent while the second model loads goes to the first only, and says so.
    a.update(Action::Paste("early".into()));
    let cmds = a.update(Action::Send);
    assert!(matches!(cmds.as_slice(), [Command::Generate { .. }, Command::SaveChat(_)]), "{cmds:?}");
    assert!(a.notices.last().is_some_and(|n| n.text.contains("still loading")), "{:?}", a.notices.last().map(|n| &n.text));
    let early = a.chat.main().streaming.unwrap();
    a.update(Action::Chat { side: 0, event: ChatEvent::Done { id: early, stats: answer_stats() } });
    a.update(Action::Chat { side: 1, event: ChatEvent::Loaded { model: crate::engine::types::ModelRef::File("b.gguf".into()), architecture: "qwen2".into(), context_size: 64, has_template: true } });
    a.update(Action::Paste("hi".into()));
    let cmds = a.update(Action::Send);
    // The message is saved on both sides as it is sent.
    let [Command::Generate { .. }, Command::Generate { side: 1, .. }, Command::SaveChat(r)] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!((r.turns.last().map(|t| t.text.as_str()), r.compare.as_ref().map(|c| c.turns.len())), (Some("hi"), Some(1)));
    let b_id = a.chat.sides[1].streaming.unwrap();
    a.update(Action::Chat { side: 1, event: ChatEvent::Token { id: b_id, text: "B says".into() } });
    assert_eq!(a.chat.sides[1].turns.last().unwrap().text, "B says");
    assert!(a.chat.main().turns.last().unwrap().text.is_empty());
    assert_eq!(a.update(Action::StopGeneration), vec![Command::StopGeneration]);

    // Both answers end; each end saves the conversation, the second with both sides.
    let a_id = a.chat.main().streaming.unwrap();
    a.update(Action::Chat { side: 0, event: ChatEvent::Token { id: a_id, text: "A says".into() } });
    let cmds = a.update(Action::Chat { side: 0, event: ChatEvent::Done { id: a_id, stats: answer_stats() } });
    assert!(matches!(cmds.as_slice(), [Command::SaveChat(_)]), "{cmds:?}");
    let cmds = a.update(Action::Chat { side: 1, event: ChatEvent::Done { id: b_id, stats: answer_stats() } });
    let [Command::SaveChat(r)] = cmds.as_slice() else { panic!("{cmds:?}") };
    let side = r.compare.as_ref().expect("the second side is saved");
    // The first side also holds the exchange from before the second model loaded.
    assert_eq!((r.turns.len(), r.turns[3].text.as_str(), side.model.as_str(), side.turns.len(), side.turns[1].text.as_str()), (4, "A says", "b.gguf", 2, "B says"));
    let saved = r.clone();

    // Ctrl-R asks both models again, each replacing its own last answer.
    let cmds = a.update(Action::Regenerate);
    assert!(matches!(cmds.as_slice(), [Command::Generate { .. }, Command::Generate { side: 1, .. }]), "{cmds:?}");
    assert_eq!((a.chat.main().turns.len(), a.chat.sides[1].turns.len()), (4, 2));
    assert!(a.chat.sides[1].turns[1].text.is_empty());
    a.update(Action::StopGeneration);
    a.update(Action::Chat { side: 0, event: ChatEvent::Failed { id: a.chat.main().streaming.unwrap(), error: "stopped".into() } });
    let b2 = a.chat.sides[1].streaming.unwrap();
    a.update(Action::Chat { side: 1, event: ChatEvent::Failed { id: b2, error: "stopped".into() } });

    // Reopening the saved comparison puts each side's answers back.
    a.update(Action::ChatOpened(Ok(saved)));
    assert_eq!((a.chat.main().turns[3].text.as_str(), a.chat.sides[1].turns[1].text.as_str()), ("A says", "B says"));
    // Closing frees the second model.
    assert_eq!(a.update(Action::Compare), vec![Command::CloseCompare]);
    assert!(a.chat.sides.len() == 1);
}

fn answer_stats() -> crate::engine::types::Stats {
    crate::engine::types::Stats {
        prompt_tokens: 3,
        reused_tokens: 0,
        prompt_secs: 0.1,
        first_token_secs: 0.1,
        generated_tokens: 1,
        generation_secs: 0.1,
        context_used: 4,
        context_size: 64,
        stop: crate::engine::types::StopReason::EndOfTurn,
    }
}

fn typed_key(key: TextKey) -> Action {
    Action::Text(KeyPress { key, ctrl: false, alt: false, shift: false })
}

#[test]
fn the_settings_panel_sets_the_system_prompt_and_sampling() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::ChatSettings);
    assert_eq!(a.mode(), Mode::Form);
    a.update(Action::Paste("Answer briefly.".into()));
    a.update(Action::ScrollDown);
    for _ in 0..3 {
        a.update(typed_key(TextKey::Backspace));
    }
    a.update(Action::Paste("x".into()));
    a.update(Action::Confirm);
    // A bad number keeps the panel open and says which field.
    assert_eq!(a.overlay, Some(Overlay::ChatSettings));
    assert!(matches!(&a.chat.form.as_ref().unwrap().check, Some(Err(e)) if e.contains("temperature")));
    a.update(typed_key(TextKey::Backspace));
    a.update(Action::Paste("0".into()));
    a.update(Action::Confirm);
    assert_eq!(a.overlay, None);
    assert_eq!((a.chat.system.as_deref(), a.chat.sampling.temperature), (Some("Answer briefly."), 0.0));
}

#[test]
fn up_edits_an_earlier_message_and_resending_replaces_what_followed() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::Chat { side: 0, event: ChatEvent::Loaded { model: crate::engine::types::ModelRef::File("m.gguf".into()), architecture: "llama".into(), context_size: 64, has_template: true } });
    let stats = answer_stats();
    for msg in ["first", "second"] {
        a.update(Action::Paste(msg.into()));
        a.update(Action::Send);
        let id = a.chat.main().streaming.unwrap();
        a.update(Action::Chat { side: 0, event: ChatEvent::Done { id, stats: stats.clone() } });
    }
    assert_eq!(a.chat.main().turns.len(), 4);
    a.update(typed_key(TextKey::Up));
    assert_eq!(a.chat.input.lines(), ["second"]);
    a.update(typed_key(TextKey::Up));
    assert_eq!((a.chat.input.lines(), a.chat.editing), (&["first".to_string()][..], Some(0)));
    a.update(typed_key(TextKey::Down));
    a.update(typed_key(TextKey::Up));
    a.update(Action::Paste(" again".into()));
    let cmds = a.update(Action::Send);
    let [Command::Generate { messages, .. }, Command::SaveChat(_)] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content, "first again");
    assert_eq!(a.chat.main().turns.len(), 2);
    assert_eq!(a.chat.editing, None);
}

#[test]
fn the_last_answer_goes_to_the_clipboard() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::CopyAnswer);
    assert!(a.notices.last().unwrap().text.contains("No answer"));
    a.update(Action::Chat { side: 0, event: ChatEvent::Loaded { model: crate::engine::types::ModelRef::File("m.gguf".into()), architecture: "llama".into(), context_size: 64, has_template: true } });
    a.update(Action::Paste("hi".into()));
    a.update(Action::Send);
    let id = a.chat.main().streaming.unwrap();
    a.update(Action::Chat { side: 0, event: ChatEvent::Token { id, text: "héllo".into() } });
    assert_eq!(a.update(Action::CopyAnswer), vec![Command::CopyToClipboard("héllo".into())]);
}

#[test]
fn enter_on_a_gguf_model_opens_it_in_chat() {
    use crate::engine::infer::library::ModelEntry;
    let mut a = app();
    let cmds = a.update(Action::Focus(PaneId::Models));
    assert_eq!(cmds, vec![Command::RefreshModels { request: a.models.request }]);
    let entry = |name: &str, format: &str| ModelEntry {
        name: name.into(),
        path: format!("/m/{name}").into(),
        source: "workspace".into(),
        format: format.into(),
        architecture: "llama".into(),
        params: 1,
        quantization: "F16".into(),
        context_length: 1,
        file_size: 1,
        ram_needed: 1,
        problem: None,
    };
    a.update(Action::Models { request: a.models.request, result: Ok(vec![entry("folder", "hf"), entry("m.gguf", "gguf")]) });
    let cmds = a.update(Action::ExportModel);
    assert!(matches!(cmds.as_slice(), [Command::ExportModel { .. }]), "{cmds:?}");
    assert!(a.update(Action::ChatWithModel).is_empty());
    a.update(Action::ScrollDown);
    a.update(Action::ScrollDown);
    assert_eq!(a.models.selected, 1);
    assert_eq!(a.update(Action::ChatWithModel), vec![Command::LoadChatModel { side: 0, name: "/m/m.gguf".into() }]);
    assert_eq!(a.focus, PaneId::Chat);
}

#[test]
fn sending_without_a_model_says_so_and_keeps_the_text() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::Send);
    assert!(a.notices.last().unwrap().text.starts_with("Nothing to send"));
    a.update(typed('y'));
    a.update(Action::Send);
    assert!(a.notices.last().unwrap().text.contains("No model is loaded"));
    assert_eq!(a.chat.input.lines(), ["y"]);
    // Esc with nothing streaming moves on; while an answer streams it stops it.
    a.update(Action::StopGeneration);
    assert_eq!(a.focus, PaneId::System);
    a.update(Action::Focus(PaneId::Chat));
    a.update(Action::Chat { side: 0, event: crate::engine::infer::worker::ChatEvent::Loaded {
        model: crate::engine::types::ModelRef::File("m.gguf".into()),
        architecture: "llama".into(),
        context_size: 64,
        has_template: false,
    } });
    let cmds = a.update(Action::Send);
    assert!(matches!(cmds.as_slice(), [Command::Generate { .. }, Command::SaveChat(_)]), "{cmds:?}");
    assert!(a.chat.input.is_empty());
    assert_eq!(a.update(Action::StopGeneration), vec![Command::StopGeneration]);
    assert_eq!(a.focus, PaneId::Chat);
}

#[test]
fn errors_show_before_newer_info_and_esc_dismisses_them_in_turn() {
    let mut a = app();
    a.notify(Level::Error, "bad theme");
    a.notify(Level::Info, "imported");
    assert_eq!(a.current_notice().unwrap().1.text, "bad theme");
    a.update(Action::Close);
    assert_eq!(a.current_notice().unwrap().1.text, "imported");
    a.update(Action::Close);
    assert!(a.current_notice().is_none());
}

#[test]
fn import_prompt_completes_submits_and_asks_before_replacing() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Data));
    a.update(Action::OpenImport);
    assert_eq!(a.mode(), Mode::Prompt);
    a.update(Action::Paste("/data/pe".into()));
    assert_eq!(a.update(Action::Complete), vec![Command::CompletePath("/data/pe".into())]);
    let list = vec!["/data/people.csv".into(), "/data/people2.csv".into()];
    a.update(Action::PathCompletions { typed: "/data/pe".into(), list: list.clone() });
    assert_eq!(a.prompt.as_ref().unwrap().text(), "/data/people");
    // An answer for text the prompt no longer holds is dropped.
    a.update(Action::PathCompletions { typed: "/data/pe".into(), list: vec!["/data/pets.csv".into()] });
    assert_eq!(a.prompt.as_ref().unwrap().completions, list);
    a.update(Action::PathCompletions { typed: "/data/people".into(), list: vec!["/data/people.csv".into()] });
    assert_eq!(
        a.update(Action::Confirm),
        vec![Command::ImportDataset { path: "/data/people.csv".into(), replace: false }]
    );
    assert!(a.overlay.is_none());
    // The import job fails because the name is taken: lathe asks, and yes replaces.
    a.update(Action::Job(JobEvent::Started { id: 4, kind: JobKind::Import, title: "people.csv".into() }));
    a.update(Action::Job(JobEvent::Finished {
        id: 4,
        status: JobStatus::Exists("A dataset named people already exists; pass --replace".into()),
    }));
    assert_eq!(a.overlay, Some(Overlay::ConfirmReplace));
    assert_eq!(
        a.update(Action::Confirm),
        vec![Command::ImportDataset { path: "/data/people.csv".into(), replace: true }]
    );
    // A finished import refreshes the datasets.
    a.update(Action::Job(JobEvent::Started { id: 5, kind: JobKind::Import, title: "import".into() }));
    a.update(Action::Job(JobEvent::Progress { id: 5, fraction: Some(1.0), message: "imported people: 2 rows".into() }));
    let cmds = a.update(Action::Job(JobEvent::Finished { id: 5, status: JobStatus::Done }));
    assert!(cmds.contains(&Command::RefreshDatasets));
    assert_eq!(a.current_notice().unwrap().1.text, "imported people: 2 rows");
}

#[test]
fn up_and_down_at_the_editor_edges_walk_the_history() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Data));
    a.update(Action::Data(DataEvent::History(vec!["select 1".into(), "select 2".into()])));
    let key = |k| Action::Text(KeyPress { key: k, ctrl: false, alt: false, shift: false });
    a.update(key(TextKey::Up));
    assert_eq!(a.data.editor.lines(), ["select 2"]);
    a.update(key(TextKey::Up));
    assert_eq!(a.data.editor.lines(), ["select 1"]);
    a.update(key(TextKey::Down));
    assert_eq!(a.data.editor.lines(), ["select 2"]);
    // Inside a multi-line statement, arrows move the cursor.
    a.update(Action::Newline);
    a.update(key(TextKey::Up));
    assert_eq!(a.data.editor.lines(), ["select 2", ""]);
    assert_eq!(a.data.editor.cursor().0, 0);
}

#[test]
fn export_needs_a_result() {
    let mut a = app();
    a.update(Action::Focus(PaneId::Data));
    a.update(Action::OpenExport);
    assert!(a.overlay.is_none());
    assert!(a.notices.last().unwrap().text.starts_with("Run a query first"));
}

#[test]
fn an_older_runs_answer_does_not_overwrite_a_newer_one() {
    use crate::engine::data::runs::RunRow;
    let mut a = app();
    let [Command::RefreshRuns { request: first }] = a.update(Action::Focus(PaneId::Runs))[..] else { panic!() };
    let [Command::RefreshRuns { request: second }] = a.update(Action::RefreshRuns)[..] else { panic!() };
    assert!(second > first);
    let row = |id: &str| RunRow { id: id.into(), ..Default::default() };
    a.update(Action::Runs { request: second, result: Ok(vec![row("new-1"), row("new-2")]) });
    // The first request's answer arrives late: it is dropped.
    a.update(Action::Runs { request: first, result: Ok(vec![row("old")]) });
    assert_eq!(a.training.runs.rows().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["new-1", "new-2"]);
}

#[test]
fn job_events_fold_into_the_status_list() {
    let mut a = app();
    // The service records jobs in lathe.jobs; the reducer only shows them.
    assert!(a.update(Action::Job(JobEvent::Started { id: 7, kind: JobKind::Export, title: "tiny.gguf".into() })).is_empty());
    assert!(a.update(Action::Job(JobEvent::Progress { id: 7, fraction: Some(0.25), message: "q8_0".into() })).is_empty());
    assert_eq!(a.running_jobs().next().unwrap().fraction, Some(0.25));
    assert!(a.update(Action::Job(JobEvent::Finished { id: 7, status: JobStatus::Failed("disk full".into()) })).is_empty());
    assert_eq!(a.running_jobs().count(), 0);
    let n = a.notices.last().unwrap();
    assert_eq!((n.level, n.text.as_str()), (Level::Error, "export tiny.gguf failed: disk full"));
}

#[test]
fn samples_build_bounded_histories() {
    let mut a = app();
    for i in 0..(HISTORY + 10) {
        a.update(Action::Sys(SysSample {
            cpu_per_core: vec![i as f32 % 100.0, 50.0],
            cpu_total: 10.0,
            mem_used: 1,
            mem_total: 4,
            ..SysSample::default()
        }));
    }
    assert_eq!(a.sys.cpu.len(), HISTORY);
    assert_eq!(a.sys.per_core.len(), 2);
    assert_eq!(*a.sys.mem.last().unwrap(), 25);
}

#[test]
fn next_theme_cycles_through_all_shipped() {
    let mut a = app();
    let mut names = vec![a.theme().name.clone()];
    for _ in 1..a.themes.len() {
        a.update(Action::NextTheme);
        names.push(a.theme().name.clone());
    }
    assert_eq!(names, ["dark", "light", "high-contrast", "basic16"]);
    a.update(Action::NextTheme);
    assert_eq!(a.theme().name, "dark");
}

#[test]
fn stress_and_cancel_become_commands() {
    let mut a = app();
    assert_eq!(
        a.update(Action::StartStress { threads: 2, seconds: None }),
        vec![Command::StartStress { threads: 2, seconds: None }]
    );
    assert_eq!(a.update(Action::CancelJob(3)), vec![Command::CancelJob(3)]);
}

/// A run the session did not start (a server's, seen on attaching): its job and its start take
/// the Training pane, and a later run replaces a finished one rather than adding to its curve.
#[test]
fn a_run_started_elsewhere_becomes_the_live_run() {
    use crate::engine::train::trainer::TrainEvent;
    use crate::engine::types::RunStatus;
    let started = |run: &str| {
        Action::Train(TrainEvent::Started {
            run_id: run.into(),
            model: "m".into(),
            view: "instruct".into(),
            method: "full".into(),
            base: "f32".into(),
            optimizer: "adamw".into(),
            total_steps: 40,
            start_step: 0,
            train_examples: 10,
            eval_examples: 2,
            trainable_params: 1,
            total_params: 1,
            lengths: crate::engine::train::text::length_stats(&[4, 5], 8),
        })
    };
    let mut a = app();
    a.update(Action::Job(JobEvent::Started { id: 7, kind: JobKind::Train, title: "instruct".into() }));
    a.update(started("r-1"));
    let live = a.training.live.clone().unwrap();
    assert_eq!((live.id.as_str(), live.job, live.status, live.total), ("r-1", Some(7), RunStatus::Running, 40));
    a.training.live.as_mut().unwrap().train_points.push((1.0, 2.0));
    a.update(Action::TrainDone(Ok(("r-1".into(), RunStatus::Completed))));
    a.update(Action::Job(JobEvent::Started { id: 8, kind: JobKind::Train, title: "instruct".into() }));
    a.update(started("r-2"));
    let live = a.training.live.clone().unwrap();
    assert_eq!((live.id.as_str(), live.job, live.train_points.len()), ("r-2", Some(8), 0));
}
