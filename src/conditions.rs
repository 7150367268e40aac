//! `--fail-on` conditions: small expressions over report.json figures that make a CI job
//! fail, e.g. `gil.contended>0.3` or `thread[worker-*].gil_wait>0.5`.
//!
//! The grammar (docs/ci.md says the same):
//! ```text
//! EXPR    := PATH OP NUMBER
//! PATH    := [ "process[" GLOB "]." ] FIGURE
//! FIGURE  := "gil." (held | contended | mean_waiters | switches_per_s | parallelism)
//!          | samples | missed_samples | torn_samples | stopped_samples
//!          | "thread[" GLOB "]." THREAD
//!          | "group[" GLOB "]." GROUP
//! THREAD  := ["states."] (gil_held | gil_wait | native_nogil | idle)
//!          | ["idle_reasons."] (sleep | io | lock | other)
//!          | wakeups_waiting_for_gil | mean_wait_per_wakeup_ms
//!          | "event_loop." (busy | stalls | stalls_per_s | longest_stall_ms | p95_stall_ms
//!                           | blocked)
//! GROUP   := ["states."] (gil_held | gil_wait | native_nogil | idle)
//!          | ["idle_reasons."] (sleep | io | lock | other)
//!          | threads | samples | mean_life_ms
//! OP      := ">" | ">=" | "<" | "<=" | "==" | "!="
//! NUMBER  := a decimal number; fractions also take a percentage ("30%" is 0.3)
//! ```
//! A GLOB matches a thread's name, or `tid:1234`, with `*` (any run) and `?` (one character);
//! for processes it matches the pid; for groups (report.json `thread_groups`) the group's
//! name, e.g. `group[Thread-* (process_request_thread)]` (a `*` in the name matches itself). A condition over a GLOB holds if it holds for ANY
//! thread (or process) the GLOB matches; if none matches it does not hold, with a warning.

use crate::model::report::Report;
use crate::model::report::{GroupFigures, ThreadFigures};
use std::fmt;

