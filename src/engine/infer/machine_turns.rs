//! Turns among this user's lathe processes: the same first-come-first-served order as
//! turns.rs keeps within one process, kept across processes (a chat in the workstation
//! while `lathe quant report` runs in another terminal measured ~30x slower on 2 cores, each
//! process's llama.cpp threads spinning at their barriers while the other's ran).
//!
//! The queue is a folder of ticket files, one per process waiting or running: `t-<number>`, the
//! numbers handed out in order from a counter file. A ticket's file is locked (flock) by its process
//! before it is given its name, so a named ticket whose lock can be taken belongs to a process that
//! is gone: whoever finds it removes it. A process waits on the lock of the ticket just ahead of its
//! own (blocked in the kernel, no polling) and runs when no ticket ahead is left. A killed process
//! leaves nothing that blocks the others: the kernel drops its locks; a stopped one (Ctrl-Z), whose
//! threads do not run, is passed (at once when found stopped, within a quarter of a second when it
//! stops while waited for). A process's turn is all the
//! CPUs: two processes whose calls would fit side by side (one thread each on two cores) still
//! take turns; within a process such calls run at once.
//!
//! A ticket costs tens of microseconds (a tenth of a tiny model's token), so a [`Process`] keeps
//! its ticket between its calls while no other process waits: a call that ends looks for another
//! ticket and gives its own up at once when there is one (so two processes alternate call by
//! call), else a few milliseconds later when no call of its own came.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The queue's folder.
pub struct Queue {
    dir: PathBuf,
}

/// A process's place in the queue; its turn while held after [`Queue::take`] returned it. Dropping
/// it leaves the queue.
pub struct Ticket {
    number: u64,
    path: PathBuf,
    /// Holds the lock that tells the others this ticket's process is alive.
    _file: File,
}

impl Queue {
    /// The queue in `dir` (created, readable by this user only, when missing).
    pub fn open(dir: PathBuf) -> io::Result<Queue> {
        make_dir(&dir)?;
        Ok(Queue { dir })
    }

    /// The queue this user's processes share: in $XDG_RUNTIME_DIR, else in /dev/shm (both in
    /// memory: a ticket cost 53 us there, 266 us on ext4, and a call keeping its ticket 9 us), else
    /// in the temporary folder, under this user's id.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("lathe-turns");
        }
        use std::os::unix::fs::MetadataExt;
        let uid = fs::metadata("/proc/self").map(|m| m.uid().to_string()).unwrap_or_else(|_| std::env::var("USER").unwrap_or_default());
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        base.join(format!("lathe-turns-{uid}"))
    }

    /// Joins the queue and waits until every process that joined before has left it.
    pub fn take(&self) -> io::Result<Ticket> {
        let number = match self.next_number() {
            // A runtime folder is emptied at logout, a temporary one by cleaners.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                make_dir(&self.dir)?;
                self.next_number()?
            }
            r => r?,
        };
        let fresh = self.dir.join(format!("new-{}-{number}", std::process::id()));
        let mut file = File::create(&fresh)?;
        file.lock()?;
        write!(file, "{}", std::process::id())?;
        let path = self.dir.join(ticket_name(number));
        fs::rename(&fresh, &path)?;
        let ticket = Ticket { number, path, _file: file };
        // Tickets of stopped processes (Ctrl-Z): passed, not waited for.
        let mut passed = Vec::new();
        loop {
            let Some(ahead) = self.tickets()?.into_iter().filter(|&n| n < number && !passed.contains(&n)).max() else {
                return Ok(ticket);
            };
            let path = self.dir.join(ticket_name(ahead));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match wait_for(file)? {
                Ahead::Left => match fs::remove_file(&path) {
                    // Still there: its process is gone (one that leaves removes its ticket first).
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
                Ahead::Stopped => passed.push(ahead),
            }
        }
    }

    /// Whether another process has joined the queue besides `ticket`'s.
    pub fn others_than(&self, ticket: &Ticket) -> io::Result<bool> {
        Ok(self.tickets()?.into_iter().any(|n| n != ticket.number))
    }

    /// The numbers of the named tickets.
    fn tickets(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Some(n) = entry?.file_name().to_str().and_then(|s| s.strip_prefix("t-")).and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The next number from the counter, never below a ticket already named (a counter file that
    /// was lost or cut short must not put a newcomer ahead of the processes waiting).
    fn next_number(&self) -> io::Result<u64> {
        let mut counter = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.dir.join("counter"))?;
        counter.lock()?;
        let mut text = String::new();
        counter.read_to_string(&mut text)?;
        let after_named = self.tickets()?.into_iter().max().map_or(0, |n| n + 1);
        let number = text.trim().parse::<u64>().unwrap_or(0).max(after_named);
        counter.seek(SeekFrom::Start(0))?;
        counter.set_len(0)?;
        write!(counter, "{}", number + 1)?;
        Ok(number)
    }
}

