#!/usr/bin/env python3
"""Measure gilscope's per-thread gil_held and gil_wait against exact truth.

The truth comes from perf uprobes on CPython's own take_gil (entry and return) and
drop_gil (entry), recorded over the same window as gilscope:

    waiting = from take_gil entry to its return, and from drop_gil entry to its return
              (handing the GIL over: on a forced switch the dropper blocks until a waiter
              has taken it; gilscope's gil_wait state includes that, by definition)
    holding = from take_gil return to the next drop_gil entry

Usage (as root, from the repository root, after `cargo build --release`):

    python3 scripts/accuracy.py [--python PY] [--workloads cpu_threads,convoy,...]
                                [--seconds 5] [--rate 100] [--repeat 1]

Needs `perf` (Debian: apt-get install linux-perf), a kernel with uprobes, and an
interpreter whose binary keeps the take_gil/drop_gil symbols (pyenv's builds do).
Prints one row per thread and the largest error per workload. Stdlib only.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOAD = os.path.join(ROOT, "fixtures", "workload.py")
DEFAULT_WORKLOADS = "cpu_threads,convoy,asyncio_server,hashers"
DEFAULT_PYTHON = os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3")


def main():
    args = parse_args()
    gilscope = os.path.join(ROOT, "target", "release", "gilscope")
    if not os.path.exists(gilscope):
        sys.exit("build gilscope first: cargo build --release")
    worst = {}
    for kind in args.workloads.split(","):
        for _ in range(args.repeat):
            rows = measure(kind, args, gilscope)
            print_rows(kind, rows)
            errors = [max(abs(r["held"] - r["true_held"]), abs(r["wait"] - r["true_wait"])) for r in rows]
            worst[kind] = max([worst.get(kind, 0.0)] + errors)
    print("\nlargest error per workload (|gilscope - truth| over gil_held and gil_wait, per thread):")
    for kind, error in worst.items():
        print(f"  {kind:<16} {error:.3f}")
    print(f"  {'all':<16} {max(worst.values()):.3f}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=DEFAULT_PYTHON)
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--repeat", type=int, default=1)
    return p.parse_args()


def measure(kind, args, gilscope):
    workload = start_workload(args.python, kind)
    try:
        pid = workload.pid
        binary = interpreter_binary(pid)
        group = add_probes(binary)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                perf_data = os.path.join(tmp, "perf.data")
                perf = start_perf(group, pid, perf_data)
                start = time.clock_gettime(time.CLOCK_MONOTONIC)
                out = os.path.join(tmp, "gilscope")
                run = [gilscope, "record", "--pid", str(pid), "--duration", str(args.seconds),
                       "--rate", str(args.rate), "-o", out]
                subprocess.run(run, check=True, stderr=subprocess.DEVNULL)
                end = time.clock_gettime(time.CLOCK_MONOTONIC)
                perf.send_signal(signal.SIGINT)
                perf.wait()
                truth = truth_from_perf(perf_data, start, end)
                with open(os.path.join(out, "report.json")) as f:
                    report = json.load(f)
        finally:
            remove_probes(group)
    finally:
        workload.kill()
        workload.wait()
    return compare(report, truth)


def start_workload(python, kind):
    child = subprocess.Popen([python, WORKLOAD, kind, "--seconds", "120"], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if not line.startswith("READY"):
        child.kill()
        sys.exit(f"workload {kind} did not start: {line!r}")
    return child


def interpreter_binary(pid):
    """libpython if the process maps one, else its executable."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libpython" in os.path.basename(path):
                return path
    return os.readlink(f"/proc/{pid}/exe")


def add_probes(binary):
    """Adds uprobes in a group of this run's own, so other perf users are not disturbed.
    Returns the group: its events are GROUP:take, GROUP:taken__return, GROUP:drop and
    GROUP:dropped__return."""
    group = f"gilscope{os.getpid()}"
    for name, spec in (("take", "take_gil"), ("taken", "take_gil%return"), ("drop", "drop_gil"),
                       ("dropped", "drop_gil%return")):
        out = subprocess.run(["perf", "probe", "-x", binary, "--add", f"{group}:{name}={spec}"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            remove_probes(group)
            sys.exit(f"perf probe {spec} on {binary} failed:\n{out.stderr}")
    return group


def remove_probes(group):
    subprocess.run(["perf", "probe", "--del", f"{group}:*"], capture_output=True)


def start_perf(group, pid, data):
    cmd = ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-o", data, "-p", str(pid), "-e", f"{group}:*"]
    perf = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # perf writes its header once it is attached: wait for it rather than a fixed time.
    deadline = time.monotonic() + 10
    while not (os.path.exists(data) and os.path.getsize(data) > 0):
        if time.monotonic() > deadline or perf.poll() is not None:
            sys.exit("perf record did not start")
        time.sleep(0.01)
    return perf


def truth_from_perf(data, start, end):
    """Per tid: seconds holding and waiting for the GIL inside [start, end]."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "tid,time,event"],
                         capture_output=True, text=True, check=True).stdout
    state = {}   # tid -> ("wait" | "held", since)
    totals = {}  # tid -> {"held": s, "wait": s}
    for line in out.splitlines():
        parsed = re.match(r"\s*(\d+)\s+([\d.]+):\s+(\S+):", line)
        if not parsed:
            continue
        tid, t, event = int(parsed.group(1)), float(parsed.group(2)), parsed.group(3)
        name = event.split(":")[-1]
        close(state, totals, tid, t, start, end)
        if name.startswith("taken"):
            state[tid] = ("held", t)
        elif name.startswith("take") or name == "drop":
            state[tid] = ("wait", t)
    for tid in list(state):
        close(state, totals, tid, end, start, end)
    if os.environ.get("ACCURACY_DEBUG"):
        stamps = [float(m.group(1)) for m in re.finditer(r"\s(\d+\.\d+):", out)]
        print(f"window {start:.3f}..{end:.3f}, events {min(stamps):.3f}..{max(stamps):.3f}", file=sys.stderr)
    window = end - start
    return {tid: {k: v / window for k, v in t.items()} for tid, t in totals.items()}


def close(state, totals, tid, t, start, end):
    """Ends tid's current interval at t, adding its overlap with [start, end]."""
    if tid not in state:
        return
    kind, since = state.pop(tid)
    overlap = min(t, end) - max(since, start)
    if overlap > 0:
        totals.setdefault(tid, {"held": 0.0, "wait": 0.0})[kind] += overlap


def compare(report, truth):
    rows = []
    for thread in report["threads"]:
        true = truth.get(thread["tid"], {"held": 0.0, "wait": 0.0})
        rows.append({
            "name": thread["name"] or str(thread["tid"]),
            "held": thread["states"]["gil_held"], "wait": thread["states"]["gil_wait"],
            "true_held": true["held"], "true_wait": true["wait"],
        })
    return rows


def print_rows(kind, rows):
    print(f"\n{kind}:")
    print(f"  {'thread':<14} {'held':>6} {'truth':>6} {'wait':>6} {'truth':>6}")
    for r in rows:
        print(f"  {r['name']:<14} {r['held']:6.3f} {r['true_held']:6.3f} {r['wait']:6.3f} {r['true_wait']:6.3f}")


if __name__ == "__main__":
    main()
