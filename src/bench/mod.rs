//! `lathe bench ui`: lathe's own start-up, idle cost, frame render time and key latency while a
//! job keeps every core busy. Each figure is printed beside its target; nothing here is asserted.
//! The other benchmarks (`bench chat`, `bench data`, `bench embed`, `bench imatrix`, `bench train`, ...) are its submodules. Benchmarks
//! are a front end of their own: they drive the workstation (`app`) as a user would.

pub mod chat;
pub mod data;
pub mod embed;
pub mod imatrix;
pub mod kb;
pub mod qlora;
pub mod serve;
pub mod train;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::action::{Action, PaneId};
use crate::app::keymap::Keymap;
use crate::app::effects::start_service;
use crate::app::runtime::{self, LoopOptions};
use crate::app::state::App;
use crate::engine::sysmon::Sampler;
use crate::ui::theme::Theme;

pub struct Figure {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub target: f64,
    pub note: String,
}

impl Figure {
    fn line(&self) -> String {
        let ok = if self.value < self.target { "ok" } else { "OVER" };
        format!(
            "{:<42} {:>9.2} {:<3}  target < {:<7} {:<4} {}",
            self.name, self.value, self.unit, self.target, ok, self.note
        )
    }
}

pub fn run_ui(home: &Path, idle_seconds: u64, starts: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let ws = home.join("bench-ui");
    std::fs::create_dir_all(&ws)?;
    println!("lathe bench ui  (workspace {}, {} cores)", ws.display(), cores());
    let mut figures = Vec::new();

    let times = first_frame_times(&exe, &ws, starts)?;
    figures.push(Figure {
        name: "process start to first frame (median)",
        value: median(&times),
        unit: "ms",
        target: 150.0,
        note: format!("{} starts in a 200x50 pty, min {:.1} ms, until the frame is written", times.len(), min(&times)),
    });
    println!("{}", figures.last().unwrap().line());

    let (cpu, rss, exit_ok) = idle(&exe, &ws, idle_seconds)?;
    figures.push(Figure {
        name: "idle CPU",
        value: cpu,
        unit: "%",
        target: 1.0,
        note: format!("over {idle_seconds} s after 2 s warm-up, one core = 100%"),
    });
    println!("{}", figures.last().unwrap().line());
    figures.push(Figure {
        name: "idle RSS",
        value: rss as f64 / 1e6,
        unit: "MB",
        target: 60.0,
        note: format!("VmRSS at the end of the idle period; SIGTERM exit {}", if exit_ok { "clean" } else { "NOT clean" }),
    });
    println!("{}", figures.last().unwrap().line());

    let (mean, p99) = render_times(&ws)?;
    figures.push(Figure {
        name: "render a full 200x50 frame (mean)",
        value: mean,
        unit: "ms",
        target: 2.0,
        note: format!("p99 {p99:.3} ms, all panes in the grid, into ratatui's TestBackend"),
    });
    println!("{}", figures.last().unwrap().line());

    let lat = key_latency_under_load(&ws)?;
    figures.push(Figure {
        name: "key to frame while every core is busy (p99)",
        value: percentile(&lat, 0.99),
        unit: "ms",
        target: 33.4,
        note: format!(
            "{} keys, median {:.2} ms, max {:.2} ms; stress job on {} threads; 60 fps cap",
            lat.len(),
            median(&lat),
            lat.iter().cloned().fold(0.0, f64::max),
            cores()
        ),
    });
    println!("{}", figures.last().unwrap().line());
    let _ = std::fs::remove_dir_all(home);
    Ok(())
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The last JSON line a measurement process printed (its stderr's last line if it failed).
pub(crate) fn json_result(out: &std::process::Output, what: &str) -> anyhow::Result<serde_json::Value> {
    if !out.status.success() {
        anyhow::bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| anyhow::anyhow!("{what} printed no result"))?;
    Ok(serde_json::from_str(line)?)
}

/// The Python that runs the peers: LATHE_PEER_PYTHON (a virtual environment's python), else python3.
pub(crate) fn peer_python() -> String {
    std::env::var("LATHE_PEER_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The CPU's model name, from /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::INFINITY, f64::min)
}

/// A child process on its own pseudo-terminal, as a user's terminal would run it.
pub struct PtyChild {
    pub child: Child,
    reader: Option<std::thread::JoinHandle<(Vec<u8>, Option<Instant>)>>,
}

/// What lathe writes when it leaves the alternate screen, right after its last frame.
const LEAVE_ALT_SCREEN: &[u8] = b"\x1b[?1049l";

impl PtyChild {
    pub fn spawn(exe: &Path, args: &[&str], envs: &BTreeMap<&str, String>, cols: u16, rows: u16) -> io::Result<PtyChild> {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two fds into the provided ints; the winsize is read only.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just returned by openpty and are owned here.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(cmd);
        // Drain the screen output so the child never blocks on a full pty buffer.
        let mut file = std::fs::File::from(master);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut left_alt = None;
            let mut buf = [0u8; 8192];
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let from = all.len().saturating_sub(LEAVE_ALT_SCREEN.len());
                all.extend_from_slice(&buf[..n]);
                if left_alt.is_none() && all[from..].windows(LEAVE_ALT_SCREEN.len()).any(|w| w == LEAVE_ALT_SCREEN) {
                    left_alt = Some(Instant::now());
                }
            }
            (all, left_alt)
        });
        Ok(PtyChild { child, reader: Some(reader) })
    }

    /// Waits for exit; returns the status, everything the child wrote to its terminal and when
    /// it left the alternate screen.
    pub fn wait(mut self) -> io::Result<(std::process::ExitStatus, Vec<u8>, Option<Instant>)> {
        let status = self.child.wait()?;
        let (out, left_alt) = self.reader.take().and_then(|r| r.join().ok()).unwrap_or_default();
        Ok((status, out, left_alt))
    }
}

