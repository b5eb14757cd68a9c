"""The result tables of README.md and benchmarks/README.md, generated from ``benchmarks/out/*.json`` and,
for the converged grids, from the evidence store ``evidence/NAME.jsonl`` (``recsize.experiments``).

The front README shows the headline tables (``headline_*``); benchmarks/README.md has every full table.
Every table sits between two markers,

    <!-- begin generated: NAME (python benchmarks/report.py) -->
    ...
    <!-- end generated: NAME -->

and is rendered here from ``benchmarks/out/NAME.json``, the file the benchmark script ``NAME.py`` writes,
or, for a table that quotes a grid (``prune_*``, ``headline_prune``, ``stackedgrid_*``, ``verdict_runs``),
from its experiment's stored cells (``load_grid``), and names that experiment.
Nothing in those tables is typed by hand: rerun a benchmark, then

    python benchmarks/report.py            # rewrite the tables in README.md and benchmarks/README.md
    python benchmarks/report.py --check    # exit 1 if either is out of date (a test runs this)
    python benchmarks/report.py --print dnis

The prose around the tables (what the numbers mean) is written by people and stays as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
EVIDENCE = HERE.parent / "evidence"   # the evidence store: one evidence/NAME.jsonl per declared experiment
README = HERE.parent / "README.md"
READMES = (README, HERE / "README.md")   # the front door (headlines) and the full tables

BEGIN = "<!-- begin generated: {name} (python benchmarks/report.py) -->"
END = "<!-- end generated: {name} -->"


def _ms(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _pct(c: float) -> str:
    return f"{100 * c:.0f} %"


def render_backbones(data: dict) -> str:
    """Backbones against the established library's figures (``benchmarks/backbones.py``)."""
    lines = [f"Machine: {data['machine']}; seeds {', '.join(map(str, data['seeds']))}; {data['dataset']}.", "",
             "| backbone | Recall@20 | NDCG@20 | reference R@20 / N@20 | wall time (s) | reference (s) | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for name, a in data["summary"].items():
        ref = a["reference"]
        lines.append(f"| {name} | {_ms(*a['recall@20'])} | {_ms(*a['ndcg@20'])} | "
                     f"{ref['recall@20']:.2f} / {ref['ndcg@20']:.2f} | {_ms(*a['seconds'], 1)} | "
                     f"{ref['minutes'] * 60:.0f} | {a['speedup']:.1f}x |")
    return "\n".join(lines)


EMBEDDING_DENSE = (("dense", "nn.Embedding"), ("dense_sparse", "sparse=True"), ("dense_fused", "FBGEMM fused"))
EMBEDDING_FORMS = (("masked", "masked"), ("compact", "compact"), ("compact_torch", "compact (torch)"), ("csr", "CSR"),
                   ("buckets_padded", "buckets padded"), ("buckets_unassembled", "buckets unassembled"),
                   ("buckets_served", "buckets served"))


def _best_dense(r: dict, key: str) -> float:
    """The fastest dense baseline (nn.Embedding, sparse=True, FBGEMM fused) of row ``r`` in pass ``key``."""
    return max(r[f"{key}_{n}"] for n, _ in EMBEDDING_DENSE if f"{key}_{n}" in r)


def _embedding_at_10(data: dict) -> list[dict]:
    return [r for r in data["rows"] if abs(r["density"] - 0.1) < 1e-9]


def _fbgemm_sentence(data: dict) -> str:
    """Where the FBGEMM bucket path is fastest (against compact and the best dense baseline), if anywhere."""
    def x(v: float) -> str:
        return f"{v:.2f}x" if v >= 0.01 else "<0.01x"

    buckets = [b for b, _ in EMBEDDING_FORMS if b.startswith("buckets")]
    cells = [(r, key, b) for r in data["rows"] for key in ("fwd", "fwd_bwd") for b in buckets if f"{key}_{b}" in r]
    if not cells:
        return "FBGEMM was not installed for this run: the bucket path was not measured."

    def where(some):
        return ", ".join(f"{r['rows']:,} x {r['d_max']} at {_pct(r['density'])} {key.replace('_', '+')} "
                         f"({b.split('_')[1]})" for r, key, b in some)

    wins = [(r, key, b) for r, key, b in cells if r[f"{key}_{b}"] > max(r[f"{key}_compact"], _best_dense(r, key))]
    beats = [(r, key, b) for r, key, b in cells if r[f"{key}_compact"] < r[f"{key}_{b}"] <= _best_dense(r, key)]
    ratios = [r[f"{key}_{b}"] / _best_dense(r, key) for r, key, b in cells]
    text = (f"The bucket path through FBGEMM's CPU kernels (padded, unassembled, served) runs at "
            f"{x(min(ratios))}-{x(max(ratios))} the best dense baseline over every table, density and pass")
    if wins:
        text += f"; it is the fastest form in {len(wins)} of {len(cells)} cells: {where(wins)}."
    else:
        text += "; it is the fastest form nowhere."
    if beats:
        text += (f" It beats compact (not the best dense baseline) in {where(beats)}, where compact's backward "
                 "builds the gradient of all its kept values.")
    if not wins:
        text += (" So `CompactEmbedding` keeps its own lookup on CPU (no dispatch to FBGEMM); FBGEMM's GPU "
                 "kernels were not measured.")
    return text


def render_embedding(data: dict) -> str:
    """Bytes and lookup speed of dense, masked, compact, CSR and FBGEMM-bucket tables against the dense
    baselines (``benchmarks/embedding.py``)."""
    m = 1e6
    path = ("compact: the native one-pass lookup; compact (torch): the PyTorch path" if data.get("native")
            else "compact: the PyTorch path")
    rows = data["rows"]
    forms = [(k, h) for k, h in EMBEDDING_DENSE + EMBEDDING_FORMS if any(f"fwd_{k}" in r for r in rows)]
    lines = [f"Machine: {data['machine']}; batches of {data['batch']:,} Zipf-drawn ids, median of {data['repeats']} x "
             f"{data['calls']} lookups; speed in millions of rows per second of {data.get('clock', 'wall time')}; "
             f"{path}" + ("; large blocks kept on glibc's heap (no fresh mmap per lookup)"
                          if data.get("steady_allocator") else "") + ".", "",
             "| rows | d_max | density | dense | masked | compact | compact vs ideal | CSR |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rows']:,} | {r['d_max']} | {_pct(r['density'])} | {_bytes(r['dense_bytes'])} | "
                     f"{_bytes(r['masked_bytes'])} | {_bytes(r['compact_bytes'])} | {100 * r['overhead']:+.2f} % | "
                     f"{_bytes(r['csr_bytes'])} |")
    lines += ["", "| rows | d_max | density | pass | " + " | ".join(h for _, h in forms) + " | compact / best dense |",
              "|---:|---:|---:|---|" + "---:|" * (len(forms) + 1)]
    for r in rows:
        for key, name in (("fwd", "forward"), ("fwd_bwd", "fwd+bwd")):
            cells = [f"{r[f'{key}_{k}'] / m:.2f}" if f"{key}_{k}" in r else "-" for k, _ in forms]
            lines.append(f"| {r['rows']:,} | {r['d_max']} | {_pct(r['density'])} | {name} | " + " | ".join(cells)
                         + f" | {r[f'{key}_compact'] / _best_dense(r, key):.2f}x |")
    worst = max(abs(r["overhead"]) for r in rows)
    at_10 = _embedding_at_10(data)
    lines += ["", f"Compact bytes against the ideal sum(d_n) * 4 + (n + 1) * 8: worst {100 * worst:.2f} % "
                  f"({'within' if worst <= 0.01 else 'NOT within'} the 1 % goal)."]
    if at_10:
        for key, what in (("fwd", "forward"), ("fwd_bwd", "forward and backward")):
            best = ", ".join(f"{r[f'{key}_compact'] / _best_dense(r, key):.2f}x" for r in at_10)
            plain = ", ".join(f"{r[f'{key}_compact'] / r[f'{key}_dense']:.2f}x" for r in at_10)
            lines.append(f"Compact / best dense baseline at 10 % density, {what} ({len(at_10)} tables above): {best} "
                         f"(against plain nn.Embedding, whose backward builds the whole table's gradient: {plain}).")
    lines.append(_fbgemm_sentence(data))
    return "\n".join(lines)


def render_dnis(data: dict) -> str:
    """DNIS against ES / MR / MDE at the same budget (``benchmarks/dnis.py``)."""
    s = data["settings"]
    lines = [f"Machine: {data['machine']}; mean ± std over seeds {', '.join(map(str, s['seeds']))}; "
             f"d_max {s['dim']}; top-k retraining at most {s['epochs']} epochs (patience {s['patience']}), "
             f"CTR at most {s['ctr_epochs']} (patience {s['ctr_patience']}); DNIS {s['warm_epochs']} warm-start + "
             f"{s['search_epochs']} search epochs, granularity {s['granularity']}. Bold: best mean per budget."]
    if data.get("wall_seconds"):
        lines[0] += f" Whole benchmark {data['wall_seconds'] / 60:.0f} min."
    rows = data["summary"]
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        m1, m2 = [k for k in ("recall@20", "ndcg@20", "auc", "logloss") if k in mine[0]]
        lines += ["", f"{backbone} (test {m1}, {m2}):", "",
                  f"| c | method | {m1} | {m2} | parameters | compact KiB | retrain s |",
                  "|---|---|---|---|---|---|---|"]
        for r in mine:
            best = max(x[m1][0] for x in mine if x["sparsity"] == r["sparsity"])
            first = _ms(*r[m1])
            lines.append(f"| {_pct(r['sparsity'])} | {r['method']} | {f'**{first}**' if r[m1][0] == best else first} | "
                         f"{_ms(*r[m2])} | {r['parameters']:,} | {_kib(r['compact_bytes'])} | {_ms(*r['seconds'], 1)} |")
        searches = [x for x in data.get("searches", []) if x["backbone"] == backbone]
        if searches:
            sec = [x["seconds"] for x in searches]
            warm = [x["warm_seconds"] for x in searches]
            lines += ["", f"DNIS search on {backbone}, once per seed for all three budgets: "
                          f"{np.mean(sec):.1f} ± {np.std(sec):.1f} s (of which warm start {np.mean(warm):.1f} s)."]
    return "\n".join(lines)


def render_ciess(data: dict) -> str:
    """CIESS, its random-walk ablation and the baselines (``benchmarks/ciess.py``)."""
    names = {"ciess": "CIESS", "ciess-no-walk": "CIESS without the walk", "es": "ES", "mr": "MR", "mde": "MDE"}
    lines = [f"Machine: {data['machine']}; protocol {data['protocol']}; seeds {', '.join(map(str, data['seeds']))} "
             f"(mean ± std); lambda {data['lambda']}; schedule {data['schedule']}.", "",
             "| backbone | c | method | Recall@20 | per seed | NDCG@20 | parameters | compact bytes |",
             "|---|---|---|---|---|---|---|---|"]
    for s in data["summary"]:
        name = names.get(s["method"], s["method"]) + (" (projected)" if s.get("projected") else "")
        seeds = sorted((r["seed"], r["recall@20"]) for r in data.get("runs", [])
                       if (r["backbone"], r["method"], r["sparsity"]) == (s["backbone"], s["method"], s["sparsity"]))
        lines.append(f"| {s['backbone']} | {_pct(s['sparsity'])} | {name} | "
                     f"{_ms(s['recall@20_mean'], s['recall@20_std'])} | {' / '.join(f'{v:.3f}' for _, v in seeds)} | "
                     f"{_ms(s['ndcg@20_mean'], s['ndcg@20_std'])} | {s['parameters']:,} | {s['compact_bytes']:,} |")
    lines.append("")
    for t in data.get("timings", []):
        e = t["paper_schedule_estimate"]
        lines.append(f"{t['backbone']}, seed {t['seed']}: whole CIESS run {t['whole_seconds'] / 60:.1f} min "
                     f"(reference {t['reference'] / 60:.1f}, search {t['search'] / 60:.1f}, retraining "
                     f"{t['retrain'] / 60:.1f}); {e['seconds_per_iteration']:.1f} s per search iteration; the paper's "
                     f"schedule would take about {e['total'] / 3600:.1f} h.")
    return "\n".join(lines).rstrip()


def _paired(d: dict | None) -> str:
    """A paired difference (``recsize.search.compare.paired_difference``) as "mean [low, high]" (no
    interval from one seed; empty without a difference)."""
    if d is None:
        return ""
    return f"{d['mean']:+.4f}" + ("" if d["low"] is None else f" [{d['low']:+.4f}, {d['high']:+.4f}]")


def render_ciess_variant(data: dict, out: Path = OUT) -> str:
    """A CIESS configuration (``benchmarks/ciess.py --part ciess --label NAME``) against the baselines ES, MR
    and MDE of ``out/ciess.json`` and ``out/ciess_neumf.json`` (same protocol, budgets, early stopping and
    seeds): per backbone and budget,
    the per-seed test Recall@20, the mean and the paired difference to ES with its 95 % t interval."""
    from recsize.search.compare import paired_summary
    seeds = sorted({r["seed"] for r in data["runs"]})
    label = data.get("label", "ciess")
    base = [r for name in ("ciess.json", "ciess_neumf.json") for r in json.loads((out / name).read_text())["runs"]]
    runs = data["runs"] + [r for r in base if r["method"] in ("es", "mr", "mde") and r["seed"] in seeds]
    sched = data["schedule"]
    lines = [f"Machine: {data['machine']}; protocol {data['protocol']}, d_max {data.get('dim', 64)}; CIESS "
             f"configuration `{label}`: {sched['episodes']} episodes x {sched['iterations']} iterations, training "
             f"{sched['training']} ({sched.get('iteration_batches') or 'default'} batches per iteration), reward "
             f"{sched['reward']}, lambda {data['lambda']}, exploration {sched['exploration']}, state {sched['state']}, "
             f"TD3 pace {sched['pace']}, selection {sched['selection']}, l = {sched['top_l']}; retraining and "
             f"baselines at most {sched['retrain_epochs']} epochs, patience {sched['patience']}; baselines from "
             "ciess.json and ciess_neumf.json (same seeds). Δ: paired difference to ES, mean [95 % interval].", "",
             "| backbone | c | method | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | Δ vs ES | parameters |", "|---|---|---|" + "---|" * len(seeds) + "---|---|---|"]
    for backbone in dict.fromkeys(r["backbone"] for r in data["runs"]):
        mine = [r for r in runs if r["backbone"] == backbone]
        for row in paired_summary(mine, "es", "recall@20", (label, "es", "mr", "mde")):
            cells = [f"{row['cells'][s]['recall@20']:.4f}" if s in row["cells"] else "" for s in seeds]
            delta = _paired(row["delta"])
            projected = sum(bool(r.get("projected")) for r in row["cells"].values())
            name = row["method"].upper() if row["method"] in ("es", "mr", "mde") else f"CIESS `{label}`"
            name += f" (projected in {projected}/{len(row['cells'])})" if projected else ""
            params = np.mean([r["parameters"] for r in row["cells"].values()])
            lines.append(f"| {backbone} | {_pct(row['sparsity'])} | {name} | " + " | ".join(cells)
                         + f" | {row['mean']:.4f} | {delta} | {params:,.0f} |")
    lines.append("")
    for t in data.get("timings", []):
        lines.append(f"{t['backbone']}, seed {t['seed']}: whole CIESS run {t['whole_seconds'] / 60:.1f} min "
                     f"(reference {t['reference'] / 60:.1f}, search {t['search'] / 60:.1f}, retraining "
                     f"{t['retrain'] / 60:.1f}).")
    return "\n".join(lines).rstrip()


# issue 16's experiments on LightGCN (benchmarks/ciess.py --part ciess ...): the configurations run, by the
# files that hold them; each pairs with ES of ciess.json (same protocol, seeds, retraining)
CIESS_EXPERIMENTS = (("official-200", ("ciess_official200.json",), "the code's reward, lambda 0.01"),
                     ("official-2000", ("ciess_official2000_*.json",), "the same, 2,000 batches per iteration"),
                     ("paper-schedule-200", ("ciess_paperschedule200_*.json",),
                      "the paper's 30 x 10 iterations, l = 3, 200 batches each, retraining cap 300"),
                     ("official-200-per-entity", ("ciess_perentity_*.json",), "per-entity noise before the walk"),
                     *((f"paper-lam{lam}", (f"ciess_lam_paper{lam}_*.json",), f"the paper's reward, lambda {lam}")
                       for lam in ("0.05", "0.1", "0.2", "0.4")),
                     ("paper-bisect", ("ciess_bisect_*.json",), "the paper's reward, lambda per budget (bisection)"))


def _settled(timing: dict, iterations: int) -> float | None:
    """Where a stored search settled (``recsize.search.ciess.settled_density``), None without its history."""
    from recsize.search.ciess import settled_density
    dens = timing.get("search_density")
    return settled_density([{"density": d} for d in dens], iterations) if dens else None


def render_ciess_experiments(out: Path = OUT) -> str:
    """Issue 16's experiments 2 and 3 on LightGCN, one row per (configuration, budget): test Recall@20 per
    seed, the mean, the paired difference to ES (ciess.json) with its 95 % interval, the kept parameters,
    how many cells were projected, and where each seed's search settled (mean density of its last
    episode). Then experiment 1 (``ciess_allocation.json``): each mask found inside its budget against
    equal widths at its parameter count and against itself scaled to the budget."""
    from recsize.search.compare import paired_difference
    es = {(r["seed"], r["density"]): r for r in json.loads((out / "ciess.json").read_text())["runs"]
          if r["backbone"] == "lightgcn" and r["method"] == "es"}
    machines = sorted({json.loads(f.read_text()).get("machine", "") for _, patterns, _ in CIESS_EXPERIMENTS
                       for pattern in patterns for f in out.glob(pattern)} - {""})
    lines = [f"Machine: {'; '.join(machines)}. "
             "LightGCN, ml-100k (random 8:1:1), d_max 64, reduced schedule (6 x 5 iterations of 200 batches of "
             "10,000 unless named, l = 1), retraining at most 100 epochs with patience 10; ES from ciess.json "
             "(same seeds). Δ: paired difference to ES, mean [95 % interval]; settled: each seed's mean search "
             "density over its last episode (bisection: the accepted search's).", "",
             "| configuration | c | Recall@20 per seed | mean | Δ vs ES | parameters | projected | settled |",
             "|---|---|---|---|---|---|---|---|"]
    for label, patterns, what in CIESS_EXPERIMENTS:
        files = sorted({f for pattern in patterns for f in out.glob(pattern)})
        if not files:
            continue
        data = [json.loads(f.read_text()) for f in files]
        runs = [r for d in data for r in d["runs"] if r["method"] == label and r["backbone"] == "lightgcn"]
        settled = {t["seed"]: _settled(t, d.get("schedule", {}).get("iterations", 5)) for d in data
                   for t in d.get("timings", []) if t.get("label") == label}
        for density in sorted({r["density"] for r in runs}, reverse=True):
            cells = sorted((r for r in runs if r["density"] == density), key=lambda r: r["seed"])
            seeds = [r["seed"] for r in cells]
            recall = [r["recall@20"] for r in cells]
            delta = paired_difference(recall, [es[s, density]["recall@20"] for s in seeds]) \
                if all((s, density) in es for s in seeds) else None
            where = [settled.get(r["seed"]) if "trace" not in r else
                     next(t["settled_density"] for t in r["trace"] if t["lam"] == r["lambda"]) for r in cells]
            lam = "" if "lambda" not in cells[0] else " (lambda " + " / ".join(f"{r['lambda']:.3g}" for r in cells) + ")"
            lines.append(f"| `{label}`: {what}{lam} | {_pct(1 - density)} | "
                         + " / ".join(f"{v:.3f} (s{s})" for s, v in zip(seeds, recall))
                         + f" | {np.mean(recall):.4f} | {_paired(delta)} | "
                         f"{np.mean([r['parameters'] for r in cells]):,.0f} | "
                         f"{sum(bool(r['projected']) for r in cells)}/{len(cells)} | "
                         + " / ".join("-" if w is None else f"{w:.3f}" for w in where) + " |")
    alloc = out / "ciess_allocation.json"
    if alloc.exists():
        data = json.loads(alloc.read_text())
        lines += ["", f"Experiment 1, too few parameters or a bad allocation? Every mask a search found inside its "
                  f"budget (not projected), retrained as found, as equal widths with exactly its parameters (ES at "
                  f"its count) and scaled to the budget keeping its proportions, all three at most "
                  f"{data['retrain_epochs']} epochs with patience {data['patience']} (best epoch in brackets); the "
                  "mask's width CV and Spearman correlation with popularity, users / items.", "",
                  "| mask (configuration, seed, c) | parameters | CV | Spearman | as found | ES at its count "
                  "| scaled to the budget (parameters) |", "|---|---|---|---|---|---|---|"]
        masks = {}
        for r in data["runs"]:
            label, kind = r["method"].split("/")
            masks.setdefault((label, r["seed"], -r["density"]), {})[kind] = r
        for (label, seed, minus_density), got in sorted(masks.items()):
            if set(got) != {"as-found", "es-at-mask", "scaled"}:
                continue
            found, eq, sc = got["as-found"], got["es-at-mask"], got["scaled"]
            cv, rho = found.get("width_cv") or {}, found.get("spearman_popularity") or {}
            cell = lambda r: f"{r['recall@20']:.4f} ({r['best_epoch']})"   # noqa: E731
            lines.append(f"| `{label}`, s{seed}, {_pct(1 + minus_density)} | {found['parameters']:,} | "
                         + " / ".join(f"{cv[k]:.2f}" for k in ("user", "item") if k in cv) + " | "
                         + " / ".join(f"{rho[k]:+.2f}" for k in ("user", "item") if k in rho)
                         + f" | {cell(found)} | {cell(eq)} | {cell(sc)} ({sc['parameters']:,}) |")
    return "\n".join(lines).rstrip()


def render_ihas(data: dict) -> str:
    """iHAS against uniform widths, the frequency rule and field-level DNIS (``benchmarks/ihas.py``)."""
    a = data["args"]
    lines = [f"Machine: {data['machine']}; backbone {a['backbone']}; density {a['density']} (equal total embedding "
             f"parameters, routing included); seeds {', '.join(map(str, a['seeds']))} (mean ± std); at most "
             f"{a['epochs']} epochs (patience {a['patience']}); {a['search_epochs']} search epochs; "
             f"whole benchmark {data['seconds'] / 60:.0f} min.", "",
             "| data | method | AUC | log loss | parameters |", "|---|---|---|---|---|"]
    for dataset, result in data["results"].items():
        best = max(m["auc_mean"] for m in result["summary"].values())
        for name, m in result["summary"].items():
            auc = _ms(m["auc_mean"], m["auc_std"])
            lines.append(f"| {dataset} | {name} | {f'**{auc}**' if m['auc_mean'] == best else auc} | "
                         f"{_ms(m['logloss_mean'], m['logloss_std'])} | {m['parameters']:,} |")
    return "\n".join(lines)


def render_ihas_breakdown(out: Path = OUT) -> str:
    """iHAS's accounting and layout choices side by side (``benchmarks/ihas.py --cluster-inits ... --charges
    ... --layouts ...``, one file per seed, ``out/ihas_breakdown_s*.json``): per variant the per-seed test
    AUC, the mean, the paired difference to ES with its 95 % interval, the stored bytes. Chapter 7."""
    from recsize.search.compare import paired_difference
    files = sorted(out.glob("ihas_breakdown_s*.json"))
    if not files:
        raise FileNotFoundError(f"no {out}/ihas_breakdown_s*.json: run python benchmarks/ihas.py --charges ... "
                                "--layouts ... --out benchmarks/out/ihas_breakdown_sSEED.json first")
    per_seed, args, machines = {}, None, set()
    for f in files:
        data = json.loads(f.read_text())
        a = {k: v for k, v in data["args"].items() if k not in ("seeds", "out")}
        if args is not None and a != args:
            raise ValueError(f"{f.name} was run with other settings than {files[0].name}: merge one protocol only")
        args, machines = a, machines | {data["machine"]}
        for dataset, result in data["results"].items():
            for seed, rows in result["per_seed"].items():
                per_seed.setdefault(dataset, {})[int(seed)] = rows
    lines = [f"{args['backbone']}, density {args['density']} (equal total embedding parameters as each variant "
             f"charges them), d_max {args['dim']}, at most {args['epochs']} epochs (patience {args['patience']}), "
             f"{args['search_epochs']} search epochs. Machine: {'; '.join(sorted(machines))}.", "",
             "| data | method | AUC per seed | mean | vs ES [95 % CI] | stored KiB |", "|---|---|---|---|---|---|"]
    for dataset, seeds in per_seed.items():
        order = sorted(seeds)
        methods = list(dict.fromkeys(m for s in order for m in seeds[s]))
        for m in methods:
            have = [s for s in order if m in seeds[s]]
            aucs = [seeds[s][m]["auc"] for s in have]
            d = paired_difference(aucs, [seeds[s]["ES"]["auc"] for s in have]) if m != "ES" else None
            vs = "" if d is None else f"{d['mean']:+.4f}" + (
                "" if d["low"] is None else f" [{d['low']:+.4f}, {d['high']:+.4f}]")
            kib = [seeds[s][m].get("total_bytes") for s in have]
            kib = "" if None in kib else f"{np.mean(kib) / 1024:.1f}"
            lines.append(f"| {dataset} | {m} | {' '.join(f'{a:.4f}' for a in aucs)} | {np.mean(aucs):.4f} | {vs} | "
                         f"{kib} |")
    return "\n".join(lines)


def render_pep_levels(data: dict) -> str:
    """Where PEP's learned thresholds leave the kept fraction (``benchmarks/pep_levels.py``, Chapter 4)."""
    st = data["settings"]
    lines = [f"PEP's training alone (no retraining), seed {st['seed']}, d_max {st['dim']}, {st['epochs']} epochs; "
             "g(s) = scale x sigmoid(s), s0 = -15 (scale 1 and s0 are the authors' defaults). "
             f"Machine: {data['machine']}.", "",
             "| backbone | scale | kept after the last epoch | mean threshold | budget (kept fraction): first epoch "
             "at or below it | training min |", "|---|---|---|---|---|---|"]
    for r in data["runs"]:
        reached = ", ".join(f"{_pct(float(c))} ({r['budgets'][c]:.1%}): {e if e else 'never'}"
                            for c, e in r["reached"].items())
        lines.append(f"| {r['backbone']} | {r['scale']:g} | {r['final_density']:.1%} | {r['final_threshold']:.3g} | "
                     f"{reached} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def render_stacked(data: dict) -> str:
    """K LightGCN models one by one (every column, or only the live ones) and in one stacked pass
    (``benchmarks/stacked.py``, Chapter 8)."""
    st = data["settings"]
    models = ", ".join(f"{m} ({c} live columns)" for m, c in zip(st["models"], st["live_columns"]))
    lines = [f"LightGCN on {st['dataset']} ({st['split']}, seed {st['seed']}), d_max {st['d_max']}, {st['epochs']} "
             f"epochs per run after one untimed warm-up, {st['device']}, {st['threads']} thread; the first K of: "
             f"{models}. Process CPU seconds per epoch of all K models (validation included; with one thread the "
             "run's own work, whatever else the machine runs) and in brackets the speed-up over one by one with every "
             "column propagated, by CPU time and by wall time; live: one by one, each model propagating only its "
             "live columns (`LightGCN.propagate`'s default); stacked: all K x d_max columns in one pass; trimmed: one "
             f"pass, live columns only. Machine: {data['machine']}.", "",
             "| K | one by one | live | stacked | trimmed | same results |", "|---|---|---|---|---|---|"]

    def cell(x):
        return f"{x['cpu_per_epoch']:.3f} ({x['speedup']['cpu']:.2f}x; wall {x['speedup']['wall']:.2f}x)"
    for r in data["runs"]:
        lv, t, trim = r["one_by_one_live"], r["stacked"], r["trimmed"]
        same = all(x["bit_identical"] for x in (lv, t, trim))
        diff = max(x["max_abs_diff"] for x in (lv, t, trim))
        lines.append(f"| {r['k']} | {r['one_by_one']['cpu_per_epoch']:.3f} | {cell(lv)} | {cell(t)} | {cell(trim)} | "
                     f"{'bit for bit' if same else 'max diff %.2g' % diff} |")
    return "\n".join(lines)


def _cell(r: dict) -> tuple:
    """A grid cell's identity: (method, sparsity, seed)."""
    return r["method"], r["sparsity"], r["seed"]


def _stored_cells(name: str) -> dict:
    """The stored cells of experiment ``name`` (:func:`load_grid`) by :func:`_cell`."""
    return {_cell(r): r for r in load_grid(name).runs}


def render_stacked_grid(out: Path = OUT) -> str:
    """One seed's ES / MDE / MR cells of the LightGCN grid trained in one stacked pass (``prune.py --stacked``)
    against the same cells one by one, and against the stored cells of experiment prune_lightgcn20 (Chapter 8)."""
    stacked = json.loads((out / "stackedgrid_lightgcn20_s0.json").read_text())
    alone = json.loads((out / "stackedgrid_onebyone_lightgcn20_s0.json").read_text())
    stored = _stored_cells("prune_lightgcn20")
    mine = {_cell(r): r for r in alone["runs"]}
    st = stacked["settings"]
    lines = [f"LightGCN on {st['dataset']}, seed {', '.join(map(str, st['seeds']))}, the grid's protocol (cap "
             f"{st['epochs']}, patience {st['patience']}); `prune.py --stacked` against the same command without it and "
             "the stored cells of experiment prune_lightgcn20. "
             f"Machine: {stacked['machine']}, other benchmark processes running alongside.", "",
             "| c | method | Recall@20 stacked | one by one | stored grid cell | best epoch / epochs | one by one CPU s |",
             "|---|---|---|---|---|---|---|"]
    fields = ("recall@20", "ndcg@20", "valid_ndcg@20", "best_epoch", "epochs", "bytes", "kept")
    differ = {"one by one": [], "stored grid": []}
    for r in stacked["runs"]:
        o, g = mine.get(_cell(r)), stored.get(_cell(r))
        for name, other in (("one by one", o), ("stored grid", g)):
            differ[name] += ([f"{r['method']} {_pct(r['sparsity'])}: missing"] if other is None else
                             [f"{r['method']} {_pct(r['sparsity'])} {f} {other[f]:.6g} (stacked {r[f]:.6g})"
                              for f in fields if other[f] != r[f]])
        lines.append(f"| {_pct(r['sparsity'])} | {r['method']} | {r['recall@20']:.4f} | "
                     + (f"{o['recall@20']:.4f}" if o else "-") + " | " + (f"{g['recall@20']:.4f}" if g else "-")
                     + f" | {r['best_epoch']} / {r['epochs']} | " + (f"{o['seconds']['cpu']:.0f}" if o else "-")
                     + " |")
    pass_s, pass_cpu = (stacked["runs"][0]["seconds"][k] for k in ("stacked_pass", "stacked_pass_cpu"))
    alone_s, alone_cpu = (sum(o["seconds"][k] for o in alone["runs"]) for k in ("train", "cpu"))
    said = " ".join(f"Against the {name}: " + ("every field equal (" + ", ".join(fields) + ")." if not d else
                                                "equal except " + "; ".join(d) + ".") for name, d in differ.items())
    lines += ["", f"The stacked pass: {pass_cpu / 60:.1f} min of CPU ({pass_s / 60:.1f} min wall) for the "
              f"{len(stacked['runs'])} models; one by one {alone_cpu / 60:.1f} min of CPU ({alone_s / 60:.1f} min wall): "
              f"{alone_cpu / pass_cpu:.2f}x by CPU time, {alone_s / pass_s:.2f}x by wall time (the two runs did not "
              f"share the machine with the same other processes). {said}"]
    return "\n".join(lines)


def render_verdict_runs(out: Path = OUT) -> str:
    """One seed of a converged grid run again as ``benchmarks/verdict.py`` runs it (``out/verdictrun_*.json``:
    the command's output with its process times): its CPU and wall time, and how many of its cells equal the
    stored cells of the grid's experiment bit for bit (Chapter 8)."""
    files = sorted(out.glob("verdictrun_*.json"))
    if not files:
        raise FileNotFoundError(f"no {out}/verdictrun_*.json: time one command of benchmarks/verdict.py --dry-run")
    lines = ["| experiment | seed | methods | cells | equal to the stored grid | not in the stored grid | different: where "
             "(largest difference of the headline metric) | CPU min | wall min |", "|---|---|---|---|---|---|---|---|---|"]
    fields = ("best_epoch", "epochs", "bytes", "kept")
    machines = set()
    for f in files:
        data = json.loads(f.read_text())
        grid = "prune_" + f.stem[len("verdictrun_"):].rsplit("_s", 1)[0]
        stored = _stored_cells(grid)
        metrics = [m for m in ("recall@20", "ndcg@20", "auc", "logloss") if m in data["runs"][0]]
        same = new = 0
        differ, largest = [], 0.0
        for r in data["runs"]:
            old = stored.get(_cell(r))
            if old is None:
                new += 1
            elif all(old[m] == r[m] for m in (*metrics, *fields)):
                same += 1
            else:
                differ.append(f"{r['method']} {_pct(r['sparsity'])}")
                largest = max(largest, abs(old[metrics[0]] - r[metrics[0]]))
        proc = data["process"]
        methods = sorted({r["method"] for r in data["runs"]})
        lines.append(f"| {grid} | {', '.join(map(str, data['settings']['seeds']))} | {', '.join(methods)} | "
                     f"{len(data['runs'])} | {same} | {new} | "
                     + (f"{len(differ)}: {', '.join(differ)} ({metrics[0]} {largest:.4f})" if differ else "0")
                     + f" | {proc['cpu_seconds'] / 60:.1f} | {proc['wall_seconds'] / 60:.1f} |")
        machines.add(data["machine"])
    lines += ["", f"Each row: the command `benchmarks/verdict.py --dry-run` prints for that grid and seed, run alone "
              f"under `/usr/bin/time` (one other benchmark process on the machine's other core); equal: the test "
              f"metrics, best epoch, epochs, bytes and kept parameters all the same. Machine: {', '.join(machines)}."]
    return "\n".join(lines)


def render_where_time_goes(data: dict) -> str:
    """Where a grid cell's time goes (``benchmarks/where_time_goes.py``, Chapter 8): imports, the stages of the
    training loop under cProfile, and the largest operators of one epoch under torch.profiler."""
    imports, cells = data["imports"], data["cells"]
    top = ", ".join(f"{k} {v:.2f} s" for k, v in list(imports["packages"].items())[:4])
    lines = [f"One grid cell (ES at equal bytes, c = {_pct(data['sparsity'])}, seed 0: `run_baseline` trains, compacts "
             f"and tests) for {data['epochs']} epochs, early stopping off. Machine: {data['machine']}. "
             f"`import {imports['module']}` takes {imports['total']:.2f} s in a fresh process ({top}).", "",
             "| stage (share of the cell under cProfile) | " + " | ".join(c["backbone"] for c in cells) + " |",
             "|---|" + "---|" * len(cells)]
    for stage in cells[0]["stages"]:
        lines.append(f"| {stage} | " + " | ".join(f"{100 * c['stages'][stage] / c['seconds_profiled']:.1f} %"
                                                   for c in cells) + " |")
    lines.append("| wall seconds without / with cProfile | " + " | ".join(
        f"{c['seconds_plain']:.1f} / {c['seconds_profiled']:.1f}" for c in cells) + " |")
    lines.append("| largest operators, one epoch (torch.profiler, share of self CPU time) | " + " | ".join(
        ", ".join(f"`{o['op'].replace('aten::', '')}` {100 * o['share']:.0f} %" for o in c["ops_one_epoch"][:3])
        for c in cells) + " |")
    lines += ["", "forward: loss and backward exclude the rows below them (LightGCN's propagation and the sparse "
              "product's backward); other: the cell's wall time less the stages (cProfile's clock, so it may be "
              "slightly negative)."]
    return "\n".join(lines)


def render_head_to_head(data: dict) -> str:
    """Every method at the same budgets (``benchmarks/head_to_head.py``, Chapter 8)."""
    sys.path.insert(0, str(HERE))
    from head_to_head import markdown  # the script owns its table layout
    return markdown(data)


PRUNE_NAMES = {"dnis": "DNIS in place, \\|E\\| (authors)", "dnis-alpha": "DNIS in place, \\|alpha E\\| (Hetu)",
               "dnis-table": "DNIS in place, per table",
               "dnis-joint": "DNIS in place, users and items in joint blocks (the authors')",
               "dnis-prefix": "DNIS prefix widths, retrained (1 - c of the parameters)",
               "dnis-prefix-old": "DNIS prefix, \\|alpha E\\| per table (recsize before; parameters)",
               "magprune": "MagPrune (recsize: global threshold, fine-tuned)", "magprune-table": "MagPrune, per table",
               "magprune-tois": "MagPrune as TOIS'25 (per table, min_item floor, no fine-tuning)",
               "magprune-params": "MagPrune (recsize), equal parameters (more bytes)",
               "magprune-tois-params": "MagPrune as TOIS'25, equal parameters (more bytes)", "pep": "PEP",
               "es-bytes": "ES, equal bytes",
               "mde-bytes": "MDE, equal bytes", "mr-bytes": "MR, equal bytes",
               "ciess": "CIESS (faithful defaults), equal bytes",
               "ihas": "iHAS, es-bytes parameters (more bytes: K tables + router)",
               "es": "ES (1 - c of the parameters)"}


def load_grid(name: str, evidence: Path | None = None):
    """The stored cells of experiment ``name`` (``evidence/NAME.jsonl``), a ``recsize.experiments.Grid``:
    ``runs`` (``benchmarks/prune.py`` cells), ``settings`` (one per origin, with the machine)."""
    from recsize.experiments import load_grids
    grids = load_grids([name], evidence)
    if not grids:
        raise FileNotFoundError(f"no stored cells of experiment {name} in {evidence or EVIDENCE}: run recsize "
                                f"experiment run {name}")
    return grids[name]


def render_prune(runs: list[dict], settings: list[dict], experiment: str | None = None) -> str:
    """Element-wise methods, DNIS's derivations, ES and MDE at equal bytes (``benchmarks/prune.py``): per
    budget and method, the per-seed test quality (Recall@20 for top-k backbones, AUC for CTR ones), the mean
    and the paired difference to ES at equal bytes with its 95 % t interval (the seeds share their splits),
    kept entries, stored bytes, best epoch of the final training and its wall time; ``experiment``: the
    name of the experiment the cells are stored as, said first."""
    from recsize.search.compare import LABELS, grid_metric, paired_summary
    first = settings[0]
    metric = grid_metric(settings)
    label = LABELS[metric]
    seeds = sorted({r["seed"] for r in runs})
    protocol = ("random 8:1:1 over samples" if first["dataset"].endswith("-ctr")
                else "random 8:1:1 per user, full ranking")
    truth = any((r.get("spearman") or {}).get("truth") for r in runs)   # planted data: widths vs the truth
    rho_head = " ρ truth, users / items |" if truth else ""
    lines = [(f"Experiment {experiment}: " if experiment else "") + f"{first['backbone']} on {first['dataset']} ({protocol}), d_max "
             f"{first['dim']}; every training capped at {first['epochs']} epochs with patience {first['patience']}. "
             f"Machine: {first['machine']}. Test {label} with the stored tables; Δ: paired difference to "
             "ES at equal bytes, mean [95 % interval] over the seeds both ran; bold: best mean per budget at equal "
             "bytes (plain ES and DNIS's prefix widths keep 1 - c of the parameters and take more bytes).", "",
             "| c | method | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | Δ vs ES, equal bytes | kept | KiB | best epoch | final training s |" + rho_head,
             "|---|---|" + "---|" * len(seeds) + "---|---|---|---|---|---|" + ("---|" if truth else "")]
    rows = paired_summary(runs, "es-bytes", metric, PRUNE_NAMES)
    for row in rows:
        c, m, mine = row["sparsity"], row["method"], list(row["cells"].values())
        cells = [f"{row['cells'][s][metric]:.4f}" if s in row["cells"] else "" for s in seeds]
        delta = _paired(row["delta"]) + (f" (n = {row['delta']['n']})" if row["delta"] else "")
        mean = f"{row['mean']:.4f}"
        rivals = [r["mean"] for r in rows if r["sparsity"] == c and r["method"] not in AT_PARAMETERS]
        if m not in AT_PARAMETERS and row["mean"] == max(rivals):
            mean = f"**{mean}**"
        retrain = [r["seconds"].get("retrain") or r["seconds"].get("finetune") or r["seconds"].get("train")
                   or r["seconds"].get("prune") for r in mine]   # magprune-tois: pruning and its search only
        lines.append(f"| {_pct(c)} | {PRUNE_NAMES[m]} | " + " | ".join(cells)
                     + f" | {mean} | {delta} | {np.mean([r['kept'] for r in mine]):,.0f} | "
                     f"{_kib(np.mean([r['bytes'] for r in mine]))} | "
                     f"{np.mean([r['best_epoch'] for r in mine]):.0f} (max {max(r['best_epoch'] for r in mine)}) "
                     f"| {np.mean([x for x in retrain if x is not None]):.0f} |"
                     + (_rho(mine) if truth else ""))
    lines += _aukc_table(runs, metric, label)
    if truth:
        lines += ["", "ρ truth: mean Spearman correlation over the seeds of each method's widths (kept entries per "
                      "row) with the planted widths, which are independent of popularity by construction."]
    search = {}
    for r in runs:
        if r["method"].startswith("dnis") and "warm_epochs" in r["seconds"]:
            search.setdefault(r["seed"], r["seconds"])
    if search:
        lines += ["", "DNIS search, once per seed for every budget and derivation: " + "; ".join(
            f"seed {s}: {v['warm_epochs']} warm-start + {v['search_epochs']} search epochs, {v['search'] / 60:.1f} min"
            for s, v in sorted(search.items())) + "."]
    dense = {}
    for r in runs:
        if r["method"].startswith("magprune") and "dense" in r["seconds"]:
            dense[r["seed"]] = r["seconds"]["dense"]
    if dense:
        lines += ["", "MagPrune's full-width training, once per seed: " + "; ".join(
            f"seed {s}: {v / 60:.1f} min" for s, v in sorted(dense.items())) + "."]
    lines += _magprune_notes(runs)
    pep = {}
    for r in runs:
        if r["method"] == "pep" and "search" in r["seconds"]:
            mine = pep.setdefault(r["seed"], {"seconds": r["seconds"]["search"], "epoch": 0, "reached": 0, "n": 0})
            mine["epoch"] = max(mine["epoch"], r.get("mask_epoch") or 0)
            mine["reached"] += bool(r.get("reached"))
            mine["n"] += 1
    if pep:
        lines += ["", "PEP's thresholded training, once per seed (the authors' s0 = -15, scale 1): " + "; ".join(
            f"seed {s}: {v['seconds'] / 60:.1f} min, last mask at epoch {v['epoch']}, {v['reached']} of {v['n']} "
            "budgets reached by the thresholds" for s, v in sorted(pep.items())) + " (a budget not reached takes the "
            "last state cut by magnitude)."]
    lines += ["", "Wall times on one thread while up to four benchmark processes shared the 2 cores: compare "
              "them with each other, not with other tables."]
    return "\n".join(lines)


def _aukc_table(runs: list[dict], metric: str, label: str) -> list[str]:
    """One row per method with an AUKC (``recsize.search.compare.aukc``): its area under test ``metric``
    over the kept fraction, over ES at equal bytes' on the same seed, per seed and mean [95 % interval]."""
    from recsize.search.compare import aukc
    found = [a for a in (aukc(runs, m, metric) for m in PRUNE_NAMES if m != "es-bytes") if a is not None]
    if not found:
        return []
    seeds = sorted({s for a in found for s in a["per_seed"]})
    lines = ["", f"AUKC (the idea of ERASE, KDD'24): the area under test {label} over the kept fraction 1 - c "
             "(trapezoids over the budgets a method shares with ES at equal bytes on that seed, at least two), "
             "over ES at equal bytes' area on the same seed; 1 = ES, above 1 better; mean [95 % interval] over "
             "the seeds.", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | AUKC / ES | budgets c |",
             "|---|" + "---|" * len(seeds) + "---|---|"]
    for a in found:
        r = a["ratio"]
        cells = [f"{a['per_seed'][s]['ratio']:.3f}" if s in a["per_seed"] else "" for s in seeds]
        interval = "" if r["low"] is None else f" [{r['low']:.3f}, {r['high']:.3f}]"
        budgets = sorted({round(1 - d, 6) for v in a["per_seed"].values() for d in v["densities"]})
        lines.append(f"| {PRUNE_NAMES[a['method']]} | " + " | ".join(cells)
                     + f" | {r['mean']:.3f}{interval} (n = {r['n']}) | {', '.join(_pct(c) for c in budgets)} |")
    return lines


def _rho(cells: list[dict]) -> str:
    """Mean Spearman correlation of the widths with the planted truth, users / items, as a table cell."""
    def mean(role):
        values = [c["spearman"]["truth"].get(role) for c in cells if c.get("spearman")]
        values = [v for v in values if v is not None and np.isfinite(v)]
        return f"{np.mean(values):+.2f}" if values else "-"
    return f" {mean('user')} / {mean('item')} |"


AT_PARAMETERS = ("es", "dnis-prefix", "dnis-prefix-old", "magprune-params", "magprune-tois-params")   # more bytes


def _magprune_notes(runs: list[dict]) -> list[str]:
    """MagPrune as TOIS'25's chosen ``min_item`` per budget and seed, and what equal parameters buy over
    equal bytes: the kept entries and stored bytes of ``magprune-params`` over ``magprune``'s."""
    lines = []
    for method in ("magprune-tois", "magprune-tois-params"):
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: (r["sparsity"], r["seed"]))
        if mine:
            per_c = {}
            for r in mine:
                per_c.setdefault(r["sparsity"], []).append(f"{r['min_item']} (of 0-{r['max_min_item']})")
            lines += ["", f"{PRUNE_NAMES[method]}: min_item chosen by the benchmark's binary search on validation "
                      f"{mine[0]['metric']}, seeds {', '.join(str(s) for s in sorted({r['seed'] for r in mine}))}: "
                      + "; ".join(f"{_pct(c)}: {', '.join(v)}" for c, v in sorted(per_c.items())) + "."]
    by = {(r["method"], r["sparsity"], r["seed"]): r for r in runs}
    ratios = []
    for c in sorted({c for (m, c, _) in by if m == "magprune-params"}):
        pairs = [(by["magprune-params", c, s], by["magprune", c, s]) for (m, cc, s) in by
                 if m == "magprune-params" and cc == c and ("magprune", c, s) in by]
        if pairs:
            ratios.append(f"{_pct(c)}: {np.mean([p['kept'] / b['kept'] for p, b in pairs]):.2f}x the entries, "
                          f"{np.mean([p['bytes'] / b['bytes'] for p, b in pairs]):.2f}x the bytes")
    if ratios:
        lines += ["", "Equal parameters (1 - c of the dense entries, as the TOIS'25 benchmark and the papers count) "
                  "against equal bytes (1 - c of the dense bytes, CSR index included), MagPrune: "
                  + "; ".join(ratios) + ". A deployment pays the bytes."]
    return lines
# one block per experiment: prune_lightgcn20 is LightGCN at patience 20 (patience 10 stopped ES on the
# plateau narrow tables sit on for ~20 epochs: two of three seeds at c = 90 %), prune_lightgcn at 10
def _render_grid(name: str) -> str:
    grid = load_grid(name)
    return render_prune(grid.runs, grid.settings, name)


MERGED = {name: (lambda out, name=name: _render_grid(name))
          for name in ("prune_lightgcn20", "prune_lightgcn", "prune_neumf", "prune_deepfm", "prune_planted_lightgcn",
                       "prune_planted1m")}
MERGED["ihas_breakdown"] = render_ihas_breakdown
MERGED["ciess_experiments"] = render_ciess_experiments
MERGED["stackedgrid_lightgcn20"] = render_stacked_grid
MERGED["verdict_runs"] = render_verdict_runs
HEADLINE_PRUNE = ("prune_lightgcn20", "prune_neumf", "prune_deepfm")   # the experiment each backbone's headline shows


HEADLINE_METHODS = ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "magprune-tois", "pep", "dnis", "ciess", "ihas")


