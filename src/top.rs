//! `gilscope top`: a live terminal view of one process. It samples at a fixed rate like
//! `record`, keeps the samples of the last window (2 s by default), and once a second turns
//! them into a [`Recording`] through the same [`Aggregator`] and figures the reports use: one
//! row per thread with a bar of its state shares, the process's GIL figures, and the
//! functions that held the GIL most.
//!
//! Drawing is a pure function of the figures and the terminal size ([`render`]), so any size
//! works, down to zero; a terminal that reports no size (0x0, as `script` and some CI runners
//! give) is taken as $COLUMNS x $LINES, else 80x24. The terminal is put back (raw mode off,
//! main screen, cursor shown) on every way out: `q`, Ctrl-C, SIGINT/SIGTERM/SIGHUP, the
//! target exiting, errors and panics.
//!
//! In batch mode (`--batch`, or whenever stdout is not a terminal) there is no screen: one
//! plain-text frame per refresh ([`render_text`]) is appended to stdout, like `top -b`, until
//! the target exits or a signal ends it.

use crate::model::recording::Recording;
use crate::model::report::{GilFigures, GroupFigures, ThreadFigures};
use crate::model::state::ThreadState;
use crate::process::maps::ProgramImage;
use crate::profile::figures::{Row, gil_figures, ratio, rows, thread_figures, thread_groups};
use crate::profile::{Aggregator, RunInfo};
use crate::record::schedule::Schedule;
use crate::sample::{Sample, SampleError, Sampler};
use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::style::{Attribute, Color, Print, ResetColor, SetAttribute, SetForegroundColor};
use crossterm::{cursor, queue, terminal};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TopConfig {
    pub pid: i32,
    pub rate_hz: f64,
    /// How often the screen is redrawn.
    pub refresh: Duration,
    /// How far back the figures look.
    pub window: Duration,
    /// Plain-text frames on stdout instead of a screen (also used when stdout is not a
    /// terminal).
    pub batch: bool,
}

/// Why `top` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopEnd {
    /// The user quit (q, Ctrl-C, a signal).
    Quit,
    TargetExited,
    /// The target called exec() (the new program is not followed): its path.
    TargetExec {
        program: String,
    },
}

const NAME_REFRESH: Duration = Duration::from_secs(2);
/// Functions listed under "holding the GIL" at most.
const TOP_FUNCTIONS: usize = 10;

/// Runs the live view until the user quits or the target exits.
pub fn run(config: &TopConfig) -> Result<TopEnd> {
    let mut target = Sampler::attach(config.pid)?;
    let batch = config.batch || !std::io::stdout().is_terminal();
    target.refresh_names();
    let command = std::fs::read(format!("/proc/{}/cmdline", config.pid))
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    install_signal_handlers();
    crate::record::schedule::become_sampler(config.pid);
    if batch {
        return Live::new(config, target, command).run_batch();
    }
    let _screen = Screen::enter()?;
    Live::new(config, target, command).run()
}

/// The terminal's size; a terminal that reports 0x0 (or none) gets $COLUMNS x $LINES, else
/// 80x24.
fn screen_size() -> (usize, usize) {
    match terminal::size() {
        Ok((width, height)) if width > 0 && height > 0 => (usize::from(width), usize::from(height)),
        _ => size_from_env(
            std::env::var("COLUMNS").ok().as_deref(),
            std::env::var("LINES").ok().as_deref(),
        ),
    }
}

fn size_from_env(columns: Option<&str>, lines: Option<&str>) -> (usize, usize) {
    let parse = |v: Option<&str>, default: usize| {
        v.and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    };
    (parse(columns, 80), parse(lines, 24))
}

/// The sampling loop and what it keeps.
struct Live<'a> {
    config: &'a TopConfig,
    target: Sampler,
    command: String,
    window: VecDeque<Sample>,
    /// What the sampler released on the latest tick (kept for its capacity).
    released: Vec<Sample>,
    names_read: Instant,
    /// The program image attached to: exec() replaces it.
    image: Option<ProgramImage>,
}

