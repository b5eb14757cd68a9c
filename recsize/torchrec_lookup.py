"""Lookups through a TorchRec ``EmbeddingBagCollection`` of width buckets, with recsize's contract.

Explained in Appendix A. :class:`BucketLookup` holds the collection of a
:class:`~recsize.torchrec_export.BucketExport` and its id -> (bucket, row) index. A batch of global ids
per role becomes one ``KeyedJaggedTensor`` (one feature per bucket table; an id is a bag of one row in
its bucket's feature and an empty bag in the others), and the pooled outputs become the zero-padded d_max
vectors of the compact lookup, bit for bit. The output is multiplied by each row's prefix mask, so
training through the buckets moves only the kept entries (the rounding's padding stays zero), as
training the compact table does. Wrapped in ``DistributedModelParallel`` the collection is sharded
(:mod:`recsize.torchrec_shard`); :func:`quantise` makes its FP16 / INT8 serving copy.
"""
from __future__ import annotations

import torch
from torch import nn

from .embedding import prefix_mask
from .torchrec_export import BucketExport, require_torchrec


def collection(export: BucketExport, device: str | torch.device = "cpu"):
    """The ``EmbeddingBagCollection`` of the export's tables with its weights (``device="meta"``: the
    shapes only). Explained in Appendix A."""
    require_torchrec()
    from torchrec import EmbeddingBagCollection
    ebc = EmbeddingBagCollection(tables=export.configs(), device=torch.device(device))
    if torch.device(device).type != "meta":
        with torch.no_grad():
            for name, weight in export.weights.items():
                ebc.embedding_bags[name].weight.copy_(weight)
    return ebc


class BucketLookup(nn.Module):
    """Zero-padded d_max rows for batches of global ids per role, through a TorchRec collection.

    ``forward({"user": ids, "item": ids})`` returns ``{role: (*ids.shape, d_max)}``, equal to the compact
    lookups the export came from. ``self.collection`` is the collection (plain, sharded by
    ``DistributedModelParallel``, or quantised). Explained in Appendix A."""

    def __init__(self, export: BucketExport, device: str | torch.device = "cpu", ebc=None):
        super().__init__()
        self.collection = collection(export, device) if ebc is None else ebc
        self.d_max = dict(export.d_max)
        self.tables_of = {role: list(names) for role, names in export.tables_of.items()}
        for role in self.tables_of:  # buffers: they follow .to(device) and are not trained
            self.register_buffer(f"{role}_bucket", export.bucket[role].clone(), persistent=False)
            self.register_buffer(f"{role}_row", export.row[role].clone(), persistent=False)
            self.register_buffer(f"{role}_sizes", export.sizes[role].clone(), persistent=False)

    def features(self, ids_by_role: dict[str, torch.Tensor]):
        """The ``KeyedJaggedTensor`` of a batch: one key per bucket table, a stride of the longest
        role's batch; a role's id is a bag of one row in its bucket's key. Explained in Appendix A."""
        require_torchrec()
        from torchrec import KeyedJaggedTensor
        unknown = set(ids_by_role) - set(self.tables_of)
        if unknown:
            raise ValueError(f"no tables for role(s) {sorted(unknown)}: the export has {sorted(self.tables_of)}")
        stride = max(ids.numel() for ids in ids_by_role.values())
        keys, lengths, values = [], [], []
        for role, names in self.tables_of.items():
            flat = ids_by_role[role].reshape(-1) if role in ids_by_role else None
            bucket = getattr(self, f"{role}_bucket")[flat] if flat is not None else None
            row = getattr(self, f"{role}_row")[flat] if flat is not None else None
            for k, name in enumerate(names):
                keys.append(name)
                hit = torch.zeros(stride, dtype=torch.int64, device=self.index_device)
                if flat is not None:
                    hit[: len(flat)] = (bucket == k).long()
                    values.append(row[bucket == k])
                lengths.append(hit)
        empty = torch.zeros(0, dtype=torch.int64, device=self.index_device)
        return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat([empty, *values]),
                                                   lengths=torch.cat(lengths))

    @property
    def index_device(self) -> torch.device:
        """The device of the index (and of the ids the collection reads)."""
        return next(iter(self.buffers())).device

    def forward(self, ids_by_role: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero-padded d_max rows by role, each role's ids of any shape. Explained in Appendix A."""
        pooled = self.collection(self.features(ids_by_role)).to_dict()
        out = {}
        for role, ids in ids_by_role.items():
            n, d_max = ids.numel(), self.d_max[role]
            rows = None
            for name in self.tables_of[role]:
                part = pooled[name][:n, :d_max].float()
                part = nn.functional.pad(part, (0, d_max - part.shape[1]))
                rows = part if rows is None else rows + part  # the other buckets add exact zeros
            if rows is None:  # every row of the role has width 0
                rows = torch.zeros(n, d_max, device=self.index_device)
            sizes = getattr(self, f"{role}_sizes")[ids.reshape(-1)]
            out[role] = (rows * prefix_mask(sizes, d_max, rows.dtype)).view(*ids.shape, d_max)
        return out


class DotScorer(nn.Module):
    """A top-k model over a lookup with ``user`` and ``item`` tables, score = <e_u, e_i> (MF's), with the
    ``scorer()`` that :func:`recsize.evaluate.evaluate_topk` asks for: evaluates served (sharded or
    quantised) tables with recsize's own protocol. Explained in Appendix A."""

    def __init__(self, lookup: nn.Module, n_items: int):
        super().__init__()
        self.lookup, self.n_items = lookup, int(n_items)

    @torch.no_grad()
    def scorer(self):
        items = self.lookup({"item": torch.arange(self.n_items)})["item"]
        return lambda users: self.lookup({"user": users})["user"] @ items.T


def quantise(lookup: BucketLookup, dtype: torch.dtype | dict = torch.qint8) -> BucketLookup:
    """A serving copy of ``lookup`` whose collection is TorchRec's quantised one: weights in
    ``torch.float16``, ``torch.qint8`` (row-wise scale and bias) or ``torch.quint4x2``, one dtype for all
    tables or a dict by table name (the rest stay float32), float32 outputs. Explained in Appendix A."""
    require_torchrec()
    import copy

    from torchrec.modules.embedding_configs import QuantConfig
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEBC
    from torch.ao.quantization import PlaceholderObserver
    per_table = dtype if isinstance(dtype, dict) else None
    default = torch.float32 if per_table is not None else dtype
    ebc = copy.deepcopy(lookup.collection)
    ebc.qconfig = QuantConfig(activation=PlaceholderObserver.with_args(dtype=torch.float),
                              weight=PlaceholderObserver.with_args(dtype=default),
                              per_table_weight_dtype=per_table)
    served = copy.copy(lookup)  # shares the index buffers, not the collection
    served._modules = dict(lookup._modules)
    served.collection = QuantEBC.from_float(ebc)
    return served


def stored_bytes(lookup: BucketLookup) -> int:
    """Bytes a (quantised) lookup stores: every tensor of its collection's state (weights, row-wise
    scales and biases) plus the int64 (bucket, row) index. Explained in Appendix A."""
    state = lookup.collection.state_dict()
    tables = sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    index = sum(2 * getattr(lookup, f"{r}_bucket").numel() * 8 for r in lookup.tables_of)
    return tables + index
