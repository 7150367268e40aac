//! `gilscope record -- python app.py`: start the program, as the invoking user under sudo,
//! and stop it if the recording ends first.

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Launched {
    child: Child,
}

impl Launched {
    pub fn start(argv: &[String]) -> Result<Launched> {
        let (program, args) = argv.split_first().context("no command given after --")?;
        let mut command = Command::new(program);
        command.args(args);
        if let Some((uid, gid)) = sudo_invoker() {
            command.uid(uid).gid(gid);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Launched { child })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reaps the program if it has exited; `true` if it has.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Ends the program if it still runs: SIGINT (KeyboardInterrupt) first, SIGKILL after a
    /// grace period.
    pub fn stop(&mut self, grace: Duration) {
        if self.has_exited() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGINT);
        let give_up = Instant::now() + grace;
        while Instant::now() < give_up {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Under `sudo`, the user who ran sudo: the program runs as them, not as root.
fn sudo_invoker() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}