impl<'a> Live<'a> {
    fn new(config: &'a TopConfig, target: Sampler, command: String) -> Self {
        let target_pid = target.pid;
        Live {
            config,
            target,
            command,
            window: VecDeque::new(),
            released: Vec::new(),
            names_read: Instant::now(),
            image: ProgramImage::of(target_pid),
        }
    }

    fn run(&mut self) -> Result<TopEnd> {
        let input = spawn_input_reader();
        let mut schedule = Schedule::new(self.config.rate_hz, u64::from(std::process::id()));
        let mut deadline = Instant::now();
        let mut next_draw = Instant::now() + self.config.refresh;
        self.draw()?;
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Ok(TopEnd::Quit);
            }
            let now = Instant::now();
            let wait = deadline.min(next_draw).saturating_duration_since(now);
            match input.recv_timeout(wait) {
                Ok(Event::Key(key)) if is_quit(&key) => return Ok(TopEnd::Quit),
                Ok(Event::Resize(..)) if self.exec_happened() => return Ok(self.end()),
                Ok(Event::Resize(..)) => self.draw()?,
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                // The terminal is gone.
                Err(RecvTimeoutError::Disconnected) => return Ok(TopEnd::Quit),
            }
            let now = Instant::now();
            if now >= deadline {
                if !self.sample()? {
                    return Ok(self.end());
                }
                deadline = schedule.next_deadline(Instant::now());
            }
            if now >= next_draw {
                if self.exec_happened() {
                    return Ok(self.end());
                }
                self.draw()?;
                next_draw = (next_draw + self.config.refresh).max(now);
            }
        }
    }

    /// Batch mode: a plain-text frame every refresh until the target exits or a signal
    /// comes; a closed stdout (`| head`) ends it too.
    fn run_batch(&mut self) -> Result<TopEnd> {
        let mut schedule = Schedule::new(self.config.rate_hz, u64::from(std::process::id()));
        let mut next_frame = Instant::now() + self.config.refresh;
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Ok(TopEnd::Quit);
            }
            crate::record::schedule::sleep_until(
                schedule.next_deadline(Instant::now()).min(next_frame),
            );
            if !self.sample()? {
                return Ok(self.end());
            }
            let now = Instant::now();
            if now >= next_frame {
                if self.exec_happened() {
                    return Ok(self.end());
                }
                let view = View::new(&self.window_recording(), self.config, &self.command);
                let mut out = std::io::stdout().lock();
                if out
                    .write_all(render_text(&view).as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(TopEnd::Quit);
                }
                next_frame = (next_frame + self.config.refresh).max(now);
            }
        }
    }

    /// Why sampling ended: the target exited, or replaced its program with exec().
    fn end(&self) -> TopEnd {
        if self.exec_happened() {
            TopEnd::TargetExec {
                program: crate::process::maps::program_path(self.target.pid),
            }
        } else {
            TopEnd::TargetExited
        }
    }

    /// Whether the target runs another program than the one attached to (a read of
    /// /proc/PID/auxv: checked before each frame and after a failed sample, not after every
    /// sample).
    fn exec_happened(&self) -> bool {
        self.image
            .as_ref()
            .is_some_and(|image| image.replaced_in(self.target.pid))
    }

    /// Takes one sample into the window; false once the target is gone or runs another
    /// program. A failed sample may be the first sign of an exec(); a successful one may
    /// have read the new program (a static interpreter exec'd again keeps its addresses),
    /// which is why every frame is shown only after [`Live::exec_happened`] says no.
    fn sample(&mut self) -> Result<bool> {
        let mut samples = std::mem::take(&mut self.released);
        let result = self.target.resolved_sample(true, false, &mut samples);
        if result.is_err() && self.exec_happened() {
            return Ok(false);
        }
        match result {
            Ok(()) => {
                let unnamed = samples
                    .iter()
                    .flat_map(|s| &s.threads)
                    .any(|t| self.target.thread_name(t.tid).is_none());
                let since = self.names_read.elapsed();
                if since >= NAME_REFRESH || (unnamed && since >= Duration::from_millis(100)) {
                    self.target.refresh_names();
                    self.names_read = Instant::now();
                }
                for sample in samples.drain(..) {
                    let oldest = sample.time.checked_sub(self.config.window);
                    self.window.push_back(sample);
                    while let (Some(front), Some(oldest)) = (self.window.front(), oldest) {
                        if front.time >= oldest {
                            break;
                        }
                        if let Some(old) = self.window.pop_front() {
                            self.target.recycle(old);
                        }
                    }
                }
                self.released = samples;
                Ok(true)
            }
            Err(SampleError::Torn) => Ok(true),
            Err(SampleError::Gone) => Ok(false),
            Err(SampleError::Fatal(e)) => Err(e),
        }
    }

    fn draw(&self) -> Result<()> {
        let view = View::new(&self.window_recording(), self.config, &self.command);
        let (width, height) = screen_size();
        let lines = render(&view, width, height);
        let mut out = std::io::stdout().lock();
        paint(&mut out, &lines, width, height)?;
        Ok(out.flush()?)
    }

    /// The window's samples aggregated exactly as `record` aggregates a whole recording.
    fn window_recording(&self) -> Recording {
        let mut a = Aggregator::default();
        for sample in &self.window {
            a.add(sample);
        }
        let span = match (self.window.front(), self.window.back()) {
            (Some(first), Some(last)) => last.time.duration_since(first.time),
            _ => Duration::ZERO,
        };
        let run = RunInfo {
            duration_s: span.as_secs_f64(),
            requested_rate_hz: self.config.rate_hz,
            ..RunInfo::default()
        };
        a.recording(&self.target, run)
    }
}

