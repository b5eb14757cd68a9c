"""Budget-matched baselines: equal sizes (ES), mixed random sizes (MR) and the frequency rule of
mixed-dimension embeddings (MDE). Explained in Chapter 4 (The variable-size embedding).

Every baseline gives each row an integer width in [1, d_max] and hits the budget *exactly*: the widths
sum to ``target_parameters(density, num_rows, d_max) = round(density * num_rows * d_max)`` (halves
up), so a search method and its baselines are compared at the same kept-parameter count, never "about
the same". Rounding happens once, on the total; each rule then distributes that total:

* ES: every row gets ``total // num_rows``; the remainder goes one each to the most frequent rows.
* MR: widths proportional to seeded uniform random scores, scaled to the total.
* MDE (Ginart et al., arXiv 1909.11810): popular rows get wider, d_n proportional to p_n^alpha where
  p_n is the row's training frequency and alpha in [0, 1] the temperature (alpha = 0 is ES; 0.3 is
  the default of the DLRM reference code's ``--md-temperature``). The paper applies the rule to whole
  tables (blocks); recsize applies it per row.

MR and MDE share :func:`fit_to_total`: find the scale s by bisection so that the continuous widths
clip(s * score_n, 1, d_max) sum to the total, then round them with the largest-remainder rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..budget import check_budget, memory_report, target_parameters

METHODS = ("es", "mr", "mde")


def _checked_total(num_rows: int, d_max: int, density: float) -> int:
    if num_rows < 1 or d_max < 1:
        raise ValueError(f"need num_rows >= 1 and d_max >= 1, got {num_rows} and {d_max}")
    total = target_parameters(check_budget(density), num_rows, d_max)
    if total < num_rows:
        raise ValueError(f"density {density:g} keeps {total} parameters for {num_rows} rows, fewer than one "
                         f"dimension per row; the baselines give every row at least one: use a density of "
                         f"at least 1/d_max = {1 / d_max:.4g}")
    return total


def _checked_counts(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 1:
        raise ValueError(f"counts must be one frequency per row, got shape {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("counts must be finite and non-negative (training frequencies)")
    return counts


def round_to_total(widths, total: int, d_max: int, min_size: int = 1) -> np.ndarray:
    """Integer widths in [min_size, d_max] summing exactly to ``total``, as close as possible to the
    continuous ``widths``: floor, then the largest-remainder rule (ties: wider row first, then lower
    id). Explained in Chapter 4."""
    x = np.asarray(widths, dtype=np.float64)
    n = len(x)
    if not n * min_size <= total <= n * d_max:
        raise ValueError(f"{n} rows in [{min_size}, {d_max}] cannot sum to {total}")
    sizes = np.clip(np.floor(x), min_size, d_max).astype(np.int64)
    frac = x - np.floor(x)
    ids = np.arange(n)
    while (diff := total - int(sizes.sum())) != 0:
        if diff > 0:  # one more dimension for the rows with the largest remainders
            room = ids[sizes < d_max]
            order = room[np.lexsort((room, -x[room], -frac[room]))]
            sizes[order[:diff]] += 1
        else:         # one less for the rows with the smallest remainders
            room = ids[sizes > min_size]
            order = room[np.lexsort((room, x[room], frac[room]))]
            sizes[order[:-diff]] -= 1
    return sizes


def fit_to_total(scores, total: int, d_max: int, min_size: int = 1) -> np.ndarray:
    """Widths proportional to ``scores``, clipped to [min_size, d_max] and summing exactly to ``total``.

    The scale s is found by bisection on sum(clip(s * score, min_size, d_max)) = total (the sum grows
    with s), then :func:`round_to_total` makes the widths integers. Explained in Chapter 4.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.max(initial=0.0) <= 0:
        scores = np.ones_like(scores)  # no information: equal widths

    def kept(s):
        return np.clip(s * scores, min_size, d_max).sum()

    lo, hi = 0.0, 1.0
    while kept(hi) < total and hi < 1e300:
        hi *= 2
    while hi - lo > 1e-12 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < total else (lo, mid)
    return round_to_total(np.clip(hi * scores, min_size, d_max), total, d_max, min_size)


