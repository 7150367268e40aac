//! What a thread is doing, from two racy observations: whether the GIL names it as holder
//! (memory) and what the scheduler says it is doing (/proc). A pure function, so every
//! rule is tested without a process.

use crate::model::state::{IdleReason, ThreadState};
use crate::process::KernelState;
use crate::process::switches::SwitchOut;
use crate::python::walker::GilState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    pub state: ThreadState,
    pub idle_reason: Option<IdleReason>,
}

impl Classification {
    pub const fn active(state: ThreadState) -> Self {
        Classification {
            state,
            idle_reason: None,
        }
    }
    const fn idle(reason: IdleReason) -> Self {
        Classification {
            state: ThreadState::Idle,
            idle_reason: Some(reason),
        }
    }
}

/// The two observations disagree in a way no real instant allows: the GIL names a holder
/// that the kernel shows waiting for that same GIL. The sample is torn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contradiction;

/// Blocked in futex(2) on a word inside the GIL struct: waiting for the GIL (or handing it
/// over, on `switch_cond`).
pub fn is_gil_wait(kernel: KernelState, gil: &GilState) -> bool {
    matches!(kernel, KernelState::Syscall { nr, args } if is_futex(nr) && gil.contains(args[0]))
}

/// How a runnable thread left its CPU inside a futex call on one of the GIL's words:
/// `last_out` is its newest switch, when that is a switch out (it has not run since). It
/// went to sleep on the word and was woken since, or was preempted inside a system call on
/// it (`in_system_call(ip)`: a futex wake as it handed the GIL over, or the way out of a
/// wait). Either way it is inside `take_gil` or `drop_gil`. A thread preempted in user
/// code is not taken: the register it was preempted with says nothing of where it is.
pub fn in_gil_futex_call(
    last_out: Option<SwitchOut>,
    gil: &GilState,
    in_system_call: impl FnOnce(u64) -> bool,
) -> Option<SwitchOut> {
    let out = last_out.filter(|out| gil.contains(out.argument))?;
    (!out.preempted || in_system_call(out.ip)).then_some(out)
}

/// Classifies one thread. `holds_gil`: the GIL is locked and names this thread.
/// `waiting_for_gil`: the sampler found the thread inside a wait on the GIL though the
/// kernel shows it runnable (glibc's waiter count, a GIL mutex it owns, the futex call it
/// left its CPU in, or, without the count, last seen blocked on the GIL with almost no CPU
/// used since), so if it is runnable now it is inside `take_gil` or `drop_gil`, most likely
/// queued for a CPU, and not native code.
pub fn classify(
    holds_gil: bool,
    kernel: KernelState,
    gil: &GilState,
    waiting_for_gil: bool,
) -> Result<Classification, Contradiction> {
    let waits_on_gil = is_gil_wait(kernel, gil);
    if holds_gil {
        return if waits_on_gil {
            Err(Contradiction)
        } else {
            Ok(Classification::active(ThreadState::GilHeld))
        };
    }
    Ok(match kernel {
        KernelState::Running if waiting_for_gil => Classification::active(ThreadState::GilWait),
        KernelState::Syscall { .. } if waits_on_gil => Classification::active(ThreadState::GilWait),
        other => classify_without_gil(other),
    })
}

/// What a thread that neither holds nor waits for the GIL is doing, by /proc alone.
pub fn classify_without_gil(kernel: KernelState) -> Classification {
    match kernel {
        KernelState::Running => Classification::active(ThreadState::NativeNogil),
        KernelState::Syscall { nr, args } => Classification::idle(idle_reason(nr, &args)),
        KernelState::Stopped | KernelState::Blocked | KernelState::Gone => {
            Classification::idle(IdleReason::Other)
        }
        // Only threads whose GIL flags say they hold or want the GIL go unread, and the
        // sampler classifies them by those flags; without the GIL, they want it.
        KernelState::NotRead => Classification::active(ThreadState::GilWait),
    }
}