/// How a wait for the ticket ahead ended.
enum Ahead {
    /// Its process left the queue, or is gone.
    Left,
    /// Its process is stopped (SIGSTOP, Ctrl-Z): it would hold every other process up until it
    /// goes on, while its own threads do not run.
    Stopped,
}

/// How often a wait looks whether the process ahead is stopped.
const STOPPED_CHECK: Duration = Duration::from_millis(250);

/// Waits for the lock of the ticket ahead (in the kernel, on a thread of its own, so that the wait
/// can look at that process now and then).
fn wait_for(file: File) -> io::Result<Ahead> {
    if file.try_lock_shared().is_ok() {
        return Ok(Ahead::Left);
    }
    let mut pid = String::new();
    (&file).read_to_string(&mut pid)?;
    if stopped(pid.trim()) {
        return Ok(Ahead::Stopped);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("lathe-turns-wait".into()).spawn(move || {
        let _ = tx.send(file.lock_shared());
    })?;
    loop {
        match rx.recv_timeout(STOPPED_CHECK) {
            Ok(r) => return r.map(|_| Ahead::Left),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stopped(pid.trim()) => return Ok(Ahead::Stopped),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(io::Error::other("the thread waiting for a turn ended")),
        }
    }
}

/// Whether process `pid` is stopped (its state in /proc is T or t).
fn stopped(pid: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (name) S ...": the state follows the name, which may hold spaces and parentheses.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s == "T" || s == "t")
}

fn make_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn ticket_name(n: u64) -> String {
    format!("t-{n:020}")
}

/// How long a process keeps its ticket after its last call ended, for the next one (the next
/// token's decode comes within a millisecond or so).
const LINGER: Duration = Duration::from_millis(5);

/// This process's turn among the others: its calls share one ticket.
pub struct Process {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Queue,
    held: Mutex<Held>,
    /// A call left the turn (the releaser and the calls waiting for the turn to be given up).
    left: Condvar,
}

#[derive(Default)]
struct Held {
    ticket: Option<Ticket>,
    /// Calls running in the turn.
    calls: usize,
    /// When the last call left it.
    idle_since: Option<Instant>,
    /// Whether a thread is there to give the ticket up once it lingered.
    releaser: bool,
}

impl Process {
    pub fn new(queue: Queue) -> Process {
        Process { shared: Arc::new(Shared { queue, held: Mutex::new(Held::default()), left: Condvar::new() }) }
    }

    /// Waits for this process's turn (joining the calls already in it unless another process
    /// waits; then after they leave, at the back of the queue). False when the queue cannot be used
    /// (its folder unwritable): the call then runs ordered within this process only.
    pub fn enter(&self) -> bool {
        let sh = &self.shared;
        let mut held = sh.lock();
        loop {
            if held.ticket.is_none() {
                match sh.queue.take() {
                    Ok(t) => held.ticket = Some(t),
                    Err(e) => {
                        static TOLD: std::sync::Once = std::sync::Once::new();
                        TOLD.call_once(|| tracing::warn!("llama.cpp calls are not ordered with other lathe processes' (turns folder {}: {e})", sh.queue.dir.display()));
                        return false;
                    }
                }
                break;
            }
            // A lingering ticket is taken up again; a turn with calls in it is joined only while
            // nobody waits (else calls that overlap would hold it for ever).
            if held.calls == 0 || !held.ticket.as_ref().is_some_and(|t| sh.queue.others_than(t).unwrap_or(false)) {
                break;
            }
            held = sh.left.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.calls += 1;
        held.idle_since = None;
        true
    }

    pub fn leave(&self) {
        let sh = &self.shared;
        let mut held = sh.lock();
        held.calls = held.calls.saturating_sub(1);
        if held.calls > 0 {
            return;
        }
        if held.ticket.as_ref().is_some_and(|t| sh.queue.others_than(t).unwrap_or(true)) {
            held.ticket = None;
        } else {
            held.idle_since = Some(Instant::now());
            if !held.releaser {
                held.releaser = true;
                let sh = self.shared.clone();
                if std::thread::Builder::new().name("lathe-turns".into()).spawn(move || release_when_idle(&sh)).is_err() {
                    held.releaser = false;
                    held.ticket = None;
                }
            }
        }
        drop(held);
        sh.left.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Held> {
        // Nothing panics while the lock is held, so a poisoned lock still holds a whole state.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gives the ticket up once it has lingered unused, then ends.
fn release_when_idle(sh: &Shared) {
    let mut held = sh.lock();
    loop {
        match held.idle_since {
            _ if held.ticket.is_none() => break,
            Some(t) if held.calls == 0 && t.elapsed() >= LINGER => {
                held.ticket = None;
                break;
            }
            Some(t) if held.calls == 0 => held = sh.left.wait_timeout(held, LINGER.saturating_sub(t.elapsed())).unwrap_or_else(|e| e.into_inner()).0,
            _ => held = sh.left.wait(held).unwrap_or_else(|e| e.into_inner()),
        }
    }
    held.releaser = false;
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Removed before its lock goes with the file, so a process woken by the lock finds it gone.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A folder of the test's own, removed when dropped.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(test: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("lathe-turns-test-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn queue(dir: &Dir) -> Queue {
        Queue::open(dir.path().join("turns")).unwrap()
    }

    #[test]
    fn processes_run_in_the_order_they_joined_and_one_at_a_time() {
        let dir = Dir::new("order");
        let first = queue(&dir).take().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for name in ["second", "third"] {
            let (q, order) = (queue(&dir), order.clone());
            waiters.push(std::thread::spawn(move || {
                let _t = q.take().unwrap();
                order.lock().unwrap().push(name);
                std::thread::sleep(Duration::from_millis(30));
                order.lock().unwrap().push("left");
            }));
            // Each joins before the next (two Queue values: two open files, as two processes have).
            while queue(&dir).tickets().unwrap().len() < waiters.len() + 1 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert!(queue(&dir).others_than(&first).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert!(order.lock().unwrap().is_empty(), "a process ran while the first held its turn");
        drop(first);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["second", "left", "third", "left"]);
        assert!(queue(&dir).tickets().unwrap().is_empty(), "tickets were left behind");
    }

    #[test]
    fn a_ticket_left_by_a_killed_process_is_removed_and_does_not_block() {
        let dir = Dir::new("killed");
        let q = queue(&dir);
        // What a killed process leaves: its ticket file, with no lock on it any more.
        std::fs::write(dir.path().join("turns").join(super::ticket_name(0)), b"").unwrap();
        let t = q.take().unwrap();
        assert_eq!(t.number, 1, "the number is past the ticket already there");
        assert_eq!(q.tickets().unwrap(), [1]);
        assert!(!q.others_than(&t).unwrap());
    }

    #[test]
    fn a_process_keeps_its_ticket_between_calls_for_a_moment_then_gives_it_up() {
        let dir = Dir::new("linger");
        let p = super::Process::new(queue(&dir));
        assert!(p.enter());
        p.leave();
        let first = queue(&dir).tickets().unwrap();
        assert_eq!(first.len(), 1, "the ticket lingers after the call");
        assert!(p.enter());
        p.leave();
        assert_eq!(queue(&dir).tickets().unwrap(), first, "the next call used the same ticket");
        // Another process takes its turn once the ticket has lingered unused.
        let other = queue(&dir).take().unwrap();
        assert!(other.number > first[0]);
        assert_eq!(queue(&dir).tickets().unwrap(), [other.number]);
        // While the other holds its turn, this process's next call waits for it.
        let entered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let entered = entered.clone();
            std::thread::spawn(move || {
                assert!(p.enter());
                entered.store(true, std::sync::atomic::Ordering::SeqCst);
                p.leave();
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!entered.load(std::sync::atomic::Ordering::SeqCst));
        drop(other);
        waiter.join().unwrap();
        assert!(entered.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_stopped_process_is_passed_a_running_one_waited_for() {
        let dir = Dir::new("stopped");
        let q = queue(&dir);
        // A process ahead in the queue: its ticket locked (here by this test), naming its pid.
        let mut holder = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let ticket = dir.path().join("turns").join(super::ticket_name(0));
        std::fs::write(&ticket, holder.id().to_string()).unwrap();
        let lock = std::fs::File::open(&ticket).unwrap();
        lock.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = q.take().unwrap();
            let _ = tx.send(());
            std::thread::sleep(Duration::from_millis(200));
            drop(t);
        });
        assert!(rx.recv_timeout(Duration::from_millis(700)).is_err(), "it went ahead of a running process");
        let kill = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &holder.id().to_string()]).status().unwrap().success());
        kill("-STOP");
        rx.recv_timeout(Duration::from_secs(5)).expect("a stopped process held the queue up");
        kill("-CONT");
        holder.kill().unwrap();
        let _ = holder.wait();
        drop(lock);
    }

    #[test]
    fn a_removed_folder_is_made_again_and_an_unusable_one_lets_calls_run_unordered() {
        let dir = Dir::new("folder");
        let q = queue(&dir);
        let turns = dir.path().join("turns");
        // Emptied at logout or by a cleaner: made again.
        std::fs::remove_dir_all(&turns).unwrap();
        drop(q.take().expect("the folder is made again"));
        // A file where the folder was: the call goes on, ordered within its process only.
        std::fs::remove_dir_all(&turns).unwrap();
        std::fs::write(&turns, b"").unwrap();
        let p = super::Process::new(q);
        assert!(!p.enter(), "a queue that cannot be used is not waited for");
    }

    #[test]
    fn a_lost_counter_does_not_put_a_newcomer_ahead_of_those_waiting() {
        let dir = Dir::new("counter");
        let q = queue(&dir);
        let held = q.take().unwrap();
        std::fs::write(dir.path().join("turns").join("counter"), b"").unwrap();
        let next = q.next_number().unwrap();
        assert!(next > held.number);
    }
}