fn bench_env(ws: &Path) -> BTreeMap<&'static str, String> {
    let mut e = BTreeMap::new();
    e.insert("LATHE_HOME", ws.display().to_string());
    e.insert("TERM", "xterm-256color".to_string());
    // Keep the user's own config out of the measurement.
    e.insert("LATHE_CONFIG", ws.join("no-config.toml").display().to_string());
    e
}

fn first_frame_times(exe: &Path, ws: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut env = bench_env(ws);
    env.insert("LATHE_EXIT_AFTER_FIRST_FRAME", "1".into());
    let mut times = Vec::new();
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let child = PtyChild::spawn(exe, &[], &env, 200, 50)?;
        let (status, out, left_alt) = child.wait()?;
        anyhow::ensure!(status.success(), "lathe exited with {status}: {}", String::from_utf8_lossy(&out));
        // The first frame is complete when lathe leaves the alternate screen right after it.
        let end = left_alt.ok_or_else(|| anyhow::anyhow!("lathe never drew a frame"))?;
        times.push((end - t).as_secs_f64() * 1e3);
    }
    Ok(times)
}

fn proc_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// Runs the workstation idle for `secs` and returns (CPU %, RSS bytes, exited cleanly on SIGTERM).
fn idle(exe: &Path, ws: &Path, secs: u64) -> anyhow::Result<(f64, u64, bool)> {
    let child = PtyChild::spawn(exe, &[], &bench_env(ws), 200, 50)?;
    let pid = child.child.id();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t0 = proc_ticks(pid)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs.max(1)));
    let t1 = proc_ticks(pid)?;
    let wall = start.elapsed().as_secs_f64();
    let rss = crate::engine::sysmon::rss_of(pid)?;
    // SAFETY: pid is our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let (status, _, _) = child.wait()?;
    Ok(((t1 - t0) as f64 / hz / wall * 100.0, rss, status.success()))
}

fn bench_app(ws: &Path) -> App {
    let (km, _) = Keymap::load(&BTreeMap::new());
    App::new(km, Theme::default_theme(), ws.to_path_buf())
}

/// Renders the whole grid at 200x50 with live System readings, many times.
fn render_times(ws: &Path) -> anyhow::Result<(f64, f64)> {
    let mut app = bench_app(ws);
    let mut sampler = Sampler::new(ws)?;
    for _ in 0..3 {
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        app.update(Action::Sys(sampler.sample()));
    }
    app.update(Action::Focus(PaneId::System));
    let mut term = Terminal::new(TestBackend::new(200, 50))?;
    let mut times = Vec::new();
    for i in 0..1200 {
        // Alternate focus so each frame differs from the last, as in use.
        app.update(Action::Focus(if i % 2 == 0 { PaneId::System } else { PaneId::Chat }));
        let t = Instant::now();
        term.draw(|f| crate::ui::draw(f, &app))?;
        if i >= 200 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok((mean, percentile(&times, 0.99)))
}

/// Types into the chat box through the real event loop while a stress job keeps every core busy,
/// and measures each key from send to the frame that shows it.
fn key_latency_under_load(ws: &Path) -> anyhow::Result<Vec<f64>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut app = bench_app(ws);
        app.update(Action::Focus(PaneId::Chat));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut service = start_service(tx.clone(), None, Default::default());
        tx.send(Action::StartStress { threads: cores(), seconds: None })?;
        let (key_tx, key_rx) = futures::channel::mpsc::unbounded::<io::Result<Event>>();
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
        let (sent2, lat2) = (sent.clone(), lat.clone());
        let on_frame = Box::new(move |app: &App| {
            let shown = app.chat.input.lines().first().map(|l| l.chars().count()).unwrap_or(0);
            let sent = sent2.lock().unwrap();
            let mut lat = lat2.lock().unwrap();
            let now = Instant::now();
            while lat.len() < shown.min(sent.len()) {
                let i = lat.len();
                lat.push((now - sent[i]).as_secs_f64() * 1e3);
            }
        });
        const KEYS: usize = 200;
        let typist = std::thread::spawn(move || {
            // Give the stress threads a moment to occupy the cores.
            std::thread::sleep(Duration::from_millis(500));
            for i in 0..KEYS {
                let c = (b'a' + (i % 26) as u8) as char;
                sent.lock().unwrap().push(Instant::now());
                let _ = key_tx.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))));
                std::thread::sleep(Duration::from_millis(25));
            }
            std::thread::sleep(Duration::from_millis(200));
            let _ = key_tx.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))));
            let _ = key_tx.unbounded_send(Ok(Event::Key(KeyEvent::new(KeyCode::Char('y'), KeyModifiers::NONE))));
        });
        let mut term = Terminal::new(TestBackend::new(200, 50))?;
        let opts = LoopOptions { max_fps: 60, exit_after_first_frame: false, on_frame: Some(on_frame) };
        runtime::run(&mut term, &mut app, &mut service, key_rx, rx, opts).await?;
        service.cancel_all_jobs();
        let _ = typist.join();
        let v = lat.lock().unwrap().clone();
        anyhow::ensure!(v.len() == KEYS, "only {} of {KEYS} keys reached the screen", v.len());
        Ok(v)
    })
}

/// The default folder for bench workspaces.
pub fn default_home() -> PathBuf {
    std::env::temp_dir().join(format!("lathe-bench-{}", std::process::id()))
}
