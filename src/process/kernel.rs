//! What the scheduler says a thread is doing: running, or blocked in which syscall with
//! which arguments (/proc/PID/task/TID/syscall); whether the process is stopped
//! (/proc/PID/stat); how much CPU a thread has used (/proc/PID/task/TID/schedstat).
//! The files stay open between samples and are re-read with pread, which costs a few µs.

use rustc_hash::FxHashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One thread's kernel-side state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelState {
    /// On a CPU or runnable.
    Running,
    /// Blocked inside a syscall.
    Syscall { nr: i64, args: [u64; 6] },
    /// Stopped by a signal or a tracer.
    Stopped,
    /// Sleeping outside any syscall (rare: page fault, ptrace-stop).
    Blocked,
    /// The thread has exited.
    Gone,
    /// Not read: the interpreter's own GIL flags (3.15+) say the thread holds the GIL or
    /// waits for it, which is all /proc would have told.
    NotRead,
}

impl KernelState {
    /// Parses /proc/PID/task/TID/syscall; `None` for text in no known shape.
    pub fn parse_syscall_file(text: &str) -> Option<KernelState> {
        let text = text.trim();
        if text == "running" {
            return Some(KernelState::Running);
        }
        let mut words = text.split_whitespace();
        let nr: i64 = words.next()?.parse().ok()?;
        if nr < 0 {
            return Some(KernelState::Blocked);
        }
        let mut args = [0u64; 6];
        for arg in &mut args {
            *arg = parse_hex(words.next()?)?;
        }
        Some(KernelState::Syscall { nr, args })
    }
}

fn parse_hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()
}

/// The state letter of /proc/PID/task/TID/stat (R, S, D, T, t, Z, ...).
pub fn parse_stat_state(text: &str) -> Option<char> {
    let (_, rest) = text.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// One thread's scheduler counters since it started (/proc/PID/task/TID/schedstat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedCounters {
    /// Time on a CPU.
    pub cpu_ns: u64,
    /// Time runnable but waiting on a run queue.
    pub run_delay_ns: u64,
    /// Times it was put on a CPU (one more after every block or preemption).
    pub timeslices: u64,
}

impl SchedCounters {
    pub fn parse(text: &str) -> Option<SchedCounters> {
        let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        Some(SchedCounters {
            cpu_ns: words.next()??,
            run_delay_ns: words.next()??,
            timeslices: words.next()??,
        })
    }
}

struct ThreadFiles {
    syscall: File,
    schedstat: File,
    /// The last read found the thread blocked in this syscall, with the thread's switch
    /// mark as it was before that read.
    blocked: Option<(u64, KernelState)>,
}

/// Keeps each thread's /proc files open across samples.
pub struct KernelStateReader {
    pid: i32,
    files: FxHashMap<i32, ThreadFiles>,
    /// /proc/PID/stat, kept open like the threads' files.
    process_stat: Option<File>,
    buf: Vec<u8>,
    /// Threads' syscall files read so far (what `tests/it/reads.rs` counts).
    thread_reads: u64,
}

impl KernelStateReader {
    pub fn new(pid: i32) -> Self {
        KernelStateReader {
            pid,
            files: FxHashMap::default(),
            process_stat: None,
            buf: vec![0u8; 512],
            thread_reads: 0,
        }
    }

    /// How many times a thread's state has been read.
    pub fn thread_reads(&self) -> u64 {
        self.thread_reads
    }

    /// Reads a thread's state now. A thread whose files cannot be opened or read is `Gone`.
    pub fn read(&mut self, tid: i32) -> KernelState {
        self.read_unless_still(tid, None)
    }

    /// [`KernelStateReader::read`], except for a thread the last read found blocked in a
    /// syscall: `switch_mark` is its context-switch mark, taken before this call
    /// ([`crate::process::switches::SwitchTracker::mark`]); while it is the mark taken before
    /// that read, the thread has not run, so it is still in that syscall and /proc is not
    /// read. A thread woken and not yet on a CPU therefore still reads as in its wait
    /// (/proc would say "running"), which is where it is until it runs.
    pub fn read_unless_still(&mut self, tid: i32, switch_mark: Option<u64>) -> KernelState {
        if !self.files.contains_key(&tid) {
            match self.open(tid) {
                Some(files) => self.files.insert(tid, files),
                None => return KernelState::Gone,
            };
        }
        let files = self.files.get_mut(&tid).expect("opened above");
        if let (Some(mark), Some((then, state))) = (switch_mark, files.blocked)
            && mark == then
        {
            return state;
        }
        self.thread_reads += 1;
        let Some(state) =
            pread_text(&files.syscall, &mut self.buf).and_then(KernelState::parse_syscall_file)
        else {
            self.files.remove(&tid);
            return KernelState::Gone;
        };
        let state = match state {
            KernelState::Syscall { nr, .. } if nr == libc::SYS_restart_syscall => {
                self.restarted(tid)
            }
            other => other,
        };
        if let Some(files) = self.files.get_mut(&tid) {
            files.blocked = switch_mark
                .filter(|_| matches!(state, KernelState::Syscall { .. }))
                .map(|mark| (mark, state));
        }
        state
    }

