//! `gilscope dump`: one snapshot of every Python thread.

use crate::classify::{Classification, ThreadState};
use crate::error::Error;
use crate::sample::{Sample, SampleError, Target, handoff_verdict, settle_by_thread_flags};
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

pub fn run(config: &DumpConfig) -> Result<Snapshot> {
    let mut target = Target::attach(config.pid)?;
    target.refresh_names();
    let mut sample = if config.blocking {
        target.sample_paused(true)?
    } else {
        observe(&mut target)?
    };
    settle_by_thread_flags(&mut sample);
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

/// Resolves the threads of `sample` that were runnable without the GIL (see
/// [`handoff_verdict`]), watching each for up to [`RESOLVE_WITHIN`].
fn resolve_runnable(target: &mut Target, sample: &mut Sample) -> Result<()> {
    let mut pending: Vec<usize> = (0..sample.threads.len())
        .filter(|&i| sample.threads[i].class.state == ThreadState::NativeNogil)
        .collect();
    let give_up = Instant::now() + RESOLVE_WITHIN;
    while !pending.is_empty() && Instant::now() < give_up {
        std::thread::sleep(OBSERVE_EVERY / 2);
        let next = sample_until_consistent(target)?;
        pending.retain(|&index| {
            let earlier = &sample.threads[index];
            let Some(mut later) = next.threads.iter().find(|t| t.tid == earlier.tid).cloned()
            else {
                return false;
            };
            later.cpu_ns = target.cpu_time_ns(later.tid);
            match handoff_verdict(earlier, &later) {
                Some(true) => {
                    sample.threads[index].class = Classification {
                        state: ThreadState::GilWait,
                        idle_reason: None,
                    };
                    false
                }
                Some(false) => false,
                None => true,
            }
        });
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
