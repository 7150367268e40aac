//! What waking up costs on this machine: gilscope record's schedule (absolute deadlines with
//! jitter, 1 µs timer slack, SCHED_FIFO when allowed) with nothing done between the sleeps. bench/peers.py runs it
//! beside the samplers at the same rates: no sampler that sleeps between samples can cost
//! less per sample than this.
//!
//!     cargo build --release --example wake_floor
//!     target/release/examples/wake_floor RATE_HZ SECONDS
//!
//! Prints `WAKES N SECONDS S` when done. With `INSTANTS=1` it first prints each wake-up's
//! CLOCK_MONOTONIC time as a sample line of `examples/instants` with no threads, so that
//! `scripts/accuracy.py --instants --sampler wake_floor` can ask whether the instants of
//! this schedule, without any reading, are a fair draw of the target's time. `SPIN_US=N`
//! spins N µs after each wake-up: the CPU a sample holds, without its reads. With
//! `AT=deadline` the times given are the deadlines instead of the wake-ups, and on stderr
//! it gives how late each wake-up was (percentiles, in µs).

use gilscope::record::schedule::{Schedule, sample_on_time, sleep_until, tighten_timer_slack};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [rate, seconds] => rate.parse::<f64>().ok().zip(seconds.parse::<f64>().ok()),
        _ => None,
    };
    let Some((rate, seconds)) = parsed.filter(|(r, s)| *r > 0.0 && *s > 0.0) else {
        eprintln!("usage: wake_floor RATE_HZ SECONDS");
        std::process::exit(2);
    };
    tighten_timer_slack();
    sample_on_time();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let mut schedule = Schedule::new(rate, 5);
    let mut wakes = 0u64;
    let at_deadline = std::env::var("AT").is_ok_and(|at| at == "deadline");
    let mut lateness = Vec::new();
    let mut instants = Vec::new();
    if std::env::var_os("INSTANTS").is_some() {
        instants.reserve((rate * seconds) as usize + 1);
    }
    let spin = Duration::from_micros(
        std::env::var("SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    loop {
        let deadline = schedule.next_deadline(Instant::now());
        if deadline >= end {
            break;
        }
        sleep_until(deadline);
        wakes += 1;
        if instants.capacity() > instants.len() {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .expect("CLOCK_MONOTONIC is always readable");
            let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
            let late = Instant::now().saturating_duration_since(deadline);
            lateness.push(late);
            instants.push(if at_deadline {
                now_ns - late.as_nanos() as u64
            } else {
                now_ns
            });
        }
        let spin_until = Instant::now() + spin;
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
    }
    if at_deadline && !lateness.is_empty() {
        lateness.sort_unstable();
        let at = |q: f64| lateness[((lateness.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        eprintln!(
            "wake-ups after their deadline (µs): p10 {:.1}, p50 {:.1}, p90 {:.1}, p99 {:.1}",
            at(0.1),
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    for t0 in instants {
        println!("{{\"t0\": {t0}, \"threads\": []}}");
    }
    println!(
        "WAKES {wakes} SECONDS {:.3}",
        started.elapsed().as_secs_f64()
    );
}
