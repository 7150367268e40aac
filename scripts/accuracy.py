#!/usr/bin/env python3
"""Measure gilscope's per-thread gil_held and gil_wait against exact truth.

The truth comes from perf uprobes on CPython's own take_gil and drop_gil, recorded over
the same window as gilscope. The uprobe truth probes both functions' entries and returns:

    waiting = from take_gil entry to its return, and from drop_gil entry to its return
              (handing the GIL over: on a forced switch the dropper blocks until a waiter
              has taken it; gilscope's gil_wait state includes that, by definition)
    holding = from take_gil return to the next drop_gil entry

A second truth, the store truth, puts the edges of holding where the interpreter writes
the GIL's `locked`, the word gilscope reads:

    holding = from take_gil's write of `locked` to drop_gil's write
    waiting = from take_gil's entry to its write, and from drop_gil's write to its return

The two truths part where a thread sits inside drop_gil before its write (preempted
there, or blocked on the GIL's mutex): it still holds the GIL, and nobody else can take it.

Each truth is measured in a run of its own (--truths), with only the four probes it needs:
every probe hit slows the target. The store truth's probes after the writes sit on the
first call after each write (a few instructions later), found per run by a hardware
watchpoint on `locked` (perf's `mem:ADDR/4:w`, the address from the binary's debug
information with gdb) held for half a second: a watchpoint costs about 13 µs a write here,
too much to measure with.

The probes also cost a few µs a call themselves, inside the waits: a lone asyncio loop
that takes the GIL 7,000 times a second spends about 0.03 of its time in them, waiting for
nobody. The script first measures that cost, per truth, on a lone thread that drops the GIL
and takes it straight back (time.sleep(0)); each truth's waiting is given less that cost
per wait. The errors are against that; the uprobe truth's error as it was measured before
(its waiting with the probes in it) is printed beside, as "raw".

Usage (as root, from the repository root, after `cargo build --release`):

    python3 scripts/accuracy.py [--python PY] [--workloads cpu_threads,convoy,...]
                                [--seconds 5] [--rate 100] [--repeat 1] [--truths uprobe,store]
                                [--py-spy PATH] [--json FILE] [--instants] [--target-cpus LIST]

With --instants (after `cargo build --release --example instants`) it compares every sample
with the truth at that sample's own instant instead of comparing averages: perf also records
the scheduler's switches and wake-ups, and each thread gets a confusion matrix of the truth
(holding, waiting, or outside the GIL's functions: on a CPU, woken and not run since,
preempted, asleep) against gilscope's class. That is how a systematic error is traced to
its cause. Each run also compares the truth at the instants with the truth over the run:
where they part, the instants are not a fair draw of that thread's time. `--sampler
wake_floor` takes the instants from examples/wake_floor instead (record's schedule, no
reading; its SPIN_US holds the CPU as a sample would), and `--window-us N` also gives the
run without the N µs after each instant. `--offsets` gives the truth's share of holding at
fixed offsets before and after every instant: where it parts from the run's share is where
the sampler's own time on a CPU starts to move the target. Every --instants run also splits
the samples by where the sampler woke (the thread it displaced, a CPU running another, an
idle CPU) and gives each thread's holding at the switch to the sampler, after the instant,
and by gilscope, against random instants (`by_wake`). With `--sampler wake_floor` and
`AT=deadline` in the environment the instants are wake_floor's deadlines, not its
wake-ups, and wake_floor prints how late it woke. `--at-gil-read` takes each sample's
instant when its GIL read completed instead of when its deciding reads began, tens of µs
earlier: on a target that changes fast, the classes describe the later one better.

`--target-cpus 0` keeps the workload to CPU 0 (every thread's affinity, set once it is
ready). gilscope's sampler then keeps to the other CPUs (report.json's `sampler_cpus`),
and no sample takes a CPU from the target: that separates what the sampler's own wake-ups
do to the target from what the classifier gets wrong.

Needs `perf` (Debian: apt-get install linux-perf), a kernel with uprobes, gdb, and an
interpreter whose binary keeps the take_gil/drop_gil symbols and debug information
(pyenv's builds do).
Prints one row per thread and the largest error per workload. Stdlib only.

With --py-spy, py-spy (`record --gil --threads --nonblocking`) samples the same target in
the same window at the same rate; its share of samples in which each thread held the GIL
is printed beside gilscope's (py-spy has no notion of waiting, so only `held`).

--instants uses the uprobe truth's probes.
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
OFFSETS_US = (-1000, -300, -100, -30, -10, 0, 10, 30, 100, 300, 1000)
DEFAULT_WORKLOADS = "cpu_threads,convoy,asyncio_server,hashers,asyncio_echo,json_pool,queue_pipeline"
DEFAULT_PYTHON = os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3")


TRUTHS = ("uprobe", "store")


def main():
    args = parse_args()
    gilscope = args.gilscope or os.path.join(ROOT, "target", "release", "gilscope")
    if not os.path.exists(gilscope):
        sys.exit("build gilscope first: cargo build --release")
    if args.instants:
        for kind in args.workloads.split(","):
            for _ in range(args.repeat):
                print_confusion(kind, measure_instants(kind, args), os.getloadavg()[0])
        return
    truths = args.truths.split(",")
    if not truths or any(t not in TRUTHS for t in truths):
        sys.exit(f"--truths takes {' and/or '.join(TRUTHS)}, comma-separated")
    costs = {truth: calibrate_probes(args.python, truth) for truth in truths}
    for truth, cost in costs.items():
        print(f"the {truth} probes' own time in a wait (median on a lone thread that never waits): "
              f"{cost['take']:.2f} µs in an acquisition, {cost['drop']:.2f} µs in a release")
    worst, worst_raw, worst_pyspy = {}, {}, {}
    runs = []
    for kind in args.workloads.split(","):
        for n in range(args.repeat):
            # The truths' runs alternate, so that neither is always the later one.
            for truth in truths if n % 2 == 0 else truths[::-1]:
                load = os.getloadavg()[0]
                rows = measure(kind, args, gilscope, truth, costs[truth])
                print_rows(kind, truth, rows, load)
                runs.append({"workload": kind, "python": args.python, "truth": truth, "load": load,
                             "probe_cost_us": costs[truth], "target_cpus": args.target_cpus,
                             "threads": rows})
                key = (kind, truth)
                worst[key] = max([worst.get(key, 0.0)] + [error(r) for r in rows])
                if truth == "uprobe":
                    worst_raw[kind] = max([worst_raw.get(kind, 0.0)] + [raw_error(r) for r in rows])
                spy = [abs(r["pyspy_held"] - r["true_held"]) for r in rows if r.get("pyspy_held") is not None]
                if spy:
                    worst_pyspy[key] = max([worst_pyspy.get(key, 0.0)] + spy)
    print("\nlargest error per workload: |gilscope - truth| over gil_held and gil_wait, per thread,"
          "\nagainst each truth (its waiting less the probes' own time), and against the uprobe"
          "\ntruth as measured (raw); py-spy's held against each truth:")
    raw = "uprobe" in truths
    spy = bool(worst_pyspy)
    print(f"  {'':<16}" + "".join(f" {t:>7}" for t in truths) + (f" {'raw':>7}" if raw else "")
          + ("".join(f" {'py-spy ' + t[0]:>9}" for t in truths) if spy else ""))
    kinds = list(dict.fromkeys(kind for kind, _ in worst))
    for kind in kinds + ["all"]:
        of = kinds if kind == "all" else [kind]
        line = f"  {kind:<16}" + "".join(f" {max(worst[k, t] for k in of):7.3f}" for t in truths)
        if raw:
            line += f" {max(worst_raw[k] for k in of):7.3f}"
        if spy:
            line += "".join(f" {max(worst_pyspy.get((k, t), 0.0) for k in of):9.3f}" for t in truths)
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


def error(row):
    """|gilscope - truth| over held and wait, the truth's waiting less the probes' own time
    (that time is nobody's waiting). Rows of files from before the truths had runs of their
    own have the store truth in `store_held`/`store_wait`: those give the store truth's."""
    if "true_wait_less_probes" in row:
        return max(abs(row["held"] - row["true_held"]), abs(row["wait"] - row["true_wait_less_probes"]))
    if row.get("store_held") is not None:
        return max(abs(row["held"] - row["store_held"]), abs(row["wait"] - row["store_wait"]))
    return raw_error(row)


def raw_error(row):
    """|gilscope - truth| over held and wait, the truth's waiting with the probes in it."""
    return max(abs(row["held"] - row["true_held"]), abs(row["wait"] - row["true_wait"]))


CALIBRATION = """
import time
print("READY", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    time.sleep(0)
"""


def calibrate_probes(python, truth, seconds=2.0):
    """µs per wait that `truth`'s probes themselves add to its waits: the median wait that
    began in take_gil and in drop_gil (see `shares`), on a lone thread that releases the
    GIL and takes it straight back (time.sleep(0)), so that neither function ever waits
    for anyone."""
    child = subprocess.Popen([python, "-c", CALIBRATION], stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "READY":
            sys.exit("the calibration's interpreter did not start")
        binary = interpreter_binary(child.pid)
        group = add_probes(binary, store_sites(child.pid, binary) if truth == "store" else None)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                data = os.path.join(tmp, "perf.data")
                perf = start_perf(f"{group}:*", child.pid, data)
                start = time.clock_gettime(time.CLOCK_MONOTONIC)
                time.sleep(seconds)  # the window measured, not a wait for readiness
                end = time.clock_gettime(time.CLOCK_MONOTONIC)
                perf.send_signal(signal.SIGINT)
                perf.wait()
                found = truth_from_perf(data, start, end)
        finally:
            remove_probes(group)
    finally:
        child.kill()
        child.wait()
    calls = found.get(child.pid, {}).get("calls")
    if not calls or calls["take_us"] is None or calls["drop_us"] is None:
        sys.exit("the calibration saw no take_gil or drop_gil call")
    return {"take": calls["take_us"], "drop": calls["drop_us"]}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=DEFAULT_PYTHON)
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--truths", default=",".join(TRUTHS),
                   help="the truths to measure against, each in a run of its own with only its "
                        "own probes: uprobe (take_gil's and drop_gil's entries and returns), store "
                        "(take_gil's entry, the writes of `locked`, drop_gil's return)")
    p.add_argument("--py-spy", dest="py_spy", help="also run this py-spy over the same window")
    p.add_argument("--json", help="write every run's rows to this file")
    p.add_argument("--gilscope", help="the gilscope binary to measure (default: target/release)")
    p.add_argument("--target-cpus", dest="target_cpus",
                   help="keep the workload to these CPUs (comma-separated), so that gilscope's sampler "
                        "runs on the others")
    p.add_argument("--instants", action="store_true",
                   help="instead of averages, compare every sample with the truth at its own instant "
                        "(needs `cargo build --release --example instants`): a confusion matrix per "
                        "thread, the truth split by what the scheduler had the thread doing")
    p.add_argument("--sampler", choices=("instants", "wake_floor"), default="instants",
                   help="with --instants: the sampler whose instants are taken; wake_floor wakes on "
                        "record's schedule and reads nothing, so its instants show whether the "
                        "schedule alone is a fair draw of the target's time")
    p.add_argument("--window-us", type=float, default=0.0,
                   help="with --instants: also give the run's shares outside the N µs after each "
                        "instant (the sampler's own time on a CPU, e.g. wake_floor's SPIN_US)")
    p.add_argument("--at-gil-read", dest="at_gil_read", action="store_true",
                   help="with --instants: each sample's instant is when its GIL read completed "
                        "(examples/instants' t_gil), not when its deciding reads began")
    p.add_argument("--offsets", action="store_true",
                   help="with --instants: also the truth's share of holding at fixed offsets "
                        f"({', '.join(f'{d:+d}' for d in OFFSETS_US)} µs) from every instant: "
                        "where the sampler's own time starts to move the target")
    return p.parse_args()


