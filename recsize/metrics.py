"""Ranking and CTR metrics.

Explained in Chapter 2 (Data and evaluation protocol). Top-k metrics take a boolean ``hits`` matrix
(users x K): ``hits[u, r]`` says whether the item ranked at position ``r`` (0-based) for user ``u`` is a
held-out positive, and ``n_pos[u]``, the user's number of held-out positives. They return one value per
user; averaging over users with at least one positive is the caller's job (:mod:`recsize.evaluate`).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import log_loss as _sk_log_loss
from sklearn.metrics import roc_auc_score

TOPK_METRICS = ("recall", "ndcg", "precision", "hit", "mrr")


def _check(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> None:
    if hits.dim() != 2 or n_pos.dim() != 1 or hits.shape[0] != n_pos.shape[0]:
        raise ValueError(f"hits must be (users, K) and n_pos (users,), got {tuple(hits.shape)} and {tuple(n_pos.shape)}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k={k} must lie in [1, {hits.shape[1]}] (the number of ranked columns)")


def recall_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """Hits in the top k divided by the user's number of positives. Chapter 2."""
    _check(hits, n_pos, k)
    return hits[:, :k].sum(1).float() / n_pos.clamp(min=1).float()


def precision_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """Hits in the top k divided by k. Chapter 2."""
    _check(hits, n_pos, k)
    return hits[:, :k].sum(1).float() / k


def hit_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """1 if any positive is in the top k. Chapter 2."""
    _check(hits, n_pos, k)
    return hits[:, :k].any(1).float()


def mrr_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """Reciprocal rank of the first positive in the top k (0 if none). Chapter 2."""
    _check(hits, n_pos, k)
    h = hits[:, :k].float()
    first = h.argmax(1)
    return torch.where(h.any(1), 1.0 / (first.float() + 1.0), torch.zeros_like(first, dtype=torch.float))


def ndcg_at_k(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """DCG with a log2 discount over the top k, divided by the ideal DCG of min(n_pos, k) positives
    ranked first. Chapter 2."""
    _check(hits, n_pos, k)
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=hits.device, dtype=torch.float))
    dcg = (hits[:, :k].float() * discount).sum(1)
    ideal_cum = torch.cumsum(discount, 0)
    n_ideal = n_pos.clamp(min=1, max=k).long()
    return dcg / ideal_cum[n_ideal - 1]


_FUNCS = {"recall": recall_at_k, "ndcg": ndcg_at_k, "precision": precision_at_k, "hit": hit_at_k,
          "mrr": mrr_at_k}


def topk_metrics(hits: torch.Tensor, n_pos: torch.Tensor, ks=(5, 10, 20),
                 names=TOPK_METRICS) -> dict[str, torch.Tensor]:
    """All requested metrics at all ks, as ``{"recall@20": per-user tensor, ...}``. Chapter 2."""
    unknown = set(names) - set(_FUNCS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(TOPK_METRICS)}")
    return {f"{m}@{k}": _FUNCS[m](hits, n_pos, k) for m in names for k in ks}


def auc(y_true, y_score) -> float:
    """Area under the ROC curve (ties counted half), via scikit-learn. Chapter 2."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        only = "no labels" if len(y_true) == 0 else f"only label {np.unique(y_true)[0]:g} in {len(y_true):,} samples"
        raise ValueError(f"AUC needs both positive and negative labels, got {only}: evaluate on more samples "
                         "(a larger split or --max-rows) or check the label column")
    return float(roc_auc_score(y_true, np.asarray(y_score)))


def log_loss(y_true, y_prob, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1 - eps]). Chapter 2."""
    p = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    return float(_sk_log_loss(np.asarray(y_true), p, labels=[0, 1]))
