#!/usr/bin/env python3
"""Summarises scripts/bench_glas.sh's results.jsonl: per tool (and recipe),
image-level accuracy pooled over the 5 folds of each seed (images right of
85), mean and sd over seeds of that and of the fold-mean image AUC, patch
accuracy, and wall time per fold. Rows of the official test
(``OFFICIAL=1``) get their own table: images right of 80 per seed, image AUC,
and the wall time end to end and of training alone.

    python scripts/glas_cv_summary.py bench-glas/results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def ms(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
official = [r for r in rows if r.get("official")]
rows = [r for r in rows if not r.get("official")]
if official:
    by_recipe = defaultdict(list)
    for r in official:
        by_recipe[(r["tool"], r.get("args", ""))].append(r)
    print("| tool | recipe | seeds | images right (per seed) | image AUC | s end to end | s training |")
    print("|---|---|---|---|---|---|---|")
    for (tool, args), runs in by_recipe.items():
        runs.sort(key=lambda r: r["seed"])
        seeds = ", ".join(str(r["seed"]) for r in runs)
        right = ", ".join(f"{r['image_correct']}/{r['images']}" for r in runs)
        auc = ms([r["image_auc"] for r in runs])
        wall = ms([r["seconds"] for r in runs])
        train = ms([r["train_seconds"] for r in runs])
        print(f"| {tool} | {args or 'default'} | {seeds} | {right} | {auc} | {wall} | {train} |")
if not rows:
    sys.exit(0)
groups = defaultdict(lambda: defaultdict(list))
for r in rows:
    key = (r["tool"], r.get("args", ""))
    groups[key][r["seed"]].append(r)

print("| tool | recipe | seeds | images right (per seed) | image accuracy | image AUC (fold mean) | patch accuracy | s per fold |")
print("|---|---|---|---|---|---|---|---|")
for (tool, args), seeds in groups.items():
    right, acc, auc, pacc, secs = [], [], [], [], []
    for seed, folds in sorted(seeds.items()):
        n = sum(f["images"] for f in folds)
        k = sum(round(f["image_accuracy"] * f["images"]) for f in folds)
        right.append(f"{k}/{n}" + ("" if len(folds) == 5 else f" ({len(folds)} folds)"))
        acc.append(k / n)
        auc.append(statistics.mean(f["image_auc"] for f in folds))
        pacc.append(statistics.mean(f["patch_accuracy"] for f in folds))
        secs += [f.get("seconds", f.get("train_seconds", float("nan"))) for f in folds]
    print(f"| {tool} | {args or 'default'} | {', '.join(map(str, sorted(seeds)))} | "
          f"{', '.join(right)} | {ms(acc)} | {ms(auc)} | {ms(pacc)} | {statistics.mean(secs):.0f} |")