def measure(kind, args, gilscope, truth, cost):
    """One run of `kind` with `truth`'s probes: a row per thread (see `compare`)."""
    workload = start_workload(args.python, kind, args.target_cpus)
    try:
        pid = workload.pid
        binary = interpreter_binary(pid)
        group = add_probes(binary, store_sites(pid, binary) if truth == "store" else None)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                perf_data = os.path.join(tmp, "perf.data")
                perf = start_perf(f"{group}:*", pid, perf_data)
                start = time.clock_gettime(time.CLOCK_MONOTONIC)
                out = os.path.join(tmp, "gilscope")
                spy = start_pyspy(args, pid, os.path.join(tmp, "pyspy.raw")) if args.py_spy else None
                run = [gilscope, "record", "--pid", str(pid), "--duration", str(args.seconds),
                       "--rate", str(args.rate), "-o", out]
                subprocess.run(run, check=True, stderr=subprocess.DEVNULL)
                end = time.clock_gettime(time.CLOCK_MONOTONIC)
                pyspy_held = finish_pyspy(spy, os.path.join(tmp, "pyspy.raw")) if spy else None
                perf.send_signal(signal.SIGINT)
                perf.wait()
                found = truth_from_perf(perf_data, start, end, cost)
                with open(os.path.join(out, "report.json")) as f:
                    report = json.load(f)
        finally:
            remove_probes(group)
    finally:
        workload.kill()
        workload.wait()
    return compare(report, found, pyspy_held)


