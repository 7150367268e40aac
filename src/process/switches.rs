//! How each thread last left a CPU, from the kernel's context-switch records.
//!
//! /proc shows a thread that is runnable but not on a CPU as `running`, whether it was
//! preempted (it still wants the CPU for what it was doing) or has just been woken from a
//! wait and has not run since. For a thread without the GIL that difference is the whole
//! question: preempted inside `drop_gil` it is handing the GIL over, while woken from a
//! lock or a sleep it has not asked for the GIL yet. The scheduler records it: a
//! `PERF_RECORD_SWITCH` record marks a switch out with `SWITCH_OUT_PREEMPT` when the thread
//! was still runnable.
//!
//! A thread woken from a wait and not run since is runnable too, and /proc no longer says
//! what it waited on. So each switch out also samples two of the thread's user registers
//! as it entered the kernel: the first-argument register (x86-64 `rdi`, arm64 `x0`), in a
//! system call the call's first argument, which for `futex(2)` is the word it waits on or
//! wakes; and the instruction pointer, right after the system call instruction if it
//! entered the kernel by one (a thread preempted in user code has whatever it had in the
//! register).
//!
//! One perf event per thread (the software context-switch counter, sampling every switch
//! out with the user registers, and `context_switch` set for the switch records), mapped
//! read-only with `write_backward`, so the kernel overwrites old records and the newest
//! one always sits at `data_head`: reading a thread's last switch is a few loads from
//! shared memory, no system call. Opening needs the rights ptrace needs; sampling the
//! registers of a switch also needs kernel events (root, or `perf_event_paranoid` at most
//! 1), and without them the rings hold the switch records alone. Where perf events are not
//! allowed at all (a container's seccomp filter, a high `perf_event_paranoid`), the
//! tracker says nothing and the sampler does without.

use perf_event_open_sys as sys;
use rustc_hash::FxHashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

/// The newest switch record of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastSwitch {
    /// Switched in: on a CPU now (or its switch out is not written yet).
    OnCpu,
    /// Switched out while still runnable: preempted, queued for a CPU since.
    Preempted,
    /// Switched out to wait (a futex, a sleep, I/O). Runnable now means woken and not yet
    /// run since.
    Slept,
}

/// A thread's newest switch out, with the registers sampled at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchOut {
    /// Still runnable when it left ([`LastSwitch::Preempted`]), else it went to wait.
    pub preempted: bool,
    /// The first-argument register as the thread entered the kernel.
    pub argument: u64,
    /// The user instruction pointer then: right after the system call instruction if it
    /// entered the kernel by one.
    pub ip: u64,
}

/// The bytes of the instruction that makes a system call, which ends right before a
/// sampled [`SwitchOut::ip`] when the thread left its CPU inside a system call.
#[cfg(target_arch = "x86_64")]
pub const SYSCALL_INSTRUCTION: &[u8] = &[0x0f, 0x05];
#[cfg(target_arch = "aarch64")]
pub const SYSCALL_INSTRUCTION: &[u8] = &[0x01, 0x00, 0x00, 0xd4]; // svc #0
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const SYSCALL_INSTRUCTION: &[u8] = &[];

/// Threads tracked at most, by all trackers of this process together: one file descriptor
/// and 8 KiB of mapped memory each. Never more than a quarter of the descriptors the
/// process may open, so that /proc reads and output files never run short of them.
const MAX_THREADS: usize = 512;

/// Rings open in this process (every target followed: children, exec'd programs).
static OPEN_RINGS: AtomicUsize = AtomicUsize::new(0);

fn ring_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur as usize
        } else {
            1024
        };
        (soft / 4).min(MAX_THREADS)
    })
}

/// The ring: one metadata page and one data page (512 records of 8 bytes).
const DATA_PAGES: usize = 1;

pub struct SwitchTracker {
    rings: FxHashMap<i32, Ring>,
    /// perf_event_open was refused: stop asking.
    refused: bool,
}

impl SwitchTracker {
    /// A tracker for the threads of a live process.
    pub fn live() -> Self {
        SwitchTracker {
            rings: FxHashMap::default(),
            refused: false,
        }
    }

    /// A tracker that tracks nothing: for a target that is not a live process (a memory
    /// image), whose thread ids may belong to anyone's threads on this machine.
    pub fn off() -> Self {
        SwitchTracker {
            rings: FxHashMap::default(),
            refused: true,
        }
    }

