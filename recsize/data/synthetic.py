"""A seeded synthetic dataset with long-tail popularity and *planted* heterogeneous dimensionality.

Explained in Chapter 2 and used again in the search chapters: every item (and user) has a true latent
dimensionality, larger for popular items and active users, so a reader can check that a size search
recovers "popular items need more dimensions".
"""
from __future__ import annotations

import numpy as np

from .interactions import Interactions


def make_synthetic(n_users: int = 600, n_items: int = 1000, d_true: int = 32, mean_per_user: int = 40,
                   zipf: float = 1.0, min_dim: int = 2, signal: float = 3.0, seed: int = 0,
                   name: str = "synthetic") -> Interactions:
    """Generate implicit feedback from planted low-rank factors.

    Item popularity follows a Zipf law with exponent ``zipf``. Item ``i`` uses only its first
    ``true_item_dims[i]`` latent dimensions, decreasing from ``d_true`` for the most popular item to
    ``min_dim`` for the rarest (linear in the popularity rank); users likewise by activity. A user picks
    ``n_u`` distinct items (log-normal around ``mean_per_user``) by Gumbel-top-k on
    ``signal * <u, v_i> + log popularity_i``. Timestamps are a random order, so every split protocol works.
    The planted dimensions are in ``meta['true_item_dims']`` and ``meta['true_user_dims']``.
    Explained in Chapter 2.
    """
    if n_users < 2 or n_items < 2:
        raise ValueError(f"need at least 2 users and 2 items, got {n_users} users and {n_items} items")
    if not 1 <= min_dim <= d_true:
        raise ValueError(f"need 1 <= min_dim <= d_true, got min_dim={min_dim}, d_true={d_true}")
    if not 1 <= mean_per_user < n_items:
        raise ValueError(f"mean_per_user must lie in [1, n_items), got {mean_per_user}")
    rng = np.random.default_rng(seed)

    def planted_dims(n: int) -> np.ndarray:  # rank 0 (most popular) -> d_true, last -> min_dim
        quantile = np.arange(n) / (n - 1)
        return np.round(d_true - (d_true - min_dim) * quantile).astype(np.int64)

    pop = 1.0 / np.arange(1, n_items + 1) ** zipf
    pop /= pop.sum()
    item_dims = planted_dims(n_items)
    n_u = np.clip(rng.lognormal(np.log(mean_per_user), 0.8, size=n_users).round(), 5, n_items // 2)
    n_u = np.sort(n_u.astype(np.int64))[::-1]  # user 0 is the most active
    user_dims = planted_dims(n_users)

    def factors(n: int, dims: np.ndarray) -> np.ndarray:
        f = rng.standard_normal((n, d_true))
        f[np.arange(d_true)[None, :] >= dims[:, None]] = 0.0
        return f / np.sqrt(d_true)

    U, V = factors(n_users, user_dims), factors(n_items, item_dims)
    logits = signal * np.sqrt(d_true) * (U @ V.T) + np.log(pop)[None, :]
    keys = logits + rng.gumbel(size=logits.shape)
    ranked = np.argsort(-keys, axis=1)
    take = np.arange(n_items)[None, :] < n_u[:, None]
    users = np.broadcast_to(np.arange(n_users)[:, None], ranked.shape)[take]
    items = ranked[take]
    # shuffle ids so that id order carries no information about popularity
    perm_u, perm_i = rng.permutation(n_users), rng.permutation(n_items)
    users, items = perm_u[users], perm_i[items]
    true_u = np.empty_like(user_dims); true_u[perm_u] = user_dims
    true_i = np.empty_like(item_dims); true_i[perm_i] = item_dims
    timestamp = rng.permutation(len(users)).astype(np.int64)
    return Interactions(name, n_users, n_items, users, items, np.ones(len(users), np.float32), timestamp,
                        source=f"generated (seed {seed})",
                        meta={"true_user_dims": true_u, "true_item_dims": true_i, "d_true": d_true,
                              "seed": seed})