def start_pyspy(args, pid, raw):
    cmd = [args.py_spy, "record", "--pid", str(pid), "--gil", "--threads", "--nonblocking",
           "--rate", str(int(args.rate)), "--duration", str(int(round(args.seconds))),
           "--format", "raw", "-o", raw]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_pyspy(spy, raw):
    """py-spy's share of samples in which each tid held the GIL: {tid: share}."""
    output = spy.communicate()[0]
    samples = re.search(r"Samples: (\d+)", output)
    if spy.returncode != 0 or not samples or not os.path.exists(raw):
        print(f"py-spy failed: {output.strip()[-300:]}", file=sys.stderr)
        return None
    total = int(samples.group(1))
    held = {}
    with open(raw) as f:
        for line in f:
            parsed = re.match(r"thread \((\d+)\).* (\d+)$", line.strip())
            if parsed:
                tid = int(parsed.group(1))
                held[tid] = held.get(tid, 0) + int(parsed.group(2))
    return {tid: n / total for tid, n in held.items()} if total else None


def start_workload(python, kind, cpus=None):
    """The running workload; its `names` maps each thread's tid to its name. With `cpus`
    (comma-separated), every thread is kept to those CPUs."""
    child = subprocess.Popen([python, WORKLOAD, kind, "--seconds", "120"], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if not line.startswith("READY"):
        child.kill()
        sys.exit(f"workload {kind} did not start: {line!r}")
    child.names = {tid: name for name, tid in json.loads(line.split(" ", 1)[1])["threads"].items()}
    if cpus:
        for tid in os.listdir(f"/proc/{child.pid}/task"):
            os.sched_setaffinity(int(tid), {int(cpu) for cpu in cpus.split(",")})
    return child


def interpreter_binary(pid):
    """libpython if the process maps one, else its executable."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libpython" in os.path.basename(path):
                return path
    return os.readlink(f"/proc/{pid}/exe")


def add_probes(binary, stores=None):
    """Adds one truth's uprobes, in a group of this run's own so other perf users are not
    disturbed, and returns the group. Without `stores`, the uprobe truth's: events
    GROUP:take_N_TAG, GROUP:taken_N_TAG__return, GROUP:drop_N_TAG and
    GROUP:dropped_N_TAG__return, one N per out-of-line copy of the function. With `stores`
    (from `store_sites`), the store truth's: take_gil's entry, GROUP:acquired_N_TAG and
    GROUP:released_N_TAG a few instructions after each write of the GIL's `locked`, and
    drop_gil's return.

    Every copy the compiler made (3.8's take_gil.constprop.0 beside take_gil) is probed,
    placed by address. Inlined copies are not: perf can put an entry probe on an inlined
    call site but no return probe, and an acquisition seen to start but never to finish
    would count the whole hold that follows as waiting."""
    # perf wants event names unique across groups too: both carry this run's own tag.
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**9}"
    group = f"gilscope{tag}"
    wanted = {"take", "dropped"} if stores else {"take", "taken", "drop", "dropped"}
    for function, entry, ret in (("take_gil", "take", "taken"), ("drop_gil", "drop", "dropped")):
        places = function_addresses(binary, function) or [function]
        for n, place in enumerate(places):
            for event, spec in ((entry, place), (ret, f"{place}%return")):
                if event not in wanted:
                    continue
                name = f"{event}_{n}_{tag}"
                out = subprocess.run(["perf", "probe", "-x", binary, "--no-inlines", "--add",
                                      f"{group}:{name}={spec}"], capture_output=True, text=True)
                if out.returncode != 0:
                    remove_probes(group)
                    sys.exit(f"perf probe {spec} on {binary} failed:\n{out.stderr}")
    for kind, places in (stores or {}).items():
        for n, place in enumerate(sorted(places)):
            spec = f"{group}:{kind}_{n}_{tag}={place:#x}"
            out = subprocess.run(["perf", "probe", "-x", binary, "--add", spec], capture_output=True, text=True)
            if out.returncode != 0:
                remove_probes(group)
                sys.exit(f"perf probe {spec} on {binary} failed:\n{out.stderr}")
    return group


def store_sites(pid, binary, seconds=0.5):
    """Where in `binary` take_gil and drop_gil write the GIL's `locked`: a hardware
    watchpoint on it for `seconds` gives the address after each write (it traps after the
    store), and the store truth's probes go on the first call from there (`next_call`). A
    watchpoint costs about 13 µs a write on these machines, too much to measure with, so it
    only finds the places. Returns {"acquired": {offset in binary, ...}, "released": {...}}."""
    base = mapped_at(pid, binary)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        perf = start_perf(f"mem:{base + gil_locked_offset(binary):#x}/4:w", pid, data)
        time.sleep(seconds)  # the window watched, not a wait for readiness
        perf.send_signal(signal.SIGINT)
        perf.wait()
        out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"],
                             capture_output=True, text=True).stdout
    sites = {"acquired": set(), "released": set()}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            kind = ("acquired" if fields[1].startswith("take_gil") else
                    "released" if fields[1].startswith("drop_gil") else None)
            if kind:
                sites[kind].add(int(fields[0], 16) - base)
    if not sites["acquired"] or not sites["released"]:
        sys.exit(f"the watchpoint on the GIL's `locked` saw no write by take_gil and drop_gil "
                 f"in {seconds} s")
    return {kind: {next_call(binary, after) for after in places} for kind, places in sites.items()}


def next_call(binary, after):
    """The first call instruction at or after `after` that every path from there reaches
    (any jump before it lands between the two). The probe goes there, not right after the
    write: a uprobe on a call is emulated, while most other instructions are stepped out of
    line, a debug trap that costs about 10 µs on these virtual machines. Between the write
    and the call are a few instructions (the holder's pointer, the switch count)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={after:#x}",
                          f"--stop-address={after + 128:#x}", binary],
                         capture_output=True, text=True, check=True).stdout
    jumps = []
    for line in out.splitlines():
        parsed = re.match(r"\s*([0-9a-f]+):\s+(\S+)\s*(\S*)", line)
        if not parsed:
            continue
        at, mnemonic, operand = int(parsed.group(1), 16), parsed.group(2), parsed.group(3)
        if mnemonic.startswith("call"):
            if all(after <= target <= at for target in jumps):
                return at
            break
        if mnemonic.startswith("j"):
            jumps.append(int(operand, 16) if re.fullmatch(r"[0-9a-f]+", operand) else -1)
        if mnemonic.startswith("ret"):
            break
    sys.exit(f"no call that every path takes after the write of `locked` at {after:#x} in {binary}")


def gil_locked_offset(binary):
    """Where the main interpreter's GIL keeps `locked`, as an address in `binary`, from its
    debug information (gdb): `_PyRuntime.ceval.gil` up to 3.11, the main interpreter's own
    `_gil` from 3.12."""
    for field in ("_PyRuntime._main_interpreter._gil.locked", "_PyRuntime.ceval.gil.locked"):
        out = subprocess.run(["gdb", "-batch", "-nx", binary, "-ex", f"p &{field}"],
                             capture_output=True, text=True).stdout
        found = re.search(r"\) (0x[0-9a-f]+) <", out)
        if found:
            return int(found.group(1), 16)
    sys.exit(f"gdb found no GIL `locked` in {binary}'s debug information")


def mapped_at(pid, binary):
    """The address `binary`'s first byte is mapped at in process `pid` (its lowest load
    address is 0, as for a shared library or a position-independent executable)."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[-1] == binary and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    sys.exit(f"{binary} is not mapped in process {pid}")


def function_addresses(binary, function):
    """Addresses of `function` and of its clones (`function.constprop.0`, ...) from the
    symbol table, or [] when the binary has none (then perf finds it by name)."""
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True)
    pattern = re.compile(r"([0-9a-f]+) [tT] " + re.escape(function) + r"(\.\S+)?$")
    found = sorted({int(m.group(1), 16) for m in map(pattern.match, out.stdout.splitlines()) if m})
    return [hex(a) for a in found if a]


def remove_probes(group):
    subprocess.run(["perf", "probe", "--del", f"{group}:*"], capture_output=True)


def start_perf(event, pid, data, extra=None):
    """Records `event` (a probe group's `GROUP:*`, or a watchpoint) into `data`. `extra`:
    perf arguments that replace `-p PID` (with `-a` and more events, the recording is
    system-wide)."""
    target = extra if extra else ["-p", str(pid)]
    cmd = ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-o", data, *target, "-e", event]
    perf = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # perf writes its header once it is attached: wait for it rather than a fixed time.
    deadline = time.monotonic() + 10
    while not (os.path.exists(data) and os.path.getsize(data) > 0):
        if time.monotonic() > deadline or perf.poll() is not None:
            sys.exit("perf record did not start")
        time.sleep(0.01)
    return perf


# How each event moves a thread. The uprobe truth: from take_gil's entry to its return,
# waiting; then holding until drop_gil's entry; waiting again until drop_gil returns. The
# store truth puts the two edges of holding where the interpreter writes the GIL's `locked`
# ("acquired" is the probe after take_gil's write, "released" the one after drop_gil's),
# which is the word gilscope reads: a thread preempted inside drop_gil before its write
# still holds the GIL, and nobody else can take it.
UPROBE_MOVES = {"take": "wait", "taken": "held", "drop": "wait", "dropped": None}
STORE_MOVES = {"take": "wait", "acquired": "held", "released": "wait", "dropped": None}
# Per truth, the events that must come in equal numbers (within 1%): an acquisition seen to
# start but not to finish, or a write of `locked` on a path store_sites did not see, would
# make the truth wrong.
PAIRED = {"uprobe": (("taken", "take"), ("dropped", "drop")),
          "store": (("acquired", "take"), ("released", "dropped"))}


def read_events(data):
    """(tid, seconds, kind) per event: take, taken, drop, dropped, acquired or released."""
    out = subprocess.run(["perf", "script", "--ns", "-i", data, "-F", "tid,time,event"],
                         capture_output=True, text=True, check=True).stdout
    events = []
    for line in out.splitlines():
        parsed = re.match(r"\s*(\d+)\s+([\d.]+):\s+(\S+):", line)
        if parsed:
            kind = parsed.group(3).split(":")[-1].split("_")[0]
            events.append((int(parsed.group(1)), float(parsed.group(2)), kind))
    return events


def shares(events, moves, start, end):
    """Per tid: seconds in each state inside [start, end], and the µs of each wait that
    began and ended inside it, by how it began ("take" for take_gil's entry, "drop" for
    drop_gil's entry or its write)."""
    state, totals, waits = {}, {}, {}
    for tid, t, kind in events:
        if kind not in moves:
            continue
        new, old = moves[kind], state.get(tid)
        if old and old[0] == new:
            continue
        if old and old[0] == "wait" and start <= old[1] and t <= end:
            began = "take" if old[2] == "take" else "drop"
            waits.setdefault(tid, {"take": [], "drop": []})[began].append((t - old[1]) * 1e6)
        close(state, totals, tid, t, start, end)
        if new:
            state[tid] = (new, t, kind)
    for tid in list(state):
        close(state, totals, tid, end, start, end)
    return totals, waits


def truth_from_perf(data, start, end, cost=None):
    """Per tid, the truth the recording's probes give (the store truth's if it has the
    probes after the writes of `locked`, else the uprobe truth's): its shares of
    [start, end] holding and waiting, its waiting also less the probes' own time (`cost`,
    µs per wait, from `calibrate_probes`), and its calls (acquisitions a second, median µs
    of the waits begun in take_gil and in drop_gil)."""
    events = read_events(data)
    if not any(kind == "take" for _, _, kind in events):
        sys.exit("uprobes saw no take_gil call")
    # perf may start delivering events after gilscope has begun (or stop before it ends, if
    # it lost some): only the span both saw is measured.
    start, end = max(start, events[0][1]), min(end, events[-1][1])
    counts = {}
    for _, _, kind in events:
        counts[kind] = counts.get(kind, 0) + 1
    truth = "store" if "acquired" in counts or "released" in counts else "uprobe"
    for seen, expected in PAIRED[truth]:
        n, m = counts.get(seen, 0), counts.get(expected, 0)
        if abs(n - m) > max(10, m // 100):
            sys.exit(f"the {truth} truth's probes saw {n} {seen} events for {m} {expected} "
                     f"events: some were missed")
    window = end - start
    totals, waits = shares(events, STORE_MOVES if truth == "store" else UPROBE_MOVES, start, end)
    found = {}
    for tid in set(totals) | set(waits):
        t = totals.get(tid, {})
        inside = waits.get(tid, {"take": [], "drop": []})
        probes = sum(min(us, cost[began]) for began in ("take", "drop") for us in inside[began]) if cost else 0.0
        found[tid] = {
            "held": t.get("held", 0.0) / window, "wait": t.get("wait", 0.0) / window,
            "wait_less_probes": (t.get("wait", 0.0) - probes / 1e6) / window,
            "calls": {"per_s": len(inside["take"]) / window,
                      "take_us": median(inside["take"]), "drop_us": median(inside["drop"])},
        }
    return found


def median(values):
    return sorted(values)[len(values) // 2] if values else None


def close(state, totals, tid, t, start, end):
    """Ends tid's current interval at t, adding its overlap with [start, end]."""
    if tid not in state:
        return
    kind, since = state.pop(tid)[:2]
    overlap = min(t, end) - max(since, start)
    if overlap > 0:
        totals.setdefault(tid, {"held": 0.0, "wait": 0.0})[kind] += overlap


def compare(report, truth, pyspy_held):
    """A row per thread of gilscope's report: its held and wait, the truth's (its waiting
    as measured, and less the probes' own time), the truth's calls, and py-spy's held."""
    rows = []
    for thread in report["threads"]:
        true = truth.get(thread["tid"], {"held": 0.0, "wait": 0.0, "wait_less_probes": 0.0})
        rows.append({
            "name": thread["name"] or str(thread["tid"]),
            "held": thread["states"]["gil_held"], "wait": thread["states"]["gil_wait"],
            "true_held": true["held"], "true_wait": true["wait"],
            "true_wait_less_probes": true["wait_less_probes"],
            "calls": true.get("calls"),
            "pyspy_held": None if pyspy_held is None else pyspy_held.get(thread["tid"], 0.0),
        })
    return rows


def print_rows(kind, truth, rows, load):
    """Per thread: gilscope's held and the truth's; gilscope's waiting and the truth's, as
    measured and less the probes' own time; py-spy's held; then what the probes cost:
    acquisitions a second, and the median µs of a wait begun in take_gil and in drop_gil.
    A thread that never waits for another still spends that time inside them, trapping
    into the probes."""
    print(f"\n{kind}, {truth} truth (load average {load:.1f}):")
    spy = rows and rows[0]["pyspy_held"] is not None
    print(f"  {'':<14} {'held':>6} {'truth':>6} {'wait':>6} {'truth':>6} {'less':>6}"
          + (f" {'py-spy':>7}" if spy else "") + f" {'takes/s':>8} {'take µs':>8} {'drop µs':>8}")
    value = lambda v: f" {v:6.3f}" if v is not None else f" {'-':>6}"
    for r in rows:
        line = (f"  {r['name']:<14}" + value(r["held"]) + value(r["true_held"])
                + value(r["wait"]) + value(r["true_wait"]) + value(r["true_wait_less_probes"]))
        if spy:
            line += f" {r['pyspy_held']:7.3f}"
        calls = r.get("calls")
        if calls:
            us = lambda v: f"{v:8.1f}" if v is not None else f"{'-':>8}"
            line += f" {calls['per_s']:8.0f} {us(calls['take_us'])} {us(calls['drop_us'])}"
        print(line)


# Truth at an instant: the GIL side from the uprobes (holding, or inside take_gil/drop_gil),
# and for a thread outside the GIL's functions what the scheduler had it doing: on a CPU,
# woken from a wait and not run since, preempted and queued for a CPU, or asleep.
TRUTH_CLASSES = ("held", "wait", "on_cpu", "woken", "preempted", "asleep")
SAMPLED_CLASSES = ("gil_held", "gil_wait", "native_nogil", "idle")


def measure_instants(kind, args):
    """Runs examples/instants (or --sampler's example) beside perf, which records the
    uprobes and the scheduler's switches and wake-ups system-wide. Returns the confusion
    matrices and their splits (see confusion), the instants' fairness (see fairness) and
    holding by where the sampler woke (see by_wake)."""
    sampler = os.path.join(ROOT, "target", "release", "examples", args.sampler)
    if not os.path.exists(sampler):
        sys.exit(f"build the sampler first: cargo build --release --example {args.sampler}")
    workload = start_workload(args.python, kind, args.target_cpus)
    try:
        pid = workload.pid
        group = add_probes(interpreter_binary(pid))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                perf_data = os.path.join(tmp, "perf.data")
                # Larger buffers: the system-wide scheduler events of 2 busy CPUs overflow
                # the default ones, and the sampler's own switches must not be lost.
                perf = start_perf(f"{group}:*", pid, perf_data,
                                  extra=["-a", "-m", "4096", "-e", "sched:sched_switch",
                                         "-e", "sched:sched_waking"])
                run = subprocess.Popen([sampler, str(args.rate), str(args.seconds)]
                                       if args.sampler == "wake_floor" else
                                       [sampler, str(pid), str(args.rate), str(args.seconds)],
                                       env=dict(os.environ, INSTANTS="1"),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                out, err = run.communicate()
                if err.strip():
                    print(err.strip(), file=sys.stderr)
                if run.returncode != 0:
                    sys.exit(f"{sampler} failed")
                perf.send_signal(signal.SIGINT)
                perf.wait()
                events, wakes = timeline_from_perf(perf_data, set(workload.names), run.pid)
        finally:
            remove_probes(group)
    finally:
        workload.kill()
        workload.wait()
    samples = [json.loads(line) for line in out.splitlines() if '"threads"' in line]
    if args.at_gil_read:
        for sample in samples:
            sample["t0"] = sample.get("t_gil", sample["t0"])
    matrices, splits = confusion(samples, events, workload.names)
    return (matrices, splits,
            fairness(samples, events, workload.names, args.window_us / 1e6,
                     OFFSETS_US if args.offsets else ()),
            by_wake(samples, events, workload.names, wakes))


def fairness(samples, changes, names, window, offsets_us=()):
    """Per thread name: the truth's share of holding and of waiting at the samples'
    instants, and over the time between the first and the last of them. Where the two part,
    the instants are not a fair draw of that thread's time, whatever the classes read.
    With `window` (s), also over that time less the `window` after each instant. With
    `offsets_us`, also the share of holding at each of those offsets from every instant."""
    import bisect
    instants = sorted(s["t0"] / 1e9 for s in samples)
    if len(instants) < 2:
        return {}
    lo, hi = instants[0], instants[-1]
    shares = {}
    for tid, events in changes.items():
        gil = sorted((t, value) for t, side, value in events if side == "gil")
        if not gil:
            continue
        times = [t for t, _ in gil]

        def states_at(xs):
            return [gil[i - 1][1] for i in (bisect.bisect_right(times, x) for x in xs) if i > 0]

        def held_at(xs):
            states = states_at(xs)
            return states.count("held") / max(1, len(states))

        at = states_at(instants)
        spent = {"held": 0.0, "wait": 0.0}
        outside = {"held": 0.0, "wait": 0.0}
        for (t, value), (until, _) in zip(gil, gil[1:] + [(hi, None)]):
            start, end = max(t, lo), min(until, hi)
            if value not in spent or end <= start:
                continue
            spent[value] += end - start
            covered = 0.0
            first = max(0, bisect.bisect_right(instants, start) - 1)
            for x in instants[first:bisect.bisect_right(instants, end)]:
                covered += max(0.0, min(end, x + window) - max(start, x))
            outside[value] += end - start - covered
        rest = (hi - lo) - window * len(instants)
        shares[names.get(tid, str(tid))] = {
            "instants": {k: at.count(k) / max(1, len(at)) for k in spent},
            "run": {k: v / (hi - lo) for k, v in spent.items()},
            "outside": {k: v / rest for k, v in outside.items()} if window else None,
            "held_at_offsets": {d: held_at([x + d / 1e6 for x in instants]) for d in offsets_us},
        }
    return shares


def timeline_from_perf(data, tids, sampler=None):
    """Per tid, the time-ordered changes of its GIL side and its scheduler side:
    {tid: [(t, "gil", "held"|"wait"|"out") | (t, "cpu", one of TRUTH_CLASSES[2:])]}; and
    the `sampler` thread's switches: {"in": [(t, the tid it displaced, 0 for an idle CPU)],
    "out": [(t, cpu)], "idle": {cpu: [(t, whether that CPU went idle then)]}} (every
    switch per CPU, to tell a wake-up from idle whose switch perf did not record)."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "tid,cpu,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    changes = {tid: [] for tid in tids}
    wakes = {"in": [], "out": [], "idle": {}}
    gil_state = {"take": "wait", "taken": "held", "drop": "wait", "dropped": "out"}
    for line in out.splitlines():
        parsed = re.match(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):(.*)", line)
        if not parsed:
            continue
        tid, cpu, t = int(parsed.group(1)), int(parsed.group(2)), float(parsed.group(3))
        event, trace = parsed.group(4), parsed.group(5)
        if event.endswith("sched_switch"):
            prev = re.search(r"prev_pid=(\d+) .*prev_state=(\S+)", trace)
            nxt = re.search(r"next_pid=(\d+)", trace)
            if prev and int(prev.group(1)) in changes:
                left = "preempted" if prev.group(2).startswith("R") else "asleep"
                changes[int(prev.group(1))].append((t, "cpu", left))
            if nxt and int(nxt.group(1)) in changes:
                changes[int(nxt.group(1))].append((t, "cpu", "on_cpu"))
            if nxt and prev and int(nxt.group(1)) == sampler:
                wakes["in"].append((t, int(prev.group(1))))
            if prev and int(prev.group(1)) == sampler:
                wakes["out"].append((t, cpu))
            if nxt:
                wakes["idle"].setdefault(cpu, []).append((t, int(nxt.group(1)) == 0))
        elif event.endswith("sched_waking"):
            woken = re.search(r" pid=(\d+)", trace)
            if woken and int(woken.group(1)) in changes:
                changes[int(woken.group(1))].append((t, "cpu", "woken"))
        elif tid in changes:
            changes[tid].append((t, "gil", gil_state[event.split(":")[-1].split("_")[0]]))
    return changes, wakes


# The truth's holding, per thread, at these µs after each sample's instant (gilscope's GIL
# read comes about 15-20 µs after it).
WAKE_OFFSETS_US = (0, 20, 40)


def by_wake(samples, changes, names, switches):
    """Where the sampler woke, per sample: on the CPU of a target thread it displaced, on
    one running something else, or on an idle one (the last switch to the sampler within
    1 ms before the instant). Per thread name and kind of sample ("displaced" when this
    thread is the one displaced, "busy" when another was, "idle"), the truth's share of
    holding at that switch and at WAKE_OFFSETS_US after the instant, and gilscope's; per
    thread also the truth at 20,000 random instants of the run. On these VMs perf records
    no switch out of the idle task on one CPU in some runs: a sample with no switch to the
    sampler recorded, whose CPU (that of the sampler's next switch out) last went idle, is
    "idle, unrecorded", with no switch time. Returns those shares, and the count of the
    samples left out."""
    import bisect
    import random
    wakes = switches["in"]
    wake_times = [t for t, _ in wakes]
    out_times = [t for t, _ in switches["out"]]
    idle = {cpu: ([t for t, _ in events], [went for _, went in events])
            for cpu, events in switches["idle"].items()}

    def woke_from_idle(t0):
        """The sampler's CPU at t0 (that of its next switch out) last went idle before t0."""
        i = bisect.bisect_left(out_times, t0)
        if i == len(out_times):
            return False
        times, went = idle.get(switches["out"][i][1], ([], []))
        j = bisect.bisect_right(times, t0)
        return j > 0 and went[j - 1]

    if not samples or not (wakes or out_times):
        return {}, 0
    lo, hi = samples[0]["t0"] / 1e9, samples[-1]["t0"] / 1e9
    rng = random.Random(1)
    random_instants = [rng.uniform(lo, hi) for _ in range(20000)]
    tids = {tid: name for tid, name in names.items() if name != "MainThread"}
    gil = {tid: sorted((t, v) for t, side, v in changes.get(tid, []) if side == "gil") for tid in tids}
    times = {tid: [t for t, _ in events] for tid, events in gil.items()}

    def held(tid, t):
        i = bisect.bisect_right(times[tid], t)
        return i > 0 and gil[tid][i - 1][1] == "held"

    result, unmatched = {}, 0
    for sample in samples:
        t0 = sample["t0"] / 1e9
        i = bisect.bisect_right(wake_times, t0)
        if i and t0 - wake_times[i - 1] <= 1e-3:
            switched, displaced = wakes[i - 1]
        elif woke_from_idle(t0):
            switched, displaced = None, 0
        else:
            unmatched += 1
            continue
        read = {s["tid"]: s["class"] == "gil_held" for s in sample["threads"]}
        for tid, name in tids.items():
            if tid not in read or not times[tid]:
                continue
            kind = ("displaced" if tid == displaced else "busy" if displaced else
                    "idle" if switched is not None else "idle, unrecorded")
            row = result.setdefault(name, {}).setdefault(kind, {"n": 0, "switch": 0, "gilscope": 0,
                                                                 **{d: 0 for d in WAKE_OFFSETS_US}})
            row["n"] += 1
            row["switch"] += switched is not None and held(tid, switched)
            row["gilscope"] += read[tid]
            for d in WAKE_OFFSETS_US:
                row[d] += held(tid, t0 + d / 1e6)
    for tid, name in tids.items():
        if name in result and times[tid]:
            result[name]["random"] = sum(held(tid, x) for x in random_instants) / len(random_instants)
    return result, unmatched


def confusion(samples, changes, names):
    """Counts (truth at the sample's instant, gilscope's class) per thread."""
    import bisect
    matrices, splits = {}, {}
    for tid, events in changes.items():
        events.sort()
        times = [e[0] for e in events]
        if not times:
            continue
        matrix = matrices.setdefault(names.get(tid, str(tid)), {})
        for sample in samples:
            t = sample["t0"] / 1e9
            sampled = next((s["class"] for s in sample["threads"] if s["tid"] == tid), None)
            if sampled is None or t < times[0] or t > times[-1]:
                continue
            gil = cpu = None
            for _, side, value in reversed(events[:bisect.bisect_right(times, t)]):
                if side == "gil" and gil is None:
                    gil = value
                elif side == "cpu" and cpu is None:
                    cpu = value
                if gil and cpu:
                    break
            if gil is None or cpu is None:
                continue
            truth = gil if gil in ("held", "wait") else cpu
            matrix[(truth, sampled)] = matrix.get((truth, sampled), 0) + 1
            if gil == "wait":
                # Where the scheduler had a thread inside take_gil/drop_gil: kept apart, so
                # the totals above count each instant once.
                split = splits.setdefault(names.get(tid, str(tid)), {})
                split[(cpu, sampled)] = split.get((cpu, sampled), 0) + 1
    return matrices, splits


def print_confusion(kind, measured, load):
    """The matrices, and per thread the share of instants at which the truth and gilscope
    say holding and waiting: the classifier's own error, without sampling noise."""
    print(f"\n{kind} (load average {load:.1f}): rows the truth at the sample's instant, "
          "columns gilscope's class")
    matrices, splits, shares, wakes = measured
    worst = 0.0
    for name, matrix in sorted(matrices.items()):
        total = sum(matrix.values())
        if not total:
            continue
        print(f"  {name}")
        print(f"    {'truth':<10}" + "".join(f"{c:>14}" for c in SAMPLED_CLASSES))
        for truth in TRUTH_CLASSES:
            row = [matrix.get((truth, c), 0) for c in SAMPLED_CLASSES]
            if any(row):
                print(f"    {truth:<10}" + "".join(f"{n:>14}" for n in row))
            if truth == "wait":
                split = splits.get(name, {})
                for cpu in TRUTH_CLASSES[2:]:
                    row = [split.get((cpu, c), 0) for c in SAMPLED_CLASSES]
                    if any(row):
                        print(f"    {'  ' + cpu:<10}" + "".join(f"{n:>14}" for n in row))
        share = lambda pick: sum(n for key, n in matrix.items() if pick(*key)) / total
        held = (share(lambda t, c: t == "held"), share(lambda t, c: c == "gil_held"))
        wait = (share(lambda t, c: t == "wait"), share(lambda t, c: c == "gil_wait"))
        error = max(abs(held[0] - held[1]), abs(wait[0] - wait[1]))
        worst = max(worst, error)
        print(f"    at the instants: held {held[0]:.3f} truth, {held[1]:.3f} gilscope; "
              f"wait {wait[0]:.3f} truth, {wait[1]:.3f} gilscope; error {error:.3f}")
    if any(matrices.values()):
        print(f"  largest error at the instants: {worst:.3f}")
    print("  the truth at the instants against over the run (a fair draw matches):")
    for name, share in sorted(shares.items()):
        at, run = share["instants"], share["run"]
        line = (f"    {name:<14} held {at['held']:.3f} at the instants, {run['held']:.3f} over the run; "
                f"wait {at['wait']:.3f}, {run['wait']:.3f}")
        if share["outside"]:
            out = share["outside"]
            line += f"; outside the sampler's windows held {out['held']:.3f}, wait {out['wait']:.3f}"
        print(line)
        if share["held_at_offsets"]:
            print(f"    {'':<14} held at offsets (µs): " +
                  " ".join(f"{d:+d} {v:.3f}" for d, v in share["held_at_offsets"].items()))
    wakes, unmatched = wakes
    if wakes:
        print("  holding by where the sampler woke (see by_wake): the truth at random instants, at the"
              "\n  switch to the sampler and after the instant, and gilscope's; samples left out, with no"
              f"\n  switch to the sampler recorded and no idle CPU before it: {unmatched}")
        print(f"    {'':<14} {'samples':<23} {'switch':>7}" + "".join(f" {f'+{d} µs':>7}" for d in WAKE_OFFSETS_US)
              + f" {'gilscope':>8}")

        def line(label, row, switch_known):
            n = row["n"]
            switch = f"{row['switch'] / n:7.3f}" if switch_known else f"{'-':>7}"
            print(f"    {'':<14} {f'{label} ({n})':<23} {switch}"
                  + "".join(f" {row[d] / n:7.3f}" for d in WAKE_OFFSETS_US) + f" {row['gilscope'] / n:8.3f}")

        for name, kinds in sorted(wakes.items()):
            print(f"    {name:<14} {'random instants':<23} {kinds.get('random', 0.0):7.3f}")
            every = {}
            for kind in ("displaced", "busy", "idle", "idle, unrecorded"):
                if kind in kinds:
                    line(kind, kinds[kind], kind != "idle, unrecorded")
                    for key, value in kinds[kind].items():
                        every[key] = every.get(key, 0) + value
            if every:
                line("all", every, "idle, unrecorded" not in kinds)


if __name__ == "__main__":
    main()
