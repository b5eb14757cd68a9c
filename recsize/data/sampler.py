"""Vectorised BPR sampling: (user, positive, negative) triples without a Python loop per interaction.

Explained in Chapter 2 (Data and evaluation protocol) and used by every top-k backbone (Chapter 3).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch


class BPRSampler:
    """Each epoch visits every training positive once, in random order, with one uniform negative per
    positive drawn from the items the user has *not* interacted with in training.

    Negatives are drawn for the whole epoch at once; collisions with training positives are found with
    one ``searchsorted`` over the sorted (user, item) keys and redrawn, again vectorised, until none is
    left. Explained in Chapter 2.
    """

    def __init__(self, train: sp.csr_matrix, seed: int = 0):
        train = sp.csr_matrix(train)
        self.n_users, self.n_items = train.shape
        coo = train.tocoo()
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)
        if len(self.users) == 0:
            raise ValueError("the training matrix is empty: nothing to sample")
        full = np.flatnonzero(np.diff(train.indptr) >= self.n_items)
        if len(full):
            raise ValueError(f"{len(full)} user(s) (e.g. {full[0]}) interacted with every item: "
                             "no negative exists for them; drop them from the data")
        self.keys = np.sort(self.users * self.n_items + self.items)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        key = users * self.n_items + items
        pos = np.searchsorted(self.keys, key)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == key

    def negatives(self, users: np.ndarray) -> np.ndarray:
        """One uniform negative per entry of ``users``."""
        neg = self.rng.integers(0, self.n_items, size=len(users))
        bad = np.flatnonzero(self.is_positive(users, neg))
        while len(bad):
            neg[bad] = self.rng.integers(0, self.n_items, size=len(bad))
            bad = bad[self.is_positive(users[bad], neg[bad])]
        return neg

    def epoch(self, batch_size: int, device: str | torch.device = "cpu"
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (users, positives, negatives) batches as int64 tensors on ``device``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = self.rng.permutation(len(self.users))
        u, p = self.users[order], self.items[order]
        n = self.negatives(u)
        u, p, n = (torch.from_numpy(x).to(device) for x in (u, p, n))
        for s in range(0, len(order), batch_size):
            yield u[s:s + batch_size], p[s:s + batch_size], n[s:s + batch_size]

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)
