//! asyncio event loops as the thread running one shows them: whether the loop waits in its
//! selector, and when the pass of `BaseEventLoop._run_once` now running came back from it.
//!
//! A thread runs an asyncio loop when its stack has `_run_once` from
//! `asyncio/base_events.py` (3.8 to 3.15 all run the loop in that Python method, whatever
//! the selector). It waits for events when the frames inside `_run_once` reach the
//! selector's `select` (selectors.py) and no callback (`Handle._run`, asyncio/events.py).
//!
//! Each pass of `_run_once` computes, right after the selector returns, a local
//! `end_time = self.time() + clock resolution`, with `time.monotonic()`: the same clock as
//! CLOCK_MONOTONIC here. Reading that local (a float in the frame's locals) tells when the
//! current stretch of running code began, and two samples with the same value are in one
//! stretch: the loop did not go back to its selector in between. That is what tells a
//! 40 ms stall from forty 1 ms passes.

use super::attach::Runtime;
use super::code::{CodeId, CodeTable};
use super::layout::ObjectLayout;
use super::loop_task::TaskReader;
use super::strings::read_unicode;
use super::version::Version;
use super::walker::Frame;
use crate::mem::{MemError, MemoryExt, RemoteMemory};
use crate::process::kernel::SchedCounters;
use rustc_hash::FxHashMap;

/// Where the loop's pass start lives, for one CPython version (checked against the
/// headers by tests/it/event_loop_offsets.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopOffsets {
    /// `PyFrameObject.f_localsplus` (<= 3.10) or `_PyInterpreterFrame.localsplus` (3.11+).
    pub frame_locals: u64,
    /// `PyCodeObject.co_varnames` (<= 3.10) or `co_localsplusnames` (3.11+): the names of
    /// the slots in the frame's locals, a tuple.
    pub code_local_names: u64,
    /// `PyVarObject.ob_size`.
    pub var_size: u64,
    /// `PyTupleObject.ob_item`.
    pub tuple_items: u64,
    /// `PyFloatObject.ob_fval`.
    pub float_value: u64,
}

impl LoopOffsets {
    /// `None` for builds whose layout is not known here (free-threaded builds, versions
    /// after 3.15): their loops are then told apart by the scheduler's counters only.
    pub fn for_version(version: Version, free_threaded: bool) -> Option<LoopOffsets> {
        if free_threaded || version.major != 3 {
            return None;
        }
        let (frame_locals, code_local_names, tuple_items) = match version.minor {
            8 | 9 => (360, 72, 24),
            10 => (352, 72, 24),
            11..=13 => (72, 96, 24),
            // 3.14 caches the tuple's hash (`ob_hash`) before its items.
            14 | 15 => (80, 96, 32),
            _ => return None,
        };
        Some(LoopOffsets {
            frame_locals,
            code_local_names,
            var_size: 16,
            tuple_items,
            float_value: 16,
        })
    }
}

/// What one thread's event loop looked like at one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopObservation {
    /// Waiting for events in the selector (not running a callback).
    pub in_selector: bool,
    /// When the current pass came back from the selector (CLOCK_MONOTONIC, ns); `None`
    /// while in the selector, or where it cannot be read.
    pub pass_start_ns: Option<u64>,
    /// When this was read (CLOCK_MONOTONIC, ns).
    pub at_ns: u64,
    /// The thread's scheduler counters, read with it.
    pub sched: Option<SchedCounters>,
    /// The name of the asyncio task running, where it can be read (docs/event-loops.md).
    /// Shared by every observation of the same name.
    pub task: Option<std::sync::Arc<str>>,
    pub kind: LoopKind,
    /// uvloop: how many of the outermost frames belong to the loop's caller, not to the
    /// callback running (0 for asyncio).
    pub caller_frames: usize,
}

/// Which loop a thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopKind {
    /// asyncio's own loop: `BaseEventLoop._run_once` in Python.
    #[default]
    Asyncio,
    /// uvloop: the loop runs in C (Cython); only the callbacks have frames.
    Uvloop,
}

impl LoopKind {
    pub fn name(self) -> &'static str {
        match self {
            LoopKind::Asyncio => "asyncio",
            LoopKind::Uvloop => "uvloop",
        }
    }
}

/// What the reader knows of a thread with no `_run_once` frame: whether a uvloop runs on
/// it, and the fewest frames it was seen with while it did (the frames below the loop).
#[derive(Debug, Clone, Copy)]
struct RunningLoop {
    uvloop: Option<u64>,
    /// When the running loop is read again (CLOCK_MONOTONIC, ns; for threads not running
    /// uvloop).
    recheck_at_ns: u64,
    base_depth: usize,
}

/// The C type every uvloop loop is an instance of (`uvloop.Loop` subclasses it in Python).
const UVLOOP_TYPE: &str = "uvloop.loop.Loop";
/// Thread states remembered; past this the reader starts over (threads come and go).
const MAX_THREADS_KEPT: usize = 4096;
/// How long a thread running no uvloop goes between two reads of its running loop: by time,
/// not samples, so that the reads (a thread dict before 3.13) cost the same at any rate.
const RUNNING_LOOP_RECHECK_NS: u64 = 1_000_000_000;

