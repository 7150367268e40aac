#!/usr/bin/env python3
"""Benchmark gilscope against py-spy on the same targets, alternating the tools run by run.

    sudo python3 bench/compare.py [--reps 5] [--duration 10] [--quick] [--json FILE]

It creates a scratch venv (python3 -m venv), installs py-spy from PyPI into it, builds
gilscope with `cargo build --release`, then measures in one run:

  cpu     profiler CPU time per sample: (user + sys of the profiler process, from
          os.wait4's rusage) / samples taken, for `gilscope record --pid` and
          `py-spy record --nonblocking --pid`, at 100 and 1000 Hz, on bench/target.py with
          4 and with 50 threads. Samples taken: gilscope's report.json `samples`; py-spy's
          raw output (`--format raw --idle`, so every thread is in every sample): the sum of
          the counts divided by the number of distinct threads (py-spy's own "Samples: N"
          counts thread-samples: N / threads is the same number). Also shown: the steady-state
          cost, CPU between 1 s after the start and 1 s before the end (from
          /proc/PID/task/*/schedstat, ns resolution) over the samples expected in that window.
  slowdown  wall time of bench/work.py's fixed pure-Python work, unprofiled and under each
          profiler at 100 and 1000 Hz (profiler attached before the work starts).
  maxrate gilscope's achieved_rate_hz on a 50-thread target asked for 1000-8000 Hz; with
          --fifo also under `chrt -f 10` (SCHED_FIFO: it gets a CPU as soon as it asks), which
          shows what it sustains when the machine has a core to spare.
  memory  gilscope's peak RSS (VmHWM) during one long recording at 1000 Hz, read at 10 s,
          30 s and at the end.
  peers   gilscope, py-spy and CPython 3.15's own sampler on 4 threads contending for the
          GIL at 1, 10 and 20 kHz: marginal CPU per sample, achieved rate, peak RSS, and
          gilscope's syscalls per sample (bench/peers.py). --target-python picks the
          interpreter gilscope and py-spy read, --peer-python the 3.15 the sampler reads.
          Beside them, examples/wake_floor: gilscope's schedule with no work between
          wake-ups, what any sampler that sleeps between samples pays on this machine.
  accuracy scripts/accuracy.py with the same build (not in the default set: it needs perf):
          each workload's largest error against the uprobe truth, printed beside the costs.

Each figure is the median of --reps runs. Ratios are gilscope / py-spy. The machine, its load
before and after, and the versions are printed with the table. Needs root (or
CAP_SYS_PTRACE) for both profilers.
"""

import argparse
import json
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
READY_TIMEOUT = 60.0
POLL = 0.05
# Niceness of the targets and the profilers (--nice): on a shared machine, a negative value
# keeps background load from starving what is measured.
NICE = 0


def niced():
    if NICE:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)


# ---------------------------------------------------------------------------------------
# Setup