    /// Starts recording the switches of `tid`, if it is not recorded yet. A thread is only
    /// known from its first switch after this.
    pub fn track(&mut self, tid: i32) {
        if self.refused
            || self.rings.contains_key(&tid)
            || OPEN_RINGS.load(Ordering::Relaxed) >= ring_budget()
        {
            return;
        }
        match Ring::open(tid) {
            Ok(ring) => {
                self.rings.insert(tid, ring);
            }
            // The thread ended between the walk and this call.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(_) => self.refused = true,
        }
    }

    /// The newest switch of `tid`, or `None` if it is not tracked or has not switched since.
    pub fn last(&self, tid: i32) -> Option<LastSwitch> {
        Some(self.rings.get(&tid)?.last()?.0)
    }

    /// If the newest switch of `tid` is a switch out (it is off a CPU: asleep, woken and not
    /// run since, or preempted), how, and its first-argument register as it entered the
    /// kernel: the address a futex wait or wake was given. `None` if the thread is on a
    /// CPU, is not tracked, or the kernel does not let this process sample registers.
    pub fn left_with_argument(&self, tid: i32) -> Option<SwitchOut> {
        let (kind, registers) = self.rings.get(&tid)?.last()?;
        let (argument, ip) = registers?;
        Some(SwitchOut {
            preempted: kind == LastSwitch::Preempted,
            argument,
            ip,
        })
    }

    /// A mark that changes whenever `tid` is switched in or out (the ring's write position),
    /// or `None` if it is not tracked. Equal marks, the earlier read before some look at
    /// the thread and the later after it: the thread did not run in between.
    pub fn mark(&self, tid: i32) -> Option<u64> {
        Some(self.rings.get(&tid)?.head())
    }

    /// Whether switch records are available at all (perf events allowed).
    pub fn available(&self) -> bool {
        !self.refused
    }

    /// Stops tracking the threads that `alive` rejects.
    pub fn retain(&mut self, mut alive: impl FnMut(i32) -> bool) {
        self.rings.retain(|&tid, _| alive(tid));
    }
}

struct Ring {
    _fd: OwnedFd,
    base: *mut libc::c_void,
    len: usize,
}

/// The perf register numbers of the first-argument register and the instruction pointer
/// (the first is the lower on both, so a sample holds them in that order).
#[cfg(target_arch = "x86_64")]
const REGISTERS: Option<[u32; 2]> = Some([5, 8]); // PERF_REG_X86_DI, PERF_REG_X86_IP
#[cfg(target_arch = "aarch64")]
const REGISTERS: Option<[u32; 2]> = Some([0, 32]); // PERF_REG_ARM64_X0, PERF_REG_ARM64_PC
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const REGISTERS: Option<[u32; 2]> = None;

/// Whether kernel events were refused once (an unprivileged user under
/// `perf_event_paranoid` 2): later rings do not ask again.
static REGISTERS_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

