"""PEP: element-wise pruning with learned soft thresholds, under a memory budget in bytes. Explained in Chapter 4.

PEP keeps an arbitrary *set* of entries of every embedding row, like MagPrune, and shares its budgets in bytes,
masks, masked models and run record (:mod:`recsize.search.prune`, whose text explains the budgets).

**PEP** (Liu et al., "Learnable Embedding Sizes for Recommender Systems", ICLR 2021; :func:`pep_search`,
:func:`run_pep`): every table is reparameterised as S(V, s) = sign(V) * relu(|V| - g(s)) with g = sigmoid
times a scale, and the thresholds s are learned with the backbone's loss (:class:`PEPEmbedding`). As the
thresholds rise, entries fall to exactly 0. The kept count (entries of S(V, s) that are nonzero, all tables
together) is watched after every optimizer step; for every budget a mask is taken when the count first
reaches it (:class:`BudgetSnapshots`): the state of the last step that still kept at least the budget's
count, whose smallest kept entries (by |S(V, s)|) are dropped so the count is *exact*. Then the lottery-ticket
step: the model is retrained **from its initial weights** (saved before the PEP training), masked, with the
mask fixed, and converted to CSR. One search serves every budget.

PEP's defaults are the authors' code (``ssui-liu/learnable-embed-sizes-for-RecSys``): one learnable
threshold per entry (``"feature_dim"``; ``"feature"``, ``"dimension"`` and ``"global"`` are the code's
other choices), s = -15 at the start and scale 1 (g(s) = 1 * sigmoid(s)), Adam weight decay 1e-5, which
recsize applies to the thresholds only. That weight decay is what makes the thresholds rise (the loss's
gradient through sigmoid(-15) is ~3e-7 per entry), by about one learning rate per step towards s = 0,
so at most they settle at about ``scale`` / 2 (the kept |V| may keep growing): on LightGCN (lr 0.01)
they reach 0.5 and 64.6 % of the entries are left after 300 epochs; on NeuMF and DeepFM (lr 0.002,
0.001) they are still near 0.009 and 0.016, out of steps (``benchmarks/pep_levels.py``). A budget the thresholds did not
reach is met by cutting the last state by magnitude (``reached = False``, said by the command line);
``--pep-scale`` lets the thresholds go further. The mask is checked after every step and cut to the
budget's exact count; retraining rewinds every weight to its initial value and stops early on validation.

Where PEP follows its authors' code and where recsize departs (initialisation, weight decay, training length,
the features, fine-tuning), with the file each point was read in, is the one list
:data:`recsize.search.departures.PEP`, rendered as Chapter 4.8's table.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..budget import check_budget
from ..embedding import EmbeddingFactory, _init_std
from .prune import (PruneRun, _check_backbone, _config, _cpu_state, element_budget, finish_element_run, masked_model,
                    table_shapes, top_entries)

PEP_GRANULARITIES = ("feature_dim", "feature", "dimension", "global")
PEP_TABLE_INITS = ("backbone", "xavier_uniform")


def soft_threshold(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """PEP's reparameterisation S(v, t) = sign(v) * relu(|v| - t): entries below the threshold t become
    exactly 0, the others shrink towards 0 by t. Its gradient is 1 on the kept entries, 0 on the others.
    Explained in Chapter 4."""
    return torch.sign(v) * torch.relu(v.abs() - t)


class PEPEmbedding(nn.Module):
    """A full ``num_rows x d_max`` table V read through PEP's soft threshold: a lookup returns
    S(V, g(s)) = sign(V) * relu(|V| - g(s)) with g(s) = ``scale`` * sigmoid(s) and learnable thresholds s.
    Explained in Chapter 4.

    ``granularity``: ``"feature_dim"`` (one threshold per entry, the authors' default), ``"feature"`` (one
    per row), ``"dimension"`` (one per dimension, shared by all rows) or ``"global"`` (one for the table).
    s starts at ``threshold_init`` (-15: g = 3e-7, nothing pruned); V is initialised like the plain table
    (``init``), or with ``init="xavier_uniform"`` as the authors' ``pep_embedding.py``. ``num_parameters()``
    counts the nonzero entries of S(V, s); ``num_bytes()`` what is stored (V and s): PEP prunes while training,
    it saves memory only after the retraining, in CSR form.
    """

    def __init__(self, num_rows: int, d_max: int, granularity: str = "feature_dim", threshold_init: float = -15.0,
                 scale: float = 1.0, init: str = "xavier"):
        super().__init__()
        if num_rows < 1 or d_max < 1:
            raise ValueError(f"an embedding needs num_rows >= 1 and d_max >= 1, got {num_rows} x {d_max}")
        if granularity not in PEP_GRANULARITIES:
            raise ValueError(f"unknown PEP granularity {granularity!r}: use one of {', '.join(PEP_GRANULARITIES)}")
        if not np.isfinite(threshold_init):
            raise ValueError(f"threshold_init must be a finite number, got {threshold_init}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.num_rows, self.dim, self.granularity, self.scale = int(num_rows), int(d_max), granularity, float(scale)
        self.weight = nn.Parameter(torch.empty(self.num_rows, self.dim))
        if init == "xavier_uniform":   # the authors' pep_embedding.py
            nn.init.xavier_uniform_(self.weight)
        else:
            nn.init.normal_(self.weight, std=_init_std(self.num_rows, self.dim, init))
        shape = {"feature_dim": (self.num_rows, self.dim), "feature": (self.num_rows, 1),
                 "dimension": (1, self.dim), "global": (1, 1)}[granularity]
        self.threshold = nn.Parameter(torch.full(shape, float(threshold_init)))

    @property
    def d_max(self) -> int:
        return self.dim

    def thresholds(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """g(s) for the rows ``ids`` (all rows if None), broadcastable to their lookups. Chapter 4."""
        t = torch.sigmoid(self.threshold) * self.scale
        if ids is not None and self.granularity in ("feature_dim", "feature"):
            return t[ids]
        return t

    def forward(self, ids: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        rows = soft_threshold(F.embedding(ids, self.weight), self.thresholds(ids))
        return rows if gates is None else rows * gates

    def table(self) -> torch.Tensor:
        return soft_threshold(self.weight, self.thresholds())

    def margin(self) -> torch.Tensor:
        """|V| - g(s) for every entry: positive exactly where S(V, s) is nonzero (then it is |S(V, s)|),
        negative where the entry is pruned. Explained in Chapter 4."""
        return self.weight.abs() - self.thresholds()

    def num_parameters(self) -> int:
        return int(torch.count_nonzero(self.table().detach()))

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.weight, self.threshold))

    def extra_repr(self) -> str:
        return f"{self.num_rows}, d_max={self.dim}, granularity={self.granularity}"


@dataclass
class PEPConfig:
    """PEP's own settings; the trainer's (learning rate, batch size, seed, device) come from a
    :class:`~recsize.train.TrainConfig`. Defaults: the authors' code, see the module's text. Chapter 4."""

    granularity: str = "feature_dim"   # one threshold per entry (the code's threshold_type)
    threshold_init: float = -15.0      # s at the start (the code's threshold_init)
    scale: float = 1.0                 # g(s) = scale * sigmoid(s) (the code's gk)
    threshold_decay: float = 1e-5      # Adam weight decay of the thresholds (the code's l2_regularization)
    search_epochs: int = 300           # cap on the PEP training; it stops when every budget has its mask
    table_init: str = "backbone"       # V's initialisation: the backbone's; "xavier_uniform": the authors'

    def __post_init__(self):
        if self.granularity not in PEP_GRANULARITIES:
            raise ValueError(f"unknown PEP granularity {self.granularity!r}: use one of {', '.join(PEP_GRANULARITIES)}")
        if not np.isfinite(self.threshold_init):
            raise ValueError(f"threshold_init must be a finite number, got {self.threshold_init}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not self.threshold_decay >= 0:
            raise ValueError(f"threshold_decay must be >= 0, got {self.threshold_decay}")
        if int(self.search_epochs) < 1:
            raise ValueError(f"search_epochs must be >= 1, got {self.search_epochs}")
        if self.table_init not in PEP_TABLE_INITS:
            raise ValueError(f"table_init must be one of {', '.join(PEP_TABLE_INITS)}, got {self.table_init!r}")


def pep_factory(pep: PEPConfig | None = None, init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`PEPEmbedding` tables with ``pep``'s settings; ``init`` is the
    backbone's, replaced by ``"xavier_uniform"`` when ``pep.table_init`` says so. Chapter 4."""
    pep = pep or PEPConfig()
    _init_std(1, 1, init)
    table_init = init if pep.table_init == "backbone" else pep.table_init
    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        return PEPEmbedding(num_rows, dim, pep.granularity, pep.threshold_init, pep.scale, table_init)
    return factory


