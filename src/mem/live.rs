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

    /// One process_vm_readv over the pieces `run` names (at most [`MAX_PIECES_PER_CALL`],
    /// all of them non-empty and inside `buf`). Returns how many of them, from the first,
    /// were read whole; the one after those (if any) faulted.
    fn read_run(&self, pieces: &[Piece], run: &[usize], buf: &mut [u8]) -> Result<usize, MemError> {
        let mut local = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_PIECES_PER_CALL];
        let mut remote = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_PIECES_PER_CALL];
        let base = buf.as_mut_ptr();
        for (i, piece) in run.iter().map(|&index| &pieces[index]).enumerate() {
            debug_assert!(piece.at + piece.len <= buf.len());
            local[i].write(libc::iovec {
                // In bounds: the caller checked `at + len <= buf.len()`.
                iov_base: unsafe { base.add(piece.at) }.cast(),
                iov_len: piece.len,
            });
            remote[i].write(libc::iovec {
                iov_base: piece.addr as usize as *mut libc::c_void,
                iov_len: piece.len,
            });
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the first `run.len()` iovecs are initialized; every local one points
        // inside `buf`, which is borrowed mutably for the call, and the pieces' ranges
        // come from one buffer the caller owns. Overlapping local ranges only make the
        // kernel write the same bytes twice.
        let n = unsafe {
            libc::process_vm_readv(
                self.pid.as_raw(),
                local.as_ptr().cast(),
                run.len() as libc::c_ulong,
                remote.as_ptr().cast(),
                run.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            return match Errno::last() {
                Errno::ESRCH => Err(MemError::ProcessGone),
                Errno::EPERM => Err(MemError::PermissionDenied),
                // EFAULT: the first piece is unreadable; anything else counts as that too.
                _ => Ok(0),
            };
        }
        let mut left = n as usize;
        let mut whole = 0;
        for piece in run.iter().map(|&index| &pieces[index]) {
            if left < piece.len {
                break;
            }
            left -= piece.len;
            whole += 1;
        }
        Ok(whole)
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

    /// process_vm_readv stops at the first piece it cannot read whole: the pieces before it
    /// are done, that one failed, and the call is made again from the piece after it.
    fn read_pieces(&self, pieces: &mut [Piece], buf: &mut [u8]) -> Result<(), MemError> {
        let mut run = [0usize; MAX_PIECES_PER_CALL];
        let mut next = 0;
        while next < pieces.len() {
            // Gather up to one call's worth of readable pieces; settle the trivial ones.
            let mut count = 0;
            let mut scan = next;
            while scan < pieces.len() && count < MAX_PIECES_PER_CALL {
                let piece = &mut pieces[scan];
                let fits = piece
                    .at
                    .checked_add(piece.len)
                    .is_some_and(|end| end <= buf.len());
                if piece.len == 0 || !fits {
                    piece.ok = piece.len == 0 && piece.at <= buf.len();
                } else {
                    run[count] = scan;
                    count += 1;
                }
                scan += 1;
            }
            if count == 0 {
                break;
            }
            let whole = self.read_run(pieces, &run[..count], buf)?;
            for &index in &run[..whole] {
                pieces[index].ok = true;
            }
            if whole < count {
                pieces[run[whole]].ok = false;
                next = run[whole] + 1;
            } else {
                next = scan;
            }
        }
        Ok(())
    }
}
