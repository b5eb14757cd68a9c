"""The TD3 agent of CIESS: actor, twin critics, replay buffer and the random walk. Explained in Chapter 6.

TD3 (Fujimoto et al., ICML 2018) is an actor-critic method for continuous actions. Here the action is
an embedding width a in [1, d_max] and the state of an entity (a user or an item) is three numbers
(frequency, width and quality ratio, each in [-1, 1] as in the authors' code). Three tricks keep the critic
honest:

* **twin critics**: two Q networks; the target uses the smaller of the two (less over-estimation);
* **target policy smoothing**: the target action is the target actor's action plus clipped noise;
* **delayed policy updates**: the actor and the target networks move once every ``policy_delay``
  critic updates, with Polyak averaging ``theta' <- tau * theta + (1 - tau) * theta'``.

Two paces (:data:`PACES`, :func:`pace_settings`): ``"official"`` is the authors' ``Buffer.py`` and
``ActorCritic.py`` (one update per search iteration on a batch of 4,096, critic lr 3e-3, gradient norms
clipped to 0.01, one target-policy noise scalar N(0, 2) clipped to +-5 widths per batch, the critic's
target moved every step and the actor's with the delayed actor step, no terminal flag in the target,
actor output layer initialised in +-3e-3, actions fed to the critic in [-1, 1]); ``"recsize"`` is
recsize's earlier choice (32 updates of 256 per iteration, critic lr 1e-3, no clipping, per-sample
target noise 0.2 and clip 0.5 of the action half-range, both targets moved with the delayed step, the
episode's last iteration marked terminal).

Every random number comes from one ``numpy.random.Generator`` passed in by the caller, so a search that
saves the generator's state resumes bit for bit (see :mod:`recsize.search.ciess`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def mlp(n_in: int, hidden: int, n_out: int = 1) -> nn.Sequential:
    """``n_in - hidden - hidden - n_out`` with ReLU: the shape of CIESS's actors (3-256-256-1) and critics
    (4-256-256-1). Explained in Chapter 6."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class Actor(nn.Module):
    """Deterministic policy: state (f, d, q) -> width a = 1 + (tanh(x) + 1) / 2 * (d_max - 1), a
    continuous number in [1, d_max]. ``output_init`` (the authors': 3e-3) draws the output layer's
    weights uniformly in +-output_init, so the first widths sit near the middle of the range; None keeps
    PyTorch's default. Explained in Chapter 6."""

    def __init__(self, d_max: int, state_dim: int = 3, hidden: int = 256, output_init: float | None = None):
        super().__init__()
        self.d_max = int(d_max)
        self.net = mlp(state_dim, hidden)
        if output_init is not None:
            with torch.no_grad():
                self.net[-1].weight.uniform_(-output_init, output_init)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return 1 + (torch.tanh(self.net(states).squeeze(-1)) + 1) / 2 * (self.d_max - 1)


def action_feature(actions, d_max: int, centred: bool):
    """The width as the critic reads it: (a - 1) / (d_max - 1) * 2 - 1 in [-1, 1] (``centred``, the
    authors' ``normalise_actions``) or a / d_max (recsize's earlier form). Explained in Chapter 6."""
    if centred:
        return (actions - 1) / max(d_max - 1, 1) * 2 - 1
    return actions / d_max