@dataclass
class Snapshot:
    """The mask PEP took for one budget: exactly ``target`` entries, from the state after optimizer step
    ``step`` (epoch ``epoch``), which kept ``kept_at_snapshot`` entries (``adjusted`` = the difference:
    the smallest kept ones dropped); ``reached`` is False when the search ended before the count reached the
    budget. Explained in Chapter 4."""

    density: float
    target: int
    masks: dict = field(repr=False)
    step: int
    epoch: int
    kept_at_snapshot: int
    reached: bool = True

    @property
    def adjusted(self) -> int:
        return self.kept_at_snapshot - self.target

    def to_dict(self) -> dict:
        return {"density": self.density, "target": self.target, "step": self.step, "epoch": self.epoch,
                "kept_at_snapshot": self.kept_at_snapshot, "adjusted": self.adjusted, "reached": self.reached}


class BudgetSnapshots:
    """Watches PEP's kept count step after step and takes every budget's mask when the count first reaches
    it. Explained in Chapter 4.

    ``targets``: ``{density: kept entries}``. :meth:`observe` gets the margins |V| - g(s) of every table
    (positive = kept) after a step. When the count n falls to a target k or below for the first time, the
    mask comes from the last observed state with at least k kept entries: this one if n = k, else the one
    before (n' > k, or this one when there is none before), cut to exactly k by keeping the k highest
    margins (:func:`~recsize.search.prune.top_entries`): the smallest kept entries |S(V, s)| are dropped.
    :meth:`finish` does the same with the last state for every budget never reached (``reached = False``).
    """

    def __init__(self, targets: dict[float, int]):
        if not targets:
            raise ValueError("no budget to watch")
        self.targets = {float(d): int(k) for d, k in targets.items()}
        self.taken: dict[float, Snapshot] = {}
        self._previous = None
        self.last_count = None

    @property
    def done(self) -> bool:
        return len(self.taken) == len(self.targets)

    def _take(self, density: float, state, reached: bool) -> None:
        margins, n, step, epoch = state
        masks, _ = top_entries(margins, self.targets[density])
        self.taken[density] = Snapshot(density, self.targets[density], masks, step, epoch, n, reached)

    def observe(self, margins: dict[str, torch.Tensor], step: int, epoch: int) -> int:
        """Record the state after ``step``; take the masks of the budgets it reaches. Returns the kept count."""
        n = sum(int((m > 0).sum()) for m in margins.values())
        pending = sorted((d for d in self.targets if d not in self.taken), key=lambda d: -self.targets[d])
        current = None
        for density in pending:
            if n <= self.targets[density]:
                if current is None:
                    current = ({r: m.detach().cpu().clone() for r, m in margins.items()}, n, step, epoch)
                source = current if n == self.targets[density] or self._previous is None else self._previous
                self._take(density, source, True)
        if self.done:
            self._previous = None
        else:
            self._previous = current or ({r: m.detach().cpu().clone() for r, m in margins.items()}, n, step, epoch)
        self.last_count = n
        return n

    def finish(self, margins: dict[str, torch.Tensor], step: int, epoch: int) -> None:
        """The search is over: every budget not reached takes the last state, cut to its count."""
        n = sum(int((m > 0).sum()) for m in margins.values())
        state = ({r: m.detach().cpu().clone() for r, m in margins.items()}, n, step, epoch)
        for density in self.targets:
            if density not in self.taken:
                self._take(density, state, False)


