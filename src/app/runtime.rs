//! The event loop: terminal input, service events and signals feed one reducer; commands go out
//! to the service (`effects`); the screen is drawn from state only when something changed, at a
//! capped rate, after every queued message has been reduced.

use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyEventKind};
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::Terminal;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::action::{Action, Command};
use super::effects;
use super::keymap::key_press;
use super::state::App;
use crate::engine::workspace::Workspace;
use crate::service::{Service, Settings};

/// Called with the state after each frame is drawn.
pub type FrameHook = Box<dyn FnMut(&App)>;

pub struct LoopOptions {
    pub max_fps: u32,
    /// Quit right after the first frame is on screen (for `lathe bench ui`).
    pub exit_after_first_frame: bool,
    /// Called after every frame is drawn (benchmarks measure latency with it).
    pub on_frame: Option<FrameHook>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions { max_fps: 60, exit_after_first_frame: false, on_frame: None }
    }
}

/// Turns one terminal event into an action through the keymap.
pub fn map_event(app: &App, ev: Event) -> Option<Action> {
    match ev {
        // Key releases (kitty protocol, Windows) would double every key.
        Event::Key(k) if k.kind != KeyEventKind::Release => {
            tracing::trace!(?k, mode = ?app.mode(), "key");
            let text = app.text_input_focused();
            match app.keymap.resolve(app.mode(), text, &k) {
                Some(a) => Some(a),
                None if text => Some(Action::Text(key_press(&k))),
                None => None,
            }
        }
        Event::Paste(s) => Some(Action::Paste(s)),
        Event::Resize(w, h) => Some(Action::Resize(w, h)),
        _ => None,
    }
}

fn reduce(app: &mut App, service: &mut Service, action: Action) {
    if !matches!(action, Action::Sys(_) | Action::Job(crate::engine::jobs::JobEvent::Progress { .. })) {
        tracing::trace!(?action, "action");
    }
    for cmd in app.update(action) {
        effects::execute(service, cmd);
    }
}

/// Runs until the app quits or the input ends.
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    service: &mut Service,
    mut input: S,
    mut rx: UnboundedReceiver<Action>,
    mut opts: LoopOptions,
) -> io::Result<()>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin + Send + 'static,
{
    // Input is read on its own task and forwarded to a channel, so the loop can drain it with
    // try_recv. (Polling crossterm's EventStream with a no-op waker to drain it would leave its
    // wake-up thread holding that waker, and keys would wait for the next engine event.)
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<io::Result<Event>>();
    let reader = tokio::spawn(async move {
        while let Some(ev) = input.next().await {
            if in_tx.send(ev).is_err() {
                break;
            }
        }
    });
    let result = run_inner(terminal, app, service, &mut in_rx, &mut rx, &mut opts).await;
    reader.abort();
    result
}

