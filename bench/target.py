"""A target for the profiler benchmark (bench/compare.py): N threads, some spinning in pure
Python, the rest idle, so every profiler reads the same stacks.

    python target.py --threads N [--cpu C] [--depth D] [--seconds S]

Threads: C of the N (default 2) run pure-Python arithmetic at the bottom of a call chain
whose depth varies from 1 to D (default 12) between calls, so the set of distinct stacks is
varied but bounded; the other N - C threads (the main thread included) block in
Event.wait(). Once every thread runs, one line is written to stdout and flushed:

    READY {"pid": PID, "threads": N}

The process exits by itself after --seconds (default 600), and asks the kernel to kill it
when the process that started it dies.
"""

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def chain(depth, work):
    if depth > 1:
        return chain(depth - 1, work)
    return spin(work)


def spin(work):
    x = 1
    for i in range(work):
        x = (x * 1103515245 + 12345 + i) & 0xFFFFFFFF
    return x


def cpu_main(index, depth, started):
    started.release()
    step = index
    while True:
        step = (step * 7 + 3) % 1009
        chain(1 + step % depth, 2000)


def idle_main(started, never):
    started.release()
    never.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True, help="threads in all, main included")
    parser.add_argument("--cpu", type=int, default=2, help="how many of them spin")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    if not 1 <= args.threads or not 0 <= args.cpu < args.threads:
        sys.exit("need --threads >= 1 and 0 <= --cpu < --threads")
    die_with_parent()
    threading.stack_size(512 * 1024)
    started = threading.Semaphore(0)
    never = threading.Event()
    workers = []
    for i in range(args.threads - 1):
        if i < args.cpu:
            t = threading.Thread(target=cpu_main, args=(i, args.depth, started), name="cpu-%d" % i)
        else:
            t = threading.Thread(target=idle_main, args=(started, never), name="idle-%d" % i)
        t.daemon = True
        t.start()
        workers.append(t)
    for _ in workers:
        started.acquire()
    sys.stdout.write("READY " + json.dumps({"pid": os.getpid(), "threads": args.threads}) + "\n")
    sys.stdout.flush()
    never.wait(args.seconds)


if __name__ == "__main__":
    main()
