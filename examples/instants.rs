//! Logs every sample's per-thread classification with CLOCK_MONOTONIC times, one JSON line
//! per sample, so `scripts/accuracy.py --instants` can compare each instant with the uprobe
//! truth at that instant (a confusion matrix, not only the averages). It samples on
//! `record`'s schedule and scheduling policy. Each line gives two instants: `t0`, when the
//! reads that decide the classes began, and `t_gil`, when the GIL's read among them
//! completed (`accuracy.py --at-gil-read` compares at that one).
//!
//!     cargo run --release --example instants -- PID RATE_HZ SECONDS > instants.jsonl
//!
//! `FRAMES=1` reads stacks too, as `record` does. `SPIN_US=N` spins N µs after each sample
//! (on the sampling thread, reading nothing): whether the sampler's CPU time alone moves
//! the instants, as reading stacks does (docs/accuracy.md, sixth round).

use gilscope::record::schedule::{Schedule, become_sampler, sleep_until};
use gilscope::sample::{Sample, SampleError, Sampler};
use std::io::Write;
use std::time::{Duration, Instant};

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let pid: i32 = args[1].parse()?;
    let rate: f64 = args[2].parse()?;
    let seconds: f64 = args[3].parse()?;
    let mut target = Sampler::attach(pid)?;
    become_sampler(pid);
    let (origin, origin_ns) = (Instant::now(), monotonic_ns());
    // record's own schedule: jittered deadlines, so that the instants cannot lock onto
    // periodic work in the target (the switch interval is 5 ms, a period of 200 Hz).
    let mut schedule = Schedule::new(rate, u64::from(std::process::id()));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut out = std::io::stdout().lock();
    let spin = Duration::from_micros(
        std::env::var("SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    while Instant::now() < end {
        sleep_until(schedule.next_deadline(Instant::now()));
        let t0 = monotonic_ns();
        let mut resolved = Vec::new();
        match target.resolved_sample(std::env::var_os("FRAMES").is_some(), false, &mut resolved) {
            Ok(()) => {}
            Err(SampleError::Torn) => {
                writeln!(out, "{{\"torn\": {t0}}}")?;
                continue;
            }
            Err(_) => break,
        };
        let spin_until = Instant::now() + spin;
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        for sample in resolved {
            // When the reads that decide the classes began, and when the GIL's read among
            // them completed, on the monotonic clock.
            let on_clock = |t: Instant| origin_ns + t.duration_since(origin).as_nanos() as u64;
            write_line(
                &mut out,
                on_clock(sample.time),
                on_clock(sample.gil_read_at),
                &sample,
            )?;
        }
    }
    Ok(())
}

fn write_line(out: &mut impl Write, t0: u64, t_gil: u64, sample: &Sample) -> anyhow::Result<()> {
    let threads: Vec<serde_json::Value> = sample
        .threads
        .iter()
        .map(|t| {
            serde_json::json!({
                "tid": t.tid,
                "class": t.class.state.name(),
                "kernel": format!("{:?}", t.kernel),
                "tstate": t.tstate,
                "flags": t.gil_flags.map(|f| [f.holds, f.requested, f.steady]),
            })
        })
        .collect();
    let gils: Vec<serde_json::Value> = sample
        .interpreters
        .iter()
        .map(|i| serde_json::json!({"locked": i.gil.locked, "last_holder": i.gil.last_holder}))
        .collect();
    let line = serde_json::json!({
        "t0": t0,
        "t_gil": t_gil,
        "gil_waiters": sample.gil_waiters,
        "gil_mutex_owners": sample.gil_mutex_owners,
        "gils": gils,
        "threads": threads,
    });
    writeln!(out, "{line}")?;
    Ok(())
}
