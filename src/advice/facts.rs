//! What the rules look at: per-thread facts derived once from a recording.

use super::*;
use crate::model::report::GroupFigures;
use crate::profile::figures::thread_groups;

/// A recording's figures, computed once, with what the rules ask of each thread.
pub(super) struct Facts<'a> {
    pub(super) rec: &'a Recording,
    pub(super) gil: GilFigures,
    pub(super) threads: Vec<Thread>,
    /// Time between samples (ms), to turn sample counts into durations.
    pub(super) period_ms: f64,
}

pub(super) struct Thread {
    pub(super) fig: ThreadFigures,
    /// The name, else "tid N".
    pub(super) label: String,
    pub(super) gil_wait_samples: u64,
    pub(super) wakeup_waits: u64,
    pub(super) wakeup_wait_samples: u64,
    /// Runs an asyncio event loop ([`EVENT_LOOP_SHARE`]).
    pub(super) event_loop: bool,
    /// Handles connections ([`HANDLER_FILES`], [`HANDLER_NAMES`]).
    pub(super) handler: bool,
    /// The kernel tids behind it: one, or every thread of a short-lived group.
    pub(super) tids: Vec<i32>,
    /// Stands for a short-lived group ([`GroupFigures::short_lived`]), named by `fig.name`.
    pub(super) group: bool,
    /// Its thread-samples over the process's samples: 1 for a thread (as rules always
    /// counted one), the mean number of the group's threads alive for a group.
    pub(super) weight: f64,
}

impl<'a> Facts<'a> {
    pub(super) fn new(rec: &'a Recording) -> Facts<'a> {
        let loop_samples = samples_where(&rec.stacks, is_event_loop_frame);
        let handler_samples = samples_where(&rec.stacks, |frame_file, _| {
            HANDLER_FILES.iter().any(|f| frame_file.ends_with(f))
        });
        let threads = thread_figures(rec)
            .into_iter()
            .zip(&rec.threads)
            .map(|(fig, counts)| {
                let name = fig.name.as_deref().unwrap_or("").to_lowercase();
                let in_stacks = |by_tid: &HashMap<i32, u64>| {
                    ratio(by_tid.get(&fig.tid).copied().unwrap_or(0), fig.samples)
                };
                Thread {
                    tids: vec![fig.tid],
                    group: false,
                    weight: 1.0,
                    label: fig
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("tid {}", fig.tid)),
                    gil_wait_samples: counts.states.gil_wait,
                    wakeup_waits: counts.wakeup_waits,
                    wakeup_wait_samples: counts.wakeup_wait_samples,
                    event_loop: in_stacks(&loop_samples) >= EVENT_LOOP_SHARE
                        || fig.event_loop.is_some(),
                    handler: in_stacks(&handler_samples) > 0.0
                        || HANDLER_NAMES.iter().any(|n| name.contains(n)),
                    fig,
                }
            })
            .collect();
        let threads = group_short_lived(rec, threads);
        Facts {
            rec,
            gil: gil_figures(rec),
            threads,
            period_ms: if rec.requested_rate_hz > 0.0 {
                1000.0 / rec.requested_rate_hz
            } else {
                0.0
            },
        }
    }

    /// The threads behind [`cpu_threads_contend`]: two or more compute threads and a
    /// contended GIL.
    pub(super) fn cpu_contention(&self) -> Option<Vec<&Thread>> {
        let compute: Vec<&Thread> = self.threads.iter().filter(|t| t.is_compute()).collect();
        (compute.len() >= 2 && self.gil.contended >= CONTENDED_SHARE).then_some(compute)
    }

    /// The one busy thread, when it is the only one and nobody waits for the GIL.
    pub(super) fn lone_busy_thread(&self) -> Option<&Thread> {
        let mut busy = self.threads.iter().filter(|t| t.busy() >= BUSY_SHARE);
        let first = busy.next()?;
        (busy.next().is_none() && self.gil.contended < NOBODY_WAITS_SHARE).then_some(first)
    }

