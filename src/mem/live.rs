//! Live memory of another process through process_vm_readv(2): no ptrace stop needed.

use super::{MemError, Piece, RemoteMemory};
use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most pieces one process_vm_readv(2) call takes (the kernel's `UIO_MAXIOV`).
pub const MAX_PIECES_PER_CALL: usize = 1024;

/// The kernel pins every remote iovec's pages on its own (a lock of the target's address
/// space, a VMA lookup, a page-table walk each): pieces on the same or the next 4 KiB page
/// are read as one remote range. The bytes between them land in a sink, which never
/// exceeds two pages.
const PAGE: u64 = 4096;

pub struct LiveMemory {
    pid: Pid,
    /// process_vm_readv calls made so far (tests and the benchmark count them).
    calls: AtomicU64,
}

impl LiveMemory {
    pub fn new(pid: i32) -> Self {
        LiveMemory {
            pid: Pid::from_raw(pid),
            calls: AtomicU64::new(0),
        }
    }

    /// How many process_vm_readv calls this reader has made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// One process_vm_readv over the pieces `run` names, in that order (ascending
    /// addresses; all of them non-empty and inside `buf`), as many as fit in one call.
    /// Returns how many were in the call and how many of them, from the first, were read
    /// whole; the one after those (if any) faulted.
    fn read_run(
        &self,
        pieces: &[Piece],
        run: &[usize],
        buf: &mut [u8],
    ) -> Result<(usize, usize), MemError> {
        let mut local = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_PIECES_PER_CALL];
        let mut remote = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_PIECES_PER_CALL];
        // Only ever written, by the kernel: left uninitialized (zeroing it was about 1% of a
        // sample).
        let mut sink = [const { MaybeUninit::<u8>::uninit() }; 2 * PAGE as usize];
        let (mut locals, mut remotes) = (0, 0);
        // The remote range being extended: its start and end.
        let mut range: Option<(u64, u64)> = None;
        let base = buf.as_mut_ptr();
        let mut taken = 0;
        for piece in run.iter().map(|&index| &pieces[index]) {
            debug_assert!(piece.at + piece.len <= buf.len());
            let end = piece.addr.saturating_add(piece.len as u64);
            let gap = range.and_then(|(_, range_end)| gap_to_join(range_end, piece.addr));
            let joins = gap.is_some();
            let gap = gap.unwrap_or(0);
            let locals_needed = if gap > 0 { 2 } else { 1 };
            // A new range closes the current one: room for both.
            if locals + locals_needed > MAX_PIECES_PER_CALL
                || (!joins && remotes + 2 > MAX_PIECES_PER_CALL)
            {
                break;
            }
            if joins {
                if gap > 0 {
                    local[locals].write(libc::iovec {
                        iov_base: sink.as_mut_ptr().cast(),
                        iov_len: gap as usize,
                    });
                    locals += 1;
                }
                range = range.map(|(start, _)| (start, end));
            } else {
                if let Some((start, range_end)) = range {
                    remote[remotes].write(iovec_at(start, range_end));
                    remotes += 1;
                }
                range = Some((piece.addr, end));
            }
            local[locals].write(libc::iovec {
                // In bounds: the caller checked `at + len <= buf.len()`.
                iov_base: unsafe { base.add(piece.at) }.cast(),
                iov_len: piece.len,
            });
            locals += 1;
            taken += 1;
        }
        if let Some((start, range_end)) = range {
            remote[remotes].write(iovec_at(start, range_end));
            remotes += 1;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the first `locals` and `remotes` iovecs are initialized; every local one
        // points inside `buf` (borrowed mutably for the call) or into `sink`, and both
        // lists cover the same number of bytes. Overlapping local ranges (pieces that share
        // buffer space, the sink's reuse) only make the kernel write those bytes twice.
        let n = unsafe {
            libc::process_vm_readv(
                self.pid.as_raw(),
                local.as_ptr().cast(),
                locals as libc::c_ulong,
                remote.as_ptr().cast(),
                remotes as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            return match Errno::last() {
                Errno::ESRCH => Err(MemError::ProcessGone),
                Errno::EPERM => Err(MemError::PermissionDenied),
                // EFAULT: the first piece is unreadable; anything else counts as that too.
                _ => Ok((taken, 0)),
            };
        }
        // Where each piece ends in the stream of bytes read: its own bytes, and the gap
        // before it when it joined the range before.
        let read = n as u64;
        let mut stream = 0u64;
        let mut previous_end: Option<u64> = None;
        let mut whole = 0;
        for piece in run[..taken].iter().map(|&index| &pieces[index]) {
            let end = piece.addr.saturating_add(piece.len as u64);
            if let Some(gap) = previous_end.and_then(|end| gap_to_join(end, piece.addr)) {
                stream += gap;
            }
            stream += piece.len as u64;
            if stream > read {
                break;
            }
            previous_end = Some(end);
            whole += 1;
        }
        Ok((taken, whole))
    }
}

/// The bytes between a remote range ending at `range_end` and a piece at `addr` (the next
/// in address order), when the piece joins that range: it starts at or after the end, on
/// the same page or the next, so the joined range pins no page that holds no piece.
fn gap_to_join(range_end: u64, addr: u64) -> Option<u64> {
    (addr >= range_end && addr / PAGE <= (range_end - 1) / PAGE + 1).then(|| addr - range_end)
}

fn iovec_at(start: u64, end: u64) -> libc::iovec {
    libc::iovec {
        iov_base: start as usize as *mut libc::c_void,
        iov_len: (end - start) as usize,
    }
}

impl RemoteMemory for LiveMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [IoSliceMut::new(buf)];
        self.calls.fetch_add(1, Ordering::Relaxed);
        match process_vm_readv(self.pid, &mut local, &remote) {
            Ok(n) if n == len => Ok(()),
            // A short read means the range crosses into an unmapped page.
            Ok(n) => Err(MemError::Fault {
                addr: addr + n as u64,
            }),
            Err(Errno::ESRCH) => Err(MemError::ProcessGone),
            Err(Errno::EPERM) => Err(MemError::PermissionDenied),
            Err(_) => Err(MemError::Fault { addr }),
        }
    }

    /// Up to [`MAX_PIECES_PER_CALL`] pieces at a time are read in address order, so that
    /// neighbours share a remote range. process_vm_readv stops at the first piece it cannot
    /// read whole: the pieces before it are done, that one failed, and the call is made
    /// again from the piece after it.
    fn read_pieces(&self, pieces: &mut [Piece], buf: &mut [u8]) -> Result<(), MemError> {
        let mut run = [0usize; MAX_PIECES_PER_CALL];
        let mut next = 0;
        while next < pieces.len() {
            // Gather up to one call's worth of readable pieces; settle the trivial ones.
            let mut count = 0;
            while next < pieces.len() && count < MAX_PIECES_PER_CALL {
                let piece = &mut pieces[next];
                let fits = piece
                    .at
                    .checked_add(piece.len)
                    .is_some_and(|end| end <= buf.len());
                let in_space = piece.addr.checked_add(piece.len as u64).is_some();
                if piece.len == 0 || !fits || !in_space {
                    piece.ok = piece.len == 0 && piece.at <= buf.len();
                } else {
                    run[count] = next;
                    count += 1;
                }
                next += 1;
            }
            let run = &mut run[..count];
            run.sort_unstable_by_key(|&index| pieces[index].addr);
            let mut from = 0;
            while from < run.len() {
                let (taken, whole) = self.read_run(pieces, &run[from..], buf)?;
                for &index in &run[from..from + whole] {
                    pieces[index].ok = true;
                }
                if whole < taken {
                    pieces[run[from + whole]].ok = false;
                    from += whole + 1;
                } else {
                    from += taken;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four pages of this process with the third unmapped, filled with a pattern.
    struct Region {
        base: *mut u8,
    }

    impl Region {
        fn new() -> Self {
            let len = 4 * PAGE as usize;
            // SAFETY: a fresh private anonymous mapping, written only inside its bounds;
            // the third page is unmapped before any read.
            unsafe {
                let base = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
                .cast::<u8>();
                assert!(base.cast::<libc::c_void>() != libc::MAP_FAILED);
                for i in 0..len {
                    *base.add(i) = (i % 251) as u8;
                }
                libc::munmap(base.add(2 * PAGE as usize).cast(), PAGE as usize);
                Region { base }
            }
        }
        fn addr(&self, offset: u64) -> u64 {
            self.base as u64 + offset
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: unmaps what `new` mapped (the hole is already gone).
            unsafe { libc::munmap(self.base.cast(), 4 * PAGE as usize) };
        }
    }

    fn pieces_at(region: &Region, spans: &[(u64, usize)]) -> (Vec<Piece>, Vec<u8>) {
        let mut at = 0;
        let pieces = spans
            .iter()
            .map(|&(offset, len)| {
                let piece = Piece::new(region.addr(offset), at, len);
                at += len;
                piece
            })
            .collect();
        (pieces, vec![0; at])
    }

    fn expected(offset: u64, len: usize) -> Vec<u8> {
        (offset..offset + len as u64)
            .map(|i| (i % 251) as u8)
            .collect()
    }

    #[test]
    fn neighbours_share_a_range_and_faults_stay_with_their_piece() {
        let region = Region::new();
        let me = LiveMemory::new(std::process::id() as i32);
        let page = PAGE;
        let spans = [
            (page + 100, 50),      // page 1, joins the range of page 0's pieces
            (10, 20),              // page 0
            (2 * page + 8, 8),     // the hole
            (3 * page + 5, 40),    // page 3: after the hole, its own range
            (40, 30),              // page 0, after a gap
            (45, 10),              // inside the one before: a range of its own
            (2 * page - 16, 32),   // runs from page 1 into the hole
            (3 * page + 4000, 96), // page 3's end
        ];
        let (mut pieces, mut buf) = pieces_at(&region, &spans);
        me.read_pieces(&mut pieces, &mut buf).unwrap();
        let oks: Vec<bool> = pieces.iter().map(|p| p.ok).collect();
        assert_eq!(oks, [true, true, false, true, true, true, false, true]);
        for (piece, &(offset, len)) in pieces.iter().zip(&spans) {
            if piece.ok {
                assert_eq!(
                    piece.bytes(&buf).unwrap(),
                    expected(offset, len),
                    "{offset}"
                );
            }
        }
        assert_eq!(me.calls(), 3, "one call, and one after each faulting piece");
    }

    #[test]
    fn more_pieces_than_one_call_takes() {
        let region = Region::new();
        let me = LiveMemory::new(std::process::id() as i32);
        // Every other byte of pages 0, 1 and 3, backwards: 6,144 pieces.
        let mut spans: Vec<(u64, usize)> = (0..4 * PAGE)
            .step_by(2)
            .filter(|offset| offset / PAGE != 2)
            .map(|offset| (offset, 1))
            .collect();
        spans.reverse();
        let (mut pieces, mut buf) = pieces_at(&region, &spans);
        me.read_pieces(&mut pieces, &mut buf).unwrap();
        for (piece, &(offset, len)) in pieces.iter().zip(&spans) {
            assert!(piece.ok, "{offset}");
            assert_eq!(piece.bytes(&buf).unwrap(), expected(offset, len));
        }
    }
}
