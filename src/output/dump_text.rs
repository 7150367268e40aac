//! The human-readable form of `gilscope dump`.

use crate::model::snapshot::{Snapshot, ThreadInfo};
use std::fmt::Write;

pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let p = &snapshot.python;
    let _ = writeln!(
        out,
        "Process {}: Python {} ({} build{}, GIL {})",
        snapshot.pid,
        p.version,
        p.build.name(),
        if p.free_threaded {
            ", free-threaded"
        } else {
            ""
        },
        p.gil
    );
    let g = &snapshot.gil;
    let holder = match g.holder_tid {
        Some(tid) if g.source == "thread_flags" => format!(
            "held by thread {tid}{} (by the threads' own GIL flags)",
            name_suffix(snapshot, tid)
        ),
        Some(tid) => format!("held by thread {tid}{}", name_suffix(snapshot, tid)),
        None if g.locked => "held".to_string(),
        None => "free".to_string(),
    };
    let _ = writeln!(
        out,
        "GIL: {holder}; {} switches so far; switch interval {} µs",
        g.switch_number, g.interval_us
    );
    if snapshot.target_stopped {
        let _ = writeln!(out, "The target is stopped (SIGSTOP or a debugger).");
    }
    for thread in &snapshot.threads {
        out.push('\n');
        render_thread(&mut out, thread);
    }
    out
}

fn name_suffix(snapshot: &Snapshot, tid: i32) -> String {
    let name = snapshot
        .threads
        .iter()
        .find(|t| t.tid == tid)
        .and_then(|t| t.name.as_deref());
    name.map(|n| format!(" ({n})")).unwrap_or_default()
}

fn render_thread(out: &mut String, thread: &ThreadInfo) {
    let name = thread
        .name
        .as_deref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default();
    let reason = thread
        .idle_reason
        .map(|r| format!(" ({})", r.name()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Thread {}{name}: {}{reason}",
        thread.tid,
        thread.state.name()
    );
    for frame in &thread.frames {
        let function = frame.qualname.as_deref().unwrap_or(&frame.function);
        let _ = writeln!(out, "    {function} ({}:{})", frame.file, frame.line);
    }
    if thread.truncated {
        let _ = writeln!(out, "    ... (deeper frames not read)");
    }
}