class Critic(nn.Module):
    """Two Q networks Q1, Q2 of (state, width feature), each 4-hidden-hidden-1; the width enters as
    :func:`action_feature`. Explained in Chapter 6."""

    def __init__(self, d_max: int, state_dim: int = 3, hidden: int = 256, centred: bool = True):
        super().__init__()
        self.d_max, self.centred = int(d_max), bool(centred)
        self.q1, self.q2 = mlp(state_dim + 1, hidden), mlp(state_dim + 1, hidden)

    def _input(self, states, actions):
        feature = action_feature(actions, self.d_max, self.centred)
        return torch.cat([states, feature.unsqueeze(-1)], dim=-1)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._input(states, actions)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def q1_value(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.q1(self._input(states, actions)).squeeze(-1)


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', done) in preallocated float32 arrays. Chapter 6."""

    def __init__(self, capacity: int, state_dim: int = 3):
        if capacity < 1:
            raise ValueError(f"the replay buffer needs capacity >= 1, got {capacity}")
        self.capacity, self.state_dim = int(capacity), int(state_dim)
        self.states = np.zeros((0, state_dim), np.float32)  # grown on demand up to capacity
        self.actions = np.zeros(0, np.float32)
        self.rewards = np.zeros(0, np.float32)
        self.next_states = np.zeros((0, state_dim), np.float32)
        self.dones = np.zeros(0, np.float32)
        self.pos, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def _grow(self, needed: int) -> None:
        new = min(self.capacity, max(needed, 2 * len(self.actions)))
        if new <= len(self.actions):
            return
        for name in ("states", "actions", "rewards", "next_states", "dones"):
            old = getattr(self, name)
            arr = np.zeros((new, *old.shape[1:]), np.float32)
            arr[:len(old)] = old
            setattr(self, name, arr)

    def add(self, states, actions, rewards, next_states, dones) -> None:
        """Append a batch of transitions (one per entity), overwriting the oldest when full."""
        states = np.asarray(states, np.float32).reshape(-1, self.state_dim)
        n = len(states)
        self._grow(min(self.capacity, self.size + n))
        idx = (self.pos + np.arange(n)) % self.capacity
        self.states[idx] = states
        self.actions[idx] = np.asarray(actions, np.float32).reshape(-1)
        self.rewards[idx] = np.broadcast_to(np.asarray(rewards, np.float32), (n,))
        self.next_states[idx] = np.asarray(next_states, np.float32).reshape(-1, self.state_dim)
        self.dones[idx] = np.broadcast_to(np.asarray(dones, np.float32), (n,))
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.capacity, self.size + n))

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size, batch_size)
        return tuple(torch.from_numpy(a[idx]) for a in
                     (self.states, self.actions, self.rewards, self.next_states, self.dones))

    def state_dict(self) -> dict:
        n = self.size
        return {"capacity": self.capacity, "state_dim": self.state_dim, "pos": self.pos, "size": n,
                **{k: getattr(self, k)[:n].copy() for k in ("states", "actions", "rewards", "next_states", "dones")}}

    def load_state_dict(self, d: dict) -> None:
        self.__init__(d["capacity"], d["state_dim"])
        self._grow(d["size"])
        for k in ("states", "actions", "rewards", "next_states", "dones"):
            getattr(self, k)[:d["size"]] = d[k]
        self.pos, self.size = d["pos"], d["size"]


PACES = ("official", "recsize")
OFFICIAL_D_MAX = 128  # the authors' widths (noise scales, clips) are stated for d_max = 128


def pace_settings(pace: str, d_max: int, scale: float = 1.0) -> dict:
    """The TD3 settings of a pace (:data:`PACES`): keyword arguments of :class:`TD3` plus
    ``batch_size``, ``updates`` (steps per search iteration) and ``wait_for_batch`` (no step until the
    buffer holds a whole batch). ``scale`` multiplies the official target noise and clip, stated in
    widths at d_max = 128 (``d_max / 128`` rescales them). Explained in Chapter 6.

    ``"official"`` (``Buffer.py``, ``ActorCritic.py``): batch 4,096, one step, critic lr 3e-3, actor lr
    1e-3, gradient norm clip 0.01, one N(0, 2) target-noise scalar per batch clipped to +-5, critic
    target every step, actor output init +-3e-3, no terminal flag, centred action feature.
    ``"recsize"``: batch 256, 32 steps, both lr 1e-3, no clip, per-sample target noise 0.2 and clip 0.5
    of the half-range (d_max - 1) / 2, both targets on the delayed step, terminal flag, a / d_max.
    """
    half = (int(d_max) - 1) / 2
    if pace == "official":
        return dict(batch_size=4096, updates=1, wait_for_batch=False, actor_lr=1e-3, critic_lr=3e-3,
                    grad_clip=0.01, target_sigma=2.0 * scale, target_clip=5.0 * scale,
                    shared_target_noise=True, critic_target_every_step=True, output_init=3e-3,
                    use_done=False, centred=True)
    if pace == "recsize":
        return dict(batch_size=256, updates=32, wait_for_batch=True, actor_lr=1e-3, critic_lr=1e-3,
                    grad_clip=None, target_sigma=0.2 * half, target_clip=0.5 * half,
                    shared_target_noise=False, critic_target_every_step=False, output_init=None,
                    use_done=True, centred=False)
    raise ValueError(f"unknown TD3 pace {pace!r}: choose one of {', '.join(PACES)}")


