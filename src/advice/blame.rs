//! Rules that name who holds the GIL and who waits for it: the convoy effect on native code
//! (threads that release the GIL for native work but queue to get it back behind a Python
//! loop), and the fallback for a contended GIL that no other rule explains, so that a
//! contended GIL never gets "nothing stands out".

use super::facts::*;
use super::*;

/// A thread waiting for the GIL in at least this share of its samples is named as a
/// waiter by [`gil_contended`].
pub const WAITER_SHARE: f64 = 0.1;
/// A native thread must run native code in at least this share of its samples: it does
/// release the GIL for real work.
pub const MIN_NATIVE_SHARE: f64 = 0.01;
/// A busy native thread waiting for the GIL in at least this share of its samples is
/// starved: a native call of 15 ms behind a 5 ms switch interval waits a quarter of the
/// time.
pub const NATIVE_WAIT_SHARE: f64 = 0.2;
/// Below this share on a CPU per starved thread, a speedup is not computed from it: native
/// calls shorter than a scheduler tick are counted as GIL waits, so a small share on a CPU
/// may be several times too small.
pub const MIN_RESOLVED_ON_CPU: f64 = 0.05;
/// A thread idle in I/O or sleep at least this share of its samples is an I/O thread (the
/// I/O convoy is [`convoy`]'s), not a native one.
pub const NATIVE_MAX_IO_IDLE_SHARE: f64 = 0.02;
/// A Python thread holding the GIL in at least this share of its samples is a holder
/// behind starved native threads...
pub const NATIVE_CONVOY_HOLDER_SHARE: f64 = 0.3;
/// ...when the holders together hold it at least this much.
pub const NATIVE_CONVOY_HOLDERS_SHARE: f64 = 0.5;
/// The switch interval [`native_convoy_switch_interval`] suggests: the current one divided
/// by this...
pub const SWITCH_INTERVAL_DIVISOR: u64 = 5;
/// ...but not below this (µs): shorter intervals cost more hand-offs than they save.
pub const MIN_SUGGESTED_INTERVAL_US: u64 = 500;
/// Rules whose recommendation names the holders and the waiters with figures: with a
/// contended GIL, one of them must come first, else [`gil_contended`] is put first.
pub const BLAMING_RULES: [&str; 4] = [
    "cpu_threads_contend",
    "convoy",
    "native_convoy",
    "gil_contended",
];

impl Thread {
    /// Busy and waiting for the GIL a large share of its time, yet, when it has the GIL,
    /// letting go of it soon: it runs native code more than Python, or barely holds the
    /// GIL at all. And not an I/O thread. Each native call ends by queueing for the GIL.
    ///
    /// (A native call shorter than a scheduler tick that ends in a GIL wait is counted as
    /// that wait: see `sample::handoff_verdict`. Threads of short native calls, such as
    /// hashing small buffers, show almost no `native_nogil`; that they barely hold the GIL
    /// while waiting for it most of the time is what tells them.)
    pub(super) fn is_starved_native(&self) -> bool {
        let s = &self.fig.states;
        let runs_native = s.native_nogil >= s.gil_held.max(MIN_NATIVE_SHARE);
        self.busy() >= BUSY_SHARE
            && s.gil_wait >= NATIVE_WAIT_SHARE
            && (runs_native || s.gil_held < MIN_HELD_SHARE)
            && !self.does_io()
    }

    /// Idle in I/O or sleep a noticeable share of its time, or woken from it often: its
    /// time without the GIL may be system calls rather than native work.
    fn does_io(&self) -> bool {
        let io_idle = self.fig.idle_reasons.io + self.fig.idle_reasons.sleep;
        io_idle >= NATIVE_MAX_IO_IDLE_SHARE
            || (io_idle > 0.0 && self.fig.wakeups >= MIN_WAKEUPS)
            || self.waits_after_wakeups()
    }

    /// Share of its samples on a CPU: what its throughput is proportional to.
    fn on_cpu(&self) -> f64 {
        self.fig.states.gil_held + self.fig.states.native_nogil
    }
}

