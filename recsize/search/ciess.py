"""CIESS: continuous input embedding size search (Qu et al., SIGIR 2023). Explained in Chapter 6.

Every user and every item owns a width d_n in [1, d_max] (its row keeps its first d_n dimensions). A
reinforcement-learning agent chooses the widths; the recommender tells it how good they were.

The MDP, per entity n (a user or an item):

* state s_n = (f_n, d_n / d_max, q_n): training frequency normalised by the side's largest, the current
  width, and the quality ratio q_n = min(eval(n | masked model) / eval(n | full model), 1);
  eval(user) = mean of Recall@k and NDCG@k for k in {5, 10, 20} on validation (6 numbers);
  eval(item) = mean eval of the item's training users; the full d_max-wide model is trained to
  convergence once;
* action: the next width d_n, from a TD3 actor (one for users, one for items; :mod:`.td3`);
* reward r_n = q_n - lambda * (d_n / d_max)^2: keep quality, pay for width.

The loop (M episodes x T iterations, paper: 30 x 10): at every iteration a *freshly initialised*
recommender with the chosen widths trains for a few epochs and is evaluated on validation; the rewards
and next states go into the replay buffers and both agents take TD3 steps. Exploration: the actor's
width plus noise (Gaussian, sigma = 6), then a random walk over integer widths (neighbours within t = 5,
steps with probability proportional to 1 / distance, walk length 5); the critic scores every visited
width and the best one is played.

The budget is applied at selection time: for each density (0.2 / 0.1 / 0.05, i.e. sparsity c = 80 / 90 /
95 %) the top-l masks by mean q among those meeting it are remembered; after the search each is retrained
from scratch to convergence, the best on validation is reported on test, and its tables are converted to
compact storage whose bytes really shrink. One search serves every budget.

Where recsize departs from or fills in the paper (stated in Chapter 6): density is measured over all
user and item rows together; entities without validation positives (or a full-model eval of 0) get
q = 1 (nothing measurable to lose); the best retrained candidate is chosen on validation, not test; a
budget that no searched mask met is served by the lowest-density mask scaled down to the budget (flagged
``projected``); the TD3 target noise is 0.2 and its clip 0.5 of the action half-range.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..budget import memory_report
from ..files import exclusive_folder, load_plain, save_plain
from .baselines import fit_to_total
from .td3 import NOISES, TD3, ReplayBuffer, exploration_noise, random_walk

TOPK_BACKBONES = ("mf", "neumf", "ngcf", "lightgcn")
EVAL_KS = (5, 10, 20)
CHECKPOINT_NAME = "ciess.pt"

# Schedules. "paper": M = 30 episodes x T = 10 iterations (paper); the epochs per iteration, l and the
# retraining settings are not given in the paper (ours). "reduced": what a 2-core CPU can afford for
# ml-100k in a few minutes per seed (Chapter 6 and benchmarks/ciess.py); patience 10, since patience 5
# stopped LightGCN runs on an early plateau (README, CIESS benchmark).
SCHEDULES = {
    "paper": dict(episodes=30, iterations=10, epochs_per_iteration=5, top_l=3, full_epochs=300,
                  retrain_epochs=300, patience=10),
    "reduced": dict(episodes=6, iterations=5, epochs_per_iteration=3, top_l=1, full_epochs=100,
                    retrain_epochs=100, patience=10),
}


@dataclass
class CIESSConfig:
    """Every setting of a CIESS search. Defaults follow the paper where it gives a value. Chapter 6."""

    budgets: tuple = (0.2, 0.1, 0.05)  # densities kept; sparsity c = 80 / 90 / 95 %
    lam: float = 0.4                   # lambda, the width penalty (paper: 0.4 on ML-1M)
    d_max: int = 64                    # full width (paper: 128)
    episodes: int = 30                 # M
    iterations: int = 10               # T
    epochs_per_iteration: int = 5      # recommender epochs per iteration
    top_l: int = 3                     # masks kept and retrained per budget
    noise: str = "gaussian"            # exploration noise: gaussian, ou or uniform
    sigma: float = 6.0                 # its standard deviation, in widths
    random_walk: bool = True
    walk_t: int = 5                    # neighbourhood of the walk
    walk_length: int = 5
    hidden: int = 256                  # actor 3-hidden-hidden-1, critics 4-hidden-hidden-1
    gamma: float = 0.99
    tau: float = 0.005
    policy_delay: int = 2
    target_noise: float = 0.2          # fractions of the action half-range (d_max - 1) / 2
    noise_clip: float = 0.5
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    agent_batch_size: int = 256
    updates_per_iteration: int = 32    # TD3 steps per side after every iteration
    buffer_size: int = 500_000
    full_epochs: int = 300             # the full-width reference model (early stopping)
    retrain_epochs: int = 300          # selective retraining (early stopping)
    patience: int = 10
    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None
    train_overrides: dict = field(default_factory=dict)  # recommender trainer settings (lr, batch_size)

    def __post_init__(self):
        if isinstance(self.budgets, (int, float)):
            self.budgets = (self.budgets,)
        self.budgets = tuple(round(float(b), 12) for b in self.budgets)  # 1 - 0.8 -> 0.2, not 0.19999999999999996
        if not self.budgets:
            raise ValueError("budgets is empty: give at least one density, e.g. (0.2, 0.1, 0.05) for "
                             "sparsity c = 80 / 90 / 95 %")
        for b in self.budgets:
            if not 0 < b < 1:
                raise ValueError(f"a budget is a kept fraction (density) strictly between 0 and 1, got {b:g}; "
                                 "a sparsity c converts as density = 1 - c")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"budgets repeat a value: {self.budgets}")
        if not self.lam >= 0:
            raise ValueError(f"lambda (the width penalty) must be >= 0, got {self.lam}")
        for name in ("d_max", "episodes", "iterations", "epochs_per_iteration", "top_l", "hidden", "walk_t",
                     "policy_delay", "agent_batch_size", "buffer_size", "full_epochs", "retrain_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("walk_length", "updates_per_iteration", "patience"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.noise not in NOISES:
            raise ValueError(f"unknown exploration noise {self.noise!r}: choose one of {', '.join(NOISES)}")
        if self.sigma < 0:
            raise ValueError(f"sigma (exploration noise) must be >= 0, got {self.sigma}")
        if min(self.budgets) * self.d_max < 1:
            raise ValueError(f"density {min(self.budgets):g} keeps less than one dimension per row at "
                             f"d_max = {self.d_max}; widths are at least 1: use a density >= {1 / self.d_max:.4g}")

    @classmethod
    def schedule(cls, name: str, **overrides) -> "CIESSConfig":
        """A config with the ``"paper"`` or ``"reduced"`` schedule (:data:`SCHEDULES`), then
        ``overrides``. Explained in Chapter 6."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
        return cls(**{**SCHEDULES[name], **overrides})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


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


