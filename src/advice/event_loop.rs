//! The rule for a stalled asyncio event loop: code that runs without going back to the
//! loop for longer than `--stall-ms` makes every other client of the loop wait.

use super::facts::*;
use super::*;
use crate::model::event_loop::EventLoopFigures;

/// Stalls needed before a loop is called stalled (one could be the machine's doing)...
pub const MIN_LOOP_STALLS: u64 = 3;
/// ...unless one stall is this many times the threshold.
pub const LONG_STALL_FACTOR: f64 = 5.0;

/// Whether a loop's stalls call for the rule.
pub fn is_stalled(l: &EventLoopFigures) -> bool {
    l.stalls >= MIN_LOOP_STALLS
        || (l.stalls > 0 && l.longest_stall_ms >= LONG_STALL_FACTOR * l.stall_threshold_ms)
}

/// The most blocked event loop that stalls: name what blocks it, and how to move it off.
pub(super) fn event_loop_stalled(f: &Facts) -> Option<Recommendation> {
    let mut stalled: Vec<(&Thread, &EventLoopFigures)> = f
        .threads
        .iter()
        .filter_map(|t| t.fig.event_loop.as_ref().map(|l| (t, l)))
        .filter(|(_, l)| is_stalled(l))
        .collect();
    stalled.sort_by(|a, b| b.1.blocked.total_cmp(&a.1.blocked));
    let &(t, l) = stalled.first()?;
    let top = l.blocking.first();
    let cause = top.map_or("python", |b| b.cause.as_str());
    let (kind, fix) = match cause {
        "python" | "gil_wait" => (
            Kind::Processes,
            "it is pure-Python CPU work, so run it in a process pool: `await \
             loop.run_in_executor(pool, func, *args)` with a `ProcessPoolExecutor` (or make \
             it native code that releases the GIL)",
        ),
        "native" => (
            Kind::NativeOffload,
            "it is a native call that releases the GIL, so it can run beside the loop: \
             `await asyncio.to_thread(func, *args)` (or `loop.run_in_executor(None, ...)`)",
        ),
        _ => (
            Kind::Threads,
            "it blocks on sleep or I/O, so use its async form (`await asyncio.sleep`, \
             asyncio streams, an async client) or run it in a thread: `await \
             asyncio.to_thread(func, *args)`",
        ),
    };
    let what = match top {
        Some(b) => format!(
            "{} ({}:{}{}) runs {:.0}% of that time",
            b.function,
            short_file(&b.file),
            b.line,
            b.in_task(),
            b.fraction * 100.0
        ),
        None => "the code that runs then was not sampled".into(),
    };
    let figure = |name: &str| t.figure(&format!("event_loop.{name}"));
    let evidence = vec![
        Evidence {
            figure: figure("stalls_per_s"),
            value: l.stalls_per_s,
            unit: Unit::PerSecond,
            note: format!(
                "stalls of the event loop ({} in all), each running code over {:.0} ms \
                 without going back to the loop",
                l.stalls, l.stall_threshold_ms
            ),
        },
        Evidence {
            figure: figure("longest_stall_ms"),
            value: l.longest_stall_ms,
            unit: Unit::Ms,
            note: "the longest stall: the latency every other client of the loop paid then".into(),
        },
        Evidence {
            figure: figure("p95_stall_ms"),
            value: l.p95_stall_ms,
            unit: Unit::Ms,
            note: "95% of the stalls were this long or shorter".into(),
        },
        Evidence {
            figure: figure("blocked"),
            value: l.blocked,
            unit: Unit::Share,
            note: format!("of the time the loop of {} was stalled", t.label),
        },
        Evidence {
            figure: figure("busy"),
            value: l.busy,
            unit: Unit::Share,
            note: "of the time the loop was busy (not waiting for events)".into(),
        },
    ];
    let code = l
        .blocking
        .iter()
        .filter(|b| b.fraction >= MIN_CODE_SHARE)
        .take(MAX_CODE_REFS)
        .map(|b| CodeRef {
            function: b.function.clone(),
            file: b.file.clone(),
            line: b.line,
            fraction: b.fraction,
            role: Role::BlocksLoop,
        })
        .collect();
    Some(Recommendation {
        kind,
        verdict: format!(
            "The asyncio event loop ({}) stalls {:.1} times a second for up to {:.0} ms \
             ({:.0}% of the time), and every other client waits meanwhile: {what}. Move it \
             off the loop: {fix}.",
            t.label,
            l.stalls_per_s,
            l.longest_stall_ms,
            l.blocked * 100.0
        ),
        evidence,
        code,
        expected_speedup: None,
        rule: "event_loop_stalled".into(),
    })
}

fn short_file(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}
