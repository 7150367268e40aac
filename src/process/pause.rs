//! `--blocking`: stop every thread of the target with PTRACE_SEIZE + PTRACE_INTERRUPT for a
//! consistent read, and let it run again on every path. A seized tracee resumes by itself if
//! gilscope dies, so even SIGKILL cannot leave the target stopped.

use anyhow::{Result, bail};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// While alive, every thread in `tids` is in a ptrace-stop. Dropping it detaches them all.
pub struct PausedProcess {
    seized: Vec<Pid>,
}

impl PausedProcess {
    pub fn pause(pid: i32, tids: &[i32]) -> Result<PausedProcess> {
        let mut paused = PausedProcess {
            seized: Vec::with_capacity(tids.len()),
        };
        for &tid in tids {
            let tid = Pid::from_raw(tid);
            match ptrace::seize(tid, ptrace::Options::empty()) {
                Ok(()) => paused.seized.push(tid),
                // The thread exited between listing and seizing.
                Err(Errno::ESRCH) => continue,
                Err(Errno::EPERM) => bail!(
                    "cannot pause process {pid}: another tracer (a debugger or profiler) is attached, \
                     or ptrace is not permitted; run without --blocking"
                ),
                Err(e) => bail!("cannot pause process {pid}: ptrace seize failed: {e}"),
            }
        }
        for &tid in &paused.seized {
            if ptrace::interrupt(tid).is_ok() {
                // Waits for this thread's stop; an exited thread reports that instead.
                let _ = waitpid(tid, Some(WaitPidFlag::__WALL));
            }
        }
        Ok(paused)
    }
}

impl Drop for PausedProcess {
    fn drop(&mut self) {
        for &tid in &self.seized {
            let _ = ptrace::detach(tid, None);
        }
    }
}
