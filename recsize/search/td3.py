"""The TD3 agent of CIESS: actor, twin critics, replay buffer and the random walk. Explained in Chapter 6.

TD3 (Fujimoto et al., ICML 2018) is an actor-critic method for continuous actions. Here the action is
an embedding width a in [1, d_max] and the state of an entity (a user or an item) is three numbers:
(normalised frequency f, width d / d_max, quality ratio q). Three tricks keep the critic honest:

* **twin critics**: two Q networks; the target uses the smaller of the two (less over-estimation);
* **target policy smoothing**: the target action is the target actor's action plus clipped noise;
* **delayed policy updates**: the actor and the target networks move once every ``policy_delay``
  critic updates, with Polyak averaging ``theta' <- tau * theta + (1 - tau) * theta'``.

Every random number comes from one ``numpy.random.Generator`` passed in by the caller, so a search that
saves the generator's state resumes bit for bit (see :mod:`recsize.search.ciess`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def mlp(n_in: int, hidden: int, n_out: int = 1) -> nn.Sequential:
    """``n_in - hidden - hidden - n_out`` with ReLU: the shape of CIESS's actors (3-256-256-1) and critics
    (4-256-256-1). Explained in Chapter 6."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class Actor(nn.Module):
    """Deterministic policy: state (f, d / d_max, q) -> width a = 1 + (tanh(x) + 1) / 2 * (d_max - 1), a
    continuous number in [1, d_max]. Explained in Chapter 6."""

    def __init__(self, d_max: int, state_dim: int = 3, hidden: int = 256):
        super().__init__()
        self.d_max = int(d_max)
        self.net = mlp(state_dim, hidden)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return 1 + (torch.tanh(self.net(states).squeeze(-1)) + 1) / 2 * (self.d_max - 1)


class Critic(nn.Module):
    """Two Q networks Q1, Q2 of (state, a / d_max), each 4-hidden-hidden-1. Explained in Chapter 6."""

    def __init__(self, d_max: int, state_dim: int = 3, hidden: int = 256):
        super().__init__()
        self.d_max = int(d_max)
        self.q1, self.q2 = mlp(state_dim + 1, hidden), mlp(state_dim + 1, hidden)

    def _input(self, states, actions):
        return torch.cat([states, (actions / self.d_max).unsqueeze(-1)], dim=-1)

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


class TD3:
    """One TD3 learner (an actor, twin critics, their targets, two Adam optimisers) for one side (users
    or items). Explained in Chapter 6.

    ``target_noise`` and ``noise_clip`` are fractions of the action half-range (d_max - 1) / 2, as TD3's
    0.2 and 0.5 are fractions of an action range [-1, 1].
    """

    def __init__(self, d_max: int, hidden: int = 256, gamma: float = 0.99, tau: float = 0.005,
                 policy_delay: int = 2, target_noise: float = 0.2, noise_clip: float = 0.5,
                 actor_lr: float = 1e-3, critic_lr: float = 1e-3, state_dim: int = 3):
        if d_max < 1 or hidden < 1 or policy_delay < 1:
            raise ValueError(f"need d_max, hidden and policy_delay >= 1, got {d_max}, {hidden}, {policy_delay}")
        if not 0 <= gamma <= 1 or not 0 < tau <= 1:
            raise ValueError(f"need gamma in [0, 1] and tau in (0, 1], got {gamma} and {tau}")
        self.d_max, self.gamma, self.tau, self.policy_delay = int(d_max), gamma, tau, int(policy_delay)
        half = (self.d_max - 1) / 2
        self.target_sigma, self.target_clip = target_noise * half, noise_clip * half
        self.actor = Actor(d_max, state_dim, hidden)
        self.critic = Critic(d_max, state_dim, hidden)
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

    def update(self, buffer: ReplayBuffer, batch_size: int, rng: np.random.Generator) -> dict:
        """One TD3 step: a critic update, and every ``policy_delay`` steps an actor update and the soft
        target updates. Returns the losses (actor loss NaN on the steps without one)."""
        s, a, r, s2, done = buffer.sample(batch_size, rng)
        noise = np.clip(rng.normal(0.0, self.target_sigma, len(a)), -self.target_clip, self.target_clip)
        with torch.no_grad():
            a2 = (self.actor_target(s2) + torch.from_numpy(noise.astype(np.float32))).clamp(1, self.d_max)
            q1t, q2t = self.critic_target(s2, a2)
            target = r + self.gamma * (1 - done) * torch.min(q1t, q2t)
        q1, q2 = self.critic(s, a)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        actor_loss = float("nan")
        if self.updates % self.policy_delay == 0:
            loss = -self.critic.q1_value(s, self.actor(s)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_opt.step()
            actor_loss = float(loss.detach())
            with torch.no_grad():
                for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                    for p, pt in zip(net.parameters(), tgt.parameters()):
                        pt.mul_(1 - self.tau).add_(p, alpha=self.tau)
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
