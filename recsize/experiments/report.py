"""Tables over stored cells: what an experiment shows, per budget, with the seeds paired.
Explained in Chapter 8.

Plain functions over :class:`~recsize.experiments.records.Cell` lists (nothing is printed): :func:`header`
says what the cells are and where they come from, :func:`budget_table` gives per budget and method the
value of every seed, the mean and the paired difference to ES at equal bytes with its 95 % interval
(:func:`recsize.stats.paired_summary`), and :func:`report` puts both together for a stored
experiment.
"""
from __future__ import annotations

from collections import Counter

from . import store
from .declare import Experiment, get
from .records import Cell

BASELINE = "es-bytes"


def _pct(c: float) -> str:
    return f"{100 * c:g} %"


def metric_of(experiment: Experiment) -> str:
    """The headline metric of an experiment's cells: Recall@20 (top-k), AUC (CTR). Explained in Chapter 8."""
    from ..search.compare import METRICS
    return METRICS[experiment.task][0]


def header(experiment: Experiment, cells: list[Cell]) -> str:
    """Which experiment, how many cells of how many declared, the code commits and machines they were
    computed with, and the protocol. Explained in Chapter 8."""
    commits = Counter(c.provenance.get("commit") for c in cells)
    shown = "; ".join(f"{k[:10]} ({n} cells)" if k else f"not recorded ({n} cells migrated from benchmarks/out)"
                      for k, n in sorted(commits.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))
    machines = sorted({c.provenance.get("machine") for c in cells if c.provenance.get("machine")})
    missing = len(store.missing(experiment, cells))
    e = experiment
    return "\n".join([
        f"experiment {e.name}, {len(cells)} cells ({len(e.cells())} declared, {missing} missing), code commit "
        f"{shown or 'none'}",
        f"{e.backbone} on {e.dataset}, d_max {e.d_max}, every training capped at {e.epochs} epochs with patience "
        f"{e.patience}; budgets c = {', '.join(_pct(c) for c in e.sparsities)} of the dense bytes; seeds "
        f"{', '.join(map(str, e.seeds))}" + (f"; {e.note}" if e.note else ""),
        f"machines: {'; '.join(machines) or 'not recorded'}"])


def _interval(delta: dict | None) -> str:
    if delta is None:
        return ""
    text = f"{delta['mean']:+.4f}"
    if delta["low"] is not None:
        text += f" [{delta['low']:+.4f}, {delta['high']:+.4f}]"
    return text + f" (n = {delta['n']})"


def budget_table(experiment: Experiment, cells: list[Cell], metric: str | None = None,
                 baseline: str = BASELINE) -> str:
    """Per budget and method (the declaration's order): test ``metric`` of every seed, the mean, and the
    paired difference to ``baseline`` over the seeds both ran, mean [95 % Student-t interval]
    (:func:`recsize.stats.paired_summary`), as a markdown table. Explained in Chapter 8."""
    from ..search.compare import LABELS
    from ..stats import paired_summary
    metric = metric or metric_of(experiment)
    runs = [c.to_prune_run() for c in cells]
    seeds = sorted({c.seed for c in cells})
    paired = (f"Δ: paired difference to {baseline}, mean [95 % interval] over the seeds both ran"
              if any(c.method == baseline for c in cells) else f"no Δ: the experiment holds no {baseline} cells")
    lines = [f"test {LABELS.get(metric, metric)}; {paired}", "",
             "| c | method | " + " | ".join(f"seed {s}" for s in seeds) + f" | mean | Δ vs {baseline} |",
             "|---|---|" + "---|" * len(seeds) + "---|---|"]
    methods = [*experiment.methods, *sorted({c.method for c in cells} - set(experiment.methods))]
    for row in paired_summary(runs, baseline, metric, methods):
        values = [f"{row['cells'][s][metric]:.4f}" if s in row["cells"] else "" for s in seeds]
        lines.append(f"| {_pct(row['sparsity'])} | {row['method']} | " + " | ".join(values)
                     + f" | {row['mean']:.4f} | {_interval(row['delta'])} |")
    return "\n".join(lines)


def report(name, folder=None) -> str:
    """The report of a stored experiment (a declared name or an :class:`Experiment`): :func:`header` and
    :func:`budget_table` over its evidence file (``folder``: default the repository's ``evidence/``).
    Explained in Chapter 8."""
    experiment = name if isinstance(name, Experiment) else get(name)
    cells = store.read(experiment, folder)
    if not cells:
        return (f"experiment {experiment.name}: no cells stored in {store.path_of(experiment, folder)}; compute "
                f"them with recsize.experiments.runner.run({experiment.name!r})")
    return header(experiment, cells) + "\n\n" + budget_table(experiment, cells)
