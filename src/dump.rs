//! `gilscope dump`: one snapshot of every Python thread.

use crate::cli::DumpConfig;
use crate::error::Error;
use crate::sample::{Sample, SampleError, Target};
use crate::snapshot::Snapshot;
use anyhow::{Result, anyhow};

/// How often a non-blocking dump retries a torn read before giving up.
const MAX_ATTEMPTS: usize = 200;

pub fn run(config: &DumpConfig) -> Result<Snapshot> {
    let mut target = Target::attach(config.pid)?;
    target.refresh_names();
    let sample = if config.blocking {
        target.sample_paused(true)?
    } else {
        sample_until_consistent(&mut target)?
    };
    Ok(Snapshot::new(&target, &sample))
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
