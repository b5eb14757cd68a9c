"""iHAS: instance-wise hierarchical architecture search (Yu et al., CIKM 2023). Explained in Chapter 7.

No public implementation exists; this is the first. Only the outline is verified: (1) *search* with
Bernoulli gates on the field embeddings, stochastic during search, pushed to be sparse and bi-polarised
(towards 0 or 1) by two regularisers, the gates depending on the instance; (2) *cluster* the samples by
the deterministic mode of their gates with K-means; (3) *retrain* one model per cluster with that
cluster's dimensions and route every sample to its cluster's model at inference.

Everything below the outline is **our** reading (listed, with why, in
:data:`recsize.search.departures.IHAS`, rendered as Chapter 7.8's table):

* gates per (instance, field, dimension block): the d_max dimensions of a field are cut into ``n_blocks``
  blocks of ``block = d_max / n_blocks`` dimensions; a gate closes or opens a whole block;
* the gate network: an MLP from the instance's field embeddings to mu in [0, 1]^(fields x blocks). Its
  input is the first ``route_dim`` dimensions of every field embedding, *detached* (the gates learn from
  the loss; the embeddings are trained by the loss alone, not pulled by the gates);
* stochastic gates: straight-through Bernoulli, z = b + mu - stopgrad(mu) with b ~ Bernoulli(mu): the
  forward pass sees a hard 0/1 gate, the backward pass the gradient with respect to mu. We first tried
  the relaxation z = clip(mu + sigma * eps, 0, 1) (Yamada et al. 2020) and dropped it: with soft gates
  the embeddings grew to make up for small gates (an FM is not scale invariant), and every mu sank to
  0 while the loss stayed fine. The deterministic mode z = 1[mu > tau] with tau = 0.5 during the
  search and, after it, the quantile of the training samples' mu that opens exactly the target fraction
  (the expected value thresholded at the budget: without it, gates that the regularisers left between
  0 and 1 all fall on the same side of 0.5 and every instance gets the same all-open or all-closed
  pattern);
* sparsity term lambda_s * (mean(mu) - target): mu is the gate's opening probability, so mean(mu) is
  the expected open fraction; blocks have equal width, so it counts parameters; target = the budget
  density left to the cluster models. lambda_s is a Lagrange multiplier updated by dual ascent after
  every batch, lambda_s <- max(0, lambda_s + eta (mean(mu) - target)): it grows until the constraint
  mean(mu) <= target holds, whatever the other terms do (a fixed weight lost against the polarisation
  term in our runs: once the gates sit at 1, polarisation holds them there);
  ``weight_by_rows`` weighs each field's gates by its number of rows, so the term counts *stored*
  parameters (a field of 2 values costs almost nothing); off by default: on ml-100k-ctr (FM, seed 0) it
  helped K = 1 (AUC 0.773 against 0.766) and hurt K = 4 (0.711 against 0.741), whose clusters then closed
  the user and item fields entirely;
* polarisation term lambda_p * mean(mu (1 - mu)), zero exactly at mu in {0, 1}; lambda_p ramps up
  linearly over the search epochs so the gates first find where to open, then commit;
* a cluster's field width: the mean open width of its samples' deterministic gates (sum over blocks of
  block width x fraction of the cluster's samples with the block open); the widths of all clusters are
  then scaled together so that the total hits the budget exactly (:func:`allocate_sizes`);
* a cluster's model stores rows only for the feature values seen in its training samples (others get
  width 0: an unseen value would stay at its random initialisation anyway);
* routing at inference needs the gate network, its input columns of the search table (``route_dim``
  wide, stored compactly) and the K centroids: all of them are charged to the budget, so the cluster
  models share what is left (:func:`routing_parameters`). K = 1 needs no routing. (``IHASRun`` keeps the
  whole search model in memory for convenience; routing reads only those ``route_dim`` columns.)

* each cluster's model is trained from scratch on its own samples (``cluster_init="scratch"``, our choice:
  the paper does not say); ``cluster_init="search"`` warm-starts every cluster model from the search
  model's weights instead, its table cut to the cluster's widths.
* ``layout="shared"`` (an ablation, not the paper's): no data split and one model. One table stores every
  row at the widest of its clusters' widths; a sample reads the prefix of each row its cluster allows
  (:class:`SharedClusterModel`, a per-sample prefix mask through the gate hook). The cluster widths are
  stored as one ratio per (cluster, field) (:func:`shared_widths`), charged with the routing; one model
  has one first-order table, so nothing extra there.

Budget accounting (``charge``): with ``"routing+linear"`` (default) total embedding parameters = sum over
clusters of the kept entries of their tables + the router's parameters + the first-order weight tables of
the K - 1 cluster models beyond the first (one scalar per feature each; ES's single model has one such
table, uncharged) = ``target_parameters(density, n_features, d_max)``, exactly what the uniform baseline
(ES) keeps in its one table: everything iHAS stores beyond one model is charged. ``"embeddings"`` charges
neither the router nor the extra tables (consistent too, the most favourable reading for iHAS);
``"routing"`` charges the router only (recsize's earlier accounting, inconsistent: kept to compare). On
ml-100k-ctr (DeepFM, three seeds, ``benchmarks/ihas.py``) the two consistent readings gave the same AUC
within noise. DeepFM's MLP, K copies of it, is reported separately under all three.

The clustering of the gate patterns and the per-cluster widths (section 3: K-means, routing, the sizes
that spend the budget, the shared layout's model) are :mod:`recsize.search.ihas_clusters`; every name
Chapter 7 imports from this module is defined here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..budget import check_budget, compact_bytes, target_parameters
from .ihas_clusters import (SharedClusterModel, allocate_sizes, cluster_patterns, cluster_widths, present_rows, route,
                            shared_widths, with_clusters)


# ---------------------------------------------------------------------------------------------------
# 1. The gates and their regularisers
# ---------------------------------------------------------------------------------------------------

class GateNetwork(nn.Module):
    """mu(x) in [0, 1] per (field, block) from an instance's field embeddings, and the gates z drawn
    from it. Explained in Chapter 7.

    ``forward(v, stochastic)`` takes the looked-up field embeddings ``v`` (B, fields, d_max) and returns
    the block gates (B, fields, n_blocks): straight-through Bernoulli samples when ``stochastic``
    (search), z = 1[mu > tau] otherwise (clustering and inference). :meth:`expand` turns block gates into
    per-dimension gates for the table's gate hook.
    """

    def __init__(self, n_fields: int, d_max: int, n_blocks: int = 4, route_dim: int = 2, hidden: int = 16):
        super().__init__()
        if n_fields < 1 or d_max < 1:
            raise ValueError(f"need n_fields >= 1 and d_max >= 1, got {n_fields} and {d_max}")
        if n_blocks < 1 or d_max % n_blocks:
            raise ValueError(f"n_blocks (gate blocks per field) must divide d_max = {d_max}, got {n_blocks}")
        if not 1 <= route_dim <= d_max:
            raise ValueError(f"route_dim must lie in [1, d_max = {d_max}], got {route_dim}")
        if hidden < 1:
            raise ValueError(f"need hidden >= 1, got {hidden}")
        self.n_fields, self.d_max, self.n_blocks = n_fields, d_max, n_blocks
        self.block, self.route_dim = d_max // n_blocks, route_dim
        self.mlp = nn.Sequential(nn.Linear(n_fields * route_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_fields * n_blocks))
        nn.init.constant_(self.mlp[-1].bias, 2.0)  # start with every gate open: mu = sigmoid(2) = 0.88
        self.register_buffer("tau", torch.tensor(0.5))  # threshold of the deterministic mode

    def calibrate(self, mu: np.ndarray, target: float) -> float:
        """Set tau so that 1[mu > tau] opens (about) the ``target`` fraction of the gates ``mu`` (the
        training samples' gate means); ties at tau stay closed. Returns tau. Explained in Chapter 7."""
        flat = np.sort(np.asarray(mu, dtype=np.float64).ravel())
        if not len(flat):
            raise ValueError("calibrate needs at least one gate mean")
        closed = min(len(flat) - 1, max(0, int(round((1 - target) * len(flat))) - 1))
        self.tau.fill_(float(flat[closed]))
        return float(self.tau)

    def mu(self, v: torch.Tensor) -> torch.Tensor:
        """Gate means mu in [0, 1], (B, fields, n_blocks), from the detached first ``route_dim``
        dimensions of the field embeddings ``v``."""
        h = v[..., : self.route_dim].detach().flatten(1)
        return torch.sigmoid(self.mlp(h)).view(-1, self.n_fields, self.n_blocks)

    def sample(self, mu: torch.Tensor, stochastic: bool) -> torch.Tensor:
        """z = b + mu - stopgrad(mu), b ~ Bernoulli(mu) (stochastic) or 1[mu > tau] (deterministic)."""
        if stochastic:
            b = torch.bernoulli(mu.detach())
            return b + (mu - mu.detach())  # exactly b forward (mu - mu = 0), d z / d mu = 1 backward
        return (mu > self.tau).to(mu.dtype)

    def forward(self, v: torch.Tensor, stochastic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mu(v)
        return self.sample(mu, stochastic), mu

    def expand(self, z: torch.Tensor) -> torch.Tensor:
        """Block gates (B, fields, n_blocks) -> dimension gates (B, fields, d_max)."""
        return z.repeat_interleave(self.block, dim=-1)


def open_fraction(gates: torch.Tensor) -> torch.Tensor:
    """Mean open fraction of (B, fields, n_blocks) gates or open probabilities. Blocks have equal width,
    so the plain mean is the fraction of embedding parameters in use. Explained in Chapter 7."""
    return gates.mean()


def sparsity_penalty(mu: torch.Tensor, target: float, field_weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean(mu) - target: the expected open fraction beyond the target fraction of the dimensions,
    the constraint that the multiplier lambda_s >= 0 enforces (its gradient closes every gate a little).
    With ``field_weights`` (one per field, e.g. its number of rows) the open fraction is the weighted
    mean over fields, the expected fraction of *stored* parameters. Explained in Chapter 7."""
    if field_weights is None:
        return open_fraction(mu) - target
    per_field = mu.mean((0, 2))
    return (per_field * field_weights).sum() / field_weights.sum() - target


def polarisation_penalty(mu: torch.Tensor) -> torch.Tensor:
    """mean(mu (1 - mu)): largest at mu = 0.5, zero at mu in {0, 1}; its gradient 1 - 2 mu pushes every
    gate mean away from 0.5 towards the nearer end. Explained in Chapter 7."""
    return (mu * (1 - mu)).mean()


# ---------------------------------------------------------------------------------------------------
# 2. Search: train the backbone and the gates together
# ---------------------------------------------------------------------------------------------------

CLUSTER_INITS = ("scratch", "search")
LAYOUTS = ("per-cluster", "shared")
CHARGES = ("routing", "routing+linear", "embeddings")


@dataclass
class IHASConfig:
    """Settings of the three stages. Explained in Chapter 7."""

    clusters: int = 4             # K
    n_blocks: int = 4             # gate blocks per field
    route_dim: int = 2            # input dimensions per field of the gate network (and of routing)
    hidden: int = 16              # gate network width
    search_epochs: int = 10
    sparsity_weight: float = 0.0  # initial lambda_s (the Lagrange multiplier of the budget)
    dual_lr: float = 0.002        # eta, the dual ascent step of lambda_s per batch
    polarisation_weight: float = 0.01  # final lambda_p (ramped up linearly from 0 over the epochs)
    lr: float = 1e-3              # search learning rate of the backbone
    gate_lr: float = 3e-3         # search learning rate of the gate network
    batch_size: int = 2048
    n_init: int = 10              # K-means restarts
    weight_by_rows: bool = False  # sparsity counts a field's gates by its number of rows (stored parameters)
    cluster_init: str = "scratch"  # cluster models: "scratch" (ours) or "search" (warm start)
    charge: str = "routing+linear"  # what the budget counts beyond the cluster tables ("embeddings", "routing")
    layout: str = "per-cluster"  # one model per cluster (the paper), or "shared": one table, per-cluster masks

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.cluster_init not in CLUSTER_INITS:
            raise ValueError(f"cluster_init must be one of {', '.join(CLUSTER_INITS)}, got {self.cluster_init!r}")
        if self.charge not in CHARGES:
            raise ValueError(f"charge must be one of {', '.join(CHARGES)}, got {self.charge!r}")
        if int(self.clusters) != self.clusters or self.clusters < 1:
            raise ValueError(f"clusters (K) must be an integer >= 1, got {self.clusters}")
        for name in ("n_blocks", "route_dim", "hidden", "search_epochs", "batch_size", "n_init"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sparsity_weight", "dual_lr", "polarisation_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not self.gate_lr > 0:
            raise ValueError(f"lr and gate_lr must be > 0, got {self.lr} and {self.gate_lr}")


def _check_ctr(backbone: str, split) -> None:
    from ..backbones import CTR_BACKBONES
    if backbone.lower() not in CTR_BACKBONES:
        raise ValueError(f"iHAS searches field embeddings of a CTR model: choose backbone "
                         f"{' or '.join(CTR_BACKBONES)}, not {backbone!r}")
    if not hasattr(getattr(split, "data", None), "n_features"):
        raise ValueError("iHAS needs a CTR split (ml-100k-ctr, a Criteo/Avazu file or make_synthetic_ctr)")


def gated_loss(model, gates: GateNetwork, x, y, stochastic: bool = True):
    """The CTR loss with instance-wise gates: look the fields up once to feed the gate network, then
    score through the table's gate hook. Returns (loss, mu). Explained in Chapter 7."""
    v = model.feature(x)
    z, mu = gates(v, stochastic)
    return model.loss(x, y, gates=gates.expand(z)), mu


def search(backbone: str, split, density: float, d_max: int = 64, config: IHASConfig | None = None,
           seed: int = 0, device: str = "cpu", progress: bool | None = None, **model_kwargs):
    """Stage 1: train ``backbone`` (full-width masked table) and the gate network together on the
    training split, with the sparsity term aiming at ``density`` and the polarisation term.

    Returns ``(model, gates, history)``; ``history`` holds per epoch the loss, lambda_s and lambda_p,
    the mean open fraction of the deterministic gates on the validation split and their mean |mu - 0.5|.
    Explained in Chapter 7.
    """
    from ..backbones import DEFAULTS, build_backbone, defaults_for
    from ..embedding import masked_factory
    from ..train import progress_bar, resolve_device, seed_everything
    _check_ctr(backbone, split)
    density = check_budget(density)
    device = resolve_device(device)  # "auto" and a device this machine lacks, as the trainer does
    config = config or IHASConfig()
    seed_everything(seed)
    kwargs = {**defaults_for(backbone)[0], **model_kwargs}
    model = build_backbone(backbone, split, d_max, embedding=masked_factory(
        None, d_max, init=DEFAULTS[backbone.lower()].get("init", "xavier")), **kwargs).to(device)
    gates = GateNetwork(split.data.n_fields, d_max, config.n_blocks, config.route_dim, config.hidden).to(device)
    optimizer = torch.optim.Adam([{"params": model.parameters(), "lr": config.lr},
                                  {"params": gates.parameters(), "lr": config.gate_lr}])
    X = torch.from_numpy(split.data.X[split.train]).to(device)
    Y = torch.from_numpy(split.data.y[split.train]).to(device)
    Xv = split.data.X[split.valid]
    weights = (torch.as_tensor(np.diff(split.data.offsets), dtype=torch.float32, device=device)
               if config.weight_by_rows else None)
    rng = np.random.default_rng(seed)
    history, lam = [], float(config.sparsity_weight)
    for epoch in progress_bar(range(1, config.search_epochs + 1), progress, desc="iHAS search",
                              unit="epoch", leave=False):
        model.train()
        gates.train()
        total, n_batches = 0.0, 0
        lam_p = config.polarisation_weight * epoch / config.search_epochs
        for b in np.array_split(rng.permutation(len(X)), max(1, -(-len(X) // config.batch_size))):
            loss, mu = gated_loss(model, gates, X[b], Y[b], stochastic=True)
            excess = sparsity_penalty(mu, density, weights)
            loss = loss + lam * excess + lam_p * polarisation_penalty(mu)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"iHAS search loss became {loss.item()} at epoch {epoch}: lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, n_batches = total + float(loss.detach()), n_batches + 1
            lam = max(0.0, lam + config.dual_lr * float(excess.detach()))  # dual ascent on lambda_s
        pattern, mu_valid = gate_patterns(model, gates, Xv, return_mu=True)
        history.append({"epoch": epoch, "loss": total / n_batches, "lambda_s": lam, "lambda_p": lam_p,
                        "open_fraction": float(pattern.mean()),
                        "polarisation": float(np.abs(mu_valid - 0.5).mean())})
    return model, gates, history


@torch.no_grad()
def gate_patterns(model, gates: GateNetwork, X: np.ndarray, batch_size: int = 8192, return_mu: bool = False):
    """Deterministic gate patterns z = 1[mu > 0.5] of samples ``X``, flattened to (samples,
    fields * n_blocks) floats (and mu, same shape, with ``return_mu``). Explained in Chapter 7."""
    was = model.training, gates.training
    model.eval()
    gates.eval()
    device = next(gates.parameters()).device
    zs, mus = [], []
    for s in range(0, len(X), batch_size):
        x = torch.from_numpy(np.asarray(X[s:s + batch_size])).to(device)
        z, mu = gates(model.feature(x), stochastic=False)
        zs.append(z.flatten(1).cpu())
        mus.append(mu.flatten(1).cpu())
    model.train(was[0])
    gates.train(was[1])
    z = torch.cat(zs).numpy().astype(np.float64) if zs else np.zeros((0, gates.n_fields * gates.n_blocks))
    return (z, torch.cat(mus).numpy().astype(np.float64)) if return_mu else z


# ---------------------------------------------------------------------------------------------------
# 3. Clustering, per-cluster widths and the budget (the clustering and widths: recsize.search.ihas_clusters)
# ---------------------------------------------------------------------------------------------------


def routing_parameters(n_features: int, n_fields: int, route_dim: int, gates: GateNetwork | None = None,
                       clusters: int = 1, n_blocks: int = 1) -> dict:
    """What routing a new sample stores: the router table (the search table's first ``route_dim``
    columns, n_features x route_dim), the gate network and the K centroids (K x fields x n_blocks). The
    total is charged to the budget. Explained in Chapter 7."""
    net = sum(p.numel() for p in gates.parameters()) if gates is not None else 0
    out = {"router_table": n_features * route_dim, "gate_network": net,
           "centroids": clusters * n_fields * n_blocks if clusters > 1 else 0}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------------------
# 4. Retrain one model per cluster; route at inference
# ---------------------------------------------------------------------------------------------------

@dataclass
class IHASRun:
    """What :func:`run_ihas` produced. ``predict(X)`` routes every sample to its cluster's model.
    Explained in Chapter 7."""

    density: float
    d_max: int
    config: IHASConfig
    search_history: list
    field_widths: np.ndarray       # (K, fields) gate widths before budget scaling
    sizes: np.ndarray              # (K, n_features) the stored widths of every cluster model
    cluster_sizes: dict            # samples per cluster in train / valid / test
    budget: dict                   # parameter and byte accounting
    valid: dict
    test: dict
    search_model: object = field(default=None, repr=False)
    gates: object = field(default=None, repr=False)
    centroids: np.ndarray | None = field(default=None, repr=False)
    models: list = field(default_factory=list, repr=False)
    labels: dict = field(default_factory=dict, repr=False)   # cluster of every train / valid / test sample
    offsets: np.ndarray | None = field(default=None, repr=False)  # the data's field offsets
    seconds: dict = field(default_factory=dict)  # wall time: search (gates, clustering), retrain
    training: dict = field(default_factory=dict)  # per cluster model: best_epoch and epochs trained

    def route(self, X: np.ndarray) -> np.ndarray:
        """The cluster of every sample: its deterministic gate pattern's nearest centroid."""
        if self.centroids is None:
            return np.zeros(len(X), dtype=np.int64)
        return route(self.centroids, gate_patterns(self.search_model, self.gates, X))

    def predict(self, X: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Click probabilities, each sample scored by its cluster's model."""
        from ..evaluate import predict_ctr
        labels = self.route(X) if labels is None else labels
        if self.config.layout == "shared":
            return predict_ctr(self.models[0], with_clusters(X, labels))
        p = np.zeros(len(X))
        for k, model in enumerate(self.models):
            idx = np.flatnonzero(labels == k)
            if len(idx):
                p[idx] = predict_ctr(model, X[idx])
        return p

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return {"method": "ihas", "density": self.density, "d_max": self.d_max, "config": asdict(self.config),
                "search_history": self.search_history, "field_widths": self.field_widths.tolist(),
                "sizes_per_cluster_field": self.field_sizes().tolist(), "cluster_sizes": self.cluster_sizes,
                "budget": self.budget, "valid": self.valid, "test": self.test, "seconds": self.seconds}

    def field_sizes(self) -> np.ndarray:
        """(K, fields) mean stored width of each field's present rows in each cluster's model."""
        f = len(self.offsets) - 1
        fof = np.repeat(np.arange(f), np.diff(self.offsets))
        out = np.zeros((len(self.sizes), f))
        for k in range(len(self.sizes)):
            for j in range(f):
                rows = self.sizes[k, fof == j]
                kept = rows[rows > 0]
                out[k, j] = kept.mean() if len(kept) else 0.0
        return out


def warm_start(backbone: str, split, d_max: int, factory, search_model, seed: int = 0, **model_kwargs):
    """``backbone`` for ``split`` with the tables of ``factory`` (a cluster's widths) and every weight of
    the search model: its table's entries beyond each row's width are zeroed. ``cluster_init="search"``.
    Explained in Chapter 7."""
    from ..backbones import build_backbone, defaults_for
    from ..train import seed_everything
    seed_everything(seed)
    model = build_backbone(backbone, split, d_max, embedding=factory, **{**defaults_for(backbone)[0], **model_kwargs})
    own, state = model.state_dict(), search_model.state_dict()
    for key in own:
        if key.endswith("sizes") or key.endswith("row_block"):
            continue
        own[key] = state[key].detach().to(own[key].device).clone()
    table = model.feature
    keep = torch.arange(d_max, device=own["feature.weight"].device)[None, :] < table.sizes[:, None]
    own["feature.weight"] = own["feature.weight"] * keep
    model.load_state_dict(own)
    return model


def _routing_bytes(routing: dict, n_features: int, route_dim: int, d_max: int, clusters: int) -> int:
    """The bytes routing stores: the router table (compact, ``route_dim`` wide), and as float32 the gate
    network, the centroids and (shared layout) the cluster widths. Nothing for one cluster."""
    table = compact_bytes(np.full(n_features, route_dim), d_max) if clusters > 1 else 0
    return table + 4 * (routing["gate_network"] + routing["centroids"] + routing["cluster_widths"])


def _scored(run: "IHASRun", split) -> "IHASRun":
    """``run`` with its validation and test AUC / log loss, every sample scored by its cluster."""
    from ..metrics import auc, log_loss
    for part in ("valid", "test"):
        X, y = split.part(part)
        p = run.predict(X, run.labels[part])
        setattr(run, part, {"auc": auc(y, p), "logloss": log_loss(y, p)})
    return run


def run_ihas(backbone: str, split, density: float, d_max: int = 64, config: IHASConfig | None = None,
             train_config=None, seed: int = 0, progress: bool | None = None, **model_kwargs) -> IHASRun:
    """Search, cluster, retrain: the whole of iHAS at total embedding budget ``density``.

    ``train_config`` (a :class:`~recsize.train.TrainConfig`) trains every cluster model (early stopping
    on the cluster's validation samples, on all validation samples when a cluster's are one-class). The
    test split is evaluated by routing every sample to its cluster. Explained in Chapter 7.
    """
    from ..backbones import DEFAULTS
    from ..data import CTRSplit
    from ..embedding import compact_tables, masked_factory
    from ..train import TrainConfig, default_config, fit, train
    _check_ctr(backbone, split)
    density = check_budget(density)
    config = config or IHASConfig()
    if d_max % config.n_blocks:
        raise ValueError(f"n_blocks = {config.n_blocks} must divide d_max = {d_max}")
    train_config = train_config or default_config(backbone, seed=seed)
    data = split.data
    K = config.clusters
    total = target_parameters(density, data.n_features, d_max)
    # the gate network's size does not depend on training: build one to count it
    probe = GateNetwork(data.n_fields, d_max, config.n_blocks, config.route_dim, config.hidden)

    shared = config.layout == "shared"

    def charged(k: int, gate_net) -> dict:  # routing and the extra first-order tables of k cluster models
        out = (routing_parameters(data.n_features, data.n_fields, config.route_dim, gate_net, k, config.n_blocks)
               if k > 1 else {"router_table": 0, "gate_network": 0, "centroids": 0, "total": 0})
        out["cluster_widths"] = k * data.n_fields if shared and k > 1 else 0  # the shared layout's ratios
        out["total"] += out["cluster_widths"]
        out["first_order"] = 0 if shared else (k - 1) * data.n_features
        out["charged"] = {"routing": out["total"], "routing+linear": out["total"] + out["first_order"],
                          "embeddings": 0}[config.charge]
        return out

    routing = charged(K, probe)
    models_total = total - routing["charged"]
    if models_total < data.n_fields:
        raise ValueError(f"at density {density:g} the budget keeps {total} parameters, but routing K = {K} "
                         f"clusters and their first-order tables alone need {routing['charged']}: raise the "
                         "budget, lower route_dim, use K = 1 or charge='embeddings'")
    start = time.perf_counter()
    # 1. search (the gates aim at the density left to the cluster models)
    search_model, gates, history = search(backbone, split, models_total / (data.n_features * d_max), d_max,
                                          config, seed, train_config.device, progress, **model_kwargs)
    # 2. the deterministic threshold opening the target fraction on the training samples, then cluster
    #    the deterministic gate patterns of the training samples; route valid and test
    _, mu_train = gate_patterns(search_model, gates, data.X[split.train], return_mu=True)
    gates.calibrate(mu_train, models_total / (data.n_features * d_max))
    pat = {part: gate_patterns(search_model, gates, data.X[getattr(split, part)])
           for part in ("train", "valid", "test")}
    if K > 1:
        centroids = cluster_patterns(pat["train"], K, seed, config.n_init)
        K = len(centroids)  # K' <= K clusters that hold training samples; routing stores K' centroids
        routing = charged(K, gates)
        models_total = total - routing["charged"]
        labels = {part: route(centroids, pat[part]) for part in pat}
    else:
        centroids = None
        labels = {part: np.zeros(len(pat[part]), dtype=np.int64) for part in pat}
    widths = cluster_widths(pat["train"], labels["train"], K, data.n_fields, config.n_blocks, gates.block)
    if shared:
        stored, sizes = shared_widths(widths, data.field_of_feature(), models_total, d_max)
    else:
        present = present_rows(data.X[split.train], labels["train"], K, data.n_features)
        sizes = allocate_sizes(widths, data.field_of_feature(), present, models_total, d_max)
    search_seconds = time.perf_counter() - start
    if shared:
        return _finish_shared(backbone, split, density, d_max, config, train_config, seed, model_kwargs, total,
                              routing, history, widths, stored, sizes, labels, search_model, gates, centroids,
                              start, search_seconds)
    # 3. retrain one model per cluster on its own samples, from scratch or from the search model
    init = DEFAULTS[backbone.lower()].get("init", "xavier")
    models, non_embedding, best_epochs, epochs = [], 0, [], []
    for k in range(K):
        tr, va = split.train[labels["train"] == k], split.valid[labels["valid"] == k]
        if len(np.unique(data.y[va])) < 2:
            va = split.valid  # too few validation samples of both labels: stop early on all of them
        sub = CTRSplit(data, tr, va, split.test[labels["test"] == k], split.seed)
        cfg = TrainConfig(**{**train_config.__dict__, "test": False, "seed": seed + k})
        factory = masked_factory({"feature": sizes[k]}, d_max, init)
        if config.cluster_init == "scratch":
            result = fit(backbone, sub, d_max, cfg, embedding=factory, **model_kwargs)
        else:
            result = train(warm_start(backbone, sub, d_max, factory, search_model, seed + k, **model_kwargs),
                           sub, cfg)
        model = compact_tables(result.model)
        models.append(model)
        best_epochs.append(result.best_epoch)
        epochs.append(len(result.history))
        non_embedding += sum(p.numel() for n, p in model.named_parameters() if not n.startswith("feature"))
    retrain_seconds = time.perf_counter() - start - search_seconds
    per_cluster = [int(s.sum()) for s in sizes]
    budget = {"target_parameters": total, "charge": config.charge, "cluster_parameters": per_cluster,
              "models_parameters": int(sum(per_cluster)), "routing_parameters": routing,
              "total_parameters": int(sum(per_cluster)) + routing["charged"],
              "cluster_bytes": [compact_bytes(s, d_max) for s in sizes],
              "routing_bytes": _routing_bytes(routing, data.n_features, config.route_dim, d_max, K),
              "non_embedding_parameters": int(non_embedding)}
    budget["first_order_bytes"] = 4 * routing["first_order"]  # stored whatever is charged
    budget["total_bytes"] = int(sum(budget["cluster_bytes"]) + budget["routing_bytes"] + budget["first_order_bytes"])
    cluster_sizes = {part: np.bincount(labels[part], minlength=K).tolist() for part in labels}
    run = IHASRun(density, d_max, config, history, widths, sizes, cluster_sizes, budget, {}, {},
                  search_model, gates, centroids, models, labels, data.offsets,
                  {"search": search_seconds, "retrain": retrain_seconds},
                  {"best_epoch": best_epochs, "epochs": epochs})
    return _scored(run, split)


def _finish_shared(backbone, split, density, d_max, config, train_config, seed, model_kwargs, total, routing,
                   history, widths, stored, sizes, labels, search_model, gates, centroids, start,
                   search_seconds) -> IHASRun:
    """Stage 3 of ``layout="shared"``: one model on every training sample, its table ``stored`` wide, each
    sample masked to its cluster's widths ``sizes``; then compact storage. Explained in Chapter 7."""
    from dataclasses import replace

    from ..backbones import DEFAULTS, build_backbone, defaults_for
    from ..data import CTRSplit
    from ..embedding import compact_tables, masked_factory
    from ..train import TrainConfig, seed_everything, train
    data = split.data
    K = len(sizes)
    factory = masked_factory({"feature": stored}, d_max, DEFAULTS[backbone.lower()].get("init", "xavier"))
    if config.cluster_init == "scratch":
        seed_everything(seed)
        inner = build_backbone(backbone, split, d_max, embedding=factory,
                               **{**defaults_for(backbone)[0], **model_kwargs})
    else:
        inner = warm_start(backbone, split, d_max, factory, search_model, seed, **model_kwargs)
    every = np.zeros(len(data.X), dtype=np.int64)
    for part in ("train", "valid", "test"):
        every[getattr(split, part)] = labels[part]
    tagged = CTRSplit(replace(data, X=with_clusters(data.X, every)), split.train, split.valid, split.test,
                      split.seed)
    result = train(SharedClusterModel(inner, sizes, d_max), tagged,
                   TrainConfig(**{**train_config.__dict__, "test": False, "seed": seed}))
    model = result.model
    compact_tables(model.model)
    retrain_seconds = time.perf_counter() - start - search_seconds
    non_embedding = sum(p.numel() for n, p in model.model.named_parameters() if not n.startswith("feature"))
    budget = {"target_parameters": total, "charge": config.charge, "layout": "shared",
              "stored_parameters": int(stored.sum()), "cluster_parameters": [int(s.sum()) for s in sizes],
              "models_parameters": int(stored.sum()), "routing_parameters": routing,
              "total_parameters": int(stored.sum()) + routing["charged"],
              "cluster_bytes": [compact_bytes(stored, d_max)],
              "routing_bytes": _routing_bytes(routing, data.n_features, config.route_dim, d_max, K),
              "non_embedding_parameters": int(non_embedding), "first_order_bytes": 0}
    budget["total_bytes"] = int(sum(budget["cluster_bytes"]) + budget["routing_bytes"])
    cluster_sizes = {part: np.bincount(labels[part], minlength=K).tolist() for part in labels}
    run = IHASRun(density, d_max, config, history, widths, sizes, cluster_sizes, budget, {}, {}, search_model,
                  gates, centroids, [model], labels, data.offsets,
                  {"search": search_seconds, "retrain": retrain_seconds},
                  {"best_epoch": [result.best_epoch], "epochs": [len(result.history)]})
    return _scored(run, split)

