//! One version-agnostic walk over a CPython runtime: interpreters, their GILs, thread
//! states and Python stacks. Every loop is bounded; a read that fails mid-walk makes the
//! whole read fail, so a torn structure is dropped rather than half-reported.

use super::attach::Runtime;
use super::code::{CodeId, CodeTable};
use super::layout::{FramePointer, Layout};
use super::stacks::{Context, StackReader, StackStart, datastack_offset};
use super::threads::{CachedInterp, InterpWord, Spans, ThreadList};
use crate::mem::{Fields, MemError, MemoryExt, Piece, RemoteMemory};
use crate::model::python::GilMode;
use rustc_hash::FxHashSet;

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
    /// Whether the GIL is in force: always on a default build; a free-threaded build runs
    /// without it, or switches it on for a while (`enabled` counts who asked for it).
    pub fn mode(&self) -> GilMode {
        match self.enabled {
            None | Some(i32::MAX) => GilMode::Enabled,
            Some(0) => GilMode::Disabled,
            Some(_) => GilMode::Transient,
        }
    }

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

/// Reads Python state from one target, keeping caches (code objects, the pthread layout,
/// the addresses of the last walk) and buffers across reads.
pub struct Walker<M> {
    pub mem: M,
    pub runtime: Runtime,
    pub codes: CodeTable,
    tid_offset: Option<u64>,
    /// Bytes of a thread state read: up to its last field used.
    tstate_len: usize,
    /// The same without the data-stack fields, for when those cannot be read.
    tstate_min_len: usize,
    frame_len: usize,
    /// Offset of `PyThreadState.datastack_chunk` (3.11+).
    datastack: Option<u64>,
    list: ThreadList,
    spans: Spans,
    starts: Vec<StackStart>,
    stacks: StackReader,
    /// Addresses seen in the current list, kept between reads so the sampling loop does
    /// not allocate them each time.
    seen_threads: FxHashSet<u64>,
    tid_pieces: Vec<Piece>,
    tid_bytes: Vec<u8>,
    /// The GILs' and the GIL flags' second read, kept between samples.
    reread_pieces: Vec<Piece>,
    reread_bytes: Vec<u8>,
}

impl<M: RemoteMemory> Walker<M> {
    pub fn new(mem: M, runtime: Runtime) -> Self {
        let datastack = datastack_offset(&runtime, &mem);
        let tstate_min_len = tstate_read_len(&runtime.layout);
        let tstate_len = datastack.map_or(tstate_min_len, |offset| {
            tstate_min_len.max(offset as usize + 16)
        });
        let frame_len = frame_read_len(&runtime.layout);
        let spans = Spans::new(&runtime.layout);
        Walker {
            mem,
            runtime,
            codes: CodeTable::default(),
            tid_offset: None,
            tstate_len,
            tstate_min_len,
            frame_len,
            datastack,
            list: ThreadList::default(),
            spans,
            starts: Vec::new(),
            stacks: StackReader::default(),
            seen_threads: FxHashSet::default(),
            tid_pieces: Vec::new(),
            tid_bytes: Vec::new(),
            reread_pieces: Vec::new(),
            reread_bytes: Vec::new(),
        }
    }

    /// Reads every code object again when next seen. Code read while an interpreter
    /// starts (start-up modules, soon freed) may be named at an address that later holds
    /// other code; the sampler calls this once the interpreter has had time to start.
    pub fn reread_code(&mut self) {
        self.codes.forget_addresses();
        self.stacks.forget_history();
    }

    /// Whether the last walk found a frame that moved since the walk before: proof that
    /// the target ran in between (`false` after a walk without stacks).
    pub fn stacks_moved(&self) -> bool {
        self.stacks.moved()
    }

    /// Where glibc's `struct pthread` keeps the kernel tid (before 3.11), once found.
    pub fn tid_offset(&self) -> Option<u64> {
        self.tid_offset
    }

    /// Sets the tid offset (a replayed image has no /proc to calibrate it against).
    pub fn set_tid_offset(&mut self, offset: Option<u64>) {
        self.tid_offset = offset;
    }

    pub fn layout(&self) -> &Layout {
        &self.runtime.layout
    }

    /// Reads every interpreter, GIL and thread; stacks too when `with_frames`.
    pub fn read(&mut self, with_frames: bool) -> Result<PythonState, MemError> {
        let mut state = PythonState::default();
        self.read_into(with_frames, &mut state)?;
        Ok(state)
    }