def reward(q, sizes, d_max: int, lam: float) -> np.ndarray:
    """r_n = q_n - lambda * (d_n / d_max)^2. Explained in Chapter 6."""
    return np.asarray(q, np.float64) - lam * (np.asarray(sizes, np.float64) / d_max) ** 2


def make_state(freq, sizes, q, d_max: int) -> np.ndarray:
    """States (N, 3): (normalised frequency f_n, d_n / d_max, q_n). Explained in Chapter 6."""
    return np.stack([np.asarray(freq, np.float64), np.asarray(sizes, np.float64) / d_max,
                     np.asarray(q, np.float64)], 1).astype(np.float32)


def normalised_frequency(counts) -> np.ndarray:
    """Training frequencies divided by the side's largest (all zeros stay zero). Chapter 6."""
    counts = np.asarray(counts, np.float64)
    top = counts.max(initial=0.0)
    return counts / top if top > 0 else counts


def combined_density(user_sizes, item_sizes, d_max: int) -> float:
    """Kept fraction over all user and item rows together: (sum d_u + sum d_i) / ((|U| + |I|) d_max).
    Explained in Chapter 6."""
    return (int(np.sum(user_sizes)) + int(np.sum(item_sizes))) / ((len(user_sizes) + len(item_sizes)) * d_max)


