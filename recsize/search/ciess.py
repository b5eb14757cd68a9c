"""CIESS: continuous input embedding size search (Qu et al., SIGIR 2023). Explained in Chapter 6.

Every user and every item owns a width d_n in [1, d_max] (its row keeps its first d_n dimensions). A
reinforcement-learning agent chooses the widths; the recommender tells it how good they were.

The MDP, per entity n (a user or an item):

* state s_n = (f_n, d_n, q_n): training frequency, current width and the quality ratio
  q_n = min(eval(n | masked model) / eval(n | full model), 1); eval(user) = mean of Recall@k and NDCG@k
  for k in {5, 10, 20} on validation (6 numbers); eval(item) = mean eval of the item's training users;
  the full d_max-wide model is trained to convergence once;
* action: the next width d_n, from a TD3 actor (one for users, one for items; :mod:`.td3`);
* reward: keep quality, pay for width (two forms, below).

The loop (M episodes x T iterations, paper: 30 x 10): at every iteration a *freshly initialised*
recommender with the chosen widths is trained and evaluated on validation; the rewards and next states
go into the replay buffers and both agents take TD3 steps. Exploration: the actor's width, a random walk
over integer widths (neighbours within t = 5, steps with probability proportional to 1 / distance, walk
length 5), the critic's best visited width, and Gaussian noise (sigma = 6). The budget is applied at
selection time; after the search each selected mask is retrained from scratch to convergence, the best
on validation is reported on test, and its tables are converted to compact storage whose bytes really
shrink. One search serves every budget.

**Matching the authors' code** (``yorkequ98/CIESS``; issue 16). Each design point is a named setting of
:class:`CIESSConfig` whose default is the authors' code wherever the paper is silent or agrees with it;
the other value keeps recsize's earlier choice:

* ``exploration``: ``"official"`` (``CIESS.py``, ``train_ddpg`` / ``select_actions``) draws ONE noise
  scalar per iteration, shared by every user and every item (the code passes the same value to both
  sides), and adds it AFTER the critic has picked among the walk's widths, which start from the actor's
  output; ``"per-entity"`` adds an independent draw to every entity's actor width before the walk;
* ``rescale``: the authors' widths assume d_max = 128; with ``rescale`` sigma, the walk's t and the TD3
  target noise and clip are multiplied by d_max / 128 (sigma 3, t 3 at d_max = 64);
* ``training``: ``"official"`` (``RecSysEnv.py``) trains each iteration's recommender for a fixed
  number of batches of 10,000 users (one positive and one negative each) with Adam at lr 0.03 decayed
  x0.9 every ``lr_decay_every`` batches down to ``min_lr`` (LightGCN 2,000 / 200 / 1e-3, NGCF 3,000 /
  100 / 1e-3, NeuMF 1,500 / 50 / 1e-4; MF, absent from the code, takes LightGCN's);
  ``"epochs"`` runs recsize's trainer for ``epochs_per_iteration`` epochs (cheap);
* ``reward``: ``"code"`` (``RecSysEnv.compute_reward``, ``main``) is raw quality minus
  lambda ((d - 1) / d_max)^2 with lambda = 0.01; ``"paper"`` is q - lambda (d / d_max)^2 with
  lambda = 0.4 (ML-1M). Here paper and code disagree; the default is ``"code"`` because it is what the
  authors ran to produce their masks (the ratio q appears in the code only in the state);
* ``state``: ``"official"`` (``RecSysEnv.get_state``, ``Buffer.normalise_actions``) maps every
  feature to [-1, 1]: frequency min-max scaled, (d - 1) / (d_max - 1), 2 q - 1 (0 at an episode's start,
  where the code's qualities are reset to zero), and the width fed to the critic likewise;
  ``"recsize"`` uses (f / f_max, d / d_max, q), q = 1 at an episode's start, and d / d_max;
* ``pace``: the TD3 settings of :func:`.td3.pace_settings` (``"official"``: ``Buffer.py``, one step of
  4,096 per iteration; ``"recsize"``: 32 steps of 256);
* ``selection``: ``"official"`` (``main``, ``find_bests``) keeps per budget the top-l masks by mean raw
  user quality among those whose density lies in the budget's own band [next smaller budget, budget)
  (the smallest budget's band starts at 0); ``"ndcg"`` uses the same bands ranked by the iteration's
  validation NDCG@20; ``"recsize"`` keeps the top-l by mean q over users and items anywhere at or under
  the budget.

Every design point, with the authors' file it was read in and whether recsize departs there (the
reference model, retraining without the validation split, the backbones' initialisation, L2 and NeuMF's
loss, and more), is the one list :data:`recsize.search.departures.CIESS`, rendered as Chapter 6.7's
table.

The environment (state, quality and reward per entity, and the recommender trained with the chosen widths,
:class:`~recsize.search.ciess_env.CIESSEnvironment`) is :mod:`recsize.search.ciess_env`; ``make_state``,
``normalised_frequency`` and ``reward``, which Chapter 6 imports from this module, are imported here from there.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..budget import memory_report
from ..files import exclusive_folder, load_plain, save_plain
from .ciess_env import (REWARDS, STATES, CIESSEnvironment, budget_bands, combined_density, make_state,
                        project_to_budget, reward, update_candidates)
from .ciess_env import normalised_frequency  # noqa: F401  (Chapter 6 imports it from here)
from .td3 import (NOISES, OFFICIAL_D_MAX, PACES, TD3, ReplayBuffer, exploration_noise, pace_settings,
                  random_walk)

CHECKPOINT_NAME = "ciess.pt"

EXPLORATIONS = ("official", "per-entity")
TRAININGS = ("official", "epochs")
SELECTIONS = ("official", "ndcg", "recsize")
DEFAULT_LAMBDA = {"code": 0.01, "paper": 0.4}  # main sets 0.01; the paper's best on ML-1M is 0.4
# RecSysEnv.py: (batches per iteration, lr decay every so many batches, lr floor); lr starts at 0.03
OFFICIAL_TRAINING = {"lightgcn": (2000, 200, 1e-3), "ngcf": (3000, 100, 1e-3), "neumf": (1500, 50, 1e-4),
                     "mf": (2000, 200, 1e-3)}
BUFFER_ITERATIONS = 100  # Buffer.py: a side's buffer holds 100 iterations' transitions

# Schedules. "paper": M = 30 episodes x T = 10 iterations (paper) with the authors' per-iteration
# training; l = 3 (find_bests); the retraining settings are not given (ours). "reduced": what a 2-core
# CPU can afford for ml-100k in a few minutes per seed (Chapter 6 and benchmarks/ciess.py): a few
# epochs per iteration instead of the authors' batch budget; patience 10, since patience 5 stopped
# LightGCN runs on an early plateau (README, CIESS benchmark).
SCHEDULES = {
    "paper": dict(episodes=30, iterations=10, training="official", epochs_per_iteration=5, top_l=3,
                  full_epochs=300, retrain_epochs=300, patience=10),
    "reduced": dict(episodes=6, iterations=5, training="epochs", epochs_per_iteration=3, top_l=1,
                    full_epochs=100, retrain_epochs=100, patience=10),
}

_CHOICES = {"exploration": EXPLORATIONS, "training": TRAININGS, "reward": REWARDS, "state": STATES,
            "pace": PACES, "selection": SELECTIONS, "noise": NOISES}


@dataclass
class CIESSConfig:
    """Every setting of a CIESS search. Defaults follow the authors' code where the paper is silent or
    agrees with it, and the code where they disagree (the module docstring lists each). Chapter 6."""

    budgets: tuple = (0.2, 0.1, 0.05)  # densities kept; sparsity c = 80 / 90 / 95 %
    reward: str = "code"               # "code": raw quality - lam ((d-1)/d_max)^2; "paper": q - lam (d/d_max)^2
    lam: float | None = None           # lambda, the width penalty (None: 0.01 for "code", 0.4 for "paper")
    d_max: int = 64                    # full width (paper: 128)
    episodes: int = 30                 # M
    iterations: int = 10               # T
    training: str = "official"         # per-iteration training: "official" batches or "epochs"
    epochs_per_iteration: int = 5      # training="epochs": recommender epochs per iteration
    iteration_batches: int | None = None    # training="official": batches (None: the code's per backbone)
    iteration_batch_size: int = 10_000      # users per batch (Configurations.BATCH_SIZE)
    iteration_lr: float = 0.03              # Adam lr at the start of every iteration (max_lr)
    lr_decay_every: int | None = None       # lr x0.9 every so many batches (None: the code's per backbone)
    min_lr: float | None = None             # lr floor (None: the code's per backbone)
    top_l: int = 3                     # masks kept and retrained per budget
    selection: str = "official"        # "official" bands by raw user quality, "ndcg" bands, "recsize"
    exploration: str = "official"      # "official": one scalar after the critic's pick; "per-entity"
    noise: str = "gaussian"            # exploration noise: gaussian, ou or uniform
    sigma: float = 6.0                 # its standard deviation, in widths at d_max = 128 if rescale
    rescale: bool = True               # sigma, walk_t and TD3 target noise scaled by d_max / 128
    random_walk: bool = True
    walk_t: int = 5                    # neighbourhood of the walk (at d_max = 128 if rescale)
    walk_length: int = 5
    state: str = "official"            # "official": features in [-1, 1]; "recsize": f/f_max, d/d_max, q
    pace: str = "official"             # TD3 pace (td3.pace_settings): "official" or "recsize"
    hidden: int = 256                  # actor 3-hidden-hidden-1, critics 4-hidden-hidden-1
    gamma: float = 0.99
    tau: float = 0.005
    policy_delay: int = 2
    actor_lr: float | None = None      # None: the pace's (1e-3 both)
    critic_lr: float | None = None     # None: the pace's (official 3e-3, recsize 1e-3)
    agent_batch_size: int | None = None       # None: the pace's (official 4096, recsize 256)
    updates_per_iteration: int | None = None  # TD3 steps per side per iteration (official 1, recsize 32)
    buffer_size: int | None = None     # None: 100 iterations' transitions per side (Buffer.py)
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
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                what = "exploration noise" if name == "noise" else name
                raise ValueError(f"unknown {what} {getattr(self, name)!r}: choose one of {', '.join(choices)}")
        if self.lam is None:
            self.lam = DEFAULT_LAMBDA[self.reward]
        if not self.lam >= 0:
            raise ValueError(f"lambda (the width penalty) must be >= 0, got {self.lam}")
        for name in ("d_max", "episodes", "iterations", "epochs_per_iteration", "top_l", "hidden", "walk_t",
                     "policy_delay", "full_epochs", "retrain_epochs", "iteration_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("iteration_batches", "lr_decay_every", "agent_batch_size", "buffer_size"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1 (or None for the default), got {getattr(self, name)}")
        for name in ("walk_length", "patience"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.updates_per_iteration is not None and int(self.updates_per_iteration) < 0:
            raise ValueError(f"updates_per_iteration must be >= 0, got {self.updates_per_iteration}")
        for name in ("iteration_lr", "actor_lr", "critic_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_lr is not None and not self.min_lr >= 0:
            raise ValueError(f"min_lr must be >= 0, got {self.min_lr}")
        if self.sigma < 0:
            raise ValueError(f"sigma (exploration noise) must be >= 0, got {self.sigma}")
        if min(self.budgets) * self.d_max < 1:
            raise ValueError(f"density {min(self.budgets):g} keeps less than one dimension per row at "
                             f"d_max = {self.d_max}; widths are at least 1: use a density >= {1 / self.d_max:.4g}")

    @classmethod
    def schedule(cls, name: str, **overrides) -> CIESSConfig:
        """A config with the ``"paper"`` or ``"reduced"`` schedule (:data:`SCHEDULES`), then
        ``overrides``. Explained in Chapter 6."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
        return cls(**{**SCHEDULES[name], **overrides})

    @property
    def scale(self) -> float:
        """d_max / 128 with ``rescale`` (the authors' widths assume d_max = 128), else 1."""
        return self.d_max / OFFICIAL_D_MAX if self.rescale else 1.0

    def exploration_sigma(self) -> float:
        """The exploration noise's standard deviation in widths at this d_max. Chapter 6."""
        return self.sigma * self.scale

    def walk_neighbourhood(self) -> int:
        """The walk's t at this d_max: round(walk_t * scale), halves up, at least 1. Chapter 6."""
        return max(1, int(np.floor(self.walk_t * self.scale + 0.5)))

    def agent_settings(self) -> dict:
        """The TD3 settings in force: the pace's (:func:`.td3.pace_settings`) with this config's
        explicit lrs, batch size and steps. Chapter 6."""
        out = pace_settings(self.pace, self.d_max, self.scale)
        for mine, theirs in (("actor_lr", "actor_lr"), ("critic_lr", "critic_lr"),
                             ("agent_batch_size", "batch_size"), ("updates_per_iteration", "updates")):
            if getattr(self, mine) is not None:
                out[theirs] = getattr(self, mine)
        return out

    def iteration_training(self, backbone: str) -> dict:
        """The per-iteration training in force for ``backbone``: ``{"training": "epochs", "epochs"}`` or
        the official batches, batch size, lr, decay interval and floor. Explained in Chapter 6."""
        if self.training == "epochs":
            return {"training": "epochs", "epochs": int(self.epochs_per_iteration)}
        batches, every, floor = OFFICIAL_TRAINING[backbone]
        return {"training": "official", "batches": int(self.iteration_batches or batches),
                "batch_size": int(self.iteration_batch_size), "lr": float(self.iteration_lr), "decay": 0.9,
                "decay_every": int(self.lr_decay_every or every),
                "min_lr": float(floor if self.min_lr is None else self.min_lr)}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


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
        self.env = CIESSEnvironment(backbone, split, c.d_max, c.train_overrides, model_kwargs, c.device,
                                    c.state)
        self.backbone, self.split = self.env.backbone, split
        self.training = c.iteration_training(self.backbone)
        self.pace = c.agent_settings()
        self.checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        torch.manual_seed(c.seed)
        agent_kw = {k: v for k, v in self.pace.items() if k not in ("batch_size", "updates", "wait_for_batch")}
        self.agents = {s: TD3(c.d_max, hidden=c.hidden, gamma=c.gamma, tau=c.tau, policy_delay=c.policy_delay,
                              **agent_kw) for s in ("user", "item")}
        n = {"user": split.n_users, "item": split.n_items}
        self.buffers = {s: ReplayBuffer(c.buffer_size or BUFFER_ITERATIONS * n[s]) for s in n}
        self.rng = np.random.default_rng(c.seed)
        self.freq = {"user": self.env.user_freq, "item": self.env.item_freq}
        self.state = {"done": 0, "reference": None, "history": [], "seconds": {"reference": 0.0, "search": 0.0,
                      "retrain": 0.0}, "candidates": {b: [] for b in c.budgets}, "lowest": None,
                      "sizes": {s: np.full(n[s], c.d_max, np.int64) for s in n},
                      "q": {s: np.full(n[s], self.start_q) for s in n},
                      "ou": {"user": None, "item": None, "shared": None}, "retrained": {}}
        if reference is not None:
            self.state["reference"] = reference
            self.env.full_user_eval, self.env.full_item_eval = reference["user_eval"], reference["item_eval"]

    @property
    def start_q(self) -> float:
        """q at an episode's start: 0.5 with the official state (the code resets its qualities to 0,
        i.e. 2 q - 1 = 0), 1 with recsize's (nothing lost yet)."""
        return 0.5 if self.config.state == "official" else 1.0

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
    def iteration_noise(self) -> float:
        """The official exploration's one noise scalar for this iteration, shared by users and items
        (``train_ddpg``: ``np.random.normal(0, 6)`` at d_max = 128, here sigma * d_max / 128 with
        ``rescale``; ``"ou"`` continues one scalar process through the episode). Explained in Chapter 6."""
        c, st = self.config, self.state
        noise, st["ou"]["shared"] = exploration_noise(c.noise, c.exploration_sigma(), 1, self.rng,
                                                      st["ou"]["shared"])
        return float(noise[0])

    def choose_widths(self, side: str, states: np.ndarray, noise: float | None = None) -> np.ndarray:
        """Exploration for one side. ``exploration="official"``: the walk starts at the actor's widths,
        the critic picks the best visited width, then the iteration's one ``noise`` scalar is added and
        the sum rounded and clipped to [1, d_max]. ``"per-entity"``: an independent draw is added to
        every actor width first, then the walk and the critic's pick. Without the walk the picked width
        is the (noisy) actor width. Explained in Chapter 6."""
        c, agent = self.config, self.agents[side]
        if c.exploration == "per-entity":
            draws, self.state["ou"][side] = exploration_noise(c.noise, c.exploration_sigma(), len(states),
                                                              self.rng, self.state["ou"][side])
            start, after = agent.act(states) + draws, 0.0
        else:
            if noise is None:
                raise ValueError("the official exploration adds the iteration's noise scalar: pass noise")
            start, after = agent.act(states), float(noise)
        if c.random_walk:
            visited = random_walk(start, c.d_max, self.rng, c.walk_neighbourhood(), c.walk_length)
            best = agent.score(states, visited).argmax(1)
            start = visited[np.arange(len(visited)), best]
        return np.clip(np.rint(start + after), 1, c.d_max).astype(np.int64)

    def iteration(self, g: int) -> dict:
        c, st = self.config, self.state
        episode, it = divmod(g, c.iterations)
        if it == 0:  # a new episode starts from full widths and the start quality
            for side in ("user", "item"):
                st["sizes"][side] = np.full(len(st["sizes"][side]), c.d_max, np.int64)
                st["q"][side] = np.full(len(st["q"][side]), self.start_q)
            st["ou"] = {"user": None, "item": None, "shared": None}
        states = {s: make_state(self.freq[s], st["sizes"][s], st["q"][s], c.d_max, c.state)
                  for s in ("user", "item")}
        noise = self.iteration_noise() if c.exploration == "official" else None
        actions = {s: self.choose_widths(s, states[s], noise) for s in ("user", "item")}
        out = self.env.step(actions["user"], actions["item"], self.training, seed=c.seed * 1_000_003 + g)
        q = {"user": out["q_user"], "item": out["q_item"]}
        raw = {"user": out["user_eval"], "item": out["item_eval"]}
        valid = out["valid"]
        done = float(it == c.iterations - 1)
        rewards = {}
        for side in ("user", "item"):
            quality = raw[side] if c.reward == "code" else q[side]
            rewards[side] = reward(quality, actions[side], c.d_max, c.lam, c.reward)
            nxt = make_state(self.freq[side], actions[side], q[side], c.d_max, c.state)
            self.buffers[side].add(states[side], actions[side], rewards[side], nxt, done)
            ready = len(self.buffers[side]) >= (self.pace["batch_size"] if self.pace["wait_for_batch"] else 1)
            if ready:
                for _ in range(self.pace["updates"]):
                    self.agents[side].update(self.buffers[side], self.pace["batch_size"], self.rng)
            st["sizes"][side], st["q"][side] = actions[side], q[side]
        all_q = np.concatenate([q["user"], q["item"]])
        user_eval = raw["user"][np.isfinite(raw["user"])]
        mean_user_quality = float(user_eval.mean()) if len(user_eval) else float("nan")
        dens = combined_density(actions["user"], actions["item"], c.d_max)
        candidate = {"episode": episode, "iteration": it, "density": dens, "mean_q": float(all_q.mean()),
                     "mean_user_quality": mean_user_quality, "valid_ndcg@20": float(valid["ndcg@20"]),
                     "user": actions["user"].copy(), "item": actions["item"].copy()}
        key = {"official": "mean_user_quality", "ndcg": "valid_ndcg@20", "recsize": "mean_q"}[c.selection]
        bands = budget_bands(c.budgets)
        for b in c.budgets:
            lower = None if c.selection == "recsize" else bands[b][0]
            st["candidates"][b] = update_candidates(st["candidates"][b], candidate, b, c.top_l, key, lower)
        low = st["lowest"]
        if low is None or (dens, -candidate["mean_q"]) < (low["density"], -low["mean_q"]):
            st["lowest"] = candidate
        return {"episode": episode, "iteration": it, "density": dens, "mean_q": float(all_q.mean()),
                "mean_user_quality": mean_user_quality, "noise": noise,
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
                "epochs": len(result.history), "seconds": result.seconds, "test_compact": evaluate_topk(model, self.split, "test"),
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
    def run(self, resume: bool = False, max_iterations: int | None = None,
            budgets=None) -> CIESSResult | None:
        """Search, then retrain; returns the result, or None when ``max_iterations`` stopped the search
        early (call again with ``resume=True``). ``budgets`` retrains only these of the config's budgets
        (``()``: search only; a later ``run`` on the same object retrains without searching again). With a
        checkpoint folder, the folder is locked for the run: a second process on it is refused.
        Explained in Chapter 6."""
        budgets = self.config.budgets if budgets is None else tuple(round(float(b), 12) for b in budgets)
        unknown = [b for b in budgets if b not in self.config.budgets]
        if unknown:
            raise ValueError(f"budgets {unknown} are not among the config's {list(self.config.budgets)}: the "
                             "bands come from the config, so give its budgets (or a subset)")
        if self.checkpoint is None:
            return self._run(resume, max_iterations, budgets)
        with exclusive_folder(self.checkpoint.parent, "--checkpoint-dir"):
            return self._run(resume, max_iterations, budgets)

    def _run(self, resume: bool, max_iterations: int | None, retrain: tuple) -> CIESSResult | None:
        from ..train import progress_bar
        c, st = self.config, self.state
        if resume:
            self.load()
            st = self.state
        elif self.checkpoint is not None and self.checkpoint.exists() and st["done"] == 0:
            raise ValueError(f"{self.checkpoint} exists: pass resume=True (--resume) to continue that search, "
                             "or use another checkpoint directory")
        if st["reference"] is None:
            t0 = time.perf_counter()
            st["reference"] = self.env.reference(c.full_epochs, c.patience, c.seed)
            st["seconds"]["reference"] = time.perf_counter() - t0
            self.save()
        total = c.episodes * c.iterations
        bar = progress_bar(None, c.progress, total=total, initial=st["done"], desc="CIESS search",
                           unit="it", leave=False)
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
        for b in retrain:
            runs = []
            for rank, mask in enumerate(self._budget_masks(b)):
                key = f"{b}/{rank}"
                if key not in st["retrained"]:
                    t0 = time.perf_counter()
                    st["retrained"][key] = self.retrain(mask["user"], mask["item"])
                    st["seconds"]["retrain"] += time.perf_counter() - t0
                    self.save()
                runs.append({"rank": rank, "episode": mask["episode"], "iteration": mask["iteration"],
                             "search_mean_q": mask["mean_q"],
                             "search_mean_user_quality": mask.get("mean_user_quality"),
                             "search_valid_ndcg@20": mask.get("valid_ndcg@20"), "density": mask["density"],
                             "projected": mask["projected"], "user_sizes": np.asarray(mask["user"]).tolist(),
                             "item_sizes": np.asarray(mask["item"]).tolist(), **st["retrained"][key]})
            best = max(runs, key=lambda r: r["valid"]["ndcg@20"])  # chosen on validation, reported on test
            budgets[str(b)] = {"density": b, "sparsity": 1 - b, "best": best, "candidates": runs}
        seconds = {**st["seconds"]}
        seconds["total"] = sum(seconds.values())
        ref = st["reference"]
        config = {**c.to_dict(), "resolved": {"iteration_training": self.training,
                                              "td3": self.pace, "exploration_sigma": c.exploration_sigma(),
                                              "walk_t": c.walk_neighbourhood(),
                                              "buffer_size": {s: b.capacity for s, b in self.buffers.items()}}}
        return CIESSResult(self.backbone, config, ref, st["history"], budgets,
                           {s: st["sizes"][s].tolist() for s in ("user", "item")}, seconds)


def settled_density(history: list, iterations: int) -> float:
    """Where a search settled: the mean combined density over its last episode (the last ``iterations``
    rows of the history). Explained in Chapter 6."""
    if not history:
        raise ValueError("the search has no history yet: run it first")
    return float(np.mean([h["density"] for h in history[-int(iterations):]]))


def lambda_per_budget(backbone: str, split, config: CIESSConfig, bracket=(0.05, 3.2), steps: int = 4,
                      which=None, model_kwargs: dict | None = None) -> dict:
    """One lambda per budget (issue 16, experiment 3): for every budget in ``which`` (default all of the
    config's), bisect lambda geometrically inside ``bracket`` (too small: the search settles above the
    budget; too large: below its band) until the search's :func:`settled_density` lies in the budget's
    band (:func:`budget_bands`), at most ``steps`` searches; then retrain that budget's selected masks
    from the accepted search (or, if none settled in the band, the search that settled nearest to it).
    One full-width reference serves every search. Returns per budget the lambda, whether it settled in
    the band, the trace of (lambda, settled density) and the retrained budget as :meth:`CIESS.run`
    reports it. Explained in Chapter 6."""
    from dataclasses import replace
    lo, hi = (float(x) for x in bracket)
    if not 0 < lo < hi:
        raise ValueError(f"bracket must be two lambdas 0 < low < high, got {tuple(bracket)}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    which = config.budgets if which is None else tuple(round(float(b), 12) for b in which)
    unknown = [b for b in which if b not in config.budgets]
    if unknown:
        raise ValueError(f"budgets {unknown} are not among the config's {list(config.budgets)}")
    bands = budget_bands(config.budgets)
    reference, out = None, {}
    for b in which:
        low, high, trace, chosen, miss = lo, hi, [], None, None
        for _ in range(int(steps)):
            lam = float(np.sqrt(low * high))
            search = CIESS(backbone, split, replace(config, lam=lam), model_kwargs=model_kwargs,
                           reference=reference)
            result = search.run(budgets=())
            reference = search.state["reference"]
            settled = settled_density(result.history, config.iterations)
            lower = bands[b][0]
            distance = 0.0 if lower <= settled < b else min(abs(settled - lower), abs(settled - b))
            trace.append({"lam": lam, "settled_density": settled, "in_band": distance == 0.0,
                          "search_density": [h["density"] for h in result.history],
                          "search_seconds": result.seconds["search"]})
            if miss is None or distance < miss[0]:
                miss = (distance, search, lam)
            if distance == 0.0:
                chosen = (search, lam)
                break
            low, high = (lam, high) if settled >= b else (low, lam)
        search, lam = chosen or miss[1:]
        retrained = search.run(budgets=(b,))
        out[b] = {"lam": lam, "in_band": chosen is not None, "band": list(bands[b]), "trace": trace,
                  "budget": retrained.budgets[str(b)], "reference": {k: v for k, v in reference.items()
                                                                    if not k.endswith("_eval")},
                  "seconds": retrained.seconds}
    return out


def run_ciess(backbone: str, split, config: CIESSConfig | None = None, checkpoint_dir=None, resume: bool = False,
              model_kwargs: dict | None = None) -> CIESSResult:
    """Run a whole CIESS search with retraining: the one call the chapter and the CLI use. Explained in
    Chapter 6."""
    return CIESS(backbone, split, config, checkpoint_dir, model_kwargs).run(resume=resume)
