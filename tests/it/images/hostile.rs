//! Hostile memory: every recorded and synthetic image, corrupted at random where the walker
//! reads (bits flipped, pointers nulled, aimed at other structures or at themselves, sizes
//! and counts made huge or negative, `_Py_DebugOffsets` words changed), then walked again,
//! with `threading` names and the GIL re-read on top. The walker must never panic, must
//! return Ok or Err quickly, and must never ask for an absurd read (it allocates the
//! buffer of every read first, so that bounds what it allocates).

use super::flavors::{DEFAULT_314, FT_313, FT_314};
use super::recorded::recordings;
use super::synthetic::world;
use gilscope::mem::{MemError, MemoryExt, MemoryImage, RemoteMemory};
use gilscope::python::attach::Runtime;
use gilscope::python::debug_offsets::{DEBUG_OFFSETS_READ_SIZE, layout_from_debug_offsets};
use gilscope::python::layout::FramePointer;
use gilscope::python::names::read_thread_names;
use gilscope::python::walker::Walker;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

const ITERATIONS: usize = 2000;
/// One corrupted walk (names and GIL re-read included) must end within this. Generous:
/// debug builds on a loaded machine; the read budget below is the precise bound.
const MAX_WALK_TIME: Duration = Duration::from_secs(10);
/// The largest read a walk may ask for: `_Py_DebugOffsets` sizes are believed up to
/// 16 MiB (`MAX_STRUCT_SIZE` in debug_offsets.rs), and a thread state or frame is read in
/// one buffer as long as its largest offset; every other read is smaller (bytes objects
/// 1 MiB, dict entries 1.5 MiB).
const MAX_READ: u64 = 16 << 20;
/// Reads one walk may issue. The clean images need a few hundred; a corrupted list that
/// runs to the walker's caps (8192 threads of one interpreter, 2048 frames of one stack)
/// needs tens of thousands. Past this budget every read fails, so a walk that would loop
/// for minutes ends at once and is reported.
const MAX_READS: u64 = 1_000_000;

/// A deterministic xorshift64 stream.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An image to corrupt and how to read it.
struct Case {
    label: String,
    image: MemoryImage,
    runtime: Runtime,
    /// 3.13+: the layout is read again from the (possibly corrupted) image each time.
    debug_offsets: bool,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (label, recording, image) in recordings() {
        let runtime = recording.runtime(&image).expect("the clean image reads");
        cases.push(Case {
            label,
            debug_offsets: recording.version().at_least(13),
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
            debug_offsets: true,
        });
    }
    cases
}

/// Counts what a walk asks of memory; optionally logs every read.
struct Probe<'a> {
    image: &'a MemoryImage,
    reads: Cell<u64>,
    largest: Cell<u64>,
    log: Option<RefCell<Vec<(u64, u64)>>>,
}

impl<'a> Probe<'a> {
    fn new(image: &'a MemoryImage, logging: bool) -> Self {
        Probe {
            image,
            reads: Cell::new(0),
            largest: Cell::new(0),
            log: logging.then(|| RefCell::new(Vec::new())),
        }
    }
}

impl RemoteMemory for Probe<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.reads.set(self.reads.get() + 1);
        if self.reads.get() > MAX_READS {
            return Err(MemError::Fault { addr });
        }
        self.largest.set(self.largest.get().max(buf.len() as u64));
        if let Some(log) = &self.log {
            log.borrow_mut().push((addr, buf.len() as u64));
        }
        self.image.read(addr, buf)
    }
}

/// Everything gilscope reads from a target, as `dump` does: layout (3.13+), a walk with
/// stacks, frame names, the GIL again, thread names, and a second walk with warm caches.
/// Returns whether the walk succeeded.
fn exercise(case: &Case, probe: &Probe) -> bool {
    let mut runtime = case.runtime.clone();
    if case.debug_offsets {
        let Ok(bytes) = probe.read_vec(runtime.address, DEBUG_OFFSETS_READ_SIZE) else {
            return false;
        };
        match layout_from_debug_offsets(&bytes) {
            Ok(layout) => runtime.layout = layout,
            Err(_) => return false,
        }
    }
    let mut walker = Walker::new(probe, runtime);
    let walked = walker.read(true);
    if let Ok(state) = &walked {
        for thread in &state.threads {
            for frame in &thread.frames {
                let _ = walker.codes.frame_info(frame);
            }
        }
        let _ = walker.reread_gils(&state.interpreters);
        let _ = walker
            .runtime
            .python_info(state.interpreters.last().map(|i| i.gil.mode()));
        for interp in &state.interpreters {
            let _ = read_thread_names(probe, &walker.runtime, interp.address);
        }
    }
    let _ = walker.read(false);
    walked.is_ok()
}