def update_candidates(candidates: list, candidate: dict, budget: float, top_l: int) -> list:
    """Keep the top-l masks by mean q among those meeting ``budget`` (density <= budget): ``candidate``
    is a dict with ``density`` and ``mean_q`` (ties: the earlier mask stays first). Explained in Chapter 6."""
    if candidate["density"] > budget + 1e-12:
        return candidates
    kept = sorted([*candidates, candidate], key=lambda c: -c["mean_q"])  # stable: earlier first on ties
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
    entity's quality ratio against a full-width reference. NeuMF's GMF and MLP tables of a side share
    that side's widths. Explained in Chapter 6."""

    def __init__(self, backbone: str, split, d_max: int, train_overrides: dict | None = None,
                 model_kwargs: dict | None = None, device: str = "cpu"):
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
        self.user_freq = normalised_frequency(split.user_activity())
        self.item_freq = normalised_frequency(split.item_popularity())
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

    def fit(self, user_sizes, item_sizes, config):
        """Seed, build the backbone with masked tables of the given widths (None: full width), train."""
        from ..backbones import build_backbone
        from ..embedding import masked_factory
        from ..train import seed_everything, train
        seed_everything(config.seed)
        sizes = None if user_sizes is None else self.sizes_by_role(user_sizes, item_sizes)
        factory = masked_factory(sizes, self.d_max, init=self.init)
        model = build_backbone(self.backbone, self.split, self.d_max, embedding=factory, **self.model_kwargs)
        return train(model, self.split, config)

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

    def step(self, user_sizes, item_sizes, epochs: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """A fresh model with these widths, ``epochs`` epochs, evaluated on validation: (q per user,
        q per item, mean validation metrics). Explained in Chapter 6."""
        if self.full_user_eval is None:
            raise ValueError("train the full-width reference first (CIESSEnvironment.reference)")
        result = self.fit(user_sizes, item_sizes, self.config(epochs, epochs, seed, eval_every=epochs, test=False))
        users, items, valid = self.entity_eval(result.model)
        return quality_ratio(users, self.full_user_eval), quality_ratio(items, self.full_item_eval), valid


# ---------------------------------------------------------------------------------------------------
# The search (Chapter 6)
# ---------------------------------------------------------------------------------------------------

@dataclass
class CIESSResult:
    """What :func:`run_ciess` produced: the search history (one row per iteration), the reference
    model's metrics, and per budget the retrained candidates and the best one (widths, validation and
    test metrics, bytes of every storage form). Explained in Chapter 6."""

    backbone: str
    config: dict
    reference: dict
    history: list
    budgets: dict
    last_sizes: dict
    seconds: dict

    def to_dict(self) -> dict:
        def clean(x):
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, np.ndarray):
                return clean(x.tolist())
            if isinstance(x, (np.floating, float)):
                return None if not np.isfinite(x) else float(x)
            if isinstance(x, np.integer):
                return int(x)
            return x
        return clean({"method": "ciess", "backbone": self.backbone, "config": self.config,
                      "reference": {k: v for k, v in self.reference.items() if not k.endswith("_eval")},
                      "history": self.history, "budgets": self.budgets, "last_sizes": self.last_sizes,
                      "seconds": self.seconds})


def read_checkpoint(path) -> dict:
    """Read a CIESS checkpoint (plain tensors and numbers, loaded with ``weights_only=True``); a
    truncated or foreign file raises ``ValueError`` naming it and the fix. Explained in Chapter 6."""
    fix = "delete it to start the search over, or give another --checkpoint-dir"
    saved = load_plain(path, "CIESS checkpoint", fix)
    if not isinstance(saved, dict) or not {"identity", "state", "agents", "buffers", "rng"} <= set(saved):
        raise ValueError(f"{path} is not a CIESS checkpoint (keys missing); {fix}")
    return saved


