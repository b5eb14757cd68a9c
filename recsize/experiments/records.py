"""One record per experiment cell, the same for every method. Explained in Chapter 8.

A :class:`Cell` is one (method, sparsity, seed) of an experiment: the test metrics with the stored
tables, the bytes they take and the dense tables' bytes, the kept entries, the best epoch of the final
training, the wall times, whatever only its method records (``extra``: MagPrune's ``min_item``, CIESS's
``projected``, the widths' Spearman correlations, ...) and where it was computed (``provenance``: the
code's commit, the machine, the device, the torch and recsize versions, the date). Nothing a
``benchmarks/prune.py`` cell holds is lost: :meth:`Cell.from_prune_run` and :meth:`Cell.to_prune_run`
convert both ways, and the second gives back the first's dict.
"""
from __future__ import annotations

import datetime
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

METRIC_NAMES = ("recall@20", "ndcg@20", "auc", "logloss")   # test metrics: top-k, then CTR
# the order of a benchmarks/prune.py cell's keys (its record()); a method's own keys follow
_PRUNE_ORDER = ("method", "sparsity", "seed", "density", *METRIC_NAMES, "valid_ndcg@20", "valid_logloss", "form",
                "bytes", "bytes_int32", "reached", "mask_epoch", "budget_bytes", "dense_bytes", "kept",
                "kept_fraction", "best_epoch", "epochs", "seconds", "spearman")
_CORE = ("bytes", "dense_bytes", "kept", "best_epoch", "seconds")
PROVENANCE_KEYS = ("commit", "machine", "device", "torch", "recsize", "date", "source")


@dataclass
class Cell:
    """One (method, sparsity, seed) cell of an experiment. Explained in Chapter 8.

    ``metrics``: the test metrics with the stored tables (Recall@20 and NDCG@20, or AUC and log loss);
    ``bytes``: what the stored tables take (CSR, compact prefix tables, or iHAS's clusters and router),
    ``dense_bytes``: the full-width tables'; ``kept``: entries kept; ``best_epoch`` of the final training;
    ``seconds``: wall times by stage; ``extra``: every other field the method records; ``provenance``:
    commit, machine, device, torch, recsize, date (and ``source``, the file a migrated cell came from).
    """

    experiment: str
    method: str
    sparsity: float
    seed: int
    metrics: dict
    bytes: int
    dense_bytes: int
    kept: int
    best_epoch: int | None
    seconds: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        """(method, sparsity, seed): what identifies the cell in its experiment. Explained in Chapter 8."""
        return (self.method, self.sparsity, self.seed)

    def to_dict(self) -> dict:
        """The cell as plain JSON values (one line of an evidence file). Explained in Chapter 8."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        """The inverse of :meth:`to_dict`; a missing or unknown field raises ValueError. Explained in Chapter 8."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names[:9] if n not in data]
        if unknown or missing:
            raise ValueError(f"not a cell: unknown fields {unknown}, missing fields {missing}")
        return cls(**data)

    @classmethod
    def from_prune_run(cls, run: dict, settings: dict, experiment) -> Cell:
        """A cell of a ``benchmarks/prune.py`` output (``run``: one entry of its ``runs``) as a :class:`Cell`
        of ``experiment`` (an :class:`~recsize.experiments.declare.Experiment` or its name), every field
        kept: the test metrics into ``metrics``, the fields every method has into their own, the rest into
        ``extra``. ``settings`` is the file's (as
        :func:`recsize.experiments.migrate.merge_runs` returns them: with ``machine`` and ``file``) or a
        computing run's; its ``machine``, ``device``, ``commit``, ``torch``, ``recsize``, ``date`` and
        ``file`` (as ``source``) become the provenance, None where unknown. Explained in Chapter 8."""
        missing = [k for k in ("method", "sparsity", "seed", *_CORE) if k not in run]
        if missing:
            raise ValueError(f"a benchmarks/prune.py cell has every one of {', '.join(_CORE)}; this one lacks "
                             f"{', '.join(missing)}")
        rest = {k: v for k, v in run.items() if k not in ("method", "sparsity", "seed", *_CORE)}
        metrics = {k: rest.pop(k) for k in list(rest) if k in METRIC_NAMES}
        known = {**settings, "source": settings.get("file", settings.get("source"))}
        return cls(getattr(experiment, "name", experiment), run["method"], run["sparsity"], run["seed"], metrics,
                   **{k: run[k] for k in _CORE}, extra=rest,
                   provenance={k: known.get(k) for k in PROVENANCE_KEYS})

    def to_prune_run(self) -> dict:
        """The cell as a ``benchmarks/prune.py`` cell (the dict :meth:`from_prune_run` read, keys in its
        order), which :func:`recsize.search.compare.paired_summary`, ``aukc`` and ``grid_records`` read.
        Explained in Chapter 8."""
        rest = {"method": self.method, "sparsity": self.sparsity, "seed": self.seed, **self.metrics,
                **self.extra, **{k: getattr(self, k) for k in _CORE}}
        out = {k: rest.pop(k) for k in _PRUNE_ORDER if k in rest}
        return {**out, **rest}


def code_commit(folder: str | Path | None = None) -> str | None:
    """The commit of the code (``git rev-parse HEAD`` in recsize's checkout), None outside a git
    checkout or without git. Explained in Chapter 8."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def provenance(device: str = "cpu") -> dict:
    """Where cells computed now come from: the code's commit (None outside a git checkout), the machine
    (CPU, cores, GPU, torch, threads), the device, torch's and recsize's versions, the UTC date.
    Explained in Chapter 8."""
    import torch

    from .. import __version__
    from ..resources import machine
    return {"commit": code_commit(), "machine": machine(), "device": str(device), "torch": torch.__version__,
            "recsize": __version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": None}
