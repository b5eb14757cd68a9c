"""Data: sources and cache, loaders, splits, BPR sampling, synthetic data and the CTR view (Chapter 2)."""
from .ctr import CTR_FIELDS, CTRData, CTRSplit, ctr_view, encode_fields, make_synthetic_ctr, split_ctr
from .loaders import Interactions, load, read_lightgcn, read_ml1m, read_ml100k_grouplens, read_ml100k_recbole
from .sampler import BPRSampler
from .sources import DATASETS, CorruptFile, DatasetUnavailable, cache_dir, fetch
from .splits import PROTOCOLS, Split, make_split, random_split, ratio_counts, temporal_split
from .synthetic import make_synthetic

__all__ = ["CTR_FIELDS", "CTRData", "CTRSplit", "ctr_view", "encode_fields", "make_synthetic_ctr", "split_ctr",
           "Interactions", "load", "read_lightgcn", "read_ml1m", "read_ml100k_grouplens", "read_ml100k_recbole",
           "BPRSampler", "DATASETS", "CorruptFile", "DatasetUnavailable", "cache_dir", "fetch",
           "PROTOCOLS", "Split", "make_split", "random_split", "ratio_counts", "temporal_split",
           "make_synthetic"]

# Planted-truth data (Chapter 8): true widths in groups independent of popularity, at two sizes.
PLANTED = {"planted-100k": {"n_users": 943, "n_items": 1682, "mean_per_user": 75, "zipf": 1.5},
           "planted-1m": {"n_users": 6040, "n_items": 3706, "mean_per_user": 120, "zipf": 1.5}}

# The synthetic CTR data of Chapter 7 and benchmarks/ihas.py: 4 segments, each using 2 of 8 fields.
SYNTHETIC_CTR = {"n": 40000, "n_fields": 9, "segments": 4, "cardinality": 200}


def prepare(name: str, protocol: str = "random-811", seed: int = 0, verbose: bool = False, **kwargs):
    """Load dataset ``name`` and split it: a :class:`Split` for top-k data, a :class:`CTRSplit` for a
    CTR view (``ml-100k-ctr``, random 8:1:1 over samples; ``synthetic-ctr``, the segment data of
    Chapter 7 with the benchmark's settings, :data:`SYNTHETIC_CTR`, overridable by keyword); ``planted-100k``
    and ``planted-1m`` are :func:`make_synthetic` data whose true widths are independent of popularity
    (``widths="groups"``) at ml-100k's and ML-1M's sizes (:data:`PLANTED`, overridable by keyword), generated
    with ``seed`` and split with it. Explained in Chapter 2."""
    if name in PLANTED:
        data = make_synthetic(**{**PLANTED[name], "widths": "groups", "seed": seed, "name": name, **kwargs})
        if verbose:
            print(data)
        return make_split(data, protocol, seed=seed, verbose=verbose)
    if name == "synthetic-ctr":
        split = split_ctr(make_synthetic_ctr(seed=seed, **{**SYNTHETIC_CTR, **kwargs}), seed=seed)
        if verbose:
            print(split.data)
            print(split)
        return split
    if name.endswith("-ctr"):
        base = name[: -len("-ctr")]
        if base != "ml-100k":
            raise ValueError(f"no CTR view for {base!r}: the CTR view needs ml-100k's side features")
        split = split_ctr(ctr_view(load(base, verbose=verbose, **kwargs)), seed=seed)
        if verbose:
            print(split.data)
            print(split)
        return split
    data = load(name, verbose=verbose, **kwargs)
    if verbose:
        print(data)
    return make_split(data, protocol, seed=seed, verbose=verbose)


DATASET_CHOICES = (*DATASETS, *PLANTED, "ml-100k-ctr", "synthetic-ctr")
__all__ += ["prepare", "DATASET_CHOICES", "PLANTED", "SYNTHETIC_CTR"]