def render_headline_prune(evidence: Path | None = None) -> str:
    """The headline of the pruning benchmark: per backbone and budget, the mean quality over seeds of every
    method at equal bytes, and its paired difference to ES at equal bytes (* where the 95 % interval
    excludes 0), read from each experiment's stored cells (``evidence``: default the repository's evidence/).
    The full tables are in benchmarks/README.md."""
    from recsize.search.compare import LABELS, LOWER_IS_BETTER, aukc, grid_metric, paired_summary
    names = {"es-bytes": "ES", "mde-bytes": "MDE", "mr-bytes": "MR", "magprune": "MagPrune",
             "magprune-tois": "MagPrune/TOIS", "pep": "PEP",
             "dnis": "DNIS in place", "ciess": "CIESS", "ihas": "iHAS"}
    lines, machines = [], set()
    from recsize.experiments import load_grids
    for name, grid in load_grids(HEADLINE_PRUNE, evidence).items():
        runs, settings = grid.runs, grid.settings
        backbone = settings[0]["backbone"]
        machines |= {s["machine"] for s in settings}
        metric = grid_metric(settings)
        rows = paired_summary(runs, "es-bytes", metric, HEADLINE_METHODS)
        methods = [m for m in HEADLINE_METHODS if any(r["method"] == m for r in rows)]
        seeds = sorted({r["seed"] for r in runs})
        areas = {m: aukc(runs, m, metric) for m in methods}
        heads = [names[m] + ("" if areas[m] is None else f" (AUKC {areas[m]['ratio']['mean']:.3f})")
                 for m in methods]
        lines += [f"**{backbone}** on {settings[0]['dataset']} (experiment {name}), test {LABELS[metric]}, patience "
                  f"{settings[0]['patience']}, seeds {', '.join(map(str, seeds))} (a cell shows the mean over the "
                  "seeds it ran and, in brackets, its paired difference to ES):", "",
                  "| c | " + " | ".join(heads) + " |", "|---|" + "---|" * len(methods)]
        sign = -1 if metric in LOWER_IS_BETTER else 1
        for c in sorted({r["sparsity"] for r in rows}):
            mine = {r["method"]: r for r in rows if r["sparsity"] == c}
            best = max(sign * r["mean"] for r in mine.values())
            cells = []
            for m in methods:
                r = mine.get(m)
                if r is None:
                    cells.append("")
                    continue
                text = f"{r['mean']:.3f}"
                text = f"**{text}**" if sign * r["mean"] == best else text
                d = r["delta"]
                if d is not None:
                    sure = d["low"] is not None and (d["low"] > 0 or d["high"] < 0)
                    text += f" ({d['mean']:+.3f}{'*' if sure else ''}, n = {d['n']})"
                cells.append(text)
            lines.append(f"| {_pct(c)} | " + " | ".join(cells) + " |")
        lines.append("")
    if not lines:
        raise FileNotFoundError(f"no stored cells of {', '.join(HEADLINE_PRUNE)} in {evidence or EVIDENCE}: run "
                                "recsize experiment run NAME")
    lines.append("Bold: best mean per budget; *: the 95 % interval of the paired difference excludes 0; AUKC: the "
                 "area under the quality curve over the kept fraction, over ES's on the same seed (mean over seeds; "
                 "ERASE, KDD'24). "
                 f"Machine: {'; '.join(sorted(machines))}.")
    return "\n".join(lines)


