"""DNIS's training pieces: the batch streams and the embedding step of the search's alternating updates, and
the retraining of a backbone with derived widths, stored compact. Explained in Chapter 5.

The search itself, the alpha step, the derivation of widths and masks and the end-to-end run are
:mod:`recsize.search.dnis` (numbered sections 1 to 7 there; sections 3 and 6 are completed here), which
imports what it uses from this module.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..budget import memory_report
from ..data import BPRSampler
from .baselines import BaselineRun

# ---------------------------------------------------------------------------------------------------
# 3. Batches and the embedding step (the alpha step: recsize.search.dnis.alpha_step)
# ---------------------------------------------------------------------------------------------------

class ValidationTriples(BPRSampler):
    """BPR triples (user, validation positive, negative) for the alpha step of top-k backbones. The
    negatives avoid the user's training *and* validation positives. Explained in Chapter 5."""

    def __init__(self, split, seed: int = 0):
        if split.valid.nnz == 0:
            raise ValueError("the split has no validation positives: DNIS learns alpha on validation data")
        super().__init__(split.valid, seed=seed)
        seen = (split.train + split.valid).tocsr()
        full = np.flatnonzero(np.diff(seen.indptr) >= self.n_items)
        if len(full):
            raise ValueError(f"{len(full)} user(s) (e.g. {full[0]}) interacted with every item in training and "
                             "validation: no negative exists for them; drop them from the data")
        coo = seen.tocoo()
        self.keys = np.sort(coo.row.astype(np.int64) * self.n_items + coo.col.astype(np.int64))


def _ctr_epoch(X: torch.Tensor, Y: torch.Tensor, batch_size: int, rng: np.random.Generator):
    order = torch.from_numpy(rng.permutation(len(X))).to(X.device)
    for s in range(0, len(X), batch_size):
        b = order[s:s + batch_size]
        yield X[b], Y[b]


def _batches(model, split, part: str, batch_size: int, seed: int, device) -> Iterator:
    """Endless stream of batches of ``part`` ('train' or 'valid'), epoch after epoch, reshuffled."""
    if model.task == "topk":
        sampler = BPRSampler(split.train, seed=seed) if part == "train" else ValidationTriples(split, seed=seed)
        while True:
            yield from sampler.epoch(batch_size, device)
    X, y = split.part(part)
    if len(X) == 0:
        raise ValueError(f"the CTR split has no {part} samples")
    X, Y = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    rng = np.random.default_rng(seed)
    while True:
        yield from _ctr_epoch(X, Y, batch_size, rng)


def n_train_batches(model, split, batch_size: int) -> int:
    """Training batches per epoch. Explained in Chapter 5."""
    n = split.train.nnz if model.task == "topk" else len(split.train)
    return -(-n // batch_size)


def n_valid_batches(model, split, batch_size: int) -> int:
    """Validation batches per epoch: with ``alternation="zip"`` (the authors' zipped loaders) a search epoch
    is this many (training batch, validation batch) pairs. Explained in Chapter 5."""
    n = split.valid.nnz if model.task == "topk" else len(split.valid)
    return max(-(-n // batch_size), 1)


def embedding_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights the embedding step updates: every embedding table and, for CTR models, the first-order
    (per feature) weights. Everything else stays frozen during the search. Explained in Chapter 5."""
    names = {f"{role}.weight" for role in model.embedding_tables()}
    if getattr(model, "task", None) == "ctr":
        names.add("linear.weight")
    params = {name: p for name, p in model.named_parameters() if name in names}
    if len(params) != len(names):
        raise TypeError(f"{type(model).__name__} lacks some embedding weights ({sorted(names - set(params))})")
    return params


@contextmanager
def _data_term_only(model):
    """The validation loss is the data term (BPR / BCE) alone: the L2 weight is switched off."""
    reg = getattr(model, "reg", 0.0)
    model.reg = 0.0
    try:
        yield
    finally:
        model.reg = reg


def _finite(loss: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the {what} loss became {loss.item()} during the DNIS search: lower the "
                                 "learning rate or alpha_lr")
    return loss


def embedding_step(model, batch, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer) -> float:
    """(i) One optimizer step on the embedding weights ``params`` for a training batch; alpha and every
    other weight are left untouched (their gradients are never computed). Explained in Chapter 5."""
    loss = _finite(model.loss(*batch), "training")
    grads = torch.autograd.grad(loss, list(params.values()))
    for p, g in zip(params.values(), grads):
        p.grad = g
    optimizer.step()
    for p in params.values():
        p.grad = None
    return float(loss.detach())


class _Loss(nn.Module):
    """``model.loss`` as a forward, so that torch.func.functional_call can swap weights in."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *batch):
        return self.model.loss(*batch)


def _mixed_second_derivative(model, train_batch, weights_before: dict[str, torch.Tensor], alphas: list,
                             v: list[torch.Tensor]) -> list[torch.Tensor]:
    """grad^2_{alpha, w} L_train(w, alpha) . v at the weights w before the embedding step (exact, by
    double back-propagation through the training loss evaluated at a copy of those weights)."""
    w = {f"model.{name}": t.detach().clone().requires_grad_(True) for name, t in weights_before.items()}
    loss = torch.func.functional_call(_Loss(model), w, tuple(train_batch))
    grads = torch.autograd.grad(loss, list(w.values()), create_graph=True)
    mixed = torch.autograd.grad(grads, alphas, grad_outputs=v, allow_unused=True)
    return [torch.zeros_like(a) if m is None else m for a, m in zip(alphas, mixed)]


# ---------------------------------------------------------------------------------------------------
# 6. Retraining with the derived widths, then compact storage
# ---------------------------------------------------------------------------------------------------

def train_with_sizes(backbone: str, split, sizes: dict, d_max: int, config=None, init: str | None = None,
                     method: str = "dnis", density: float | None = None, **model_kwargs) -> BaselineRun:
    """Train ``backbone`` from scratch with fixed widths per table (masked tables, Chapter 4), convert
    its tables to compact storage and evaluate the test split again with them. Explained in Chapter 5."""
    from ..backbones import DEFAULTS
    from ..embedding import compact_tables, masked_factory
    from ..evaluate import evaluate_ctr, evaluate_topk
    from ..train import fit
    init = init or DEFAULTS[backbone].get("init", "xavier")
    result = fit(backbone, split, d_max, config, embedding=masked_factory(sizes, d_max, init=init), **model_kwargs)
    model = result.model
    roles = list(model.embedding_tables())
    masked_bytes = {role: model.embedding_tables()[role].num_bytes() for role in roles}
    compact_tables(model)
    memory = memory_report({role: sizes[role] for role in roles}, d_max)
    for role in roles:
        memory[role]["masked_measured"] = masked_bytes[role]
        memory[role]["compact_measured"] = model.embedding_tables()[role].num_bytes()
    test_compact = None
    if result.test is not None:
        test_compact = (evaluate_topk if model.task == "topk" else evaluate_ctr)(model, split, "test")
    if density is None:
        density = memory["total"]["density"]
    return BaselineRun(method, density, d_max, {role: np.asarray(sizes[role]) for role in roles}, result,
                       test_compact, memory, init, model)