def sh(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def setup_py_spy(venv, version):
    py_spy = venv / "bin" / "py-spy"
    if not (venv / "bin" / "python").exists():
        print(f"bench: creating venv {venv}", file=sys.stderr)
        sh([sys.executable, "-m", "venv", str(venv)])
    if not py_spy.exists() or version:
        spec = f"py-spy=={version}" if version else "py-spy"
        print(f"bench: pip install {spec}", file=sys.stderr)
        sh([str(venv / "bin" / "pip"), "install", "-q", spec])
    out = subprocess.run([str(py_spy), "--version"], capture_output=True, text=True).stdout
    return py_spy, out.strip()


def build_gilscope(skip):
    if not skip:
        print("bench: cargo build --release", file=sys.stderr)
        sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
        sh(["cargo", "build", "--release", "--quiet", "--example", "wake_floor"], cwd=ROOT)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target_dir / "release" / "gilscope"
    if not binary.exists():
        sys.exit(f"bench: {binary} not found")
    return binary


def wake_floor_binary():
    """examples/wake_floor (built with gilscope): gilscope's schedule with no work."""
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target_dir / "release" / "examples" / "wake_floor"
    if not binary.exists():
        sys.exit(f"bench: {binary} not found (cargo build --release --example wake_floor)")
    return binary


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "gilscope_rev": rev + ("+dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def version_of(python):
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return f"{out} ({python})"


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


# ---------------------------------------------------------------------------------------
# Processes


class Target:
    """A Python workload started until its READY line; killed on exit."""

    def __init__(self, python, script, args, stdin=False):
        self.proc = subprocess.Popen(
            [python, str(BENCH / script), *map(str, args)],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=niced,
        )
        self.pid = self.proc.pid
        self.ready = json.loads(self.read_line("READY ")[len("READY ") :])

    def read_line(self, prefix, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.close()
                sys.exit(f"bench: {self.proc.args} printed no {prefix!r} line in {timeout} s")
            line = self.proc.stdout.readline()
            if not line:
                sys.exit(f"bench: {self.proc.args} exited without a {prefix!r} line")
            if line.startswith(prefix):
                return line.strip()

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def task_cpu_ns(pid):
    """(on-CPU ns, runqueue-wait ns) summed over the process's threads."""
    cpu = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            fields = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
        except OSError:
            continue
        cpu += int(fields[0])
        wait += int(fields[1])
    return cpu, wait


def memory_kib(pid):
    """VmHWM (peak RSS so far), VmRSS and RssAnon of a process, in KiB; None once gone."""
    wanted = ("VmHWM", "VmRSS", "RssAnon")
    found = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0])
    except OSError:
        return None
    return found if len(found) == len(wanted) else None


class Profiler:
    """One profiler run: started now, measured until it exits."""

    def __init__(self, argv, checkpoints=()):
        self.argv = [str(a) for a in argv]
        self.out = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdout=self.out, stderr=subprocess.STDOUT, preexec_fn=niced
        )
        self.pid = self.proc.pid
        self.checkpoints = sorted(checkpoints)
        # Checkpoint (seconds, or "end") -> the last memory_kib() read before it.
        self.memory_at = {}

    def attached(self, kind, target_pid, timeout=30.0):
        """Waits until the profiler reads the target: gilscope keeps the target's
        /proc/PID/task/TID/syscall files open once it samples; py-spy starts its sampler
        thread. Then lets it settle for 0.3 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if kind == "gilscope":
                try:
                    fds = os.listdir(f"/proc/{self.pid}/fd")
                    links = [os.readlink(f"/proc/{self.pid}/fd/{fd}") for fd in fds]
                except OSError:
                    links = []
                if any(f"/proc/{target_pid}/task/" in link for link in links):
                    break
            else:
                try:
                    if len(os.listdir(f"/proc/{self.pid}/task")) >= 2:
                        break
                except OSError:
                    pass
            time.sleep(POLL)
        time.sleep(0.3)

    def wait(self):
        """Waits for exit; returns a dict of measurements. The steady-state CPU is taken from
        1 s after the start to 1 s before the last poll (the profiler's own threads'
        schedstat: on-CPU and runqueue-wait ns)."""
        series = []
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            elapsed = time.monotonic() - self.started
            memory = memory_kib(self.pid)
            if memory is not None:
                self.memory_at["end"] = memory
                for c in self.checkpoints:
                    if elapsed <= c:
                        self.memory_at[c] = memory
            cpu = task_cpu_ns(self.pid)
            if cpu:
                series.append((elapsed, *cpu))
            time.sleep(POLL)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.wall = time.monotonic() - self.started
        self.out.seek(0)
        self.output = self.out.read().decode(errors="replace")
        result = {
            "code": self.proc.returncode,
            "wall_s": self.wall,
            "cpu_s": rusage.ru_utime + rusage.ru_stime,
            "maxrss_kib": rusage.ru_maxrss,
            "memory_kib": self.memory_at,
        }
        inner = [s for s in series if 1.0 <= s[0] <= self.wall - 1.0]
        if len(inner) >= 2:
            a, b = inner[0], inner[-1]
            result["window_s"] = b[0] - a[0]
            result["window_cpu_s"] = (b[1] - a[1]) / 1e9
            result["window_runqueue_s"] = (b[2] - a[2]) / 1e9
        return result


# ---------------------------------------------------------------------------------------
# The tools


def gilscope_record(binary, pid, rate, duration, outdir):
    binary = binary if isinstance(binary, list) else [binary]
    return [*binary, "record", "--pid", pid, "--rate", rate, "--duration", duration, "-o", outdir]


def gilscope_samples(outdir):
    report = json.load(open(Path(outdir) / "report.json"))
    return report["samples"], report


def py_spy_record(py_spy, pid, rate, duration, out):
    # --idle: every thread in every sample, like gilscope; --threads: a root frame per thread
    # ("thread (TID): name"), to count them; --duration takes whole seconds.
    return [py_spy, "record", "--pid", pid, "--rate", rate, "--duration", int(round(duration)),
            "--nonblocking", "--idle", "--threads", "--format", "raw", "-o", out]


def py_spy_samples(raw_file, output):
    """Samples = sum of the raw counts / distinct threads ("thread (TID): ..." roots)."""
    total = 0
    threads = set()
    for line in open(raw_file):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        threads.add(stack.split(";", 1)[0].split(":", 1)[0])
    samples = total / len(threads) if threads else 0
    m = re.search(r"Samples: (\d+) Errors: (\d+)", output)
    own = int(m.group(1)) if m else None
    errors = int(m.group(2)) if m else None
    return samples, {"thread_samples": total, "threads": len(threads), "py_spy_says": own,
                     "errors": errors}


# ---------------------------------------------------------------------------------------
# Measurements


def run_tool(tool, ctx, pid, rate, duration, checkpoints=()):
    with tempfile.TemporaryDirectory(prefix="gilscope-bench-") as tmp:
        if tool == "gilscope":
            argv = gilscope_record(ctx.gilscope, pid, rate, duration, Path(tmp) / "out")
        else:
            argv = py_spy_record(ctx.py_spy, pid, rate, duration, Path(tmp) / "raw.txt")
        prof = Profiler(argv, checkpoints)
        run = prof.wait()
        if tool == "gilscope":
            if run["code"] not in (0, 10):
                sys.exit(f"bench: {' '.join(prof.argv)} failed ({run['code']}): {prof.output}")
            samples, report = gilscope_samples(Path(tmp) / "out")
            run["achieved_hz"] = report["achieved_rate_hz"]
            run["missed"] = report["missed_samples"]
            run["torn"] = report["torn_samples"]
        else:
            if run["code"] != 0:
                sys.exit(f"bench: {' '.join(prof.argv)} failed ({run['code']}): {prof.output}")
            samples, detail = py_spy_samples(Path(tmp) / "raw.txt", prof.output)
            run.update(detail)
            # py-spy stops after duration * rate samples, however long they take.
            run["achieved_hz"] = samples / run["wall_s"]
    run["samples"] = samples
    run["cpu_per_sample_us"] = 1e6 * run["cpu_s"] / samples if samples else float("nan")
    if "window_cpu_s" in run and samples:
        expected = run["achieved_hz"] * run["window_s"]
        run["steady_per_sample_us"] = 1e6 * run["window_cpu_s"] / expected
    return run


def bench_cpu(ctx, log):
    results = {}
    for threads in ctx.threads:
        with Target(ctx.python, "target.py", ["--threads", threads, "--cpu", ctx.cpu]) as target:
            for rate in ctx.rates:
                for rep in range(ctx.reps):
                    tools = ["gilscope", "py-spy"] if rep % 2 == 0 else ["py-spy", "gilscope"]
                    for tool in tools:
                        run = run_tool(tool, ctx, target.pid, rate, ctx.duration)
                        results.setdefault((tool, threads, rate), []).append(run)
                        log(f"cpu {tool:8} {threads:3} threads {rate:5} Hz rep {rep}: "
                            f"{run['cpu_per_sample_us']:.0f} us/sample, {run['samples']:.0f} "
                            f"samples ({run['achieved_hz']:.0f} Hz), cpu {run['cpu_s']:.2f} s")
    return results


def bench_slowdown(ctx, log):
    configs = [("none", 0)] + [(tool, rate) for tool in ("gilscope", "py-spy") for rate in ctx.rates]
    results = {}
    checksums = set()
    for rep in range(ctx.reps):
        order = configs[rep % len(configs):] + configs[: rep % len(configs)]
        for tool, rate in order:
            with Target(ctx.python, "work.py", ["--iterations", ctx.iterations], stdin=True) as work:
                prof = None
                tmp = tempfile.TemporaryDirectory(prefix="gilscope-bench-")
                if tool == "gilscope":
                    argv = gilscope_record(ctx.gilscope, work.pid, rate, 300, Path(tmp.name) / "o")
                elif tool == "py-spy":
                    argv = py_spy_record(ctx.py_spy, work.pid, rate, 300, Path(tmp.name) / "r")
                if tool != "none":
                    prof = Profiler(argv)
                    prof.attached(tool, work.pid)
                work.send("go\n")
                done = json.loads(work.read_line("DONE ", timeout=600)[len("DONE ") :])
                work.proc.wait()
                if prof:
                    prof.wait()
                tmp.cleanup()
            checksums.add(done["checksum"])
            results.setdefault((tool, rate), []).append(done)
            log(f"slowdown {tool:8} {rate:5} Hz rep {rep}: {done['wall_s']:.3f} s wall, "
                f"{done['cpu_s']:.3f} s cpu")
    if len(checksums) != 1:
        sys.exit(f"bench: work.py's checksum changed under a profiler: {checksums}")
    return results


def bench_maxrate(ctx, log):
    """Per mode: "normal", and with --fifo "fifo" (gilscope under `chrt -f 10`, so it gets a
    CPU whenever it asks: what it sustains on a machine with a core to spare)."""
    results = {}
    modes = ["normal"] + (["fifo"] if ctx.fifo else [])
    with Target(ctx.python, "target.py", ["--threads", 50, "--cpu", ctx.cpu]) as target:
        for rep in range(ctx.max_reps):
            for mode in modes:
                for rate in ctx.max_rates:
                    binary = ctx.gilscope
                    if mode == "fifo":
                        ctx.gilscope = ["chrt", "-f", "10", binary]
                    try:
                        run = run_tool("gilscope", ctx, target.pid, rate, ctx.max_duration)
                    finally:
                        ctx.gilscope = binary
                    results.setdefault((mode, rate), []).append(run)
                    log(f"maxrate {mode:6} {rate:5} Hz rep {rep}: achieved "
                        f"{run['achieved_hz']:.0f} Hz, cpu {run['cpu_s']:.2f} s in "
                        f"{run['wall_s']:.1f} s, runqueue wait "
                        f"{run.get('window_runqueue_s', float('nan')):.2f} s")
    return results


def bench_memory(ctx, log):
    seconds = ctx.memory_seconds
    # The last checkpoint is 5 s before the end: the end itself includes writing the outputs.
    checkpoints = sorted({c for c in (10, 30, seconds - 5) if 0 < c < seconds})
    with Target(ctx.python, "target.py", ["--threads", 50, "--cpu", ctx.cpu]) as target:
        run = run_tool("gilscope", ctx, target.pid, 1000, seconds, checkpoints)
    log(f"memory 1000 Hz {seconds} s: {run['memory_kib']}, maxrss {run['maxrss_kib']} KiB, "
        f"{run['samples']} samples")
    return run


# ---------------------------------------------------------------------------------------
# The table


def med(runs, key):
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def table(ctx, cpu, slow, maxrate, memory):
    lines = []
    add = lines.append
    if cpu:
        cpu_table(ctx, cpu, add)
    if slow:
        slowdown_table(ctx, slow, add)
    if maxrate:
        maxrate_table(ctx, maxrate, add)
    if memory:
        memory_table(ctx, memory, add)
    return "\n".join(lines)


def cpu_table(ctx, cpu, add):
    add("### Profiler CPU per sample (median of %d runs of %g s)" % (ctx.reps, ctx.duration))
    add("")
    add("| threads | rate | gilscope µs/sample | py-spy µs/sample | ratio | gilscope steady µs | "
        "py-spy steady µs | steady ratio | achieved Hz gilscope / py-spy |")
    add("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for threads in ctx.threads:
        for rate in ctx.rates:
            g, p = cpu[("gilscope", threads, rate)], cpu[("py-spy", threads, rate)]
            gc, pc = med(g, "cpu_per_sample_us"), med(p, "cpu_per_sample_us")
            gs, ps = med(g, "steady_per_sample_us"), med(p, "steady_per_sample_us")
            add(f"| {threads} | {rate} | {gc:.0f} | {pc:.0f} | {ratio(gc, pc):.2f} | {gs:.0f} | "
                f"{ps:.0f} | {ratio(gs, ps):.2f} | {med(g, 'achieved_hz'):.0f} / "
                f"{med(p, 'achieved_hz'):.0f} |")
    add("")


def slowdown_table(ctx, slow, add):
    base = med(slow[("none", 0)], "wall_s")
    add("### Target slowdown: bench/work.py wall time (median of %d runs)" % ctx.reps)
    add("")
    base_cpu = med(slow[("none", 0)], "cpu_s")
    add("| profiler | rate | wall s | slowdown (wall) | target CPU s | slowdown (CPU) |")
    add("|---|---:|---:|---:|---:|---:|")
    add(f"| none | - | {base:.3f} | - | {base_cpu:.3f} | - |")
    for tool in ("gilscope", "py-spy"):
        for rate in ctx.rates:
            wall = med(slow[(tool, rate)], "wall_s")
            cpu = med(slow[(tool, rate)], "cpu_s")
            add(f"| {tool} | {rate} | {wall:.3f} | {100 * (wall / base - 1):+.1f}% | "
                f"{cpu:.3f} | {100 * (cpu / base_cpu - 1):+.1f}% |")
    add("")


def maxrate_table(ctx, maxrate, add):
    add("### Highest rate gilscope sustains, 50 threads (median of %d runs of %g s)"
        % (ctx.max_reps, ctx.max_duration))
    add("")
    add("| scheduling | asked Hz | achieved Hz | within 5% | missed | gilscope CPU (of one core) | "
        "runqueue wait (of the window) |")
    add("|---|---:|---:|---|---:|---:|---:|")
    for (mode, rate), runs in sorted(maxrate.items()):
        got = med(runs, "achieved_hz")
        busy = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs)
        rq = med(runs, "window_runqueue_s") / med(runs, "window_s")
        label = "SCHED_FIFO (chrt -f 10)" if mode == "fifo" else f"nice {ctx.nice}"
        add(f"| {label} | {rate} | {got:.0f} | {'yes' if got >= 0.95 * rate else 'no'} | "
            f"{med(runs, 'missed'):.0f} | {100 * busy:.0f}% | {100 * rq:.0f}% |")
    add("")


def memory_table(ctx, memory, add):
    add("### gilscope peak memory at 1000 Hz, 50 threads (one run of %g s)" % ctx.memory_seconds)
    add("")
    add("| at | VmHWM KiB (peak so far) | VmRSS KiB | RssAnon KiB |")
    add("|---|---:|---:|---:|")
    def order(item):
        return (item[0] == "end", 0 if item[0] == "end" else item[0])

    for key, m in sorted(memory["memory_kib"].items(), key=order):
        at = "end (last read, while writing outputs)" if key == "end" else f"{key:g} s"
        add(f"| {at} | {m['VmHWM']} | {m['VmRSS']} | {m['RssAnon']} |")
    add(f"| rusage maxrss | {memory['maxrss_kib']} | | |")
    add("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per CPU run")
    parser.add_argument("--python", default=shutil.which("python3"), help="the targets' interpreter")
    parser.add_argument("--cpu", type=int, default=2, help="spinning threads in each target")
    parser.add_argument("--iterations", type=int, default=15_000_000, help="work.py's work")
    parser.add_argument("--memory-seconds", type=float, default=60.0)
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "gilscope-bench-venv")
    parser.add_argument("--py-spy-version", default=None)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--only", default="cpu,slowdown,maxrate,memory,peers")
    parser.add_argument("--target-python", default=None,
                        help="peers: the interpreter gilscope and py-spy read (default: "
                             "--peer-python, else --python)")
    parser.add_argument("--peer-python", default="/opt/gilscope-pythons/3.15/usr/bin/python3.15",
                        help="peers: the CPython 3.15 whose sampler runs (on its own target)")
    parser.add_argument("--peer-short", type=int, default=1, help="seconds (whole: the 3.15 sampler takes no fraction)")
    parser.add_argument("--peer-long", type=int, default=6)
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of targets and profilers (e.g. -10 on a busy machine)")
    parser.add_argument("--accuracy-python", default=None,
                        help="accuracy: the interpreter scripts/accuracy.py measures on")
    parser.add_argument("--fifo", action="store_true",
                        help="also measure the highest rate with gilscope under chrt -f 10")
    parser.add_argument("--quick", action="store_true", help="2 reps, short runs (a smoke test)")
    parser.add_argument("--json", type=Path, help="also write every run here")
    ctx = parser.parse_args()
    if ctx.quick:
        ctx.reps, ctx.duration, ctx.memory_seconds, ctx.iterations = 2, 3.0, 12.0, 2_000_000
    ctx.threads = [4, 50]
    ctx.rates = [100, 1000]
    ctx.max_rates = [1000, 2000, 4000, 8000]
    ctx.max_reps = max(1, min(3, ctx.reps))
    ctx.max_duration = min(5.0, ctx.duration)
    if ctx.target_python is None:
        # The interpreter CPython's sampler reads, so that all three read the same one.
        peer = Path(ctx.peer_python)
        ctx.target_python = str(peer) if peer.exists() else ctx.python
    only = set(ctx.only.split(","))
    global NICE
    NICE = ctx.nice

    ctx.py_spy, py_spy_version = setup_py_spy(ctx.venv, ctx.py_spy_version)
    ctx.gilscope = build_gilscope(ctx.no_build)
    ctx.wake_floor = wake_floor_binary() if "peers" in only else None
    python_version = subprocess.run(
        [ctx.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True).stdout.strip()
    info = machine()
    info.update(python=f"{python_version} ({ctx.python})", py_spy=py_spy_version,
                load_before=loadavg())

    def log(text):
        print(f"[{time.strftime('%H:%M:%S')} load {loadavg()}] {text}", file=sys.stderr, flush=True)

    cpu = bench_cpu(ctx, log) if "cpu" in only else None
    slow = bench_slowdown(ctx, log) if "slowdown" in only else None
    maxrate = bench_maxrate(ctx, log) if "maxrate" in only else None
    memory = bench_memory(ctx, log) if "memory" in only else None
    peer_results = peers.bench_peers(sys.modules[__name__], ctx, log) if "peers" in only else None
    accuracy = bench_accuracy(ctx, log) if "accuracy" in only else None
    info["load_after"] = loadavg()

    print(f"Machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}")
    print(f"Date: {info['date']}; load average (1/5/15 min) before {info['load_before']}, "
          f"after {info['load_after']}")
    print(f"gilscope {info['gilscope_rev']}; {info['py_spy']}; targets on Python {info['python']}; "
          f"targets and profilers at nice {ctx.nice}")
    print()
    print(table(ctx, cpu, slow, maxrate, memory))
    if peer_results:
        lines = []
        versions = {"target": version_of(ctx.target_python), "peer": version_of(ctx.peer_python)}
        peers.peers_table(ctx, peer_results, lines.append, versions)
        print("\n".join(lines))
    if accuracy:
        print(accuracy_table(accuracy))
    if ctx.json:
        dump = {
            "machine": info,
            "cpu": {f"{t}/{n}/{r}": runs for (t, n, r), runs in (cpu or {}).items()},
            "slowdown": {f"{t}/{r}": runs for (t, r), runs in (slow or {}).items()},
            "maxrate": {f"{m}/{r}": runs for (m, r), runs in (maxrate or {}).items()},
            "memory": memory,
            "peers": {(k if isinstance(k, str) else f"{k[0]}/{k[1]}"): v
                      for k, v in (peer_results or {}).items()},
            "accuracy": accuracy,
        }
        ctx.json.write_text(json.dumps(dump, indent=1, default=str))


def bench_accuracy(ctx, log):
    """scripts/accuracy.py with the binary just measured, on --accuracy-python (default:
    accuracy.py's own, which carries the symbols its uprobes need): each workload's largest
    error against the uprobe truth, so that costs and accuracy come from one run of one
    build. Needs perf and root."""
    with tempfile.TemporaryDirectory(prefix="gilscope-bench-") as tmp:
        out = Path(tmp) / "accuracy.json"
        argv = [sys.executable, str(ROOT / "scripts" / "accuracy.py"),
                "--seconds", "10", "--rate", "200",
                "--gilscope", str(ctx.gilscope), "--json", str(out)]
        if ctx.accuracy_python:
            argv += ["--python", ctx.accuracy_python]
        log("accuracy: " + " ".join(argv[1:]))
        run = subprocess.run(argv, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"bench: accuracy.py failed: {run.stderr[-2000:]}")
        runs = json.loads(out.read_text())
    worst = {}
    for one in runs:
        errors = [max(abs(t["held"] - t["true_held"]), abs(t["wait"] - t["true_wait"]))
                  for t in one["threads"]]
        worst[one["workload"]] = max([worst.get(one["workload"], 0.0)] + errors)
    return {"python": version_of(runs[0]["python"]), "largest_error": worst}


def accuracy_table(accuracy):
    lines = [f"### Accuracy of the same build (scripts/accuracy.py, Python {accuracy['python']}, "
             "10 s at 200 Hz)", "",
             "| workload | largest error, any thread, held or wait |", "|---|---:|"]
    for workload, error in accuracy["largest_error"].items():
        lines.append(f"| {workload} | {error:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
