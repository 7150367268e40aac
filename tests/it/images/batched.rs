//! The batched walk: after a first walk has followed every link, the next walks read all
//! thread states in one batch and all stacks in another. They must give exactly the walk
//! that following the links gives, notice a thread list or a stack that changed, and, once
//! warm, read nothing one piece at a time.

use super::flavors::{DEFAULT_314, FT_313, FT_314};
use super::recorded::{Walk, recordings};
use super::synthetic::world;
use gilscope::mem::{MemError, MemoryExt, MemoryImage, Piece, RemoteMemory};
use gilscope::python::attach::Runtime;
use gilscope::python::layout::FramePointer;
use gilscope::python::walker::Walker;
use std::cell::{Cell, RefCell};

/// An image that can change between walks, counting single reads and batches.
struct Counted {
    image: RefCell<MemoryImage>,
    singles: Cell<u64>,
    batches: Cell<u64>,
    pieces: Cell<u64>,
}

impl Counted {
    fn new(image: MemoryImage) -> Self {
        Counted {
            image: RefCell::new(image),
            singles: Cell::new(0),
            batches: Cell::new(0),
            pieces: Cell::new(0),
        }
    }
    fn reset(&self) {
        self.singles.set(0);
        self.batches.set(0);
        self.pieces.set(0);
    }
}

impl RemoteMemory for Counted {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.singles.set(self.singles.get() + 1);
        self.image.borrow().read(addr, buf)
    }
    fn read_pieces(&self, pieces: &mut [Piece], buf: &mut [u8]) -> Result<(), MemError> {
        self.batches.set(self.batches.get() + 1);
        // The image's own piece-by-piece answer, without counting its reads as singles.
        let image = self.image.borrow();
        image.read_pieces(pieces, buf)?;
        self.pieces.set(self.pieces.get() + pieces.len() as u64);
        Ok(())
    }
}

struct Case {
    label: String,
    image: MemoryImage,
    runtime: Runtime,
    /// 3.11+: frames live in data-stack chunks, which the batch reads whole.
    chunks: bool,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (label, recording, image) in recordings() {
        let runtime = recording.runtime(&image).expect("the clean image reads");
        cases.push(Case {
            chunks: recording.version().at_least(11),
            label,
            image,
            runtime,
        });
    }
    for flavor in [&FT_313, &DEFAULT_314, &FT_314] {
        let w = world(flavor, 1);
        cases.push(Case {
            label: format!("synthetic {}", flavor.label),
            runtime: w.builder.runtime(),
            image: w.builder.image,
            // The synthetic thread states have no data stack.
            chunks: false,
        });
    }
    cases
}

fn walk(walker: &mut Walker<&Counted>) -> Walk {
    let state = walker
        .read(true)
        .unwrap_or_else(|e| panic!("walk failed: {e}"));
    Walk::new(&state, &walker.codes)
}

#[test]
fn a_warm_walk_is_two_batches_and_gives_the_same_walk() {
    let cases = cases();
    assert!(cases.len() >= 8, "recorded and synthetic images");
    // Recorded images hold only the pages the recording walk touched; where those include
    // the thread states' data-stack fields, stacks are read a span per thread.
    let mut whole_stacks = Vec::new();
    for case in &cases {
        let label = &case.label;
        let memory = Counted::new(case.image.clone());
        let mut walker = Walker::new(&memory, case.runtime.clone());
        let cold = walk(&mut walker);
        assert!(
            memory.singles.get() > cold.threads.len() as u64,
            "{label}: the first walk follows every link"
        );
        for round in 0..3 {
            memory.reset();
            let warm = walk(&mut walker);
            assert_eq!(warm, cold, "{label}: warm walk {round}");
            assert_eq!(memory.singles.get(), 0, "{label}: single reads when warm");
            // Thread states, then stacks, then (before 3.11) the tids in `struct pthread`.
            assert!(
                memory.batches.get() <= 3,
                "{label}: {} batches",
                memory.batches.get()
            );
            if case.chunks && round == 0 {
                // The runtime's head, per interpreter its GIL and four words, each thread
                // state; then per thread its thread state again (where its stack starts
                // now), its data-stack span and (3.11-3.12) its `_PyCFrame`: no piece per
                // frame.
                let threads = cold.threads.len() as u64;
                let most = 1 + 5 * cold.interpreters.len() as u64 + 4 * threads;
                let frames: u64 = cold.threads.iter().map(|t| t.frames.len() as u64).sum();
                assert!(frames > 2 * threads, "{label}: the stacks are deep enough");
                let pieces = memory.pieces.get();
                eprintln!("{label}: {pieces} pieces for {threads} threads and {frames} frames");
                if pieces <= most {
                    whole_stacks.push(label.clone());
                }
            }
        }
    }
    assert!(
        whole_stacks.len() >= 2,
        "data-stack spans read whole only in {whole_stacks:?}"
    );
}