fn is_quit(key: &KeyEvent) -> bool {
    match key.code {
        KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
        KeyCode::Char('c' | 'd') => key.modifiers.contains(KeyModifiers::CONTROL),
        _ => false,
    }
}

/// What one screen shows.
pub struct View {
    pub title: String,
    pub samples: u64,
    pub window_s: f64,
    pub gil: GilFigures,
    pub threads: Vec<ThreadFigures>,
    /// Short-lived threads show as one row per group.
    pub groups: Vec<GroupFigures>,
    /// (share of the window's samples, "function (file)"), most first.
    pub holders: Vec<(f64, String)>,
}

impl View {
    pub fn new(rec: &Recording, config: &TopConfig, command: &str) -> Self {
        let threads = thread_figures(rec);
        let groups = thread_groups(rec, &threads);
        View {
            title: format!(
                "gilscope top | pid {} | Python {} | {}",
                config.pid, rec.python.version, command
            ),
            samples: rec.samples,
            window_s: config.window.as_secs_f64(),
            gil: gil_figures(rec),
            threads,
            groups,
            holders: gil_holders(rec),
        }
    }
}

/// Innermost functions of the GIL holder's stacks (all lines of a function together), by
/// share of samples.
fn gil_holders(rec: &Recording) -> Vec<(f64, String)> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for stack in rec
        .stacks
        .iter()
        .filter(|s| s.state == ThreadState::GilHeld)
    {
        let name = match stack.frames.last() {
            Some(f) => format!(
                "{} ({})",
                f.qualname.as_deref().unwrap_or(&f.function),
                short_file(&f.file)
            ),
            None => "[no Python frame]".to_string(),
        };
        *counts.entry(name).or_default() += stack.count;
    }
    let mut holders: Vec<(u64, String)> = counts.into_iter().map(|(n, c)| (c, n)).collect();
    holders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    holders
        .into_iter()
        .take(TOP_FUNCTIONS)
        .map(|(count, name)| (ratio(count, rec.samples), name))
        .collect()
}