// SAFETY: the mapping is only read, through volatile loads, and unmapped once on drop.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring for `tid` that samples the first-argument register if the kernel allows it.
    fn open(tid: i32) -> std::io::Result<Ring> {
        let register = REGISTERS.filter(|_| !REGISTERS_REFUSED.load(Ordering::Relaxed));
        match register.map(|r| Ring::open_with(tid, Some(r))) {
            Some(Err(e)) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                REGISTERS_REFUSED.store(true, Ordering::Relaxed);
                Ring::open_with(tid, None)
            }
            Some(opened) => opened,
            None => Ring::open_with(tid, None),
        }
    }

    /// A ring for `tid`, sampling `registers` at each switch out, or no register.
    fn open_with(tid: i32, registers: Option<[u32; 2]>) -> std::io::Result<Ring> {
        let fd = open_event(tid, registers)?;
        let page = page_size();
        let len = page * (1 + DATA_PAGES);
        // SAFETY: a read-only shared mapping of the event's ring; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        OPEN_RINGS.fetch_add(1, Ordering::Relaxed);
        Ok(Ring { _fd: fd, base, len })
    }

    fn head(&self) -> u64 {
        let meta = self.base as *const sys::bindings::perf_event_mmap_page;
        // SAFETY: the first page of the mapping is the kernel's perf_event_mmap_page.
        let head = unsafe { std::ptr::read_volatile(&raw const (*meta).data_head) };
        fence(Ordering::Acquire);
        head
    }

    /// The newest switch record, and for a switch out the first-argument register sampled
    /// with it (the sample is written just before the switch record, so it follows it in a
    /// ring written backward).
    fn last(&self) -> Option<(LastSwitch, Option<(u64, u64)>)> {
        let meta = self.base as *const sys::bindings::perf_event_mmap_page;
        // SAFETY: the first page of the mapping is the kernel's perf_event_mmap_page; the
        // kernel writes data_head after the record it points to (read with acquire below).
        let (head, offset, size) = unsafe {
            (
                std::ptr::read_volatile(&raw const (*meta).data_head),
                std::ptr::read_volatile(&raw const (*meta).data_offset),
                std::ptr::read_volatile(&raw const (*meta).data_size),
            )
        };
        fence(Ordering::Acquire);
        if head == 0 || size == 0 {
            return None;
        }
        // Written backward: the newest record starts at data_head (modulo the ring).
        let at = offset as usize + (head % size) as usize;
        if at + 8 > self.len {
            return None;
        }
        // SAFETY: `at + 8` is inside the mapping (checked above); a header is 8 bytes.
        let header = unsafe {
            std::ptr::read_volatile(
                (self.base as *const u8).add(at) as *const sys::bindings::perf_event_header
            )
        };
        if header.type_ != sys::bindings::PERF_RECORD_SWITCH {
            return None;
        }
        let misc = u32::from(header.misc);
        if misc & sys::bindings::PERF_RECORD_MISC_SWITCH_OUT == 0 {
            return Some((LastSwitch::OnCpu, None));
        }
        let kind = if misc & sys::bindings::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0 {
            LastSwitch::Preempted
        } else {
            LastSwitch::Slept
        };
        Some((
            kind,
            self.sampled_registers(head + u64::from(header.size), offset, size),
        ))
    }

    /// The two registers of the sample record at ring position `position`, if it is one with
    /// the registers of a user thread: `{ header, abi, argument, ip }`, each 8 bytes.
    fn sampled_registers(&self, position: u64, offset: u64, size: u64) -> Option<(u64, u64)> {
        let word = |index: u64| -> Option<u64> {
            let at = offset as usize + ((position + 8 * index) % size) as usize;
            if at + 8 > self.len {
                return None;
            }
            // SAFETY: `at + 8` is inside the mapping (checked above); records are 8-byte
            // aligned, so no word of one wraps around the ring's end.
            Some(unsafe { std::ptr::read_volatile((self.base as *const u8).add(at) as *const u64) })
        };
        // SAFETY: a perf_event_header is 8 bytes of plain integers.
        let header: sys::bindings::perf_event_header = unsafe { std::mem::transmute(word(0)?) };
        let abi = word(1)?;
        if header.type_ != sys::bindings::PERF_RECORD_SAMPLE
            || header.size != 32
            || abi == u64::from(sys::bindings::PERF_SAMPLE_REGS_ABI_NONE)
        {
            return None;
        }
        Some((word(2)?, word(3)?))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base and len are the mapping made in open, unmapped only here.
        unsafe { libc::munmap(self.base, self.len) };
        OPEN_RINGS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A perf event recording `tid`'s context switches; with `registers`, one that also samples
/// those user registers at every switch out.
fn open_event(tid: i32, registers: Option<[u32; 2]>) -> std::io::Result<OwnedFd> {
    let mut attr = sys::bindings::perf_event_attr {
        type_: sys::bindings::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config: sys::bindings::PERF_COUNT_SW_DUMMY as u64,
        ..Default::default()
    };
    attr.set_context_switch(1);
    attr.set_write_backward(1);
    attr.set_exclude_hv(1);
    match registers {
        Some(registers) => {
            // The switch counter fires in the scheduler, in kernel mode: it is not excluded.
            attr.config = sys::bindings::PERF_COUNT_SW_CONTEXT_SWITCHES as u64;
            attr.__bindgen_anon_1.sample_period = 1;
            attr.sample_type = sys::bindings::PERF_SAMPLE_REGS_USER as u64;
            attr.sample_regs_user = registers.iter().fold(0, |mask, r| mask | 1 << r);
        }
        None => attr.set_exclude_kernel(1),
    }
    // SAFETY: attr is a valid, fully initialised perf_event_attr.
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            tid,
            -1,
            -1,
            sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn this_tid() -> i32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    /// Waits until the tracker reports `want` for `tid` (the records arrive as the thread
    /// switches), or gives up after 10 s.
    fn wait_for(tracker: &SwitchTracker, tid: i32, want: LastSwitch) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tracker.last(tid) == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_spinning_thread_is_on_a_cpu_or_preempted() {
        let mut tracker = SwitchTracker::live();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready3, started3) = mpsc::channel();
        let spin_stop = stop.clone();
        let spinner = std::thread::spawn(move || {
            ready3.send(this_tid()).unwrap();
            // Block once after tracking starts, then spin: the newest record is a switch in
            // (or a preemption, when the machine is busy).
            std::thread::sleep(Duration::from_millis(50));
            while !spin_stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let spinner_tid = started3.recv().unwrap();
        tracker.track(spinner_tid);
        assert!(
            tracker.available(),
            "perf_event_open was refused: the tests run as root with perf events allowed"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = None;
        while Instant::now() < deadline {
            seen = tracker.last(spinner_tid);
            if matches!(seen, Some(LastSwitch::OnCpu | LastSwitch::Preempted)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(
            matches!(seen, Some(LastSwitch::OnCpu | LastSwitch::Preempted)),
            "a spinning thread's newest switch: {seen:?}"
        );
    }

    #[test]
    fn a_thread_asleep_in_a_futex_left_with_its_address() {
        let word = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let address = word.as_ptr() as u64;
        let (ready, started) = mpsc::channel();
        let (go, gone) = mpsc::channel::<()>();
        let waiter_word = word.clone();
        let waiter = std::thread::spawn(move || {
            ready.send(this_tid()).unwrap();
            gone.recv().unwrap();
            while waiter_word.load(Ordering::Acquire) == 0 {
                // SAFETY: a futex wait on a live word, woken by the test below.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        waiter_word.as_ptr(),
                        libc::FUTEX_WAIT,
                        0,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
            }
        });
        let tid = started.recv().unwrap();
        let mut tracker = SwitchTracker::live();
        tracker.track(tid);
        go.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut seen, mut kind, mut seen_ip) = (None, None, None);
        while Instant::now() < deadline && seen != Some(address) {
            seen_ip = tracker.left_with_argument(tid).map(|out| out.ip);
            seen = tracker.left_with_argument(tid).map(|out| out.argument);
            kind = tracker.last(tid);
            std::thread::sleep(Duration::from_millis(1));
        }
        word.store(1, Ordering::Release);
        // SAFETY: wakes the waiter above.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
        waiter.join().unwrap();
        assert_eq!(
            seen.map(|a| format!("{a:#x}")),
            Some(format!("{address:#x}")),
            "the register a thread asleep in futex(2) left the CPU with"
        );
        assert_eq!(kind, Some(LastSwitch::Slept));
        // The instruction pointer is right after the system call instruction.
        let ip = seen_ip.expect("an instruction pointer") as usize;
        let len = SYSCALL_INSTRUCTION.len();
        // SAFETY: the bytes before a sampled instruction pointer of this process's own code.
        let before = unsafe { std::slice::from_raw_parts((ip - len) as *const u8, len) };
        assert_eq!(before, SYSCALL_INSTRUCTION);
    }

    /// Where kernel events are refused, the ring holds the switch records alone: how a
    /// thread left its CPU is known, the register is not.
    #[test]
    fn without_the_register_the_switches_are_still_recorded() {
        let (ready, started) = mpsc::channel();
        let (go, gone) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            ready.send(this_tid()).unwrap();
            gone.recv().unwrap();
            released.recv().unwrap();
        });
        let tid = started.recv().unwrap();
        let ring = Ring::open_with(tid, None).unwrap();
        go.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = None;
        while Instant::now() < deadline && seen.is_none_or(|(kind, _)| kind != LastSwitch::Slept) {
            seen = ring.last();
            std::thread::sleep(Duration::from_millis(1));
        }
        release.send(()).unwrap();
        waiter.join().unwrap();
        let (kind, argument) = seen.expect("no switch recorded");
        assert_eq!((kind, argument), (LastSwitch::Slept, None));
    }

    #[test]
    fn a_thread_blocked_in_a_wait_last_slept() {
        let (ready, started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let (ping, pinged) = mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            ready.send(this_tid()).unwrap();
            // Blocks here until tracked, then blocks again in the second recv.
            pinged.recv().unwrap();
            released.recv().unwrap();
        });
        let tid = started.recv().unwrap();
        let mut tracker = SwitchTracker::live();
        tracker.track(tid);
        ping.send(()).unwrap();
        let slept = wait_for(&tracker, tid, LastSwitch::Slept);
        release.send(()).unwrap();
        waiter.join().unwrap();
        assert!(
            slept,
            "a blocked thread's newest switch: {:?}",
            tracker.last(tid)
        );
    }
}