def es_sizes(num_rows: int, d_max: int, density: float, counts=None) -> np.ndarray:
    """ES, equal sizes: every row ``total // num_rows`` wide; the remainder goes one dimension each to
    the most frequent rows (by ``counts``; the first rows without counts). Explained in Chapter 4."""
    total = _checked_total(num_rows, d_max, density)
    sizes = np.full(num_rows, total // num_rows, dtype=np.int64)
    extra = total - int(sizes.sum())
    if extra:
        order = (np.arange(num_rows) if counts is None
                 else np.lexsort((np.arange(num_rows), -_checked_counts(counts))))
        sizes[order[:extra]] += 1
    return sizes


def mr_sizes(num_rows: int, d_max: int, density: float, seed: int = 0) -> np.ndarray:
    """MR, mixed random sizes: widths proportional to seeded uniform random scores (so they spread from
    1 to about twice the mean width), summing exactly to the budget. Explained in Chapter 4."""
    total = _checked_total(num_rows, d_max, density)
    scores = np.random.default_rng(seed).random(num_rows)
    return fit_to_total(scores, total, d_max)


def mde_sizes(counts, d_max: int, density: float, alpha: float = 0.3) -> np.ndarray:
    """MDE frequency rule: d_n proportional to p_n^alpha (p_n = the row's share of training
    interactions), clipped to [1, d_max] and summing exactly to the budget. Popular rows get wider.
    Explained in Chapter 4."""
    counts = _checked_counts(counts)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the MDE temperature) must lie in [0, 1], got {alpha}")
    total = _checked_total(len(counts), d_max, density)
    p = counts / counts.sum() if counts.sum() > 0 else np.ones_like(counts)
    return fit_to_total(p ** alpha, total, d_max)


def baseline_sizes(method: str, counts, d_max: int, density: float, seed: int = 0,
                   alpha: float = 0.3) -> np.ndarray:
    """Widths for ``method`` in ``es``, ``mr``, ``mde`` for rows with training frequencies ``counts``,
    hitting ``density`` exactly. Explained in Chapter 4."""
    counts = _checked_counts(counts)
    if method == "es":
        return es_sizes(len(counts), d_max, density, counts)
    if method == "mr":
        return mr_sizes(len(counts), d_max, density, seed)
    if method == "mde":
        return mde_sizes(counts, d_max, density, alpha)
    raise ValueError(f"unknown baseline {method!r}: choose one of {', '.join(METHODS)}")


def role_counts(split) -> dict[str, np.ndarray]:
    """Training frequency of every row, by embedding role: users by activity and items by popularity
    for a top-k split (NeuMF's MLP tables reuse them), feature values by frequency for a CTR split.
    Explained in Chapter 4."""
    if hasattr(split, "feature_counts"):
        return {"feature": split.feature_counts()}
    users, items = split.user_activity(), split.item_popularity()
    return {"user": users, "item": items, "user_mlp": users, "item_mlp": items}


@dataclass
class BaselineRun:
    """What :func:`run_baseline` produced: sizes per role, the training result, the test metrics with
    the compact tables, and the memory of every storage form. ``model`` holds compact tables.
    Explained in Chapter 4."""

    method: str
    density: float
    d_max: int
    sizes: dict
    result: object
    test_compact: dict | None
    memory: dict
    init: str = "xavier"
    model: object = field(default=None, repr=False)

    @property
    def stored_bytes(self) -> int:
        """The measured bytes of the compact tables, every table together. Explained in Chapter 4."""
        return sum(self.memory[r]["compact_measured"] for r in self.sizes)

    def to_dict(self) -> dict:
        return {"method": self.method, "density": self.density, "sparsity": 1 - self.density,
                "d_max": self.d_max, "init": self.init, "sizes": {r: s.tolist() for r, s in self.sizes.items()},
                "memory": self.memory, "test_compact": self.test_compact, **self.result.to_dict()}


