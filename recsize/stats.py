"""Statistics over seeds and budgets: paired differences with their Student-t intervals, the paired summary of a
grid against a baseline, which methods are within noise of the best, the area under the quality-versus-budget
curve (AUKC) and the Pareto front of bytes against quality. Explained in Chapters 5 and 8.

Every function reads plain records (dicts with ``method``, ``sparsity``, ``seed`` and the metrics), the cells
of the evidence store (:func:`recsize.experiments.load_grids`) or the records of :func:`recsize.search.compare.head_to_head`;
nothing here trains or searches. Chapters 5 and 8 import ``paired_summary``, ``within_noise``, ``pareto_points``
and ``pareto_front`` from :mod:`recsize.search.compare` (and :mod:`recsize.search`), which imports them from here.
"""
from __future__ import annotations

import numpy as np

LOWER_IS_BETTER = ("logloss",)


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """The mean of the paired differences a_i - b_i (one pair per seed: the seeds share splits) with its
    Student-t interval at ``confidence``; the interval is None below two pairs. Explained in Chapter 8."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired values need two equally long, non-empty lists, got {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d = a - b
    out = {"n": len(d), "mean": float(d.mean()), "low": None, "high": None, "confidence": confidence}
    if len(d) > 1:
        from scipy.stats import t
        half = float(t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
        out.update(low=out["mean"] - half, high=out["mean"] + half)
    return out


def paired_summary(runs: list[dict], baseline: str = "es-bytes", metric: str = "recall@20",
                   methods=None) -> list[dict]:
    """Per (sparsity, method): the cells by seed, the mean of ``metric`` and its paired difference to
    ``baseline`` over the seeds both ran (:func:`paired_difference`; None for the baseline itself or without
    a shared seed). ``methods`` sets which methods and their order (default: as they first appear).
    Explained in Chapter 5."""
    methods = list(methods) if methods is not None else list(dict.fromkeys(r["method"] for r in runs))
    by = {(r["method"], r["sparsity"], r["seed"]): r for r in runs}
    rows = []
    for c in sorted({r["sparsity"] for r in runs}):
        for m in methods:
            cells = {s: r for (mm, cc, s), r in sorted(by.items(), key=lambda kv: kv[0][2]) if (mm, cc) == (m, c)}
            if not cells:
                continue
            both = [s for s in cells if (baseline, c, s) in by]
            delta = None
            if m != baseline and both:
                delta = paired_difference([cells[s][metric] for s in both], [by[baseline, c, s][metric] for s in both])
            rows.append({"sparsity": c, "method": m, "cells": cells,
                         "mean": float(np.mean([r[metric] for r in cells.values()])), "delta": delta})
    return rows


def within_noise(runs: list[dict], metric: str = "recall@20", methods=None) -> list[dict]:
    """What to use at each budget, read off the seeds: per sparsity, the method with the best mean of
    ``metric`` (the highest, the lowest for log loss) and every other method's paired difference to it
    with its 95 % interval (:func:`paired_summary` with the best as baseline). ``tied`` marks the best
    and every method whose interval includes 0, or that shares fewer than two seeds with it (no
    interval: not shown to be worse). ``methods`` restricts and orders the candidates. Explained in
    Chapter 8."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    out = []
    for c in sorted({r["sparsity"] for r in runs}):
        here = [r for r in runs if r["sparsity"] == c]
        means = {row["method"]: row["mean"] for row in paired_summary(here, "", metric, methods)}
        if not means:
            continue
        best = max(means, key=lambda m: sign * means[m])
        rows = []
        for row in sorted(paired_summary(here, best, metric, methods), key=lambda r: -sign * r["mean"]):
            d = row["delta"]
            tied = row["method"] == best or d is None or d["low"] is None or d["low"] <= 0 <= d["high"]
            rows.append({"method": row["method"], "mean": row["mean"], "n": len(row["cells"]), "delta": d,
                         "tied": tied})
        out.append({"sparsity": c, "best": best, "rows": rows})
    return out