/// Overwrites bytes somewhere the clean walk read; returns what it did, and the bytes
/// it replaced so they can be put back.
fn corrupt(
    image: &mut MemoryImage,
    ranges: &[(u64, u64)],
    rng: &mut XorShift,
) -> (String, u64, Vec<u8>) {
    let (start, len) = ranges[rng.below(ranges.len() as u64) as usize];
    let pos = start + rng.below(len);
    let word_at = if pos & !7 >= start { pos & !7 } else { start };
    let word = image.read_u64(word_at).unwrap_or(0);
    let (what, at, bytes): (String, u64, Vec<u8>) = match rng.below(10) {
        0 => {
            let bit = rng.below(8);
            let byte = image.read_u8(pos).unwrap_or(0) ^ (1 << bit);
            (format!("flip bit {bit}"), pos, vec![byte])
        }
        1 => {
            let byte = rng.next() as u8;
            (format!("byte {byte:#x}"), pos, vec![byte])
        }
        2 => ("word 0".into(), word_at, 0u64.to_le_bytes().to_vec()),
        3 => ("word -1".into(), word_at, u64::MAX.to_le_bytes().to_vec()),
        4 => {
            let value = rng.next();
            (
                format!("word {value:#x}"),
                word_at,
                value.to_le_bytes().to_vec(),
            )
        }
        5 => {
            let (other, _) = ranges[rng.below(ranges.len() as u64) as usize];
            (
                format!("pointer to {other:#x}"),
                word_at,
                other.to_le_bytes().to_vec(),
            )
        }
        6 => (
            "pointer to itself".into(),
            word_at,
            start.to_le_bytes().to_vec(),
        ),
        7 => {
            let small = [1, 2, 3, 255, 4096, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
            let value: u64 = small[rng.below(small.len() as u64) as usize];
            (
                format!("word {value:#x}"),
                word_at,
                value.to_le_bytes().to_vec(),
            )
        }
        8 => {
            let deltas = [-4096i64, -16, -8, 8, 16, 4096];
            let delta = deltas[rng.below(deltas.len() as u64) as usize];
            let value = word.wrapping_add_signed(delta);
            (
                format!("word {delta:+}"),
                word_at,
                value.to_le_bytes().to_vec(),
            )
        }
        _ => {
            let ints = [i32::MAX, i32::MIN, -1];
            let value = ints[rng.below(3) as usize];
            (
                format!("int {value}"),
                pos & !3,
                value.to_le_bytes().to_vec(),
            )
        }
    };
    // Only bytes the image has are changed (and put back).
    let Ok(old) = image.read_vec(at, bytes.len()) else {
        return (format!("nothing ({what} off the image)"), at, Vec::new());
    };
    image.write(at, &bytes);
    (format!("{what} at {at:#x}"), at, old)
}

fn seed(label: &str) -> u64 {
    // FNV-1a, so each image gets its own deterministic stream.
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1
}

/// What the corrupted walks of one image did.
#[derive(Default)]
struct Tally {
    failures: Vec<String>,
    slowest: Duration,
    walked: usize,
    most_reads: u64,
    largest_read: u64,
}

/// Runs [`ITERATIONS`] corrupted walks of one image.
fn torture(case: &mut Case) -> Tally {
    let clean = Probe::new(&case.image, true);
    exercise(case, &clean);
    let mut ranges = clean.log.unwrap().into_inner();
    ranges.sort_unstable();
    ranges.dedup();
    ranges.retain(|&(addr, len)| len > 0 && case.image.read_vec(addr, len as usize).is_ok());
    assert!(
        ranges.len() > 50,
        "{}: the clean walk read little",
        case.label
    );

    let mut rng = XorShift(seed(&case.label));
    let mut tally = Tally::default();
    for iteration in 0..ITERATIONS {
        let mut undo = Vec::new();
        let mut done = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let (what, at, old) = corrupt(&mut case.image, &ranges, &mut rng);
            done.push(what);
            undo.push((at, old));
        }
        let probe = Probe::new(&case.image, false);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(case, &probe)));
        let elapsed = started.elapsed();
        let (reads, largest) = (probe.reads.get(), probe.largest.get());
        tally.slowest = tally.slowest.max(elapsed);
        tally.most_reads = tally.most_reads.max(reads);
        tally.largest_read = tally.largest_read.max(largest);
        let context = format!("{} iteration {iteration} ({})", case.label, done.join(", "));
        let failures = &mut tally.failures;
        match outcome {
            Ok(walked) => tally.walked += usize::from(walked),
            Err(_) => failures.push(format!("{context}: panicked")),
        }
        if elapsed > MAX_WALK_TIME {
            failures.push(format!("{context}: took {elapsed:?}"));
        }
        if largest > MAX_READ {
            failures.push(format!("{context}: a read of {largest} bytes"));
        }
        if reads > MAX_READS {
            failures.push(format!("{context}: {reads} reads"));
        }
        for (at, old) in undo.into_iter().rev() {
            case.image.write(at, &old);
        }
    }
    tally
}

