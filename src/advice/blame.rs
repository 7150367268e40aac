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
    /// Busy, waiting for the GIL a large share of its time, yet running native code more
    /// than Python when on a CPU, and not an I/O thread: each native call ends by queueing
    /// for the GIL.
    pub(super) fn is_starved_native(&self) -> bool {
        let s = &self.fig.states;
        self.busy() >= BUSY_SHARE
            && s.gil_wait >= NATIVE_WAIT_SHARE
            && s.native_nogil >= MIN_NATIVE_SHARE
            && s.native_nogil >= s.gil_held
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
    pub(super) fn unstarved_speedup(&self, victims: &[&Thread]) -> Option<f64> {
        let wanted: f64 = victims.iter().map(|t| t.busy()).sum();
        self.native_speedup(victims, wanted)
    }

    /// The same, with each victim's GIL wait cut by `factor` (a shorter switch interval):
    /// its wait per native call scales with the interval, its work per call does not.
    pub(super) fn shorter_interval_speedup(&self, victims: &[&Thread], factor: f64) -> Option<f64> {
        let wanted: f64 = victims
            .iter()
            .map(|t| {
                let (work, wait) = (t.on_cpu(), t.fig.states.gil_wait / factor);
                t.busy() * work / (work + wait)
            })
            .sum();
        self.native_speedup(victims, wanted)
    }

    /// `victims` on a CPU `wanted` threads' worth instead of what they are now, capped by
    /// the CPUs the other threads leave free: the factor, if worth promising.
    fn native_speedup(&self, victims: &[&Thread], wanted: f64) -> Option<f64> {
        let now: f64 = victims.iter().map(|t| t.on_cpu()).sum();
        if now <= 0.0 || self.rec.cpus == 0 {
            return None;
        }
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

    /// When the CPUs are what caps [`Facts::unstarved_speedup`]: the CPUs the process
    /// would need for `victims` to run unstarved beside the rest, and the speedup then.
    pub(super) fn speedup_with_more_cpus(&self, victims: &[&Thread]) -> Option<(u32, f64)> {
        let now: f64 = victims.iter().map(|t| t.on_cpu()).sum();
        let wanted: f64 = victims.iter().map(|t| t.busy()).sum();
        let needed = (wanted + self.others_on_cpu(victims)).ceil() as u32;
        if now <= 0.0 || needed <= self.rec.cpus {
            return None;
        }
        rounded_speedup(wanted / now).map(|x| (needed, x))
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
    let speedup = f.unstarved_speedup(&victims);
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
    let gain = match (speedup, f.speedup_with_more_cpus(&victims)) {
        (Some(x), _) => format!(", and they could do up to {x:.1}x the native work"),
        (None, Some((cpus, x))) => format!(
            "; the {} CPUs are busy already ({:.1} threads on a CPU on average), so this \
             pays with more of them: up to {x:.1}x the native work with {cpus} CPUs",
            f.rec.cpus, f.gil.parallelism
        ),
        (None, None) => String::new(),
    };
    Some(Recommendation {
        kind: Kind::Processes,
        verdict: format!(
            "{} native code without the GIL but {} for it {:.0}% of {} time, because {} \
             {} it {} of {} time{}: each native call needs the GIL to start and to return. \
             Move that Python loop out of this process (a ProcessPoolExecutor or a separate \
             worker){gain}.",
            subject(&victims, "runs", "run"),
            if victims.len() == 1 { "waits" } else { "wait" },
            mean_wait(&victims) * 100.0,
            if victims.len() == 1 { "its" } else { "their" },
            names(&holders),
            if holders.len() == 1 { "holds" } else { "hold" },
            held_text(&holders),
            if holders.len() == 1 { "its" } else { "their" },
            hot_function_text(&code),
        ),
        evidence,
        code,
        expected_speedup: speedup,
        rule: "native_convoy".into(),
    })
}

/// The other way out of [`native_convoy`]: make the loop native, releasing the GIL.
pub(super) fn native_convoy_native_offload(f: &Facts) -> Option<Recommendation> {
    let (victims, holders) = f.native_convoy()?;
    let code = f.code_refs(&holders, ThreadState::GilHeld, Role::HoldsGil);
    let speedup = f.unstarved_speedup(&victims);
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
