"""Two or more gilscope builds against each other, alternated run by run.

    sudo python3 bench/ab.py OLD_BINARY NEW_BINARY [--rate 10000] [--reps 4]

The target and the measure are those of `compare.py --only peers`: bench/target.py with 5
threads (4 spinning) on --python (Debian's 3.15 by default), and the marginal CPU per sample
of `gilscope record --pid` (a 6 s run minus a 1 s run, over the difference in samples).
Every repetition runs each binary once, in the order given, against the same target process.
Prints the median and every run.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_PYTHON = "/opt/gilscope-pythons/3.15/usr/bin/python3.15"


def cpu_and_samples(binary, pid, rate, seconds):
    out = tempfile.mkdtemp(prefix="gilscope-ab-")
    proc = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--rate", str(rate), "-d", str(seconds), "-o", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{binary} record failed (wait status {status})")
    report = json.loads(Path(out, "report.json").read_text())
    return usage.ru_utime + usage.ru_stime, report["samples"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--python", default=DEFAULT_PYTHON)
    args = parser.parse_args()
    target = subprocess.Popen(
        [args.python, str(ROOT / "target.py"), "--threads", "5", "--cpu", "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = target.stdout.readline()
        pid = json.loads(ready.split(" ", 1)[1])["pid"]
        runs = {b: [] for b in args.binaries}
        for _ in range(args.reps):
            for binary in args.binaries:
                short_cpu, short_samples = cpu_and_samples(binary, pid, args.rate, 1)
                long_cpu, long_samples = cpu_and_samples(binary, pid, args.rate, 6)
                per_sample = (long_cpu - short_cpu) / (long_samples - short_samples) * 1e6
                runs[binary].append((per_sample, long_samples / 6))
        print(f"rate {args.rate} Hz, {args.reps} alternated runs, target {args.python}")
        for binary, measured in runs.items():
            us = [m[0] for m in measured]
            achieved = statistics.median(m[1] for m in measured)
            print(
                f"{binary}: median {statistics.median(us):.1f} us/sample, "
                f"runs {' '.join(f'{u:.1f}' for u in us)}, achieved {achieved:.0f} Hz"
            )
    finally:
        target.kill()


if __name__ == "__main__":
    main()
