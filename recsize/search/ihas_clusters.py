"""iHAS's clustering and per-cluster widths: K-means of the gate patterns, routing a sample to its nearest
centroid, every cluster's mean open width per field, and the row sizes that spend the budget exactly, per
cluster (``layout="per-cluster"``) or in one shared model (``layout="shared"``, :class:`SharedClusterModel`).
Explained in Chapter 7.

The search, the budget's routing charge (:func:`~recsize.search.ihas.routing_parameters`) and the end-to-end
run are :mod:`recsize.search.ihas`, which imports what it uses from here.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .baselines import round_to_total

def cluster_patterns(patterns: np.ndarray, clusters: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """K-means (scikit-learn, seeded, ``n_init`` restarts) of the gate patterns: the (K', gates)
    centroids, keeping only centroids that are the nearest one of at least one pattern (K' <= K: fewer
    distinct patterns than K leave duplicate or empty clusters). Explained in Chapter 7."""
    from sklearn.cluster import KMeans
    if int(clusters) != clusters or clusters < 1:
        raise ValueError(f"clusters (K) must be an integer >= 1, got {clusters}")
    patterns = np.asarray(patterns, dtype=np.float64)
    if patterns.ndim != 2 or len(patterns) < clusters:
        raise ValueError(f"K-means needs a (samples, gates) matrix with at least K = {clusters} samples, "
                         f"got shape {patterns.shape}")
    import warnings
    with warnings.catch_warnings():  # "fewer distinct clusters than n_clusters": handled below
        warnings.simplefilter("ignore")
        centroids = KMeans(n_clusters=int(clusters), n_init=n_init, random_state=seed).fit(patterns).cluster_centers_
    used = np.unique(route(centroids, patterns))
    return centroids[used]


def route(centroids: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """The cluster of every pattern: the index of its nearest centroid (Euclidean; ties go to the lower
    index). Explained in Chapter 7."""
    patterns = np.asarray(patterns, dtype=np.float64)
    d = ((patterns[:, None, :] - np.asarray(centroids)[None]) ** 2).sum(-1)
    return d.argmin(1)


def cluster_widths(patterns: np.ndarray, labels: np.ndarray, clusters: int, n_fields: int,
                   n_blocks: int, block: int) -> np.ndarray:
    """(K, fields) mean open width of each field over each cluster's samples: sum over blocks of
    block width x the fraction of the cluster's samples with the block open. Explained in Chapter 7."""
    widths = np.zeros((clusters, n_fields))
    for k in range(clusters):
        members = patterns[labels == k]
        if len(members):
            widths[k] = members.reshape(len(members), n_fields, n_blocks).mean(0).sum(-1) * block
    return widths


def present_rows(X: np.ndarray, labels: np.ndarray, clusters: int, n_features: int) -> np.ndarray:
    """(K, n_features) bool: which feature values occur in each cluster's samples. Chapter 7."""
    present = np.zeros((clusters, n_features), dtype=bool)
    for k in range(clusters):
        present[k, np.unique(X[labels == k])] = True
    return present


def allocate_sizes(widths: np.ndarray, field_of_feature: np.ndarray, present: np.ndarray, total: int,
                   d_max: int) -> np.ndarray:
    """Per-cluster row sizes (K, n_features) summing exactly to ``total``: row n of cluster k gets a
    width proportional to its field's gate width ``widths[k, f(n)]`` (one scale s for all clusters,
    clipped to [0, d_max], largest-remainder rounding), rows absent from a cluster get 0. Fields closed
    in a cluster stay at 0 unless the budget cannot be spent otherwise. Explained in Chapter 7."""
    widths = np.asarray(widths, dtype=np.float64)
    K = widths.shape[0]
    score = widths[:, field_of_feature] * present  # (K, n_features)
    rows = present.ravel()
    capacity = int(rows.sum()) * d_max
    if not 0 <= total <= capacity:
        raise ValueError(f"the clusters store {int(rows.sum())} rows of at most {d_max} dimensions "
                         f"({capacity} parameters) and cannot hold {total}: lower the budget or K")
    s = score.ravel()[rows]
    if s.max(initial=0.0) <= 0:
        s = np.ones_like(s)
    lo, hi = 0.0, 1.0
    while np.clip(hi * s, 0, d_max).sum() < total and hi < 1e300:
        hi *= 2
    while hi - lo > 1e-12 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(mid * s, 0, d_max).sum() < total else (lo, mid)
    sizes = np.zeros(K * len(field_of_feature), dtype=np.int64)
    sizes[rows] = round_to_total(np.clip(hi * s, 0, d_max), total, d_max, min_size=0)
    return sizes.reshape(K, -1)


def shared_widths(widths: np.ndarray, field_of_feature: np.ndarray, total: int, d_max: int):
    """The shared layout's widths: ``stored`` (n_features,) summing exactly to ``total``, every row as wide
    as the widest of its clusters (:func:`allocate_sizes` on the per-field maximum over clusters), and
    ``per_cluster`` (K, n_features): row n of cluster k reads round(stored[n] * r[k, f(n)]) of it, with
    r = widths / the field's maximum (1 where every cluster closed the field), the K x fields ratios the
    layout stores. Explained in Chapter 7."""
    widths = np.asarray(widths, dtype=np.float64)
    top = widths.max(0)
    stored = allocate_sizes(top[None], field_of_feature, np.ones((1, len(field_of_feature)), dtype=bool),
                            total, d_max)[0]
    ratio = np.divide(widths, top[None], out=np.ones_like(widths), where=top[None] > 0)
    per_cluster = np.minimum(stored[None], np.rint(stored[None] * ratio[:, field_of_feature])).astype(np.int64)
    return stored, per_cluster


class SharedClusterModel(nn.Module):
    """One CTR backbone shared by every cluster (``layout="shared"``): its input carries the sample's
    cluster as a last column; every field embedding is cut to the prefix ``widths[cluster, feature]`` of
    its stored row (a 0/1 gate through the table's hook). ``task``, ``loss`` and ``score`` as a backbone,
    so :func:`~recsize.train.train` trains it. Explained in Chapter 7."""

    task = "ctr"

    def __init__(self, model: nn.Module, widths: np.ndarray, d_max: int):
        super().__init__()
        self.model = model
        self.register_buffer("widths", torch.as_tensor(np.asarray(widths), dtype=torch.long))
        self.register_buffer("dims", torch.arange(d_max))

    def _gated(self, x):
        ids, k = x[:, :-1], x[:, -1]
        return ids, (self.dims < self.widths[k[:, None], ids][..., None]).float()

    def loss(self, x, y):
        ids, gates = self._gated(x)
        return self.model.loss(ids, y, gates=gates)

    def score(self, x):
        ids, gates = self._gated(x)
        return self.model.score(ids, gates=gates)

    def embedding_tables(self):
        return self.model.embedding_tables()


def with_clusters(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``X`` with every sample's cluster as a last column: the input of :class:`SharedClusterModel`."""
    return np.concatenate([X, np.asarray(labels, dtype=X.dtype)[:, None]], axis=1)
