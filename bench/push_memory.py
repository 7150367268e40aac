"""Memory of gilscope in continuous mode: `record --push` for a long run, read every 10 s.

    sudo python3 bench/push_memory.py [--seconds 600] [--rate 100] [--window 10]

Starts fixtures/push_receiver.py on 127.0.0.1 (answers 200, keeps the last bodies only),
fixtures/demo.py as the target (three CPU-bound threads, a socket echo pair, a ticker), and
`target/release/gilscope record --pid PID --push URL` with --duration SECONDS. Prints VmHWM,
VmRSS and RssAnon of gilscope (from /proc/PID/status) every minute, the growth of RssAnon
from the first minute to the end, and the `push` counts of report.json. Build first
(`cargo build --release`). Everything it starts is stopped at the end.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WANTED = ("VmHWM", "VmRSS", "RssAnon")


def memory_kib(pid):
    found = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in WANTED:
                    found[key] = int(value.split()[0])
    except OSError:
        return None
    return found if len(found) == len(WANTED) else None


def ready_line(proc):
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        sys.exit("no READY line from %s: %r" % (proc.args, line))
    return json.loads(line[len("READY "):])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--gilscope", default=os.path.join(ROOT, "target/release/gilscope"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="gilscope-push-bench-")
    started = []
    try:
        receiver = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "fixtures/push_receiver.py"),
             "--dir", os.path.join(scratch, "received"), "--keep", "3"],
            stdout=subprocess.PIPE, text=True)
        started.append(receiver)
        port = ready_line(receiver)["port"]
        target = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "fixtures/demo.py"),
             "--seconds", str(args.seconds + 60)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(target)
        time.sleep(1)  # let the demo start its threads; the numbers do not depend on it
        out = os.path.join(scratch, "out")
        gilscope = subprocess.Popen(
            [args.gilscope, "record", "--pid", str(target.pid), "--rate", str(args.rate),
             "--duration", str(args.seconds), "--push", "http://127.0.0.1:%d" % port,
             "--push-window", str(args.window), "-o", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started.append(gilscope)
        print("gilscope %s: pid %d, %d s at %d Hz, a %d s window, pushing to port %d"
              % (args.gilscope, gilscope.pid, args.seconds, args.rate, args.window, port))
        print("| at | VmHWM KiB | VmRSS KiB | RssAnon KiB |")
        print("|---|---:|---:|---:|")
        begin = time.monotonic()
        readings = []
        while gilscope.poll() is None:
            time.sleep(10)
            m = memory_kib(gilscope.pid)
            if m is None:
                break
            at = round(time.monotonic() - begin)
            readings.append((at, m))
            if at % 60 < 10 or at < 15:
                print("| %d s | %d | %d | %d |" % (at, m["VmHWM"], m["VmRSS"], m["RssAnon"]),
                      flush=True)
        _, stderr = gilscope.communicate()
        if gilscope.returncode != 0:
            sys.exit("gilscope exited %d: %s" % (gilscope.returncode, stderr))
        report = json.load(open(os.path.join(out, "report.json")))
        after_minute = [m for at, m in readings if at >= 60]
        if after_minute:
            first, last = after_minute[0], after_minute[-1]
            print("\nRssAnon from %d s to the end: %d -> %d KiB (%+d KiB); peak RSS %d KiB"
                  % ([at for at, _ in readings if at >= 60][0], first["RssAnon"],
                     last["RssAnon"], last["RssAnon"] - first["RssAnon"], last["VmHWM"]))
        print("samples %d at %.1f Hz; push %s"
              % (report["samples"], report["achieved_rate_hz"], json.dumps(report.get("push"))))
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