#[test]
fn a_thread_that_leaves_the_list_is_noticed() {
    for case in cases() {
        let label = &case.label;
        let memory = Counted::new(case.image.clone());
        let mut walker = Walker::new(&memory, case.runtime.clone());
        let before = walk(&mut walker);
        assert!(before.threads.len() >= 3, "{label}");
        // Unlink a thread state that follows another in its interpreter's list.
        let next = case.runtime.layout.tstate.next;
        let (first, second) = before
            .threads
            .windows(2)
            .map(|w| (w[0].tstate, w[1].tstate))
            .find(|&(a, b)| case.image.read_u64(a + next) == Ok(b))
            .unwrap_or_else(|| panic!("{label}: no two linked thread states"));
        let after_second = case.image.read_u64(second + next).unwrap();
        memory
            .image
            .borrow_mut()
            .write_u64(first + next, after_second);
        let after = walk(&mut walker);
        let fresh_memory = Counted::new(memory.image.borrow().clone());
        let fresh = walk(&mut Walker::new(&fresh_memory, case.runtime.clone()));
        assert_eq!(after, fresh, "{label}: a warm walk after the change");
        assert_eq!(after.threads.len(), before.threads.len() - 1, "{label}");
        assert!(after.threads.iter().all(|t| t.tstate != second), "{label}");
    }
}

#[test]
fn a_stack_that_moves_is_read_again() {
    for case in cases() {
        let label = &case.label;
        let memory = Counted::new(case.image.clone());
        let mut walker = Walker::new(&memory, case.runtime.clone());
        let before = walk(&mut walker);
        let layout = &case.runtime.layout;
        // Pop the innermost frame of the deepest stack: its thread now runs the caller.
        let deepest = before
            .threads
            .iter()
            .max_by_key(|t| t.frames.len())
            .unwrap();
        assert!(deepest.frames.len() >= 2, "{label}");
        let top_pointer = match layout.tstate.frame {
            FramePointer::Direct(offset) => deepest.tstate + offset,
            FramePointer::ViaCFrame {
                cframe,
                current_frame,
            } => case.image.read_u64(deepest.tstate + cframe).unwrap() + current_frame,
        };
        let top = case.image.read_u64(top_pointer).unwrap();
        let caller = case.image.read_u64(top + layout.frame.previous).unwrap();
        memory.image.borrow_mut().write_u64(top_pointer, caller);
        let after = walk(&mut walker);
        let fresh_memory = Counted::new(memory.image.borrow().clone());
        let fresh = walk(&mut Walker::new(&fresh_memory, case.runtime.clone()));
        assert_eq!(after, fresh, "{label}: a warm walk after the change");
        let thread = after
            .threads
            .iter()
            .find(|t| t.tstate == deepest.tstate)
            .unwrap();
        assert!(thread.frames.len() < deepest.frames.len(), "{label}");
    }
}

#[test]
fn a_thread_whose_stack_faults_is_left_out() {
    // An address no image maps: the thread's innermost frame is being freed.
    const UNMAPPED: u64 = 0x7ead_0000_0000;
    for case in cases() {
        let label = &case.label;
        let memory = Counted::new(case.image.clone());
        let mut walker = Walker::new(&memory, case.runtime.clone());
        let before = walk(&mut walker);
        let layout = &case.runtime.layout;
        let victim = before
            .threads
            .iter()
            .find(|t| !t.frames.is_empty())
            .unwrap_or_else(|| panic!("{label}: a thread with frames"));
        let top_pointer = match layout.tstate.frame {
            FramePointer::Direct(offset) => victim.tstate + offset,
            FramePointer::ViaCFrame {
                cframe,
                current_frame,
            } => case.image.read_u64(victim.tstate + cframe).unwrap() + current_frame,
        };
        let top = case.image.read_u64(top_pointer).unwrap();
        assert!(case.image.read_u64(UNMAPPED).is_err(), "{label}");
        memory.image.borrow_mut().write_u64(top_pointer, UNMAPPED);
        let others: Vec<_> = before
            .threads
            .iter()
            .filter(|t| t.tstate != victim.tstate)
            .cloned()
            .collect();
        // Warm (the batch) and cold (following every link) alike: the other threads are
        // read as before, and the walk does not fail.
        let warm = walk(&mut walker);
        assert_eq!(warm.threads, others, "{label}: warm walk");
        assert_eq!(warm.interpreters, before.interpreters, "{label}");
        let fresh_memory = Counted::new(memory.image.borrow().clone());
        let cold = walk(&mut Walker::new(&fresh_memory, case.runtime.clone()));
        assert_eq!(cold, warm, "{label}: cold walk");
        // Once its stack reads again, the thread is back.
        memory.image.borrow_mut().write_u64(top_pointer, top);
        assert_eq!(walk(&mut walker), before, "{label}: after");
    }
}
