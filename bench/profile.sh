#!/usr/bin/env bash
# Where a gilscope sample's time goes: perf on `gilscope record` at 1000 Hz against a
# 50-thread bench/target.py, and the syscalls one sample makes (strace -c, the difference
# between a long and a short recording divided by the difference in samples).
#
#   sudo bench/profile.sh [PYTHON] [THREADS]
#
# Needs perf (apt-get install -y linux-perf) and strace. Hardware counters are often missing
# in VMs (`perf stat -e instructions true` says "<not supported>"); the cpu-clock software
# event works everywhere. Writes perf.data into a temp dir and prints the reports.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${1:-python3}
threads=${2:-50}
gilscope=${CARGO_TARGET_DIR:-$root/target}/release/gilscope
work=$(mktemp -d /tmp/gilscope-profile.XXXXXX)
trap 'kill "$target" 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$root" && cargo build --release --quiet)
"$python" "$here/target.py" --threads "$threads" --cpu 2 >"$work/ready" &
target=$!
for _ in $(seq 600); do grep -q READY "$work/ready" && break; sleep 0.1; done
grep -q READY "$work/ready" || { echo "profile: target not ready" >&2; exit 1; }
# The reports below are cut with head; without pipefail, that ends no pipeline in error.

echo "== perf: gilscope record --rate 1000 -d 8 on $threads threads ($("$python" -V))"
perf record -q -F 4999 -e cpu-clock -g --call-graph dwarf,16384 -o "$work/perf.data" -- \
  "$gilscope" record --pid "$target" --rate 1000 -d 8 -o "$work/out" 2>&1 | grep Recorded
echo "-- inclusive (children), top entries"
perf report -i "$work/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
  grep '%' | grep -v -e '_start' -e 'lang_start' -e 'main' -e 'backtrace' | head -40
echo "-- by binary"
perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%'
echo "-- self time outside the kernel"
perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
  grep '%' | grep -v '\[k\]' | head -20

echo "== syscalls per sample (strace -c, 200 Hz, 2.2 s minus 0.2 s)"
for d in 0.2 2.2; do
  strace -f -c -o "$work/strace.$d" "$gilscope" record --pid "$target" --rate 200 -d "$d" \
    -o "$work/out.$d" >/dev/null 2>&1
done
"$python" - "$work" <<'EOF'
import json, sys
work = sys.argv[1]
def counts(d):
    out = {}
    for line in open(f"{work}/strace.{d}"):
        f = line.split()
        if len(f) >= 5 and f[-1].isidentifier() and f[3].isdigit():
            out[f[-1]] = int(f[3])
    return out, json.load(open(f"{work}/out.{d}/report.json"))["samples"]
(c0, s0), (c1, s1) = counts("0.2"), counts("2.2")
n = s1 - s0
for name in sorted(c1, key=lambda k: -(c1[k] - c0.get(k, 0))):
    per = (c1[name] - c0.get(name, 0)) / n
    if per >= 0.2:
        print(f"{name:20} {per:8.1f}")
EOF
