"""The trainer: config checks, NaN detection, early stopping, best-weight restore, checkpoints, devices."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import reference_neumf_scorer
from recsize.backbones import MF
from recsize.evaluate import evaluate_topk
from recsize.train import TrainConfig, atomic_save, default_config, resolve_device, train

QUIET = dict(progress=False, test=False)


class Drift(nn.Module):
    """Scores are a free (users x items) matrix W, initialised to rank every user's validation items
    first. The loss pushes W along a fixed random direction by about ``lr`` per step, so the validation
    metric is perfect after epoch 1 and only gets worse afterwards (with ``direction`` 0 it never changes).
    """

    task = "topk"

    def __init__(self, split, direction_scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(5.0 * torch.from_numpy(split.valid.toarray()))
        g = torch.Generator().manual_seed(0)
        self.D = direction_scale * (torch.randint(0, 2, self.W.shape, generator=g).float() * 2 - 1)

    def loss(self, users, pos, neg):
        return -(self.W * self.D).sum() / self.W.numel()

    def scorer(self):
        return lambda users: self.W[users].clone()


class NaNLoss(MF):
    def loss(self, users, pos, neg):
        return super().loss(users, pos, neg) * float("nan")


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(batch_size=0), dict(eval_every=0), dict(patience=-1),
                                    dict(lr=0.0), dict(lr=-1e-3), dict(lr=float("nan")),
                                    dict(weight_decay=-0.1), dict(lr_decay=0.0), dict(lr_decay=1.5),
                                    dict(lr_patience=-1), dict(min_lr=1.0), dict(min_lr=-1e-6)])
def test_config_rejects_bad_values(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kwargs)


def test_default_config():
    cfg = default_config("fm", epochs=5)
    assert cfg.epochs == 5 and cfg.batch_size == 2048 and cfg.lr == 1e-3


def test_nan_loss_raises(tiny_split):
    model = NaNLoss(tiny_split.n_users, tiny_split.n_items, dim=8)
    with pytest.raises(FloatingPointError) as e:
        train(model, tiny_split, TrainConfig(epochs=3, batch_size=256, **QUIET))
    msg = str(e.value)
    assert "nan" in msg and "epoch 1" in msg and "batch 1/" in msg
    assert "NaNLoss" in msg and "lower the learning rate" in msg


def test_best_weights_are_restored_and_checkpointed(tiny_split, tmp_path):
    model = Drift(tiny_split)
    ckpt = tmp_path / "runs" / "best.pt"
    result = train(model, tiny_split, TrainConfig(epochs=6, batch_size=10 ** 6, lr=1.0, patience=100,
                                                  checkpoint=str(ckpt), progress=False))
    metrics = [row["ndcg@20"] for row in result.history]
    assert len(metrics) == 6
    assert metrics[0] == pytest.approx(1.0) and metrics[-1] < 0.9, metrics
    assert result.best_epoch == 1 and result.valid["ndcg@20"] == pytest.approx(1.0)
    assert result.model is model
    # the model now holds the epoch-1 weights (one Adam step of size lr along D), not the last ones
    want = 5.0 * torch.from_numpy(tiny_split.valid.toarray()) + model.D
    torch.testing.assert_close(model.W.detach(), want, atol=1e-3, rtol=0)
    assert evaluate_topk(model, tiny_split, "valid") == result.valid
    assert result.test is not None and set(result.test) == set(result.valid)
    assert result.test == evaluate_topk(model, tiny_split, "test")
    saved = torch.load(ckpt)
    assert saved["epoch"] == 1 and set(saved["state_dict"]) == {"W"}
    torch.testing.assert_close(saved["state_dict"]["W"], model.W.detach())
    assert saved["config"]["lr"] == 1.0
    assert [p.name for p in ckpt.parent.iterdir()] == ["best.pt"]  # no .part leftovers
    d = result.to_dict()
    assert json.loads(json.dumps(d)) == d and d["config"]["metric"] == "ndcg@20"
    assert d["config"]["model"] == "Drift" and "model" not in {k for k in d if k != "config"}


@pytest.mark.parametrize("patience", [0, 2])
def test_early_stopping(tiny_split, patience):
    model = Drift(tiny_split, direction_scale=0.0)  # the validation metric never improves after epoch 1
    result = train(model, tiny_split, TrainConfig(epochs=50, batch_size=10 ** 6, patience=patience, **QUIET))
    assert len(result.history) == patience + 2
    assert result.best_epoch == 1


def test_lr_decays_on_plateau_and_training_stops_at_min_lr(tiny_split):
    """ReduceLROnPlateau (the DNIS authors' schedule): every evaluation without improvement (patience 0)
    multiplies the lr by lr_decay; training stops once it reaches min_lr, before the early-stopping patience."""
    model = Drift(tiny_split, direction_scale=0.0)  # the validation metric never improves after epoch 1
    config = TrainConfig(epochs=50, batch_size=10 ** 6, lr=1e-3, patience=20, lr_decay=0.1, min_lr=1e-6, **QUIET)
    result = train(model, tiny_split, config)
    lrs = [row["lr"] for row in result.history]
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-5, 1e-6]) and result.best_epoch == 1
    constant = train(Drift(tiny_split, direction_scale=0.0), tiny_split,
                     TrainConfig(epochs=50, batch_size=10 ** 6, patience=5, **QUIET))
    assert len(constant.history) == 7 and "lr" not in constant.history[0]   # lr_decay 1: no scheduler


def test_eval_every(tiny_split):
    model = Drift(tiny_split, direction_scale=0.0)
    result = train(model, tiny_split, TrainConfig(epochs=5, eval_every=2, batch_size=10 ** 6, **QUIET))
    assert ["ndcg@20" in row for row in result.history] == [False, True, False, True, True]


def test_overrides_and_metric(tiny_split):
    model = MF(tiny_split.n_users, tiny_split.n_items, dim=8)
    result = train(model, tiny_split, TrainConfig(epochs=5, batch_size=256, **QUIET), epochs=1,
                   metric="recall@10")
    assert len(result.history) == 1 and "recall@10" in result.history[0]
    assert result.config["metric"] == "recall@10" and result.config["epochs"] == 1
    with pytest.raises(ValueError, match="early-stopping metric"):
        train(model, tiny_split, TrainConfig(epochs=1, metric="auc", **QUIET))


def test_task_checks(tiny_split):
    with pytest.raises(TypeError, match="not a recsize backbone"):
        train(nn.Linear(2, 2), tiny_split, TrainConfig(epochs=1, **QUIET))
    ctr_like = Drift(tiny_split)
    ctr_like.task = "ctr"
    with pytest.raises(ValueError, match="top-k split"):
        train(ctr_like, tiny_split, TrainConfig(epochs=1, **QUIET))


def test_atomic_save_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"

    def boom(obj, f):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"a": 1}, target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_devices_without_cuda(tiny_split):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")
    model = MF(tiny_split.n_users, tiny_split.n_items, dim=8)
    with pytest.raises(ValueError, match="CUDA"):
        train(model, tiny_split, TrainConfig(epochs=1, device="cuda", **QUIET))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda(tiny_split):
    assert resolve_device("auto").type == "cuda"
    model = MF(tiny_split.n_users, tiny_split.n_items, dim=8)
    result = train(model, tiny_split, TrainConfig(epochs=2, batch_size=256, device="cuda", **QUIET))
    assert next(result.model.parameters()).device.type == "cuda"
    assert np.isfinite(result.history[-1]["loss"])


# --- issue 14 (cost target): the faster hot paths give bit-identical training runs ------------------
# The reference implementations below are the code as it was before the speed-ups; every run trained
# with them must equal the run trained with the current code exactly: losses, metrics, best epoch and
# every weight (torch.equal), for every backbone and for the masked tables of the prune benchmark.

def _ref_embedding_forward(self, ids):
    return self.weight[ids]


def _ref_graph_loss(self, users, pos, neg):
    import torch.nn.functional as F
    all_u, all_i = self.propagate()
    u, p, n = all_u[users], all_i[pos], all_i[neg]
    bpr = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
    if not self.reg:
        return bpr
    return bpr + self.reg * self._l2(self.user(users), self.item(pos), self.item(neg))




def _ref_fm_terms(self, x, gates=None):
    self._check(x)
    v = self.feature(x) if gates is None else self.feature(x, gates=gates)
    first = self.linear(x).sum((1, 2)) + self.bias
    second = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(-1)
    return first + second, v


def _ref_element_mask(self, ids=None):
    return (self.keep if ids is None else self.keep[ids]).to(self.weight.dtype)


def _reference_code(monkeypatch):
    import recsize.backbones as bb
    import recsize.embedding as emb
    monkeypatch.setattr(emb.Embedding, "forward", _ref_embedding_forward)
    monkeypatch.setattr(bb.GraphModel, "loss", _ref_graph_loss)
    monkeypatch.setattr(bb.NeuMF, "scorer", reference_neumf_scorer)
    monkeypatch.setattr(bb.CTRModel, "fm_terms", _ref_fm_terms)
    monkeypatch.setattr(emb.ElementMaskedEmbedding, "mask", _ref_element_mask)


def _speed_run(case, split):
    from recsize.backbones import build_backbone, defaults_for
    from recsize.train import seed_everything
    backbone = case.split("_")[0]
    config = default_config(backbone, epochs=3, patience=3, progress=False, batch_size=256)
    if case.endswith("_masked"):
        from recsize.search.prune import element_budget, magnitude_masks, masked_model, table_shapes
        seed_everything(0)
        dense = build_backbone(backbone, split, 16, **defaults_for(backbone)[0])
        budget = element_budget(table_shapes(backbone, split, 16), 0.3, "global")
        masks, _ = magnitude_masks({r: t.table().detach() for r, t in dense.embedding_tables().items()}, budget)
        model = masked_model(backbone, split, 16, masks, dense.state_dict(), 0)
    else:
        seed_everything(0)
        model = build_backbone(backbone, split, 16, **defaults_for(backbone)[0])
    result = train(model, split, config)
    return result, {k: v.clone() for k, v in result.model.state_dict().items()}


@pytest.fixture(scope="module")
def speed_split():
    from recsize.data import make_split, make_synthetic
    # 150 users (two evaluation chunks of NeuMF's full ranking, the second of odd length) x 301 items
    return make_split(make_synthetic(n_users=150, n_items=301, mean_per_user=25, d_true=8, seed=1),
                      "random-811", seed=0)


@pytest.mark.parametrize("case", ["mf", "neumf", "lightgcn", "ngcf", "fm", "deepfm", "lightgcn_masked",
                                  "neumf_masked"])
def test_fast_paths_train_bit_identically(case, speed_split, ctr_split, monkeypatch):
    split = ctr_split if case in ("fm", "deepfm") else speed_split
    new, new_state = _speed_run(case, split)
    again, again_state = _speed_run(case, split)        # deterministic
    with monkeypatch.context() as m:
        _reference_code(m)
        old, old_state = _speed_run(case, split)
    for other, other_state in ((again, again_state), (old, old_state)):
        assert [{k: v for k, v in row.items() if k != "seconds"} for row in new.history] == \
               [{k: v for k, v in row.items() if k != "seconds"} for row in other.history]
        assert new.best_epoch == other.best_epoch and new.valid == other.valid and new.test == other.test
        assert new_state.keys() == other_state.keys()
        assert all(torch.equal(new_state[k], other_state[k]) for k in new_state)


def test_log_progress_is_plain_lines_at_most_every_log_seconds(monkeypatch, capsys):
    """Where stderr is a log or a pipe the command line asks for progress="log": plain lines, no carriage
    returns, the first at once and then at most one every LOG_SECONDS."""
    import recsize.train as tr
    for item in tr.progress_bar(range(5), "log", desc="work", unit="step"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1 and err.startswith("work:"), repr(err)
    monkeypatch.setattr(tr, "LOG_SECONDS", 0.0)
    bar = tr.progress_bar(range(3), "log", desc="work", unit="step", mininterval=0, miniters=1)
    for item in bar:
        bar.set_postfix(item=item)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3 and all(line.startswith("work:") for line in lines) and "item=2" in lines[-1]
    assert not tr.show_progress("log")
    for item in tr.progress_bar(range(3), False, desc="work"):
        pass
    assert capsys.readouterr().err == ""
