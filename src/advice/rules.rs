//! The rules, in the order they rank: each looks at the facts and may recommend.

use super::facts::*;
use super::*;

pub(super) fn too_few_samples(f: &Facts) -> Recommendation {
    Recommendation {
        kind: Kind::None,
        verdict: format!(
            "Only {} samples were taken: too few to judge; record for longer.",
            f.rec.samples
        ),
        evidence: vec![count("samples", f.rec.samples, "samples taken")],
        code: Vec::new(),
        expected_speedup: None,
        rule: "too_few_samples".into(),
    }
}

/// A free-threaded build running with the GIL disabled: threads already run Python in
/// parallel, and nothing here is about the GIL.
pub(super) fn free_threaded(f: &Facts) -> Option<Recommendation> {
    let p = &f.rec.python;
    (p.free_threaded && p.gil == "disabled").then(|| Recommendation {
        kind: Kind::None,
        verdict: format!(
            "Python {} is free-threaded and runs with the GIL disabled: threads run Python in \
             parallel, and GIL advice does not apply.",
            p.version
        ),
        evidence: vec![mean_threads(
            "gil.parallelism",
            f.gil.parallelism,
            "threads on a CPU on average",
        )],
        code: Vec::new(),
        expected_speedup: None,
        rule: "free_threaded".into(),
    })
}

/// Two or more threads run Python and take turns on the GIL: processes would run them in
/// parallel.
pub(super) fn cpu_threads_contend(f: &Facts) -> Option<Recommendation> {
    let compute = f.cpu_contention()?;
    let speedup = f.speedup();
    let mut evidence = vec![
        share(
            "gil.contended",
            f.gil.contended,
            "of the time the GIL was held while another thread waited for it",
        ),
        mean_threads(
            "gil.parallelism",
            f.gil.parallelism,
            "threads on a CPU on average: the GIL runs one Python thread at a time",
        ),
        mean_threads(
            "cpu_demand",
            f.cpu_demand(),
            "threads that wanted a CPU on average (holding the GIL, waiting for it, or native)",
        ),
        count(
            "cpus",
            u64::from(f.rec.cpus),
            "CPUs this process may run on",
        ),
    ];
    for t in compute.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_wait", t.fig.states.gil_wait, "waited for the GIL"));
    }
    let mut code = f.code_refs(&compute, ThreadState::GilHeld, Role::HoldsGil);
    code.extend(f.code_refs(&compute, ThreadState::GilWait, Role::WaitsForGil));
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "{} Python code and take turns on the GIL: run that work in processes \
             (ProcessPoolExecutor or multiprocessing){}.",
            subject(&compute, "runs", "run"),
            speedup_text(speedup)
        ),
        evidence,
        code,
        expected_speedup: speedup,
        rule: "cpu_threads_contend".into(),
    })
}

/// I/O threads wait for the GIL after their wake-ups while a CPU-bound thread holds it.
pub(super) fn convoy(f: &Facts) -> Option<Recommendation> {
    let (victims, holders) = f.convoy()?;
    let wakeups: u64 = victims.iter().map(|t| t.fig.wakeups).sum();
    let waited: u64 = victims.iter().map(|t| t.wakeup_waits).sum();
    let wait_samples: u64 = victims.iter().map(|t| t.wakeup_wait_samples).sum();
    let wait_ms = ratio(wait_samples, wakeups) * f.period_ms;
    let wait_share =
        victims.iter().map(|t| t.fig.states.gil_wait).sum::<f64>() / victims.len() as f64;
    let mut evidence = Vec::new();
    for t in victims.iter().take(MAX_NAMED_THREADS) {
        let f = &t.fig;
        evidence.push(Evidence {
            figure: t.figure("wakeups_waiting_for_gil"),
            value: f.wakeups_waiting_for_gil,
            unit: Unit::Share,
            note: format!(
                "of the {} wake-ups of {} seen began with a wait for the GIL",
                f.wakeups, t.label
            ),
        });
        evidence.push(Evidence {
            figure: t.figure("mean_wait_per_wakeup_ms"),
            value: f.mean_wait_per_wakeup_ms,
            unit: Unit::Ms,
            note: format!("waiting for the GIL per wake-up of {}, on average", t.label),
        });
    }
    for t in holders.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"));
    }
    let mut code = f.code_refs(&holders, ThreadState::GilHeld, Role::HoldsGil);
    code.extend(f.code_refs(&victims, ThreadState::GilWait, Role::WaitsForGil));
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "{} for the GIL after {:.0}% of their wake-ups ({wait_ms:.1} ms per wake-up \
             seen; {:.0}% of their time) because {} keeps it busy: move that CPU work out of \
             this process (a ProcessPoolExecutor or a separate worker).",
            subject(&victims, "waits", "wait"),
            ratio(waited, wakeups) * 100.0,
            wait_share * 100.0,
            names(&holders)
        ),
        evidence,
        code,
        expected_speedup: None,
        rule: "convoy".into(),
    })
}

