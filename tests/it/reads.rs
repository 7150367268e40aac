//! Memory reads per sample on live interpreters: a warm sample reads every thread state in
//! one process_vm_readv and every stack in another, so the count does not grow with the
//! number of frames or threads (3.11+, whose frames share a data stack; 3.8-3.10, whose
//! heap frames are read at the addresses the previous sample found them).

use crate::support::{self, Child};
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
/// read only for the other threads (here the idle MainThread, beside 4 contending
/// workers), unless `--verify-flags` asks to compare. Earlier versions read /proc for
/// every thread but the GIL's holder.
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
        let per_sample = |target: &mut Sampler| {
            let before = target.kernel_reads();
            let mut taken = 0u64;
            let mut threads = 0;
            while taken < SAMPLES {
                match target.sample(false) {
                    Ok(sample) => {
                        threads = threads.max(sample.threads.len());
                        taken += 1;
                    }
                    Err(SampleError::Torn) => taken += 1,
                    Err(e) => panic!("{label}: {e:?}"),
                }
            }
            (
                (target.kernel_reads() - before) as f64 / SAMPLES as f64,
                threads,
            )
        };
        let (reads, threads) = per_sample(&mut target);
        eprintln!("{label}: {reads:.2} /proc thread reads per sample, {threads} threads");
        assert_eq!(threads, 5, "{label}: MainThread and 4 workers");
        if flags_exported {
            // MainThread, and now and then a worker between dropping the GIL and asking for
            // it again (longer when the machine is busy and it is preempted there): well
            // under the 4 of reading every thread but the holder.
            assert!(reads < 2.5, "{label}: {reads:.2} /proc reads per sample");
            target.set_verify_flags(true);
            let (verified, _) = per_sample(&mut target);
            eprintln!("{label}: {verified:.2} with --verify-flags");
            assert!(
                verified >= 3.5,
                "{label}: {verified:.2} /proc reads per sample"
            );
        } else {
            // Every thread but the holder (read too when the GIL changes hands between
            // the two reads of a sample).
            assert!(reads >= 3.5, "{label}: {reads:.2} /proc reads per sample");
        }
    }
    assert!(
        flagged_versions > 0 || support::pythons().iter().all(|p| p.minor < 15),
        "a 3.15+ interpreter was found but none exports its GIL flags"
    );
}