def render_headline_embedding(out: Path = OUT) -> str:
    """The headline of the storage benchmark: bytes and speed of the compact form at 10 % density against
    the best dense baseline (nn.Embedding, sparse=True, FBGEMM's fused kernel), and where the FBGEMM
    bucket path stands."""
    data = json.loads((out / "embedding.json").read_text())
    lines = ["| rows x d_max | dense | compact (10 % density) | forward, compact / best dense | "
             "fwd+bwd, compact / best dense |", "|---|---|---|---|---|"]
    for r in _embedding_at_10(data):
        lines.append(f"| {r['rows']:,} x {r['d_max']} | {_bytes(r['dense_bytes'])} | {_bytes(r['compact_bytes'])} | "
                     f"{r['fwd_compact'] / _best_dense(r, 'fwd'):.2f}x | "
                     f"{r['fwd_bwd_compact'] / _best_dense(r, 'fwd_bwd'):.2f}x |")
    dense = ", ".join(h for k, h in EMBEDDING_DENSE if any(f"fwd_{k}" in r for r in data["rows"]))
    return "\n".join(lines + ["", f"Best dense baseline: the fastest of {dense} for each table and pass; "
                                  f"{data.get('clock', 'wall time')}. {_fbgemm_sentence(data)} "
                                  f"Machine: {data['machine']}."])


