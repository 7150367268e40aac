//! One version-agnostic walk over a CPython runtime: interpreters, their GILs, thread
//! states and Python stacks. Every loop is bounded; a read that fails mid-walk makes the
//! whole read fail, so a torn structure is dropped rather than half-reported.

use super::attach::Runtime;
use super::code::{CodeId, CodeTable};
use super::layout::{FrameKind, FramePointer, Layout};
use crate::mem::{Fields, MemError, MemoryExt, RemoteMemory};
use std::collections::HashSet;

/// Stacks deeper than this are cut, keeping the innermost frames; `truncated` says so.
pub const MAX_FRAMES: usize = 1024;
const MAX_THREADS: usize = 8192;
const MAX_INTERPRETERS: usize = 256;

/// One Python frame: which code, at which line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub code: CodeId,
    pub line: u32,
}

/// The GIL as read from its struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilState {
    /// Address of the struct: futex waits inside `[address, address + size)` are GIL waits.
    pub address: u64,
    pub size: u64,
    pub locked: bool,
    /// `last_holder`: the holder when `locked`, the previous holder otherwise.
    pub last_holder: u64,
    pub switch_number: u64,
    pub interval_us: u64,
    /// Free-threaded builds: the `enabled` counter (0 = disabled).
    pub enabled: Option<i32>,
}

impl GilState {
    pub fn holder(&self) -> Option<u64> {
        (self.locked && self.enabled != Some(0)).then_some(self.last_holder)
    }
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.address && addr - self.address < self.size
    }
}

#[derive(Debug, Clone)]
pub struct InterpreterRecord {
    /// Address of the `PyInterpreterState`.
    pub address: u64,
    pub id: i64,
    pub gil: GilState,
}

/// A thread's frames (innermost first), where each lives in the target, and whether the
/// walk stopped before the outermost.
type Stack = (Vec<Frame>, Vec<u64>, bool);

#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub tstate: u64,
    /// `pthread_t`, which `threading.get_ident()` returns.
    pub pthread_id: u64,
    /// Kernel thread id (3.11+ from the thread state; earlier from glibc's `struct pthread`).
    pub tid: Option<i32>,
    /// Index into [`PythonState::interpreters`].
    pub interpreter: usize,
    pub interpreter_address: u64,
    /// 3.13+: the thread state's own "holds the GIL" flag.
    pub holds_gil: Option<bool>,
    /// 3.15+: its "requesting the GIL" flag.
    pub gil_requested: Option<bool>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Where each of `frames` lives in the target (for readers of frame locals).
    pub frame_addresses: Vec<u64>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Default)]
pub struct PythonState {
    pub interpreters: Vec<InterpreterRecord>,
    pub threads: Vec<ThreadRecord>,
}

/// Reads Python state from one target, keeping caches (code objects, the pthread layout)
/// across reads.
pub struct Walker<M> {
    pub mem: M,
    pub runtime: Runtime,
    pub codes: CodeTable,
    tid_offset: Option<u64>,
    tstate_len: usize,
    frame_len: usize,
    /// Addresses seen in the current thread list and stack, kept between reads so the
    /// sampling loop does not allocate them each time (a torn read drops them).
    seen_threads: HashSet<u64>,
    seen_frames: HashSet<u64>,
}

impl<M: RemoteMemory> Walker<M> {
    pub fn new(mem: M, runtime: Runtime) -> Self {
        let tstate_len = tstate_read_len(&runtime.layout);
        let frame_len = frame_read_len(&runtime.layout);
        Walker {
            mem,
            runtime,
            codes: CodeTable::default(),
            tid_offset: None,
            tstate_len,
            frame_len,
            seen_threads: HashSet::new(),
            seen_frames: HashSet::new(),
        }
    }

    /// Where glibc's `struct pthread` keeps the kernel tid (before 3.11), once found.
    pub fn tid_offset(&self) -> Option<u64> {
        self.tid_offset
    }