def aukc(runs: list[dict], method: str, metric: str = "recall@20", baseline: str = "es-bytes",
         confidence: float = 0.95) -> dict | None:
    """The area under ``method``'s quality-versus-budget curve, normalised by ``baseline``'s on the same
    seed: one number per method over all budgets (the idea of AUKC in ERASE, Jia et al., KDD'24: the
    area under the curve of quality against the kept share). Explained in Chapter 8.

    Per seed, over the budgets (sparsities c) that both the method and the baseline ran on that seed, the
    trapezoid rule integrates ``metric`` over the kept fraction 1 - c (the budget axis, not log bytes: at
    equal bytes both curves share their x values, whereas measured bytes differ between storage forms by
    padding and offsets and would give the two areas different spans). A seed needs at least two shared
    budgets, else it is left out. The normalised area (``ratio``) is the method's area over the
    baseline's: 1 is the baseline, above 1 better for Recall / NDCG / AUC (below 1 better for log loss).

    Returns None when no seed has two shared budgets; else ``per_seed`` (seed -> area, baseline area,
    ratio and the densities integrated over), ``ratio`` (mean, low, high: the Student-t interval of the
    per-seed ratios, :func:`paired_difference` of the ratios against 1, shifted by 1; low / high None
    below two seeds) and ``difference`` (:func:`paired_difference` of the areas, method minus baseline)."""
    by = {(r["method"], r["sparsity"], r["seed"]): r[metric] for r in runs if metric in r}
    per_seed = {}
    for seed in sorted({s for (m, _, s) in by if m == method}):
        shared = sorted(c for (m, c, s) in by if m == method and s == seed and (baseline, c, seed) in by)
        if len(shared) < 2:
            continue
        x = np.array([1 - c for c in shared])[::-1]   # kept fraction, ascending
        mine = np.array([by[method, c, seed] for c in shared])[::-1]
        base = np.array([by[baseline, c, seed] for c in shared])[::-1]
        area, base_area = (float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x))) for y in (mine, base))
        per_seed[seed] = {"area": area, "baseline_area": base_area, "ratio": area / base_area,
                          "densities": [round(float(v), 12) for v in x]}
    if not per_seed:
        return None
    ratios = [v["ratio"] for v in per_seed.values()]
    shift = paired_difference(ratios, np.ones(len(ratios)), confidence)
    ratio = {"n": shift["n"], "mean": 1 + shift["mean"], "low": None if shift["low"] is None else 1 + shift["low"],
             "high": None if shift["high"] is None else 1 + shift["high"], "confidence": confidence}
    difference = paired_difference([v["area"] for v in per_seed.values()],
                                   [v["baseline_area"] for v in per_seed.values()], confidence)
    return {"method": method, "baseline": baseline, "metric": metric, "per_seed": per_seed, "ratio": ratio,
            "difference": difference}


def pareto_front(bytes_, quality, higher_is_better: bool = True) -> np.ndarray:
    """Indices of the points that no other point dominates (at most the bytes and at least the quality,
    one of them strictly), ordered by bytes then quality. Chapter 8."""
    x = np.asarray(bytes_, dtype=np.float64)
    y = np.asarray(quality, dtype=np.float64) * (1 if higher_is_better else -1)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"bytes and quality must be two equally long 1-D sequences, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("bytes and quality must be finite")
    front = [i for i in range(len(x))
             if not np.any((x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i])))]
    return np.array(sorted(front, key=lambda i: (x[i], -y[i])), dtype=np.int64)


def pareto_points(records: list[dict], metric: str) -> list[dict]:
    """One point per (method, sparsity): mean compact bytes and mean ``metric`` over seeds, and whether it
    lies on the Pareto front. Chapter 8."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["method"], r["sparsity"]), []).append(r)
    points = [{"method": m, "sparsity": c, "compact_bytes": float(np.mean([r["compact_bytes"] for r in rs])),
               metric: float(np.mean([r[metric] for r in rs])), "n": len(rs)} for (m, c), rs in groups.items()]
    front = set(pareto_front([p["compact_bytes"] for p in points], [p[metric] for p in points],
                             metric not in LOWER_IS_BETTER).tolist())
    for i, p in enumerate(points):
        p["on_front"] = i in front
    return points
