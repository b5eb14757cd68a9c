"""One trainer for every backbone: Adam, mini-batches, early stopping, best checkpoint, seeds.

Explained in Chapter 3 (Backbones). Top-k models learn from BPR triples drawn by
:class:`~recsize.data.BPRSampler` and stop early on validation NDCG@20; CTR models learn from shuffled
samples and stop early on validation AUC. Optionally the learning rate decays on a validation plateau
(``lr_decay``, ``lr_patience``) and training stops once it reaches ``min_lr``, as in the DNIS authors' code. The weights of the best validation epoch are restored at the
end, then the test split is evaluated once; with ``checkpoint`` the best-so-far weights are written
(atomically) every time validation improves, so an interrupted run keeps its best model.
"""
from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .data import BPRSampler
from .files import atomic_save  # noqa: F401  (re-exported: recsize.train.atomic_save)
from .evaluate import evaluate_ctr, evaluate_topk


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA). Explained in Chapter 3."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (CUDA when available), checked: a device
    this machine does not have raises ``ValueError`` saying which it has. Explained in Chapter 3."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    have = "cpu" + (f", cuda (cuda:0 to cuda:{torch.cuda.device_count() - 1})" if torch.cuda.is_available()
                    else "") + (", mps" if torch.backends.mps.is_available() else "") + " or auto"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {text!r} is not a device name: this machine has {have}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} requested but CUDA is not available: this machine has {have}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} does not exist: this machine has {have}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {text!r} requested but MPS is not available: this machine has {have}")
    elif dev.type != "cpu":
        raise ValueError(f"device {text!r} is not supported by recsize: this machine has {have}")
    return dev


def show_progress(progress: bool | str | None) -> bool:
    """Progress bars are shown when asked, or by default only when stderr is a terminal (``"log"``: no bar,
    plain lines instead, :func:`progress_bar`). Explained in Chapter 3."""
    if progress == "log":
        return False
    return sys.stderr.isatty() if progress is None else bool(progress)


LOG_SECONDS = 30.0  # one progress line at most this often when stderr is not a terminal


class _LogLines:
    """A file for tqdm where stderr is a log or a pipe: a refresh becomes one plain line (no carriage
    returns), the first at once and then at most one every :data:`LOG_SECONDS`."""

    def __init__(self, stream):
        self.stream, self.last = stream, -math.inf

    def write(self, s: str) -> None:
        text = s.replace("\r", "").strip()
        now = time.monotonic()
        if text and now - self.last >= LOG_SECONDS:
            self.stream.write(text + "\n")
            self.last = now

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, progress: bool | str | None = None, **kwargs):
    """tqdm as recsize shows progress: a bar when ``progress`` is True (or None and stderr is a terminal),
    nothing when False (or None and stderr is not a terminal), and with ``"log"`` (the command line's
    choice when stderr is not a terminal, so that a long run is not silent in a log or a pipe) one plain
    line on stderr at once and then at most every 30 s. Explained in Chapter 3."""
    if progress == "log":
        return tqdm(iterable, file=_LogLines(sys.stderr), **{"ascii": True, "ncols": 100, "mininterval": 1.0,
                                                            **kwargs, "leave": False})
    return tqdm(iterable, disable=not show_progress(progress), **kwargs)


@dataclass
class TrainConfig:
    """Training settings. ``metric`` defaults to ``ndcg@20`` (top-k) or ``auc`` (CTR). Chapter 3."""

    epochs: int = 300
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    metric: str | None = None
    ks: tuple[int, ...] = (5, 10, 20)
    seed: int = 0
    device: str = "cpu"
    progress: bool | str | None = None  # "log": plain lines (the command line, stderr not a terminal)
    checkpoint: str | None = None
    test: bool = True
    lr_decay: float = 1.0        # ReduceLROnPlateau factor on the validation metric (1: constant lr)
    lr_patience: int = 0         # evaluations without improvement before the lr is multiplied by lr_decay
    min_lr: float = 0.0          # stop once the lr has decayed to this value (DNIS's authors: 1e-6)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1] (1: no decay), got {self.lr_decay}")
        if self.lr_patience < 0:
            raise ValueError(f"lr_patience must be >= 0, got {self.lr_patience}")
        if not 0 <= self.min_lr < self.lr:
            raise ValueError(f"min_lr must lie in [0, lr = {self.lr}), got {self.min_lr}")


def plateau_scheduler(optimizer: torch.optim.Optimizer, decay: float, patience: int):
    """Learning-rate decay on a validation plateau (``torch.optim.lr_scheduler.ReduceLROnPlateau`` on a
    metric to maximise): after more than ``patience`` evaluations without improvement, every learning rate
    is multiplied by ``decay``. None when ``decay`` is 1 (constant learning rate). Explained in Chapter 3."""
    if decay >= 1:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=decay, patience=patience)


def lr_spent(optimizer: torch.optim.Optimizer, min_lr: float) -> bool:
    """True once every learning rate of ``optimizer`` has decayed to ``min_lr`` (> 0): training stops there,
    as in the DNIS authors' code. Explained in Chapter 3."""
    return min_lr > 0 and all(g["lr"] <= min_lr * (1 + 1e-6) for g in optimizer.param_groups)


