//! Every thread's Python stack, read in one batch. From 3.11 a thread's frames sit next to
//! each other in its data stack (`tstate->datastack_chunk` up to `datastack_top`): that
//! span is read whole and the `previous` links are followed inside the copy. Frames
//! elsewhere (generators and coroutines keep theirs in the heap object, deep stacks spill
//! into older chunks, and before 3.11 every frame is a heap object) are read at the
//! addresses the previous walk found them, in the same batch, and one by one only when
//! the stack moved. A frame whose address, code and instruction are those of the previous
//! walk at the same depth is not decoded again.

use super::attach::Runtime;
use super::code::{CodeId, CodeTable};
use super::layout::{FrameKind, FramePointer, Layout};
use super::walker::{Frame, MAX_FRAMES, ThreadRecord};
use crate::mem::{Fields, MemError, Piece, RemoteMemory};
use rustc_hash::{FxHashMap, FxHashSet};

/// A data-stack span larger than this is not read whole (chunks are 16 KiB unless one
/// frame needs more); its frames are read one by one.
const MAX_CHUNK_READ: u64 = 1 << 20;
/// Data-stack spans are read to the end of their last page (the kernel pins whole pages).
const PAGE: u64 = 4096;
/// Per thread, at most this many out-of-chunk frames are read ahead from the last walk.
const MAX_REMEMBERED: usize = 256;

/// Where one thread's stack starts, taken from its thread state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StackStart {
    /// The innermost frame (`Direct`), or the `_PyCFrame` to read it from (3.11-3.12).
    pub frame: u64,
    pub via_cframe: bool,
    /// `[datastack_chunk, datastack_top)`, when known and plausible.
    pub chunk: Option<(u64, u64)>,
}

impl StackStart {
    /// Reads the start of a stack from a thread state's bytes. `datastack` is the offset of
    /// `datastack_chunk` (`datastack_top` follows it), when known.
    pub fn from_tstate(
        f: &Fields,
        layout: &Layout,
        datastack: Option<u64>,
    ) -> Result<Self, MemError> {
        let (frame, via_cframe) = match layout.tstate.frame {
            FramePointer::Direct(offset) => (f.u64(offset)?, false),
            FramePointer::ViaCFrame { cframe, .. } => (f.u64(cframe)?, true),
        };
        let chunk = datastack.and_then(|offset| {
            let start = f.u64(offset).ok()?;
            let top = f.u64(offset + 8).ok()?;
            (start != 0 && top > start && top - start <= MAX_CHUNK_READ).then_some((start, top))
        });
        Ok(StackStart {
            frame,
            via_cframe,
            chunk,
        })
    }
}

/// A frame as read, before its code and line are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawFrame {
    addr: u64,
    code: u64,
    instr: u64,
    tlbc: Option<i32>,
}

/// What one thread's stack looked like at the previous walk.
#[derive(Debug, Default)]
struct History {
    /// Innermost first, like the frames.
    raw: Vec<RawFrame>,
    decoded: Vec<Option<Frame>>,
    /// Frames found outside the data-stack span: read ahead next time.
    outside: Vec<u64>,
    generation: u64,
}

/// Which pieces of the batch belong to one thread.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadPieces {
    /// Its thread state again, read with the stack: where the stack starts now.
    tstate: usize,
    chunk: Option<usize>,
    cframe: Option<usize>,
    /// `pieces[first_ahead..end_ahead]`: frames read ahead at last walk's addresses.
    first_ahead: usize,
    end_ahead: usize,
}

/// Reads stacks; keeps its buffers and each thread's last stack between walks.
#[derive(Debug, Default)]
pub(super) struct StackReader {
    pieces: Vec<Piece>,
    bytes: Vec<u8>,
    threads: Vec<ThreadPieces>,
    history: FxHashMap<u64, History>,
    generation: u64,
    single: Vec<u8>,
    raw: Vec<RawFrame>,
    decoded: Vec<Option<Frame>>,
    outside: Vec<u64>,
    seen: FxHashSet<u64>,
    /// Threads whose stack faulted in the batch, to read again.
    faulted: Vec<usize>,
    /// Some frame differed from the previous walk's (the target ran in between).
    moved: bool,
}

/// What a stack read needs from the walker.
pub(super) struct Context<'a, M> {
    pub mem: &'a M,
    pub runtime: &'a Runtime,
    pub codes: &'a mut CodeTable,
    /// How many bytes of a frame to read (up to its last field used).
    pub frame_len: usize,
    /// How many bytes of a thread state to read, and where its data-stack fields are.
    pub tstate_len: usize,
    pub datastack: Option<u64>,
}

