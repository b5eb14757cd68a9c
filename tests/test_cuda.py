"""The package is device-agnostic: on every device every backbone trains and evaluates, the core's
tables convert, look up and back-propagate exactly as on the CPU, and every search method (baselines,
DNIS, CIESS, iHAS) runs end to end.

Every test takes a ``device``: "cpu" always (CI runs these bodies, so they cannot rot unseen) and
"cuda" where a GPU is present (``pytest tests/test_cuda.py`` on a machine with one). Only the device
differs between the two runs: a module is copied before it is moved (``Module.to`` moves in place and
returns the same module) and ids are put on the device of the module that reads them."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import tiny_ctr_split

from recsize.data import make_synthetic_ctr, split_ctr
from recsize.embedding import CompactEmbedding, MaskedEmbedding
from recsize.search import run_baseline
from recsize.search.ciess import CIESS, CIESSConfig
from recsize.search.dnis import DNISConfig, run_dnis
from recsize.search.prune import element_budget, table_shapes
from recsize.search.ihas import IHASConfig, run_ihas
from recsize.train import TrainConfig, default_config, fit

DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def quiet(device: str) -> dict:
    return dict(progress=False, device=device)


@pytest.fixture(scope="module")
def ctr_split():
    return tiny_ctr_split(600)


def on_device(model, device: str) -> bool:
    return all(p.device.type == device for p in model.parameters())


@pytest.mark.parametrize("backbone", ["mf", "neumf", "ngcf", "lightgcn"])
def test_topk_backbones_train_on_device(backbone, topk_split, device):
    result = fit(backbone, topk_split, dim=8, config=default_config(backbone, epochs=2, **quiet(device)))
    assert on_device(result.model, device)
    assert np.isfinite(result.history[-1]["loss"])
    assert 0.0 <= result.test["recall@20"] <= 1.0


@pytest.mark.parametrize("backbone", ["fm", "deepfm"])
def test_ctr_backbones_train_on_device(backbone, ctr_split, device):
    result = fit(backbone, ctr_split, dim=8, config=default_config(backbone, epochs=2, **quiet(device)))
    assert on_device(result.model, device)
    assert 0.0 <= result.test["auc"] <= 1.0 and np.isfinite(result.test["logloss"])


def test_core_lookups_match_the_cpu_bit_for_bit(device):
    torch.manual_seed(0)
    sizes = torch.randint(0, 17, (300,))
    masked = MaskedEmbedding(300, 16, sizes)
    compact = CompactEmbedding.from_masked(masked)
    ids = torch.randint(0, 300, (50, 7))
    want = compact(ids)
    moved = copy.deepcopy(compact).to(device)                # .to moves in place: the CPU table stays
    assert moved.values.device.type == device and compact.values.device.type == "cpu"
    on = ids.to(device)
    assert torch.equal(moved(on).cpu(), want)
    assert torch.equal(CompactEmbedding.from_masked(copy.deepcopy(masked).to(device))(on).cpu(), want)
    assert torch.equal(moved.to_masked()(on).cpu(), want)
    buckets = moved.export_buckets(round_to=4)
    assert torch.equal(buckets.lookup(on).cpu(), want)
    # the gradient of the compact values: the same on both devices (up to summation order)
    grad = torch.randn(50, 7, 16)
    (compact(ids) * grad).sum().backward()
    (moved(on) * grad.to(device)).sum().backward()
    assert compact.values.grad is not None and moved.values.grad.device.type == device
    assert torch.allclose(moved.values.grad.cpu(), compact.values.grad, atol=1e-5)


def test_baseline_search_on_device(topk_split, device):
    config = default_config("lightgcn", epochs=2, **quiet(device))
    run = run_baseline("lightgcn", topk_split, "mde", 0.2, 8, config, seed=0)
    assert on_device(run.model, device)
    assert run.memory["total"]["compact"] < run.memory["total"]["dense"]
    assert run.test_compact["recall@20"] == pytest.approx(run.result.test["recall@20"], abs=1e-6)


@pytest.mark.parametrize("backbone,split", [("lightgcn", "topk_split"), ("deepfm", "ctr_split")])
def test_dnis_on_device(backbone, split, request, device):
    """DNIS's in-place derivation keeps ``density`` of the dense tables' *bytes*, the CSR index included:
    at d_max = 8 the row offsets alone take a quarter, so the budget is 0.5."""
    split = request.getfixturevalue(split)
    config = DNISConfig(d_max=8, blocks=4, warm_epochs=1, search_epochs=2, retrain_epochs=2, device=device,
                        progress=False, train_overrides={"batch_size": 128, "lr": 1e-2})
    run = run_dnis(backbone, split, 0.5, config)
    assert on_device(run.run.model, device)
    budget = element_budget(table_shapes(backbone, split, 8), 0.5, "global")
    assert sum(int(s.sum()) for s in run.sizes.values()) == budget["entries"] > 0
    assert run.run.memory["total"]["csr"] <= budget["budget_bytes"]


def test_ciess_on_device(topk_split, device):
    config = CIESSConfig(d_max=8, episodes=1, iterations=2, iteration_batches=3, iteration_batch_size=64,
                         epochs_per_iteration=1, top_l=1, hidden=16,
                         agent_batch_size=16, updates_per_iteration=2, full_epochs=2, retrain_epochs=2,
                         patience=1, budgets=(0.5,), sigma=2.0, walk_t=2, walk_length=2, progress=False,
                         device=device)
    result = CIESS("lightgcn", topk_split, config).run()
    best = result.to_dict()["budgets"]["0.5"]["best"]
    assert best["density"] <= 0.5 + 1e-9 and 0.0 <= best["test"]["recall@20"] <= 1.0


def test_ihas_on_device(device):
    split = split_ctr(make_synthetic_ctr(1500, 5, 2, seed=0, cardinality=12), seed=0)
    config = IHASConfig(clusters=2, n_blocks=2, route_dim=1, hidden=4, search_epochs=2, batch_size=256, n_init=2)
    run = run_ihas("fm", split, 0.5, 8, config,
                   TrainConfig(epochs=2, batch_size=256, lr=1e-2, patience=1, **quiet(device)), seed=0)
    assert all(on_device(m, device) for m in run.models)
    assert 0.0 <= run.test["auc"] <= 1.0
    assert run.route(split.data.X[split.test][:20]).shape == (20,)