impl Facts<'_> {
    /// The threads behind [`native_convoy`]: starved native threads (most waiting first)
    /// and the Python threads holding the GIL on them (most holding first).
    pub(super) fn native_convoy(&self) -> Option<(Vec<&Thread>, Vec<&Thread>)> {
        if self.gil.contended < CONTENDED_SHARE {
            return None;
        }
        let mut victims: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| t.is_starved_native())
            .collect();
        victims.sort_by(|a, b| b.fig.states.gil_wait.total_cmp(&a.fig.states.gil_wait));
        let mut holders: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| {
                !t.is_starved_native() && t.fig.states.gil_held >= NATIVE_CONVOY_HOLDER_SHARE
            })
            .collect();
        holders.sort_by(|a, b| b.fig.states.gil_held.total_cmp(&a.fig.states.gil_held));
        let held: f64 = holders.iter().map(|t| t.fig.states.gil_held).sum();
        (!victims.is_empty() && held >= NATIVE_CONVOY_HOLDERS_SHARE).then_some((victims, holders))
    }

    /// How much more native work `victims` could do if they never waited for the GIL: each
    /// would be on a CPU whenever it is busy, within the CPUs that the other threads (the
    /// holders included: moved to a process or to native code, they still run) leave free.
    pub(super) fn unstarved(&self, victims: &[&Thread]) -> Unstarved {
        let now: f64 = victims.iter().map(|t| t.on_cpu()).sum();
        let wanted: f64 = victims.iter().map(|t| t.busy()).sum();
        let others = self.others_on_cpu(victims);
        let cpus = f64::from(self.rec.cpus);
        let possible = wanted.min(cpus - others).max(now);
        let resolved = now / victims.len().max(1) as f64 >= MIN_RESOLVED_ON_CPU;
        // No gain worth promising on these CPUs, though the threads want more.
        let capped = possible < now * MIN_SPEEDUP;
        let needed = (wanted + others).ceil() as u32;
        let more_cpus = capped && needed > self.rec.cpus && wanted >= now * MIN_SPEEDUP;
        Unstarved {
            now,
            possible: (!capped).then_some(possible),
            speedup: (resolved && !capped)
                .then(|| rounded_speedup(possible / now))
                .flatten(),
            more_cpus: more_cpus.then(|| {
                let speedup = resolved.then(|| rounded_speedup(wanted / now)).flatten();
                (needed, speedup)
            }),
        }
    }

    /// The same with each victim's GIL wait cut by `factor` (a shorter switch interval):
    /// its wait per native call scales with the interval, its work per call does not.
    pub(super) fn shorter_interval_speedup(&self, victims: &[&Thread], factor: f64) -> Option<f64> {
        let now: f64 = victims.iter().map(|t| t.on_cpu()).sum();
        if now <= 0.0 || self.rec.cpus == 0 {
            return None;
        }
        let wanted: f64 = victims
            .iter()
            .map(|t| {
                let (work, wait) = (t.on_cpu(), t.fig.states.gil_wait / factor);
                t.busy() * work / (work + wait)
            })
            .sum();
        let free = (f64::from(self.rec.cpus) - self.others_on_cpu(victims)).max(now);
        rounded_speedup(wanted.min(free) / now)
    }

    /// Threads' worth of CPU that the threads other than `victims` use.
    fn others_on_cpu(&self, victims: &[&Thread]) -> f64 {
        self.threads
            .iter()
            .filter(|t| !victims.iter().any(|v| v.fig.tid == t.fig.tid))
            .map(Thread::on_cpu)
            .sum()
    }
}

/// What starved native threads would gain without the wait ([`Facts::unstarved`]).
pub(super) struct Unstarved {
    /// CPUs' worth they use now (held + native, summed).
    now: f64,
    /// CPUs' worth they could use: what they want, within the CPUs the rest leaves free;
    /// None if that is no gain worth promising.
    possible: Option<f64>,
    /// possible / now, when worth promising and `now` is measured well enough.
    speedup: Option<f64>,
    /// When the CPUs are full already: how many the process would need, and the speedup
    /// with them (when `now` is measured well enough).
    more_cpus: Option<(u32, Option<f64>)>,
}

impl Unstarved {
    /// The end of the verdict's sentence: what moving the loop would give them.
    fn text(&self, f: &Facts) -> String {
        match (self.speedup, self.more_cpus) {
            (Some(x), _) => format!(", and they could do up to {x:.1}x the native work"),
            (None, Some((needed, speedup))) => format!(
                "; the {} CPUs are busy already ({:.1} threads on a CPU on average), so this \
                 pays with more of them: {} with {needed} CPUs",
                f.rec.cpus,
                f.gil.parallelism,
                speedup.map_or_else(
                    || "they would use all they want".to_string(),
                    |x| format!("up to {x:.1}x the native work")
                )
            ),
            (None, None) => self
                .possible
                .map(|possible| {
                    format!(
                        "; they use {:.2} CPUs now and could use up to {possible:.1}",
                        self.now
                    )
                })
                .unwrap_or_default(),
        }
    }
}

fn rounded_speedup(speedup: f64) -> Option<f64> {
    (speedup >= MIN_SPEEDUP).then(|| (speedup * 10.0).round() / 10.0)
}

