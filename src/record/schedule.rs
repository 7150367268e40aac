//! Sampling deadlines: absolute (start + k * period, so the rate cannot drift), each moved
//! by a random jitter so sampling cannot lock onto periodic work in the target. A sampler a
//! little behind (descheduled for a moment) catches up at once; one more than
//! [`MAX_CATCH_UP`] periods and [`MAX_CATCH_UP_TIME`] behind skips those deadlines and counts
//! them as missed.

use std::time::{Duration, Instant};

/// Periods a late sampler makes up by sampling at once; beyond this (and
/// [`MAX_CATCH_UP_TIME`]) it skips ahead.
const MAX_CATCH_UP: u64 = 10;
/// A stall this long is made up too, whatever the rate: at 10-20 kHz ten periods are under
/// 1 ms, less than one wait on a busy run queue.
const MAX_CATCH_UP_TIME: Duration = Duration::from_millis(20);
/// Jitter spans ±this share of the period.
const JITTER_SHARE: f64 = 0.25;

pub struct Schedule {
    start: Instant,
    period: Duration,
    index: u64,
    rng: XorShift,
    pub missed: u64,
}

impl Schedule {
    pub fn new(rate_hz: f64, seed: u64) -> Self {
        Schedule {
            start: Instant::now(),
            period: Duration::from_secs_f64(1.0 / rate_hz),
            index: 0,
            rng: XorShift(seed | 1),
            missed: 0,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The next deadline: in the past while catching up, after skipping (and counting as
    /// missed) the deadlines of a stall longer than [`MAX_CATCH_UP`] periods.
    pub fn next_deadline(&mut self, now: Instant) -> Instant {
        self.index += 1;
        let behind = now.saturating_duration_since(self.nominal(self.index));
        if behind > (self.period * MAX_CATCH_UP as u32).max(MAX_CATCH_UP_TIME) {
            let skip = (behind.as_nanos() / self.period.as_nanos()) as u64;
            self.missed += skip;
            self.index += skip;
        }
        let jitter = self.period.mul_f64(JITTER_SHARE * self.rng.unit());
        let nominal = self.nominal(self.index);
        if self.rng.next() & 1 == 0 {
            nominal + jitter
        } else {
            nominal.checked_sub(jitter).unwrap_or(nominal)
        }
    }

    fn nominal(&self, index: u64) -> Instant {
        self.start + self.period.mul_f64(index as f64)
    }
}

/// Sleeps until `deadline` (returns at once if it has passed).
pub fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Asks the kernel to wake sleeps within 1 µs of their deadline instead of the default 50 µs
/// slack, which matters at 2000 Hz.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0);
    }
}

/// Real-time priority the sampling thread asks for: above every ordinary task, below the
/// kernel's own real-time threads.
const SAMPLER_PRIORITY: i32 = 10;

/// Asks the kernel to run the calling thread (the sampler) under SCHED_FIFO, so that each
/// sample is read at its deadline instead of whenever the scheduler finds it a CPU. On a
/// busy machine the latter is not independent of the target: measured on 2 loaded CPUs,
/// an ordinarily scheduled sampler read short GIL holds (tens to hundreds of µs) 0.02-0.05
/// less often than they occupy the time (docs/accuracy.md). The sampler sleeps between
/// samples, and threads and processes it starts do not inherit the policy
/// (SCHED_RESET_ON_FORK). Without permission (CAP_SYS_NICE) nothing changes; returns
/// whether it took effect.
pub fn sample_on_time() -> bool {
    let param = libc::sched_param {
        sched_priority: SAMPLER_PRIORITY,
    };
    // SAFETY: sched_setscheduler reads the sched_param we pass and nothing else.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) == 0
    }
}

/// Makes the calling thread the sampler of `pid`: woken on time ([`tighten_timer_slack`],
/// [`sample_on_time`]) and kept off the target's CPUs where it can be
/// ([`keep_off_target_cpus`], whose answer it returns). Called once the target runs: a
/// program started after it would inherit the timer slack and the CPUs.
pub fn become_sampler(pid: i32) -> Option<Vec<usize>> {
    tighten_timer_slack();
    sample_on_time();
    keep_off_target_cpus(&crate::process::maps::allowed_cpus(pid).unwrap_or_default())
}

