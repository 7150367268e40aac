//! The interpreters and thread states of the last walk, kept as a list of addresses so the
//! next walk reads them all in one batch (one process_vm_readv on a live target) instead of
//! one read per link. Each batch is checked against its own links: the runtime's head, each
//! interpreter's `next`, `threads.head` and GIL pointer, each thread state's `next`. Any
//! difference (a thread started or ended) sends the walker back to following the pointers,
//! which builds the list again.

use super::attach::Runtime;
use super::layout::Layout;
use crate::mem::{Fields, MemError, Piece, RemoteMemory};

/// One interpreter of the cached list.
#[derive(Debug, Clone, Copy)]
pub(super) struct CachedInterp {
    pub address: u64,
    /// Its GIL struct (read through `ceval.gil` from 3.12).
    pub gil: u64,
    /// Its thread states: `ThreadList::tstates[first..end]`.
    pub first: usize,
    pub end: usize,
}

/// Where each piece of the batch landed: `pieces[0]` is the runtime's head, then per
/// interpreter its GIL and the words listed in [`InterpWord`], then its thread states.
#[derive(Debug, Default)]
pub(super) struct ThreadList {
    pub interps: Vec<CachedInterp>,
    pub tstates: Vec<u64>,
    /// How much of each thread state to read: the whole span, or without the data-stack
    /// fields where those could not be read.
    pub tstate_lens: Vec<usize>,
    pub pieces: Vec<Piece>,
    pub bytes: Vec<u8>,
    /// Index into `pieces` of each interpreter's GIL (its words follow it).
    interp_pieces: Vec<usize>,
    /// Index into `pieces` of each thread state, in `tstates` order.
    tstate_pieces: Vec<usize>,
}

/// The words of `PyInterpreterState` a batch reads, each its own piece after the GIL's
/// (a span from `id` to `ceval.gil` would be hundreds of bytes, mostly unused).
#[derive(Debug, Clone, Copy)]
pub(super) enum InterpWord {
    Id = 1,
    Next,
    ThreadsHead,
    /// 3.12+: `ceval.gil`.
    GilPtr,
}

fn interp_words(layout: &Layout) -> [(InterpWord, Option<u64>); 4] {
    let i = &layout.interp;
    [
        (InterpWord::Id, Some(i.id)),
        (InterpWord::Next, Some(i.next)),
        (InterpWord::ThreadsHead, Some(i.threads_head)),
        (InterpWord::GilPtr, i.gil_ptr),
    ]
}

/// How many bytes of the GIL struct a batch reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spans {
    pub gil: usize,
}

impl Spans {
    pub fn new(layout: &Layout) -> Self {
        Spans {
            gil: (layout.gil.size as usize).min(super::walker::MAX_GIL_READ),
        }
    }
}

impl ThreadList {
    pub fn is_empty(&self) -> bool {
        self.interps.is_empty()
    }

    pub fn clear(&mut self) {
        self.interps.clear();
        self.tstates.clear();
        self.tstate_lens.clear();
    }

    /// Reads every cached structure in one batch. Returns whether the batch still
    /// describes one consistent list (then [`ThreadList::interp_bytes`] and friends hold it).
    pub fn read_batch(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        spans: Spans,
    ) -> Result<bool, MemError> {
        self.pieces.clear();
        self.interp_pieces.clear();
        self.tstate_pieces.clear();
        let mut at = 0usize;
        let mut push = |pieces: &mut Vec<Piece>, addr: u64, len: usize| {
            pieces.push(Piece::new(addr, at, len));
            at += len;
            pieces.len() - 1
        };
        let head = runtime.address + runtime.layout.runtime.interpreters_head;
        push(&mut self.pieces, head, 8);
        let words = interp_words(&runtime.layout);
        for interp in &self.interps {
            self.interp_pieces
                .push(push(&mut self.pieces, interp.gil, spans.gil));
            for (_, offset) in words {
                // A word the layout lacks is read as an empty piece, to keep the order.
                match offset {
                    Some(offset) => push(&mut self.pieces, interp.address.wrapping_add(offset), 8),
                    None => push(&mut self.pieces, interp.address, 0),
                };
            }
            for at in interp.first..interp.end {
                let (tstate, len) = (self.tstates[at], self.tstate_lens[at]);
                self.tstate_pieces.push(push(&mut self.pieces, tstate, len));
            }
        }
        self.bytes.resize(at, 0);
        mem.read_pieces(&mut self.pieces, &mut self.bytes)?;
        Ok(self.consistent(runtime))
    }

    fn consistent(&self, runtime: &Runtime) -> bool {
        let layout = &runtime.layout;
        let word = |index: usize, offset: u64| {
            let piece = &self.pieces[index];
            piece
                .bytes(&self.bytes)
                .and_then(|b| Fields::new(piece.addr, b).u64(offset).ok())
        };
        let first = self.interps.first().map_or(0, |i| i.address);
        if word(0, 0) != Some(first) {
            return false;
        }
        for (n, interp) in self.interps.iter().enumerate() {
            let next = self.interps.get(n + 1).map_or(0, |i| i.address);
            if self.interp_word(n, InterpWord::Next) != Some(next) {
                return false;
            }
            if layout.interp.gil_ptr.is_some()
                && self.interp_word(n, InterpWord::GilPtr) != Some(interp.gil)
            {
                return false;
            }
            if !self.pieces[self.interp_pieces[n]].ok {
                return false;
            }
            let head = self.tstates[interp.first..interp.end]
                .first()
                .copied()
                .unwrap_or(0);
            if self.interp_word(n, InterpWord::ThreadsHead) != Some(head) {
                return false;
            }
            for index in interp.first..interp.end {
                let next = if index + 1 < interp.end {
                    self.tstates[index + 1]
                } else {
                    0
                };
                if word(self.tstate_pieces[index], layout.tstate.next) != Some(next) {
                    return false;
                }
            }
        }
        true
    }

    /// A word of interpreter `n` from the latest batch.
    pub fn interp_word(&self, n: usize, word: InterpWord) -> Option<u64> {
        let piece = &self.pieces[self.interp_pieces[n] + word as usize];
        Some(u64::from_le_bytes(
            piece.bytes(&self.bytes)?.try_into().ok()?,
        ))
    }

    /// The bytes of interpreter `n`'s GIL from the latest batch.
    pub fn gil_bytes(&self, n: usize) -> &[u8] {
        self.pieces[self.interp_pieces[n]]
            .bytes(&self.bytes)
            .unwrap_or(&[])
    }

    /// The bytes of thread state `index` (into `tstates`), from the latest consistent batch.
    pub fn tstate_bytes(&self, index: usize) -> &[u8] {
        self.pieces[self.tstate_pieces[index]]
            .bytes(&self.bytes)
            .unwrap_or(&[])
    }
}