    /// [`Walker::read`] into `state`, reusing its vectors. On a live target a walk is
    /// normally two process_vm_readv calls: every interpreter, GIL and thread state at the
    /// addresses the last walk found (checked by their links), then every stack.
    pub fn read_into(
        &mut self,
        with_frames: bool,
        state: &mut PythonState,
    ) -> Result<(), MemError> {
        self.read_threads_into(state)?;
        if with_frames {
            self.read_stacks_into(state)
        } else {
            self.skip_stacks(state);
            Ok(())
        }
    }

    /// Every interpreter, GIL and thread state, without stacks: the first half of
    /// [`Walker::read_into`]. [`Walker::read_stacks_into`] or [`Walker::skip_stacks`]
    /// finishes the walk.
    pub fn read_threads_into(&mut self, state: &mut PythonState) -> Result<(), MemError> {
        let read = self.read_threads(state);
        if read.is_err() {
            // A failed walk leaves no threads behind: they would name interpreters it has
            // cleared, and the next sample reads the last walk's threads first.
            state.interpreters.clear();
            state.threads.clear();
        }
        read
    }

    fn read_threads(&mut self, state: &mut PythonState) -> Result<(), MemError> {
        state.interpreters.clear();
        let consistent =
            !self.list.is_empty() && self.list.read_batch(&self.mem, &self.runtime, self.spans)?;
        if consistent {
            self.fill_from_batch(state)?;
        } else if let Err(e) = self.follow_links(state) {
            // A half-built list must not be taken for the next walk's batch.
            self.list.clear();
            return Err(e);
        }
        self.resolve_tids_from_pthreads(&mut state.threads);
        Ok(())
    }

    /// Every thread's stack, in one batch laid out from where [`Walker::read_threads_into`]
    /// found the stacks, and walked from a copy of each thread state read in that batch
    /// (the stacks may have moved since). A thread whose stack faults is read from a new
    /// copy of its thread state.
    pub fn read_stacks_into(&mut self, state: &mut PythonState) -> Result<(), MemError> {
        let mut cx = Context {
            mem: &self.mem,
            runtime: &self.runtime,
            codes: &mut self.codes,
            frame_len: self.frame_len,
            tstate_len: self.tstate_len,
            datastack: self.datastack,
        };
        let (layout, mem) = (&self.runtime.layout, &self.mem);
        let (datastack, len, min_len) = (self.datastack, self.tstate_len, self.tstate_min_len);
        let fresh = |tstate| fresh_start(mem, layout, tstate, datastack, len, min_len);
        self.stacks
            .read(&mut cx, &self.starts, &mut state.threads, fresh)
    }

    /// Finishes a walk without stacks: every thread's frames are left empty.
    pub fn skip_stacks(&mut self, state: &mut PythonState) {
        self.stacks.clear_moved();
        for thread in &mut state.threads {
            thread.frames.clear();
            thread.truncated = false;
        }
    }

    /// Fills `state` from the batch the cached list just read.
    fn fill_from_batch(&mut self, state: &mut PythonState) -> Result<(), MemError> {
        let mut count = 0;
        self.starts.clear();
        for (index, interp) in self.list.interps.iter().enumerate() {
            let gil_bytes = self.list.gil_bytes(index);
            let gil = gil_from(&self.runtime.layout, &Fields::new(interp.gil, gil_bytes))?;
            let id = self.list.interp_word(index, InterpWord::Id);
            state.interpreters.push(InterpreterRecord {
                address: interp.address,
                id: id.ok_or(MemError::Fault {
                    addr: interp.address,
                })? as i64,
                gil,
            });
            for at in interp.first..interp.end {
                let tstate = self.list.tstates[at];
                let f = Fields::new(tstate, self.list.tstate_bytes(at));
                self.starts.push(StackStart::from_tstate(
                    &f,
                    &self.runtime.layout,
                    self.datastack,
                )?);
                let record = thread_record(&self.runtime.layout, &f, index, interp.address)?;
                put_thread(&mut state.threads, count, record);
                count += 1;
            }
        }
        state.threads.truncate(count);
        Ok(())
    }

