use super::*;
use serde_json::json;

fn thread(tid: i32, name: &str, held: u64, wait: u64, idle: u64) -> Value {
    json!({
        "tid": tid, "name": name, "samples": held + wait + idle,
        "states": {"gil_held": held, "gil_wait": wait, "native_nogil": 0, "idle": idle},
        "idle_reasons": {"sleep": idle, "io": 0, "lock": 0, "other": 0},
    })
}

fn stack(tid: i32, state: &str, function: &str, file: &str, count: u64, waiters: u64) -> Value {
    json!({
        "tid": tid, "state": state, "idle_reason": if state == "idle" { json!("sleep") } else { Value::Null },
        "count": count, "waiters": waiters,
        "frames": [{"function": function, "qualname": null, "file": file, "line": 7}],
    })
}

/// Two threads fighting over the GIL in a function whose name and file are hostile HTML,
/// a sleeping main thread, and one child process.
fn recording() -> Recording {
    let hostile = "<script>alert(1)</script>";
    let file = "/srv/\"quoted\" & <dir>/app.py";
    let process = |pid: i32| {
        json!({
            "format": "gilscope.recording/1", "pid": pid,
            "command": ["python", "app.py", "--name=</title><script>alert(2)</script>"],
            "python": {"version": "3.12.1", "build": "shared", "free_threaded": false,
                       "gil": "enabled", "binary": "/usr/bin/python3"},
            "duration_s": 1.0, "requested_rate_hz": 100.0, "samples": 100,
            "missed_samples": 0, "torn_samples": 0, "stopped_samples": 0,
            "stop_reason": "the duration elapsed", "cpus": 4,
            "gil": {"held": 100, "contended": 100, "waiters": 100, "on_cpu": 100,
                    "first_switch_number": 0, "last_switch_number": 200, "interval_us": 5000},
            "threads": [thread(1, "MainThread", 0, 0, 100), thread(2, "worker <0>", 50, 50, 0),
                        thread(3, "worker-1", 50, 50, 0)],
            "stacks": [stack(1, "idle", "main", "/srv/app.py", 100, 0),
                       stack(2, "gil_held", hostile, file, 50, 50),
                       stack(2, "gil_wait", hostile, file, 50, 0),
                       stack(3, "gil_held", hostile, file, 50, 50),
                       stack(3, "gil_wait", "other", file, 50, 0)],
            "children": [],
        })
    };
    let mut parent = process(10);
    parent["children"] = json!([process(11)]);
    serde_json::from_value(parent).expect("a valid recording")
}

fn page() -> String {
    let rec = recording();
    render(&rec, &Report::new(&rec))
}

#[test]
fn text_from_the_target_is_escaped_everywhere() {
    let page = page();
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script is a script element"
    );
    assert!(!page.contains("alert(1)</script>") && !page.contains("alert(2)</script>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("worker &lt;0&gt;"));
    assert!(
        page.contains("title=\"/srv/&quot;quoted&quot; &amp; &lt;dir&gt;/app.py\""),
        "file names in attributes are escaped"
    );
    assert!(!page.contains("</title><script>"));
}

#[test]
fn the_page_is_self_contained() {
    let page = page();
    for outside in [
        "src=",
        "href=\"http",
        "url(",
        "@import",
        "<link",
        "<iframe",
        "<object",
    ] {
        assert!(
            !page.contains(outside),
            "the page refers outside itself: {outside}"
        );
    }
    assert!(
        page.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';")
    );
    assert!(page.contains("<style>") && page.contains(CSS));
    assert!(page.contains(SCRIPT));
}

#[test]
fn the_page_has_every_section() {
    let page = page();
    for needle in [
        "What to do: <span class=\"kind\">processes</span>",
        "<section id=\"figures\">",
        "<div class=\"value\">100%</div><div class=\"name\">contended</div>",
        "<section id=\"threads\">",
        "<td>worker-1</td><td class=\"num\">3</td>",
        "<section id=\"recommendations\">",
        "<code>thread[worker-1].gil_wait</code>",
        "of the time holding the GIL",
        "<section id=\"flamegraphs\">",
        "<label for=\"tab-gil_wait\">gil_wait 33%</label>",
        "<div class=\"panel\" id=\"panel-idle\">",
        "<section id=\"gil-blame\">",
        "Child process pid 11",
        "<section id=\"pid-11-threads\">",
    ] {
        assert!(page.contains(needle), "no {needle:?} in the page");
    }
    // Native code never ran: its tab says so instead of drawing an empty graph.
    assert!(page.contains("No thread was ever in state native_nogil."));
    assert!(
        !page.contains("event-loops"),
        "no thread runs an event loop"
    );
}

#[test]
fn flamegraph_frames_take_their_state_colour() {
    let page = page();
    let colour_of = |state: ThreadState| palette::state_colour(state).hex();
    // The state frames, in the colour of their state.
    for state in [
        ThreadState::GilHeld,
        ThreadState::GilWait,
        ThreadState::Idle,
    ] {
        assert!(
            page.contains(&format!(
                "fill=\"{}\"/><text x=\"3\" y=\"12\">{}</text>",
                colour_of(state),
                state_label(state)
            )),
            "{state:?}"
        );
    }
    // The same function under gil_held and gil_wait: two shades, one per family.
    let held = palette::code_colour(
        ThreadState::GilHeld,
        "<script>alert(1)</script> (/srv/\"quoted\" & <dir>/app.py:7)",
    );
    let wait = palette::code_colour(
        ThreadState::GilWait,
        "<script>alert(1)</script> (/srv/\"quoted\" & <dir>/app.py:7)",
    );
    assert!(page.contains(&held.hex()) && page.contains(&wait.hex()));
}

fn state_label(state: ThreadState) -> &'static str {
    match state {
        ThreadState::Idle => "idle: sleep",
        other => other.name(),
    }
}

#[test]
fn event_loops_are_shown_when_the_report_has_them() {
    let mut page = String::new();
    let event_loop = json!({
        "kind": "asyncio", "busy": 0.31, "stall_threshold_ms": 20.0, "stalls": 24,
        "stalls_per_s": 4.8, "longest_stall_ms": 43.0, "p95_stall_ms": 41.0,
        "blocking": [{"function": "crunch<T>", "file": "/app/handlers.py", "line": 36,
                      "fraction": 0.92, "task": "Task-12"}],
    });
    event_loop_section(&mut page, &[("MainThread".to_string(), event_loop)], 2, "");
    for needle in [
        "<td>MainThread</td><td>asyncio</td><td class=\"num\">31%</td><td class=\"num\">24</td>",
        "<td class=\"num\">4.8</td><td class=\"num\">43.0 ms</td><td class=\"num\">41.0 ms</td>",
        "<code>crunch&lt;T&gt;</code> at <code>/app/handlers.py:36</code> (task Task-12): 92% of the stall time",
    ] {
        assert!(page.contains(needle), "no {needle:?} in\n{page}");
    }
}

#[test]
fn a_recording_without_samples_still_makes_a_page_that_says_so() {
    let mut rec = recording();
    rec.threads.clear();
    rec.stacks.clear();
    rec.children.clear();
    rec.samples = 0;
    let page = render(&rec, &Report::new(&rec));
    assert!(page.contains("No Python thread was sampled."));
    assert!(page.contains("No samples were taken."));
    assert!(page.contains("nothing to blame"));
    assert!(page.contains("<label for=\"tab-gil_held\">gil_held 0%</label>"));
    assert!(page.trim_end().ends_with("</html>"));
}