def render_torchrec_serving(data: dict) -> str:
    """Narrow or quantise: bytes and test quality of MF tables served through TorchRec's collections
    (``benchmarks/torchrec_serving.py``, Appendix A): per seed, the mean, and the pairs at (about) equal bytes
    with their paired differences."""
    rows = data["quantisation"]
    seeds = sorted({r.get("seed", 0) for r in rows})
    groups = {}
    for r in rows:
        groups.setdefault((r["widths"], r["dtype"]), {})[r.get("seed", 0)] = r
    full = np.mean([r["tables"] for r in groups[("full", "fp32")].values()])
    lines = [f"Machine: {data['machine']}; MF on ml-100k (random 8:1:1), d_max 64, seeds "
             f"{', '.join(map(str, seeds))}, at most {data['epochs']} epochs with early stopping; tables: the bytes "
             "the collection stores (x full: over the full-width float32 tables; the id index adds "
             f"{_bytes(rows[0]['index'])}); test Recall@20 / NDCG@20 of a full ranking through the served tables.", "",
             "| widths | dtype | tables | x full | " + " | ".join(f"seed {s}" for s in seeds)
             + " | Recall@20 | NDCG@20 | best epoch (max) |", "|---|---|---:|---:|" + "---:|" * len(seeds) + "---:|---:|---:|"]
    for (widths, dtype), cells in groups.items():
        tables = np.mean([r["tables"] for r in cells.values()])
        lines.append(f"| {widths} | {dtype} | {_bytes(tables)} | {tables / full:.3f} | "
                     + " | ".join(f"{cells[s]['recall@20']:.4f}" if s in cells else "" for s in seeds)
                     + f" | {np.mean([r['recall@20'] for r in cells.values()]):.4f} | "
                     f"{np.mean([r['ndcg@20'] for r in cells.values()]):.4f} | "
                     f"{max(r['best_epoch'] for r in cells.values())} |")
    # every quantised full-width table against the float32 MDE table of the nearest bytes
    pairs = []
    for dtype in ("fp16", "int8"):
        quant = groups.get(("full", dtype))
        narrow = [(k, v) for k, v in groups.items() if k[0] != "full" and k[1] == "fp32"]
        if not quant or not narrow:
            continue
        q_bytes = np.mean([r["tables"] for r in quant.values()])
        key, other = min(narrow, key=lambda kv: abs(np.mean([r["tables"] for r in kv[1].values()]) - q_bytes))
        shared = sorted(set(quant) & set(other))
        diff = [quant[s]["recall@20"] - other[s]["recall@20"] for s in shared]
        pairs.append(f"full width {dtype} ({_bytes(q_bytes)}) minus {key[0]} fp32 "
                     f"({_bytes(np.mean([r['tables'] for r in other.values()]))}): "
                     + ", ".join(f"{d:+.4f}" for d in diff) + f" (mean {np.mean(diff):+.4f})")
    if pairs:
        lines += ["", "At about equal bytes, Recall@20 per seed: " + "; ".join(pairs) + "."]
    return "\n".join(lines)