fn short_file(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One batch-mode frame: the title, the GIL line, one row per thread with its shares, the
/// functions holding the GIL most, and a blank line. Plain text, no escape codes.
pub fn render_text(view: &View) -> String {
    let g = &view.gil;
    let mut out = format!("{}\n{}\n", view.title, gil_line(view, g));
    out.push_str(&format!(
        "{:<20} {:>8} {:<10} {:>6} {:>6} {:>6} {:>6}\n",
        "THREAD", "TID", "CLASS", "HELD", "WAIT", "NATIVE", "IDLE"
    ));
    if view.threads.is_empty() {
        out.push_str("  sampling...\n");
    }
    for t in &view.threads {
        let s = &t.states;
        out.push_str(&format!(
            "{:<20} {:>8} {:<10} {:>5.0}% {:>5.0}% {:>5.0}% {:>5.0}%\n",
            clip_str(t.name.as_deref().unwrap_or("?"), 20),
            t.tid,
            t.class.name(),
            s.gil_held * 100.0,
            s.gil_wait * 100.0,
            s.native_nogil * 100.0,
            s.idle * 100.0
        ));
    }
    let holders: Vec<String> = view
        .holders
        .iter()
        .take(3)
        .map(|(share, name)| format!("{:.0}% {name}", share * 100.0))
        .collect();
    if !holders.is_empty() {
        out.push_str(&format!("holding the GIL: {}\n", holders.join(", ")));
    }
    out.push('\n');
    out
}

fn gil_line(view: &View, g: &GilFigures) -> String {
    format!(
        "GIL held {:.0}%  contended {:.0}%  waiting {:.1} threads  switches {:.0}/s  \
         on CPU {:.2}  (last {:.0} s, {} samples)",
        g.held * 100.0,
        g.contended * 100.0,
        g.mean_waiters,
        g.switches_per_s,
        g.parallelism,
        view.window_s,
        view.samples
    )
}

/// How a piece of text is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Bold,
    Dim,
    State(ThreadState),
}

pub type Line = Vec<(Tone, String)>;

/// Bar cells per state: the glyph tells states apart without colour too.
pub fn glyph(state: ThreadState) -> char {
    match state {
        ThreadState::GilHeld => '█',
        ThreadState::GilWait => '▓',
        ThreadState::NativeNogil => '▒',
        ThreadState::Idle => '░',
    }
}

/// The screen as lines of at most `width` characters, at most `height` of them.
pub fn render(view: &View, width: usize, height: usize) -> Vec<Line> {
    let g = &view.gil;
    let mut head: Vec<Line> = vec![
        vec![
            (Tone::Bold, view.title.clone()),
            (Tone::Dim, "  q: quit".to_string()),
        ],
        vec![(Tone::Plain, gil_line(view, g))],
        Vec::new(),
    ];
    // Columns: name, tid, class, bar, shares; the bar takes what is left.
    const FIXED: usize = 20 + 1 + 8 + 1 + 10 + 1 + 1 + 28;
    let bar = width.saturating_sub(FIXED).clamp(10, 60);
    head.push(vec![(
        Tone::Bold,
        format!(
            "{:<20} {:>8} {:<10} {:<bar$}  {:>6} {:>6} {:>6} {:>6}",
            "THREAD", "TID", "CLASS", "STATES", "HELD", "WAIT", "NATIVE", "IDLE"
        ),
    )]);
    let mut tail: Vec<Line> = vec![Vec::new(), legend()];
    for t in &view.threads {
        if let Some(l) = &t.event_loop {
            let name = t.name.clone().unwrap_or_else(|| t.tid.to_string());
            tail.push(vec![(
                Tone::Plain,
                format!("Event loop ({name}): {}", l.describe()),
            )]);
        }
    }
    tail.push(Vec::new());
    tail.push(vec![(
        Tone::Bold,
        "HOLDING THE GIL (share of the window)".to_string(),
    )]);
    if view.holders.is_empty() {
        tail.push(vec![(Tone::Dim, "  nobody held the GIL".to_string())]);
    }
    for (share, name) in &view.holders {
        tail.push(vec![(
            Tone::Plain,
            format!("  {:>4.0}%  {name}", share * 100.0),
        )]);
    }
    let mut rows: Vec<Line> = rows(&view.threads, &view.groups)
        .iter()
        .map(|row| thread_row(row, bar))
        .collect();
    if view.threads.is_empty() {
        rows.push(vec![(Tone::Dim, "  sampling...".to_string())]);
    }
    // Thread rows give way to keep the legend on screen; the GIL holders come last.
    let room = height.saturating_sub(head.len() + 2);
    if rows.len() > room {
        let hidden = rows.len() - room.saturating_sub(1);
        rows.truncate(room.saturating_sub(1));
        if room > 0 {
            rows.push(vec![(Tone::Dim, format!("  ... {hidden} more threads"))]);
        }
    }
    head.into_iter()
        .chain(rows)
        .chain(tail)
        .take(height)
        .map(|line| clip(line, width))
        .collect()
}

