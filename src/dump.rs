//! `gilscope dump`: one snapshot of every Python thread.

use crate::classify::ThreadState;
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

/// Samples for [`OBSERVE_FOR`] and returns the latest instant at which no thread had just
/// gone from a GIL state to running without it: within a millisecond that is nearly always a
/// holder handing over or a waiter being woken, not native work. Falls back to the latest.
fn observe(target: &mut Target) -> Result<Sample> {
    let until = Instant::now() + OBSERVE_FOR;
    let mut previous = sample_until_consistent(target)?;
    let mut best: Option<Sample> = None;
    while Instant::now() < until {
        std::thread::sleep(OBSERVE_EVERY);
        let current = sample_until_consistent(target)?;
        if !left_the_gil(&previous, &current) {
            best = Some(current.clone());
        }
        previous = current;
    }
    Ok(best.unwrap_or(previous))
}

fn left_the_gil(before: &Sample, after: &Sample) -> bool {
    after
        .threads
        .iter()
        .filter(|t| t.class.state == ThreadState::NativeNogil)
        .any(|t| {
            before.threads.iter().any(|b| {
                b.tid == t.tid
                    && matches!(b.class.state, ThreadState::GilHeld | ThreadState::GilWait)
            })
        })
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