/// Confines the calling thread (the sampler) to the CPUs it may use that no thread of the
/// target may, when there are such CPUs (a target kept to some CPUs by `taskset` or a
/// cpuset). There it never takes a CPU from the target. Where it shares the target's CPUs,
/// each wake-up preempts whichever thread runs on its CPU, and the target moves between the
/// timer and the read: on 2 busy CPUs, threads with short holds read up to 0.05 too often
/// holding the GIL; with the sampler on a CPU of its own, every thread's holding was within
/// 0.02 of the truth (docs/accuracy.md, thirteenth round). Returns the CPUs it now runs
/// on, or `None` when the target may run on every CPU the sampler may (or its mask cannot
/// be read): then nothing changes.
fn keep_off_target_cpus(target_cpus: &[usize]) -> Option<Vec<usize>> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    let me = nix::unistd::Pid::from_raw(0);
    let own: Vec<usize> = crate::process::maps::cpus_in(&sched_getaffinity(me).ok()?).collect();
    let spare = spare_cpus(&own, target_cpus);
    if spare.is_empty() {
        return None;
    }
    let mut set = CpuSet::new();
    for &cpu in &spare {
        set.set(cpu).ok()?;
    }
    sched_setaffinity(me, &set).ok()?;
    Some(spare)
}

/// The CPUs of `own` that are not in `target`; none when `target` is unknown (empty).
fn spare_cpus(own: &[usize], target: &[usize]) -> Vec<usize> {
    if target.is_empty() {
        return Vec::new();
    }
    own.iter()
        .copied()
        .filter(|cpu| !target.contains(cpu))
        .collect()
}

/// A small, fast, good-enough generator for jitter (not for anything secret).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_keeps_to_the_cpus_the_target_may_not_use() {
        assert_eq!(spare_cpus(&[0, 1, 2, 3], &[0, 1]), vec![2, 3]);
        assert_eq!(spare_cpus(&[0, 1], &[1]), vec![0]);
        // The target may run wherever the sampler may, or its mask is unknown: no move.
        assert_eq!(spare_cpus(&[0, 1], &[0, 1, 2]), Vec::<usize>::new());
        assert_eq!(spare_cpus(&[0, 1], &[]), Vec::<usize>::new());
    }

    #[test]
    fn deadlines_stay_within_jitter_of_the_nominal_grid() {
        let mut schedule = Schedule::new(1000.0, 42);
        let start = schedule.start;
        for k in 1..=1000u64 {
            let deadline = schedule.next_deadline(start);
            let nominal = start + Duration::from_millis(k);
            let off = if deadline > nominal {
                deadline - nominal
            } else {
                nominal - deadline
            };
            assert!(
                off <= Duration::from_micros(250),
                "deadline {k} is {off:?} off"
            );
        }
        assert_eq!(schedule.missed, 0);
    }

    #[test]
    fn a_briefly_late_sampler_catches_up_without_missing() {
        let mut schedule = Schedule::new(1000.0, 3);
        let late = schedule.start + Duration::from_millis(5);
        let deadline = schedule.next_deadline(late);
        // Deadline 1 is 4 ms past: sample at once, miss nothing.
        assert!(deadline < late);
        assert_eq!(schedule.missed, 0);
    }

    #[test]
    fn at_a_high_rate_a_stall_of_a_few_ms_is_made_up() {
        let mut schedule = Schedule::new(20_000.0, 5);
        let late = schedule.start + Duration::from_millis(5);
        let deadline = schedule.next_deadline(late);
        // 100 periods behind, but only 5 ms: sample at once, miss nothing.
        assert!(deadline < late);
        assert_eq!(schedule.missed, 0);
    }

    #[test]
    fn a_late_sampler_skips_and_counts_missed_deadlines() {
        let mut schedule = Schedule::new(100.0, 7);
        let late = schedule.start + Duration::from_millis(1000);
        let deadline = schedule.next_deadline(late);
        // 10 ms period, a second late: about a hundred deadlines were missed.
        assert!(
            (98..=100).contains(&schedule.missed),
            "missed {}",
            schedule.missed
        );
        assert!(deadline + Duration::from_millis(10) >= late);
    }
}