fn thread_row(row: &Row, bar: usize) -> Line {
    let name = row.label();
    let s = row.states();
    let shares = [
        (ThreadState::GilHeld, s.gil_held),
        (ThreadState::GilWait, s.gil_wait),
        (ThreadState::NativeNogil, s.native_nogil),
        (ThreadState::Idle, s.idle),
    ];
    let mut line: Line = vec![(
        Tone::Plain,
        format!(
            "{:<20} {:>8} {:<10} ",
            clip_str(name, 20),
            row.id(),
            row.class().name()
        ),
    )];
    // Cumulative rounding: the cells always add up to the bar's width.
    let mut done = 0.0;
    let mut drawn = 0;
    for (state, share) in shares {
        done += share;
        let end = ((done * bar as f64).round() as usize).min(bar);
        let cells = end.saturating_sub(drawn);
        drawn += cells;
        if cells > 0 {
            line.push((Tone::State(state), glyph(state).to_string().repeat(cells)));
        }
    }
    line.push((Tone::Plain, " ".repeat(bar - drawn)));
    line.push((
        Tone::Plain,
        format!(
            "  {:>5.0}% {:>5.0}% {:>5.0}% {:>5.0}%",
            s.gil_held * 100.0,
            s.gil_wait * 100.0,
            s.native_nogil * 100.0,
            s.idle * 100.0
        ),
    ));
    line
}

fn legend() -> Line {
    let mut line: Line = vec![(Tone::Dim, "legend: ".to_string())];
    for state in ThreadState::ALL {
        line.push((Tone::State(state), glyph(state).to_string()));
        line.push((Tone::Plain, format!(" {}  ", state.name())));
    }
    line
}

