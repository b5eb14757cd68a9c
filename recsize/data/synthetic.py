"""A seeded synthetic dataset with long-tail popularity and *planted* heterogeneous dimensionality.

Explained in Chapter 2 and used again in the search chapters: every item (and user) has a true latent
dimensionality. By default it is larger for popular items and active users, so a reader can check that a
size search recovers "popular items need more dimensions" -- which the frequency rule (MDE) recovers by
construction. With ``widths="groups"`` the true widths are independent of popularity: items fall into
groups (like genres) of different intrinsic dimensionality, each group spanning the whole popularity
range, and users likewise, so that only a search that reads the data can find them (Chapter 8).
"""
from __future__ import annotations

import numpy as np

from .interactions import Interactions


def make_synthetic(n_users: int = 600, n_items: int = 1000, d_true: int = 32, mean_per_user: int = 40,
                   zipf: float = 1.0, min_dim: int = 2, signal: float = 3.0, seed: int = 0,
                   name: str = "synthetic", widths: str = "popularity",
                   groups: tuple[int, ...] | None = None) -> Interactions:
    """Generate implicit feedback from planted low-rank factors.

    Item popularity follows a Zipf law with exponent ``zipf``. Item ``i`` uses only its first
    ``true_item_dims[i]`` latent dimensions. With ``widths="popularity"`` (default) they decrease from
    ``d_true`` for the most popular item to ``min_dim`` for the rarest (linear in the popularity rank);
    users likewise by activity. With ``widths="groups"`` every item draws one of the group widths
    ``groups`` (default: the powers of two from ``min_dim`` to ``d_true``) uniformly at random,
    independently of its popularity, and every user likewise independently of its activity; the groups are
    in ``meta['item_groups']`` / ``meta['user_groups']``. A user picks
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
    if widths not in ("popularity", "groups"):
        raise ValueError(f"widths must be 'popularity' or 'groups', got {widths!r}")
    if groups is None:
        groups = tuple(sorted({min_dim, *(2 ** k for k in range(d_true.bit_length()) if min_dim <= 2 ** k <= d_true),
                               d_true}))
    elif widths != "groups":
        raise ValueError("groups= applies to widths='groups' only")
    groups = tuple(int(g) for g in groups)
    if not groups or not all(1 <= g <= d_true for g in groups):
        raise ValueError(f"every group width must lie in [1, d_true = {d_true}], got {groups}")
    rng = np.random.default_rng(seed)
    meta = {}

    def planted_dims(n: int, kind: str) -> np.ndarray:
        if widths == "groups":  # independent of the rank: a uniform draw of a group per row
            group = rng.integers(len(groups), size=n)
            meta[f"{kind}_groups"] = group
            return np.asarray(groups, dtype=np.int64)[group]
        quantile = np.arange(n) / (n - 1)  # rank 0 (most popular) -> d_true, last -> min_dim
        return np.round(d_true - (d_true - min_dim) * quantile).astype(np.int64)

    pop = 1.0 / np.arange(1, n_items + 1) ** zipf
    pop /= pop.sum()
    item_dims = planted_dims(n_items, "item")
    n_u = np.clip(rng.lognormal(np.log(mean_per_user), 0.8, size=n_users).round(), 5, n_items // 2)
    n_u = np.sort(n_u.astype(np.int64))[::-1]  # user 0 is the most active
    user_dims = planted_dims(n_users, "user")

    def factors(n: int, dims: np.ndarray) -> np.ndarray:
        f = rng.standard_normal((n, d_true))
        f[np.arange(d_true)[None, :] >= dims[:, None]] = 0.0
        return f / np.sqrt(d_true)

    U, V = factors(n_users, user_dims), factors(n_items, item_dims)
    scores = signal * np.sqrt(d_true) * (U @ V.T)
    if widths == "groups":  # wider items spread their scores more and would be picked more often: give
        # every item the same spread over users, so that its popularity is pop whatever its width
        scores = signal * scores / np.maximum(scores.std(axis=0), 1e-12)[None, :]
    logits = scores + np.log(pop)[None, :]
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
    for kind, perm in (("user", perm_u), ("item", perm_i)):
        if f"{kind}_groups" in meta:
            moved = np.empty_like(meta[f"{kind}_groups"]); moved[perm] = meta[f"{kind}_groups"]
            meta[f"{kind}_groups"] = moved
    timestamp = rng.permutation(len(users)).astype(np.int64)
    return Interactions(name, n_users, n_items, users, items, np.ones(len(users), np.float32), timestamp,
                        source=f"generated (seed {seed})",
                        meta={"true_user_dims": true_u, "true_item_dims": true_i, "d_true": d_true,
                              "seed": seed, "widths": widths, **meta})
