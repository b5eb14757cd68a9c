"""Will a run fit? The memory a training run needs, estimated before anything is allocated.

Explained in Chapter 3 (Backbones). A run keeps, for every parameter, the weight, its gradient, Adam's two
moments and the best-so-far copy (5 floats); the graph models keep every propagation layer of every row
for the backward pass; a mini-batch holds its rows and their gradients; evaluation scores a block of
users against every item. The estimate adds these up; :func:`check_memory` compares it with the memory
the device has free and refuses a run that cannot fit (``--dim 100000`` on ml-100k would need tens of
GiB), saying what to lower. :func:`machine` names the machine a result was measured on (the benchmarks' tables
and the book's published runs).
"""
from __future__ import annotations

import os
import platform

import torch

from .budget import format_bytes

FLOAT = 4
COPIES = 5            # weight, gradient, Adam's m and v, the best-so-far state
EVAL_USERS = 1024     # users per evaluation block (recsize.evaluate.evaluate_topk)
CTR_EVAL_BATCH = 8192  # samples per prediction block (recsize.evaluate.predict_ctr)
# The terms above are the large tensors only; the allocator, autograd's saved tensors and copies add more.
# Measured peak resident memory on ml-100k (CPU, d = 1024 and 2048, one epoch) grew 1.3x (MF) to 1.5x
# (LightGCN) faster with d than the raw count: the estimate is scaled by this factor.
OVERHEAD = 1.5


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes free on ``device`` now: MemAvailable of /proc/meminfo (or the free pages) for the CPU,
    the driver's free memory for CUDA; None when unknown. Explained in Chapter 3."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _mlp_parameters(width: int, hidden) -> int:
    total = 0
    for h in hidden:
        total += width * h + h
        width = h
    return total + width + 1


def training_memory(backbone: str, split, dim: int, batch_size: int, model_kwargs: dict | None = None
                    ) -> dict[str, int]:
    """Estimated bytes of training ``backbone`` at width ``dim`` on ``split``, by part: ``parameters``
    (weights, gradients, Adam state and the best copy), ``activations`` (a batch, or the propagated
    layers of a graph model), ``evaluation`` (one block of full-ranking scores) and ``total``. An
    estimate, not a bound: it counts the large terms only. Explained in Chapter 3."""
    from .backbones import DEFAULTS
    kw = {**DEFAULTS[backbone]["model"], **(model_kwargs or {})}
    if hasattr(split.data, "n_features"):  # a CTR split
        n_fields, n_train = split.data.n_fields, len(split.train)
        params = split.data.n_features * (dim + 1)
        if backbone == "deepfm":
            params += _mlp_parameters(n_fields * dim, kw.get("hidden", (128, 128)))
        batch = min(batch_size, n_train)
        width = n_fields * dim + (sum(kw.get("hidden", (128, 128))) if backbone == "deepfm" else 0)
        activations = 4 * batch * width * FLOAT + split.data.X.itemsize * split.data.X[split.train].size
        evaluation = 3 * min(CTR_EVAL_BATCH, len(split.data.y)) * width * FLOAT
    else:
        rows = split.n_users + split.n_items
        params = rows * dim
        batch = min(batch_size, int(split.train.nnz))
        if backbone in ("lightgcn", "ngcf"):
            layers = kw.get("n_layers", 3) if backbone == "lightgcn" else len(kw.get("hidden", (64,) * 3))
            if backbone == "ngcf":
                hidden = kw.get("hidden", (64,) * 3)
                widths = [dim, *hidden]
                params += sum(2 * (a * b + b) for a, b in zip(widths, widths[1:]))
                layer_width = max(widths)
                final = sum(widths)
            else:
                layer_width = final = dim
            # forward keeps every layer for backward; evaluation propagates once more without grad
            activations = 2 * rows * (layers + 1) * layer_width * FLOAT + 3 * batch * final * FLOAT
        elif backbone == "neumf":
            hidden = kw.get("hidden", (64,))
            params += rows * dim + _mlp_parameters(2 * dim, hidden)  # GMF and MLP tables
            activations = 4 * 3 * batch * (2 * dim + sum(hidden)) * FLOAT
        else:
            activations = 4 * 3 * batch * dim * FLOAT
        users = min(EVAL_USERS, split.n_users)
        evaluation = users * split.n_items * (3 * FLOAT + 1)  # scores, top-k copy, hits mask
        if backbone == "neumf":  # scores users in chunks of 128 through the MLP
            evaluation += 128 * split.n_items * (2 * dim + sum(kw.get("hidden", (64,)))) * FLOAT
    parts = {"parameters": int(OVERHEAD * COPIES * params * FLOAT), "activations": int(OVERHEAD * activations),
             "evaluation": int(OVERHEAD * evaluation)}
    parts["total"] = sum(parts.values())
    return parts


def check_memory(backbone: str, split, dim: int, batch_size: int, device: str | torch.device = "cpu",
                 model_kwargs: dict | None = None, copies: int = 1, dim_flag: str = "--dim") -> dict[str, int]:
    """Refuse a run that cannot fit: ``ValueError`` with the estimate, the free memory and what to lower.
    ``copies`` counts models held at once (a search keeps a reference and a candidate). Returns the
    estimate. Explained in Chapter 3."""
    need = training_memory(backbone, split, dim, batch_size, model_kwargs)
    need = {k: v * copies for k, v in need.items()}
    free = available_memory(device)
    if free is not None and need["total"] > free:
        raise ValueError(
            f"{backbone} at {dim_flag} {dim} needs about {format_bytes(need['total'])} "
            f"(parameters with gradients and Adam state {format_bytes(need['parameters'])}, activations "
            f"{format_bytes(need['activations'])}, evaluation {format_bytes(need['evaluation'])}) but "
            f"{torch.device(device).type} has {format_bytes(free)} free: lower {dim_flag}"
            + (" or --batch-size" if need["activations"] > need["parameters"] else ""))
    return need


def machine() -> str:
    """CPU model, core count, GPU (if any), torch version and threads, e.g. ``AMD EPYC 7B13, 2 cores, torch
    2.13.0+cpu (1 threads)``: the provenance line of the benchmarks' tables (README) and of the book's
    published runs (preface)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
