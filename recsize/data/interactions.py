"""The one in-memory form of a recommendation data set: :class:`Interactions`.

Explained in Chapter 2 (Data and evaluation protocol). The lowest module of :mod:`recsize.data`: it
imports nothing from the package, and the readers, the generator, the splits and the CTR view build on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Interactions:
    """User-item interactions with ids re-indexed to ``0..n-1``, plus optional side features.

    Explained in Chapter 2. ``user_features`` / ``item_features`` map a field name to an array with one
    entry per user / item (used by the CTR view). ``given_test`` marks interactions that a published
    split puts in its test file (LightGCN-format sets).
    """

    name: str
    n_users: int
    n_items: int
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    given_test: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        if self.user.shape != self.item.shape:
            raise ValueError(f"user and item arrays differ in length ({len(self.user)} vs {len(self.item)})")
        if len(self.user) and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise ValueError(f"user ids must lie in [0, {self.n_users}); got [{self.user.min()}, {self.user.max()}]")
        if len(self.item) and (self.item.min() < 0 or self.item.max() >= self.n_items):
            raise ValueError(f"item ids must lie in [0, {self.n_items}); got [{self.item.min()}, {self.item.max()}]")

    def __len__(self) -> int:
        return len(self.user)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)

    def density(self) -> float:
        return len(self) / (self.n_users * self.n_items)

    def __str__(self) -> str:
        uc, ic = self.user_counts(), self.item_counts()
        top = np.sort(ic)[::-1]
        head = top[: max(1, self.n_items // 5)].sum() / max(1, top.sum())
        return (f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, {len(self):,} interactions, "
                f"density {self.density():.4%}\n"
                f"  per user: min {uc.min()}, median {int(np.median(uc))}, max {uc.max()}\n"
                f"  per item: min {ic.min()}, median {int(np.median(ic))}, max {ic.max()}; "
                f"top 20% items hold {head:.1%} of interactions\n"
                f"  source: {self.source or 'n/a'}")

    __repr__ = __str__