@dataclass
class TrainResult:
    """What a run produced. ``model`` holds the best weights. Explained in Chapter 3."""

    best_epoch: int
    valid: dict
    test: dict | None
    history: list = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in
                 ("best_epoch", "valid", "test", "history", "seconds", "config")}
        return json.loads(json.dumps(d, default=float))


def _ctr_batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def train(model: torch.nn.Module, split, config: TrainConfig | None = None, **overrides) -> TrainResult:
    """Train ``model`` on ``split`` (a top-k :class:`~recsize.data.Split` or a
    :class:`~recsize.data.CTRSplit`) and return the best-validation result. Explained in Chapter 3.

    Raises ``FloatingPointError`` as soon as the loss is NaN or infinite.
    """
    config = config or TrainConfig()
    if overrides:
        config = TrainConfig(**{**asdict(config), **overrides})
    device = resolve_device(config.device)
    model.to(device)
    task = getattr(model, "task", None)
    if task not in ("topk", "ctr"):
        raise TypeError(f"{type(model).__name__} is not a recsize backbone (needs task 'topk' or 'ctr')")
    if (task == "ctr") != hasattr(split.data, "n_features"):
        raise ValueError(f"{type(model).__name__} is a {task} model but the split is "
                         f"{'a CTR split' if task == 'topk' else 'a top-k split'}")
    metric = config.metric or ("ndcg@20" if task == "topk" else "auc")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if task == "topk":
        sampler = BPRSampler(split.train, seed=config.seed)
        n_batches = sampler.n_batches(config.batch_size)

        def evaluate(stage):
            return evaluate_topk(model, split, stage, ks=config.ks, device=device)
        X = Y = None
    else:
        X = torch.from_numpy(split.data.X[split.train]).to(device)
        Y = torch.from_numpy(split.data.y[split.train]).to(device)
        n_batches = -(-len(X) // config.batch_size)

        def evaluate(stage):
            return evaluate_ctr(model, split, stage, device=device)
    if metric not in evaluate("valid"):
        raise ValueError(f"unknown early-stopping metric {metric!r} for a {task} model")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = plateau_scheduler(optimizer, config.lr_decay, config.lr_patience)
    best, best_epoch, best_state, bad_rounds = -np.inf, 0, None, 0
    history = []
    start = time.perf_counter()
    bar = progress_bar(range(1, config.epochs + 1), config.progress, desc=f"train {type(model).__name__}",
                       unit="epoch", leave=False)
    for epoch in bar:
        model.train()
        total = torch.zeros((), device=device)
        batches = (sampler.epoch(config.batch_size, device) if task == "topk"
                   else ((X[b], Y[b]) for b in _ctr_batches(len(X), config.batch_size, rng)))
        for b, batch in enumerate(batches):
            loss = model.loss(*batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch}, batch {b + 1}/{n_batches} of "
                    f"{type(model).__name__}: lower the learning rate (now {config.lr}) or the initial "
                    "weights' scale, and check the input data for NaN")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        row = {"epoch": epoch, "loss": float(total) / n_batches}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            valid = evaluate("valid")
            row[metric] = valid[metric]
            if valid[metric] > best:
                best, best_epoch, bad_rounds = valid[metric], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
                best_valid = valid
                if config.checkpoint:  # best so far, atomically: Ctrl-C keeps it
                    atomic_save({"state_dict": best_state, "epoch": best_epoch, "config": asdict(config)},
                                config.checkpoint)
            else:
                bad_rounds += 1
            if scheduler is not None:
                scheduler.step(valid[metric])
                row["lr"] = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{row['loss']:.4f}", **{metric: f"{valid[metric]:.4f}"})
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        if bad_rounds > config.patience or lr_spent(optimizer, config.min_lr):
            break
    bar.close()
    model.load_state_dict(best_state)
    test = evaluate("test") if config.test else None
    return TrainResult(best_epoch, best_valid, test, history, time.perf_counter() - start,
                       {**asdict(config), "metric": metric, "model": type(model).__name__}, model)


def default_config(backbone: str, **overrides) -> TrainConfig:
    """The trainer settings recommended for ``backbone`` (:data:`recsize.backbones.DEFAULTS`), with
    ``overrides`` applied: ``default_config("mf", epochs=5, seed=1)``. Explained in Chapter 3."""
    from .backbones import defaults_for
    return TrainConfig(**{**defaults_for(backbone)[1], **overrides})


def fit(backbone: str, split, dim: int = 64, config: TrainConfig | None = None,
        embedding=None, **model_kwargs) -> TrainResult:
    """Seed, build backbone ``backbone`` for ``split`` and train it: the one call the chapters use.

    Model settings not given fall back to :data:`recsize.backbones.DEFAULTS`. Explained in Chapter 3.
    """
    from .backbones import build_backbone, defaults_for
    model_defaults, train_defaults = defaults_for(backbone)
    config = config or TrainConfig(**train_defaults)
    seed_everything(config.seed)
    model = build_backbone(backbone, split, dim, embedding=embedding, **{**model_defaults, **model_kwargs})
    return train(model, split, config)
