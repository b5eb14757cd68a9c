"""Backbones: MF (BPR), NeuMF, NGCF and LightGCN for top-k; FM and DeepFM for CTR.

Explained in Chapter 3 (Backbones). One small class per model with the same methods:

* top-k models: ``loss(users, pos, neg)``, ``score(users, items)`` (one score per pair),
  ``score_all(users)`` (users x all items) and ``scorer()`` (a function doing ``score_all`` with any
  per-evaluation work, such as graph propagation, done once);
* CTR models: ``loss(x, y)`` and ``score(x)`` (logits) for samples ``x`` of global feature ids
  (samples x fields).

Embeddings are created through an embedding factory (:mod:`recsize.embedding`) so a variable-size table
can replace the plain one without touching the model.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .embedding import Embedding, EmbeddingFactory, plain_embedding


def plain_factory(init: str = "xavier") -> EmbeddingFactory:
    """A factory of plain :class:`~recsize.embedding.Embedding` tables with the given initialisation
    (``"xavier"``: Xavier-normal; ``"normal"``: N(0, 0.1^2), LightGCN's choice). Explained in Chapter 3."""
    if init not in ("xavier", "normal"):
        raise ValueError(f"unknown init {init!r}: use 'xavier' or 'normal'")

    def factory(role: str, num_rows: int, dim: int) -> Embedding:
        return Embedding(num_rows, dim, init=init)
    return factory


class TopKModel(nn.Module):
    """Base of the top-k backbones: BPR-style batches of (user, positive, negative). Chapter 3."""

    task = "topk"

    def __init__(self, n_users: int, n_items: int, dim: int, reg: float, embedding: EmbeddingFactory | None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if reg < 0:
            raise ValueError(f"reg (L2 weight) must be >= 0, got {reg}")
        self.n_users, self.n_items, self.dim, self.reg = n_users, n_items, dim, reg
        self.factory = embedding or plain_embedding

    def embedding_tables(self) -> dict[str, nn.Module]:
        """The embedding tables by role (what a size search resizes)."""
        return {n: m for n, m in self.named_children() if hasattr(m, "table")}

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.scorer()(users)

    def _l2(self, *rows: torch.Tensor) -> torch.Tensor:
        return sum(r.pow(2).sum() for r in rows) / (2 * rows[0].shape[0])


class MF(TopKModel):
    """Matrix factorisation trained with BPR: score = <e_u, e_i>.
    Explained in Chapter 3."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, reg: float = 0.0,
                 embedding: EmbeddingFactory | None = None):
        super().__init__(n_users, n_items, dim, reg, embedding)
        self.user = self.factory("user", n_users, dim)
        self.item = self.factory("item", n_items, dim)

    def loss(self, users, pos, neg):
        u, p, n = self.user(users), self.item(pos), self.item(neg)
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        return bpr + self.reg * self._l2(u, p, n) if self.reg else bpr

    def score(self, users, items):
        return (self.user(users) * self.item(items)).sum(-1)

    def scorer(self):
        items = self.item.table()
        return lambda users: self.user(users) @ items.T


class NeuMF(TopKModel):
    """Neural collaborative filtering: a GMF branch and an MLP branch, fused by a linear layer, trained
    with binary cross-entropy on (positive, sampled negative). Explained in Chapter 3."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, hidden=(128, 64), dropout: float = 0.1,
                 reg: float = 0.0, embedding: EmbeddingFactory | None = None):
        super().__init__(n_users, n_items, dim, reg, embedding)
        self.user = self.factory("user", n_users, dim)          # GMF branch
        self.item = self.factory("item", n_items, dim)
        self.user_mlp = self.factory("user_mlp", n_users, dim)  # MLP branch
        self.item_mlp = self.factory("item_mlp", n_items, dim)
        layers, width = [], 2 * dim
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.predict = nn.Linear(dim + width, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def _logits(self, u, i, um, im):
        h = self.mlp(torch.cat([um, im], -1))
        return self.predict(torch.cat([u * i, h], -1)).squeeze(-1)

    def score(self, users, items):
        return self._logits(self.user(users), self.item(items), self.user_mlp(users), self.item_mlp(items))

    def loss(self, users, pos, neg):
        u, um = self.user(users), self.user_mlp(users)
        p, pm, n, nm = self.item(pos), self.item_mlp(pos), self.item(neg), self.item_mlp(neg)
        logits = torch.cat([self._logits(u, p, um, pm), self._logits(u, n, um, nm)])
        labels = torch.cat([torch.ones(len(users)), torch.zeros(len(users))]).to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        return bce + self.reg * self._l2(u, p, n, um, pm, nm) if self.reg else bce

    def scorer(self):
        items, items_mlp = self.item.table(), self.item_mlp.table()
        first = self.mlp[1]  # the first Linear acts on [user_mlp, item_mlp]: split it in two halves
        w_user, w_item = first.weight[:, :self.dim], first.weight[:, self.dim:]
        item_part = items_mlp @ w_item.T + first.bias             # (items, h1), once
        w_gmf = self.predict.weight[0, :self.dim]
        w_mlp, b = self.predict.weight[0, self.dim:], self.predict.bias
        rest = self.mlp[2:]  # ReLU and the later layers
        one_layer = len(rest) == 1 and isinstance(rest[0], nn.ReLU)

        def score_all(users, chunk: int = 128, block: int = NEUMF_SCORE_BLOCK):
            if not one_layer or (torch.is_grad_enabled() and b.requires_grad):
                # deeper MLPs (the later Linear layers see the whole (chunk, items, h1) block) or autograd
                out = []
                for s in range(0, len(users), chunk):
                    us = users[s:s + chunk]
                    gmf = (self.user(us) * w_gmf) @ items.T          # (B, items)
                    h = rest((self.user_mlp(us) @ w_user.T)[:, None, :] + item_part[None])  # (B, items, h1)
                    out.append(gmf + h @ w_mlp + b)
                return torch.cat(out)
            # One hidden layer (the default): the same operations on the same values, but the (users,
            # items, h1) hidden block is built ``block`` users at a time in one reused buffer that stays in
            # cache, with the ReLU in place, and the scores go straight into one preallocated output. The
            # two matrix products keep their ``chunk`` rows and every element is computed exactly as in
            # the plain form (kept above and in the tests: the scores are bit-identical).
            n_items = item_part.shape[0]
            out = item_part.new_empty(len(users), n_items)
            buf = item_part.new_empty(min(block, chunk, max(len(users), 1)), n_items, item_part.shape[1])
            for s in range(0, len(users), chunk):
                us = users[s:s + chunk]
                gmf = (self.user(us) * w_gmf) @ items.T          # (B, items)
                um = self.user_mlp(us) @ w_user.T                # (B, h1)
                for j in range(0, len(us), block):
                    nb = min(block, len(us) - j)
                    h = torch.add(um[j:j + nb, None, :], item_part[None], out=buf[:nb]).relu_()
                    torch.add(gmf[j:j + nb], h @ w_mlp, out=out[s + j:s + j + nb]).add_(b)
            return out
        return score_all


NEUMF_SCORE_BLOCK = 8  # users per hidden block in NeuMF's full ranking: 8 x 1,682 items x 64 floats = 3.4 MB


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """The symmetric normalised bipartite adjacency D^-1/2 A D^-1/2 over users then items, built with
    scipy.sparse and returned as a torch sparse CSR tensor. Explained in Chapter 3."""
    n_users, n_items = train.shape
    r = sp.csr_matrix(train, dtype=np.float32)
    r.data[:] = 1.0
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv)
    norm = (d @ a @ d).tocsr().astype(np.float32)
    norm.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the operations used here are stable
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(torch.from_numpy(norm.indptr.astype(np.int64)),
                                       torch.from_numpy(norm.indices.astype(np.int64)),
                                       torch.from_numpy(norm.data), size=norm.shape, check_invariants=False)


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a *symmetric* sparse ``adj``, whose gradient ``adj.T @ g`` is ``adj @ g``: the same
    product again, where autograd would transpose the CSR matrix on every backward pass (4-5x slower on
    ml-100k's graph; the gradients are bit-identical)."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adj @ grad


def propagate_once(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One propagation step ``adj @ x`` over the symmetric normalised adjacency
    (:func:`normalized_adjacency`), with a backward pass that reuses ``adj`` instead of transposing it.
    Explained in Chapter 3."""
    return _SymmetricSpMM.apply(adj, x)


def live_columns(model) -> int:
    """How many leading columns of ``model``'s ego table (users and items together) can be nonzero: one past
    the last column any row's mask keeps (prefix widths: the largest width), the full width for tables without
    a mask. Columns beyond it are zero in every row, so they stay zero through LightGCN's propagation, and
    :meth:`LightGCN.propagate` and :func:`recsize.stacked.train_models_stacked` need not propagate them.
    Explained in Chapter 8."""
    live = 0
    for table in (model.user, model.item):
        mask = getattr(table, "mask", None)
        if mask is None:
            return model.dim
        with torch.no_grad():
            kept = torch.nonzero(mask().ne(0).any(0))
        live = max(live, int(kept.max()) + 1 if len(kept) else 0)
    return live


class GraphModel(TopKModel):
    """Shared parts of NGCF and LightGCN: ego embeddings, the normalised adjacency, BPR on the
    propagated embeddings, and L2 on the ego embeddings of the batch. Explained in Chapter 3."""

    def __init__(self, train: sp.csr_matrix, dim: int, reg: float, embedding):
        n_users, n_items = train.shape
        super().__init__(n_users, n_items, dim, reg, embedding)
        self.user = self.factory("user", n_users, dim)
        self.item = self.factory("item", n_items, dim)
        self.adj = normalized_adjacency(train)

    def _apply(self, fn, recurse=True):  # keep the (non-parameter) adjacency on the model's device
        super()._apply(fn, recurse)
        self.adj = fn(self.adj)
        return self

    def ego(self) -> torch.Tensor:
        return torch.cat([self.user.table(), self.item.table()])

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # each graph model defines its propagation rule

    def loss(self, users, pos, neg):
        return self.loss_from(*self.propagate(), users, pos, neg)

    def loss_from(self, all_u, all_i, users, pos, neg):
        """BPR on already propagated user and item embeddings plus L2 on the batch's ego embeddings: the
        part of :meth:`loss` after the propagation (``recsize.stacked`` propagates several models at once)."""
        # index_select, not all_u[users]: the same rows and the same gradients bit for bit, faster (CPU)
        u, p, n = all_u.index_select(0, users), all_i.index_select(0, pos), all_i.index_select(0, neg)
        bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        if not self.reg:
            return bpr
        return bpr + self.reg * self._l2(self.user(users), self.item(pos), self.item(neg))

    def score(self, users, items):
        all_u, all_i = self.propagate()
        return (all_u[users] * all_i[items]).sum(-1)

    def scorer(self):
        all_u, all_i = self.propagate()
        return lambda users: all_u[users] @ all_i.T


class LightGCN(GraphModel):
    """LightGCN: E^(l+1) = A_hat E^(l), final embedding = mean over layers 0..L. Explained in Chapter 3."""

    def __init__(self, train: sp.csr_matrix, dim: int = 64, n_layers: int = 2, reg: float = 1e-5,
                 embedding: EmbeddingFactory | None = None):
        super().__init__(train, dim, reg, embedding)
        self.n_layers = n_layers

    # propagate only the live columns of masked tables (live_columns): the others are zero in every row and
    # would stay zero; the kept columns are the full product's bit for bit (Chapter 8, tests/test_stacked.py)
    trim_dead_columns = True

    def propagate(self):
        live = max(1, live_columns(self)) if self.trim_dead_columns else self.dim
        if live < self.dim:
            e = torch.cat([self.user.table()[:, :live], self.item.table()[:, :live]])
        else:
            e = self.ego()
        total = e
        for _ in range(self.n_layers):
            e = propagate_once(self.adj, e)
            total = total + e
        final = total / (self.n_layers + 1)
        if live < self.dim:   # the dead columns back, as the zeros the full propagation gives there
            final = F.pad(final, (0, self.dim - live))
        return final[:self.n_users], final[self.n_users:]


class NGCF(GraphModel):
    """NGCF: E' = LeakyReLU(W1 (A_hat E + E) + W2 (A_hat E * E)), message dropout, row-normalised; the
    final embedding concatenates all layers. Explained in Chapter 3."""

    def __init__(self, train: sp.csr_matrix, dim: int = 64, hidden=(64, 64, 64), dropout: float = 0.1,
                 reg: float = 1e-5, embedding: EmbeddingFactory | None = None):
        super().__init__(train, dim, reg, embedding)
        widths = [dim, *hidden]
        self.w1 = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.w2 = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = nn.Dropout(dropout)
        for m in [*self.w1, *self.w2]:
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)

    def propagate(self):
        e = self.ego()
        layers = [e]
        for w1, w2 in zip(self.w1, self.w2):
            side = propagate_once(self.adj, e)
            e = F.leaky_relu(w1(side + e) + w2(side * e), 0.2)
            e = F.normalize(self.dropout(e), p=2, dim=1)
            layers.append(e)
        final = torch.cat(layers, 1)
        return final[:self.n_users], final[self.n_users:]


class CTRModel(nn.Module):
    """Base of the CTR backbones: samples of global feature ids, binary labels. Chapter 3."""

    task = "ctr"

    def __init__(self, n_features: int, n_fields: int, dim: int, reg: float, embedding):
        super().__init__()
        if dim < 1 or n_features < 1 or n_fields < 1:
            raise ValueError(f"need n_features, n_fields and dim >= 1, got {n_features}, {n_fields}, {dim}")
        if reg < 0:
            raise ValueError(f"reg (L2 weight) must be >= 0, got {reg}")
        self.n_features, self.n_fields, self.dim, self.reg = n_features, n_fields, dim, reg
        self.factory = embedding or plain_embedding
        self.feature = self.factory("feature", n_features, dim)
        self.linear = nn.Embedding(n_features, 1)
        nn.init.zeros_(self.linear.weight)
        self.bias = nn.Parameter(torch.zeros(1))

    def embedding_tables(self) -> dict[str, nn.Module]:
        return {"feature": self.feature}

    def _check(self, x):
        if x.dim() != 2 or x.shape[1] != self.n_fields:
            raise ValueError(f"samples must be (batch, {self.n_fields} fields), got {tuple(x.shape)}")

    def fm_terms(self, x, gates=None):
        """First-order term and FM second-order term 0.5 * ((sum v)^2 - sum v^2), plus the embeddings.
        ``gates`` (optional, ``(B, fields, dim)``) reach the table's per-instance gate hook (iHAS, Chapter 7)."""
        self._check(x)
        v = self.feature(x) if gates is None else self.feature(x, gates=gates)  # (B, fields, dim)
        # the first-order weights by index_select rather than nn.Embedding's lookup: the same rows and, in the
        # backward, the same gradient rows added in the same order (bit-identical), faster on the CPU
        w = self.linear.weight
        first = w.index_select(0, x.reshape(-1)).view(*x.shape, w.shape[1]).sum((1, 2)) + self.bias
        second = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(-1)
        return first + second, v

    def loss(self, x, y, gates=None):
        logits, v = self.score(x, return_embeddings=True, gates=gates)
        bce = F.binary_cross_entropy_with_logits(logits, y.float())
        if not self.reg:
            return bce
        return bce + self.reg * v.pow(2).sum() / (2 * len(x))


class FM(CTRModel):
    """Factorisation machine: bias + sum of weights + pairwise <v_i, v_j>. Explained in Chapter 3."""

    def __init__(self, n_features: int, n_fields: int, dim: int = 16, reg: float = 0.0,
                 embedding: EmbeddingFactory | None = None):
        super().__init__(n_features, n_fields, dim, reg, embedding)

    def score(self, x, return_embeddings: bool = False, gates=None):
        logits, v = self.fm_terms(x, gates)
        return (logits, v) if return_embeddings else logits


class DeepFM(CTRModel):
    """DeepFM: FM plus an MLP over the concatenated field embeddings, sharing the embeddings.
    Explained in Chapter 3."""

    def __init__(self, n_features: int, n_fields: int, dim: int = 16, hidden=(128, 128),
                 dropout: float = 0.2, reg: float = 0.0, embedding: EmbeddingFactory | None = None):
        super().__init__(n_features, n_fields, dim, reg, embedding)
        layers, width = [], n_fields * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def score(self, x, return_embeddings: bool = False, gates=None):
        logits, v = self.fm_terms(x, gates)
        logits = logits + self.mlp(v.flatten(1)).squeeze(-1)
        return (logits, v) if return_embeddings else logits


TOPK_BACKBONES = {"mf": MF, "neumf": NeuMF, "ngcf": NGCF, "lightgcn": LightGCN}
CTR_BACKBONES = {"fm": FM, "deepfm": DeepFM}
BACKBONES = {**TOPK_BACKBONES, **CTR_BACKBONES}


def build_backbone(name: str, split, dim: int = 64, embedding: EmbeddingFactory | None = None,
                   init: str | None = None, **kwargs):
    """Build backbone ``name`` for a top-k :class:`~recsize.data.Split` or a CTR
    :class:`~recsize.data.CTRSplit`. Without an ``embedding`` factory the tables are plain
    :class:`~recsize.embedding.Embedding` initialised by ``init`` (``"xavier"`` or ``"normal"``; default:
    the backbone's entry in :data:`DEFAULTS`). Explained in Chapter 3."""
    name = name.lower()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    if embedding is None:
        embedding = plain_factory(init or DEFAULTS[name].get("init", "xavier"))
    elif init is not None:
        raise ValueError("give either an embedding factory or init, not both (the factory initialises its tables)")
    is_ctr_split = hasattr(split, "data") and hasattr(split.data, "n_features")
    if name in CTR_BACKBONES:
        if not is_ctr_split:
            raise ValueError(f"{name} is a CTR backbone: it needs a CTR split (dataset ml-100k-ctr), "
                             f"not the top-k split of {split.data.name}")
        return CTR_BACKBONES[name](split.data.n_features, split.data.n_fields, dim, embedding=embedding, **kwargs)
    if is_ctr_split:
        raise ValueError(f"{name} is a top-k backbone: give it a top-k split, not the CTR view")
    if name in ("ngcf", "lightgcn"):
        return TOPK_BACKBONES[name](split.train, dim, embedding=embedding, **kwargs)
    return TOPK_BACKBONES[name](split.n_users, split.n_items, dim, embedding=embedding, **kwargs)


# Settings each backbone trains well with on ml-100k (random 8:1:1, d = 64), found by a small search on
# the validation split (see the README); "init" is the initialisation of plain embedding tables.
DEFAULTS: dict[str, dict] = {
    "mf": {"model": {"reg": 1e-2}, "train": {"lr": 2e-3}, "init": "xavier"},
    "neumf": {"model": {"hidden": (64,), "dropout": 0.3}, "train": {"lr": 2e-3, "batch_size": 4096},
              "init": "xavier"},
    "ngcf": {"model": {"reg": 1e-3}, "train": {"lr": 2e-3, "batch_size": 4096}, "init": "xavier"},
    "lightgcn": {"model": {"n_layers": 3, "reg": 1e-3}, "train": {"lr": 1e-2, "batch_size": 4096},
                 "init": "normal"},
    "fm": {"model": {}, "train": {"lr": 1e-3, "batch_size": 2048}, "init": "xavier"},
    "deepfm": {"model": {}, "train": {"lr": 1e-3, "batch_size": 2048}, "init": "xavier"},
}


def defaults_for(name: str) -> tuple[dict, dict]:
    """(model keyword arguments, trainer settings) recommended for backbone ``name``. Chapter 3."""
    if name.lower() not in DEFAULTS:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    d = DEFAULTS[name.lower()]
    return dict(d["model"]), dict(d["train"])