/// Native threads queue for the GIL behind one or a few Python threads: each native call
/// needs the GIL to start and to return, and the Python loop keeps it for whole switch
/// intervals. Moving the loop out of the process frees them.
pub(super) fn native_convoy(f: &Facts) -> Option<Recommendation> {
    let (victims, holders) = f.native_convoy()?;
    let gain = f.unstarved(&victims);
    let mut evidence = vec![share(
        "gil.contended",
        f.gil.contended,
        "of the time the GIL was held while another thread waited for it",
    )];
    for t in victims.iter().take(MAX_NAMED_THREADS) {
        let s = &t.fig.states;
        evidence.push(t.share_of("gil_wait", s.gil_wait, "waited for the GIL"));
        evidence.push(t.share_of(
            "native_nogil",
            s.native_nogil,
            "ran native code without the GIL",
        ));
        evidence.push(t.share_of("gil_held", s.gil_held, "held the GIL"));
    }
    for t in holders.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"));
    }
    evidence.push(count(
        "cpus",
        u64::from(f.rec.cpus),
        "CPUs this process may run on",
    ));
    let mut code = f.code_refs(&holders, ThreadState::GilHeld, Role::HoldsGil);
    code.extend(f.code_refs(&victims, ThreadState::GilWait, Role::WaitsForGil));
    let one = victims.len() == 1;
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "{} the GIL for native work but {} for it {:.0}% of {} time, because {} {} it {} \
             of {} time{}: each native call needs the GIL to start and to return. Move that \
             Python loop out of this process (a ProcessPoolExecutor or a separate worker){}.",
            subject(&victims, "releases", "release"),
            if one { "waits" } else { "wait" },
            mean_wait(&victims) * 100.0,
            if one { "its" } else { "their" },
            names(&holders),
            if holders.len() == 1 { "holds" } else { "hold" },
            held_text(&holders),
            if holders.len() == 1 { "its" } else { "their" },
            hot_function_text(&code),
            gain.text(f),
        ),
        evidence,
        code,
        expected_speedup: gain.speedup,
        rule: "native_convoy".into(),
    })
}

/// The other way out of [`native_convoy`]: make the loop native, releasing the GIL.
pub(super) fn native_convoy_native_offload(f: &Facts) -> Option<Recommendation> {
    let (victims, holders) = f.native_convoy()?;
    let code = f.code_refs(&holders, ThreadState::GilHeld, Role::HoldsGil);
    let speedup = f.unstarved(&victims).speedup;
    let evidence = holders
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"))
        .collect();
    Some(Recommendation {
        kind: Kind::NativeOffload,
        verdict: format!(
            "Or move the loop of {}{} into native code that releases the GIL (NumPy, or a C, \
             Cython or Rust extension), so that {} stop queueing behind it{}.",
            names(&holders),
            hot_function_text(&code),
            names(&victims),
            speedup_text(speedup)
        ),
        evidence,
        code,
        expected_speedup: speedup,
        rule: "native_convoy_native_offload".into(),
    })
}

/// When the loop cannot move: a shorter switch interval makes the holder let go sooner, at
/// the cost of more hand-offs.
pub(super) fn native_convoy_switch_interval(f: &Facts) -> Option<Recommendation> {
    let (victims, holders) = f.native_convoy()?;
    let interval = f.gil.interval_us;
    let suggested = (interval / SWITCH_INTERVAL_DIVISOR).max(MIN_SUGGESTED_INTERVAL_US);
    if interval == 0 || suggested >= interval {
        return None;
    }
    let factor = interval as f64 / suggested as f64;
    let speedup = f.shorter_interval_speedup(&victims, factor);
    let gain = speedup
        .map(|x| format!(" (estimated: up to {x:.1}x their native work)"))
        .unwrap_or_default();
    let mut evidence = vec![
        count(
            "gil.interval_us",
            interval,
            "µs switch interval (sys.getswitchinterval()): how long a holder may keep the \
             GIL while others wait",
        ),
        Evidence {
            figure: "gil.switches_per_s".into(),
            value: f.gil.switches_per_s,
            unit: Unit::Count,
            note: "GIL hand-offs per second now".into(),
        },
    ];
    for t in victims.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_wait", t.fig.states.gil_wait, "waited for the GIL"));
    }
    Some(Recommendation {
        kind: Kind::Threads,
        verdict: format!(
            "If the loop must stay in this process as Python: a shorter switch interval, \
             sys.setswitchinterval({}) (now {}), makes {} let go of the GIL {factor:.0}x \
             sooner, so each native call of {} waits less{gain}; the cost is up to \
             {factor:.0}x more GIL hand-offs, each taking the GIL away from the loop.",
            seconds_text(suggested),
            interval_text(interval),
            names(&holders),
            names(&victims),
        ),
        evidence,
        code: Vec::new(),
        expected_speedup: speedup,
        rule: "native_convoy_switch_interval".into(),
    })
}