    /// Follows every link one read at a time, and remembers the addresses for the next
    /// walk's batch.
    fn follow_links(&mut self, state: &mut PythonState) -> Result<(), MemError> {
        self.list.clear();
        self.starts.clear();
        let offsets = self.runtime.layout.interp.clone();
        let head = self.runtime.address + self.runtime.layout.runtime.interpreters_head;
        let mut interp = self.mem.read_u64(head)?;
        let mut count = 0;
        while interp != 0 {
            // A list that loops back is torn, not long.
            if self.list.interps.len() >= MAX_INTERPRETERS
                || self.list.interps.iter().any(|i| i.address == interp)
            {
                return Err(MemError::Fault { addr: interp });
            }
            let id = self.mem.read_i64(interp.wrapping_add(offsets.id))?;
            let gil_address = self.gil_address(interp)?;
            let gil = self.read_gil_at(gil_address)?;
            let index = state.interpreters.len();
            state.interpreters.push(InterpreterRecord {
                address: interp,
                id,
                gil,
            });
            let first = self.list.tstates.len();
            self.follow_threads(interp, index, state, &mut count)?;
            self.list.interps.push(CachedInterp {
                address: interp,
                gil: gil_address,
                first,
                end: self.list.tstates.len(),
            });
            interp = self.mem.read_u64(interp.wrapping_add(offsets.next))?;
        }
        state.threads.truncate(count);
        Ok(())
    }

    fn follow_threads(
        &mut self,
        interp: u64,
        index: usize,
        state: &mut PythonState,
        count: &mut usize,
    ) -> Result<(), MemError> {
        let layout = &self.runtime.layout;
        let mut tstate = self
            .mem
            .read_u64(interp.wrapping_add(layout.interp.threads_head))?;
        let mut buf = std::mem::take(&mut self.list.bytes);
        let first = self.list.tstates.len();
        self.seen_threads.clear();
        while tstate != 0 {
            if self.list.tstates.len() - first >= MAX_THREADS || !self.seen_threads.insert(tstate) {
                return Err(MemError::Fault { addr: tstate });
            }
            // The data-stack fields are an extra; without them frames are read one by one.
            buf.resize(self.tstate_len, 0);
            let datastack = match self.mem.read(tstate, &mut buf) {
                Ok(()) => self.datastack,
                Err(MemError::Fault { .. }) if self.tstate_min_len < self.tstate_len => {
                    buf.truncate(self.tstate_min_len);
                    self.mem.read(tstate, &mut buf)?;
                    None
                }
                Err(e) => return Err(e),
            };
            self.list.tstate_lens.push(buf.len());
            let f = Fields::new(tstate, &buf);
            self.starts
                .push(StackStart::from_tstate(&f, layout, datastack)?);
            let record = thread_record(layout, &f, index, interp)?;
            put_thread(&mut state.threads, *count, record);
            *count += 1;
            self.list.tstates.push(tstate);
            tstate = f.u64(layout.tstate.next)?;
        }
        self.list.bytes = buf;
        Ok(())
    }

    /// Reads the GILs of already-walked interpreters again.
    pub fn reread_gils(
        &mut self,
        interpreters: &[InterpreterRecord],
    ) -> Result<Vec<InterpreterRecord>, MemError> {
        let mut records = Vec::with_capacity(interpreters.len());
        self.reread_gils_into(
            interpreters,
            None,
            &mut Vec::new(),
            &mut records,
            &mut Vec::new(),
            |_| (),
        )?;
        Ok(records)
    }

