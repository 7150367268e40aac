#!/usr/bin/env python3
"""Markdown tables for docs/accuracy.md from `scripts/accuracy.py --json` files.

    python3 scripts/accuracy_tables.py LABEL=AFTER.json[:BEFORE.json] ...

One LABEL (e.g. a Python version) per argument; BEFORE is optional (the same runs made
with an older gilscope). Prints, per workload, one row per version and thread: the uprobe
truth, gilscope after (and before), and py-spy's `--gil` share when it was run.
"""

import json
import sys


def load(path):
    with open(path) as f:
        return {run["workload"]: run for run in json.load(f)}


def error(t):
    return max(abs(t["held"] - t["true_held"]), abs(t["wait"] - t["true_wait"]))


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
            b = max(map(error, before[w]["threads"])) if w in before else None
            a = max(map(error, after[w]["threads"])) if w in after else None
            cells += [f"{b:.3f}" if b is not None else "-", f"**{a:.3f}**" if a is not None else "-"]
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