/// Where a thread's state and its interpreter's live in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadAddresses {
    pub tstate: u64,
    pub interpreter: u64,
}

/// What a code object is to the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `BaseEventLoop._run_once`.
    RunOnce,
    /// A selector's `select` (selectors.py).
    SelectorSelect,
    /// `Handle._run`: a callback running.
    HandleRun,
    /// `_process_events`: the selector has returned, and the new pass has not stamped its
    /// start yet.
    ProcessEvents,
    Other,
}

/// Reads event-loop state; keeps what it learned about code objects.
#[derive(Debug)]
pub struct LoopReader {
    offsets: Option<LoopOffsets>,
    object: ObjectLayout,
    ob_type: u64,
    tp_name: u64,
    tag_mask: u64,
    code_offset: u64,
    roles: FxHashMap<CodeId, Role>,
    /// Per `_run_once` code object: the slot of `end_time` in its frame's locals.
    end_time_slot: FxHashMap<u64, Option<u64>>,
    /// The address of `float`, once one object was checked to be one by its type's name.
    float_type: Option<u64>,
    tasks: TaskReader,
    /// Per thread state, for threads without a `_run_once` frame.
    running: FxHashMap<u64, RunningLoop>,
}

/// Locals a `_run_once` has (a dozen); more means the names tuple was misread.
const MAX_LOCALS: i64 = 256;

impl LoopReader {
    pub fn new(runtime: &Runtime) -> Self {
        let layout = &runtime.layout;
        LoopReader {
            offsets: LoopOffsets::for_version(layout.version, layout.free_threaded),
            object: layout.object.clone(),
            ob_type: layout.object.ob_type,
            tp_name: layout.object.tp_name,
            tag_mask: layout.frame.code_tag_mask,
            code_offset: layout.frame.code,
            roles: FxHashMap::default(),
            end_time_slot: FxHashMap::default(),
            float_type: None,
            tasks: TaskReader::new(runtime),
            running: FxHashMap::default(),
        }
    }

    /// The loop as `frames` (innermost first) show it, or `None` if the thread runs no
    /// asyncio loop. `addresses` are the frames' addresses; `sched` the thread's counters;
    /// `thread` the addresses of its thread state and interpreter (for the running task).
    pub fn observe(
        &mut self,
        mem: &impl RemoteMemory,
        codes: &CodeTable,
        frames: &[Frame],
        addresses: &[u64],
        sched: Option<SchedCounters>,
        thread: ThreadAddresses,
    ) -> Option<LoopObservation> {
        let Some(run_once) = frames
            .iter()
            .position(|f| self.role(codes, f.code) == Role::RunOnce)
        else {
            return self.observe_uvloop(mem, frames, sched, thread);
        };
        // The frames inside `_run_once` are innermost first: the last is the one it called.
        // A selector subclass's own `select` (wrapping the real one) counts as the selector.
        let inside = &frames[..run_once];
        let (mut selecting, mut running_callback) = (false, false);
        for frame in inside {
            match self.role(codes, frame.code) {
                Role::SelectorSelect => selecting = true,
                Role::HandleRun => running_callback = true,
                _ => {}
            }
        }
        let called = inside.last().map(|f| f.code);
        let in_selector = (selecting
            || called.is_some_and(|code| {
                self.role(codes, code) == Role::ProcessEvents || codes.info(code).name == "select"
            }))
            && !running_callback;
        let frame = addresses.get(run_once).copied();
        let (pass_start_ns, task) = match frame {
            Some(frame) if !in_selector => {
                let start = self.read_pass_start(mem, frame).ok().flatten();
                let event_loop = self.read_self(mem, frame).unwrap_or(0);
                let task = self.tasks.running_task_name(
                    mem,
                    thread.interpreter,
                    thread.tstate,
                    event_loop,
                );
                (start, task)
            }
            _ => (None, None),
        };
        Some(LoopObservation {
            in_selector,
            pass_start_ns,
            at_ns: monotonic_ns(),
            sched,
            task,
            kind: LoopKind::Asyncio,
            caller_frames: 0,
        })
    }

