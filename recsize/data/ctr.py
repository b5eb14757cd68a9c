"""A click-through-rate (CTR) view of MovieLens for FM, DeepFM and iHAS.

Explained in Chapter 3 (Backbones). Each rating becomes one sample with label ``rating >= 4`` and eight
categorical fields: user, item, age bucket, gender, occupation, zip prefix (first two characters),
primary genre (the first listed genre) and release year. Every field value owns one row of a single
feature table, so field ``f`` occupies rows ``offsets[f]:offsets[f + 1]``.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from .interactions import Interactions

AGE_BUCKETS = np.array([18, 25, 35, 45, 50, 56])  # the ml-1m age groups: <18, 18-24, ..., 56+
CTR_FIELDS = ("user", "item", "age", "gender", "occupation", "zip", "genre", "year")


@dataclass
class CTRData:
    """Samples as global feature ids ``X`` (samples x fields) with binary labels ``y``.

    Explained in Chapter 3.
    """

    name: str
    fields: tuple[str, ...]
    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    vocab: list[np.ndarray] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_fields(self) -> int:
        return len(self.fields)

    def field_of_feature(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_fields), np.diff(self.offsets))

    def __len__(self) -> int:
        return len(self.y)

    def __str__(self) -> str:
        sizes = ", ".join(f"{f} {n}" for f, n in zip(self.fields, np.diff(self.offsets)))
        sizes = textwrap.fill(f"values per field: {sizes}", 86, initial_indent="  ", subsequent_indent="    ")
        return (f"{self.name}: {len(self):,} samples, {self.n_fields} fields, {self.n_features:,} features, "
                f"positive rate {self.y.mean():.3f}\n{sizes}")

    __repr__ = __str__


def encode_fields(columns: list[np.ndarray], names: tuple[str, ...], y: np.ndarray, name: str) -> CTRData:
    """Turn raw categorical columns into one global id space (field by field, values in sorted order)."""
    if len(columns) != len(names):
        raise ValueError(f"{len(columns)} columns but {len(names)} field names")
    ids, vocab, sizes = [], [], []
    for col in columns:
        uniq, inv = np.unique(np.asarray(col).astype(str), return_inverse=True)
        ids.append(inv)
        vocab.append(uniq)
        sizes.append(len(uniq))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = np.stack(ids, axis=1).astype(np.int64) + offsets[:-1][None, :]
    return CTRData(name, tuple(names), X, np.asarray(y, dtype=np.float32), offsets, vocab)


def ctr_view(data: Interactions, threshold: float = 4.0) -> CTRData:
    """The CTR view of a MovieLens dataset with side features (ml-100k). Explained in Chapter 3."""
    if data.rating is None or "age" not in data.user_features or "genre" not in data.item_features:
        raise ValueError(f"{data.name} lacks ratings or user/item side features; the CTR view needs ml-100k")
    u, i = data.user, data.item
    uf, itf = data.user_features, data.item_features
    age_bucket = np.searchsorted(AGE_BUCKETS, uf["age"][u], side="right")
    zip_prefix = np.array([z[:2] for z in uf["zip_code"]])[u]
    cols = [u, i, age_bucket, uf["gender"][u], uf["occupation"][u], zip_prefix,
            itf["genre"][i], itf["release_year"][i]]
    y = (data.rating >= threshold).astype(np.float32)
    return encode_fields(cols, CTR_FIELDS, y, f"{data.name}-ctr")


@dataclass
class CTRSplit:
    """Row indices of a random train / valid / test split of a :class:`CTRData`. Explained in Chapter 3."""

    data: CTRData
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int = 0

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = getattr(self, name)
        return self.data.X[idx], self.data.y[idx]

    def feature_counts(self) -> np.ndarray:
        """Training frequency of every feature value."""
        return np.bincount(self.data.X[self.train].ravel(), minlength=self.data.n_features)

    def __str__(self) -> str:
        rows = [f"CTR split of {self.data.name}, seed {self.seed}:"]
        for name in ("train", "valid", "test"):
            _, y = self.part(name)
            rows.append(f"  {name:5s}: {len(y):>8,} samples, positive rate {y.mean():.3f}")
        return "\n".join(rows)

    __repr__ = __str__


def split_sizes(n: int, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """How many of ``n`` samples :func:`split_ctr` puts into train, valid and test. Explained in Chapter 3."""
    n_train, n_valid = int(round(ratios[0] * n)), int(round(ratios[1] * n))
    return n_train, n_valid, n - n_train - n_valid


def min_split_samples(ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> int:
    """The fewest samples for which every part of :func:`split_ctr` with a share above 0 gets two, the least
    that can hold a click and a non-click (18 for 8:1:1). Explained in Chapter 3."""
    n = max(2, int(1 / min(r for r in ratios if r > 0)))  # no part reaches two below this
    while any(k < 2 for k, r in zip(split_sizes(n, ratios), ratios) if r > 0):
        n += 1
    return n


def split_ctr(data: CTRData, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> CTRSplit:
    """Random split of the samples. Explained in Chapter 3.

    Refuses (``ValueError``, one line with the counts) data whose labels are all equal, and a split where
    a part with a share above 0 is empty or holds one label only: training stops early on the valid AUC
    and reports the test AUC, and AUC needs both labels.
    """
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6 or ratios[0] <= 0:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1 with train > 0, got {ratios}")
    perm = np.random.default_rng(seed).permutation(len(data))
    n_train, n_valid, _ = split_sizes(len(data), ratios)
    parts = np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_valid]), np.sort(perm[n_train + n_valid:])
    labels = np.unique(data.y)
    if len(data) and len(labels) < 2:  # nothing to learn, and AUC (early stopping) is undefined
        raise ValueError(f"all {len(data):,} samples of {data.name} have label {labels[0]:g}: a CTR model needs "
                         "clicks and non-clicks; use more samples (e.g. a larger --max-rows) or check the label "
                         "column of the file")
    named = sorted(zip(("train", "valid", "test"), parts, ratios), key=lambda p: len(p[1]) > 0)  # empty first
    for name, part, share in named:
        held = np.unique(data.y[part])
        if share > 0 and len(held) < 2:
            what = "are none" if not len(part) else f"all have label {held[0]:g}"
            sizes = ", ".join(f"{len(p):,} {k}" for k, p in zip(("train", "valid", "test"), parts))
            raise ValueError(f"{data.name}: {len(data):,} samples split {':'.join(f'{r:g}' for r in ratios)} "
                             f"(seed {seed}) give {sizes} samples, and the {name} samples {what}: every part needs "
                             f"clicks and non-clicks (early stopping reads the valid AUC, the result is the test "
                             f"AUC); use at least {min_split_samples(ratios)} samples, more where clicks are rare "
                             f"(e.g. a larger --max-rows)")
    return CTRSplit(data, *parts, seed)


def make_synthetic_ctr(n: int = 20000, n_fields: int = 8, segments: int = 4, seed: int = 0,
                       cardinality: int = 50, relevant: int = 2, scale: float = 1.5) -> CTRData:
    """Synthetic CTR data where field importance differs by segment. Explained in Chapter 7.

    Field 0 is the sample's segment s (uniform over ``segments``); fields 1..n_fields-1 are uniform
    categorical values with ``cardinality`` values each. Segment s depends only on its own ``relevant``
    fields (consecutive, starting at field 1 + s * relevant, wrapping around): its logit is a segment
    bias plus sum over those fields of w_f[x_f], w ~ N(0, scale^2). A factorisation machine expresses
    this through <v_segment, v_value>, so every field needs room only in the segments that use it: one
    architecture for all samples must give every field room, an instance-wise one need not.
    """
    if n < 10 or n_fields < 2 or segments < 1 or cardinality < 2 or relevant < 1 or not scale > 0:
        raise ValueError(f"need n >= 10, n_fields >= 2, segments >= 1, cardinality >= 2, relevant >= 1 and "
                         f"scale > 0, got {n}, {n_fields}, {segments}, {cardinality}, {relevant}, {scale}")
    rng = np.random.default_rng(seed)
    other = n_fields - 1
    seg = rng.integers(0, segments, n)
    values = rng.integers(0, cardinality, (n, other))
    weights = rng.normal(0, scale, (other, cardinality))
    logit = rng.normal(0, 0.3, segments)[seg]
    for s in range(segments):
        rows = np.flatnonzero(seg == s)
        for j in range(relevant):
            f = (s * relevant + j) % other
            logit[rows] += weights[f, values[rows, f]]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    names = ("segment", *(f"f{j}" for j in range(1, n_fields)))
    columns = [seg] + [values[:, j] for j in range(other)]
    return encode_fields(columns, names, y, f"synthetic-ctr-{segments}seg")
