#!/usr/bin/env bash
# The gilscope vs py-spy benchmark: see bench/compare.py for what it measures.
#
#   sudo bench/run.sh                 # 5 runs of each, ~20 minutes; prints the table
#   sudo bench/run.sh --quick         # a smoke test, ~3 minutes
#   sudo bench/run.sh --nice -10      # on a busy machine: targets and profilers first
#   sudo bench/run.sh --only peers    # gilscope, py-spy and CPython 3.15's sampler (bench/peers.py)
#   sudo bench/run.sh --only peers --target-python /opt/gilscope-pythons/3.15/usr/bin/python3.15
#
# Options are passed to compare.py (--reps, --duration, --python, --target-python,
# --peer-python, --json FILE, --only ...).
set -euo pipefail
exec python3 "$(dirname "$0")/compare.py" "$@"
