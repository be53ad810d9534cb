//! Typing stays responsive while an engine keeps every core busy: keys go through the real event
//! loop while a stress job runs on all cores, and every key must reach the screen while that job
//! is still running (no waiting for it to finish). Timing is measured by `lathe bench ui`, not here.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use lathe::app::action::{Action, PaneId};
use lathe::app::keymap::Keymap;
use lathe::app::effects::start_service;
use lathe::app::runtime::{run, LoopOptions};
use lathe::app::state::App;
use lathe::engine::jobs::{JobKind, JobStatus};
use lathe::ui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

#[test]
fn keys_reach_the_screen_while_every_core_is_busy() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (km, _) = Keymap::load(&BTreeMap::new());
        let mut app = App::new(km, Theme::default_theme(), PathBuf::from("/ws"));
        app.update(Action::Focus(PaneId::Chat));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut service = start_service(tx.clone(), None, Default::default());
        let cores = std::thread::available_parallelism().unwrap().get();
        tx.send(Action::StartStress { threads: cores, seconds: None }).unwrap();

        // (chars shown, a stress job running, its progress messages so far) at each frame.
        let frames: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
        let frames2 = frames.clone();
        let on_frame = Box::new(move |app: &App| {
            let shown = app.chat.input.lines()[0].chars().count();
            let busy = app.running_jobs().any(|j| j.kind == JobKind::Stress && j.status == JobStatus::Running && !j.message.is_empty());
            frames2.lock().unwrap().push((shown, busy));
        });
        const KEYS: usize = 300;
        let (keys, key_rx) = futures::channel::mpsc::unbounded::<io::Result<Event>>();
        let frames3 = frames.clone();
        let typist = std::thread::spawn(move || {
            // Start typing once the stress job reports that its threads are busy.
            while !frames3.lock().unwrap().iter().any(|(_, busy)| *busy) {
                std::thread::sleep(Duration::from_millis(20));
            }
            for i in 0..KEYS {
                let c = (b'a' + (i % 26) as u8) as char;
                keys.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            // Wait until the last key is on screen, then quit (lathe asks because a job runs).
            while !frames3.lock().unwrap().iter().any(|(n, _)| *n == KEYS) {
                std::thread::sleep(Duration::from_millis(20));
            }
            keys.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)))).unwrap();
            keys.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char('y'), KeyModifiers::NONE)))).unwrap();
        });
        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
        let opts = LoopOptions { max_fps: 60, exit_after_first_frame: false, on_frame: Some(on_frame) };
        tokio::time::timeout(Duration::from_secs(120), run(&mut term, &mut app, &mut service, key_rx, rx, opts))
            .await
            .expect("the loop finished")
            .unwrap();
        typist.join().unwrap();

        let expected: String = (0..KEYS).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        assert_eq!(app.chat.input.lines()[0], expected, "keys lost or reordered");
        let frames = frames.lock().unwrap();
        let full = frames.iter().find(|(n, _)| *n == KEYS).expect("a frame showed every key");
        assert!(full.1, "the stress job was not running when the last key was drawn");
        // Keys were drawn in many frames as they came, not all at once after the job.
        let distinct: std::collections::BTreeSet<usize> = frames.iter().map(|(n, _)| *n).collect();
        assert!(distinct.len() > 10, "keys drawn in only {} frames", distinct.len());
        assert!(app.should_quit);
        service.cancel_all_jobs();
    });
}

/// With no engine sending anything, a key alone must wake the loop and reach the screen.
#[test]
fn a_key_alone_wakes_the_loop() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (km, _) = Keymap::load(&BTreeMap::new());
        let mut app = App::new(km, Theme::default_theme(), PathBuf::from("/ws"));
        app.update(Action::Focus(PaneId::Chat));
        let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut service = start_service(_tx.clone(), None, Default::default());
        let shown: Arc<Mutex<Vec<usize>>> = Arc::default();
        let shown2 = shown.clone();
        let on_frame = Box::new(move |app: &App| shown2.lock().unwrap().push(app.chat.input.lines()[0].len()));
        let (keys, key_rx) = futures::channel::mpsc::unbounded::<io::Result<Event>>();
        let shown3 = shown.clone();
        let typist = std::thread::spawn(move || {
            for (i, c) in "abc".chars().enumerate() {
                // Wait for the first frame (and then each key's frame) before the next key.
                while shown3.lock().unwrap().last() != Some(&i) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(50));
                keys.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)))).unwrap();
            }
            while shown3.lock().unwrap().last() != Some(&3) {
                std::thread::sleep(Duration::from_millis(5));
            }
            keys.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)))).unwrap();
        });
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let opts = LoopOptions { max_fps: 60, exit_after_first_frame: false, on_frame: Some(on_frame) };
        // Nothing else wakes the loop here: a stuck key would hang until this timeout.
        tokio::time::timeout(Duration::from_secs(60), run(&mut term, &mut app, &mut service, key_rx, rx, opts))
            .await
            .expect("every key was handled without another event to wake the loop")
            .unwrap();
        typist.join().unwrap();
        assert_eq!(app.chat.input.lines()[0], "abc");
    });
}