    /// [`Walker::reread_gils`] into `records`, also handing `inspect` the bytes of each GIL
    /// struct as read, for what else the struct holds (the C library's condition variables
    /// and mutexes): the same read, so the same instant. Its answers go to `seen`.
    ///
    /// With `threads`, their GIL flags (3.13+) are read again in the same read too, so that
    /// the flags and the GIL struct describe one instant (a thread can take and drop the
    /// GIL many times between the walk and this read). `steady` then says, per thread,
    /// whether they read as they did at the walk; a thread whose flags cannot be read keeps
    /// the walk's. All three vectors are cleared first.
    pub fn reread_gils_into<T>(
        &mut self,
        interpreters: &[InterpreterRecord],
        threads: Option<&mut [ThreadRecord]>,
        steady: &mut Vec<bool>,
        records: &mut Vec<InterpreterRecord>,
        seen: &mut Vec<T>,
        mut inspect: impl FnMut(&[u8]) -> T,
    ) -> Result<(), MemError> {
        records.clear();
        seen.clear();
        steady.clear();
        let gil_len = (self.runtime.layout.gil.size as usize).min(MAX_GIL_READ);
        let flags = self.runtime.layout.tstate.gil_flags;
        let flag_span = flags.map(|f| {
            let holds = f.holds.word();
            let start = f.requested.map_or(holds, |r| r.min(holds));
            let end = f.requested.map_or(holds, |r| r.max(holds)) + 4;
            (start, (end - start) as usize)
        });
        let pieces = &mut self.reread_pieces;
        pieces.clear();
        let mut at = 0;
        for i in interpreters {
            pieces.push(Piece::new(i.gil.address, at, gil_len));
            at += gil_len;
        }
        if let (Some(threads), Some((start, len))) = (threads.as_deref(), flag_span) {
            for t in threads {
                pieces.push(Piece::new(t.tstate + start, at, len));
                at += len;
            }
        }
        let buf = &mut self.reread_bytes;
        buf.clear();
        buf.resize(at, 0);
        self.mem.read_pieces(pieces, buf)?;
        for (i, piece) in interpreters.iter().zip(pieces.iter()) {
            let bytes = piece.bytes(buf).ok_or(MemError::Fault {
                addr: i.gil.address,
            })?;
            records.push(InterpreterRecord {
                gil: gil_from(&self.runtime.layout, &Fields::new(i.gil.address, bytes))?,
                ..i.clone()
            });
            seen.push(inspect(bytes));
        }
        let (Some(threads), Some(flags), Some((start, _))) = (threads, flags, flag_span) else {
            return Ok(());
        };
        for (thread, piece) in threads.iter_mut().zip(&pieces[interpreters.len()..]) {
            let before = (thread.holds_gil, thread.gil_requested);
            if let Some(bytes) = piece.bytes(buf) {
                let fields = Fields::new(thread.tstate + start, bytes);
                let word = |offset: u64| fields.u32(offset - start).ok();
                if let Some(w) = word(flags.holds.word()) {
                    thread.holds_gil = Some(flags.holds.is_set(w));
                }
                if let Some(w) = flags.requested.and_then(word) {
                    thread.gil_requested = Some(w != 0);
                }
            }
            steady.push(before == (thread.holds_gil, thread.gil_requested));
        }
        Ok(())
    }

    fn gil_address(&self, interp: u64) -> Result<u64, MemError> {
        let layout = &self.runtime.layout;
        match (layout.runtime.gil, layout.interp.gil_ptr) {
            (Some(offset), _) => Ok(self.runtime.address + offset),
            (None, Some(ptr)) => self.mem.read_u64(interp.wrapping_add(ptr)),
            (None, None) => Err(MemError::Fault { addr: interp }),
        }
    }

    fn read_gil_at(&self, address: u64) -> Result<GilState, MemError> {
        let mut buf = [0u8; MAX_GIL_READ];
        let bytes = self.read_gil_bytes(address, &mut buf)?;
        gil_from(&self.runtime.layout, &Fields::new(address, bytes))
    }

    /// The GIL struct at `address`, up to its size (at most [`MAX_GIL_READ`] bytes).
    fn read_gil_bytes<'b>(
        &self,
        address: u64,
        buf: &'b mut [u8; MAX_GIL_READ],
    ) -> Result<&'b [u8], MemError> {
        let len = (self.runtime.layout.gil.size as usize).min(MAX_GIL_READ);
        self.mem.read(address, &mut buf[..len])?;
        Ok(&buf[..len])
    }

    /// Before 3.11 the thread state has only the `pthread_t`: the kernel tid sits at a fixed
    /// offset in glibc's `struct pthread`, found once by [`Walker::calibrate_tids`].
    fn resolve_tids_from_pthreads(&mut self, threads: &mut [ThreadRecord]) {
        if threads.iter().all(|t| t.tid.is_some()) {
            return;
        }
        let Some(offset) = self.tid_offset else {
            return;
        };
        // All of them in one batch.
        self.tid_pieces.clear();
        for (n, thread) in threads.iter().filter(|t| t.tid.is_none()).enumerate() {
            let addr = thread.pthread_id.wrapping_add(offset);
            self.tid_pieces.push(Piece::new(addr, n * 4, 4));
        }
        self.tid_bytes.resize(self.tid_pieces.len() * 4, 0);
        if self
            .mem
            .read_pieces(&mut self.tid_pieces, &mut self.tid_bytes)
            .is_err()
        {
            return;
        }
        let pieces = self.tid_pieces.iter();
        for (thread, piece) in threads.iter_mut().filter(|t| t.tid.is_none()).zip(pieces) {
            thread.tid = piece
                .bytes(&self.tid_bytes)
                .and_then(|b| Some(i32::from_le_bytes(b.try_into().ok()?)))
                .filter(|&tid| tid > 0);
        }
    }

    /// Whether the walk left threads without a kernel tid that the `struct pthread` offset,
    /// once found, would give them.
    pub fn needs_tid_calibration(&self, threads: &[ThreadRecord]) -> bool {
        self.tid_offset.is_none() && threads.iter().any(|t| t.tid.is_none())
    }

    /// Finds where `struct pthread` keeps the kernel tid by matching the threads' pthreads
    /// against `tids` (the target's real ones, from /proc), then fills the threads' tids.
    pub fn calibrate_tids(&mut self, threads: &mut [ThreadRecord], tids: &[i32]) {
        if self.tid_offset.is_none() {
            self.tid_offset = self.find_tid_offset(threads, tids);
        }
        self.resolve_tids_from_pthreads(threads);
    }

    fn find_tid_offset(&self, threads: &[ThreadRecord], tids: &[i32]) -> Option<u64> {
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
}

