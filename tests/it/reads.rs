//! Memory reads per sample on live interpreters: a warm sample reads every thread state in
//! one process_vm_readv and every stack in another, so the count does not grow with the
//! number of frames or threads (3.11+, whose frames share a data stack; 3.8-3.10, whose
//! heap frames are read at the addresses the previous sample found them).

use crate::support::{self, Child};
use gilscope::model::state::ThreadState;
use gilscope::process::kernel::KernelState;
use gilscope::sample::{SampleError, Sampler};

const SAMPLES: u64 = 200;

#[test]
fn a_warm_sample_reads_memory_in_a_few_batches() {
    let pythons = support::pythons();
    assert!(!pythons.is_empty(), "no interpreter found");
    for python in pythons {
        let label = python.label();
        let child = Child::fixture(&python, "dump_workload.py", &[]);
        let mut target =
            Sampler::attach(child.pid()).unwrap_or_else(|e| panic!("{label}: attach: {e:#}"));
        // A first sample follows every link and reads every code object.
        let mut threads = 0;
        for _ in 0..20 {
            match target.sample(true) {
                Ok(sample) => threads = threads.max(sample.threads.len() as u64),
                Err(SampleError::Torn) => continue,
                Err(e) => panic!("{label}: {e:?}"),
            }
        }
        assert!(threads >= 7, "{label}: the workload runs 7 threads");
        let before = target.walker.mem.calls();
        let mut taken = 0u64;
        while taken < SAMPLES {
            match target.sample(true) {
                Ok(_) | Err(SampleError::Torn) => taken += 1,
                Err(e) => panic!("{label}: {e:?}"),
            }
        }
        let calls = target.walker.mem.calls() - before;
        let per_sample = calls as f64 / SAMPLES as f64;
        eprintln!("{label}: {per_sample:.2} process_vm_readv calls per sample, {threads} threads");
        // Thread states, stacks, the GIL again (3 here when measured); before 3.11 also the
        // tids in `struct pthread` (4), and now and then a frame allocated elsewhere since.
        let most = if python.minor >= 11 { 3.5 } else { 5.0 };
        assert!(
            per_sample <= most,
            "{label}: {per_sample:.2} reads per sample (at most {most})"
        );
    }
}

/// On 3.15+ the threads' own GIL flags say who holds the GIL and who waits for it: /proc is
/// not read for those threads (`KernelState::NotRead`), unless `--verify-flags` asks to
/// compare; earlier versions read every thread but the GIL's holder, or know from its
/// context switches that it is still where the last read found it.
#[test]
fn threads_the_gil_flags_settle_are_not_read_in_proc() {
    let pythons = support::pythons();
    assert!(!pythons.is_empty(), "no interpreter found");
    let mut flagged_versions = 0;
    for python in pythons {
        let label = python.label();
        let child = Child::fixture(&python, "workload.py", &["cpu_threads", "--seconds", "60"]);
        let mut target =
            Sampler::attach(child.pid()).unwrap_or_else(|e| panic!("{label}: attach: {e:#}"));
        let flags_exported = target
            .walker
            .layout()
            .tstate
            .gil_flags
            .is_some_and(|f| f.exported);
        flagged_versions += usize::from(flags_exported);
        // Per sample: /proc reads, and threads settled by their flags without one.
        let per_sample = |target: &mut Sampler| {
            let before = target.kernel_reads();
            let (mut taken, mut threads, mut not_read) = (0u64, 0, 0usize);
            while taken < SAMPLES {
                match target.sample(false) {
                    Ok(sample) => {
                        threads = threads.max(sample.threads.len());
                        not_read += sample
                            .threads
                            .iter()
                            .filter(|t| t.kernel == KernelState::NotRead)
                            .count();
                        taken += 1;
                    }
                    Err(SampleError::Torn) => taken += 1,
                    Err(e) => panic!("{label}: {e:?}"),
                }
            }
            let reads = (target.kernel_reads() - before) as f64 / SAMPLES as f64;
            (reads, threads, not_read as f64 / SAMPLES as f64)
        };
        let (reads, threads, not_read) = per_sample(&mut target);
        eprintln!(
            "{label}: {reads:.2} /proc thread reads and {not_read:.2} threads settled by flags \
             per sample, {threads} threads"
        );
        assert_eq!(threads, 5, "{label}: MainThread and 4 workers");
        if flags_exported {
            // The holder and the waiters, all but now and then a worker between dropping the
            // GIL and asking for it again.
            assert!(not_read >= 3.0, "{label}: {not_read:.2} settled by flags");
            assert!(reads < 2.5, "{label}: {reads:.2} /proc reads per sample");
            target.set_verify_flags(true);
            let (_, _, verified_not_read) = per_sample(&mut target);
            assert_eq!(
                verified_not_read, 0.0,
                "{label}: --verify-flags reads every thread"
            );
        } else {
            assert_eq!(not_read, 0.0, "{label}: no flags to settle threads by");
        }
    }
    assert!(
        flagged_versions > 0 || support::pythons().iter().all(|p| p.minor < 15),
        "a 3.15+ interpreter was found but none exports its GIL flags"
    );
}

/// A thread blocked in a syscall is read in /proc once: while its context switches show it
/// has not run since, it is where that read found it. Idle threads then cost no read, and
/// still read as idle; a thread that runs is read again.
#[test]
fn a_thread_that_has_not_run_since_its_last_read_is_not_read_again() {
    let pythons = support::pythons();
    assert!(!pythons.is_empty(), "no interpreter found");
    for python in pythons {
        let label = python.label();
        let child = Child::fixture(&python, "workload.py", &["sleepers", "--seconds", "60"]);
        let mut target =
            Sampler::attach(child.pid()).unwrap_or_else(|e| panic!("{label}: attach: {e:#}"));
        assert!(target.tracks_switches(), "{label}: perf events refused");
        for _ in 0..5 {
            let _ = target.sample(false);
        }
        let before = target.kernel_reads();
        let (mut taken, mut idle, mut thread_samples) = (0u64, 0usize, 0usize);
        // The first few threads read other than idle, with their class and kernel state,
        // so that a failure says which and how.
        let mut not_idle = Vec::new();
        while taken < SAMPLES {
            match target.sample(false) {
                Ok(sample) => {
                    thread_samples += sample.threads.len();
                    for t in &sample.threads {
                        if t.class.state == ThreadState::Idle {
                            idle += 1;
                        } else if not_idle.len() < 5 {
                            not_idle.push(format!(
                                "sample {taken}: tid {:?} {:?} {:?}",
                                t.tid, t.class.state, t.kernel
                            ));
                        }
                    }
                    taken += 1;
                }
                Err(SampleError::Torn) => taken += 1,
                Err(e) => panic!("{label}: {e:?}"),
            }
        }
        let reads = (target.kernel_reads() - before) as f64 / SAMPLES as f64;
        eprintln!("{label}: {reads:.2} /proc reads per sample, {idle} of {thread_samples} idle");
        // MainThread, 3 sleepers and 2 readers, all blocked for the whole run.
        assert!(reads < 0.5, "{label}: {reads:.2} /proc reads per sample");
        assert!(
            thread_samples >= 6 * SAMPLES as usize - 6,
            "{label}: {thread_samples}"
        );
        assert_eq!(
            idle, thread_samples,
            "{label}: every thread idle; not: {not_idle:?}"
        );
    }
}