fn clip_str(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The line cut to `width` characters.
fn clip(line: Line, width: usize) -> Line {
    let mut left = width;
    let mut out = Line::new();
    for (tone, text) in line {
        if left == 0 {
            break;
        }
        let part = clip_str(&text, left);
        left -= part.chars().count();
        out.push((tone, part));
    }
    out
}

fn paint(out: &mut impl Write, lines: &[Line], width: usize, height: usize) -> Result<()> {
    for row in 0..height {
        queue!(out, cursor::MoveTo(0, row as u16))?;
        let mut used = 0;
        for (tone, text) in lines.get(row).map_or(&[][..], Vec::as_slice) {
            match tone {
                Tone::Plain => {}
                Tone::Bold => queue!(out, SetAttribute(Attribute::Bold))?,
                Tone::Dim => queue!(out, SetForegroundColor(Color::DarkGrey))?,
                Tone::State(state) => queue!(out, SetForegroundColor(color_of(*state)))?,
            }
            queue!(out, Print(text), SetAttribute(Attribute::Reset), ResetColor)?;
            used += text.chars().count();
        }
        // Clearing right after a full line would erase its last cell on some terminals.
        if used < width {
            queue!(out, terminal::Clear(terminal::ClearType::UntilNewLine))?;
        }
    }
    Ok(())
}

fn color_of(state: ThreadState) -> Color {
    match state {
        ThreadState::GilHeld => Color::Green,
        ThreadState::GilWait => Color::Red,
        ThreadState::NativeNogil => Color::Cyan,
        ThreadState::Idle => Color::DarkGrey,
    }
}

/// The terminal in raw mode on the alternate screen; put back when dropped, and by a panic
/// hook before a panic message is printed.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let screen = Screen;
        let mut out = std::io::stdout();
        queue!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        out.flush()?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Idempotent: safe to call when the terminal is already restored.
fn restore_terminal() {
    let mut out = std::io::stdout();
    let _ = queue!(
        out,
        ResetColor,
        cursor::Show,
        terminal::LeaveAlternateScreen
    );
    let _ = out.flush();
    let _ = terminal::disable_raw_mode();
}

/// Terminal input arrives on a thread of its own, so the sampling loop keeps control
/// whatever the terminal does: crossterm's reader spins without returning when the terminal
/// hangs up, which would otherwise leave signals and the target's exit unnoticed.
fn spawn_input_reader() -> Receiver<Event> {
    let (events, input) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if events.send(event).is_err() {
                break;
            }
        }
    });
    input
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT (Ctrl-C outside raw mode, or `kill -INT`), SIGTERM and SIGHUP (the terminal went
/// away) end the view through the normal path, so the terminal is restored.
fn install_signal_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::{StateFractions, ThreadClass};

    fn view(threads: usize) -> View {
        View {
            title: "gilscope top | pid 1 | Python 3.12.1 | python app.py".into(),
            samples: 200,
            window_s: 2.0,
            gil: GilFigures::default(),
            threads: (0..threads)
                .map(|i| ThreadFigures {
                    name: Some(format!("worker-{i}")),
                    class: ThreadClass::GilBound,
                    states: StateFractions {
                        gil_held: 0.5,
                        gil_wait: 0.3,
                        native_nogil: 0.1,
                        idle: 0.1,
                    },
                    ..ThreadFigures::idle(100 + i as i32, "worker-*", 200)
                })
                .collect(),
            groups: Vec::new(),
            holders: vec![(0.5, "spin (app.py)".into())],
        }
    }

    fn text(line: &Line) -> String {
        line.iter().map(|(_, t)| t.as_str()).collect()
    }

    #[test]
    fn any_terminal_size_renders_within_bounds() {
        for threads in [0, 3, 50] {
            let v = view(threads);
            for width in 0..130 {
                for height in 0..45 {
                    let lines = render(&v, width, height);
                    assert!(lines.len() <= height);
                    assert!(lines.iter().all(|l| text(l).chars().count() <= width));
                }
            }
        }
    }

    #[test]
    fn rows_show_threads_bars_and_legend() {
        let lines = render(&view(2), 120, 40);
        let screen: Vec<String> = lines.iter().map(text).collect();
        let row = screen.iter().find(|l| l.starts_with("worker-1")).unwrap();
        assert!(row.contains("gil_bound") && row.contains("101"), "{row}");
        assert!(row.contains('█') && row.contains('▓') && row.contains('▒') && row.contains('░'));
        assert!(screen.iter().any(|l| l.starts_with("legend:")));
        assert!(screen.iter().any(|l| l.contains("spin (app.py)")));
    }

    #[test]
    fn a_batch_frame_is_plain_text_with_every_column() {
        let frame = render_text(&view(2));
        assert!(!frame.contains('\x1b'), "{frame:?}");
        let lines: Vec<&str> = frame.lines().collect();
        assert!(lines[0].starts_with("gilscope top | pid 1"));
        assert!(lines[1].starts_with("GIL held"));
        assert!(
            lines[2]
                .split_whitespace()
                .eq(["THREAD", "TID", "CLASS", "HELD", "WAIT", "NATIVE", "IDLE"])
        );
        let row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            row,
            ["worker-1", "101", "gil_bound", "50%", "30%", "10%", "10%"]
        );
        assert_eq!(lines[5], "holding the GIL: 50% spin (app.py)");
        assert!(frame.ends_with("\n\n"));
    }

    #[test]
    fn a_terminal_without_a_size_falls_back_to_the_environment_then_80x24() {
        assert_eq!(size_from_env(Some("132"), Some("50")), (132, 50));
        assert_eq!(size_from_env(Some("0"), Some("x")), (80, 24));
        assert_eq!(size_from_env(None, None), (80, 24));
    }

    #[test]
    fn hidden_threads_are_counted_and_the_legend_stays() {
        let screen: Vec<String> = render(&view(50), 120, 20).iter().map(text).collect();
        assert_eq!(screen.len(), 20);
        assert!(
            screen.iter().any(|l| l.contains("more threads")),
            "{screen:#?}"
        );
        assert!(screen.iter().any(|l| l.starts_with("legend:")));
    }
}
