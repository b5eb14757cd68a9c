"""The quantised and hashed families in the head-to-head: one function per family computes a cell.
Explained in Chapter 8.

Chapter 8.9 stores tables *more cheaply* (row-wise int8 / int4 codes with a float16 scale and bias per
row, :mod:`recsize.quantize`) or *shares* rows (the quotient-remainder trick and plain hashing,
:mod:`recsize.hashing`) instead of narrowing them. A cell at sparsity c has the budget es-bytes has,
(1 - c) x the float32 bytes of the backbone's dense tables, and records the bytes its served tables hold
by their own ``num_bytes()`` (codes, scales, biases, offsets): a family at a budget above what it needs
serves with fewer bytes, and the cell says so. The families:

* ``int8``, ``int4``: post-training quantisation of the seed's full-width model (the dense model MagPrune
  prunes, trained once per seed); no training. At d_max = 64 a row takes 64 + 4 of 256 bytes in int8
  (26.6 %), 32 + 4 in int4 (14.1 %): int8 serves c = 50 % only, int4 50 and 80 %.
* ``qat-int4``: quantisation-aware training at full width (fake int4 rows, straight-through gradient;
  one training per seed serves every budget), exported to int4: int4's bytes.
* ``es-int8``, ``mde-int8``: narrow and quantise: ES / MDE widths at the largest density whose int8
  compact tables fit the budget (:func:`quantized_density_for_bytes`), trained as es-bytes is, then
  quantised. Scales, biases and offsets take 12 of a row's 256 bytes: c = 95 % leaves no dimension.
* ``qr``, ``hash``: trained from scratch with the most buckets (rows) per table within the budget.

:func:`unreachable` says why a budget lies below a family's floor; the runner skips such a cell with
one line, as it skips the prefix methods whose offsets leave no room.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from ..budget import check_budget, dense_bytes
from ..hashing import hash_factory, hash_rows_for_bytes, qr_buckets_for_bytes, qr_factory
from ..quantize import fake_quant_factory, quantize_model, quantized_bytes, quantized_compact_bytes
from ..search.baselines import run_baseline
from ..search.compare import METRICS
from ..search.prune import table_shapes, train_dense
from ..train import fit

FULL_WIDTH = {"int8": 8, "int4": 4, "qat-int4": 4}   # full-width tables quantised to these bits
NARROW = {"es-int8": "es", "mde-int8": "mde"}          # narrow (these widths) and quantise to int8


@dataclass
class FamilyRun:
    """One family's cell: what :func:`recsize.experiments.cells.record` reads (``result``: the trained
    float model's best epoch, validation metrics and history; ``test_compact``: the test metrics of the
    served model; ``memory["total"]``; ``stored_bytes``; ``sizes`` where widths exist), the stored
    ``form``, the wall times (``seconds``), what only the family records (``extra``), the served model and
    the trained float one it came from. Explained in Chapter 8."""
    form: str
    result: object = field(repr=False)
    test_compact: dict
    memory: dict
    stored_bytes: int
    seconds: dict
    extra: dict
    sizes: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)
    trained: object = field(default=None, repr=False)
    info: dict = field(default_factory=dict)


def _dense_total(shapes: dict) -> int:
    return sum(dense_bytes(rows, d) for rows, d in shapes.values())


def quantized_density_for_bytes(shapes: dict, density: float, bits: int = 8) -> float | None:
    """The prefix density (a fraction of the parameters, as ES reads it) whose quantised compact tables
    (:func:`~recsize.quantize.quantized_compact_bytes`: codes, window, scales, biases, offsets) fit in
    ``density`` of every table's dense bytes: es-int8 and mde-int8 at 1 - c of the bytes. None when that
    leaves less than one dimension per row. Explained in Chapter 8."""
    best = None
    for rows, d in shapes.values():
        budget = check_budget(density) * dense_bytes(rows, d)
        fits = lambda kept: quantized_compact_bytes([kept] + [0] * (rows - 1), d, bits) <= budget  # noqa: E731
        if not fits(rows):
            return None
        low, high = rows, rows * d   # the most kept values that fit (bytes grow with their sum)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        # (kept - 0.5) / (rows * d): rounding the total (halves up) keeps at most ``low`` in every table
        best = min(best if best is not None else 1.0, (low - 0.5) / (rows * d))
    return best


def unreachable(method: str, shapes: dict, sparsity: float) -> str | None:
    """Why family ``method`` cannot serve 1 - ``sparsity`` of the dense bytes of the tables ``shapes``
    ({role: (rows, d_max)}), or None where it can. Explained in Chapter 8."""
    density = round(1 - sparsity, 6)
    if method in FULL_WIDTH:
        bits = FULL_WIDTH[method]
        need = sum(quantized_bytes(rows, d, bits) for rows, d in shapes.values())
        if need > density * _dense_total(shapes):
            return (f"full-width int{bits} tables take {need / _dense_total(shapes):.1%} of the dense bytes, more "
                    f"than the budget's {density:.1%}")
    elif method in NARROW:
        if quantized_density_for_bytes(shapes, density, 8) is None:
            return "the int8 compact form's scales, biases and offsets leave less than one dimension per row"
    elif method in ("qr", "hash"):
        fit_ = qr_buckets_for_bytes if method == "qr" else hash_rows_for_bytes
        for role, (rows, d) in shapes.items():
            try:
                fit_(rows, d, density * dense_bytes(rows, d))
            except ValueError as error:
                return f"table {role!r}: {error}"
    else:
        raise ValueError(f"{method!r} is not a family: choose from {', '.join(FAMILIES)}")
    return None


def _check(method: str, backbone: str, split, sparsity: float, d_max: int) -> dict:
    shapes = table_shapes(backbone, split, d_max)
    why = unreachable(method, shapes, sparsity)
    if why:
        raise ValueError(f"{method} cannot serve c = {100 * sparsity:g} %: {why}")
    return shapes


def _init(backbone: str) -> str:
    from ..backbones import DEFAULTS
    return DEFAULTS[backbone].get("init", "xavier")


def _served(form: str, split, sparsity: float, shapes: dict, result, model, seconds: dict, extra: dict,
            sizes=None, trained=None) -> FamilyRun:
    """The served ``model`` measured (its tables' own bytes and kept values) and evaluated on the test split."""
    from ..evaluate import evaluate_ctr, evaluate_topk
    tables = model.embedding_tables().values()
    stored, kept = sum(t.num_bytes() for t in tables), sum(t.num_parameters() for t in tables)
    dense = _dense_total(shapes)
    if stored > round(1 - sparsity, 6) * dense:   # 1 - c as the runner reads it (0.2, not 0.19999999999999996)
        raise RuntimeError(f"{form} tables take {stored} B, over the budget of {(1 - sparsity) * dense:.0f} B")
    begin = time.perf_counter()
    test = (evaluate_topk if model.task == "topk" else evaluate_ctr)(model, split, "test")
    seconds = {**seconds, "evaluate": time.perf_counter() - begin}
    memory = {"total": {"dense": dense, "parameters": kept,
                        "density": kept / sum(rows * d for rows, d in shapes.values())}}
    float_test = None if result.test is None else {m: result.test[m] for m in METRICS[model.task]}
    return FamilyRun(form, result, test, memory, stored, seconds, {**extra, "float_test": float_test}, sizes or {},
                     model, trained)


def run_quantized(backbone: str, split, sparsity: float, d_max: int = 64, config=None, seed: int = 0, dense=None,
                  bits: int = 8) -> FamilyRun:
    """``int8`` / ``int4``: the full-width model (``dense``, a :func:`~recsize.search.prune.train_dense`
    result, trained here when None) quantised row-wise to ``bits`` after training. Explained in Chapter 8."""
    shapes = _check(f"int{bits}", backbone, split, sparsity, d_max)
    dense = dense if dense is not None else train_dense(backbone, split, d_max, config)
    begin = time.perf_counter()
    model, _ = quantize_model(dense.model, bits)
    return _served(f"int{bits}", split, sparsity, shapes, dense, model,
                   {"dense": dense.seconds, "quantize": time.perf_counter() - begin}, {"bits": bits},
                   trained=dense.model)


def train_qat(backbone: str, split, d_max: int = 64, config=None, bits: int = 4):
    """Quantisation-aware training of the full-width backbone: every lookup quantised to ``bits`` and
    dequantised, the straight-through gradient (:func:`~recsize.quantize.fake_quant_factory`), the
    backbone's trainer settings. One training serves every budget. Explained in Chapter 8."""
    return fit(backbone, split, d_max, config, embedding=fake_quant_factory(bits, init=_init(backbone)))


def run_qat(backbone: str, split, sparsity: float, d_max: int = 64, config=None, seed: int = 0, dense=None,
            bits: int = 4) -> FamilyRun:
    """``qat-int4``: the quantisation-aware model (``dense``, a :func:`train_qat` result, trained here when
    None) exported to ``bits``; its lookups are the ones it trained with. Explained in Chapter 8."""
    shapes = _check(f"qat-int{bits}", backbone, split, sparsity, d_max)
    dense = dense if dense is not None else train_qat(backbone, split, d_max, config, bits)
    begin = time.perf_counter()
    model, _ = quantize_model(dense.model, bits)
    return _served(f"int{bits}", split, sparsity, shapes, dense, model,
                   {"dense": dense.seconds, "quantize": time.perf_counter() - begin}, {"bits": bits},
                   trained=dense.model)


def run_narrow_quantized(backbone: str, split, sparsity: float, d_max: int = 64, config=None, seed: int = 0,
                         dense=None, widths: str = "es") -> FamilyRun:
    """``es-int8`` / ``mde-int8``: ``widths`` (ES or MDE) at the largest density whose int8 compact
    tables fit the budget (:func:`quantized_density_for_bytes`), trained like es-bytes
    (:func:`~recsize.search.baselines.run_baseline`), then quantised to int8. ``dense`` is not used.
    Explained in Chapter 8."""
    shapes = _check(f"{widths}-int8", backbone, split, sparsity, d_max)
    density = quantized_density_for_bytes(shapes, round(1 - sparsity, 6), 8)
    begin, begin_cpu = time.perf_counter(), time.process_time()
    trained = run_baseline(backbone, split, widths, density, d_max, config, seed=seed)
    seconds = {"train": time.perf_counter() - begin, "cpu": time.process_time() - begin_cpu}
    begin = time.perf_counter()
    model, _ = quantize_model(trained.model, 8)
    seconds["quantize"] = time.perf_counter() - begin
    extra = {"bits": 8, "budget_density": density, "float_bytes": trained.stored_bytes}
    return _served("int8-compact", split, sparsity, shapes, trained.result, model, seconds, extra, trained.sizes,
                   trained.model)


def run_hashed(backbone: str, split, sparsity: float, d_max: int = 64, config=None, seed: int = 0, dense=None,
               kind: str = "qr") -> FamilyRun:
    """``qr`` / ``hash``: the backbone trained from scratch with quotient-remainder (``kind="qr"``) or
    hashed tables, each with the most buckets (rows) within 1 - c of its dense bytes; the hash drawn from
    ``seed``. ``dense`` is not used. Explained in Chapter 8."""
    shapes = _check(kind, backbone, split, sparsity, d_max)
    density = round(1 - sparsity, 6)
    factory = (qr_factory(density, init=_init(backbone)) if kind == "qr"
               else hash_factory(density, seed=seed, init=_init(backbone)))
    begin, begin_cpu = time.perf_counter(), time.process_time()
    result = fit(backbone, split, d_max, config, embedding=factory)
    seconds = {"train": time.perf_counter() - begin, "cpu": time.process_time() - begin_cpu}
    tables = result.model.embedding_tables()
    extra = {"buckets" if kind == "qr" else "rows": {r: int(t.buckets if kind == "qr" else t.rows)
                                                     for r, t in tables.items()}}
    return _served(kind, split, sparsity, shapes, result, result.model, seconds, extra)


# method -> its function, each called as f(backbone, split, sparsity, d_max, config, seed, dense=...)
FAMILIES = {"int8": partial(run_quantized, bits=8), "int4": partial(run_quantized, bits=4),
            "qat-int4": partial(run_qat, bits=4), "es-int8": partial(run_narrow_quantized, widths="es"),
            "mde-int8": partial(run_narrow_quantized, widths="mde"), "qr": partial(run_hashed, kind="qr"),
            "hash": partial(run_hashed, kind="hash")}
SHARED = {"int8": "dense", "int4": "dense", "qat-int4": "qat"}   # the per-seed model each serves every budget from