#[test]
fn corrupted_images_never_panic_hang_or_read_absurdly() {
    let mut cases = cases();
    assert!(cases.len() >= 4, "no recorded images to corrupt");
    let results: Vec<(String, Tally)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter_mut()
            .map(|case| scope.spawn(move || (case.label.clone(), torture(case))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (label, tally) in results {
        eprintln!(
            "{label}: {ITERATIONS} corrupted walks, {} read through, slowest {:?}, at most \
             {} reads, largest read {} bytes",
            tally.walked, tally.slowest, tally.most_reads, tally.largest_read
        );
        failures.extend(tally.failures.into_iter().take(5));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Corrupted words that close lists into loops: the main interpreter's thread list back to
/// its head, one stack back to its innermost frame, and the interpreter list back to the
/// newest interpreter. Each loop alone is cut by the walker's caps; together they must not
/// multiply into billions of reads.
#[test]
fn loops_in_interpreters_threads_and_frames_are_cut() {
    let w = world(&FT_314, 1);
    let runtime = w.builder.runtime();
    let l = runtime.layout.clone();
    let FramePointer::Direct(current_frame) = l.tstate.frame else {
        unreachable!("3.14 has tstate->current_frame")
    };
    let clean = w.builder.image;
    let top = clean.read_u64(w.tstates[&1003] + current_frame).unwrap();
    let mut outermost = top;
    while let Ok(previous @ 1..) = clean.read_u64(outermost + l.frame.previous) {
        outermost = previous;
    }
    let thread_loop = (w.tstates[&1001] + l.tstate.next, w.tstates[&1004]);
    let frame_loop = (outermost + l.frame.previous, top);
    let interp_loop = (w.main + l.interp.next, w.sub);
    let mut failures = Vec::new();
    for (what, loops) in [
        ("threads", vec![thread_loop]),
        ("frames", vec![frame_loop]),
        ("interpreters", vec![interp_loop]),
        ("threads and frames", vec![thread_loop, frame_loop]),
        ("interpreters and threads", vec![interp_loop, thread_loop]),
    ] {
        let mut image = clean.clone();
        for (at, target) in loops {
            image.write_u64(at, target);
        }
        let probe = Probe::new(&image, false);
        let started = Instant::now();
        let result = Walker::new(&probe, runtime.clone()).read(true);
        let reads = probe.reads.get();
        eprintln!(
            "loop in {what}: {} after {reads} reads, {:?}",
            if result.is_ok() { "Ok" } else { "Err" },
            started.elapsed()
        );
        if reads > MAX_READS {
            failures.push(format!(
                "loop in {what}: still reading after {MAX_READS} reads"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
