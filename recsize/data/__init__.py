"""Data: sources and cache, loaders, splits, BPR sampling, synthetic data and the CTR view (Chapter 2)."""
from .ctr import CTR_FIELDS, CTRData, CTRSplit, ctr_view, encode_fields, split_ctr
from .loaders import Interactions, load, read_lightgcn, read_ml1m, read_ml100k_grouplens, read_ml100k_recbole
from .sampler import BPRSampler
from .sources import DATASETS, CorruptFile, DatasetUnavailable, cache_dir, fetch
from .splits import PROTOCOLS, Split, make_split, random_split, ratio_counts, temporal_split
from .synthetic import make_synthetic

__all__ = ["CTR_FIELDS", "CTRData", "CTRSplit", "ctr_view", "encode_fields", "split_ctr", "Interactions",
           "load", "read_lightgcn", "read_ml1m", "read_ml100k_grouplens", "read_ml100k_recbole",
           "BPRSampler", "DATASETS", "CorruptFile", "DatasetUnavailable", "cache_dir", "fetch",
           "PROTOCOLS", "Split", "make_split", "random_split", "ratio_counts", "temporal_split",
           "make_synthetic"]
