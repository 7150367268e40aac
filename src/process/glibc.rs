//! What glibc's `pthread_cond_t` says about the threads inside a wait on it.
//!
//! CPython's GIL is a mutex and two condition variables (`cond`, which waiters for the GIL
//! wait on, and `switch_cond`, which a holder forced to drop the GIL waits on until another
//! thread has taken it). glibc counts the threads inside `pthread_cond_wait` in the
//! condition's `__wrefs` word: 8 per waiter, from the moment a thread registers as a waiter
//! until it has been woken and is about to re-lock the mutex. That count includes the
//! waiters the kernel shows as runnable: woken, but still queued for a CPU. /proc shows such a
//! thread as `running`, exactly like native code; the count tells them apart.
//!
//! The word's place changed once: glibc 2.41 removed `__g_refs` from the struct.

use super::maps::Process;
use std::io::Read;

/// Where `__wrefs` sits in glibc's `pthread_cond_t` (x86-64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CondvarLayout {
    pub wrefs: u64,
}

/// glibc 2.25 (the condition variable rewrite) to 2.40: `__wseq`, `__g1_start`, `__g_refs[2]`,
/// `__g_size[2]`, `__g1_orig_size`, `__wrefs`, `__g_signals[2]`.
const WREFS_2_25: u64 = 36;
/// glibc 2.41 and later: `__g_refs` is gone, so everything after `__g1_start` moved up.
const WREFS_2_41: u64 = 28;

/// Size of `pthread_cond_t` on x86-64 (every glibc version).
pub const CONDVAR_SIZE: u64 = 48;

impl CondvarLayout {
    /// The layout for a glibc version, or `None` for one older than 2.25.
    pub fn for_version(major: u32, minor: u32) -> Option<CondvarLayout> {
        match (major, minor) {
            (2, 25..=40) => Some(CondvarLayout { wrefs: WREFS_2_25 }),
            (2, 41..) | (3.., _) => Some(CondvarLayout { wrefs: WREFS_2_41 }),
            _ => None,
        }
    }

    /// Threads inside a wait on the condition variable whose bytes start at `cond[0]`.
    pub fn waiters(&self, cond: &[u8]) -> Option<u32> {
        let at = self.wrefs as usize;
        let word = u32::from_ne_bytes(cond.get(at..at + 4)?.try_into().ok()?);
        Some(word >> 3)
    }

    /// The layout of the glibc the process runs with, or `None` if it runs without glibc
    /// (musl) or with one too old or not recognised.
    pub fn of_process(process: &Process) -> Option<CondvarLayout> {
        let libc = process.maps.iter().find(|m| {
            m.path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-2."))
        })?;
        let (major, minor) = release_version(&process.host_path(&libc.path))?;
        Self::for_version(major, minor)
    }
}

/// The version in glibc's banner ("... stable release version 2.36.").
fn release_version(path: &std::path::Path) -> Option<(u32, u32)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 << 20)
        .read_to_end(&mut bytes)
        .ok()?;
    let needle = b"release version ";
    let at = bytes.windows(needle.len()).position(|w| w == needle)? + needle.len();
    parse_version(&bytes[at..(at + 16).min(bytes.len())])
}

fn parse_version(text: &[u8]) -> Option<(u32, u32)> {
    let text: String = text
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|&b| b as char)
        .collect();
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_banner_version() {
        assert_eq!(parse_version(b"2.36.\nCopyright"), Some((2, 36)));
        assert_eq!(parse_version(b"2.43."), Some((2, 43)));
        assert_eq!(parse_version(b"x"), None);
    }

    #[test]
    fn the_waiter_count_moved_in_glibc_2_41() {
        assert_eq!(CondvarLayout::for_version(2, 24), None);
        assert_eq!(CondvarLayout::for_version(2, 36).unwrap().wrefs, 36);
        assert_eq!(CondvarLayout::for_version(2, 41).unwrap().wrefs, 28);
        // Two waiters, CLOCK_MONOTONIC (bit 1), as CPython initialises its conditions.
        let mut cond = [0u8; 48];
        cond[36..40].copy_from_slice(&(2 * 8 + 2u32).to_ne_bytes());
        assert_eq!(
            CondvarLayout::for_version(2, 36).unwrap().waiters(&cond),
            Some(2)
        );
    }

    #[test]
    fn finds_this_process_glibc() {
        let process = Process::open(std::process::id() as i32).unwrap();
        // This test binary runs with glibc 2.25 or later on any supported system.
        assert!(CondvarLayout::of_process(&process).is_some());
    }
}
