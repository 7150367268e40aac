"""A fixed amount of pure-Python work, timed by itself, for the target-slowdown part of the
profiler benchmark (bench/compare.py).

    python work.py [--iterations N] [--idle-threads K]

Starts K idle threads (default 3, so a profiler has 4 threads to read), then writes

    READY {"pid": PID}

and waits for one line on stdin. It then runs N iterations (default 6,000,000) of a pure-Python
loop in the main thread, writes

    DONE {"wall_s": ..., "cpu_s": ..., "checksum": ...}

and exits. The checksum depends only on N: it is the same with or without a profiler.
"""

import argparse
import json
import os
import sys
import threading
import time


def work(iterations):
    x = 1
    total = 0
    for i in range(iterations):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        total += x % 7
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=6_000_000)
    parser.add_argument("--idle-threads", type=int, default=3)
    args = parser.parse_args()
    never = threading.Event()
    for i in range(args.idle_threads):
        threading.Thread(target=never.wait, name="idle-%d" % i, daemon=True).start()
    sys.stdout.write("READY " + json.dumps({"pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    if not sys.stdin.readline():
        return
    wall0, cpu0 = time.perf_counter(), time.process_time()
    checksum = work(args.iterations)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sys.stdout.write("DONE " + json.dumps({"wall_s": wall, "cpu_s": cpu, "checksum": checksum}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