class CIESS:
    """A resumable CIESS search: ``CIESS(backbone, split, config, checkpoint_dir).run()``.

    With a ``checkpoint_dir`` the whole search state (both agents with their optimisers and replay
    buffers, the random generator, the loop position, the remembered masks, the history and the retrained
    candidates) is written atomically after the reference model, after every iteration and after every
    retrained candidate; ``run(resume=True)`` continues from it, losing at most the step in flight, and
    ends with the same result as an uninterrupted run. ``max_iterations`` stops a call early (the next
    call resumes). ``reference`` reuses the full-width reference of an earlier search on the same split,
    backbone and seed (``earlier.state["reference"]``), e.g. for an ablation. Explained in Chapter 6.
    """

    def __init__(self, backbone: str, split, config: CIESSConfig | None = None, checkpoint_dir=None,
                 model_kwargs: dict | None = None, reference: dict | None = None):
        self.config = config or CIESSConfig()
        c = self.config
        self.env = CIESSEnvironment(backbone, split, c.d_max, c.train_overrides, model_kwargs, c.device)
        self.backbone, self.split = self.env.backbone, split
        self.checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        torch.manual_seed(c.seed)
        agent_kw = dict(hidden=c.hidden, gamma=c.gamma, tau=c.tau, policy_delay=c.policy_delay,
                        target_noise=c.target_noise, noise_clip=c.noise_clip, actor_lr=c.actor_lr,
                        critic_lr=c.critic_lr)
        self.agents = {"user": TD3(c.d_max, **agent_kw), "item": TD3(c.d_max, **agent_kw)}
        self.buffers = {side: ReplayBuffer(c.buffer_size) for side in ("user", "item")}
        self.rng = np.random.default_rng(c.seed)
        self.freq = {"user": self.env.user_freq, "item": self.env.item_freq}
        n = {"user": split.n_users, "item": split.n_items}
        self.state = {"done": 0, "reference": None, "history": [], "seconds": {"reference": 0.0, "search": 0.0,
                      "retrain": 0.0}, "candidates": {b: [] for b in c.budgets}, "lowest": None,
                      "sizes": {s: np.full(n[s], c.d_max, np.int64) for s in n},
                      "q": {s: np.ones(n[s]) for s in n}, "ou": {s: None for s in n}, "retrained": {}}
        if reference is not None:
            self.state["reference"] = reference
            self.env.full_user_eval, self.env.full_item_eval = reference["user_eval"], reference["item_eval"]

    # -- checkpointing ------------------------------------------------------------------------------
    def _identity(self) -> dict:
        keep = {k: v for k, v in self.config.to_dict().items() if k not in ("progress", "device")}
        return {"backbone": self.backbone, "config": keep, "n_users": self.split.n_users,
                "n_items": self.split.n_items, "train_nnz": int(self.split.train.nnz),
                "valid_nnz": int(self.split.valid.nnz)}

    def save(self) -> None:
        """Write the whole search state atomically (temporary file, then rename)."""
        if self.checkpoint is None:
            return
        save_plain({"identity": self._identity(), "state": self.state,
                     "agents": {s: a.state_dict() for s, a in self.agents.items()},
                     "buffers": {s: b.state_dict() for s, b in self.buffers.items()},
                     "rng": self.rng.bit_generator.state}, self.checkpoint)

    def load(self) -> bool:
        """Restore the state from the checkpoint if there is one; False if there is none."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        saved = read_checkpoint(self.checkpoint)
        if saved["identity"] != self._identity():
            raise ValueError(f"the checkpoint {self.checkpoint} belongs to a different search (backbone, "
                             "data or settings differ): use another --checkpoint-dir, or delete it to start over")
        self.state = saved["state"]
        for side in ("user", "item"):
            self.agents[side].load_state_dict(saved["agents"][side])
            self.buffers[side].load_state_dict(saved["buffers"][side])
        self.rng.bit_generator.state = saved["rng"]
        ref = self.state["reference"]
        if ref is not None:
            self.env.full_user_eval, self.env.full_item_eval = ref["user_eval"], ref["item_eval"]
        return True

    # -- one iteration ------------------------------------------------------------------------------
    def choose_widths(self, side: str, states: np.ndarray) -> np.ndarray:
        """Exploration for one side: actor + noise, then (with the random walk) the critic's best of the
        visited widths; without it the noisy width rounded. Explained in Chapter 6."""
        c, agent = self.config, self.agents[side]
        noise, self.state["ou"][side] = exploration_noise(c.noise, c.sigma, len(states), self.rng,
                                                         self.state["ou"][side])
        start = agent.act(states) + noise
        if not c.random_walk:
            return np.clip(np.rint(start), 1, c.d_max).astype(np.int64)
        visited = random_walk(start, c.d_max, self.rng, c.walk_t, c.walk_length)
        best = agent.score(states, visited).argmax(1)
        return visited[np.arange(len(visited)), best]

    def iteration(self, g: int) -> dict:
        c, st = self.config, self.state
        episode, it = divmod(g, c.iterations)
        if it == 0:  # a new episode starts from full widths and full quality
            for side in ("user", "item"):
                st["sizes"][side] = np.full(len(st["sizes"][side]), c.d_max, np.int64)
                st["q"][side] = np.ones(len(st["q"][side]))
                st["ou"][side] = None
        states = {s: make_state(self.freq[s], st["sizes"][s], st["q"][s], c.d_max) for s in ("user", "item")}
        actions = {s: self.choose_widths(s, states[s]) for s in ("user", "item")}
        q_user, q_item, valid = self.env.step(actions["user"], actions["item"], c.epochs_per_iteration,
                                              seed=c.seed * 1_000_003 + g)
        q = {"user": q_user, "item": q_item}
        done = float(it == c.iterations - 1)
        rewards = {}
        for side in ("user", "item"):
            rewards[side] = reward(q[side], actions[side], c.d_max, c.lam)
            nxt = make_state(self.freq[side], actions[side], q[side], c.d_max)
            self.buffers[side].add(states[side], actions[side], rewards[side], nxt, done)
            if len(self.buffers[side]) >= c.agent_batch_size:
                for _ in range(c.updates_per_iteration):
                    self.agents[side].update(self.buffers[side], c.agent_batch_size, self.rng)
            st["sizes"][side], st["q"][side] = actions[side], q[side]
        all_q = np.concatenate([q_user, q_item])
        dens = combined_density(actions["user"], actions["item"], c.d_max)
        candidate = {"episode": episode, "iteration": it, "density": dens, "mean_q": float(all_q.mean()),
                     "user": actions["user"].copy(), "item": actions["item"].copy()}
        for b in c.budgets:
            st["candidates"][b] = update_candidates(st["candidates"][b], candidate, b, c.top_l)
        low = st["lowest"]
        if low is None or (dens, -candidate["mean_q"]) < (low["density"], -low["mean_q"]):
            st["lowest"] = candidate
        return {"episode": episode, "iteration": it, "density": dens, "mean_q": float(all_q.mean()),
                "reward": float(np.concatenate([rewards["user"], rewards["item"]]).mean()),
                "reward_user": float(rewards["user"].mean()), "reward_item": float(rewards["item"].mean()),
                "mean_width_user": float(actions["user"].mean()), "mean_width_item": float(actions["item"].mean()),
                "valid_recall@20": valid["recall@20"], "valid_ndcg@20": valid["ndcg@20"]}

    # -- retraining ---------------------------------------------------------------------------------
    def retrain(self, user_sizes, item_sizes) -> dict:
        """Retrain one mask from scratch to convergence (early stopping on validation NDCG@20), convert
        its tables to compact storage and measure test metrics and bytes. Explained in Chapter 6."""
        from ..embedding import compact_tables
        from ..evaluate import evaluate_topk
        c = self.config
        result = self.env.fit(user_sizes, item_sizes, self.env.config(c.retrain_epochs, c.patience, c.seed))
        model = result.model
        roles = list(model.embedding_tables())
        sizes = self.env.sizes_by_role(user_sizes, item_sizes)
        compact_tables(model)
        memory = memory_report({r: sizes[r] for r in roles}, c.d_max)
        for r in roles:
            memory[r]["compact_measured"] = model.embedding_tables()[r].num_bytes()
        return {"valid": result.valid, "test": result.test, "best_epoch": result.best_epoch,
                "seconds": result.seconds, "test_compact": evaluate_topk(model, self.split, "test"),
                "memory": memory, "parameters": memory["total"]["parameters"],
                "compact_bytes": memory["total"]["compact"], "dense_bytes": memory["total"]["dense"]}

    def _budget_masks(self, b: float) -> list[dict]:
        found = self.state["candidates"][b]
        if found:
            return [{**m, "projected": False} for m in found]
        low = self.state["lowest"]
        u, i = project_to_budget(low["user"], low["item"], b, self.config.d_max)
        return [{**low, "user": u, "item": i, "projected": True,
                 "density": combined_density(u, i, self.config.d_max)}]

    # -- the whole run ------------------------------------------------------------------------------
    def run(self, resume: bool = False, max_iterations: int | None = None) -> CIESSResult | None:
        """Search, then retrain; returns the result, or None when ``max_iterations`` stopped the search
        early (call again with ``resume=True``). With a checkpoint folder, the folder is locked for the
        run: a second process on it is refused. Explained in Chapter 6."""
        if self.checkpoint is None:
            return self._run(resume, max_iterations)
        with exclusive_folder(self.checkpoint.parent, "--checkpoint-dir"):
            return self._run(resume, max_iterations)

    def _run(self, resume: bool, max_iterations: int | None) -> CIESSResult | None:
        from ..train import show_progress
        c, st = self.config, self.state
        if resume:
            self.load()
            st = self.state
        elif self.checkpoint is not None and self.checkpoint.exists():
            raise ValueError(f"{self.checkpoint} exists: pass resume=True (--resume) to continue that search, "
                             "or use another checkpoint directory")
        if st["reference"] is None:
            t0 = time.perf_counter()
            st["reference"] = self.env.reference(c.full_epochs, c.patience, c.seed)
            st["seconds"]["reference"] = time.perf_counter() - t0
            self.save()
        total = c.episodes * c.iterations
        bar = tqdm(total=total, initial=st["done"], desc="CIESS search", unit="it",
                   disable=not show_progress(c.progress), leave=False)
        ran = 0
        while st["done"] < total:
            if max_iterations is not None and ran >= max_iterations:
                bar.close()
                return None
            t0 = time.perf_counter()
            row = self.iteration(st["done"])
            row["seconds"] = time.perf_counter() - t0
            st["history"].append(row)
            st["seconds"]["search"] += row["seconds"]
            st["done"] += 1
            ran += 1
            self.save()
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", density=f"{row['density']:.3f}")
        bar.close()
        budgets = {}
        for b in c.budgets:
            runs = []
            for rank, mask in enumerate(self._budget_masks(b)):
                key = f"{b}/{rank}"
                if key not in st["retrained"]:
                    t0 = time.perf_counter()
                    st["retrained"][key] = self.retrain(mask["user"], mask["item"])
                    st["seconds"]["retrain"] += time.perf_counter() - t0
                    self.save()
                runs.append({"rank": rank, "episode": mask["episode"], "iteration": mask["iteration"],
                             "search_mean_q": mask["mean_q"], "density": mask["density"],
                             "projected": mask["projected"], "user_sizes": np.asarray(mask["user"]).tolist(),
                             "item_sizes": np.asarray(mask["item"]).tolist(), **st["retrained"][key]})
            best = max(runs, key=lambda r: r["valid"]["ndcg@20"])  # chosen on validation, reported on test
            budgets[str(b)] = {"density": b, "sparsity": 1 - b, "best": best, "candidates": runs}
        seconds = {**st["seconds"]}
        seconds["total"] = sum(seconds.values())
        ref = st["reference"]
        return CIESSResult(self.backbone, c.to_dict(), ref, st["history"], budgets,
                           {s: st["sizes"][s].tolist() for s in ("user", "item")}, seconds)


def run_ciess(backbone: str, split, config: CIESSConfig | None = None, checkpoint_dir=None, resume: bool = False,
              model_kwargs: dict | None = None) -> CIESSResult:
    """Run a whole CIESS search with retraining: the one call the chapter and the CLI use. Explained in
    Chapter 6."""
    return CIESS(backbone, split, config, checkpoint_dir, model_kwargs).run(resume=resume)
