//! End to end in a real terminal: the built binary runs inside tmux; keys are sent with
//! send-keys and the screen read with capture-pane. Checks pane moves, help, resize, quitting and
//! that the shell gets a clean screen back after quit, SIGTERM, SIGHUP and a panic.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
    home: PathBuf,
}

impl Tmux {
    fn start(name: &str, w: u16, h: u16) -> Tmux {
        let socket = format!("lathe-e2e-{}-{name}", std::process::id());
        let home = std::env::temp_dir().join(&socket);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join("config")).unwrap();
        let t = Tmux { socket, home };
        let shell = "env -u NO_COLOR -u RUST_BACKTRACE PS1='e2e$ ' sh";
        t.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "e2e", "-x", &w.to_string(), "-y", &h.to_string(), shell]);
        t.wait_for("e2e$");
        t
    }

    /// A new tmux server on the same socket and home (the last one was killed).
    fn restart(&self, w: u16, h: u16) {
        let shell = "env -u NO_COLOR -u RUST_BACKTRACE PS1='e2e$ ' sh";
        self.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "e2e", "-x", &w.to_string(), "-y", &h.to_string(), shell]);
        self.wait_for("e2e$");
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is installed (make test installs it)");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "e2e", k]);
        }
    }

    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "e2e", "-l", line]);
        self.tmux(&["send-keys", "-t", "e2e", "Enter"]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "e2e"])
    }

    fn wait_until(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `text` shows within `max` (not an error if it does not).
    fn seen_within(&self, text: &str, max: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < max {
            if self.screen().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait_until(text, |s| s.contains(text))
    }

    /// Waits until every one of `texts` is on screen at once (a frame caught half-drawn has some).
    fn wait_for_all(&self, texts: &[&str]) -> String {
        self.wait_until(&texts.join(" + "), |s| texts.iter().all(|t| s.contains(t)))
    }

    fn wait_gone(&self, text: &str) -> String {
        self.wait_until(&format!("{text} to go"), |s| !s.contains(text))
    }

    /// Starts lathe from the shell with its own workspace and config dir.
    fn launch(&self, extra_env: &str) {
        self.launch_no_wait(extra_env);
        self.wait_for("1 Training");
    }

    fn launch_no_wait(&self, extra_env: &str) {
        self.launch_with(extra_env, "");
    }

    fn launch_with(&self, extra_env: &str, args: &str) {
        let cmd = format!(
            "{extra_env} LATHE_HOME={} XDG_CONFIG_HOME={} {} {args}; echo \"exit=$?\"",
            self.home.join("ws").display(),
            self.home.join("config").display(),
            env!("CARGO_BIN_EXE_lathe")
        );
        self.type_line(&cmd);
    }

    fn lathe_pid(&self) -> String {
        let shell = self.tmux(&["display-message", "-p", "-t", "e2e", "#{pane_pid}"]);
        let out = Command::new("pgrep").args(["-P", shell.trim(), "lathe"]).output().unwrap();
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!pid.is_empty(), "lathe is not running");
        pid
    }

    /// After lathe ends: the exit line and a prompt are there and no pane is left on screen.
    fn assert_clean_exit(&self, code: &str) -> String {
        self.wait_for(&format!("exit={code}"));
        let s = self.wait_until("the prompt", |s| s.trim_end().ends_with("e2e$"));
        for leftover in ["1 Training", "No run in this session", "help", "Per core"] {
            assert!(!s.contains(leftover), "TUI left {leftover:?} on screen:\n{s}");
        }
        // The terminal is back in cooked mode: a typed command runs.
        self.type_line("echo cooked-$((40+2))");
        self.wait_for("cooked-42");
        s
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[test]
fn panes_help_resize_and_quit() {
    let t = Tmux::start("main", 100, 30);
    t.launch("");
    t.wait_for("No run in this session");

    t.keys(&["5"]);
    t.wait_for("Per core");
    t.keys(&["Tab"]);
    t.wait_for("No runs recorded");
    t.keys(&["BTab", "BTab"]);
    t.wait_for("No model loaded");

    // Chat's box takes plain keys as typing; Tab leaves it.
    t.keys(&["Tab", "3"]);
    // The SQL editor has the keyboard; a new workspace holds the bundled demo datasets.
    t.wait_for("F5 or Ctrl-R");
    // Ctrl-Space completes SQL keywords (and table and column names).
    t.tmux(&["send-keys", "-t", "e2e", "-l", "sel"]);
    t.keys(&["C-Space"]);
    t.wait_for("select");
    t.tmux(&["send-keys", "-t", "e2e", "-l", " task, count(*) as n from instruct group by task order by task"]);
    t.keys(&["F5"]);
    t.wait_for_all(&["4 rows", "reverse", "2000"]);
    // Into the grid, down to the last row, and the row in full.
    t.keys(&["F6", "End", "Enter"]);
    t.wait_for_all(&["Row 4 (Esc closes)", "sort"]);
    t.keys(&["Escape"]);
    t.wait_gone("Row 4 (Esc closes)");
    // The training-set views of the demo data, with formatted examples.
    t.keys(&["v"]);
    t.wait_for_all(&["assistant: ", "Training-set views", "chat  chat", "example 1"]);
    t.keys(&["Escape"]);
    t.wait_gone("Training-set views");
    t.keys(&["?"]);
    t.wait_for_all(&["Keys (", "next pane", "zoom"]);
    t.keys(&["Escape"]);
    t.wait_gone("Keys (");

    t.tmux(&["resize-window", "-t", "e2e", "-x", "50", "-y", "12"]);
    t.wait_for("Enlarge the window");
    t.tmux(&["resize-window", "-t", "e2e", "-x", "180", "-y", "48"]);
    // The wide grid shows every pane at once.
    let s = t.wait_until("the grid", |s| s.contains("No run in this session") && s.contains("Per core") && s.contains("reverse"));
    assert!(s.contains("No runs recorded"), "{s}");

    t.keys(&["z"]);
    t.wait_for("[zoom]");
    t.wait_gone("Per core");
    t.keys(&["z"]);
    t.wait_for("Per core");

    t.keys(&["q"]);
    t.assert_clean_exit("0");
    let log = std::fs::read_to_string(t.home.join("ws/logs/lathe.log")).unwrap();
    assert!(log.contains("workstation closed"), "{log}");
}

#[test]
fn typing_in_chat_does_not_trigger_keys() {
    let t = Tmux::start("chat", 100, 30);
    t.launch("");
    t.keys(&["4"]);
    t.wait_for("No model loaded");
    t.tmux(&["send-keys", "-t", "e2e", "-l", "q?5z hello"]);
    let s = t.wait_for("q?5z hello");
    assert!(!s.contains("Keys ("), "{s}");
    t.keys(&["C-c"]);
    t.assert_clean_exit("0");
}

#[test]
fn sigterm_and_sighup_restore_the_terminal() {
    for sig in ["TERM", "HUP"] {
        let t = Tmux::start(&format!("sig{sig}"), 90, 26);
        t.launch("");
        let pid = t.lathe_pid();
        let st = Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap();
        assert!(st.success());
        t.assert_clean_exit("0");
        let log = std::fs::read_to_string(t.home.join("ws/logs/lathe.log")).unwrap();
        assert!(log.contains(&format!("received SIG{sig}")), "{log}");
    }
}

/// An SSH drop closes the terminal itself: lathe must end, not spin on a dead terminal.
#[test]
fn a_vanished_terminal_ends_lathe() {
    let t = Tmux::start("vanish", 100, 30);
    t.launch("");
    let pid = t.lathe_pid();
    let _ = Command::new("tmux").args(["-L", &t.socket, "kill-server"]).output();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "lathe {pid} still runs after its terminal went away");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(t.home.join("ws/logs/lathe.log")).unwrap();
    assert!(log.contains("workstation closed") || log.contains("hung up") || log.contains("SIGHUP"), "{log}");
}

#[test]
fn a_panic_restores_the_terminal_then_prints() {
    let t = Tmux::start("panic", 100, 30);
    t.launch_no_wait("LATHE_DEBUG_PANIC_AFTER_FIRST_FRAME=1");
    let s = t.assert_clean_exit("101");
    assert!(s.contains("panic requested by LATHE_DEBUG_PANIC_AFTER_FIRST_FRAME"), "{s}");
}

#[test]
fn a_broken_theme_and_config_are_reported_on_screen() {
    let t = Tmux::start("theme", 140, 30);
    let bad = t.home.join("bad.toml");
    std::fs::write(&bad, "[colors]\nfg = 'nope'\n").unwrap();
    std::fs::create_dir_all(t.home.join("config/lathe")).unwrap();
    std::fs::write(t.home.join("config/lathe/config.toml"), "max_fps = 'fast'\n").unwrap();
    t.type_line(&format!(
        "LATHE_HOME={} XDG_CONFIG_HOME={} {} --theme {}; echo \"exit=$?\"",
        t.home.join("ws").display(),
        t.home.join("config").display(),
        env!("CARGO_BIN_EXE_lathe"),
        bad.display()
    ));
    // The newest problem shows, with a count of the others; Esc dismisses one at a time.
    t.wait_for_all(&["bad.toml is invalid", "1 Training", "(+"]);
    t.keys(&["Escape"]);
    t.wait_for("config.toml is invalid and was ignored");
    t.keys(&["Escape"]);
    t.wait_gone("is invalid");
    // Then the news of lower rank: the new workspace's demo datasets.
    t.wait_for("imported the demo datasets");
    t.keys(&["q"]);
    t.assert_clean_exit("0");
}

#[test]
fn import_and_export_from_the_data_pane() {
    let t = Tmux::start("import", 130, 34);
    let csv = t.home.join("pets.csv");
    std::fs::write(&csv, "name,legs\ncat,4\nbird,2\n").unwrap();
    t.launch("");
    t.keys(&["3"]);
    t.wait_for("F5 or Ctrl-R");
    t.keys(&["F2"]);
    t.wait_for("Import a file");
    // Tab completes the file name from its first letters.
    t.tmux(&["send-keys", "-t", "e2e", "-l", &format!("{}/pe", t.home.display())]);
    t.keys(&["Tab"]);
    t.wait_for("pets.csv");
    t.keys(&["Enter"]);
    t.wait_for("Imported pets: 2 rows, 2 columns.");
    // The schema browser lists the new dataset with its columns.
    t.wait_for_all(&["legs", "pets"]);
    // Importing again asks before replacing.
    t.keys(&["F2"]);
    t.wait_for("Import a file");
    t.tmux(&["send-keys", "-t", "e2e", "-l", csv.to_str().unwrap()]);
    t.keys(&["Enter"]);
    t.wait_for("Replace dataset?");
    t.keys(&["y"]);
    t.wait_gone("Replace dataset?");
    // Query it and export the result.
    t.tmux(&["send-keys", "-t", "e2e", "-l", "select * from pets order by legs"]);
    t.keys(&["F5"]);
    // "2 rows ·" is the grid's line, not the import notice's "2 rows,".
    t.wait_for("2 rows ·");
    t.keys(&["F3"]);
    t.wait_for("Export the result");
    let out = t.home.join("out.jsonl");
    // Clear the suggested "result.csv".
    t.keys(&["BSpace"; 10]);
    t.tmux(&["send-keys", "-t", "e2e", "-l", out.to_str().unwrap()]);
    t.keys(&["Enter"]);
    t.wait_for("Wrote 2 rows to");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
    t.keys(&["F6", "q"]);
    t.assert_clean_exit("0");
}

#[test]
fn demo_trains_from_the_training_pane_with_pause_cancel_and_resume() {
    let t = Tmux::start("train", 120, 34);
    t.launch("");
    t.wait_for("No run in this session");
    // d: the demo model is built and trains; the pane follows it live.
    t.keys(&["d"]);
    let s = t.wait_until("steps", |s| s.contains("running") && s.contains("tok/s") && !s.contains(" 0/"));
    assert!(s.contains("instruct"), "{s}");
    t.keys(&["p"]);
    t.wait_for("paused");
    // The loss chart has points.
    t.keys(&["2"]);
    t.wait_for_all(&["smooth on", "step"]);
    t.keys(&["s"]);
    t.wait_for("smooth off");
    t.keys(&["1", "p"]);
    t.wait_until("running again", |s| s.contains("running") && !s.contains("paused"));
    t.keys(&["c"]);
    t.wait_for("cancelled");
    // The Runs pane lists it; r resumes it from its checkpoint (or the start).
    t.keys(&["6"]);
    t.wait_for_all(&["cancelled", "full", "instruct"]);
    t.keys(&["r"]);
    t.keys(&["1"]);
    t.wait_until("resumed", |s| s.contains("running") || s.contains("Resumed"));
    t.keys(&["c"]);
    t.wait_for("cancelled");
    // The job leaves the status bar once the run has saved its state; then q quits at once.
    t.wait_gone("● train resume");
    t.keys(&["q"]);
    t.assert_clean_exit("0");
    // A run started from the shell is a job like the workstation's, recorded beside them.
    let lathe = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lathe"))
            .args(args)
            .env("LATHE_HOME", t.home.join("ws"))
            .env("XDG_CONFIG_HOME", t.home.join("config"))
            .output()
            .unwrap();
        assert!(out.status.success(), "lathe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    lathe(&["train", "--demo", "--max-steps", "2"]);
    let jobs = lathe(&["sql", "--format", "csv", "SELECT kind, split_part(title, ' ', 1) AS title, status, count(DISTINCT session) OVER () AS sessions FROM lathe.jobs ORDER BY started_at"]);
    let rows: Vec<&str> = jobs.lines().skip(1).collect();
    // The shell's run trains the demo spec, titled by its view.
    assert_eq!(rows, ["train,demo,cancelled,2", "train,resume,cancelled,2", "train,instruct,done,2"], "{jobs}");
}

/// `lathe chat --model FILE` opens the Chat pane with the model loaded; an answer streams with its
/// figures; a file that is not GGUF gets a clear message and the app keeps running.
#[test]
fn chat_with_an_exported_model() {
    let t = Tmux::start("chatgguf", 100, 30);
    let gguf = t.home.join("tiny.gguf");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let out = Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(["--home", t.home.join("ws").to_str().unwrap(), "export", fixture.to_str().unwrap(), "--out", gguf.to_str().unwrap(), "--quant", "f16"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    t.launch_with("", &format!("chat --model {}", gguf.display()));
    t.wait_for("context 0/");
    t.type_line("hello there");
    t.wait_for_all(&["tok/s", "you", "hello there", "model"]);
    // Ask again: the answer is replaced, not added.
    t.keys(&["C-r"]);
    // The old answer's figures stay on screen until the key is read: see the new answer start
    // (or miss it if it is already over), then wait for it to end.
    t.seen_within("answering", Duration::from_secs(3));
    let s = t.wait_until("the second answer", |s| s.contains("tok/s") && !s.contains("answering"));
    assert_eq!(s.matches("hello there").count(), 1, "{s}");
    // Compare: the same file beside itself; the next message is answered on both sides.
    t.keys(&["C-k"]);
    t.wait_for("A second model to answer");
    t.type_line(gguf.to_str().unwrap());
    // Its header shows an empty context once it has loaded (the first side's is in use).
    t.wait_for("context 0/");
    t.type_line("and again");
    let s = t.wait_until("both answers", |s| s.matches("tok/s").count() >= 4 && !s.contains("answering"));
    assert_eq!(s.matches("and again").count(), 2, "{s}");
    t.keys(&["C-k"]);
    t.wait_for("Comparison closed");
    // Ctrl-O takes a library name too: a model in the workspace's models/ by its stem.
    std::fs::create_dir_all(t.home.join("ws/models")).unwrap();
    std::fs::copy(&gguf, t.home.join("ws/models/named.gguf")).unwrap();
    t.keys(&["C-o"]);
    t.wait_for("Open a GGUF file");
    t.type_line("named");
    t.wait_for("named.gguf  llama  context 0/");
    t.keys(&["C-o"]);
    t.wait_for("Open a GGUF file");
    t.type_line("no-such-model");
    t.wait_for("the model library");
    let bad = t.home.join("notes.gguf");
    std::fs::write(&bad, "not a model").unwrap();
    t.keys(&["C-o"]);
    t.wait_for("Open a GGUF file");
    t.type_line(bad.to_str().unwrap());
    t.wait_for("is not a GGUF file");
    t.keys(&["C-c"]);
    t.assert_clean_exit("0");
}

/// A fake Ollama server on 127.0.0.1 whose answer streams slowly ("w0 w1 …", one word every
/// 100 ms, 600 words): long enough to cut the link in the middle of it.
fn slow_ollama() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                let mut first = String::new();
                let _ = r.read_line(&mut first);
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let s = r.get_mut();
                if first.contains("/api/tags") {
                    let b = r#"{"models":[{"name":"slow:latest","size":1,"details":{"family":"llama"}}]}"#;
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len());
                    return;
                }
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n");
                for i in 0..600 {
                    let line = format!("{{\"message\":{{\"role\":\"assistant\",\"content\":\"w{i} \"}},\"done\":false}}\n");
                    if s.write_all(line.as_bytes()).and_then(|_| s.flush()).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    addr
}

/// The SSH link drops while an answer streams: the conversation is saved with the message and the
/// answer as far as it got.
#[test]
fn a_dropped_link_keeps_the_conversation_and_the_answer_so_far() {
    let addr = slow_ollama();
    let t = Tmux::start("droplink", 100, 30);
    t.launch_with("", &format!("chat --model ollama:slow@{addr}"));
    t.wait_for("ollama server");
    t.type_line("tell me a long story");
    t.wait_for("w5 ");
    let pid = t.lathe_pid();
    let _ = Command::new("tmux").args(["-L", &t.socket, "kill-server"]).output();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ") {
        assert!(start.elapsed() < Duration::from_secs(30), "lathe {pid} still runs after its terminal went away");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lathe")).args(["--home", t.home.join("ws").to_str().unwrap(), "chats", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let id = list[0]["id"].as_str().unwrap_or_else(|| panic!("nothing saved: {list}")).to_string();
    let md = Command::new(env!("CARGO_BIN_EXE_lathe")).args(["--home", t.home.join("ws").to_str().unwrap(), "chats", "export", &id, "--format", "md"]).output().unwrap();
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(text.contains("tell me a long story") && text.contains("w0 w1 w2 w3 w4 w5"), "{text}");
}

#[test]
fn a_collection_filled_searched_and_dropped_from_the_knowledge_pane() {
    let t = Tmux::start("kb", 130, 34);
    let docs = t.home.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("garden.md"), "# Garden\n\n## Pests\n\nAphids gather under the leaves; a jet of water removes them.\n").unwrap();
    std::fs::write(docs.join("bread.txt"), "Sourdough rises overnight in a cool kitchen.\n").unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed/tiny-bert-mean");
    let made = Command::new(env!("CARGO_BIN_EXE_lathe"))
        .arg("--home")
        .arg(t.home.join("ws"))
        .args(["kb", "create", "notes", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    t.launch("");
    t.keys(&["8"]);
    t.wait_for("tiny-bert-mean");
    // Add a folder (Tab completes the path), then watch the ingest's report.
    t.keys(&["a"]);
    t.wait_for("Add a file, folder, glob or dataset:NAME.COLUMN to notes");
    t.tmux(&["send-keys", "-t", "e2e", "-l", &format!("{}/do", t.home.display())]);
    t.keys(&["Tab"]);
    t.wait_for("docs");
    t.keys(&["Enter"]);
    t.wait_for("notes: 2 added");
    // Search as a user types it; the result shows its place and opens in full.
    t.keys(&["/"]);
    t.tmux(&["send-keys", "-t", "e2e", "-l", "aphids"]);
    t.keys(&["Enter"]);
    t.wait_for_all(&["garden.md:", "Garden > Pests", "[hybrid]"]);
    t.keys(&["Escape", "Enter"]);
    t.wait_for("Result 1");
    t.keys(&["Escape"]);
    t.wait_gone("Result 1");
    // Drop asks first.
    t.keys(&["F6", "d"]);
    t.wait_for("Drop collection?");
    t.keys(&["y"]);
    t.wait_for("Dropped collection notes.");
    t.wait_for("No collections");
    t.keys(&["q"]);
    t.assert_clean_exit("0");
}

/// A `lathe serve` in the background on the test's workspace; SIGTERM when dropped.
struct Serve {
    pid: u32,
}

impl Serve {
    fn detach(t: &Tmux) -> Serve {
        let out = Command::new(env!("CARGO_BIN_EXE_lathe"))
            .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1", "--detach"])
            .env("LATHE_HOME", t.home.join("ws"))
            .env("XDG_CONFIG_HOME", t.home.join("config"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let pid = stdout.split("(pid ").nth(1).and_then(|r| r.split(',').next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no pid in {stdout:?}"));
        Serve { pid }
    }

    fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(self.pid as i32, 0) == 0 }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: a plain signal to the server this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.alive() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// With a `lathe serve` owning the workspace, the workstation attaches to it: the status bar says
/// where, SQL and the System pane go through it, and a run started from the Training pane trains
/// in the server: it goes on after the tmux session is killed, and a new workstation shows it
/// live (its steps so far) and can cancel it; a library model chats through the server.
#[test]
fn a_run_started_in_the_attached_workstation_outlives_it() {
    let t = Tmux::start("attached", 130, 34);
    // A GGUF model in the workspace's library, for the chat through the server.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    std::fs::create_dir_all(t.home.join("ws/models")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lathe"))
        .args(["--home", t.home.join("ws").to_str().unwrap(), "export", fixture.to_str().unwrap(), "--out", t.home.join("ws/models/named.gguf").to_str().unwrap(), "--quant", "f16"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let serve = Serve::detach(&t);
    let lathe = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lathe")).args(args).env("LATHE_HOME", t.home.join("ws")).output().unwrap();
        assert!(out.status.success(), "lathe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    t.launch("");
    t.wait_for("⇄ serve 127.0.0.1:");
    // SQL through the server, paged and counted as in-process.
    t.keys(&["3"]);
    t.wait_for("F5 or Ctrl-R");
    t.tmux(&["send-keys", "-t", "e2e", "-l", "select task, count(*) as n from instruct group by task order by n desc"]);
    t.keys(&["F5"]);
    t.wait_for(" rows ·");
    // The System pane shows the server's own figures.
    t.keys(&["F6", "5"]);
    t.wait_for_all(&["answering 0/", &format!("pid {}", serve.pid)]);
    // The demo trains in the server; the pane follows its events.
    t.keys(&["1"]);
    t.wait_for("No run in this session");
    t.keys(&["d"]);
    t.wait_until("steps", |s| s.contains("running") && s.contains("tok/s") && !s.contains(" 0/"));
    // The terminal goes (as with a dropped SSH link); the run does not.
    t.tmux(&["kill-server"]);
    let step = || lathe(&["sql", "--format", "csv", "select coalesce(max(step), 0) as s from lathe.metrics"]).lines().nth(1).unwrap_or("0").parse::<u64>().unwrap();
    let before = step();
    let start = Instant::now();
    while step() <= before {
        assert!(start.elapsed() < Duration::from_secs(60), "the run stopped with the workstation (step {before})");
        std::thread::sleep(Duration::from_millis(500));
    }
    let runs = lathe(&["runs", "list"]);
    assert!(runs.contains("running"), "{runs}");
    // A new workstation attaches and shows the run where it is; c cancels it in the server.
    t.restart(130, 34);
    t.launch("");
    let s = t.wait_until("the run so far", |s| s.contains("running") && s.contains("tok/s") && s.contains("⇄ serve"));
    assert!(s.contains("instruct"), "{s}");
    t.keys(&["c"]);
    t.wait_for("cancelled");
    t.wait_until("the job to end", |s| !s.contains("● train"));
    // A library model chats through the server (one copy of it for every client): the answer
    // streams, and the server counts the request.
    t.keys(&["4"]);
    t.keys(&["C-o"]);
    t.wait_for("Open a GGUF file");
    t.type_line("named");
    t.wait_for("openai:named.gguf@http://127.0.0.1:");
    t.type_line("hello there");
    t.wait_until("the answer", |s| s.contains("tok/s") && !s.contains("answering"));
    t.keys(&["Escape", "5"]);
    t.wait_for(" 1 requests");
    t.keys(&["q"]);
    t.assert_clean_exit("0");
    let runs = lathe(&["runs", "list"]);
    assert!(runs.contains("cancelled") && !runs.contains("running"), "{runs}");
    assert!(serve.alive(), "lathe serve ended with its clients");
}

/// The Models pane hands the workspace to a `lathe serve` in the background (s) and takes it back
/// (s again): the status bar says where it serves, SQL goes through it, and once it has stopped
/// the workstation opens the workspace itself again.
#[test]
fn the_models_pane_starts_and_stops_serving() {
    let t = Tmux::start("serving", 130, 34);
    t.launch("");
    t.keys(&["7"]);
    t.wait_for("s serves the");
    t.keys(&["s"]);
    t.wait_for_all(&["⇄ serve 127.0.0.1:", "s stops"]);
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.home.join("ws/serve.json")).unwrap()).unwrap();
    let pid = record["pid"].as_u64().unwrap() as i32;
    // The CLI on the workspace goes through it too.
    let out = Command::new(env!("CARGO_BIN_EXE_lathe")).args(["data", "list"]).env("LATHE_HOME", t.home.join("ws")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    t.keys(&["3"]);
    t.wait_for("F5 or Ctrl-R");
    t.tmux(&["send-keys", "-t", "e2e", "-l", "select count(*) as n from chat"]);
    t.keys(&["F5"]);
    t.wait_for("1500");
    t.keys(&["F6", "7", "s"]);
    t.wait_for("the workstation opens the workspace itself again");
    t.wait_gone("⇄ serve");
    // SAFETY: signal 0 only checks that the process exists.
    assert!(unsafe { libc::kill(pid, 0) } != 0, "lathe serve is still running");
    assert!(!t.home.join("ws/serve.json").exists());
    // The catalog is this process's again: a statement that writes runs.
    t.keys(&["3"]);
    t.wait_for("select count(*) as n from chat");
    // From the results back to the editor, then clear it.
    t.keys(&["F6"]);
    t.keys(&["BSpace"; 40]);
    t.wait_gone("select count(*)");
    t.tmux(&["send-keys", "-t", "e2e", "-l", "create table kept as select 42 as answer"]);
    t.keys(&["F5"]);
    // The schema browser lists the new table with its column.
    t.wait_for("answer INTEGER");
    t.keys(&["F6", "q"]);
    t.assert_clean_exit("0");
}