    /// The threads behind [`convoy`]: its victims, and the threads holding the GIL on them.
    /// Victims come most waiting first.
    pub(super) fn convoy(&self) -> Option<(Vec<&Thread>, Vec<&Thread>)> {
        let mut victims: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| t.is_convoy_victim())
            .collect();
        victims.sort_by(|a, b| b.fig.states.gil_wait.total_cmp(&a.fig.states.gil_wait));
        let holders: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| !t.is_convoy_victim() && t.fig.states.gil_held >= HOLDER_SHARE)
            .collect();
        (!victims.is_empty() && !holders.is_empty()).then_some((victims, holders))
    }

    /// Threads mostly idle in I/O or sleep, other than event loops, when there are enough
    /// of them to judge and the process has no convoy (I/O threads that queue for the GIL
    /// behind CPU work are not fine, however many they are).
    pub(super) fn io_threads(&self) -> Option<Vec<&Thread>> {
        let io: Vec<&Thread> = self
            .threads
            .iter()
            .filter(|t| t.fig.class == ThreadClass::IoBound && !t.event_loop)
            .collect();
        (io.len() >= MIN_IO_THREADS && self.convoy().is_none()).then_some(io)
    }

    /// Threads that wanted a CPU, on average: held + waiting + native, summed over threads.
    pub(super) fn cpu_demand(&self) -> f64 {
        self.threads.iter().map(|t| t.busy() * t.weight).sum()
    }

    /// What running the demand in parallel would give: min(demand, CPUs) over the
    /// parallelism achieved. None if too small to promise or not measurable.
    pub(super) fn speedup(&self) -> Option<f64> {
        if self.gil.parallelism <= 0.0 || self.rec.cpus == 0 {
            return None;
        }
        let possible = self.cpu_demand().min(f64::from(self.rec.cpus));
        let speedup = possible / self.gil.parallelism;
        (speedup >= MIN_SPEEDUP).then(|| (speedup * 10.0).round() / 10.0)
    }

    /// The functions `threads` spent most of their `state` samples in (innermost Python
    /// frame), most first, each with the line sampled most often.
    pub(super) fn code_refs(
        &self,
        threads: &[&Thread],
        state: ThreadState,
        role: Role,
    ) -> Vec<CodeRef> {
        let tids: Vec<i32> = threads
            .iter()
            .flat_map(|t| t.tids.iter().copied())
            .collect();
        let mut total = 0;
        let mut functions: HashMap<(String, String), HashMap<u32, u64>> = HashMap::new();
        for stack in self.rec.stacks.iter() {
            if stack.state != state || !tids.contains(&stack.tid) {
                continue;
            }
            total += stack.count;
            if let Some(frame) = stack.frames.last() {
                let function = frame.qualname.as_ref().unwrap_or(&frame.function).clone();
                let lines = functions.entry((function, frame.file.clone())).or_default();
                *lines.entry(frame.line).or_default() += stack.count;
            }
        }
        let mut refs: Vec<CodeRef> = functions
            .into_iter()
            .map(|((function, file), lines)| CodeRef {
                fraction: ratio(lines.values().sum(), total),
                line: most_sampled_line(&lines),
                function,
                file,
                role,
            })
            .filter(|r| r.fraction >= MIN_CODE_SHARE)
            .collect();
        refs.sort_by(|a, b| {
            b.fraction
                .total_cmp(&a.fraction)
                .then_with(|| (&a.function, &a.file).cmp(&(&b.function, &b.file)))
        });
        refs.truncate(MAX_CODE_REFS);
        refs
    }
}

impl Thread {
    /// Share of its samples in which it wanted a CPU.
    pub(super) fn busy(&self) -> f64 {
        let s = &self.fig.states;
        s.gil_held + s.gil_wait + s.native_nogil
    }

    /// Busy running Python of its own, its waits not mostly after wake-ups, and not a
    /// native thread queueing for the GIL between native calls.
    pub(super) fn is_compute(&self) -> bool {
        self.busy() >= BUSY_SHARE
            && matches!(
                self.fig.class,
                ThreadClass::CpuBound | ThreadClass::GilBound
            )
            && self.fig.states.gil_held >= MIN_HELD_SHARE
            && !self.waits_after_wakeups()
            && !self.is_starved_native()
    }

