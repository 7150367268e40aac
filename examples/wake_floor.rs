//! What waking up costs on this machine: gilscope record's schedule (absolute deadlines with
//! jitter, 1 µs timer slack, SCHED_FIFO when allowed) with nothing done between the sleeps. bench/peers.py runs it
//! beside the samplers at the same rates: no sampler that sleeps between samples can cost
//! less per sample than this.
//!
//!     cargo build --release --example wake_floor
//!     target/release/examples/wake_floor RATE_HZ SECONDS
//!
//! Prints `WAKES N SECONDS S` when done.

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
    loop {
        let deadline = schedule.next_deadline(Instant::now());
        if deadline >= end {
            break;
        }
        sleep_until(deadline);
        wakes += 1;
    }
    println!(
        "WAKES {wakes} SECONDS {:.3}",
        started.elapsed().as_secs_f64()
    );
}
