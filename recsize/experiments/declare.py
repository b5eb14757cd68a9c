"""What an experiment is: the grid of cells (method x budget x seed) and every setting that changes a number.
Explained in Chapter 8.

An :class:`Experiment` names its data, its backbone, the protocol (d_max, epoch cap, patience, each
method's own settings), its budgets (sparsities c: the pruned fraction of the dense tables' bytes) and its
seeds. :data:`EXPERIMENTS` declares, once, every grid the book and the benchmarks' README quote; each grid's
cells live in ``evidence/NAME.jsonl`` (:mod:`recsize.experiments.store`) and are computed by
:func:`recsize.experiments.runner.run`. The settings below are those the stored cells were computed with
(read from the ``settings`` of the ``benchmarks/out/NAME_*.json`` files they came from).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

# every method a grid can hold, in the order of benchmarks/prune.py's tables
MAGPRUNE_METHODS = ("magprune", "magprune-table", "magprune-tois", "magprune-params", "magprune-tois-params")
DNIS_METHODS = ("dnis", "dnis-alpha", "dnis-table", "dnis-prefix", "dnis-prefix-old", "dnis-joint")
# the quantised and hashed tables at equal bytes (Chapter 8.9; recsize.experiments.families)
FAMILY_METHODS = ("int8", "int4", "qat-int4", "es-int8", "mde-int8", "qr", "hash")
METHODS = (*MAGPRUNE_METHODS, "pep", "es", "es-bytes", "mde-bytes", "mr-bytes", *DNIS_METHODS, "ciess", "ihas",
           *FAMILY_METHODS)
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
# each backbone's task (recsize.backbones' TOPK_BACKBONES / CTR_BACKBONES, named here so that declaring an
# experiment imports no torch) and the method that applies to one task only
TASKS = {"mf": "topk", "neumf": "topk", "ngcf": "topk", "lightgcn": "topk", "fm": "ctr", "deepfm": "ctr"}
ONE_TASK = {"ciess": "topk", "ihas": "ctr"}
# the keys of benchmarks/prune.py's settings, in its order; "dim" is Experiment.d_max
SETTING_KEYS = ("dataset", "backbone", "seeds", "sparsities", "methods", "dim", "epochs", "patience", "prune_split",
                "pep_epochs", "pep_init", "pep_scale", "pep_granularity", "quick", "ciess_episodes",
                "ciess_iterations", "ciess_iteration_batches", "ciess_top_l", "ciess_reward", "ciess_lam",
                "ihas_charge", "ihas_clusters", "ihas_search_epochs", "ihas_layout", "ihas_cluster_init")

# the settings that change a cell's numbers: two sets of cells (files, a declaration and its stored cells)
# agree on them or are not the same protocol
RUN_SETTINGS = ("backbone", "dataset", "dim", "epochs", "patience", "prune_split", "pep_epochs", "pep_init",
                "pep_scale", "pep_granularity", "quick", "ciess_episodes", "ciess_iterations",
                "ciess_iteration_batches", "ciess_top_l", "ciess_reward", "ciess_lam", "ihas_charge", "ihas_clusters",
                "ihas_search_epochs", "ihas_layout", "ihas_cluster_init")
# settings added after outputs existed: a file without one was run at this value (CIESSConfig's and
# IHASConfig's defaults; such files hold no CIESS or iHAS cells), so old files still resume and merge
SETTING_DEFAULTS = {"ciess_episodes": 30, "ciess_iterations": 10, "ciess_iteration_batches": None,
                    "ciess_top_l": 3, "ciess_reward": "code", "ciess_lam": None, "ihas_charge": "routing",
                    "ihas_clusters": 4, "ihas_search_epochs": 10, "ihas_layout": "per-cluster",
                    "ihas_cluster_init": "scratch"}
# settings that only shape one method's cells: they matter only where both sides hold that method
SETTING_METHOD = {"pep_": "pep", "ciess_": "ciess", "ihas_": "ihas"}


def run_setting(settings: dict, key: str):
    """``settings[key]`` (an experiment's :meth:`Experiment.settings` or a ``benchmarks/prune.py``
    output's), or :data:`SETTING_DEFAULTS`' value for a key an older file lacks. Explained in Chapter 8."""
    return settings.get(key, SETTING_DEFAULTS.get(key))


def setting_method(key: str) -> str | None:
    """The method whose cells a setting shapes (``pep_init`` -> ``pep``), None for the shared ones.
    Explained in Chapter 8."""
    return next((m for prefix, m in SETTING_METHOD.items() if key.startswith(prefix)), None)


def differing_settings(a: dict, b: dict, methods=None) -> list[str]:
    """The :data:`RUN_SETTINGS` in which two settings dicts differ (absent keys read as their default).
    With ``methods`` (the methods both sides hold cells of), a method's own settings (``pep_*``,
    ``ciess_*``, ``ihas_*``) count only when that method is among them. Explained in Chapter 8."""
    keep = (lambda k: True) if methods is None else (lambda k: setting_method(k) in (None, *methods))
    return [k for k in RUN_SETTINGS if keep(k) and run_setting(a, k) != run_setting(b, k)]


@dataclass(frozen=True)
class Experiment:
    """One grid: every (method, sparsity, seed) cell of ``methods`` x ``sparsities`` x ``seeds``, except
    where ``subsets`` narrows a method to part of it. Explained in Chapter 8.

    Budgets are sparsities c in ``budget_unit``: ``"bytes"``, each element-wise method keeps 1 - c of the
    dense tables' bytes (CSR index included) and the prefix methods (``*-bytes``, CIESS) the largest
    density whose compact tables fit those bytes; ``es``, ``dnis-prefix`` and ``*-params`` keep 1 - c of
    the parameters (more bytes; their cells record them). Every other field is a setting that changes a
    cell's numbers (benchmarks/prune.py's flags of the same names); a method's own settings (``pep_*``,
    ``ciess_*``, ``ihas_*``) matter only where the grid holds that method.
    """

    name: str
    backbone: str
    dataset: str
    methods: tuple
    sparsities: tuple = SPARSITIES
    seeds: tuple = (0, 1, 2)
    budget_unit: str = "bytes"
    subsets: tuple = ()              # (method, sparsities, seeds): a method run on part of the grid only
    d_max: int = 64
    epochs: int = 300                # the cap of every training, search and retraining
    patience: int = 10
    prune_split: str = "global"      # MagPrune: one threshold over all tables, or one per table
    pep_epochs: int = 300
    pep_init: float = -15.0
    pep_scale: float = 1.0
    pep_granularity: str = "feature_dim"
    ciess_episodes: int = 30
    ciess_iterations: int = 10
    ciess_iteration_batches: int | None = None
    ciess_top_l: int = 3
    ciess_reward: str = "code"
    ciess_lam: float | None = None
    ihas_charge: str = "routing+linear"
    ihas_clusters: int = 4
    ihas_search_epochs: int = 10
    ihas_layout: str = "per-cluster"
    ihas_cluster_init: str = "scratch"
    quick: bool = False              # benchmarks/prune.py --quick (a smoke run)
    note: str = ""                   # what the grid is quoted for

    def __post_init__(self):
        if self.backbone not in TASKS:
            raise ValueError(f"unknown backbone {self.backbone!r}: choose one of {', '.join(TASKS)}")
        set_ = lambda name, value: object.__setattr__(self, name, value)   # noqa: E731 (frozen)
        set_("methods", _names(self.methods, "methods"))
        set_("seeds", _seeds(self.seeds))
        set_("sparsities", _sparsities(self.sparsities))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
        wrong = [m for m in self.methods if ONE_TASK.get(m, self.task) != self.task]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} does not apply to backbone {self.backbone}: CIESS searches a "
                             "top-k model's widths, iHAS a CTR model's fields; drop it from methods")
        if self.budget_unit != "bytes":
            raise ValueError(f"budget_unit must be 'bytes' (1 - c of the dense bytes), got {self.budget_unit!r}")
        subsets = []
        for method, sparsities, seeds in self.subsets:
            if method not in self.methods:
                raise ValueError(f"subsets names {method!r}, which is not among the methods: add it to methods")
            sparsities, seeds = _sparsities(sparsities), _seeds(seeds)
            if not set(sparsities) <= set(self.sparsities) or not set(seeds) <= set(self.seeds):
                raise ValueError(f"the subset of {method} must lie inside the grid's sparsities and seeds")
            subsets.append((method, sparsities, seeds))
        set_("subsets", tuple(subsets))
        for key in ("d_max", "epochs", "pep_epochs"):
            if int(getattr(self, key)) != getattr(self, key) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)}")
        if int(self.patience) != self.patience or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {self.patience}")

    @property
    def task(self) -> str:
        """``"topk"`` (Recall@20 / NDCG@20 by full ranking) or ``"ctr"`` (AUC / log loss). Explained in Chapter 8."""
        return TASKS[self.backbone]

    def cells(self) -> list[tuple]:
        """Every declared cell as (method, sparsity, seed), seeds outermost, then budgets, then methods
        (the order in which :func:`~recsize.experiments.runner.run` computes them). Explained in Chapter 8."""
        narrow = {m: (c, s) for m, c, s in self.subsets}
        return [(m, c, s) for s in self.seeds for c in self.sparsities for m in self.methods
                if m not in narrow or (c in narrow[m][0] and s in narrow[m][1])]

    def settings(self) -> dict:
        """The settings dict of a ``benchmarks/prune.py`` output that this grid's cells carry (its keys,
        its order; ``dim`` is ``d_max``). Explained in Chapter 8."""
        values = {**asdict(self), "dim": self.d_max, "seeds": list(self.seeds),
                  "sparsities": list(self.sparsities), "methods": list(self.methods)}
        return {k: values[k] for k in SETTING_KEYS}

    def to_dict(self) -> dict:
        """The declaration as plain JSON values (the header of its evidence file). Explained in Chapter 8."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_settings(cls, name: str, settings: dict, **fields_) -> Experiment:
        """An experiment declared from the settings of a ``benchmarks/prune.py`` output (or its flags):
        the inverse of :meth:`settings`; ``fields_`` adds others (``note``, ``subsets``). Explained in Chapter 8."""
        values = {k: settings[k] for k in SETTING_KEYS if k in settings}
        values["d_max"] = values.pop("dim", 64)
        for key in ("methods", "sparsities", "seeds"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(name=name, **values, **fields_)

    @classmethod
    def from_dict(cls, data: dict) -> Experiment:
        """The inverse of :meth:`to_dict`; unknown keys are refused. Explained in Chapter 8."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"not fields of an Experiment: {', '.join(unknown)}")
        data = dict(data)
        for key in ("methods", "sparsities", "seeds"):
            if key in data:
                data[key] = tuple(data[key])
        data["subsets"] = tuple((m, tuple(c), tuple(s)) for m, c, s in data.get("subsets", ()))
        return cls(**data)


def _names(values, what: str) -> tuple:
    values = (values,) if isinstance(values, str) else tuple(values)
    if not values:
        raise ValueError(f"{what} is empty: give at least one")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} repeat a name: {list(values)}")
    return tuple(str(v) for v in values)


def _seeds(seeds) -> tuple:
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    if not seeds:
        raise ValueError("the seed list is empty: give at least one seed, e.g. 0")
    if any(isinstance(s, bool) or int(s) != s for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {list(seeds)}")
    return tuple(int(s) for s in seeds)


def _sparsities(values) -> tuple:
    values = (values,) if isinstance(values, (int, float)) else tuple(values)
    if not values:
        raise ValueError("the sparsities are empty: give at least one c, e.g. 0.9")
    if any(not 0 < float(c) < 1 for c in values) or len(set(values)) != len(values):
        raise ValueError(f"sparsities are distinct pruned fractions c strictly between 0 and 1, got {list(values)}")
    return tuple(float(c) for c in values)


_REDUCED_CIESS = {"ciess_episodes": 6, "ciess_iterations": 5, "ciess_iteration_batches": 200, "ciess_top_l": 1}
_EQUAL_BYTES = ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "magprune-params", "magprune-tois",
                "magprune-tois-params", "pep")
# each family on the budgets above its floor at d_max = 64 (the others are skipped, never cells): full-width
# int8 takes 26.6 % of the dense bytes, int4 14.1 %, an int8 compact table's scales, biases and offsets 4.7 %;
# QR's ~2 sqrt(N) rows take 6.6 % of ml-100k's 943 user rows (3.7 % of DeepFM's 2,858 feature values)
_FLOORS = {"int8": (0.5,), "int4": (0.5, 0.8), "qat-int4": (0.5, 0.8), "es-int8": (0.5, 0.8, 0.9),
           "mde-int8": (0.5, 0.8, 0.9)}


def _families(*also) -> tuple:
    """The subsets that keep each family (and ``also``'s (method, sparsities)) above its floor, three seeds."""
    return tuple((m, c, (0, 1, 2)) for m, c in (*_FLOORS.items(), *also))


EXPERIMENTS = {e.name: e for e in (
    Experiment("prune_lightgcn20", "lightgcn", "ml-100k",
               (*_EQUAL_BYTES, "dnis", "dnis-joint", "ciess", *FAMILY_METHODS), patience=20, **_REDUCED_CIESS,
               subsets=_families(("qr", (0.5, 0.8, 0.9))),
               note="the headline LightGCN grid (Chapters 4, 5, 8): patience 20, as ES peaks near epoch 19; "
                    "the quantised and hashed families (8.9) above their floors"),
    Experiment("prune_lightgcn", "lightgcn", "ml-100k",
               ("es-bytes", "magprune", "dnis", "dnis-alpha", "dnis-prefix", "dnis-table", "es"),
               subsets=(("es", SPARSITIES, (0,)),),
               note="DNIS's derivations at patience 10 (Chapter 5); plain ES on seed 0 only"),
    Experiment("prune_neumf", "neumf", "ml-100k",
               (*_EQUAL_BYTES, "magprune-table", "dnis", "dnis-alpha", "dnis-prefix", "dnis-table", "ciess", "es",
                *FAMILY_METHODS),
               subsets=(("es", (0.5,), (0,)), *_families(("qr", (0.5, 0.8, 0.9)))), **_REDUCED_CIESS,
               note="NeuMF at equal bytes (Chapters 4, 5, 8); plain ES at c = 50 %, seed 0 only; the quantised "
                    "and hashed families (8.9) above their floors"),
    Experiment("prune_deepfm", "deepfm", "ml-100k-ctr",
               (*_EQUAL_BYTES, "dnis", "dnis-alpha", "dnis-prefix", "ihas", "es", *FAMILY_METHODS),
               subsets=(("ihas", (0.5, 0.8), (0, 1, 2)), ("es", (0.5, 0.8), (0,)), *_families()),
               note="DeepFM at equal bytes (Chapters 4, 5, 8); iHAS's router and first-order tables leave no "
                    "room at c = 90 and 95 %; plain ES on seed 0 only; the quantised and hashed families (8.9) "
                    "above their floors"),
    Experiment("prune_planted_lightgcn", "lightgcn", "planted-100k",
               ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "pep", "dnis", "ciess"), **_REDUCED_CIESS,
               note="planted widths independent of popularity (Chapter 8): which method reads the data"),
    Experiment("prune_planted1m", "lightgcn", "planted-1m", ("es-bytes", "mde-bytes", "magprune"),
               sparsities=(0.9,), seeds=(0,), note="a one-seed probe at c = 90 % on the larger planted data"),
    Experiment("prune_cap1000_lightgcn", "lightgcn", "ml-100k", ("magprune", "pep", "ciess"),
               sparsities=(0.8, 0.95), epochs=1000, patience=20, **_REDUCED_CIESS,
               subsets=(("magprune", (0.95,), (0, 1)), ("pep", (0.95,), (0, 2)), ("ciess", (0.8,), (0,))),
               note="probe: the cells whose best epoch was near the 300-epoch cap, rerun with a cap of 1000"),
    Experiment("prune_patience20_lightgcn", "lightgcn", "ml-100k", ("es-bytes",), sparsities=(0.9,),
               seeds=(0, 2), patience=20,
               note="probe: the two ES cells that patience 10 stopped on a plateau, at patience 20"),
)}


def list_experiments() -> list[Experiment]:
    """The declared experiments, in the order of :data:`EXPERIMENTS`. Explained in Chapter 8."""
    return list(EXPERIMENTS.values())


def get(name: str) -> Experiment:
    """The declared experiment ``name``; an unknown name raises ValueError naming the known ones.
    Explained in Chapter 8."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: choose one of {', '.join(EXPERIMENTS)} "
                         "(recsize.experiments.list_experiments())")
    return EXPERIMENTS[name]
