//! `gilscope dump`: one snapshot of every Python thread.

use crate::error::Error;
use crate::mem::RemoteMemory;
use crate::model::snapshot::{GilInfo, InterpreterInfo, Snapshot, ThreadInfo};
use crate::model::state::{FlagComparison, ThreadState};
use crate::process::maps::{ProgramImage, program_path};
use crate::python::walker::GilState;
use crate::sample::{FlagCheck, Sample, SampleError, Sampler, settle_by_thread_flags};
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
    let mut target = Sampler::attach(config.pid)?;
    let image = ProgramImage::of(config.pid);
    crate::record::schedule::become_sampler(config.pid);
    target.refresh_names();
    let sample = if config.blocking {
        // Paused, nothing is in a handoff; the thread flags still settle holder and waiters.
        target.sample_paused(true).map(|mut sample| {
            settle_by_thread_flags(&mut sample);
            sample
        })
    } else {
        observe(&mut target)
    };
    // After an exec() the reads may have reached the new program, or failed because of it.
    if image.is_some_and(|image| image.replaced_in(config.pid)) {
        let program = program_path(config.pid);
        return Err(Error::ProcessExec {
            pid: config.pid,
            program,
        }
        .into());
    }
    Ok(snapshot(&target, &sample?))
}

/// Samples every [`OBSERVE_EVERY`] for [`OBSERVE_FOR`], so that the sampler has each
/// thread's recent history, and reports the last sample it resolved (the sampler resolves
/// threads caught in a GIL handoff by the sample after, as for `record` and `top`).
fn observe(target: &mut Sampler) -> Result<Sample> {
    let until = Instant::now() + OBSERVE_FOR;
    while Instant::now() < until {
        resolved_until_consistent(target)?;
        std::thread::sleep(OBSERVE_EVERY);
    }
    // The sample to report: the last one the sampler holds back once this one is taken.
    resolved_until_consistent(target)?;
    let reported = Instant::now();
    loop {
        std::thread::sleep(OBSERVE_EVERY);
        let ready = resolved_until_consistent(target)?;
        if let Some(sample) = ready.into_iter().rev().find(|s| s.time <= reported) {
            return Ok(sample);
        }
    }
}

fn resolved_until_consistent(target: &mut Sampler) -> Result<Vec<Sample>> {
    for _ in 0..MAX_ATTEMPTS {
        let mut released = Vec::new();
        match target.resolved_sample(true, false, &mut released) {
            Ok(()) => return Ok(released),
            Err(SampleError::Torn) => continue,
            Err(SampleError::Gone) => return Err(Error::ProcessExited { pid: target.pid }.into()),
            Err(SampleError::Fatal(e)) => return Err(e),
        }
    }
    Err(anyhow!(
        "the target's memory kept changing under the reader; try --blocking"
    ))
}

/// `sample` resolved into names and strings.
pub fn snapshot<M: RemoteMemory>(target: &Sampler<M>, sample: &Sample) -> Snapshot {
    let interpreters: Vec<InterpreterInfo> = sample
        .interpreters
        .iter()
        .enumerate()
        .map(|(index, i)| InterpreterInfo {
            id: i.id,
            gil: gil_info(index, &i.gil, sample),
        })
        .collect();
    let threads = sample
        .threads
        .iter()
        .map(|t| ThreadInfo {
            tid: t.tid,
            name: target.thread_name(t.tid).map(str::to_string),
            state: t.class.state,
            idle_reason: t.class.idle_reason,
            interpreter_id: sample.interpreters[t.interpreter].id,
            ident: t.ident,
            frames: t
                .frames
                .iter()
                .map(|f| target.walker.codes.frame_info(f))
                .collect(),
            truncated: t.truncated,
        })
        .collect();
    let main_gil = sample.main_gil();
    Snapshot {
        pid: target.pid,
        python: target.runtime().python_info(main_gil.map(GilState::mode)),
        gil: interpreters
            .last()
            .map(|i| i.gil.clone())
            .unwrap_or(GilInfo {
                locked: false,
                holder_tid: None,
                source: GIL_STRUCT,
                switch_number: 0,
                interval_us: 0,
            }),
        threads,
        interpreters,
        target_stopped: sample.target_stopped,
    }
}

const GIL_STRUCT: &str = "gil_struct";
const THREAD_FLAGS: &str = "thread_flags";

fn gil_info(interpreter: usize, gil: &GilState, sample: &Sample) -> GilInfo {
    let by_flags = matches!(
        sample.flag_check,
        Some(FlagCheck {
            compared: FlagComparison::State,
            ..
        })
    );
    let holder = if by_flags {
        sample
            .threads
            .iter()
            .find(|t| t.interpreter == interpreter && t.class.state == ThreadState::GilHeld)
    } else {
        gil.holder()
            .and_then(|h| sample.threads.iter().find(|t| t.tstate == h))
    };
    GilInfo {
        locked: gil.locked,
        holder_tid: holder.map(|t| t.tid),
        source: if by_flags { THREAD_FLAGS } else { GIL_STRUCT },
        switch_number: gil.switch_number,
        interval_us: gil.interval_us,
    }
}
