#!/usr/bin/env python3
"""Markdown tables for docs/accuracy.md from `scripts/accuracy.py --json` files.

    python3 scripts/accuracy_tables.py LABEL=AFTER.json[:BEFORE.json] ...

One LABEL (e.g. a Python version) per argument; BEFORE is optional (the same runs made
with an older gilscope). Prints the largest error per workload ("uprobe truth / store
truth", see `cell`), then, per workload, one row per version, truth and thread: the truth
(its waiting less the probes' own time, where the file has that), gilscope after (and
before), and py-spy's `--gil` share when it was run.
"""

import json
import sys

from accuracy import TRUTHS, error, raw_error


def load(path):
    """{workload: [runs]}: one run per truth and repetition."""
    runs = {}
    with open(path) as f:
        for run in json.load(f):
            runs.setdefault(run["workload"], []).append(run)
    return runs


def cell(runs):
    """The largest error of a workload's runs: "uprobe / store", each against its truth
    less the probes' own time, from files whose runs each measured one truth. Files from
    before that measured both in one run: "uprobe as measured / store less the probes",
    or the first alone when the file has no store truth."""
    by_truth = {}
    for run in runs:
        by_truth.setdefault(run.get("truth"), []).extend(run["threads"])
    if None not in by_truth:
        return " / ".join(f"{max(map(error, by_truth[t])):.3f}" for t in TRUTHS if t in by_truth)
    rows = by_truth[None]
    raw = max(map(raw_error, rows))
    if any("store_held" in r for r in rows):
        return f"{raw:.3f} / {max(map(error, rows)):.3f}"
    return f"{raw:.3f}"


def main():
    sets = []
    for arg in sys.argv[1:]:
        label, paths = arg.split("=", 1)
        after, _, before = paths.partition(":")
        sets.append((label, load(after), load(before) if before else {}))
    workloads = list(dict.fromkeys(w for _, after, _ in sets for w in after))
    print("| workload | " + " | ".join(f"{label} before | {label} after" for label, _, _ in sets) + " |")
    print("|---|" + "---|---|" * len(sets))
    for w in workloads:
        cells = []
        for _, after, before in sets:
            cells += [cell(before[w]) if w in before else "-", f"**{cell(after[w])}**" if w in after else "-"]
        print(f"| {w} | " + " | ".join(cells) + " |")
    for w in workloads:
        print(f"\n#### {w}\n")
        print("| Python | truth | thread | held truth | held after | held before | py-spy held "
              "| wait truth | wait after | wait before |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, after, before in sets:
            for run in after.get(w, []):
                truth = run.get("truth", "uprobe")
                old = {t["name"]: t for r in before.get(w, []) if r.get("truth", "uprobe") == truth
                       for t in r["threads"]}
                for t in run["threads"]:
                    o = old.get(t["name"])
                    spy = t.get("pyspy_held")
                    wait = t.get("true_wait_less_probes", t["true_wait"])
                    print(f"| {label} (load {run['load']:.0f}) | {truth} | {t['name']} | {t['true_held']:.3f} "
                          f"| {t['held']:.3f} | {o['held'] if o else float('nan'):.3f} "
                          f"| {'-' if spy is None else f'{spy:.3f}'} | {wait:.3f} | {t['wait']:.3f} "
                          f"| {o['wait'] if o else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
