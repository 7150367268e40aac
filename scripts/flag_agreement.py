#!/usr/bin/env python3
"""How often gilscope's inference agrees with CPython 3.15's own thread flags.

On 3.15 every thread state carries `holds_gil` and `gil_requested`, written by take_gil
and drop_gil themselves. gilscope takes them as the truth of who holds the GIL and who
waits for it, and compares, sample by sample, what its inference (the GIL struct, /proc,
the handoff resolution every older version relies on) said of the same threads. This
runs each workload of fixtures/workload.py under `gilscope record` and prints report.json's
`gil.thread_flags`: the share of samples in which every thread agreed, and of thread states.

Usage (as root, from the repository root, after `cargo build --release`):

    python3 scripts/flag_agreement.py --python /opt/gilscope-pythons/3.15/usr/bin/python3.15
                                      [--workloads cpu_threads,convoy,...] [--seconds 5]
                                      [--gilscope BIN] [--target-cpus LIST]

`--target-cpus 0` runs the workload under `taskset -c 0`: gilscope's sampler then keeps to
the other CPUs, and the workload's threads queue for its one CPU.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = "cpu_threads,convoy,asyncio_server,hashers,asyncio_echo,json_pool,queue_pipeline"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/opt/gilscope-pythons/3.15/usr/bin/python3.15")
    parser.add_argument("--workloads", default=DEFAULT)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--target-cpus", dest="target_cpus",
                        help="run the workload on these CPUs only (taskset -c LIST)")
    parser.add_argument("--gilscope", default=os.path.join(ROOT, "target", "release", "gilscope"),
                        help="the gilscope binary (another build, to compare)")
    args = parser.parse_args()
    gilscope = args.gilscope
    if not os.path.exists(gilscope):
        sys.exit("build gilscope first: cargo build --release")
    print(f"load average {os.getloadavg()[0]:.1f}; {args.python}")
    print(f"{'workload':16} {'samples':>8} {'samples agreeing':>17} {'thread states agreeing':>23}")
    for kind in args.workloads.split(","):
        with tempfile.TemporaryDirectory() as out:
            cmd = [
                gilscope, "record", "--verify-flags",
                "--duration", str(args.seconds), "--rate", str(args.rate),
                "--output", out, "--",
                *(["taskset", "-c", args.target_cpus] if args.target_cpus else []),
                args.python, os.path.join(ROOT, "fixtures", "workload.py"),
                kind, "--seconds", str(args.seconds + 10),
            ]
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            try:
                with open(os.path.join(out, "report.json")) as f:
                    flags = json.load(f)["gil"].get("thread_flags")
            except (OSError, ValueError, KeyError):
                flags = None
        if not flags:
            print(f"{kind:16} no thread-flag check (is {args.python} a 3.15?)")
            continue
        print(
            f"{kind:16} {flags['samples']:>8} {flags['sample_agreement']:>17.3f} "
            f"{flags['thread_agreement']:>23.3f}"
        )


if __name__ == "__main__":
    main()
