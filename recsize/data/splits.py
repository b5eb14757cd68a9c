"""Train / validation / test splits for top-k recommendation.

Explained in Chapter 2 (Data and evaluation protocol). Three protocols:

* ``random_split(data, (0.8, 0.1, 0.1))``: per user, a random 8:1:1 split (the established library's
  protocol, with its rounding rule: a user with few interactions keeps at least one for training);
* ``random_split(data, (0.5, 0.25, 0.25))``: the CIESS protocol;
* ``temporal_split(data)``: leave-last-out by timestamp (last interaction to test, the one before to
  validation).

A split holds three binary ``scipy.sparse.csr_matrix`` of shape (users, items).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .interactions import Interactions

PROTOCOLS = {"random-811": (0.8, 0.1, 0.1), "ciess-50-25-25": (0.5, 0.25, 0.25), "temporal-loo": None,
             "given": None}


@dataclass
class Split:
    """A split of one dataset into binary train / valid / test matrices. Explained in Chapter 2."""

    data: Interactions
    protocol: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    seed: int | None = None

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the training positives, in CSR order."""
        coo = self.train.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64)

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    def user_activity(self) -> np.ndarray:
        """Training interactions per user."""
        return np.asarray(self.train.sum(axis=1)).ravel().astype(np.int64)

    def __str__(self) -> str:
        parts = []
        for name, m in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            per_user = np.diff(m.indptr)
            parts.append(f"  {name:5s}: {m.nnz:>9,} interactions, {int((per_user > 0).sum()):>7,} users with any, "
                         f"{per_user.mean():6.2f} per user")
        cold = int(((np.asarray(self.train.sum(axis=0)).ravel() == 0)
                    & (np.asarray((self.valid + self.test).sum(axis=0)).ravel() > 0)).sum())
        seed = "" if self.seed is None else f", seed {self.seed}"
        return "\n".join([f"split {self.protocol} of {self.data.name}{seed}: "
                          f"{self.n_users:,} users x {self.n_items:,} items"] + parts +
                         [f"  items seen only outside train (cold at test time): {cold}"])

    __repr__ = __str__


def _binary(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def _dedupe(data: Interactions) -> np.ndarray:
    """Indices of the first occurrence of every (user, item) pair."""
    key = data.user * data.n_items + data.item
    _, first = np.unique(key, return_index=True)
    return np.sort(first)


def ratio_counts(n: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """Per-user counts (train, valid, test) for ``n`` interactions each, with the established library's
    rounding rule: floor for valid and test; a part whose share is below one interaction still gets one
    while training keeps more than one. Explained in Chapter 2.
    """
    n = np.asarray(n, dtype=np.int64)
    cnt = np.stack([(r * n).astype(np.int64) for r in ratios], axis=1)
    cnt[:, 0] = n - cnt[:, 1:].sum(axis=1)
    for j in range(len(ratios) - 1, 0, -1):  # test first, then valid
        share = ratios[j] * n
        bump = (cnt[:, 0] > 1) & (share > 0) & (share < 1)
        cnt[bump, j] += 1
        cnt[bump, 0] -= 1
    return cnt


def random_split(data: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 seed: int = 0, verbose: bool = False) -> Split:
    """Random per-user split with the given (train, valid, test) ratios. Explained in Chapter 2."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6 or ratios[0] <= 0:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1 with train > 0, got {ratios}")
    keep = _dedupe(data)
    u, i = data.user[keep], data.item[keep]
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(u)), u))  # group by user, random order inside
    u, i = u[order], i[order]
    n_per_user = np.bincount(u, minlength=data.n_users)
    start = np.concatenate([[0], np.cumsum(n_per_user)[:-1]])
    rank = np.arange(len(u)) - start[u]  # position inside the user's shuffled list
    cnt = ratio_counts(n_per_user, ratios)
    part = np.where(rank < cnt[u, 0], 0, np.where(rank < cnt[u, 0] + cnt[u, 1], 1, 2))
    name = {(0.8, 0.1, 0.1): "random-811", (0.5, 0.25, 0.25): "ciess-50-25-25"}.get(
        ratios, "random-" + "-".join(f"{r:g}" for r in ratios))
    mats = [_binary(data.n_users, data.n_items, u[part == p], i[part == p]) for p in range(3)]
    split = Split(data, name, *mats, seed=seed)
    if verbose:
        print(split)
    return split


def temporal_split(data: Interactions, verbose: bool = False) -> Split:
    """Leave-last-out by timestamp: per user the latest interaction is test, the one before is valid.

    Users with fewer than three interactions keep all of them for training. Ties in time are broken by
    item id so the split is deterministic. Explained in Chapter 2.
    """
    if data.timestamp is None:
        raise ValueError(f"{data.name} has no timestamps; use the random split instead (protocol random-811)")
    keep = _dedupe(data)
    u, i, t = data.user[keep], data.item[keep], data.timestamp[keep]
    order = np.lexsort((i, t, u))
    u, i = u[order], i[order]
    n_per_user = np.bincount(u, minlength=data.n_users)
    end = np.cumsum(n_per_user)
    from_end = end[u] - np.arange(len(u))  # 1 for the last interaction of the user
    enough = n_per_user[u] >= 3
    part = np.where(enough & (from_end == 1), 2, np.where(enough & (from_end == 2), 1, 0))
    mats = [_binary(data.n_users, data.n_items, u[part == p], i[part == p]) for p in range(3)]
    split = Split(data, "temporal-loo", *mats)
    if verbose:
        print(split)
    return split


def given_split(data: Interactions, valid_ratio: float = 0.1, seed: int = 0, verbose: bool = False) -> Split:
    """The published train/test files of a LightGCN-format set; validation is a random ``valid_ratio`` of
    each user's training interactions. Explained in Chapter 2."""
    if data.given_test is None:
        raise ValueError(f"{data.name} has no published test file; use protocol random-811 or temporal-loo")
    test = _binary(data.n_users, data.n_items, data.user[data.given_test], data.item[data.given_test])
    rest = Interactions(data.name, data.n_users, data.n_items, data.user[~data.given_test],
                        data.item[~data.given_test])
    inner = random_split(rest, (1 - valid_ratio, valid_ratio, 0.0), seed=seed)
    split = Split(data, "given", inner.train, inner.valid, test, seed=seed)
    if verbose:
        print(split)
    return split


def make_split(data: Interactions, protocol: str = "random-811", seed: int = 0, verbose: bool = False) -> Split:
    """Split ``data`` by protocol name: ``random-811``, ``ciess-50-25-25``, ``temporal-loo`` or ``given``.

    Explained in Chapter 2.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if protocol == "temporal-loo":
        return temporal_split(data, verbose=verbose)
    if protocol == "given":
        return given_split(data, seed=seed, verbose=verbose)
    return random_split(data, PROTOCOLS[protocol], seed=seed, verbose=verbose)