def render_torchrec_planning(out: Path = OUT) -> str:
    """TorchRec's planner on the meta device for 10M / 100M-row tables, dense and as MDE width buckets
    (``benchmarks/torchrec_serving.py``, Appendix A): weight bytes in all and per rank."""
    data = json.loads((out / "torchrec_serving.json").read_text())
    lines = [f"Machine: {data['machine']} (planning only, nothing allocated); 8 GPUs per host, 32 GB each; "
             "weights only (optimizer state on top).", "",
             "| rows | table | ranks | weights | max / rank | min / rank | plan |", "|---:|---|---:|---:|---:|---:|---|"]
    for r in data["planning"]:
        kinds = {}
        for t in r["tables"].values():
            key = f"{t['sharding'].replace('_', '-')} over {t['ranks']}"
            kinds[key] = kinds.get(key, 0) + 1
        plan = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        b = r["rank_bytes"]
        lines.append(f"| {r['rows']:,} | {r['table']} | {r['ranks']} | {_bytes(r['weight_bytes'])} | "
                     f"{_bytes(max(b))} | {_bytes(min(b))} | {plan} |")
    return "\n".join(lines)


def render_torchrec_train(data: dict) -> str:
    """MF with MDE widths trained through the sharded TorchRec tables against one process and recsize's own
    trainer (``benchmarks/torchrec_train.py``, Appendix A)."""
    lines = [f"Machine: {data['machine']}; {data['world_size']} processes (gloo); d_max {data['d_max']}, density "
             f"{data['density']}; Adagrad lr {data['adagrad_lr']}; at most {data['epochs']} epochs, patience "
             f"{data['patience']}. Test Recall@20 (best epoch).", "",
             "| seed | sharded (Adagrad) | one process (Adagrad) | recsize's trainer (Adam) |", "|---:|---|---|---|"]
    for r in data["runs"]:
        cells = [f"{r[k]['recall@20']:.4f} ({r[k]['best_epoch']})" for k in ("sharded", "single", "recsize_adam")]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_overlap(data: dict) -> str:
    """Why element-wise pruning breaks dot-product scorers (``benchmarks/overlap.py``, Chapter 5): the
    dimensions a test pair's user and item rows both keep, pruned by magnitude (one threshold, or one
    per table), against ES's prefix widths at equal bytes, and LightGCN's propagated rows."""
    rows, settings = data["rows"], data["settings"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"ml-100k (random 8:1:1), d_max {settings['dim']}, the full-width model trained to convergence "
             f"(cap {settings['epochs']}, patience {settings['patience']}) and pruned by |E| to 1 - c of the dense "
             f"bytes (CSR); mean over seeds {', '.join(map(str, seeds))} of the number of dimensions a test pair's "
             "user and item rows both keep. Machine: " + data["machine"] + ".", "",
             "| backbone | c | MagPrune, one threshold | MagPrune, per table | ES prefix, equal bytes "
             "| propagated rows (LightGCN, one threshold) | kept, one threshold (per table) |",
             "|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["backbone"], r["sparsity"]) for r in rows)
    for backbone, c in keys:
        mine = {rule: [r for r in rows if (r["backbone"], r["sparsity"], r["split"]) == (backbone, c, rule)]
                for rule in ("global", "per-table")}
        def mean(rule, key):
            values = [r[key] for r in mine[rule] if r.get(key) is not None]
            return f"{np.mean(values):.2f}" if values else "-"
        kept = ", ".join(f"{role} {np.mean([r['kept'][role] for r in mine['global']]):.2f} "
                         f"({np.mean([r['kept'][role] for r in mine['per-table']]):.2f})"
                         for role in mine["global"][0]["kept"])
        lines.append(f"| {backbone} | {_pct(c)} | {mean('global', 'shared')} | {mean('per-table', 'shared')} | "
                     f"{mean('global', 'es_shared')} | {mean('global', 'propagated_shared')} | {kept} |")
    return "\n".join(lines)


HEADLINES = {"headline_prune": lambda out: render_headline_prune(), "headline_embedding": render_headline_embedding,
             "torchrec_planning": render_torchrec_planning}


RENDERERS = {"backbones": render_backbones, "embedding": render_embedding, "dnis": render_dnis,
             "ciess": render_ciess, "ihas": render_ihas, "head_to_head": render_head_to_head,
             "torchrec_serving": render_torchrec_serving,
             "torchrec_train": render_torchrec_train, "overlap": render_overlap, "pep_levels": render_pep_levels,
             "stacked": render_stacked, "where_time_goes": render_where_time_goes}


def renderer(name: str):
    """The renderer of table ``name``: its own, or that of its script for a variant run
    (``ihas_synthetic_search15`` is rendered like ``ihas``)."""
    if name in RENDERERS:
        return RENDERERS[name]
    if name.startswith("ciess_official"):   # a faithful-default CIESS configuration, paired with ES
        return render_ciess_variant
    script = name.split("_")[0]
    if script in RENDERERS:
        return RENDERERS[script]
    raise KeyError(f"unknown table {name!r}; known: {', '.join(RENDERERS)} (and their variants NAME_*)")


def render(name: str, out: Path = OUT) -> str:
    """The README table ``name``, rendered from ``out/NAME.json`` (or, for the merged tables, from every
    ``out/NAME_*.json``)."""
    if name in MERGED:
        return MERGED[name](out)
    if name in HEADLINES:
        return HEADLINES[name](out)
    render_table = renderer(name)
    path = out / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python benchmarks/{name.split('_')[0]}.py first")
    return render_table(json.loads(path.read_text()))


MARKER = re.compile(r"<!-- (begin|end) generated: ([\w-]+)")


def update(text: str, out: Path = OUT) -> str:
    """``text`` (the README) with every generated block re-rendered from ``out``. Unbalanced markers
    are an error."""
    names = list(dict.fromkeys(m.group(2) for m in MARKER.finditer(text)))
    for name in names:
        begin, end = BEGIN.format(name=name), END.format(name=name)
        if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
            raise ValueError(f"README: the markers of {name!r} must appear once each, in this order:\n{begin}\n{end}")
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        block = f"{begin}\n{render(name, out)}\n{end}"
        text = pattern.sub(lambda _: block, text, count=1)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Rewrite the generated result tables of README.md and "
                                            "benchmarks/README.md from benchmarks/out.")
    p.add_argument("--check", action="store_true", help="exit 1 if a README is not up to date")
    p.add_argument("--print", dest="show", metavar="NAME", help="print one table (NAME.json in benchmarks/out)")
    p.add_argument("--readme", type=Path, action="append",
                   help="the file to rewrite (repeatable; default README.md and benchmarks/README.md)")
    args = p.parse_args(argv)
    if args.show:
        print(render(args.show))
        return 0
    stale = 0
    for readme in args.readme or READMES:
        old = readme.read_text()
        new = update(old)
        if args.check:
            if new != old:
                print(f"{readme} is out of date with benchmarks/out: run python benchmarks/report.py")
                stale += 1
            else:
                print(f"{readme}: generated tables are up to date")
            continue
        if new != old:
            fd, tmp = tempfile.mkstemp(dir=readme.parent, prefix=".README.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(new)
            shutil.copymode(readme, tmp)
            os.replace(tmp, readme)
        print(f"{readme}: {'updated' if new != old else 'already up to date'}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
