"""Full-ranking evaluation for top-k models and AUC / log loss for CTR models.

Explained in Chapter 2 (Data and evaluation protocol). Full ranking scores every item for every
evaluated user, removes the items the user already has in training (and, at test time, validation),
and compares the top k with the held-out positives. Users with no held-out positive are skipped.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .metrics import TOPK_METRICS, auc, log_loss, topk_metrics


def _rows(m: sp.csr_matrix, users: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row-in-batch, column) index tensors of the nonzeros of ``m[users]``."""
    sub = m[users].tocoo()
    return (torch.from_numpy(sub.row.astype(np.int64)).to(device),
            torch.from_numpy(sub.col.astype(np.int64)).to(device))


@torch.no_grad()
def evaluate_topk(model, split, stage: str = "valid", ks=(5, 10, 20), metrics=TOPK_METRICS,
                  batch_size: int = 1024, per_user: bool = False, device=None,
                  exclude_seen: bool = True) -> dict:
    """Mean of each metric at each k over users with held-out positives in ``stage``.

    ``stage="valid"`` excludes training items; ``stage="test"`` excludes training and validation items.
    With ``per_user=True`` the result also holds ``"per_user"``: for every metric an array over all users
    (NaN for users without held-out positives). ``exclude_seen=False`` keeps already-seen items in the
    ranking: a common protocol mistake, shown in Chapter 2. Explained in Chapter 2.
    """
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    target = split.valid if stage == "valid" else split.test
    seen = split.train if stage == "valid" else (split.train + split.valid).tocsr()
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_pos_all = np.diff(target.indptr)
    users_all = np.flatnonzero(n_pos_all > 0)
    if len(users_all) == 0:
        raise ValueError(f"no user has a {stage} positive: the split is empty at that stage")
    kmax = max(ks)
    if kmax > split.n_items:
        raise ValueError(f"k={kmax} exceeds the number of items ({split.n_items})")
    out: dict[str, list] = {}
    score_all = model.scorer()
    for s in range(0, len(users_all), batch_size):
        users = users_all[s:s + batch_size]
        scores = score_all(torch.from_numpy(users).to(device)).float()
        if exclude_seen:
            r, c = _rows(seen, users, device)
            scores[r, c] = -torch.inf
        top = scores.topk(kmax, dim=1).indices
        truth = torch.zeros_like(scores, dtype=torch.bool)
        r, c = _rows(target, users, device)
        truth[r, c] = True
        hits = truth.gather(1, top)
        n_pos = torch.from_numpy(n_pos_all[users]).to(device)
        for name, v in topk_metrics(hits, n_pos, ks, metrics).items():
            out.setdefault(name, []).append(v.cpu())
    model.train(was_training)
    per = {k: torch.cat(v).numpy().astype(np.float64) for k, v in out.items()}
    result: dict = {k: float(v.mean()) for k, v in per.items()}
    if per_user:
        full = {}
        for k, v in per.items():
            a = np.full(split.n_users, np.nan)
            a[users_all] = v
            full[k] = a
        result["per_user"] = full
    return result


@torch.no_grad()
def predict_ctr(model, X: np.ndarray, batch_size: int = 8192, device=None) -> np.ndarray:
    """Click probabilities for the samples ``X`` (samples x fields). Chapter 2."""
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs = []
    for s in range(0, len(X), batch_size):
        x = torch.from_numpy(np.asarray(X[s:s + batch_size])).to(device)
        probs.append(torch.sigmoid(model.score(x)).cpu())
    model.train(was_training)
    return torch.cat(probs).numpy().astype(np.float64)


def evaluate_ctr(model, split, stage: str = "valid", batch_size: int = 8192, device=None) -> dict:
    """AUC and log loss of a CTR model on ``stage`` of a :class:`~recsize.data.CTRSplit`. Chapter 2."""
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    X, y = split.part(stage)
    p = predict_ctr(model, X, batch_size, device)
    return {"auc": auc(y, p), "logloss": log_loss(y, p)}