/// The other way out of [`cpu_threads_contend`]: make the hot code native and release the GIL.
pub(super) fn cpu_threads_native_offload(f: &Facts) -> Option<Recommendation> {
    let compute = f.cpu_contention()?;
    let code = f.code_refs(&compute, ThreadState::GilHeld, Role::HoldsGil);
    let speedup = f.speedup();
    let evidence = compute
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"))
        .collect();
    Some(Recommendation {
        kind: Kind::NativeOffload,
        verdict: format!(
            "Or move the hot Python code{} into native code that releases the GIL (NumPy, or \
             a C, Cython or Rust extension), so these threads run in parallel{}.",
            hot_function_text(&code),
            speedup_text(speedup)
        ),
        evidence,
        code,
        expected_speedup: speedup,
        rule: "cpu_threads_native_offload".into(),
    })
}

/// Threads run native code without the GIL, several at once: threads already scale.
pub(super) fn native_parallel(f: &Facts) -> Option<Recommendation> {
    let native: Vec<&Thread> = f
        .threads
        .iter()
        .filter(|t| t.fig.class == ThreadClass::Native)
        .collect();
    // Native threads queueing behind a Python loop do not scale (see native_convoy).
    if native.len() < 2 || f.gil.parallelism < PARALLEL_THREADS || f.native_convoy().is_some() {
        return None;
    }
    let mut evidence = vec![
        mean_threads(
            "gil.parallelism",
            f.gil.parallelism,
            "threads on a CPU on average",
        ),
        count(
            "cpus",
            u64::from(f.rec.cpus),
            "CPUs this process may run on",
        ),
    ];
    for t in native.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of(
            "native_nogil",
            t.fig.states.native_nogil,
            "ran native code without the GIL",
        ));
    }
    Some(Recommendation {
        kind: Kind::Threads,
        verdict: format!(
            "{} native code without the GIL, {:.1} threads on a CPU on average: threads \
             already scale here; keep them.",
            subject(&native, "runs", "run"),
            f.gil.parallelism
        ),
        evidence,
        code: Vec::new(),
        expected_speedup: None,
        rule: "native_parallel".into(),
    })
}

/// One busy thread and nobody waiting for the GIL: the GIL is not what limits speed.
pub(super) fn one_cpu_thread(f: &Facts) -> Option<Recommendation> {
    let busy = f.lone_busy_thread()?;
    let code = f.code_refs(&[busy], ThreadState::GilHeld, Role::HoldsGil);
    let s = &busy.fig.states;
    let mut evidence = vec![busy.share_of("gil_held", s.gil_held, "held the GIL")];
    if s.native_nogil > 0.0 {
        let native = "ran native code without the GIL";
        evidence.push(busy.share_of("native_nogil", s.native_nogil, native));
    }
    evidence.push(share(
        "gil.contended",
        f.gil.contended,
        "of the time another thread waited for the GIL",
    ));
    Some(Recommendation {
        kind: Kind::None,
        verdict: format!(
            "One thread ({}) does the work and no thread waits for the GIL: the GIL is not the \
             bottleneck, and more threads or async would not help; make the hot code{} faster.",
            busy.label,
            hot_function_text(&code)
        ),
        evidence,
        code,
        expected_speedup: None,
        rule: "one_cpu_thread".into(),
    })
}

/// The lone busy thread runs pure Python: native code is how it gets faster.
pub(super) fn one_cpu_thread_native_offload(f: &Facts) -> Option<Recommendation> {
    let busy = f.lone_busy_thread()?;
    if busy.fig.states.gil_held < HOLDER_SHARE {
        return None;
    }
    let code = f.code_refs(&[busy], ThreadState::GilHeld, Role::HoldsGil);
    Some(Recommendation {
        kind: Kind::NativeOffload,
        verdict: format!(
            "To make {} faster, move its hot loop{} into native code (NumPy, or a C, Cython or \
             Rust extension).",
            busy.label,
            hot_function_text(&code)
        ),
        evidence: vec![busy.share_of("gil_held", busy.fig.states.gil_held, "ran Python code")],
        code,
        expected_speedup: None,
        rule: "one_cpu_thread_native_offload".into(),
    })
}