    /// Wakes up often, and most of its GIL waits follow a wake-up.
    pub(super) fn waits_after_wakeups(&self) -> bool {
        self.fig.wakeups >= MIN_WAKEUPS
            && ratio(self.wakeup_wait_samples, self.gil_wait_samples) >= WAIT_AFTER_WAKEUP_SHARE
    }

    pub(super) fn is_convoy_victim(&self) -> bool {
        self.waits_after_wakeups() && self.fig.wakeups_waiting_for_gil >= CONVOY_WAKEUP_WAIT_SHARE
    }

    /// "thread[worker-0].gil_wait", as `--fail-on` names it.
    pub(super) fn figure(&self, what: &str) -> String {
        if self.group {
            return format!("group[{}].{what}", self.fig.group);
        }
        match &self.fig.name {
            Some(name) => format!("thread[{name}].{what}"),
            None => format!("thread[{}].{what}", self.fig.tid),
        }
    }

    pub(super) fn share_of(&self, what: &str, value: f64, doing: &str) -> Evidence {
        Evidence {
            figure: self.figure(what),
            value,
            unit: Unit::Share,
            note: format!("of its time {} {doing}", self.label),
        }
    }
}

/// The threads of each short-lived group (a thread per request, say) as one [`Thread`]:
/// rules then judge the job those threads do together, not each of thousands of threads
/// seen once or twice, and never list a name twice.
fn group_short_lived(rec: &Recording, threads: Vec<Thread>) -> Vec<Thread> {
    let figures: Vec<ThreadFigures> = threads.iter().map(|t| t.fig.clone()).collect();
    let groups: HashMap<String, GroupFigures> = thread_groups(rec, &figures)
        .into_iter()
        .filter(|g| g.short_lived)
        .map(|g| (g.name.clone(), g))
        .collect();
    let mut out: Vec<Thread> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for t in threads {
        let Some(g) = groups.get(&t.fig.group) else {
            out.push(t);
            continue;
        };
        match at.get(&g.name) {
            Some(&i) => {
                let merged = &mut out[i];
                merged.tids.push(t.fig.tid);
                merged.gil_wait_samples += t.gil_wait_samples;
                merged.wakeup_waits += t.wakeup_waits;
                merged.wakeup_wait_samples += t.wakeup_wait_samples;
                merged.fig.wakeups += t.fig.wakeups;
                merged.handler |= t.handler;
                merged.event_loop |= t.event_loop;
            }
            None => {
                at.insert(g.name.clone(), out.len());
                let fig = ThreadFigures {
                    tid: t.fig.tid,
                    name: Some(g.name.clone()),
                    group: g.name.clone(),
                    samples: g.samples,
                    class: g.class,
                    states: g.states.clone(),
                    idle_reasons: g.idle_reasons.clone(),
                    top_frames: g.top_frames.clone(),
                    wakeups: t.fig.wakeups,
                    wakeups_waiting_for_gil: 0.0,
                    mean_wait_per_wakeup_ms: 0.0,
                    // A loop's stalls are its own thread's: they are judged on threads
                    // (thread[...].event_loop), and a group has no event_loop figures.
                    event_loop: None,
                };
                out.push(Thread {
                    label: format!("{} ({} threads)", g.name, g.threads),
                    tids: vec![t.fig.tid],
                    group: true,
                    weight: ratio(g.samples, rec.samples),
                    fig,
                    ..t
                });
            }
        }
    }
    let period_ms = if rec.requested_rate_hz > 0.0 {
        1000.0 / rec.requested_rate_hz
    } else {
        0.0
    };
    for t in out.iter_mut().filter(|t| t.group) {
        t.fig.wakeups_waiting_for_gil = ratio(t.wakeup_waits, t.fig.wakeups);
        t.fig.mean_wait_per_wakeup_ms = ratio(t.wakeup_wait_samples, t.fig.wakeups) * period_ms;
    }
    out
}

/// Per thread, the samples whose stack has a frame that `matches(file, function)`.
pub(super) fn samples_where(
    stacks: &[StackCount],
    matches: impl Fn(&str, &str) -> bool,
) -> HashMap<i32, u64> {
    let mut by_tid = HashMap::new();
    for stack in stacks {
        if stack.frames.iter().any(|f| matches(&f.file, &f.function)) {
            *by_tid.entry(stack.tid).or_default() += stack.count;
        }
    }
    by_tid
}

