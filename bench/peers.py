"""gilscope, py-spy and CPython 3.15's own sampler side by side (`compare.py --only peers`).

Target: bench/target.py with 5 threads, 4 of them spinning in pure Python (contending for
the GIL) and the main thread idle. gilscope and py-spy read a target on --target-python;
CPython's sampler (`python3.15 -m profiling.sampling attach -a`) can only read its own
version, so it reads the same workload on --peer-python. By default --target-python is that
same interpreter, so all three read one version; the table says which each read.

For each rate (1, 10, 20 kHz; py-spy at 1 kHz only, see PY_SPY_RATES) and repetition, the
tools run one after the other, in an order that rotates every repetition, each for
--peer-short and --peer-long seconds:

  marginal us/sample  (CPU of the long run - CPU of the short run)
                      / (samples of the long run - samples of the short run):
                      start-up, attaching and writing the output cancel out.
  achieved Hz         samples of the long run / its length.
  maxrss              the profiler's peak RSS in the long run (rusage).
The floor is examples/wake_floor: gilscope's schedule (SCHED_FIFO, absolute deadlines) that
does nothing when it wakes, measured the same way per wake-up. No sampler that sleeps between
samples costs less per sample on this machine; CPython's sampler does not sleep when the next
deadline is under 100 us away (it spins), so at 10 kHz and above it pays no wake-ups.
gilscope's syscalls per sample come from `strace -c -f` on a 1 s and a 3 s recording at
1 kHz (the difference, over the difference in samples).
"""

import re
import statistics
import subprocess
import tempfile
from pathlib import Path

TOOLS = ("gilscope", "py-spy", "cpython", "floor")
RATES = (1000, 10000, 20000)
# py-spy's --duration counts samples (rate x seconds), not seconds: where it falls behind,
# a 6 s run at 20 kHz takes minutes. It runs at 1 kHz only.
PY_SPY_RATES = (1000,)
THREADS = 5
SPINNING = 4


def cpython_sampler(python, pid, rate, duration, out):
    return [python, "-m", "profiling.sampling", "attach", "-a", "-r", rate, "-d", duration,
            "--collapsed", "-o", out, pid]


def cpython_samples(output):
    """`Captured N samples in S seconds` (one sample = every thread once)."""
    m = re.search(r"Captured (\d+) samples in ([\d.]+) seconds", output)
    if not m:
        raise RuntimeError(f"no sample count in the 3.15 sampler's output: {output[-500:]}")
    return int(m.group(1)), float(m.group(2))


def one_run(compare, ctx, tool, pid, rate, duration):
    """One recording; returns {cpu_s, samples, seconds, maxrss_kib}."""
    if tool == "floor":
        prof = compare.Profiler([ctx.wake_floor, rate, duration])
        run = prof.wait()
        m = re.search(r"WAKES (\d+) SECONDS ([\d.]+)", prof.output)
        if run["code"] != 0 or not m:
            raise SystemExit(f"bench: wake_floor failed: {prof.output}")
        return {"cpu_s": run["cpu_s"], "samples": int(m.group(1)), "seconds": float(m.group(2)),
                "maxrss_kib": run["maxrss_kib"]}
    if tool in ("gilscope", "py-spy"):
        run = compare.run_tool(tool, ctx, pid, rate, duration)
        seconds = run["samples"] / run["achieved_hz"] if run["achieved_hz"] else duration
        return {"cpu_s": run["cpu_s"], "samples": run["samples"], "seconds": seconds,
                "maxrss_kib": run["maxrss_kib"]}
    # Under heavy load the 3.15 sampler now and then fails to attach ("Failed to find the
    # PyRuntime section"): such a run is retried, up to twice.
    for attempt in range(3):
        with tempfile.TemporaryDirectory(prefix="gilscope-bench-") as tmp:
            argv = cpython_sampler(ctx.peer_python, pid, rate, duration, Path(tmp) / "c.txt")
            prof = compare.Profiler(argv)
            run = prof.wait()
        if run["code"] == 0:
            break
        if attempt == 2:
            raise SystemExit(f"bench: {' '.join(prof.argv)} failed: {prof.output}")
    samples, seconds = cpython_samples(prof.output)
    return {"cpu_s": run["cpu_s"], "samples": samples, "seconds": seconds,
            "maxrss_kib": run["maxrss_kib"]}