class TD3:
    """One TD3 learner (an actor, twin critics, their targets, two Adam optimisers) for one side (users
    or items). Explained in Chapter 6.

    ``target_sigma`` and ``target_clip`` are in widths (None: 0.2 and 0.5 of the action half-range
    (d_max - 1) / 2, as TD3's 0.2 and 0.5 are fractions of an action range [-1, 1]);
    ``shared_target_noise`` draws one scalar per batch (the authors') instead of one per sample;
    ``grad_clip`` clips both networks' gradient norms; ``critic_target_every_step`` moves the critic's
    target after every critic step (the authors'), otherwise with the delayed actor step;
    ``use_done`` stops the bootstrap at an episode's end (the authors' target ignores it);
    ``centred`` feeds the critic the width in [-1, 1] (:func:`action_feature`).
    """

    def __init__(self, d_max: int, hidden: int = 256, gamma: float = 0.99, tau: float = 0.005,
                 policy_delay: int = 2, target_sigma: float | None = None, target_clip: float | None = None,
                 actor_lr: float = 1e-3, critic_lr: float = 1e-3, state_dim: int = 3, *,
                 shared_target_noise: bool = False, grad_clip: float | None = None,
                 critic_target_every_step: bool = False, output_init: float | None = None,
                 use_done: bool = True, centred: bool = False):
        if d_max < 1 or hidden < 1 or policy_delay < 1:
            raise ValueError(f"need d_max, hidden and policy_delay >= 1, got {d_max}, {hidden}, {policy_delay}")
        if not 0 <= gamma <= 1 or not 0 < tau <= 1:
            raise ValueError(f"need gamma in [0, 1] and tau in (0, 1], got {gamma} and {tau}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 (or None for no clipping), got {grad_clip}")
        self.d_max, self.gamma, self.tau, self.policy_delay = int(d_max), gamma, tau, int(policy_delay)
        half = (self.d_max - 1) / 2
        self.target_sigma = 0.2 * half if target_sigma is None else float(target_sigma)
        self.target_clip = 0.5 * half if target_clip is None else float(target_clip)
        self.shared_target_noise, self.grad_clip = bool(shared_target_noise), grad_clip
        self.critic_target_every_step, self.use_done = bool(critic_target_every_step), bool(use_done)
        self.actor = Actor(d_max, state_dim, hidden, output_init)
        self.critic = Critic(d_max, state_dim, hidden, centred)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=critic_lr)
        self.updates = 0

    @torch.no_grad()
    def act(self, states) -> np.ndarray:
        """The actor's continuous widths (no exploration) for a batch of states."""
        return self.actor(torch.as_tensor(np.asarray(states), dtype=torch.float32)).numpy().astype(np.float64)

    @torch.no_grad()
    def score(self, states, actions) -> np.ndarray:
        """Q1 of every (state, candidate width): ``states`` (N, 3), ``actions`` (N, C) -> (N, C)."""
        s = torch.as_tensor(np.asarray(states), dtype=torch.float32)
        a = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        n, c = a.shape
        return self.critic.q1_value(s.repeat_interleave(c, 0), a.reshape(-1)).reshape(n, c).numpy()

    def target_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Target-policy smoothing noise for a batch of ``n``: one clipped scalar repeated
        (``shared_target_noise``) or one clipped draw per sample, in widths."""
        draws = rng.normal(0.0, self.target_sigma, 1 if self.shared_target_noise else n)
        return np.broadcast_to(np.clip(draws, -self.target_clip, self.target_clip), (n,))

    def _soft_update(self, net: nn.Module, target: nn.Module) -> None:
        with torch.no_grad():
            for p, pt in zip(net.parameters(), target.parameters()):
                pt.mul_(1 - self.tau).add_(p, alpha=self.tau)

    def _step(self, optimizer, net: nn.Module, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
        optimizer.step()

    def update(self, buffer: ReplayBuffer, batch_size: int, rng: np.random.Generator) -> dict:
        """One TD3 step: a critic update, and every ``policy_delay`` steps an actor update; the targets
        move by Polyak averaging (see the class). Returns the losses (actor loss NaN on the steps
        without one)."""
        s, a, r, s2, done = buffer.sample(batch_size, rng)
        noise = self.target_noise(len(a), rng)
        with torch.no_grad():
            a2 = (self.actor_target(s2) + torch.from_numpy(noise.astype(np.float32))).clamp(1, self.d_max)
            q1t, q2t = self.critic_target(s2, a2)
            alive = (1 - done) if self.use_done else torch.ones_like(done)
            target = r + self.gamma * alive * torch.min(q1t, q2t)
        q1, q2 = self.critic(s, a)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self._step(self.critic_opt, self.critic, critic_loss)
        self.updates += 1
        actor_loss = float("nan")
        if self.updates % self.policy_delay == 0:
            loss = -self.critic.q1_value(s, self.actor(s)).mean()
            self._step(self.actor_opt, self.actor, loss)
            actor_loss = float(loss.detach())
            self._soft_update(self.actor, self.actor_target)
            if not self.critic_target_every_step:
                self._soft_update(self.critic, self.critic_target)
        if self.critic_target_every_step:
            self._soft_update(self.critic, self.critic_target)
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": actor_loss}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, d: dict) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(d[name])
        self.updates = d["updates"]


# ---------------------------------------------------------------------------------------------------
# Exploration: noise on the actor's output, then a random walk over the integer widths (Chapter 6)
# ---------------------------------------------------------------------------------------------------

NOISES = ("gaussian", "ou", "uniform")


def exploration_noise(kind: str, sigma: float, n: int, rng: np.random.Generator,
                      ou_state: np.ndarray | None = None, theta: float = 0.15) -> tuple[np.ndarray, np.ndarray | None]:
    """Noise added to the actor's widths: ``gaussian`` N(0, sigma^2); ``uniform`` on
    [-sqrt(3) sigma, sqrt(3) sigma] (same standard deviation); ``ou`` an Ornstein-Uhlenbeck process
    x <- x - theta * x + sigma * N(0, 1) per entity (``ou_state`` is x, returned updated; None starts at
    0). Returns (noise, new OU state). Explained in Chapter 6."""
    if kind == "gaussian":
        return rng.normal(0.0, sigma, n), ou_state
    if kind == "uniform":
        half = np.sqrt(3.0) * sigma
        return rng.uniform(-half, half, n), ou_state
    if kind == "ou":
        x = np.zeros(n) if ou_state is None else ou_state
        x = x - theta * x + sigma * rng.normal(0.0, 1.0, n)
        return x, x
    raise ValueError(f"unknown exploration noise {kind!r}: choose one of {', '.join(NOISES)}")


def walk_probabilities(width: int, d_max: int, t: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The random walk's neighbours of ``width`` (integers d' in [1, d_max] with 1 <= |d' - d| <= t) and
    the probability of stepping to each, proportional to 1 / |d' - d|. Explained in Chapter 6."""
    offsets = np.concatenate([np.arange(-t, 0), np.arange(1, t + 1)])
    nbrs = width + offsets
    keep = (nbrs >= 1) & (nbrs <= d_max)
    w = 1.0 / np.abs(offsets[keep])
    return nbrs[keep], w / w.sum() if len(w) else w


