//! Turns on the CPU for llama.cpp's decode calls. While a decode runs, each of its threads spins at
//! every operation's barrier until the others arrive (ggml-cpu's barrier never yields), so two
//! contexts decoding at once with more threads between them than the CPUs this process may use
//! slow each other tens of times over: a thread spins out its time slice waiting for one that is
//! not running (a quantization report beside a chat measured ~40x slower on 2 cores). Every decode
//! in lathe first takes a [`Turn`]: it holds as many CPUs as its context has threads (all of them
//! at most) for the call; a call that does not fit waits, first come first served, so a small call
//! never overtakes a large one for ever. Calls that fit side by side (compare mode's half threads
//! each) still run at once. Across this user's lathe processes, a process's calls run while it
//! holds its turn in [`super::machine_turns`]' queue: its calls join a turn it holds unless another
//! process waits, so two processes alternate call by call.

use super::machine_turns::{Process, Queue};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// The CPUs of one process, lent to decode calls in the order they ask.
pub struct Turns {
    cpus: usize,
    state: Mutex<State>,
    changed: Condvar,
    machine: Option<Process>,
}

struct State {
    free: usize,
    /// Tickets of the calls waiting, oldest first.
    waiting: VecDeque<u64>,
    next: u64,
}

/// A decode call's hold on its CPUs, given back when dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
    cpus: usize,
    /// Whether the call holds a part of the process's turn among processes.
    in_machine_turn: bool,
}

impl Turns {
    pub fn new(cpus: usize) -> Turns {
        let cpus = cpus.max(1);
        Turns { cpus, state: Mutex::new(State { free: cpus, waiting: VecDeque::new(), next: 0 }), changed: Condvar::new(), machine: None }
    }

    /// Turns that also wait for this process's turn among the processes sharing `queue`.
    pub fn among_processes(cpus: usize, queue: Queue) -> Turns {
        Turns { machine: Some(Process::new(queue)), ..Turns::new(cpus) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held, so a poisoned lock still holds a whole state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the calls that asked first have their CPUs and `threads` of them are free.
    pub fn take(&self, threads: i32) -> Turn<'_> {
        let want = (threads.max(1) as usize).min(self.cpus);
        let mut st = self.lock();
        let ticket = st.next;
        st.next += 1;
        st.waiting.push_back(ticket);
        while st.waiting.front() != Some(&ticket) || st.free < want {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.waiting.pop_front();
        st.free -= want;
        let next_waits = !st.waiting.is_empty();
        drop(st);
        if next_waits {
            // The next in line may fit beside this call.
            self.changed.notify_all();
        }
        let in_machine_turn = self.machine.as_ref().is_some_and(Process::enter);
        Turn { turns: self, cpus: want, in_machine_turn }
    }

    /// Calls waiting for their turn.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.in_machine_turn {
            if let Some(m) = &self.turns.machine {
                m.leave();
            }
        }
        let mut st = self.turns.lock();
        st.free += self.cpus;
        let anyone = !st.waiting.is_empty();
        drop(st);
        if anyone {
            self.turns.changed.notify_all();
        }
    }
}

/// The turn of a decode call whose context has `threads` threads, among this process's calls.
pub fn take(threads: i32) -> Turn<'static> {
    static TURNS: OnceLock<Turns> = OnceLock::new();
    TURNS
        .get_or_init(|| {
            let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            match Queue::open(Queue::default_dir()) {
                Ok(q) => Turns::among_processes(cpus, q),
                Err(e) => {
                    tracing::warn!("llama.cpp calls are not ordered with other lathe processes' (turns folder: {e})");
                    Turns::new(cpus)
                }
            }
        })
        .take(threads)
}

#[cfg(test)]
mod tests {
    use super::Turns;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Waits (up to 10 s) until `n` calls are queued on `t`.
    fn until_waiting(t: &Turns, n: usize) {
        for _ in 0..1000 {
            if t.waiting() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{n} calls never queued (now {})", t.waiting());
    }

    #[test]
    fn calls_that_fit_run_at_once_and_more_threads_than_cpus_take_them_all() {
        let t = Turns::new(2);
        let a = t.take(1);
        let b = t.take(1);
        assert_eq!(t.waiting(), 0);
        drop((a, b));
        let all = t.take(8);
        assert_eq!(all.cpus, 2);
    }

    #[test]
    fn a_call_that_does_not_fit_waits_until_the_cpus_come_back() {
        let t = Arc::new(Turns::new(2));
        let held = t.take(2);
        let got = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (t, got) = (t.clone(), got.clone());
            std::thread::spawn(move || {
                let _turn = t.take(2);
                got.store(true, Ordering::SeqCst);
            })
        };
        until_waiting(&t, 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!got.load(Ordering::SeqCst), "it ran while the CPUs were held");
        drop(held);
        waiter.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }

    #[test]
    fn first_come_first_served_a_small_call_does_not_overtake_a_large_one() {
        let t = Arc::new(Turns::new(2));
        let held = t.take(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |name: &'static str, threads: i32| {
            let (t, order) = (t.clone(), order.clone());
            std::thread::spawn(move || {
                let _turn = t.take(threads);
                order.lock().unwrap().push(name);
                std::thread::sleep(Duration::from_millis(20));
            })
        };
        // The large call waits for both CPUs; the small one would fit in the free CPU now, but
        // asked later.
        let large = spawn("large", 2);
        until_waiting(&t, 1);
        let small = spawn("small", 1);
        until_waiting(&t, 2);
        std::thread::sleep(Duration::from_millis(50));
        assert!(order.lock().unwrap().is_empty(), "a call ran before the held CPU came back");
        drop(held);
        large.join().unwrap();
        small.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["large", "small"]);
    }

    #[test]
    fn processes_alternate_a_call_does_not_join_its_process_turn_while_another_process_waits() {
        let dir = std::env::temp_dir().join(format!("lathe-turns-procs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Two processes' turns: two queues on one folder are two open files, as two processes have.
        let process = || Arc::new(Turns::among_processes(2, super::Queue::open(dir.clone()).unwrap()));
        let (a, b) = (process(), process());
        let first = a.take(1);
        // A second call of the same process fits beside the first and joins its turn.
        drop(a.take(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |t: &Arc<Turns>, name: &'static str| {
            let (t, order) = (t.clone(), order.clone());
            std::thread::spawn(move || {
                let _turn = t.take(1);
                order.lock().unwrap().push(name);
                std::thread::sleep(Duration::from_millis(20));
            })
        };
        let other = spawn(&b, "other process");
        let tickets = || std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("t-")).count();
        for _ in 0..1000 {
            if tickets() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(tickets(), 2, "the other process never joined the queue");
        // Now a call of the first process fits its CPUs but waits: the other process asked first.
        let same = spawn(&a, "same process");
        std::thread::sleep(Duration::from_millis(50));
        assert!(order.lock().unwrap().is_empty(), "a call ran while the first process held its turn");
        drop(first);
        other.join().unwrap();
        same.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["other process", "same process"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