def bench_peers(compare, ctx, log):
    args = ["--threads", THREADS, "--cpu", SPINNING]
    results = {}
    with compare.Target(ctx.target_python, "target.py", args) as target, \
            compare.Target(ctx.peer_python, "target.py", args) as peer_target:
        for rep in range(ctx.reps):
            for rate in RATES:
                order = TOOLS[rep % len(TOOLS):] + TOOLS[:rep % len(TOOLS)]
                for tool in order:
                    if tool == "py-spy" and rate not in PY_SPY_RATES:
                        continue
                    pid = peer_target.pid if tool == "cpython" else target.pid
                    short = one_run(compare, ctx, tool, pid, rate, ctx.peer_short)
                    long = one_run(compare, ctx, tool, pid, rate, ctx.peer_long)
                    extra = long["samples"] - short["samples"]
                    marginal = 1e6 * (long["cpu_s"] - short["cpu_s"]) / extra if extra > 0 \
                        else float("nan")
                    run = {"marginal_us": marginal, "achieved_hz": long["samples"] / long["seconds"],
                           "maxrss_kib": long["maxrss_kib"], "short": short, "long": long}
                    results.setdefault((tool, rate), []).append(run)
                    log(f"peers {tool:8} {rate:5} Hz rep {rep}: {marginal:.1f} us/sample "
                        f"marginal, {run['achieved_hz']:.0f} Hz achieved")
        results["syscalls"] = gilscope_syscalls(compare, ctx, target.pid)
        log(f"peers gilscope syscalls/sample: {results['syscalls']}")
    return results


def gilscope_syscalls(compare, ctx, pid):
    """Syscalls per sample of `gilscope record` at 1 kHz, by name, and the total."""
    binary = ctx.gilscope if isinstance(ctx.gilscope, list) else [ctx.gilscope]
    counts, samples = {}, {}
    with tempfile.TemporaryDirectory(prefix="gilscope-bench-") as tmp:
        for seconds in (1, 3):
            trace, out = Path(tmp) / f"strace.{seconds}", Path(tmp) / f"out.{seconds}"
            argv = ["strace", "-f", "-c", "-o", trace,
                    *compare.gilscope_record(binary, pid, 1000, seconds, out)]
            subprocess.run([str(a) for a in argv], capture_output=True, check=True)
            counts[seconds] = {}
            for line in open(trace):
                f = line.split()
                if len(f) >= 5 and f[-1].isidentifier() and f[3].isdigit():
                    counts[seconds][f[-1]] = int(f[3])
            samples[seconds] = compare.gilscope_samples(out)[0]
    n = samples[3] - samples[1]
    per = {name: (counts[3][name] - counts[1].get(name, 0)) / n for name in counts[3]}
    return {name: round(value, 2) for name, value in per.items() if value >= 0.05}


def peers_table(ctx, results, add, versions):
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    add(f"### gilscope, py-spy and CPython 3.15's sampler: {SPINNING} threads contending for "
        f"the GIL (median of {ctx.reps} runs)")
    add("")
    add(f"gilscope and py-spy read Python {versions['target']}; CPython's sampler reads "
        f"Python {versions['peer']}. Marginal CPU per sample: a {ctx.peer_long:g} s minus a "
        f"{ctx.peer_short:g} s recording.")
    add("")
    add("| asked Hz | gilscope µs | py-spy µs | 3.15 sampler µs | wake floor µs | vs py-spy "
        "| vs 3.15 sampler | gilscope above the floor µs "
        "| achieved Hz gilscope / py-spy / 3.15 | maxrss KiB gilscope / py-spy / 3.15 |")
    add("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    nan = [{"marginal_us": float("nan"), "achieved_hz": float("nan"),
             "maxrss_kib": float("nan")}]
    for rate in RATES:
        g, p, c, f = (results.get((t, rate), nan) for t in TOOLS)
        gm, pm, cm, fm = (med(x, "marginal_us") for x in (g, p, c, f))
        hz = " / ".join(f"{med(x, 'achieved_hz'):.0f}" for x in (g, p, c))
        rss = " / ".join(f"{med(x, 'maxrss_kib'):.0f}" for x in (g, p, c))
        add(f"| {rate} | {gm:.1f} | {pm:.1f} | {cm:.1f} | {fm:.1f} | {gm / pm:.2f} "
            f"| {gm / cm:.2f} | {gm - fm:.1f} | {hz} | {rss} |")
    add("")
    sys_calls = results["syscalls"]
    total = sys_calls.pop("total", sum(sys_calls.values()))
    parts = ", ".join(f"{k} {v}" for k, v in sorted(sys_calls.items(), key=lambda kv: -kv[1]))
    add(f"gilscope syscalls per sample at 1 kHz ({THREADS} threads): {total} ({parts}).")
    add("")