def random_walk(start, d_max: int, rng: np.random.Generator, t: int = 5, length: int = 5) -> np.ndarray:
    """Vectorised random walks over integer widths, one per entity: from ``start`` (clipped and rounded
    to [1, d_max]) take ``length`` steps, each to a neighbour within distance ``t`` chosen with probability
    proportional to 1 / distance (see :func:`walk_probabilities`); an entity with no neighbour (d_max = 1)
    stays. Returns the visited widths, shape (N, length + 1), the start first. Explained in Chapter 6."""
    if t < 1 or length < 0:
        raise ValueError(f"the walk needs a neighbourhood t >= 1 and a length >= 0, got t={t}, length={length}")
    d = np.clip(np.rint(np.asarray(start, np.float64)), 1, d_max).astype(np.int64).reshape(-1)
    offsets = np.concatenate([np.arange(-t, 0), np.arange(1, t + 1)])
    inv = 1.0 / np.abs(offsets)
    visited = [d]
    for _ in range(length):
        nbrs = d[:, None] + offsets[None, :]
        w = np.where((nbrs >= 1) & (nbrs <= d_max), inv[None, :], 0.0)
        total = w.sum(1, keepdims=True)
        cdf = np.cumsum(w, 1) / np.where(total > 0, total, 1.0)
        u = rng.random((len(d), 1))
        last = np.where(w > 0, np.arange(len(offsets)), 0).max(1)  # guards round-off in the cdf
        choice = np.minimum((cdf <= u).sum(1), last)  # the first column with cdf > u
        d = np.where(total[:, 0] > 0, nbrs[np.arange(len(d)), choice], d)
        visited.append(d)
    return np.stack(visited, 1)
