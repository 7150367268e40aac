#!/usr/bin/env python3
"""gilscope's syscalls per sample, per interpreter: the count behind README's "Syscalls".

    sudo python3 bench/syscalls.py PYTHON [PYTHON ...]

For each interpreter it starts bench/target.py with 5 threads, 4 of them spinning in pure
Python at stack depths that change every call, and counts the syscalls of
`gilscope record --rate 1000` under `strace -f -c`: a 3 s recording less a 1 s one, over the
difference in samples, so that attaching and writing the outputs cancel out (the method of
`compare.py --only peers`, which measures one interpreter). Uses target/release/gilscope
(`cargo build --release` first). Prints one line per interpreter: its version, the total,
and the calls by name.
"""

import sys
import types

import compare
import peers


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    gilscope = compare.ROOT / "target" / "release" / "gilscope"
    if not gilscope.exists():
        sys.exit("build gilscope first: cargo build --release")
    ctx = types.SimpleNamespace(gilscope=str(gilscope))
    args = ["--threads", peers.THREADS, "--cpu", peers.SPINNING]
    for python in sys.argv[1:]:
        with compare.Target(python, "target.py", args) as target:
            calls = peers.gilscope_syscalls(compare, ctx, target.pid)
        total = calls.pop("total", sum(calls.values()))
        parts = ", ".join(f"{name} {n}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1]))
        print(f"{compare.version_of(python)}: {total} a sample ({parts})", flush=True)


if __name__ == "__main__":
    main()