async fn run_inner<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    service: &mut Service,
    input: &mut UnboundedReceiver<io::Result<Event>>,
    rx: &mut UnboundedReceiver<Action>,
    opts: &mut LoopOptions,
) -> io::Result<()> {
    let frame = Duration::from_secs(1) / opts.max_fps.max(1);
    let size = terminal.size()?;
    app.update(Action::Resize(size.width, size.height));
    let mut last_draw: Option<Instant> = None;
    let mut input_open = true;
    loop {
        if app.dirty {
            let due = last_draw.map(|t| t + frame).unwrap_or_else(Instant::now);
            if Instant::now() >= due {
                terminal.draw(|f| crate::ui::draw(f, app))?;
                app.dirty = false;
                last_draw = Some(Instant::now());
                if let Some(cb) = opts.on_frame.as_mut() {
                    cb(app);
                }
                if opts.exit_after_first_frame {
                    return Ok(());
                }
            }
        }
        // Wait for the next message, or for the next frame slot when a draw is pending.
        let deadline = app.dirty.then(|| last_draw.map(|t| t + frame).unwrap_or_else(Instant::now));
        tokio::select! {
            ev = input.recv(), if input_open => match ev {
                Some(Ok(ev)) => {
                    if let Some(a) = map_event(app, ev) {
                        reduce(app, service, a);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => input_open = false,
            },
            msg = rx.recv() => match msg {
                Some(a) => reduce(app, service, a),
                None if !input_open => return Ok(()),
                None => {}
            },
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
        // Drain everything already queued before drawing once.
        loop {
            let mut progressed = false;
            while let Ok(a) = rx.try_recv() {
                reduce(app, service, a);
                progressed = true;
            }
            if input_open {
                loop {
                    match input.try_recv() {
                        Ok(Ok(ev)) => {
                            if let Some(a) = map_event(app, ev) {
                                reduce(app, service, a);
                            }
                            progressed = true;
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            input_open = false;
                            break;
                        }
                    }
                }
            }
            if !progressed || app.should_quit {
                break;
            }
        }
        if app.should_quit {
            return Ok(());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

/// Everything the TUI needs, made from the config.
pub struct Launch {
    pub app: App,
    /// Commands to run once the engines have started (e.g. load a chat model).
    pub initial: Vec<Command>,
    pub workspace: Workspace,
    pub sample_interval: Duration,
    pub max_fps: u32,
    /// How chat models are loaded.
    pub chat_options: crate::engine::infer::llama::Options,
}

/// Opens the workstation in the real terminal and runs it to the end.
pub fn run_terminal(launch: Launch) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let Launch { mut app, workspace, sample_interval, max_fps, initial, chat_options } = launch;
        let (tx, rx) = mpsc::unbounded_channel();
        spawn_signal_listener(tx.clone())?;
        let settings = Settings { sample_interval: Some(sample_interval), chat: chat_options, attach: true, ..Default::default() };
        let mut service = effects::start_service(tx.clone(), Some(&workspace), settings);
        // Said from the first frame: the workspace's owner is a server, and where.
        app.server = service.attached_to().map(|address| crate::app::state::ServerLink { address, status: None });
        for c in initial {
            effects::execute(&mut service, c);
        }
        let mut guard = super::terminal::TerminalGuard::enter()?;
        let opts = LoopOptions {
            max_fps,
            exit_after_first_frame: std::env::var_os("LATHE_EXIT_AFTER_FIRST_FRAME").is_some(),
            on_frame: std::env::var_os("LATHE_DEBUG_PANIC_AFTER_FIRST_FRAME")
                .map(|_| Box::new(|_: &App| panic!("panic requested by LATHE_DEBUG_PANIC_AFTER_FIRST_FRAME")) as FrameHook),
        };
        let (input_tx, input) = futures::channel::mpsc::unbounded();
        spawn_input_thread(input_tx);
        let result = run(&mut *guard.terminal, &mut app, &mut service, input, rx, opts).await;
        // An answer cut off by the exit (a quit, or the SSH link dropping) is saved as far as it
        // got, and every save asked for lands before the process ends.
        if app.chat.any_streaming() {
            if let Some(r) = app.chat.record() {
                service.save_chat(r);
            }
        }
        // The shell gets its screen back first; closing the service (saves, the catalog) follows.
        drop(guard);
        service.shutdown();
        tracing::info!("workstation closed");
        result.map_err(anyhow::Error::from)
    })
}

/// Reads the terminal on its own OS thread. crossterm retries a read that returns end-of-file
/// (the terminal is gone, e.g. the SSH link dropped) without end; on this thread that can only
/// cost the poll window, and the thread notices the hang-up and reports it, so lathe exits.
fn spawn_input_thread(tx: futures::channel::mpsc::UnboundedSender<io::Result<Event>>) {
    use crossterm::event;
    let _ = std::thread::Builder::new().name("lathe-input".into()).spawn(move || loop {
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => {
                let ev = event::read();
                let failed = ev.is_err();
                if tx.unbounded_send(ev).is_err() || failed {
                    return;
                }
            }
            Ok(false) => {
                if tx.is_closed() {
                    return;
                }
                if !terminal_alive() {
                    tracing::warn!("the terminal hung up");
                    let _ = tx.unbounded_send(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the terminal hung up")));
                    return;
                }
            }
            Err(e) => {
                let _ = tx.unbounded_send(Err(e));
                return;
            }
        }
    });
}

/// A hung-up terminal fails tcgetattr (EIO); a live one answers.
fn terminal_alive() -> bool {
    // SAFETY: tcgetattr writes into the zeroed termios we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(libc::STDOUT_FILENO, &mut t) == 0
    }
}

/// SIGTERM, SIGHUP (the SSH link dropped) and SIGINT (from outside; Ctrl-C in raw mode is a key)
/// become a ForceQuit, so the loop ends and the guard restores the terminal.
fn spawn_signal_listener(tx: UnboundedSender<Action>) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!("received {name}");
        let _ = tx.send(Action::ForceQuit(name.into()));
    });
    Ok(())
}