/// Where the stack of the thread state at `tstate` starts, from a new copy of it (its
/// stack faulted in the batch). `len` bytes are read, or `min_len` without the data-stack
/// fields when those cannot be.
fn fresh_start<M: RemoteMemory>(
    mem: &M,
    layout: &Layout,
    tstate: u64,
    datastack: Option<u64>,
    len: usize,
    min_len: usize,
) -> Result<StackStart, MemError> {
    let mut buf = vec![0u8; len];
    let datastack = match mem.read(tstate, &mut buf) {
        Ok(()) => datastack,
        Err(MemError::Fault { .. }) if min_len < len => {
            buf.truncate(min_len);
            mem.read(tstate, &mut buf)?;
            None
        }
        Err(e) => return Err(e),
    };
    StackStart::from_tstate(&Fields::new(tstate, &buf), layout, datastack)
}

/// The GIL struct is 208 bytes up to 3.12 and smaller since; a bigger size is a bad table.
pub(super) const MAX_GIL_READ: usize = 512;

fn gil_from(layout: &Layout, f: &Fields) -> Result<GilState, MemError> {
    let g = &layout.gil;
    Ok(GilState {
        address: f.base,
        size: g.size,
        locked: f.i32(g.locked)? == 1,
        last_holder: f.u64(g.last_holder)?,
        switch_number: f.u64(g.switch_number)?,
        interval_us: f.u64(g.interval)?,
        enabled: g.enabled.map(|off| f.i32(off)).transpose()?,
    })
}

/// One thread's record from its thread state's bytes (frames are filled in later). A new
/// field of `PyThreadState` is one line here and one offset in [`tstate_read_len`].
fn thread_record(
    layout: &Layout,
    f: &Fields,
    interpreter: usize,
    interpreter_address: u64,
) -> Result<ThreadRecord, MemError> {
    let t = &layout.tstate;
    let native = t.native_thread_id.map(|off| f.u64(off)).transpose()?;
    let flags = t.gil_flags;
    let holds_gil = flags
        .map(|g| f.u32(g.holds.word()).map(|w| g.holds.is_set(w)))
        .transpose()?;
    let gil_requested = flags
        .and_then(|g| g.requested)
        .map(|off| f.u32(off).map(|w| w != 0))
        .transpose()?;
    Ok(ThreadRecord {
        tstate: f.base,
        pthread_id: f.u64(t.thread_id)?,
        tid: native
            .and_then(|n| i32::try_from(n).ok())
            .filter(|&n| n > 0),
        interpreter,
        interpreter_address,
        holds_gil,
        gil_requested,
        frames: Vec::new(),
        frame_addresses: Vec::new(),
        truncated: false,
    })
}

/// Stores `record` at `threads[index]`, keeping the frame vectors already there.
fn put_thread(threads: &mut Vec<ThreadRecord>, index: usize, mut record: ThreadRecord) {
    match threads.get_mut(index) {
        Some(slot) => {
            record.frames = std::mem::take(&mut slot.frames);
            record.frame_addresses = std::mem::take(&mut slot.frame_addresses);
            *slot = record;
        }
        None => threads.push(record),
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
