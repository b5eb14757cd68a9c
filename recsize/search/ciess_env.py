"""CIESS's environment: the state, quality and reward of every entity, and the recommender trained with the
chosen widths that measures them (Qu et al., SIGIR 2023). Explained in Chapter 6.

The search itself (the agents, the loop, the selection of masks and their retraining) is
:mod:`recsize.search.ciess`, which imports what it uses from here; Chapter 6 imports ``make_state``,
``normalised_frequency`` and ``reward`` from :mod:`recsize.search.ciess` (imported there from this module).
The MDP (state, quality ratio, reward forms) and the authors' code each setting follows are described in
:mod:`recsize.search.ciess`; where recsize departs is the one list :data:`recsize.search.departures.CIESS`.
"""
from __future__ import annotations

import numpy as np
import torch

from .baselines import fit_to_total

TOPK_BACKBONES = ("mf", "neumf", "ngcf", "lightgcn")
EVAL_KS = (5, 10, 20)
REWARDS = ("code", "paper")
STATES = ("official", "recsize")


# ---------------------------------------------------------------------------------------------------
# State, quality and reward, vectorised (Chapter 6)
# ---------------------------------------------------------------------------------------------------

def user_quality(per_user: dict, ks=EVAL_KS) -> np.ndarray:
    """eval(user): the mean of Recall@k and NDCG@k over ``ks`` (6 numbers at k = 5, 10, 20) from
    ``evaluate_topk(..., per_user=True)["per_user"]``; NaN for users without validation positives.
    Explained in Chapter 6."""
    return np.mean([per_user[f"{m}@{k}"] for m in ("recall", "ndcg") for k in ks], axis=0)