    /// A thread whose running loop is a `uvloop.Loop`. Its stack has the frames below the
    /// loop (the caller of `run_until_complete`), and a callback's frames on top while one
    /// runs; the loop's own C code has none. So it is taken to wait in its selector at the
    /// fewest frames seen while the loop ran (the tracker counts only blocked samples
    /// there as waiting).
    fn observe_uvloop(
        &mut self,
        mem: &impl RemoteMemory,
        frames: &[Frame],
        sched: Option<SchedCounters>,
        thread: ThreadAddresses,
    ) -> Option<LoopObservation> {
        let known = self.running.get(&thread.tstate).copied();
        let now_ns = monotonic_ns();
        if let Some(r) = known
            && r.uvloop.is_none()
            && now_ns < r.recheck_at_ns
        {
            return None;
        }
        let mut uvloop = None;
        if let Ok(Some((event_loop, types))) = self.tasks.running_loop(mem, thread.tstate)
            && types.iter().any(|t| t == UVLOOP_TYPE)
        {
            uvloop = Some(event_loop);
        }
        if self.running.len() >= MAX_THREADS_KEPT {
            self.running.clear();
        }
        let base_depth = match (known, uvloop) {
            (Some(r), Some(l)) if r.uvloop == Some(l) => r.base_depth.min(frames.len()),
            _ => frames.len(),
        };
        self.running.insert(
            thread.tstate,
            RunningLoop {
                uvloop,
                recheck_at_ns: now_ns.saturating_add(RUNNING_LOOP_RECHECK_NS),
                base_depth,
            },
        );
        let event_loop = uvloop?;
        let in_selector = frames.len() <= base_depth;
        let task = if in_selector {
            None
        } else {
            self.tasks
                .running_task_name(mem, thread.interpreter, thread.tstate, event_loop)
        };
        Some(LoopObservation {
            in_selector,
            pass_start_ns: None,
            at_ns: monotonic_ns(),
            sched,
            task,
            kind: LoopKind::Uvloop,
            caller_frames: base_depth,
        })
    }

    /// `self` of the `_run_once` frame at `frame` (its first local): the loop object.
    fn read_self(&self, mem: &impl RemoteMemory, frame: u64) -> Result<u64, MemError> {
        let Some(o) = self.offsets else {
            return Ok(0);
        };
        Ok(mem.read_u64(frame.wrapping_add(o.frame_locals))? & !self.tag_mask)
    }

    fn role(&mut self, codes: &CodeTable, code: CodeId) -> Role {
        *self.roles.entry(code).or_insert_with(|| {
            let info = codes.info(code);
            let file = info.file.replace('\\', "/");
            match info.name.as_str() {
                "_run_once" if file.ends_with("asyncio/base_events.py") => Role::RunOnce,
                "select" if file.ends_with("/selectors.py") => Role::SelectorSelect,
                "_run" if file.ends_with("asyncio/events.py") => Role::HandleRun,
                "_process_events" if file.contains("/asyncio/") => Role::ProcessEvents,
                _ => Role::Other,
            }
        })
    }

    /// `end_time` of the `_run_once` frame at `frame` (the clock resolution added to it is
    /// a nanosecond or so).
    fn read_pass_start(
        &mut self,
        mem: &impl RemoteMemory,
        frame: u64,
    ) -> Result<Option<u64>, MemError> {
        let Some(o) = self.offsets else {
            return Ok(None);
        };
        let code = mem.read_u64(frame.wrapping_add(self.code_offset))? & !self.tag_mask;
        let slot = match self.end_time_slot.get(&code) {
            Some(&slot) => slot,
            None => {
                let slot = self.find_local(mem, &o, code, "end_time")?;
                self.end_time_slot.insert(code, slot);
                slot
            }
        };
        let Some(slot) = slot else { return Ok(None) };
        let at = frame.wrapping_add(o.frame_locals + 8 * slot);
        let value = mem.read_u64(at)? & !self.tag_mask;
        if value == 0 || !self.is_float(mem, value)? {
            return Ok(None);
        }
        let seconds = f64::from_bits(mem.read_u64(value.wrapping_add(o.float_value))?);
        Ok((seconds.is_finite() && seconds > 0.0).then_some((seconds * 1e9) as u64))
    }

    fn find_local(
        &self,
        mem: &impl RemoteMemory,
        o: &LoopOffsets,
        code: u64,
        wanted: &str,
    ) -> Result<Option<u64>, MemError> {
        let names = mem.read_u64(code.wrapping_add(o.code_local_names))?;
        let count = mem.read_i64(names.wrapping_add(o.var_size))?;
        if !(0..=MAX_LOCALS).contains(&count) {
            return Ok(None);
        }
        for index in 0..count as u64 {
            let name = mem.read_u64(names.wrapping_add(o.tuple_items + 8 * index))?;
            if self.read_name(mem, name)? == wanted {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    fn read_name(&self, mem: &impl RemoteMemory, addr: u64) -> Result<String, MemError> {
        read_unicode(mem, &self.object, addr)
    }

    fn is_float(&mut self, mem: &impl RemoteMemory, object: u64) -> Result<bool, MemError> {
        let ty = mem.read_u64(object.wrapping_add(self.ob_type))?;
        if let Some(float) = self.float_type {
            return Ok(ty == float);
        }
        let name = mem.read_u64(ty.wrapping_add(self.tp_name))?;
        let text: [u8; 6] = mem.read_array(name)?;
        let is_float = &text == b"float\0";
        if is_float {
            self.float_type = Some(ty);
        }
        Ok(is_float)
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock `time.monotonic()` reads in the target.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
