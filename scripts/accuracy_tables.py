#!/usr/bin/env python3
"""Markdown tables for docs/accuracy.md from `scripts/accuracy.py --json` files.

    python3 scripts/accuracy_tables.py LABEL=AFTER.json[:BEFORE.json] ...

One LABEL (e.g. a Python version) per argument; BEFORE is optional (the same runs made
with an older gilscope). Prints the largest error per workload (as "uprobe truth / store
truth" when the run measured the store truth), then, per workload, one row per version and
thread: the uprobe truth, gilscope after (and before), and py-spy's `--gil` share when it
was run.
"""

import json
import sys

from accuracy import raw_error as error, store_error


def load(path):
    with open(path) as f:
        return {run["workload"]: run for run in json.load(f)}


def cell(run):
    """The largest error of a run against the uprobe truth, and against the store truth
    when the run measured it (files from before it have no `store_held`)."""
    raw = max(map(error, run["threads"]))
    if all("store_held" in t for t in run["threads"]):
        return f"{raw:.3f} / {max(map(store_error, run['threads'])):.3f}"
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
        print("| Python | thread | held truth | held after | held before | py-spy held | wait truth | wait after | wait before |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, after, before in sets:
            if w not in after:
                continue
            old = {t["name"]: t for t in before.get(w, {}).get("threads", [])}
            load_avg = after[w]["load"]
            for t in after[w]["threads"]:
                o = old.get(t["name"])
                spy = t.get("pyspy_held")
                print(f"| {label} (load {load_avg:.0f}) | {t['name']} | {t['true_held']:.3f} | {t['held']:.3f} | "
                      f"{o['held'] if o else float('nan'):.3f} | {'-' if spy is None else f'{spy:.3f}'} | "
                      f"{t['true_wait']:.3f} | {t['wait']:.3f} | {o['wait'] if o else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