def item_quality(user_eval: np.ndarray, train) -> np.ndarray:
    """eval(item): the mean eval of the item's training users (users with a defined eval only; NaN for
    items without any), one sparse product. Explained in Chapter 6."""
    defined = np.isfinite(user_eval)
    total = np.asarray(train.T @ np.where(defined, user_eval, 0.0)).ravel()
    count = np.asarray(train.T @ defined.astype(np.float64)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def quality_ratio(masked: np.ndarray, full: np.ndarray) -> np.ndarray:
    """q_n = min(masked_n / full_n, 1); q_n = 1 where the full model's eval is 0 or undefined (nothing
    measurable to lose). Explained in Chapter 6."""
    masked, full = np.asarray(masked, np.float64), np.asarray(full, np.float64)
    ok = np.isfinite(full) & (full > 0)
    ratio = np.nan_to_num(masked, nan=0.0) / np.where(ok, full, 1.0)
    return np.where(ok, np.minimum(ratio, 1.0), 1.0)


def reward(quality, sizes, d_max: int, lam: float, form: str = "paper") -> np.ndarray:
    """The reward per entity. ``"paper"``: r_n = q_n - lambda (d_n / d_max)^2 with ``quality`` the ratio
    q; ``"code"`` (``RecSysEnv.compute_reward``): r_n = eval_n - lambda ((d_n - 1) / d_max)^2 with
    ``quality`` the raw eval (undefined counts as 0, as the code's metrics give 0 without positives).
    Explained in Chapter 6."""
    sizes = np.asarray(sizes, np.float64)
    quality = np.asarray(quality, np.float64)
    if form == "paper":
        return quality - lam * (sizes / d_max) ** 2
    if form == "code":
        return np.nan_to_num(quality, nan=0.0) - lam * ((sizes - 1) / d_max) ** 2
    raise ValueError(f"unknown reward {form!r}: choose one of {', '.join(REWARDS)}")


def make_state(freq, sizes, q, d_max: int, form: str = "official") -> np.ndarray:
    """States (N, 3) from the side's normalised frequencies (:func:`normalised_frequency`, same
    ``form``), widths and quality ratios. ``"official"`` (``RecSysEnv.get_state``): (f, (d - 1) /
    (d_max - 1) * 2 - 1, clip(2 q - 1, -1, 1)), every feature in [-1, 1]; ``"recsize"``:
    (f, d / d_max, q). Explained in Chapter 6."""
    freq, sizes, q = (np.asarray(x, np.float64) for x in (freq, sizes, q))
    if form == "official":
        width = (sizes - 1) / max(d_max - 1, 1) * 2 - 1
        quality = np.clip(2 * q - 1, -1.0, 1.0)
    elif form == "recsize":
        width, quality = sizes / d_max, q
    else:
        raise ValueError(f"unknown state {form!r}: choose one of {', '.join(STATES)}")
    return np.stack([freq, width, quality], 1).astype(np.float32)


def normalised_frequency(counts, form: str = "official") -> np.ndarray:
    """Training frequencies of one side. ``"official"``: min-max scaled to [-1, 1] (all equal: 0);
    ``"recsize"``: divided by the side's largest (all zeros stay zero). Chapter 6."""
    counts = np.asarray(counts, np.float64)
    if form == "official":
        lo, hi = counts.min(initial=np.inf), counts.max(initial=-np.inf)
        if not hi > lo:
            return np.zeros_like(counts)
        return (counts - lo) / (hi - lo) * 2 - 1
    if form == "recsize":
        top = counts.max(initial=0.0)
        return counts / top if top > 0 else counts
    raise ValueError(f"unknown state {form!r}: choose one of {', '.join(STATES)}")


def combined_density(user_sizes, item_sizes, d_max: int) -> float:
    """Kept fraction over all user and item rows together: (sum d_u + sum d_i) / ((|U| + |I|) d_max).
    Explained in Chapter 6."""
    return (int(np.sum(user_sizes)) + int(np.sum(item_sizes))) / ((len(user_sizes) + len(item_sizes)) * d_max)


def budget_bands(budgets) -> dict:
    """The official selection's density band of every budget: [next smaller budget, budget), the
    smallest from 0 (``find_bests``: a mask belongs to the smallest budget it is under). Chapter 6."""
    ordered = sorted(budgets)
    return {b: (ordered[k - 1] if k else 0.0, b) for k, b in enumerate(ordered)}


def update_candidates(candidates: list, candidate: dict, budget: float, top_l: int, key: str = "mean_q",
                      lower: float | None = None) -> list:
    """Keep the top-l masks by ``candidate[key]`` among those meeting ``budget``: density <= budget
    (``lower`` None, recsize's selection) or within the band lower <= density < budget (the official
    selection, :func:`budget_bands`). Ties: the earlier mask stays first. Explained in Chapter 6."""
    d = candidate["density"]
    if lower is None:
        if d > budget + 1e-12:
            return candidates
    elif not lower <= d < budget:
        return candidates
    score = candidate[key]
    if score is None or not np.isfinite(score):
        return candidates
    kept = sorted([*candidates, candidate], key=lambda c: -c[key])  # stable: earlier first on ties
    return kept[:top_l]


def project_to_budget(user_sizes, item_sizes, budget: float, d_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale a mask down to a budget (used only when no searched mask met it): widths proportional to
    the mask's, summing over users and items to round(budget * rows * d_max). Explained in Chapter 6."""
    from ..budget import target_parameters
    nu = len(user_sizes)
    widths = np.concatenate([user_sizes, item_sizes]).astype(np.float64)
    total = target_parameters(budget, len(widths), d_max)
    scaled = fit_to_total(widths, total, d_max)
    return scaled[:nu], scaled[nu:]


# ---------------------------------------------------------------------------------------------------
# The environment: a recommender trained with the chosen widths (Chapter 6)
# ---------------------------------------------------------------------------------------------------

class CIESSEnvironment:
    """Trains a freshly initialised ``backbone`` with given user and item widths and measures every
    entity's quality against a full-width reference. NeuMF's GMF and MLP tables of a side share that
    side's widths. ``state`` picks the frequency feature's form (:func:`normalised_frequency`).
    Explained in Chapter 6."""

    def __init__(self, backbone: str, split, d_max: int, train_overrides: dict | None = None,
                 model_kwargs: dict | None = None, device: str = "cpu", state: str = "official"):
        from ..backbones import DEFAULTS, defaults_for
        name = str(backbone).lower()
        if name not in TOPK_BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r} for CIESS: choose one of {', '.join(TOPK_BACKBONES)}")
        if hasattr(split, "feature_counts") or not hasattr(split, "user_activity"):
            raise ValueError("CIESS searches user and item widths: give it a top-k split, not a CTR split")
        self.backbone, self.split, self.d_max, self.device = name, split, int(d_max), device
        model_defaults, train_defaults = defaults_for(name)
        self.model_kwargs = {**model_defaults, **(model_kwargs or {})}
        self.train_kwargs = {**train_defaults, **(train_overrides or {})}
        self.init = DEFAULTS[name]["init"]
        self.user_freq = normalised_frequency(split.user_activity(), state)
        self.item_freq = normalised_frequency(split.item_popularity(), state)
        self.full_user_eval = self.full_item_eval = None

    def sizes_by_role(self, user_sizes, item_sizes) -> dict:
        sizes = {"user": np.asarray(user_sizes, np.int64), "item": np.asarray(item_sizes, np.int64)}
        if self.backbone == "neumf":
            sizes.update(user_mlp=sizes["user"], item_mlp=sizes["item"])
        return sizes

    def config(self, epochs: int, patience: int, seed: int, eval_every: int = 1, test: bool = True):
        from ..train import TrainConfig
        return TrainConfig(epochs=epochs, patience=patience, seed=seed, eval_every=eval_every, test=test,
                           device=self.device, progress=False, **self.train_kwargs)

    def build(self, user_sizes, item_sizes, seed: int):
        """Seed, then build the backbone with masked tables of the given widths (None: full width)."""
        from ..backbones import build_backbone
        from ..embedding import masked_factory
        from ..train import seed_everything
        seed_everything(seed)
        sizes = None if user_sizes is None else self.sizes_by_role(user_sizes, item_sizes)
        factory = masked_factory(sizes, self.d_max, init=self.init)
        return build_backbone(self.backbone, self.split, self.d_max, embedding=factory, **self.model_kwargs)

    def fit(self, user_sizes, item_sizes, config):
        """Seed, build the backbone with masked tables of the given widths (None: full width), train."""
        from ..train import train
        return train(self.build(user_sizes, item_sizes, config.seed), self.split, config)

    def fit_batches(self, user_sizes, item_sizes, batches: int, batch_size: int, lr: float, decay: float,
                    decay_every: int, min_lr: float, seed: int):
        """The authors' per-iteration training (``RecSysEnv.train_n_batches``): ``batches`` Adam steps,
        each on ``batch_size`` users drawn uniformly (with replacement when there are fewer users than
        that), one training positive and one uniform negative each; the lr starts at ``lr`` and is
        multiplied by ``decay`` every ``decay_every`` batches, never below ``min_lr`` (the final lr is
        kept as ``last_lr``). Returns the model. Explained in Chapter 6."""
        from ..data import BPRSampler
        from ..train import resolve_device
        device = resolve_device(self.device)
        model = self.build(user_sizes, item_sizes, seed).to(device)
        train = self.split.train.tocsr()
        degree = np.diff(train.indptr)
        active = np.flatnonzero(degree > 0)
        sampler = BPRSampler(train, seed=seed)
        rng = np.random.default_rng(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr,
                                     weight_decay=self.train_kwargs.get("weight_decay", 0.0))
        model.train()
        for b in range(1, batches + 1):
            users = active[rng.choice(len(active), batch_size, replace=len(active) < batch_size)]
            pos = train.indices[train.indptr[users] + (rng.random(batch_size) * degree[users]).astype(np.int64)]
            neg = sampler.negatives(users)
            loss = model.loss(*(torch.from_numpy(x.astype(np.int64)).to(device) for x in (users, pos, neg)))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at batch {b}/{batches} of the official "
                                         f"per-iteration training: lower iteration_lr (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if b % decay_every == 0:
                for group in optimizer.param_groups:
                    group["lr"] = max(min_lr, group["lr"] * decay)
        self.last_lr = optimizer.param_groups[0]["lr"]
        model.eval()
        return model

    def entity_eval(self, model) -> tuple[np.ndarray, np.ndarray, dict]:
        """(eval per user, eval per item, mean validation metrics) of a trained model."""
        from ..evaluate import evaluate_topk
        valid = evaluate_topk(model, self.split, "valid", ks=EVAL_KS, metrics=("recall", "ndcg"), per_user=True)
        users = user_quality(valid.pop("per_user"))
        return users, item_quality(users, self.split.train), valid

    def reference(self, epochs: int, patience: int, seed: int) -> dict:
        """Train the full-width model to convergence once: the denominators of q. Explained in Chapter 6."""
        result = self.fit(None, None, self.config(epochs, patience, seed))
        users, items, _ = self.entity_eval(result.model)
        self.full_user_eval, self.full_item_eval = users, items
        return {"user_eval": users, "item_eval": items, "valid": result.valid, "test": result.test,
                "best_epoch": result.best_epoch, "seconds": result.seconds}

    def step(self, user_sizes, item_sizes, training: dict, seed: int) -> dict:
        """A fresh model with these widths, trained as ``training`` says
        (:meth:`~recsize.search.ciess.CIESSConfig.iteration_training`), evaluated on validation: ``q_user``,
        ``q_item`` (ratios to the reference), ``user_eval``, ``item_eval`` (raw) and ``valid`` (mean metrics).
        Explained in Chapter 6."""
        if self.full_user_eval is None:
            raise ValueError("train the full-width reference first (CIESSEnvironment.reference)")
        if training["training"] == "epochs":
            epochs = training["epochs"]
            model = self.fit(user_sizes, item_sizes,
                             self.config(epochs, epochs, seed, eval_every=epochs, test=False)).model
        else:
            model = self.fit_batches(user_sizes, item_sizes, training["batches"], training["batch_size"],
                                     training["lr"], training["decay"], training["decay_every"],
                                     training["min_lr"], seed)
        users, items, valid = self.entity_eval(model)
        return {"q_user": quality_ratio(users, self.full_user_eval),
                "q_item": quality_ratio(items, self.full_item_eval),
                "user_eval": users, "item_eval": items, "valid": valid}