/// An asyncio event loop that mostly waits for I/O: async is already the right model.
pub(super) fn event_loop_idle(f: &Facts) -> Option<Recommendation> {
    let loops: Vec<&Thread> = f
        .threads
        .iter()
        .filter(|t| t.event_loop && t.fig.states.idle >= IDLE_THRESHOLD)
        .filter(|t| {
            !t.fig
                .event_loop
                .as_ref()
                .is_some_and(super::event_loop::is_stalled)
        })
        .collect();
    let first = loops.first()?;
    let mut evidence: Vec<Evidence> = loops
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| t.share_of("idle", t.fig.states.idle, "was idle, waiting for events"))
        .collect();
    evidence.push(share(
        "gil.contended",
        f.gil.contended,
        "of the time a thread waited for the GIL",
    ));
    let mut verdict = format!(
        "The asyncio event loop ({}) waits for I/O {:.0}% of the time: async is already the \
         right model here; nothing to offload.",
        first.label,
        first.fig.states.idle * 100.0
    );
    // uvloop: stalls are not measured, so a long callback cannot be ruled out.
    if let Some(l) = first.fig.event_loop.as_ref().filter(|l| !l.stalls_measured) {
        verdict = format!(
            "The {} event loop ({}) waits for I/O {:.0}% of the time: async is the right \
             model here. Its stalls are not measured on {}",
            l.kind,
            first.label,
            first.fig.states.idle * 100.0,
            l.kind
        );
        match l.blocking.first() {
            Some(b) => {
                verdict += &format!(
                    ": if clients wait behind {} ({}:{}), which ran {:.0}% of the loop's busy \
                     time, move it off the loop (`loop.run_in_executor`).",
                    b.function,
                    b.file.rsplit('/').next().unwrap_or(&b.file),
                    b.line,
                    b.fraction * 100.0
                )
            }
            None => verdict.push('.'),
        }
    }
    Some(Recommendation {
        kind: Kind::Async,
        verdict,
        evidence,
        code: Vec::new(),
        expected_speedup: None,
        rule: "event_loop_idle".into(),
    })
}

/// Many threads, or connection handlers, mostly idle in I/O: asyncio does this with one.
pub(super) fn io_threads_async(f: &Facts) -> Option<Recommendation> {
    let io = f.io_threads()?;
    let handlers = io.iter().any(|t| t.handler);
    if !(io.len() >= ASYNC_IO_THREADS || handlers) {
        return None;
    }
    let role = if handlers {
        " as connection handlers"
    } else {
        ""
    };
    Some(Recommendation {
        kind: Kind::Async,
        verdict: format!(
            "{} for I/O {:.0}% of the time{role}: asyncio would serve the same \
             connections on one thread, with less memory and fewer GIL hand-offs.",
            subject(&io, "waits", "wait"),
            mean_idle(&io) * 100.0
        ),
        evidence: io_evidence(f, &io),
        code: Vec::new(),
        expected_speedup: None,
        rule: "io_threads_async".into(),
    })
}

/// A few threads mostly idle in I/O or sleep, rarely waiting for the GIL: threads are fine.
pub(super) fn io_threads_fine(f: &Facts) -> Option<Recommendation> {
    let io = f.io_threads()?;
    let handlers = io.iter().any(|t| t.handler);
    if io.len() >= ASYNC_IO_THREADS || handlers {
        return None;
    }
    Some(Recommendation {
        kind: Kind::Threads,
        verdict: format!(
            "{} for I/O or sleep {:.0}% of the time and rarely for the GIL: threads \
             are fine here.",
            subject(&io, "waits", "wait"),
            mean_idle(&io) * 100.0
        ),
        evidence: io_evidence(f, &io),
        code: Vec::new(),
        expected_speedup: None,
        rule: "io_threads_fine".into(),
    })
}

pub(super) fn nothing_stands_out(f: &Facts) -> Recommendation {
    Recommendation {
        kind: Kind::None,
        verdict: "No GIL pattern stands out; see the per-thread table and gil_wait.svg."
            .to_string(),
        evidence: vec![
            share(
                "gil.held",
                f.gil.held,
                "of the time some thread held the GIL",
            ),
            share(
                "gil.contended",
                f.gil.contended,
                "of the time the GIL was held while another thread waited for it",
            ),
        ],
        code: Vec::new(),
        expected_speedup: None,
        rule: "nothing_stands_out".into(),
    }
}

// ---------------------------------------------------------------------------------------
// The facts the rules read
