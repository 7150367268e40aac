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