fn is_futex(nr: i64) -> bool {
    nr == libc::SYS_futex
}

/// Why a thread blocked in syscall `nr` is idle.
pub fn idle_reason(nr: i64, args: &[u64; 6]) -> IdleReason {
    if is_futex(nr) || nr == libc::SYS_futex_waitv {
        return IdleReason::Lock;
    }
    if let Some(reason) = arch_specific_reason(nr, args) {
        return reason;
    }
    match nr {
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => IdleReason::Sleep,
        // pselect6 / ppoll with no descriptors are timed sleeps.
        libc::SYS_pselect6 if args[0] == 0 => IdleReason::Sleep,
        libc::SYS_ppoll if args[1] == 0 => IdleReason::Sleep,
        libc::SYS_read
        | libc::SYS_write
        | libc::SYS_readv
        | libc::SYS_writev
        | libc::SYS_pread64
        | libc::SYS_pwrite64
        | libc::SYS_preadv
        | libc::SYS_pwritev
        | libc::SYS_preadv2
        | libc::SYS_pwritev2
        | libc::SYS_recvfrom
        | libc::SYS_recvmsg
        | libc::SYS_recvmmsg
        | libc::SYS_sendto
        | libc::SYS_sendmsg
        | libc::SYS_sendmmsg
        | libc::SYS_accept
        | libc::SYS_accept4
        | libc::SYS_connect
        | libc::SYS_pselect6
        | libc::SYS_ppoll
        | libc::SYS_epoll_pwait
        | libc::SYS_epoll_pwait2
        | libc::SYS_io_getevents
        | libc::SYS_io_uring_enter
        | libc::SYS_sendfile
        | libc::SYS_splice
        | libc::SYS_openat
        | libc::SYS_fsync
        | libc::SYS_fdatasync => IdleReason::Io,
        _ => IdleReason::Other,
    }
}