impl StackReader {
    /// Whether the last read found any frame (code, instruction or address) other than
    /// the walk before it did.
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// Forgets every thread's last stack: all frames are decoded afresh.
    pub fn forget_history(&mut self) {
        self.history.clear();
    }

    /// Forgets the last read's [`StackReader::moved`] (a walk without stacks).
    pub fn clear_moved(&mut self) {
        self.moved = false;
    }

    /// Fills `frames` and `truncated` of every thread, `starts[i]` describing `threads[i]`.
    /// A stack that faults is read once more, from the start `fresh` reads from a new copy
    /// of its thread state; if that or the stack faults again, the thread is starting or
    /// ending (its frames being built or freed) and is left out of `threads`, rather than
    /// failing the read of every thread.
    pub fn read<M: RemoteMemory>(
        &mut self,
        cx: &mut Context<M>,
        starts: &[StackStart],
        threads: &mut Vec<ThreadRecord>,
        mut fresh: impl FnMut(u64) -> Result<StackStart, MemError>,
    ) -> Result<(), MemError> {
        self.generation += 1;
        self.moved = false;
        self.plan(cx, starts, threads);
        cx.mem.read_pieces(&mut self.pieces, &mut self.bytes)?;
        self.faulted.clear();
        for (index, thread) in threads.iter_mut().enumerate() {
            // The stack is walked from where it starts now, which may differ from where it
            // started when the thread state was read for the sample: the sampler reads /proc
            // and the GIL in between, and a frame named then may be freed by now.
            let pieces = self.threads[index];
            let start = match self.start_now(cx, pieces, starts[index]) {
                Some(start) => start,
                None => {
                    self.faulted.push(index);
                    continue;
                }
            };
            match self.walk_thread(cx, pieces, start, thread) {
                Err(MemError::Fault { .. }) => self.faulted.push(index),
                other => other?,
            }
        }
        // From the last, so that leaving a thread out keeps the others' indices.
        while let Some(index) = self.faulted.pop() {
            let start = match fresh(threads[index].tstate) {
                Ok(start) => start,
                // Its thread state is gone too: the thread has ended.
                Err(MemError::Fault { .. }) => {
                    threads.remove(index);
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.plan(
                cx,
                std::slice::from_ref(&start),
                std::slice::from_ref(&threads[index]),
            );
            cx.mem.read_pieces(&mut self.pieces, &mut self.bytes)?;
            let pieces = self.threads[0];
            // Moved again since that copy, microseconds ago: walk from that copy, which the
            // batch read matches.
            let start = self.start_now(cx, pieces, start).unwrap_or(start);
            match self.walk_thread(cx, pieces, start, &mut threads[index]) {
                Err(MemError::Fault { .. }) => {
                    threads.remove(index);
                }
                other => other?,
            }
        }
        let generation = self.generation;
        self.history.retain(|_, h| h.generation == generation);
        Ok(())
    }

    /// Lays out the batch: per thread its data-stack span, its `_PyCFrame`'s frame pointer
    /// (3.11-3.12), and the frames the previous walk found outside the span.
    fn plan<M>(&mut self, cx: &Context<M>, starts: &[StackStart], threads: &[ThreadRecord]) {
        self.pieces.clear();
        self.threads.clear();
        let mut at = 0usize;
        let mut push = |pieces: &mut Vec<Piece>, addr: u64, len: usize| {
            pieces.push(Piece::new(addr, at, len));
            at += len;
            pieces.len() - 1
        };
        let current_frame = match cx.runtime.layout.tstate.frame {
            FramePointer::ViaCFrame { current_frame, .. } => current_frame,
            FramePointer::Direct(_) => 0,
        };
        for (start, thread) in starts.iter().zip(threads) {
            let tstate = push(&mut self.pieces, thread.tstate, cx.tstate_len);
            // To the end of the last page: a stack that grew a little since is read too, at
            // no cost in pages.
            let chunk = start.chunk.map(|(lo, hi)| {
                let end = hi.next_multiple_of(PAGE).min(lo + MAX_CHUNK_READ);
                push(&mut self.pieces, lo, (end - lo) as usize)
            });
            let cframe = (start.via_cframe && start.frame != 0)
                .then(|| push(&mut self.pieces, start.frame.wrapping_add(current_frame), 8));
            let first_ahead = self.pieces.len();
            if let Some(history) = self.history.get(&thread.tstate) {
                for &addr in &history.outside {
                    push(&mut self.pieces, addr, cx.frame_len);
                }
            }
            self.threads.push(ThreadPieces {
                tstate,
                chunk,
                cframe,
                first_ahead,
                end_ahead: self.pieces.len(),
            });
        }
        self.bytes.resize(at, 0);
    }

    /// Where a thread's stack starts, from the copy of its thread state read with the
    /// stack; `None` if that copy is unreadable, or names a `_PyCFrame` or a data-stack
    /// span other than the batch read (the stack is then read again on its own).
    fn start_now<M>(
        &self,
        cx: &Context<M>,
        pieces: ThreadPieces,
        planned: StackStart,
    ) -> Option<StackStart> {
        let piece = &self.pieces[pieces.tstate];
        let Some(bytes) = piece.bytes(&self.bytes) else {
            // A thread state read without its data-stack fields (it ends near unmapped
            // memory): its stack starts where the sample's read found it.
            return planned.chunk.is_none().then_some(planned);
        };
        let f = Fields::new(piece.addr, bytes);
        let now = StackStart::from_tstate(&f, &cx.runtime.layout, cx.datastack).ok()?;
        if now.via_cframe && now.frame != planned.frame {
            return None;
        }
        let chunk_read = pieces.chunk.map(|p| {
            (
                self.pieces[p].addr,
                self.pieces[p].addr + self.pieces[p].len as u64,
            )
        });
        match (now.chunk, chunk_read) {
            (None, _) => Some(now),
            (Some((lo, hi)), Some((read_lo, read_hi))) if lo == read_lo && hi <= read_hi => {
                Some(now)
            }
            (Some(_), _) => None,
        }
    }

    fn walk_thread<M: RemoteMemory>(
        &mut self,
        cx: &mut Context<M>,
        pieces: ThreadPieces,
        start: StackStart,
        thread: &mut ThreadRecord,
    ) -> Result<(), MemError> {
        let mut frame = if start.via_cframe {
            match pieces.cframe {
                None => 0,
                Some(piece) => match self.pieces[piece].bytes(&self.bytes) {
                    Some(bytes) => Fields::new(self.pieces[piece].addr, bytes).u64(0)?,
                    None => return Err(MemError::Fault { addr: start.frame }),
                },
            }
        } else {
            start.frame
        };
        // Only the span in use now: what lies above its top is stale.
        let chunk = pieces.chunk.zip(start.chunk).and_then(|(p, (lo, hi))| {
            let bytes = self.pieces[p].bytes(&self.bytes)?;
            Some((lo, bytes.get(..(hi - lo) as usize)?))
        });
        let layout = &cx.runtime.layout;
        self.raw.clear();
        self.outside.clear();
        self.seen.clear();
        let mut visited = 0usize;
        let mut truncated = false;
        while frame != 0 {
            if !self.seen.insert(frame) {
                return Err(MemError::Fault { addr: frame });
            }
            if self.raw.len() >= MAX_FRAMES || visited >= MAX_FRAMES * 2 {
                truncated = true;
                break;
            }
            visited += 1;
            let in_chunk = chunk.and_then(|(lo, bytes)| {
                let offset = usize::try_from(frame.checked_sub(lo)?).ok()?;
                bytes.get(offset..offset.checked_add(cx.frame_len)?)
            });
            let bytes = match in_chunk {
                Some(bytes) => bytes,
                None => {
                    if self.outside.len() < MAX_REMEMBERED {
                        self.outside.push(frame);
                    }
                    let ahead = self.pieces[pieces.first_ahead..pieces.end_ahead]
                        .iter()
                        .find(|p| p.addr == frame)
                        .and_then(|p| p.bytes(&self.bytes));
                    match ahead {
                        Some(bytes) => bytes,
                        None => {
                            self.single.resize(cx.frame_len, 0);
                            cx.mem.read(frame, &mut self.single)?;
                            &self.single
                        }
                    }
                }
            };
            let f = Fields::new(frame, bytes);
            if let Some(raw) = raw_frame(layout, &f)? {
                self.raw.push(raw);
            }
            frame = f.u64(layout.frame.previous)?;
        }
        self.decode_thread(cx, thread)?;
        thread.truncated = truncated;
        Ok(())
    }

    /// Decodes `self.raw` into `self.decoded`, reusing the previous walk's results for the
    /// frames that did not change (compared from the outermost, where stacks stay put),
    /// then makes this walk the thread's history. The frames go to `thread`.
    fn decode_thread<M: RemoteMemory>(
        &mut self,
        cx: &mut Context<M>,
        thread: &mut ThreadRecord,
    ) -> Result<(), MemError> {
        let history = self.history.entry(thread.tstate).or_default();
        let same_from_outermost = self
            .raw
            .iter()
            .rev()
            .zip(history.raw.iter().rev())
            .take_while(|(now, before)| now == before)
            .count();
        let changed = self.raw.len() - same_from_outermost;
        self.moved |= changed > 0 || history.raw.len() != self.raw.len();
        self.decoded.clear();
        for raw in &self.raw[..changed] {
            self.decoded.push(decode(cx, raw)?);
        }
        let kept = history.decoded.len() - same_from_outermost;
        self.decoded.extend_from_slice(&history.decoded[kept..]);
        std::mem::swap(&mut history.raw, &mut self.raw);
        std::mem::swap(&mut history.decoded, &mut self.decoded);
        std::mem::swap(&mut history.outside, &mut self.outside);
        history.generation = self.generation;
        thread.frames.clear();
        thread.frame_addresses.clear();
        for (raw, frame) in history.raw.iter().zip(&history.decoded) {
            if let Some(frame) = frame {
                thread.frames.push(*frame);
                thread.frame_addresses.push(raw.addr);
            }
        }
        Ok(())
    }
}

/// A frame's code, instruction and (free-threaded) bytecode copy; `None` for frames that
/// carry no Python code (C-stack shims, a null code pointer).
fn raw_frame(layout: &Layout, f: &Fields) -> Result<Option<RawFrame>, MemError> {
    let fl = &layout.frame;
    if let (Some(owner), Some(cstack)) = (fl.owner, fl.owner_cstack)
        && f.u8(owner)? == cstack
    {
        return Ok(None);
    }
    let code = f.u64(fl.code)? & !fl.code_tag_mask;
    if code == 0 {
        return Ok(None);
    }
    let instr = match fl.kind {
        FrameKind::Object { .. } => u64::try_from(f.i32(fl.instr)?).unwrap_or(0),
        FrameKind::Interpreter => f.u64(fl.instr)?,
    };
    Ok(Some(RawFrame {
        addr: f.base,
        code,
        instr,
        tlbc: fl.tlbc_index.map(|off| f.i32(off)).transpose()?,
    }))
}

/// Looks up a frame's code object (reading it the first time) and line.
fn decode<M: RemoteMemory>(cx: &mut Context<M>, raw: &RawFrame) -> Result<Option<Frame>, MemError> {
    let Some(code) = cx.codes.lookup(cx.mem, cx.runtime, raw.code)? else {
        return Ok(None);
    };
    let frame = decode_in(cx, raw, code)?;
    if cx.codes.holds_offset(code, frame.1) {
        return Ok(Some(frame.0));
    }
    // The instruction lies outside the cached code: that code object was freed and another
    // now lives at its address.
    cx.codes.forget(raw.code);
    let Some(code) = cx.codes.lookup(cx.mem, cx.runtime, raw.code)? else {
        return Ok(None);
    };
    Ok(Some(decode_in(cx, raw, code)?.0))
}

/// The frame of `raw` as an instance of `code`, with its instruction's byte offset.
fn decode_in<M: RemoteMemory>(
    cx: &mut Context<M>,
    raw: &RawFrame,
    code: CodeId,
) -> Result<(Frame, u64), MemError> {
    let byte_offset = match cx.runtime.layout.frame.kind {
        FrameKind::Object {
            lasti_in_code_units,
        } => {
            if lasti_in_code_units {
                raw.instr * 2
            } else {
                raw.instr
            }
        }
        FrameKind::Interpreter => {
            let start = cx
                .codes
                .bytecode_start(cx.mem, cx.runtime, code, raw.code, raw.tlbc)?;
            raw.instr.saturating_sub(start)
        }
    };
    let line = cx.codes.line(cx.runtime, code, byte_offset);
    Ok((Frame { code, line }, byte_offset))
}

/// The offset of `PyThreadState.datastack_chunk` (`datastack_top` is the next word), from
/// the headers for 3.11 and 3.12 (`tests/it/offsets.rs` checks them with `offsetof`) and
/// from `_Py_DebugOffsets` from 3.13. `None`: frames are read one by one.
pub(super) fn datastack_offset(runtime: &Runtime, mem: &impl RemoteMemory) -> Option<u64> {
    use super::debug_offsets::{DEBUG_OFFSETS_READ_SIZE, DebugOffsets};
    use crate::mem::MemoryExt;
    let layout = &runtime.layout;
    match (layout.version.minor, layout.free_threaded) {
        (..=10, _) => None,
        (11, false) => Some(296),
        (12, false) => Some(232),
        (11 | 12, true) => None,
        _ => {
            let bytes = mem
                .read_vec(runtime.address, DEBUG_OFFSETS_READ_SIZE)
                .ok()?;
            DebugOffsets::parse(&bytes)
                .ok()?
                .get("thread_state", "datastack_chunk")
        }
    }
}