    /// Sets the tid offset, for replaying a recorded image where /proc cannot be asked.
    pub fn set_tid_offset(&mut self, offset: Option<u64>) {
        self.tid_offset = offset;
    }

    pub fn layout(&self) -> &Layout {
        &self.runtime.layout
    }

    /// Reads every interpreter, GIL and thread; stacks too when `with_frames`.
    pub fn read(&mut self, with_frames: bool) -> Result<PythonState, MemError> {
        let mut state = PythonState::default();
        let offsets = self.runtime.layout.interp.clone();
        let head = self.runtime.address + self.runtime.layout.runtime.interpreters_head;
        let mut interp = self.mem.read_u64(head)?;
        let mut seen = HashSet::new();
        while interp != 0 {
            // A list that loops back is torn, not long.
            if state.interpreters.len() >= MAX_INTERPRETERS || !seen.insert(interp) {
                return Err(MemError::Fault { addr: interp });
            }
            let id = self.mem.read_i64(interp.wrapping_add(offsets.id))?;
            let gil = self.read_gil(interp)?;
            let index = state.interpreters.len();
            state.interpreters.push(InterpreterRecord {
                address: interp,
                id,
                gil,
            });
            self.read_threads(interp, index, with_frames, &mut state.threads)?;
            interp = self.mem.read_u64(interp.wrapping_add(offsets.next))?;
        }
        self.resolve_tids_from_pthreads(&mut state.threads);
        Ok(state)
    }

    /// Reads the GILs of already-walked interpreters again (one read each).
    pub fn reread_gils(
        &self,
        interpreters: &[InterpreterRecord],
    ) -> Result<Vec<InterpreterRecord>, MemError> {
        interpreters
            .iter()
            .map(|i| {
                Ok(InterpreterRecord {
                    gil: self.read_gil_at(i.gil.address)?,
                    ..i.clone()
                })
            })
            .collect()
    }

    fn read_gil(&self, interp: u64) -> Result<GilState, MemError> {
        let layout = &self.runtime.layout;
        let address = match (layout.runtime.gil, layout.interp.gil_ptr) {
            (Some(offset), _) => self.runtime.address + offset,
            (None, Some(ptr)) => self.mem.read_u64(interp.wrapping_add(ptr))?,
            (None, None) => return Err(MemError::Fault { addr: interp }),
        };
        self.read_gil_at(address)
    }

    fn read_gil_at(&self, address: u64) -> Result<GilState, MemError> {
        let g = &self.runtime.layout.gil;
        let bytes = self.mem.read_vec(address, g.size as usize)?;
        let f = Fields::new(address, &bytes);
        Ok(GilState {
            address,
            size: g.size,
            locked: f.i32(g.locked)? == 1,
            last_holder: f.u64(g.last_holder)?,
            switch_number: f.u64(g.switch_number)?,
            interval_us: f.u64(g.interval)?,
            enabled: g.enabled.map(|off| f.i32(off)).transpose()?,
        })
    }