@dataclass
class PEPSearch:
    """A finished PEP training: one mask per budget (:class:`Snapshot`), the model's initial weights (the
    lottery ticket's rewind point), the per-epoch history (loss, kept entries, mean threshold), and what is
    needed to retrain. Explained in Chapter 4."""

    backbone: str
    d_max: int
    pep: PEPConfig
    config: object
    init: str
    model_kwargs: dict
    budgets: dict
    snapshots: dict
    initial_state: dict = field(repr=False)
    history: list = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "pep": asdict(self.pep), "steps": self.steps, "seconds": self.seconds,
                "epochs": len(self.history), "history": self.history,
                "snapshots": {str(d): s.to_dict() for d, s in self.snapshots.items()}}


def pep_search(backbone: str, split, densities, d_max: int = 64, config=None, pep: PEPConfig | None = None,
               **model_kwargs) -> PEPSearch:
    """PEP's training: ``backbone`` with :class:`PEPEmbedding` tables trained with its loss and trainer
    settings (``config``; Adam, the thresholds with weight decay ``pep.threshold_decay``), watched after
    every step until every budget in ``densities`` has its mask (:class:`BudgetSnapshots`) or
    ``pep.search_epochs`` have passed. The initial weights are saved first. Explained in Chapter 4."""
    from ..backbones import DEFAULTS, build_backbone, defaults_for
    from ..data import BPRSampler
    from ..train import progress_bar, resolve_device, seed_everything
    backbone, pep = _check_backbone(backbone), pep or PEPConfig()
    config = _config(backbone, config)
    densities = [check_budget(d) for d in np.atleast_1d(np.asarray(densities, dtype=np.float64))]
    model_kwargs = {**defaults_for(backbone)[0], **model_kwargs}
    budgets = {d: element_budget(table_shapes(backbone, split, d_max), d, "global") for d in densities}
    init = DEFAULTS[backbone].get("init", "xavier")
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model = build_backbone(backbone, split, d_max, embedding=pep_factory(pep, init), **model_kwargs)
    initial_state = _cpu_state(model)
    model.to(device)
    tables = model.embedding_tables()
    thresholds = [t.threshold for t in tables.values()]
    others = [p for p in model.parameters() if all(p is not t for t in thresholds)]
    optimizer = torch.optim.Adam([{"params": others, "weight_decay": config.weight_decay},
                                  {"params": thresholds, "weight_decay": pep.threshold_decay}], lr=config.lr)
    watcher = BudgetSnapshots({d: b["entries"] for d, b in budgets.items()})

    def margins():
        with torch.no_grad():
            return {r: t.margin() for r, t in tables.items()}

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if model.task == "topk":
        sampler = BPRSampler(split.train, seed=config.seed)
        X = Y = None
    else:
        X = torch.from_numpy(split.data.X[split.train]).to(device)
        Y = torch.from_numpy(split.data.y[split.train]).to(device)
    step, epoch, history = 0, 0, []
    watcher.observe(margins(), step, epoch)
    start = time.perf_counter()
    bar = progress_bar(range(1, int(pep.search_epochs) + 1), config.progress, desc=f"PEP {backbone}",
                       unit="epoch", leave=False)
    for epoch in bar:
        if watcher.done:
            break
        model.train()
        total, batches = 0.0, 0
        stream = (sampler.epoch(config.batch_size, device) if model.task == "topk"
                  else ((X[b], Y[b]) for b in _shuffled(len(X), config.batch_size, rng, device)))
        for batch in stream:
            loss = model.loss(*batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the PEP training loss became {loss.item()} at epoch {epoch}: lower the "
                                         f"learning rate (now {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step, batches, total = step + 1, batches + 1, total + float(loss.detach())
            watcher.observe(margins(), step, epoch)
            if watcher.done:
                break
        with torch.no_grad():
            mean_t = float(torch.cat([t.thresholds().reshape(-1) for t in tables.values()]).mean())
        history.append({"epoch": epoch, "loss": total / max(batches, 1), "kept": watcher.last_count,
                        "density": watcher.last_count / sum(t.num_rows * t.dim for t in tables.values()),
                        "threshold": mean_t, "seconds": time.perf_counter() - start})
        bar.set_postfix(kept=watcher.last_count)
    bar.close()
    watcher.finish(margins(), step, epoch)
    return PEPSearch(backbone, d_max, pep, config, init, dict(model_kwargs), budgets, dict(watcher.taken),
                     initial_state, history, step, time.perf_counter() - start)


def _shuffled(n: int, batch_size: int, rng: np.random.Generator, device):
    order = torch.from_numpy(rng.permutation(n)).to(device)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def ticket_model(searched: PEPSearch, split, density: float) -> nn.Module:
    """The lottery ticket of one budget: the backbone with :class:`~recsize.embedding.ElementMaskedEmbedding`
    tables holding the budget's PEP mask, every weight rewound to its value *before* PEP's training (pruned
    entries 0). Explained in Chapter 4."""
    density = check_budget(density)
    if density not in searched.snapshots:
        raise ValueError(f"the PEP search has no mask for density {density:g}; it watched "
                         f"{', '.join(f'{d:g}' for d in searched.snapshots)}: run pep_search with this budget")
    masks = searched.snapshots[density].masks
    return masked_model(searched.backbone, split, searched.d_max, masks, searched.initial_state,
                        searched.config.seed, searched.init, **searched.model_kwargs)


def run_pep(backbone: str, split, density: float, d_max: int = 64, config=None, pep: PEPConfig | None = None,
            searched: PEPSearch | None = None, **model_kwargs) -> PruneRun:
    """PEP end to end at one budget: the PEP training (or reuse ``searched``, a :func:`pep_search` that
    watched this budget: one search serves every budget; its model settings apply), the budget's exact mask,
    the retraining from the initial weights with the mask fixed (``config``: the search's, else the backbone's
    trainer settings), CSR. Explained in Chapter 4."""
    from ..train import train
    backbone, density = _check_backbone(backbone), check_budget(density)
    config = config or (searched.config if searched is not None else _config(backbone, None))
    if searched is None:
        searched = pep_search(backbone, split, [density], d_max, config, pep, **model_kwargs)
    elif searched.backbone != backbone or searched.d_max != d_max:
        raise ValueError(f"the PEP search was run for {searched.backbone} at d_max = {searched.d_max}, "
                         f"not {backbone} at {d_max}")
    start = time.perf_counter()
    model = ticket_model(searched, split, density)
    result = train(model, split, config)
    snap = searched.snapshots[density]
    info = {"granularity": searched.pep.granularity, "pep": asdict(searched.pep), "snapshot": snap.to_dict(),
            "search": searched.to_dict()}
    return finish_element_run("pep", split, density, d_max, snap.masks, searched.budgets[density], result, info,
                   {"search": searched.seconds, "retrain": time.perf_counter() - start}, searched.init)