/// A frame of asyncio's loop (`run_forever`, `_run_once`), which sits right above the
/// selector's `select` while the loop waits. (socketserver polls through selectors too, so
/// a `select` frame alone does not make an event loop.)
pub(super) fn is_event_loop_frame(file: &str, function: &str) -> bool {
    EVENT_LOOP_FRAMES
        .iter()
        .any(|(suffix, name)| file.ends_with(suffix) && function == *name)
}

pub(super) fn most_sampled_line(lines: &HashMap<u32, u64>) -> u32 {
    lines
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map_or(0, |(line, _)| *line)
}

pub(super) fn mean_idle(threads: &[&Thread]) -> f64 {
    let sum: f64 = threads.iter().map(|t| t.fig.states.idle).sum();
    sum / threads.len().max(1) as f64
}

pub(super) fn io_evidence(f: &Facts, io: &[&Thread]) -> Vec<Evidence> {
    let mut evidence = vec![
        count(
            "threads.io_bound",
            io.len() as u64,
            "threads mostly idle in I/O or sleep",
        ),
        share(
            "gil.contended",
            f.gil.contended,
            "of the time a thread waited for the GIL",
        ),
    ];
    for t in io.iter().take(MAX_NAMED_THREADS) {
        evidence.push(t.share_of("idle", t.fig.states.idle, "was idle"));
    }
    evidence
}

// ---------------------------------------------------------------------------------------
// Words

/// "thread conn-0" / "2 threads (worker-0, worker-1)" / "6 threads (a, b, c, d, and 2 more)".
/// A group with more threads in the list than are named is named once, as a group:
/// "108 threads (Thread-* (process_request_thread): 106 threads, MainThread, ...)"; no label
/// is listed twice.
pub(super) fn names(threads: &[&Thread]) -> String {
    let mut per_group: HashMap<&str, usize> = HashMap::new();
    for t in threads {
        *per_group.entry(t.fig.group.as_str()).or_default() += 1;
    }
    let mut labels: Vec<String> = Vec::new();
    for t in threads {
        let in_group = per_group[t.fig.group.as_str()];
        let label = if in_group > MAX_NAMED_THREADS && !t.group {
            format!("{}: {in_group} threads", t.fig.group)
        } else {
            t.label.clone()
        };
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let shown: Vec<&str> = labels
        .iter()
        .take(MAX_NAMED_THREADS)
        .map(String::as_str)
        .collect();
    let more = labels.len().saturating_sub(MAX_NAMED_THREADS);
    match (threads.len(), more) {
        (1, _) => format!("thread {}", shown[0]),
        (n, 0) => format!("{n} threads ({})", shown.join(", ")),
        (n, more) => format!("{n} threads ({}, and {more} more)", shown.join(", ")),
    }
}

/// The start of a sentence about `threads`: "Thread conn-0 waits" / "2 threads (...) wait".
pub(super) fn subject(threads: &[&Thread], singular: &str, plural: &str) -> String {
    let names = names(threads);
    let verb = if threads.len() == 1 { singular } else { plural };
    let mut chars = names.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
    format!("{}{} {verb}", first.unwrap_or_default(), chars.as_str())
}

pub(super) fn hot_function_text(code: &[CodeRef]) -> String {
    code.first()
        .map(|c| format!(" ({})", c.function))
        .unwrap_or_default()
}

pub(super) fn speedup_text(speedup: Option<f64>) -> String {
    speedup
        .map(|x| format!(" for up to {x:.1}x the throughput"))
        .unwrap_or_default()
}

pub(super) fn share(figure: &str, value: f64, note: &str) -> Evidence {
    Evidence {
        figure: figure.into(),
        value,
        unit: Unit::Share,
        note: note.into(),
    }
}

pub(super) fn mean_threads(figure: &str, value: f64, note: &str) -> Evidence {
    Evidence {
        figure: figure.into(),
        value,
        unit: Unit::Threads,
        note: note.into(),
    }
}

pub(super) fn count(figure: &str, value: u64, note: &str) -> Evidence {
    Evidence {
        figure: figure.into(),
        value: value as f64,
        unit: Unit::Count,
        note: note.into(),
    }
}