    fn read_threads(
        &mut self,
        interp: u64,
        index: usize,
        with_frames: bool,
        out: &mut Vec<ThreadRecord>,
    ) -> Result<(), MemError> {
        let t = self.runtime.layout.tstate.clone();
        let mut tstate = self
            .mem
            .read_u64(interp.wrapping_add(self.runtime.layout.interp.threads_head))?;
        let mut buf = vec![0u8; self.tstate_len];
        let first = out.len();
        let mut seen = std::mem::take(&mut self.seen_threads);
        seen.clear();
        while tstate != 0 {
            if out.len() - first >= MAX_THREADS || !seen.insert(tstate) {
                return Err(MemError::Fault { addr: tstate });
            }
            self.mem.read(tstate, &mut buf)?;
            let f = Fields::new(tstate, &buf);
            let native = t.native_thread_id.map(|off| f.u64(off)).transpose()?;
            let flags = t.gil_flags;
            let holds_gil = flags
                .map(|g| f.u32(g.holds.word()).map(|w| g.holds.is_set(w)))
                .transpose()?;
            let gil_requested = flags
                .and_then(|g| g.requested)
                .map(|off| f.u32(off).map(|w| w != 0))
                .transpose()?;
            let (frames, frame_addresses, truncated) = if with_frames {
                match self.stack_of(tstate, &f)? {
                    Some(stack) => stack,
                    None => {
                        tstate = f.u64(t.next)?;
                        continue;
                    }
                }
            } else {
                (Vec::new(), Vec::new(), false)
            };
            out.push(ThreadRecord {
                tstate,
                pthread_id: f.u64(t.thread_id)?,
                tid: native
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|&n| n > 0),
                interpreter: index,
                interpreter_address: interp,
                holds_gil,
                gil_requested,
                frames,
                frame_addresses,
                truncated,
            });
            tstate = f.u64(t.next)?;
        }
        self.seen_threads = seen;
        Ok(())
    }

    /// The stack of the thread state at `tstate` (read into `fields`). A stack that faults
    /// is read once more from a fresh copy of the thread state; if it faults again, the
    /// thread is starting or ending (its frames being built or freed) and `None` leaves it
    /// out of this read, rather than failing the read of every thread.
    fn stack_of(&mut self, tstate: u64, fields: &Fields) -> Result<Option<Stack>, MemError> {
        let pointer = self.runtime.layout.tstate.frame;
        let first = self
            .top_frame(fields, &pointer)
            .and_then(|top| self.read_stack(top));
        match first {
            Err(MemError::Fault { .. }) => {}
            other => return other.map(Some),
        }
        let mut buf = vec![0u8; self.tstate_len];
        self.mem.read(tstate, &mut buf)?;
        let again = Fields::new(tstate, &buf);
        match self
            .top_frame(&again, &pointer)
            .and_then(|top| self.read_stack(top))
        {
            Err(MemError::Fault { .. }) => Ok(None),
            other => other.map(Some),
        }
    }

    fn top_frame(&self, tstate: &Fields, pointer: &FramePointer) -> Result<u64, MemError> {
        match *pointer {
            FramePointer::Direct(offset) => tstate.u64(offset),
            FramePointer::ViaCFrame {
                cframe,
                current_frame,
            } => {
                let cframe = tstate.u64(cframe)?;
                if cframe == 0 {
                    Ok(0)
                } else {
                    self.mem.read_u64(cframe.wrapping_add(current_frame))
                }
            }
        }
    }

    /// Walks `previous` links from the innermost frame, skipping C-stack shim frames.
    fn read_stack(&mut self, mut frame: u64) -> Result<Stack, MemError> {
        let mut frames = Vec::new();
        let mut addresses = Vec::new();
        let mut buf = vec![0u8; self.frame_len];
        let mut visited = 0usize;
        let mut seen = std::mem::take(&mut self.seen_frames);
        seen.clear();
        while frame != 0 {
            if !seen.insert(frame) {
                return Err(MemError::Fault { addr: frame });
            }
            if frames.len() >= MAX_FRAMES || visited >= MAX_FRAMES * 2 {
                self.seen_frames = seen;
                return Ok((frames, addresses, true));
            }
            visited += 1;
            self.mem.read(frame, &mut buf)?;
            let f = Fields::new(frame, &buf);
            if let Some(entry) = self.decode_frame(&f)? {
                frames.push(entry);
                addresses.push(frame);
            }
            frame = f.u64(self.runtime.layout.frame.previous)?;
        }
        self.seen_frames = seen;
        Ok((frames, addresses, false))
    }

    fn decode_frame(&mut self, f: &Fields) -> Result<Option<Frame>, MemError> {
        let fl = &self.runtime.layout.frame;
        if let (Some(owner), Some(cstack)) = (fl.owner, fl.owner_cstack)
            && f.u8(owner)? == cstack
        {
            return Ok(None);
        }
        let code_addr = f.u64(fl.code)? & !fl.code_tag_mask;
        if code_addr == 0 {
            return Ok(None);
        }
        let Some(code) = self.codes.lookup(&self.mem, &self.runtime, code_addr)? else {
            return Ok(None);
        };
        let byte_offset = match fl.kind {
            FrameKind::Object {
                lasti_in_code_units,
            } => {
                let lasti = u64::try_from(f.i32(fl.instr)?).unwrap_or(0);
                if lasti_in_code_units {
                    lasti * 2
                } else {
                    lasti
                }
            }
            FrameKind::Interpreter => {
                let instr = f.u64(fl.instr)?;
                let tlbc_index = fl.tlbc_index.map(|off| f.i32(off)).transpose()?;
                let start = self.codes.bytecode_start(
                    &self.mem,
                    &self.runtime,
                    code,
                    code_addr,
                    tlbc_index,
                )?;
                instr.saturating_sub(start)
            }
        };
        let line = self.codes.line(&self.runtime, code, byte_offset);
        Ok(Some(Frame { code, line }))
    }

    /// Before 3.11 the thread state has only the `pthread_t`: the kernel tid sits at a fixed
    /// offset in glibc's `struct pthread`, found once by matching against the real tids.
    fn resolve_tids_from_pthreads(&mut self, threads: &mut [ThreadRecord]) {
        if threads.iter().all(|t| t.tid.is_some()) {
            return;
        }
        if self.tid_offset.is_none() {
            self.tid_offset = self.find_tid_offset(threads);
        }
        let Some(offset) = self.tid_offset else {
            return;
        };
        for thread in threads.iter_mut().filter(|t| t.tid.is_none()) {
            thread.tid = self
                .mem
                .read_i32(thread.pthread_id.wrapping_add(offset))
                .ok()
                .filter(|&tid| tid > 0);
        }
    }

    fn find_tid_offset(&self, threads: &[ThreadRecord]) -> Option<u64> {
        let tids = self.runtime_tids();
        if tids.is_empty() || threads.is_empty() {
            return None;
        }
        // glibc's x86-64 `struct pthread` has kept tid at 0x2d0 for years; try it first.
        let candidates = std::iter::once(0x2d0).chain((0..0x1000).step_by(4));
        let pthread_ids: Vec<u64> = threads
            .iter()
            .map(|t| t.pthread_id)
            .filter(|&p| p != 0)
            .collect();
        candidates.into_iter().find(|&offset| {
            pthread_ids.iter().all(|&p| {
                self.mem
                    .read_i32(p.wrapping_add(offset))
                    .is_ok_and(|tid| tids.contains(&tid))
            })
        })
    }

    fn runtime_tids(&self) -> Vec<i32> {
        crate::target::process::list_tids(self.runtime.pid).unwrap_or_default()
    }
}

fn tstate_read_len(layout: &Layout) -> usize {
    let t = &layout.tstate;
    let frame = match t.frame {
        FramePointer::Direct(off) => off,
        FramePointer::ViaCFrame { cframe, .. } => cframe,
    };
    let flags = t
        .gil_flags
        .map_or([0, 0], |g| [g.holds.word(), g.requested.unwrap_or(0)]);
    let offsets = [
        t.next,
        t.interp,
        t.thread_id,
        t.native_thread_id.unwrap_or(0),
        frame,
        flags[0],
        flags[1],
    ];
    offsets.into_iter().max().unwrap_or(0) as usize + 8
}

fn frame_read_len(layout: &Layout) -> usize {
    let fl = &layout.frame;
    let offsets = [
        fl.previous,
        fl.code,
        fl.instr,
        fl.owner.unwrap_or(0),
        fl.tlbc_index.unwrap_or(0),
    ];
    offsets.into_iter().max().unwrap_or(0) as usize + 8
}