/// The GIL is contended and no rule above explained it: say who holds it and who waits,
/// with figures, rather than nothing. The holders' code is what the waiters queue behind.
pub(super) fn gil_contended(f: &Facts) -> Option<Recommendation> {
    let mut holders: Vec<&Thread> = f
        .threads
        .iter()
        .filter(|t| t.fig.states.gil_held >= MIN_HELD_SHARE)
        .collect();
    holders.sort_by(|a, b| b.fig.states.gil_held.total_cmp(&a.fig.states.gil_held));
    if holders.is_empty() {
        // Many threads each holding it a little: name the ones holding it most.
        holders = f
            .threads
            .iter()
            .filter(|t| t.fig.states.gil_held > 0.0)
            .collect();
        holders.sort_by(|a, b| b.fig.states.gil_held.total_cmp(&a.fig.states.gil_held));
        holders.truncate(MAX_NAMED_THREADS);
    }
    let mut waiters: Vec<&Thread> = f
        .threads
        .iter()
        .filter(|t| t.fig.states.gil_wait >= WAITER_SHARE)
        .collect();
    waiters.sort_by(|a, b| b.fig.states.gil_wait.total_cmp(&a.fig.states.gil_wait));
    if holders.is_empty() || waiters.is_empty() {
        return None;
    }
    let mut evidence = vec![
        share(
            "gil.contended",
            f.gil.contended,
            "of the time the GIL was held while another thread waited for it",
        ),
        mean_threads(
            "gil.mean_waiters",
            f.gil.mean_waiters,
            "threads waiting for the GIL on average",
        ),
    ];
    for t in holders.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_held", t.fig.states.gil_held, "held the GIL"));
    }
    for t in waiters.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("gil_wait", t.fig.states.gil_wait, "waited for the GIL"));
    }
    let mut code = f.code_refs(&holders, ThreadState::GilHeld, Role::HoldsGil);
    let waiting_code = f.code_refs(&waiters, ThreadState::GilWait, Role::WaitsForGil);
    let waiting_in = hot_function_text(&waiting_code);
    code.extend(waiting_code);
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "The GIL is contended {:.0}% of the time: {} {} it {} of {} time{}, while {} \
             {} for it {:.0}% of {} time{waiting_in}. Run the holders' work in processes \
             or in native code that releases the GIL; see gil_blame.svg for the code they \
             hold it in.",
            f.gil.contended * 100.0,
            names(&holders),
            if holders.len() == 1 { "holds" } else { "hold" },
            held_text(&holders),
            if holders.len() == 1 { "its" } else { "their" },
            hot_function_text(&code),
            names(&waiters),
            if waiters.len() == 1 { "waits" } else { "wait" },
            mean_wait(&waiters) * 100.0,
            if waiters.len() == 1 { "its" } else { "their" },
        ),
        evidence,
        code,
        expected_speedup: None,
        rule: "gil_contended".into(),
    })
}

/// Whether the primary recommendation may stand on a contended GIL: it names the holders
/// and the waiters (see [`BLAMING_RULES`]), or the GIL is not contended.
pub(super) fn primary_blames(f: &Facts, list: &[Recommendation]) -> bool {
    f.gil.contended < CONTENDED_SHARE
        || list
            .first()
            .is_some_and(|r| BLAMING_RULES.contains(&r.rule.as_str()))
}

fn mean_wait(threads: &[&Thread]) -> f64 {
    let sum: f64 = threads.iter().map(|t| t.fig.states.gil_wait).sum();
    sum / threads.len().max(1) as f64
}

/// "95%" for one thread, "60% and 30%" / "50%, 20% and 10%" for several (most first).
fn held_text(threads: &[&Thread]) -> String {
    let shares: Vec<String> = threads
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(|t| format!("{:.0}%", t.fig.states.gil_held * 100.0))
        .collect();
    match shares.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A switch interval as `sys.setswitchinterval` takes it: "0.001".
fn seconds_text(us: u64) -> String {
    let text = format!("{:.6}", us as f64 / 1e6);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// "5 ms", "0.5 ms".
fn interval_text(us: u64) -> String {
    let ms = format!("{:.3}", us as f64 / 1000.0);
    format!("{} ms", ms.trim_end_matches('0').trim_end_matches('.'))
}
