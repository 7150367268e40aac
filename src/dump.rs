//! `gilscope dump`: one snapshot of every Python thread.

use crate::classify::{Classification, ThreadState};
use crate::error::Error;
use crate::sample::{Sample, SampleError, Target};
use crate::snapshot::Snapshot;
use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};

/// What `dump` needs to run.
#[derive(Debug, Clone)]
pub struct DumpConfig {
    pub pid: i32,
    /// Pause the target for the read.
    pub blocking: bool,
}

/// How often a non-blocking dump retries a torn read before giving up.
const MAX_ATTEMPTS: usize = 200;
/// A non-blocking dump watches the threads this long and reports the last instant: a thread
/// woken from a GIL wait is runnable before it runs, and only its recent history tells such a
/// waiter from native code.
const OBSERVE_FOR: Duration = Duration::from_millis(20);
const OBSERVE_EVERY: Duration = Duration::from_millis(1);
/// How long a runnable thread's next move is awaited before it counts as native.
const RESOLVE_WITHIN: Duration = Duration::from_millis(200);
/// CPU that a thread in a GIL handoff never uses before it reaches the GIL, and native code
/// soon does. The kernel adds a running thread's CPU time up only at scheduler ticks, so a
/// reading can lag by one tick: this is just above one tick at HZ=250 (Debian's and Ubuntu's
/// default). On an HZ=100 kernel some handoffs read as native.
const NATIVE_CPU_NS: u64 = 5_000_000;

pub fn run(config: &DumpConfig) -> Result<Snapshot> {
    let mut target = Target::attach(config.pid)?;
    target.refresh_names();
    let sample = if config.blocking {
        target.sample_paused(true)?
    } else {
        observe(&mut target)?
    };
    Ok(Snapshot::new(&target, &sample))
}

/// Samples for [`OBSERVE_FOR`], so that woken GIL waiters have a history, and reports the
/// last instant, with the threads then runnable without the GIL resolved by what each does
/// next (see [`resolve_runnable`]).
fn observe(target: &mut Target) -> Result<Sample> {
    let until = Instant::now() + OBSERVE_FOR;
    let mut sample = sample_until_consistent(target)?;
    while Instant::now() < until {
        std::thread::sleep(OBSERVE_EVERY);
        sample = sample_until_consistent(target)?;
    }
    resolve_runnable(target, &mut sample)?;
    Ok(sample)
}

/// A thread runnable without the GIL is, at that instant, either running native code or in
/// a GIL handoff (a holder handing over, a woken waiter) while it waits for a CPU. What it
/// does next tells: reaching a GIL state before it has used [`NATIVE_CPU_NS`] of CPU means
/// it was in a handoff; using that much CPU first, or blocking elsewhere, means it was not.
fn resolve_runnable(target: &mut Target, sample: &mut Sample) -> Result<()> {
    let mut pending: Vec<(usize, u64)> = Vec::new();
    for (index, thread) in sample.threads.iter().enumerate() {
        if thread.class.state == ThreadState::NativeNogil
            && let Some(cpu_ns) = target.cpu_time_ns(thread.tid)
        {
            pending.push((index, cpu_ns));
        }
    }
    let give_up = Instant::now() + RESOLVE_WITHIN;
    while !pending.is_empty() && Instant::now() < give_up {
        std::thread::sleep(OBSERVE_EVERY / 2);
        let next = sample_until_consistent(target)?;
        let mut still_pending = Vec::new();
        for (index, cpu_at_sample) in pending {
            let tid = sample.threads[index].tid;
            let used = target
                .cpu_time_ns(tid)
                .map_or(u64::MAX, |now| now.saturating_sub(cpu_at_sample));
            let later = next.threads.iter().find(|t| t.tid == tid);
            // Only what was seen counts: a GIL wait inferred for a runnable thread is the very
            // guess this resolves.
            let on_gil =
                later.is_some_and(|t| t.class.state == ThreadState::GilHeld || t.blocked_on_gil);
            if used >= NATIVE_CPU_NS {
                continue;
            }
            match later.map(|t| t.class.state) {
                _ if on_gil => {
                    sample.threads[index].class = Classification {
                        state: ThreadState::GilWait,
                        idle_reason: None,
                    };
                }
                Some(ThreadState::NativeNogil | ThreadState::GilWait) => {
                    still_pending.push((index, cpu_at_sample))
                }
                Some(ThreadState::Idle | ThreadState::GilHeld) | None => {}
            }
        }
        pending = still_pending;
    }
    Ok(())
}

fn sample_until_consistent(target: &mut Target) -> Result<Sample> {
    for _ in 0..MAX_ATTEMPTS {
        match target.sample(true) {
            Ok(sample) => return Ok(sample),
            Err(SampleError::Torn) => continue,
            Err(SampleError::Gone) => return Err(Error::ProcessExited { pid: target.pid }.into()),
            Err(SampleError::Fatal(e)) => return Err(e),
        }
    }
    Err(anyhow!(
        "the target's memory kept changing under the reader; try --blocking"
    ))
}
