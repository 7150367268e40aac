//! Live memory of another process through process_vm_readv(2): no ptrace stop needed.

use super::{MemError, RemoteMemory};
use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use std::io::IoSliceMut;

pub struct LiveMemory {
    pid: Pid,
}

impl LiveMemory {
    pub fn new(pid: i32) -> Self {
        LiveMemory {
            pid: Pid::from_raw(pid),
        }
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
}