/// One parsed `--fail-on` expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The expression as the user wrote it.
    pub text: String,
    process: Option<Glob>,
    figure: Figure,
    op: Op,
    value: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Figure {
    Gil(GilFigure),
    Count(CountFigure),
    Thread { glob: Glob, field: ThreadField },
    Group { glob: Glob, field: GroupField },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum GroupField {
    /// A state or idle-reason share, as for a thread.
    Share(ThreadField),
    Threads,
    Samples,
    MeanLifeMs,
}

const GROUP_OTHERS: &[(&str, GroupField)] = &[
    ("threads", GroupField::Threads),
    ("samples", GroupField::Samples),
    ("mean_life_ms", GroupField::MeanLifeMs),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum GilFigure {
    Held,
    Contended,
    MeanWaiters,
    SwitchesPerS,
    Parallelism,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CountFigure {
    Samples,
    Missed,
    Torn,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ThreadField {
    GilHeld,
    GilWait,
    NativeNogil,
    Idle,
    Sleep,
    Io,
    Lock,
    Other,
    WakeupsWaiting,
    WaitPerWakeupMs,
    LoopBusy,
    LoopStalls,
    LoopStallsPerS,
    LoopLongestStallMs,
    LoopP95StallMs,
    LoopBlocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

const GIL_FIGURES: &[(&str, GilFigure)] = &[
    ("held", GilFigure::Held),
    ("contended", GilFigure::Contended),
    ("mean_waiters", GilFigure::MeanWaiters),
    ("switches_per_s", GilFigure::SwitchesPerS),
    ("parallelism", GilFigure::Parallelism),
];
const COUNTS: &[(&str, CountFigure)] = &[
    ("samples", CountFigure::Samples),
    ("missed_samples", CountFigure::Missed),
    ("torn_samples", CountFigure::Torn),
    ("stopped_samples", CountFigure::Stopped),
];
const STATES: &[(&str, ThreadField)] = &[
    ("gil_held", ThreadField::GilHeld),
    ("gil_wait", ThreadField::GilWait),
    ("native_nogil", ThreadField::NativeNogil),
    ("idle", ThreadField::Idle),
];
const IDLE_REASONS: &[(&str, ThreadField)] = &[
    ("sleep", ThreadField::Sleep),
    ("io", ThreadField::Io),
    ("lock", ThreadField::Lock),
    ("other", ThreadField::Other),
];
const THREAD_OTHERS: &[(&str, ThreadField)] = &[
    ("wakeups_waiting_for_gil", ThreadField::WakeupsWaiting),
    ("mean_wait_per_wakeup_ms", ThreadField::WaitPerWakeupMs),
];
/// `thread[GLOB].event_loop.FIELD`: judged only on threads that run an event loop.
const EVENT_LOOP: &[(&str, ThreadField)] = &[
    ("busy", ThreadField::LoopBusy),
    ("stalls", ThreadField::LoopStalls),
    ("stalls_per_s", ThreadField::LoopStallsPerS),
    ("longest_stall_ms", ThreadField::LoopLongestStallMs),
    ("p95_stall_ms", ThreadField::LoopP95StallMs),
    ("blocked", ThreadField::LoopBlocked),
];
const OPS: &[(&str, Op)] = &[
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("==", Op::Eq),
    ("!=", Op::Ne),
    (">", Op::Gt),
    ("<", Op::Lt),
];

/// A malformed expression: what is wrong and where (a byte range of the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConditionError {
    pub text: String,
    pub message: String,
    pub at: usize,
    pub len: usize,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.text[..self.at].chars().count() + 1;
        // clap names the option and quotes the expression before this.
        write!(f, "{} (at character {column})", self.message)
    }
}

impl Condition {
    /// Parses one expression; the error (a [`ConditionError`]) points at the part that is
    /// wrong.
    pub fn parse(text: &str) -> anyhow::Result<Condition> {
        Ok(Condition::try_parse(text)?)
    }

    pub fn try_parse(text: &str) -> Result<Condition, ConditionError> {
        Parser { text, pos: 0 }.condition()
    }

    /// What a condition over `report` comes to: each value it was judged on and whether the
    /// condition held for it.
    pub fn evaluate(&self, report: &Report) -> Evaluation {
        let mut eval = Evaluation::default();
        let judged: Vec<(&Report, String)> = match &self.process {
            None => vec![(report, String::new())],
            Some(glob) => std::iter::once(report)
                .chain(&report.processes)
                .filter(|r| glob.matches(&r.pid.to_string()))
                .map(|r| (r, format!("process[{}].", r.pid)))
                .collect(),
        };
        if let Some(glob) = &self.process
            && judged.is_empty()
        {
            eval.warning = Some(format!("no process matches '{}'", glob.0));
        }
        for (r, prefix) in &judged {
            self.evaluate_process(r, prefix, &mut eval);
        }
        if let Figure::Thread { glob, field } = &self.figure
            && eval.values.is_empty()
            && !judged.is_empty()
        {
            let names: Vec<String> = judged
                .iter()
                .flat_map(|(r, _)| r.threads.iter().map(thread_label))
                .collect();
            let names = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            let unmeasured = judged
                .iter()
                .flat_map(|(r, _)| &r.threads)
                .any(|t| t.event_loop.as_ref().is_some_and(|l| !l.stalls_measured));
            let what = match field {
                f if f.is_event_loop() && unmeasured => {
                    "runs an event loop whose stalls are measured (uvloop's are not)"
                }
                f if f.is_event_loop() => "runs an event loop",
                _ => "matches",
            };
            eval.warning = Some(format!("no thread {what} '{}' (threads: {names})", glob.0));
        }
        if let Figure::Group { glob, .. } = &self.figure
            && eval.values.is_empty()
            && !judged.is_empty()
        {
            let names: Vec<&str> = judged
                .iter()
                .flat_map(|(r, _)| r.thread_groups.iter().map(|g| g.name.as_str()))
                .collect();
            eval.warning = Some(format!(
                "no thread group matches '{}' (groups: {})",
                glob.0,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        eval
    }

    fn evaluate_process(&self, r: &Report, prefix: &str, eval: &mut Evaluation) {
        let mut push = |label: String, value: f64| {
            let holds = self.op.holds(value, self.value);
            eval.values.push(Value {
                label,
                value,
                holds,
            });
        };
        match &self.figure {
            Figure::Gil(g) => push(format!("{prefix}gil.{}", g.name()), g.get(r)),
            Figure::Count(c) => push(format!("{prefix}{}", c.name()), c.get(r) as f64),
            Figure::Thread { glob, field } => {
                for t in r.threads.iter().filter(|t| glob.matches_thread(t)) {
                    let label = format!("{prefix}thread[{}].{}", thread_label(t), field.name());
                    if let Some(value) = field.get(t) {
                        push(label, value);
                    }
                }
            }
            Figure::Group { glob, field } => {
                for g in r.thread_groups.iter().filter(|g| glob.matches(&g.name)) {
                    let label = format!("{prefix}group[{}].{}", g.name, field.name());
                    push(label, field.get(g));
                }
            }
        }
    }
}

/// What a condition came to over one report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// One per value judged (one per matching thread for thread figures).
    pub values: Vec<Value>,
    /// Set when a pattern matched nothing.
    pub warning: Option<String>,
}

impl Evaluation {
    /// The condition holds if it holds for any value.
    pub fn holds(&self) -> bool {
        self.values.iter().any(|v| v.holds)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// e.g. `gil.contended` or `thread[worker-1].gil_wait`.
    pub label: String,
    pub value: f64,
    pub holds: bool,
}

/// Prints each condition that holds, with its value, on stderr; true if any held.
pub fn report_failures(conditions: &[Condition], report: &Report) -> bool {
    let mut failed = false;
    for condition in conditions {
        let eval = condition.evaluate(report);
        if let Some(warning) = &eval.warning {
            crate::cli::console::err(&format!(
                "gilscope: warning: --fail-on '{}': {warning}\n",
                condition.text
            ));
        }
        if eval.holds() {
            failed = true;
            let values: Vec<String> = eval
                .values
                .iter()
                .filter(|v| v.holds)
                .map(|v| format!("{} = {}", v.label, number(v.value)))
                .collect();
            crate::cli::console::err(&format!(
                "gilscope: --fail-on '{}' holds: {}\n",
                condition.text,
                values.join(", ")
            ));
        }
    }
    failed
}

/// A value as it is shown: up to 3 decimals, no trailing zeros.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

fn thread_label(t: &ThreadFigures) -> String {
    t.name.clone().unwrap_or_else(|| format!("tid:{}", t.tid))
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        let equal = (left - right).abs() <= 1e-9 * left.abs().max(right.abs()).max(1.0);
        match self {
            Op::Gt => left > right && !equal,
            Op::Ge => left > right || equal,
            Op::Lt => left < right && !equal,
            Op::Le => left < right || equal,
            Op::Eq => equal,
            Op::Ne => !equal,
        }
    }
}

impl GilFigure {
    fn name(self) -> &'static str {
        name_of(GIL_FIGURES, self)
    }
    fn get(self, r: &Report) -> f64 {
        let g = &r.gil;
        match self {
            GilFigure::Held => g.held,
            GilFigure::Contended => g.contended,
            GilFigure::MeanWaiters => g.mean_waiters,
            GilFigure::SwitchesPerS => g.switches_per_s,
            GilFigure::Parallelism => g.parallelism,
        }
    }
}

impl CountFigure {
    fn name(self) -> &'static str {
        name_of(COUNTS, self)
    }
    fn get(self, r: &Report) -> u64 {
        match self {
            CountFigure::Samples => r.samples,
            CountFigure::Missed => r.missed_samples,
            CountFigure::Torn => r.torn_samples,
            CountFigure::Stopped => r.stopped_samples,
        }
    }
}

impl ThreadField {
    fn name(self) -> &'static str {
        if let Some((name, _)) = EVENT_LOOP.iter().find(|(_, f)| *f == self) {
            return match *name {
                "busy" => "event_loop.busy",
                "stalls" => "event_loop.stalls",
                "stalls_per_s" => "event_loop.stalls_per_s",
                "longest_stall_ms" => "event_loop.longest_stall_ms",
                "p95_stall_ms" => "event_loop.p95_stall_ms",
                _ => "event_loop.blocked",
            };
        }
        [STATES, IDLE_REASONS, THREAD_OTHERS]
            .iter()
            .find_map(|table| table.iter().find(|(_, f)| *f == self).map(|(n, _)| *n))
            .unwrap_or("?")
    }

    fn is_event_loop(self) -> bool {
        EVENT_LOOP.iter().any(|(_, f)| *f == self)
    }

    /// The thread's value; `None` for an event-loop figure of a thread with no loop, and
    /// for a stall figure of a loop whose stalls are not measured (uvloop).
    fn get(self, t: &ThreadFigures) -> Option<f64> {
        if self.is_event_loop() {
            let l = t.event_loop.as_ref()?;
            if !l.stalls_measured && self != ThreadField::LoopBusy {
                return None;
            }
            return Some(match self {
                ThreadField::LoopBusy => l.busy,
                ThreadField::LoopStalls => l.stalls as f64,
                ThreadField::LoopStallsPerS => l.stalls_per_s,
                ThreadField::LoopLongestStallMs => l.longest_stall_ms,
                ThreadField::LoopP95StallMs => l.p95_stall_ms,
                _ => l.blocked,
            });
        }
        let (s, i) = (&t.states, &t.idle_reasons);
        Some(match self {
            ThreadField::GilHeld => s.gil_held,
            ThreadField::GilWait => s.gil_wait,
            ThreadField::NativeNogil => s.native_nogil,
            ThreadField::Idle => s.idle,
            ThreadField::Sleep => i.sleep,
            ThreadField::Io => i.io,
            ThreadField::Lock => i.lock,
            ThreadField::Other => i.other,
            ThreadField::WakeupsWaiting => t.wakeups_waiting_for_gil,
            ThreadField::WaitPerWakeupMs => t.mean_wait_per_wakeup_ms,
            _ => return None,
        })
    }
}

impl GroupField {
    fn name(self) -> &'static str {
        match self {
            GroupField::Share(field) => field.name(),
            other => name_of(GROUP_OTHERS, other),
        }
    }
    fn get(self, g: &GroupFigures) -> f64 {
        let (s, i) = (&g.states, &g.idle_reasons);
        match self {
            GroupField::Share(field) => match field {
                ThreadField::GilHeld => s.gil_held,
                ThreadField::GilWait => s.gil_wait,
                ThreadField::NativeNogil => s.native_nogil,
                ThreadField::Idle => s.idle,
                ThreadField::Sleep => i.sleep,
                ThreadField::Io => i.io,
                ThreadField::Lock => i.lock,
                ThreadField::Other => i.other,
                // Not offered for groups by the parser.
                ThreadField::WakeupsWaiting
                | ThreadField::WaitPerWakeupMs
                | ThreadField::LoopBusy
                | ThreadField::LoopStalls
                | ThreadField::LoopStallsPerS
                | ThreadField::LoopLongestStallMs
                | ThreadField::LoopP95StallMs
                | ThreadField::LoopBlocked => f64::NAN,
            },
            GroupField::Threads => g.threads as f64,
            GroupField::Samples => g.samples as f64,
            GroupField::MeanLifeMs => g.mean_life_ms,
        }
    }
}

impl Figure {
    /// Whether the figure is a share of samples, so that `30%` may be written for 0.3.
    fn is_fraction(&self) -> bool {
        match self {
            Figure::Gil(g) => matches!(g, GilFigure::Held | GilFigure::Contended),
            Figure::Count(_) => false,
            Figure::Thread { field, .. } => matches!(
                field,
                ThreadField::GilHeld
                    | ThreadField::GilWait
                    | ThreadField::NativeNogil
                    | ThreadField::Idle
                    | ThreadField::Sleep
                    | ThreadField::Io
                    | ThreadField::Lock
                    | ThreadField::Other
                    | ThreadField::WakeupsWaiting
                    | ThreadField::LoopBusy
                    | ThreadField::LoopBlocked
            ),
            Figure::Group { field, .. } => matches!(field, GroupField::Share(_)),
        }
    }
}

fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

fn names<T>(table: &[(&str, T)]) -> String {
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// A name pattern with `*` and `?`.
#[derive(Debug, Clone, PartialEq)]
struct Glob(String);

impl Glob {
    fn matches_thread(&self, t: &ThreadFigures) -> bool {
        t.name.as_deref().is_some_and(|name| self.matches(name))
            || self.matches(&format!("tid:{}", t.tid))
    }

    fn matches(&self, text: &str) -> bool {
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = text.chars().collect();
        // Classic wildcard matching with one backtrack point for the last `*`.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((sp, st)) = star {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn condition(mut self) -> Result<Condition, ConditionError> {
        self.skip_spaces();
        let mut process = None;
        if self.rest().starts_with("process[") {
            self.pos += "process[".len();
            process = Some(self.glob("process")?);
            self.expect(".", "'.' and a figure after the process pattern")?;
        }
        let figure = self.figure()?;
        self.skip_spaces();
        let op = self.op()?;
        self.skip_spaces();
        let value = self.number(&figure)?;
        self.skip_spaces();
        if !self.rest().is_empty() {
            let message = "unexpected text after the number \
                 (one condition per --fail-on; repeat the flag for more)";
            return Err(self.error_here(self.rest().len(), message));
        }
        Ok(Condition {
            text: self.text.to_string(),
            process,
            figure,
            op,
            value,
        })
    }

    fn figure(&mut self) -> Result<Figure, ConditionError> {
        let start = self.pos;
        let name = self.ident();
        match name {
            "gil" => {
                self.expect(".", "'.' after 'gil' (e.g. gil.contended)")?;
                let (_, g) = self.field_from(GIL_FIGURES, "GIL figure")?;
                Ok(Figure::Gil(g))
            }
            "thread" => {
                let hint = "'[' and a thread name pattern, e.g. thread[worker-*].gil_wait";
                self.expect("[", hint)?;
                let glob = self.glob("thread")?;
                self.expect(".", "'.' and a field after the thread pattern")?;
                let field = self.thread_field()?;
                Ok(Figure::Thread { glob, field })
            }
            "group" => {
                let hint = "'[' and a group name pattern, e.g. group[req-*].gil_wait";
                self.expect("[", hint)?;
                let glob = self.glob("group")?;
                self.expect(".", "'.' and a field after the group pattern")?;
                let field = self.group_field()?;
                Ok(Figure::Group { glob, field })
            }
            "process" => Err(self.error_at(
                start,
                name.len(),
                "process[PID] must come first and only once",
            )),
            _ => match COUNTS.iter().find(|(n, _)| *n == name) {
                Some((_, c)) => Ok(Figure::Count(*c)),
                None if name.is_empty() => Err(self.error_at(
                    start,
                    1,
                    "expected a figure, e.g. gil.contended or thread[worker-*].gil_wait",
                )),
                None => Err(self.error_at(
                    start,
                    name.len(),
                    &format!(
                        "unknown figure '{name}' (expected gil.FIGURE, {}, \
                         thread[GLOB].FIELD, group[GLOB].FIELD or process[PID].FIGURE)",
                        names(COUNTS)
                    ),
                )),
            },
        }
    }

    fn group_field(&mut self) -> Result<GroupField, ConditionError> {
        let start = self.pos;
        if let Some((name, field)) = GROUP_OTHERS.iter().find(|(n, _)| {
            self.rest().starts_with(n)
                && !self.rest()[n.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        }) {
            self.pos += name.len();
            return Ok(*field);
        }
        let field = self.thread_field()?;
        if field.is_event_loop()
            || matches!(
                field,
                ThreadField::WakeupsWaiting | ThreadField::WaitPerWakeupMs
            )
        {
            return Err(self.error_at(
                start,
                self.pos - start,
                &format!(
                    "'{}' is a thread figure; a group has states, idle_reasons, {}",
                    field.name(),
                    names(GROUP_OTHERS)
                ),
            ));
        }
        Ok(GroupField::Share(field))
    }

    fn thread_field(&mut self) -> Result<ThreadField, ConditionError> {
        let start = self.pos;
        let name = self.ident();
        let table = match name {
            "states" => Some(STATES),
            "idle_reasons" => Some(IDLE_REASONS),
            "event_loop" => Some(EVENT_LOOP),
            _ => None,
        };
        let field = if let Some(table) = table {
            self.expect(".", &format!("'.' after '{name}'"))?;
            self.field_from(table, &format!("thread {name} field"))?.1
        } else {
            let all: Vec<(&str, ThreadField)> = [STATES, IDLE_REASONS, THREAD_OTHERS].concat();
            match all.iter().find(|(n, _)| *n == name) {
                Some((_, f)) => *f,
                None => {
                    return Err(self.error_at(
                        start,
                        name.len(),
                        &format!("unknown thread field '{name}' (expected {})", names(&all)),
                    ));
                }
            }
        };
        Ok(field)
    }

    fn field_from<T: Copy>(
        &mut self,
        table: &[(&'static str, T)],
        what: &str,
    ) -> Result<(&'static str, T), ConditionError> {
        let start = self.pos;
        let name = self.ident();
        table
            .iter()
            .find(|(n, _)| *n == name)
            .copied()
            .ok_or_else(|| {
                let shown = if name.is_empty() {
                    "nothing".to_string()
                } else {
                    format!("'{name}'")
                };
                self.error_at(
                    start,
                    name.len(),
                    &format!("unknown {what} {shown} (expected {})", names(table)),
                )
            })
    }

    /// The pattern up to `]`, which is consumed.
    fn glob(&mut self, what: &str) -> Result<Glob, ConditionError> {
        let start = self.pos;
        let Some(end) = self.rest().find(']') else {
            return Err(self.error_at(start - 1, self.text.len() - start + 1, "unclosed '['"));
        };
        let pattern = &self.text[start..start + end];
        if pattern.trim().is_empty() {
            return Err(self.error_at(start - 1, end + 2, &format!("empty {what} pattern")));
        }
        if let Some(bad) = pattern.find('[') {
            return Err(self.error_at(
                start + bad,
                1,
                "'[' is not allowed in a pattern (only * and ? are wildcards)",
            ));
        }
        self.pos = start + end + 1;
        Ok(Glob(pattern.to_string()))
    }

    fn op(&mut self) -> Result<Op, ConditionError> {
        if let Some((text, op)) = OPS.iter().find(|(text, _)| self.rest().starts_with(text)) {
            self.pos += text.len();
            return Ok(*op);
        }
        if self.rest().starts_with('=') {
            return Err(self.error_here(1, "'=' is not an operator; did you mean '=='?"));
        }
        let len = self.rest().chars().next().map_or(1, char::len_utf8);
        Err(self.error_here(len, "expected a comparison: >, >=, <, <=, == or !="))
    }

    fn number(&mut self, figure: &Figure) -> Result<f64, ConditionError> {
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-')))
            .unwrap_or(self.rest().len());
        let token = &self.text[start..start + len];
        if token.is_empty() {
            let len = self.rest().chars().next().map_or(1, char::len_utf8);
            return Err(self.error_here(len, "expected a number"));
        }
        let value: f64 = match token.parse() {
            Ok(v) if f64::is_finite(v) => v,
            _ => return Err(self.error_at(start, len, &format!("'{token}' is not a number"))),
        };
        self.pos += len;
        if self.rest().starts_with('%') {
            if !figure.is_fraction() {
                return Err(self.error_here(
                    1,
                    "a percentage only fits a fraction (e.g. gil.contended, thread[..].gil_wait)",
                ));
            }
            self.pos += 1;
            return Ok(value / 100.0);
        }
        Ok(value)
    }

    fn ident(&mut self) -> &'a str {
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let start = self.pos;
        self.pos += len;
        &self.text[start..start + len]
    }

    fn expect(&mut self, token: &str, what: &str) -> Result<(), ConditionError> {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            Ok(())
        } else {
            let len = self.rest().chars().next().map_or(1, char::len_utf8);
            Err(self.error_here(len, &format!("expected {what}")))
        }
    }

    fn skip_spaces(&mut self) {
        self.pos = self.text.len() - self.rest().trim_start().len();
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error_here(&self, len: usize, message: &str) -> ConditionError {
        self.error_at(self.pos, len, message)
    }

    /// An error at `at..at + len`, clamped to the text (a caret past the end is allowed).
    fn error_at(&self, at: usize, len: usize, message: &str) -> ConditionError {
        let at = at.min(self.text.len());
        ConditionError {
            text: self.text.to_string(),
            message: message.to_string(),
            at,
            len: len.min(self.text.len() - at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::recording::Recording;

    /// A report of 100 samples: two workers fighting over the GIL, one unnamed idle thread.
    fn report() -> Report {
        let thread = |tid: i32, name: Option<&str>, held: u64, wait: u64, idle: u64, io: u64| {
            serde_json::json!({
                "tid": tid, "name": name, "samples": 100,
                "states": {"gil_held": held, "gil_wait": wait, "native_nogil": 0, "idle": idle},
                "idle_reasons": {"sleep": 0, "io": io, "lock": idle - io, "other": 0},
            })
        };
        let rec: Recording = serde_json::from_value(serde_json::json!({
            "format": "gilscope.recording/1", "pid": 42, "command": [],
            "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                       "gil": "enabled", "binary": "/usr/bin/python3"},
            "duration_s": 1.0, "requested_rate_hz": 100.0, "samples": 100,
            "missed_samples": 3, "torn_samples": 0, "stopped_samples": 0,
            "stop_reason": "the duration elapsed", "cpus": 4,
            "gil": {"held": 95, "contended": 74, "waiters": 80, "on_cpu": 95,
                    "first_switch_number": 10, "last_switch_number": 210, "interval_us": 5000},
            "threads": [thread(7, Some("worker-1"), 50, 45, 5, 5),
                        thread(8, Some("worker-2"), 45, 35, 20, 0),
                        thread(9, None, 0, 0, 100, 100)],
            "stacks": [], "children": [],
        }))
        .unwrap();
        Report::new(&rec)
    }

    fn eval(text: &str) -> Evaluation {
        Condition::try_parse(text).unwrap().evaluate(&report())
    }

    fn error(text: &str) -> ConditionError {
        Condition::try_parse(text).expect_err(text)
    }

    #[test]
    fn parses_every_kind_of_figure() {
        for text in [
            "gil.contended>0.3",
            " gil.held >= 0.9 ",
            "gil.mean_waiters<1",
            "gil.switches_per_s<=100",
            "gil.parallelism!=1.5",
            "samples==100",
            "torn_samples>0",
            "missed_samples>=1e1",
            "stopped_samples>0",
            "thread[worker-*].gil_wait>0.5",
            "thread[w?rker-1].states.gil_held>50%",
            "thread[tid:9].idle_reasons.io>0.5",
            "thread[*].lock>0",
            "thread[*].mean_wait_per_wakeup_ms>5",
            "process[*].gil.contended>0.3",
            "process[42].thread[worker-1].native_nogil<0.1",
        ] {
            let c = Condition::try_parse(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.text, text);
        }
        assert_eq!(Condition::try_parse("gil.held>30%").unwrap().value, 0.3);
    }

    #[test]
    fn malformed_expressions_point_at_the_problem() {
        let cases = [
            // (text, where the caret starts, words the message must have)
            ("gil.contended 0.3", 14, "expected a comparison"),
            ("gil.contended", 13, "expected a comparison"),
            ("gil.contended=0.3", 13, "did you mean '=='"),
            ("gil.contended>", 14, "expected a number"),
            ("gil.contended>abc", 14, "'abc' is not a number"),
            ("gil.contended>0.3.1", 14, "is not a number"),
            ("gil.contended>inf", 14, "is not a number"),
            ("gil.contnded>0.3", 4, "unknown GIL figure 'contnded'"),
            ("gil>0.3", 3, "expected '.'"),
            ("cpu.held>0.3", 0, "unknown figure 'cpu'"),
            (">0.3", 0, "expected a figure"),
            (
                "thread[worker-*].gil_waiting>0.5",
                17,
                "unknown thread field 'gil_waiting'",
            ),
            (
                "thread[worker-*].states.io>0.5",
                24,
                "unknown thread states field 'io'",
            ),
            ("thread[].gil_wait>0.5", 6, "empty thread pattern"),
            ("thread[a[b].gil_wait>0.5", 8, "'[' is not allowed"),
            ("thread[worker-*.gil_wait>0.5", 6, "unclosed '['"),
            ("thread[worker-*", 6, "unclosed '['"),
            ("thread.gil_wait>0.5", 6, "expected '['"),
            ("thread[a]gil_wait>0.5", 9, "expected '.'"),
            ("gil.contended>0.3 junk", 18, "unexpected text"),
            ("gil.contended>0.3 && gil.held>0.9", 18, "repeat the flag"),
            ("samples>50%", 10, "percentage only fits a fraction"),
            ("gil.held>0.3%%", 13, "unexpected text"),
            (
                "thread[a].process[1].gil.held>1",
                10,
                "unknown thread field",
            ),
        ];
        for (text, at, words) in cases {
            let e = error(text);
            assert!(e.message.contains(words), "{text}: {e}");
            assert_eq!(e.at, at, "{text}: {e}");
            let shown = e.to_string();
            assert!(
                shown.ends_with(&format!("(at character {})", at + 1)),
                "{shown}"
            );
        }
    }

    #[test]
    fn the_error_says_where_the_problem_is_on_one_line() {
        let shown = error("gil.contnded>0.3").to_string();
        assert!(shown.ends_with("(at character 5)"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
        // Through anyhow, as `record` gets it, the typed error is still there.
        let err = Condition::parse("gil.held>").unwrap_err();
        assert!(err.downcast_ref::<ConditionError>().is_some());
    }

    #[test]
    fn gil_and_count_conditions_compare_their_figure() {
        let e = eval("gil.contended>0.3");
        assert!(e.holds());
        assert_eq!(e.values[0].label, "gil.contended");
        assert!((e.values[0].value - 0.74).abs() < 1e-12);
        assert!(!eval("gil.contended>0.74").holds());
        assert!(eval("gil.contended>=74%").holds());
        assert!(eval("gil.contended==0.74").holds());
        assert!(!eval("gil.contended!=0.74").holds());
        assert!(eval("gil.switches_per_s>=200").holds());
        assert!(eval("samples<101").holds());
        assert!(!eval("torn_samples>0").holds());
        assert!(eval("missed_samples==3").holds());
    }

    #[test]
    fn thread_conditions_hold_if_any_matching_thread_meets_them() {
        let e = eval("thread[worker-*].gil_wait>0.4");
        assert!(e.holds());
        assert_eq!(e.values.len(), 2);
        let held: Vec<&str> = e
            .values
            .iter()
            .filter(|v| v.holds)
            .map(|v| v.label.as_str())
            .collect();
        assert_eq!(held, ["thread[worker-1].gil_wait"]);
        assert!(!eval("thread[worker-*].gil_wait>0.5").holds());
        assert!(eval("thread[*-2].idle_reasons.lock>=0.2").holds());
        // Unnamed threads are matched (and shown) by tid.
        let e = eval("thread[tid:9].io>0.9");
        assert!(e.holds());
        assert_eq!(e.values[0].label, "thread[tid:9].io");
        assert_eq!(eval("thread[*].idle>=0").values.len(), 3);
        assert!(eval("thread[worker-?].gil_held==0.5").holds());
        assert!(eval("thread[worker-1].gil_held==50%").holds());
    }

    #[test]
    fn a_pattern_matching_nothing_does_not_hold_and_warns() {
        let e = eval("thread[db-*].gil_wait>=0");
        assert!(!e.holds());
        let warning = e.warning.expect("a warning");
        assert!(warning.contains("no thread matches 'db-*'"), "{warning}");
        assert!(warning.contains("worker-1, worker-2, tid:9"), "{warning}");
        let e = eval("process[1234].gil.held>=0");
        assert!(!e.holds());
        assert!(e.warning.unwrap().contains("no process matches '1234'"));
    }

    #[test]
    fn process_patterns_match_the_pid() {
        let e = eval("process[4?].gil.held>0.9");
        assert!(e.holds());
        assert_eq!(e.values[0].label, "process[42].gil.held");
        assert!(eval("process[*].thread[worker-2].gil_wait>0.3").holds());
    }

    #[test]
    fn report_failures_is_true_only_when_a_condition_holds() {
        let parse = |texts: &[&str]| -> Vec<Condition> {
            texts
                .iter()
                .map(|t| Condition::try_parse(t).unwrap())
                .collect()
        };
        let r = report();
        assert!(!report_failures(&[], &r));
        assert!(!report_failures(
            &parse(&["gil.held>0.99", "thread[x].idle>0"]),
            &r
        ));
        assert!(report_failures(
            &parse(&["gil.held>0.99", "gil.contended>0.3"]),
            &r
        ));
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        let m = |p: &str, t: &str| Glob(p.to_string()).matches(t);
        assert!(m("*", ""));
        assert!(m("worker-*", "worker-"));
        assert!(m("worker-*", "worker-12"));
        assert!(!m("worker-*", "Worker-1"));
        assert!(m("*-*-?", "a-b-c"));
        assert!(!m("?", ""));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("ThreadPoolExecutor-0_*", "ThreadPoolExecutor-0_3"));
    }

    #[test]
    fn values_are_shown_briefly() {
        assert_eq!(number(0.74), "0.74");
        assert_eq!(number(0.123456), "0.123");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn event_loop_figures_are_judged_on_loop_threads_only() {
        let mut rec: Recording = serde_json::from_value(serde_json::json!({
            "format": "gilscope.recording/1", "pid": 42, "command": [],
            "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                       "gil": "enabled", "binary": "/usr/bin/python3"},
            "duration_s": 2.0, "requested_rate_hz": 100.0, "samples": 200,
            "missed_samples": 0, "torn_samples": 0, "stopped_samples": 0,
            "stop_reason": "the duration elapsed", "cpus": 2,
            "gil": {"held": 50, "contended": 0, "waiters": 0, "on_cpu": 50,
                    "first_switch_number": 1, "last_switch_number": 1, "interval_us": 5000},
            "threads": [
                {"tid": 7, "name": "MainThread", "samples": 200,
                 "states": {"gil_held": 50, "gil_wait": 0, "native_nogil": 0, "idle": 150},
                 "idle_reasons": {"sleep": 0, "io": 150, "lock": 0, "other": 0}},
                {"tid": 8, "name": "helper", "samples": 200,
                 "states": {"gil_held": 0, "gil_wait": 0, "native_nogil": 0, "idle": 200},
                 "idle_reasons": {"sleep": 200, "io": 0, "lock": 0, "other": 0}}],
            "stacks": [], "children": [],
            "event_loops": [{"tid": 7, "kind": "asyncio", "method": "pass_start",
                "stamped_stretches": 40, "unstamped_stretches": 0,
                "stall_threshold_ms": 20.0, "samples": 200, "selector_samples": 150,
                "blocked_in_selector": 150, "blocked_elsewhere": 0,
                "wall_ns": 2000000000u64, "cpu_ns": 500000000u64, "run_delay_ns": 0,
                "stalls": 4, "stalls_ms": [41.0, 43.0, 55.5, 42.0], "blocking": []}],
        }))
        .unwrap();
        rec.threads.sort_by_key(|t| t.tid);
        let report = Report::new(&rec);
        let eval = |text: &str| Condition::try_parse(text).unwrap().evaluate(&report);
        let longest = eval("thread[MainThread].event_loop.longest_stall_ms>50");
        assert!(longest.holds());
        assert_eq!(
            longest.values[0].label,
            "thread[MainThread].event_loop.longest_stall_ms"
        );
        assert!((longest.values[0].value - 55.5).abs() < 1e-9);
        assert!(!eval("thread[MainThread].event_loop.longest_stall_ms>60").holds());
        assert!(eval("thread[*].event_loop.stalls>=4").holds());
        assert!((eval("thread[*].event_loop.stalls_per_s==2").values[0].value - 2.0).abs() < 1e-9);
        // The helper runs no loop: nothing to judge, and a warning says why.
        let none = eval("thread[helper].event_loop.stalls>0");
        assert!(!none.holds());
        assert!(none.values.is_empty());
        assert!(none.warning.unwrap().contains("event loop"));
        assert!(Condition::try_parse("thread[x].event_loop.busy>30%").is_ok());
        assert!(Condition::try_parse("thread[x].event_loop.nope>1").is_err());
    }

    #[test]
    fn a_group_is_judged_on_its_threads_together() {
        // worker-1 and worker-2 are group `worker-*`: 80 waits in 200 thread-samples.
        let e = eval("group[worker-*].gil_wait>0.3");
        assert!(e.holds(), "{e:?}");
        assert_eq!(e.values[0].label, "group[worker-*].gil_wait");
        assert!((e.values[0].value - 0.4).abs() < 1e-9);
        assert!(!eval("group[worker-*].states.gil_wait>0.5").holds());
        assert!(eval("group[worker-*].threads==2").holds());
        assert!(eval("group[(unnamed)].idle_reasons.io>=100%").holds());
        let none = eval("group[req-*].gil_wait>0.3");
        assert!(!none.holds());
        assert!(none.warning.unwrap().contains("worker-*"));
        let err = error("group[worker-*].wakeups_waiting_for_gil>0.3");
        assert!(err.message.contains("thread figure"), "{err}");
        let err = error("group[worker-*].event_loop.stalls>0");
        assert!(err.message.contains("thread figure"), "{err}");
        assert!(
            error("group[worker-*].samples>10%")
                .message
                .contains("percentage")
        );
    }
}