    /// A wait interrupted by a signal or a ptrace stop continues as restart_syscall(2), which
    /// hides what it restarted; the kernel function it sleeps in (wchan) still tells.
    fn restarted(&self, tid: i32) -> KernelState {
        let wchan = std::fs::read_to_string(format!("/proc/{}/task/{tid}/wchan", self.pid))
            .unwrap_or_default();
        let nr = if wchan.contains("futex") {
            libc::SYS_futex
        } else if wchan.contains("nanosleep") {
            libc::SYS_clock_nanosleep
        } else if ["poll", "select", "ep_"].iter().any(|w| wchan.contains(w)) {
            libc::SYS_ppoll
        } else {
            libc::SYS_restart_syscall
        };
        // The restarted call's arguments are gone: a futex here is not known to be the GIL's.
        KernelState::Syscall {
            nr,
            args: [0, 1, 0, 0, 0, 0],
        }
    }

    /// Whether the whole process is stopped (SIGSTOP, a debugger's group stop).
    pub fn process_stopped(&mut self) -> bool {
        if self.process_stat.is_none() {
            self.process_stat = File::open(format!("/proc/{}/stat", self.pid)).ok();
        }
        let Some(stat) = &self.process_stat else {
            return false;
        };
        pread_text(stat, &mut self.buf).and_then(parse_stat_state) == Some('T')
    }

    /// CPU time the thread has used so far, in ns (/proc/PID/task/TID/schedstat).
    pub fn cpu_time_ns(&mut self, tid: i32) -> Option<u64> {
        let files = self.files.get(&tid)?;
        let text = pread_text(&files.schedstat, &mut self.buf)?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// The thread's scheduler counters (/proc/PID/task/TID/schedstat), from the file kept
    /// open for it; `None` if the thread has not been read yet or is gone.
    pub fn sched_counters(&mut self, tid: i32) -> Option<SchedCounters> {
        let files = self.files.get(&tid)?;
        SchedCounters::parse(pread_text(&files.schedstat, &mut self.buf)?)
    }

    /// Forgets threads that are not in `alive`, closing their files.
    pub fn retain(&mut self, alive: impl Fn(i32) -> bool) {
        self.files.retain(|tid, _| alive(*tid));
    }

    fn open(&self, tid: i32) -> Option<ThreadFiles> {
        let dir = format!("/proc/{}/task/{tid}", self.pid);
        Some(ThreadFiles {
            syscall: File::open(format!("{dir}/syscall")).ok()?,
            schedstat: File::open(format!("{dir}/schedstat")).ok()?,
            blocked: None,
        })
    }
}

fn pread_text<'a>(file: &File, buf: &'a mut [u8]) -> Option<&'a str> {
    let n = file.read_at(buf, 0).ok()?;
    if n == 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_shapes_of_the_syscall_file() {
        assert_eq!(
            KernelState::parse_syscall_file("running\n"),
            Some(KernelState::Running)
        );
        assert_eq!(
            KernelState::parse_syscall_file("-1 0x7ffc8d3e1b28 0x7f5a3c0a1e3d\n"),
            Some(KernelState::Blocked)
        );
        let futex = "202 0x7f1c2b3c4d50 0x189 0x0 0x0 0x0 0xffffffff 0x7ffd 0x7f00\n";
        assert_eq!(
            KernelState::parse_syscall_file(futex),
            Some(KernelState::Syscall {
                nr: 202,
                args: [0x7f1c2b3c4d50, 0x189, 0, 0, 0, 0xffffffff]
            })
        );
        assert_eq!(KernelState::parse_syscall_file("garbage"), None);
    }

    #[test]
    fn parses_the_three_schedstat_counters() {
        assert_eq!(
            SchedCounters::parse("123456 789 42\n"),
            Some(SchedCounters {
                cpu_ns: 123456,
                run_delay_ns: 789,
                timeslices: 42
            })
        );
        assert_eq!(SchedCounters::parse("12 34"), None);
    }

    #[test]
    fn reads_the_state_letter_after_the_last_parenthesis() {
        assert_eq!(parse_stat_state("42 (a (b) c) T 1 2 3"), Some('T'));
        assert_eq!(parse_stat_state("42 (python3) S 1"), Some('S'));
    }

    #[test]
    fn sees_a_sleeping_thread_in_its_syscall() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(30));
        });
        let tid = rx.recv().unwrap();
        let mut reader = KernelStateReader::new(std::process::id() as i32);
        // The thread enters its sleep right after signalling; poll until it is there.
        let state = (0..10_000)
            .map(|_| reader.read(tid))
            .find(|s| matches!(s, KernelState::Syscall { .. }))
            .expect("the thread never blocked");
        let KernelState::Syscall { nr, .. } = state else {
            unreachable!()
        };
        assert_eq!(nr, libc::SYS_clock_nanosleep);
        assert_eq!(reader.read(i32::MAX), KernelState::Gone);
    }
}