def _role_sizes(split, method: str, density: float, d_max: int, seed: int, alpha: float) -> dict:
    """Widths per role of baseline ``method`` (:func:`role_counts`; MR draws role i with seed ``seed + i``)."""
    return {role: baseline_sizes(method, counts, d_max, density, seed=seed + i, alpha=alpha)
            for i, (role, counts) in enumerate(role_counts(split).items())}


def _shrunk(method: str, density: float, d_max: int, sizes: dict, result, split, init: str) -> BaselineRun:
    """A trained masked model's :class:`BaselineRun`: its tables converted to compact ones, the memory of
    every storage form next to what the modules really hold, the test split evaluated again."""
    from ..embedding import compact_tables
    from ..evaluate import evaluate_ctr, evaluate_topk
    model = result.model
    roles = list(model.embedding_tables())
    masked_bytes = {role: model.embedding_tables()[role].num_bytes() for role in roles}
    compact_tables(model)
    memory = memory_report({role: sizes[role] for role in roles}, d_max)
    for role in roles:  # what the modules really hold, next to the arithmetic
        memory[role]["masked_measured"] = masked_bytes[role]
        memory[role]["compact_measured"] = model.embedding_tables()[role].num_bytes()
    test_compact = None
    if result.test is not None:
        evaluate = evaluate_topk if model.task == "topk" else evaluate_ctr
        test_compact = evaluate(model, split, "test")
    return BaselineRun(method, density, d_max, {role: sizes[role] for role in roles}, result, test_compact,
                       memory, init, model)


def _default_init(backbone: str, init: str | None) -> str:
    from ..backbones import DEFAULTS
    return init or DEFAULTS.get(backbone.lower(), {}).get("init", "xavier")


def run_baseline(backbone: str, split, method: str, density: float, d_max: int = 64, config=None,
                 seed: int = 0, alpha: float = 0.3, init: str | None = None, **model_kwargs) -> BaselineRun:
    """Train ``backbone`` on ``split`` with the widths of baseline ``method`` at ``density``, then shrink.

    Sizes per role come from training frequencies (:func:`role_counts`; MR draws role i with seed
    ``seed + i``); the model trains with :class:`~recsize.embedding.MaskedEmbedding` tables, initialised
    like the backbone's plain tables unless ``init`` says otherwise, through :func:`recsize.train.fit`;
    its tables are then converted to :class:`~recsize.embedding.CompactEmbedding` and the test split is
    evaluated again to show the lookups did not change. Explained in Chapter 4.
    """
    from ..embedding import masked_factory
    from ..train import fit
    density = check_budget(density)
    init = _default_init(backbone, init)
    sizes = _role_sizes(split, method, density, d_max, seed, alpha)
    result = fit(backbone, split, d_max, config, embedding=masked_factory(sizes, d_max, init=init), **model_kwargs)
    return _shrunk(method, density, d_max, sizes, result, split, init)


def run_baselines_stacked(backbone: str, split, cells, d_max: int = 64, config=None, seed: int = 0,
                          alpha: float = 0.3, init: str | None = None, **model_kwargs) -> list[BaselineRun]:
    """:func:`run_baseline` for every ``(method, density)`` of ``cells``, the models trained together in one
    stacked pass (:func:`recsize.stacked.train_stacked`: LightGCN only), in order.

    Each run equals ``run_baseline(backbone, split, method, density, d_max, config, seed, alpha, init)``
    (bit for bit on the CPU: the same widths, initial weights, batches and stopping), except its
    ``result.seconds``, the shared pass's wall time until that model stopped. Explained in Chapter 8.
    """
    from ..stacked import train_stacked
    if not isinstance(cells, (list, tuple)) or not cells or not all(
            isinstance(c, (list, tuple)) and len(c) == 2 for c in cells):
        raise ValueError(f"cells must be a non-empty list of (method, density) pairs, got {cells!r}")
    init = _default_init(backbone, init)
    checked = [(method, check_budget(density)) for method, density in cells]
    sizes = [_role_sizes(split, method, density, d_max, seed, alpha) for method, density in checked]
    results = train_stacked(backbone, split, sizes, config, d_max=d_max, init=init, **model_kwargs)
    return [_shrunk(method, density, d_max, own, result, split, init)
            for (method, density), own, result in zip(checked, sizes, results)]