#[cfg(target_arch = "x86_64")]
fn arch_specific_reason(nr: i64, args: &[u64; 6]) -> Option<IdleReason> {
    match nr {
        libc::SYS_pause => Some(IdleReason::Sleep),
        // time.sleep on 3.8-3.10 is select(0, NULL, NULL, NULL, &timeout).
        libc::SYS_select if args[0] == 0 => Some(IdleReason::Sleep),
        libc::SYS_poll if args[1] == 0 => Some(IdleReason::Sleep),
        libc::SYS_select | libc::SYS_poll | libc::SYS_epoll_wait | libc::SYS_open => {
            Some(IdleReason::Io)
        }
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn arch_specific_reason(_nr: i64, _args: &[u64; 6]) -> Option<IdleReason> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIL: GilState = GilState {
        address: 0x1000,
        size: 208,
        locked: true,
        last_holder: 0xaaaa,
        switch_number: 7,
        interval_us: 5000,
        enabled: None,
    };

    fn syscall(nr: i64, args: [u64; 6]) -> KernelState {
        KernelState::Syscall { nr, args }
    }

    fn class(holds: bool, kernel: KernelState) -> (ThreadState, Option<IdleReason>) {
        let c = classify(holds, kernel, &GIL, false).unwrap();
        (c.state, c.idle_reason)
    }

    #[test]
    fn the_named_holder_holds_the_gil() {
        assert_eq!(class(true, KernelState::Running).0, ThreadState::GilHeld);
        // A holder blocked in I/O still holds the GIL (C code that did not release it).
        assert_eq!(
            class(true, syscall(libc::SYS_read, [3, 0, 0, 0, 0, 0])).0,
            ThreadState::GilHeld
        );
    }

    #[test]
    fn a_thread_off_its_cpu_in_a_gil_futex_call_is_told_by_its_registers() {
        const AFTER_SYSCALL: u64 = 0x7000;
        let out = |preempted, argument, ip| {
            Some(SwitchOut {
                preempted,
                argument,
                ip,
            })
        };
        let call = |last_out| {
            in_gil_futex_call(last_out, &GIL, |ip| ip == AFTER_SYSCALL).map(|out| out.argument)
        };
        // Asleep on the GIL's mutex (inside the struct), woken, not run since.
        assert_eq!(
            call(out(false, 0x1000 + 80, AFTER_SYSCALL)),
            Some(0x1000 + 80)
        );
        // Asleep on another lock, or a sleep whose first argument is a clock id.
        assert_eq!(call(out(false, 0x1000 + 208, AFTER_SYSCALL)), None);
        assert_eq!(call(out(false, 1, AFTER_SYSCALL)), None);
        // Preempted inside a futex call on the GIL (handing it over).
        assert_eq!(
            call(out(true, 0x1000 + 32, AFTER_SYSCALL)),
            Some(0x1000 + 32)
        );
        // Preempted in user code: the register is whatever it held.
        assert_eq!(call(out(true, 0x1000 + 80, 0x7100)), None);
        // On a CPU, or no register sampled.
        assert_eq!(call(None), None);
    }

    #[test]
    fn a_holder_waiting_for_its_own_gil_is_a_torn_sample() {
        let waiting = syscall(libc::SYS_futex, [0x1000 + 56, 0x189, 0, 0, 0, 0]);
        assert_eq!(classify(true, waiting, &GIL, false), Err(Contradiction));
    }

    #[test]
    fn futex_inside_the_gil_is_a_wait_and_elsewhere_a_lock() {
        let on_cond = syscall(libc::SYS_futex, [0x1000 + 48, 0x189, 0, 0, 0, 0]);
        assert_eq!(class(false, on_cond), (ThreadState::GilWait, None));
        let last_byte = syscall(libc::SYS_futex, [0x1000 + 207, 0, 0, 0, 0, 0]);
        assert_eq!(class(false, last_byte).0, ThreadState::GilWait);
        let past_end = syscall(libc::SYS_futex, [0x1000 + 208, 0, 0, 0, 0, 0]);
        assert_eq!(
            class(false, past_end),
            (ThreadState::Idle, Some(IdleReason::Lock))
        );
    }

    #[test]
    fn running_without_the_gil_is_native() {
        assert_eq!(
            class(false, KernelState::Running),
            (ThreadState::NativeNogil, None)
        );
    }

    #[test]
    fn a_runnable_thread_that_has_not_run_since_it_waited_still_waits() {
        let woken = classify(false, KernelState::Running, &GIL, true).unwrap();
        assert_eq!(woken.state, ThreadState::GilWait);
        // The holder is the holder whatever its history.
        assert_eq!(
            classify(true, KernelState::Running, &GIL, true)
                .unwrap()
                .state,
            ThreadState::GilHeld
        );
    }

    #[test]
    fn sleeps_on_every_version() {
        assert_eq!(
            class(false, syscall(libc::SYS_clock_nanosleep, [0; 6])).1,
            Some(IdleReason::Sleep)
        );
        assert_eq!(
            class(false, syscall(libc::SYS_select, [0, 0, 0, 0, 0x7ff0, 0])).1,
            Some(IdleReason::Sleep)
        );
        assert_eq!(
            class(false, syscall(libc::SYS_select, [5, 0x7ff0, 0, 0, 0, 0])).1,
            Some(IdleReason::Io)
        );
    }

    #[test]
    fn io_and_other() {
        assert_eq!(
            class(false, syscall(libc::SYS_recvfrom, [3, 0, 0, 0, 0, 0])).1,
            Some(IdleReason::Io)
        );
        assert_eq!(
            class(false, syscall(libc::SYS_epoll_wait, [3, 0, 0, 0, 0, 0])).1,
            Some(IdleReason::Io)
        );
        assert_eq!(
            class(false, syscall(libc::SYS_wait4, [0; 6])).1,
            Some(IdleReason::Other)
        );
        assert_eq!(
            class(false, KernelState::Stopped).1,
            Some(IdleReason::Other)
        );
    }
}
