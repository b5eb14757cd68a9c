"""CIESS (Chapter 6): random walk, state and reward, TD3, budget selection, checkpoint/resume, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import one_line_error, untimed

from recsize.cli import main
from recsize.data import make_split, make_synthetic
from recsize.search import ciess as ciess_module
from recsize.search.ciess import CIESS, CIESSConfig
from recsize.search.ciess_env import (CIESSEnvironment, budget_bands, combined_density, item_quality, make_state,
                                      normalised_frequency, project_to_budget, quality_ratio, reward, update_candidates,
                                      user_quality)
from recsize.search.td3 import TD3, ReplayBuffer, exploration_noise, random_walk, walk_probabilities


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=40, n_items=50, mean_per_user=8, d_true=6, seed=0), seed=0)


def tiny_config(**kw) -> CIESSConfig:
    base = dict(d_max=8, episodes=2, iterations=3, training="official", iteration_batches=3,
                iteration_batch_size=64, epochs_per_iteration=1, top_l=2, hidden=16, agent_batch_size=32,
                updates_per_iteration=4, full_epochs=3, retrain_epochs=2, patience=1, budgets=(0.6, 0.3),
                sigma=2.0, walk_t=2, walk_length=2, progress=False)
    return CIESSConfig(**{**base, **kw})


# -- the random walk --------------------------------------------------------------------------------

def test_walk_probabilities_by_hand():
    nbrs, p = walk_probabilities(10, 64, t=5)
    assert nbrs.tolist() == [5, 6, 7, 8, 9, 11, 12, 13, 14, 15]
    w = 1 / np.abs(nbrs - 10)
    np.testing.assert_allclose(p, w / w.sum())
    nbrs, p = walk_probabilities(1, 64, t=5)  # at the lower bound only the right-hand side remains
    assert nbrs.tolist() == [2, 3, 4, 5, 6]
    np.testing.assert_allclose(p, np.array([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]) / (137 / 60))
    nbrs, _ = walk_probabilities(63, 64, t=5)
    assert nbrs.tolist() == [58, 59, 60, 61, 62, 64]


def test_random_walk_shape_bounds_and_neighbourhood():
    rng = np.random.default_rng(0)
    start = np.array([-3.0, 1.2, 30.6, 64.0, 99.0] * 200)
    walks = random_walk(start, 64, rng, t=5, length=5)
    assert walks.shape == (1000, 6)
    assert walks[:5, 0].tolist() == [1, 1, 31, 64, 64]  # rounded and clipped start
    assert walks.min() >= 1 and walks.max() <= 64
    steps = np.abs(np.diff(walks, axis=1))
    assert steps.min() >= 1 and steps.max() <= 5  # every step moves, never farther than t


def test_random_walk_step_frequencies_follow_inverse_distance():
    rng = np.random.default_rng(1)
    walks = random_walk(np.full(40000, 20.0), 64, rng, t=5, length=1)
    nbrs, p = walk_probabilities(20, 64, t=5)
    freq = np.array([(walks[:, 1] == n).mean() for n in nbrs])
    np.testing.assert_allclose(freq, p, atol=0.01)
    assert freq.sum() == pytest.approx(1.0)


def test_random_walk_without_neighbours_stays_and_rejects_bad_settings():
    walks = random_walk(np.array([1.0, 5.0]), 1, np.random.default_rng(0), t=3, length=4)
    assert (walks == 1).all()
    with pytest.raises(ValueError, match="t >= 1"):
        random_walk(np.array([1.0]), 8, np.random.default_rng(0), t=0)


def test_exploration_noise_kinds():
    rng = np.random.default_rng(0)
    g, _ = exploration_noise("gaussian", 6.0, 20000, rng)
    u, _ = exploration_noise("uniform", 6.0, 20000, rng)
    assert g.std() == pytest.approx(6.0, rel=0.05) and u.std() == pytest.approx(6.0, rel=0.05)
    assert np.abs(u).max() <= np.sqrt(3) * 6
    x1, s1 = exploration_noise("ou", 6.0, 5, rng)
    x2, s2 = exploration_noise("ou", 6.0, 5, rng, s1)
    assert s2 is x2 and not np.allclose(x1, x2)
    with pytest.raises(ValueError, match="unknown exploration noise"):
        exploration_noise("pink", 1.0, 3, rng)


# -- state, quality, reward -------------------------------------------------------------------------

def test_state_and_reward_by_hand():
    freq = normalised_frequency([2, 4, 0], form="recsize")
    np.testing.assert_allclose(freq, [0.5, 1.0, 0.0])
    s = make_state(freq, [8, 4, 1], [1.0, 0.5, 0.25], d_max=8, form="recsize")
    np.testing.assert_allclose(s, [[0.5, 1.0, 1.0], [1.0, 0.5, 0.5], [0.0, 0.125, 0.25]])
    assert s.dtype == np.float32
    r = reward([1.0, 0.5, 0.25], [8, 4, 1], d_max=8, lam=0.4)
    np.testing.assert_allclose(r, [1.0 - 0.4, 0.5 - 0.4 * 0.25, 0.25 - 0.4 / 64])


def test_quality_ratio_user_and_item_eval_by_hand():
    per_user = {f"{m}@{k}": np.array([v, np.nan, 0.0]) for m, v in (("recall", 0.6), ("ndcg", 0.3))
                for k in (5, 10, 20)}
    users = user_quality(per_user)
    np.testing.assert_allclose(users, [0.45, np.nan, 0.0])
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]], np.float32))
    items = item_quality(users, train)
    np.testing.assert_allclose(items, [0.45, 0.225, np.nan, np.nan])  # item 2: only an undefined user
    q = quality_ratio([0.9, 0.1, 0.5, np.nan], [0.6, 0.2, 0.0, np.nan])
    np.testing.assert_allclose(q, [1.0, 0.5, 1.0, 1.0])  # capped at 1; zero or undefined full eval -> 1
    assert combined_density([8, 4], [2, 2], 8) == pytest.approx(16 / 32)


# -- TD3 --------------------------------------------------------------------------------------------

def test_td3_learns_a_toy_bandit():
    """Fixed state, reward -((a - 10) / d_max)^2, one-step episodes: the actor's width moves to 10."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    d_max, target = 32, 10.0
    agent = TD3(d_max, hidden=32, actor_lr=3e-3, critic_lr=3e-3)
    buffer = ReplayBuffer(5000)
    state = np.array([[0.5, 0.5, 0.5]], np.float32)
    before = abs(agent.act(state)[0] - target)
    for _ in range(8):
        actions = rng.uniform(1, d_max, 256)
        states = np.repeat(state, 256, 0)
        buffer.add(states, actions, -((actions - target) / d_max) ** 2, states, 1.0)
    for _ in range(600):
        agent.update(buffer, 128, rng)
    after = abs(agent.act(state)[0] - target)
    assert before > 4 and after < 1.5
    cands = np.array([[2.0, 10.0, 30.0]])
    assert agent.score(state, cands).argmax() == 1  # the critic prefers the target among candidates


def test_replay_buffer_ring_and_state_dict():
    b = ReplayBuffer(5)
    b.add(np.zeros((3, 3)), [1, 2, 3], 0.5, np.ones((3, 3)), 0.0)
    b.add(np.zeros((4, 3)), [4, 5, 6, 7], [1, 1, 1, 1], np.ones((4, 3)), 1.0)
    assert len(b) == 5 and sorted(b.actions.tolist()) == [3, 4, 5, 6, 7]
    c = ReplayBuffer(1)
    c.load_state_dict(b.state_dict())
    assert len(c) == 5 and c.pos == b.pos and np.array_equal(c.actions, b.actions)


# -- budget selection -------------------------------------------------------------------------------

def test_update_candidates_keeps_top_l_meeting_the_budget():
    kept = []
    masks = [{"density": 0.3, "mean_q": 0.9}, {"density": 0.1, "mean_q": 0.5}, {"density": 0.2, "mean_q": 0.7},
             {"density": 0.15, "mean_q": 0.6}, {"density": 0.2, "mean_q": 0.7, "late": True}]
    for m in masks:
        kept = update_candidates(kept, m, budget=0.2, top_l=2)
    assert [m["mean_q"] for m in kept] == [0.7, 0.7]
    assert "late" not in kept[0] and "late" in kept[1]  # ties keep the earlier mask first
    kept = update_candidates(kept, {"density": 0.05, "mean_q": 0.8}, budget=0.2, top_l=2)
    assert [m["mean_q"] for m in kept] == [0.8, 0.7] and "late" not in kept[1]
    assert all(m["density"] <= 0.2 for m in kept)


def test_project_to_budget_hits_the_total():
    u, i = project_to_budget(np.array([8, 8, 4]), np.array([2, 6]), 0.25, 8)
    assert u.sum() + i.sum() == 10 and u.min() >= 1 and u[0] >= u[2]


# -- the search -------------------------------------------------------------------------------------

def test_search_selects_masks_meeting_each_budget(split):
    """recsize's earlier selection: top-l by mean q anywhere at or under the budget."""
    result = CIESS("mf", split, tiny_config(budgets=(0.99, 0.15), selection="recsize")).run()
    d = result.to_dict()
    json.dumps(d)
    assert len(d["history"]) == 6 and {"reward", "density", "mean_q"} <= set(d["history"][0])
    loose = d["budgets"]["0.99"]
    assert 1 <= len(loose["candidates"]) <= 2
    for c in loose["candidates"]:
        assert c["density"] <= 0.99 and not c["projected"]
        assert c["compact_bytes"] < c["dense_bytes"] and c["parameters"] == sum(c["user_sizes"]) + sum(c["item_sizes"])
    qs = [c["search_mean_q"] for c in loose["candidates"]]
    assert qs == sorted(qs, reverse=True)
    assert max(h["mean_q"] for h in d["history"] if h["density"] <= 0.99) == pytest.approx(qs[0])
    tight = d["budgets"]["0.15"]["best"]  # no mask can be that thin: projected to the budget
    assert tight["projected"] and tight["density"] <= 0.15 + 1e-9
    assert "recall@20" in tight["test"] and "ndcg@20" in tight["test_compact"]


def test_search_is_deterministic(split):
    a = CIESS("lightgcn", split, tiny_config(episodes=1)).run().to_dict()
    b = CIESS("lightgcn", split, tiny_config(episodes=1)).run().to_dict()
    assert untimed(a) == untimed(b)
    c = CIESS("lightgcn", split, tiny_config(episodes=1, seed=1)).run().to_dict()
    assert untimed(a)["history"] != untimed(c)["history"]


def test_checkpoint_resume_equals_uninterrupted(split, tmp_path, monkeypatch):
    config = tiny_config(noise="ou")
    whole = untimed(CIESS("mf", split, config).run().to_dict())
    # interrupted politely after 2 iterations
    assert CIESS("mf", split, config, tmp_path / "a").run(max_iterations=2) is None
    resumed = CIESS("mf", split, config, tmp_path / "a").run(resume=True)
    assert untimed(resumed.to_dict()) == whole
    # interrupted by a crash inside iteration 4: iterations 0-3 are kept, only the one in flight is lost
    calls = {"n": 0}
    real_step = CIESSEnvironment.step

    def crashing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)
    monkeypatch.setattr(CIESSEnvironment, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        CIESS("mf", split, config, tmp_path / "b").run()
    monkeypatch.setattr(CIESSEnvironment, "step", real_step)
    saved = torch.load(tmp_path / "b" / "ciess.pt", weights_only=True)  # plain tensors and numbers only
    assert saved["state"]["done"] == 4
    assert untimed(CIESS("mf", split, config, tmp_path / "b").run(resume=True).to_dict()) == whole
    with pytest.raises(ValueError, match="--resume"):
        CIESS("mf", split, config, tmp_path / "b").run()
    with pytest.raises(ValueError, match="different search"):
        CIESS("mf", split, tiny_config(lam=0.1), tmp_path / "b").run(resume=True)


def test_neumf_sides_share_sizes_and_walk_off(split):
    search = CIESS("neumf", split, tiny_config(episodes=1, iterations=2, random_walk=False, budgets=(0.9,)))
    best = search.run().budgets["0.9"]["best"]
    mem = best["memory"]
    assert mem["user"]["parameters"] == mem["user_mlp"]["parameters"] == sum(best["user_sizes"])
    assert mem["item"]["parameters"] == mem["item_mlp"]["parameters"] == sum(best["item_sizes"])


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(lam=-0.1), "lambda"), (dict(budgets=()), "budgets is empty"), (dict(budgets=(0.2, 1.0)), "strictly between"),
    (dict(budgets=(0.0,)), "strictly between"), (dict(noise="pink"), "unknown exploration noise"),
    (dict(episodes=0), "episodes"), (dict(budgets=(0.01,), d_max=8), "less than one dimension")])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**kw)


def test_bad_backbone_and_schedule(split):
    with pytest.raises(ValueError, match="unknown backbone 'bpr'"):
        CIESS("bpr", split, tiny_config())
    with pytest.raises(ValueError, match="unknown backbone 'fm'"):
        CIESS("fm", split, tiny_config())
    with pytest.raises(ValueError, match="unknown schedule"):
        CIESSConfig.schedule("fast")
    assert CIESSConfig.schedule("paper").episodes == 30 and CIESSConfig.schedule("paper").iterations == 10


# -- CLI --------------------------------------------------------------------------------------------

def test_cli_ciess(tmp_path, capsys):
    out = tmp_path / "ciess.json"
    code = main(["search", "--method", "ciess", "--backbone", "mf", "--dataset", "synthetic", "--dim", "8",
                 "--budgets", "0.5", "0.8", "--lambda", "0.4", "--episodes", "1", "--iterations", "2",
                 "--epochs-per-iteration", "1", "--epochs", "2", "--top-l", "1", "--noise", "uniform",
                 "--checkpoint-dir", str(tmp_path / "ck"), "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "c = 80.0 %" in printed and "c = 50.0 %" in printed and "compact" in printed
    saved = json.loads(out.read_text())
    assert set(saved["budgets"]) == {"0.5", "0.2"} and saved["config"]["noise"] == "uniform"
    assert (tmp_path / "ck" / "ciess.pt").exists()


@pytest.mark.parametrize("args, match", [
    (["--method", "ciess", "--budgets", "1.2"], "pruned fraction"),
    (["--method", "ciess", "--lambda", "-1"], ">= 0"),
    (["--method", "mr"], "one of the arguments --budget --sparsity is required")])
def test_cli_ciess_rejects_bad_input(args, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", *args])
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_budgets_only_for_ciess(capsys):
    assert main(["search", "--method", "es", "--budgets", "0.9"]) == 2
    assert "--budgets is for --method ciess" in capsys.readouterr().err


def test_runs_on_the_ciess_protocol():
    data = make_synthetic(n_users=40, n_items=50, mean_per_user=8, d_true=6, seed=1)
    split = make_split(data, "ciess-50-25-25", seed=0)
    result = CIESS("lightgcn", split, tiny_config(episodes=1, iterations=2, budgets=(0.9,))).run()
    assert len(result.history) == 2 and result.budgets["0.9"]["best"]["density"] <= 0.9


def test_cli_ciess_official_settings(tmp_path, capsys):
    out = tmp_path / "ciess.json"
    code = main(["search", "--method", "ciess", "--backbone", "mf", "--dataset", "synthetic", "--dim", "8",
                 "--budgets", "0.5", "--episodes", "1", "--iterations", "2", "--training", "official",
                 "--iteration-batches", "2", "--epochs", "2", "--top-l", "1", "--selection", "ndcg",
                 "--reward", "paper", "--pace", "recsize", "--state", "recsize", "--exploration", "per-entity",
                 "--no-rescale", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "reward paper, lambda = 0.4" in printed and "2 batches of 10000" in printed
    saved = json.loads(out.read_text())["config"]
    assert (saved["training"], saved["iteration_batches"], saved["selection"], saved["pace"], saved["state"],
            saved["exploration"], saved["rescale"], saved["lam"]) == \
        ("official", 2, "ndcg", "recsize", "recsize", "per-entity", False, 0.4)
    assert saved["resolved"]["iteration_training"]["batches"] == 2


@pytest.mark.parametrize("args, needles", [
    (["--training", "official", "--epochs-per-iteration", "2"], ["--epochs-per-iteration is for --training epochs"]),
    (["--iteration-batches", "5"], ["--iteration-batches is for --training official", "--training official"]),
    (["--schedule", "paper", "--epochs-per-iteration", "2"], ["--epochs-per-iteration", "--iteration-batches"])])
def test_cli_ciess_training_flags_must_agree(args, needles, no_work, capsys):
    one_line_error(capsys, main(["search", "--method", "ciess", *args]), *needles)


@pytest.mark.parametrize("flag", [["--reward", "paper"], ["--pace", "recsize"], ["--selection", "ndcg"],
                                  ["--exploration", "per-entity"], ["--state", "recsize"], ["--no-rescale"],
                                  ["--training", "epochs"], ["--iteration-batches", "3"]])
def test_cli_ciess_flags_only_for_ciess(flag, no_work, capsys):
    name = flag[0]
    one_line_error(capsys, main(["search", "--method", "es", "--budget", "0.5", *flag]),
                   f"{name} is for --method ciess")


def test_ciess_script_allocation_retrains_equal_widths_at_the_masks_count_and_the_scaled_mask(
        tiny_split, monkeypatch, tmp_path, capsys):
    """Issue 16, experiment 1: for a mask found inside its budget, equal widths with exactly its
    parameters and the mask scaled to the budget are retrained; resumable; nothing to do is one line."""
    import json
    import sys
    from pathlib import Path
    import numpy as np
    from recsize.budget import target_parameters
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("ciess", None)
    import ciess as bench
    monkeypatch.setattr(bench, "prepare", lambda *a, **k: tiny_split)
    stored = tmp_path / "quick.json"
    assert bench.main(["--quick", "--part", "ciess", "--no-ablation", "--out", str(stored)]) == 0
    data = json.loads(stored.read_text())
    with pytest.raises(SystemExit, match="no CIESS mask inside its budget"):
        for r in data["runs"]:
            r["projected"] = True
        stored.write_text(json.dumps(data))
        bench.main(["--allocation", str(stored), "--out", str(tmp_path / "a.json")])
    mask = data["runs"][0]
    rng = np.random.default_rng(0)
    n_users, n_items = tiny_split.n_users, tiny_split.n_items
    mask["sizes"] = {"user": rng.integers(1, 8, n_users).tolist(), "item": rng.integers(1, 8, n_items).tolist()}
    mask["projected"], mask["parameters"] = False, int(sum(mask["sizes"]["user"]) + sum(mask["sizes"]["item"]))
    stored.write_text(json.dumps(data))
    out = tmp_path / "allocation.json"
    assert bench.main(["--allocation", str(stored), "--retrain-epochs", "3", "--out", str(out)]) == 0
    runs = {r["method"]: r for r in json.loads(out.read_text())["runs"]}
    d_max = data["settings"]["d_max"]
    assert set(runs) == {"ciess/as-found", "ciess/es-at-mask", "ciess/scaled"}
    assert runs["ciess/as-found"]["sizes"] == mask["sizes"] and json.loads(out.read_text())["retrain_epochs"] == 3
    assert all(r["best_epoch"] <= 3 for r in runs.values())
    assert runs["ciess/es-at-mask"]["parameters"] == mask["parameters"]
    equal = np.concatenate([runs["ciess/es-at-mask"]["sizes"][side] for side in ("user", "item")])
    assert equal.max() - equal.min() <= 1                                           # equal widths
    scaled = np.concatenate([runs["ciess/scaled"]["sizes"][side] for side in ("user", "item")])
    widths = np.concatenate([mask["sizes"]["user"], mask["sizes"]["item"]])
    assert np.corrcoef(scaled, widths)[0, 1] > 0.9                                  # proportions kept
    assert runs["ciess/scaled"]["parameters"] == target_parameters(mask["density"], n_users + n_items, d_max)
    assert runs["ciess/scaled"]["mask_recall@20"] == mask["recall@20"]
    first = out.read_text()
    assert bench.main(["--allocation", str(stored), "--retrain-epochs", "3", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["runs"] == json.loads(first)["runs"]       # resumed: nothing redone
    with pytest.raises(SystemExit, match="retrain_epochs 3, not 4"):
        bench.main(["--allocation", str(stored), "--retrain-epochs", "4", "--out", str(out)])
    with pytest.raises(SystemExit):
        bench.main(["--allocation", str(stored)])
    assert "--allocation writes its own file" in capsys.readouterr().err


def test_run_can_search_only_then_retrain_a_subset(split):
    search = CIESS("mf", split, tiny_config(episodes=1))
    first = search.run(budgets=())
    assert first.budgets == {} and len(first.history) == 3 and first.seconds["retrain"] == 0
    again = search.run(budgets=(0.3,))                       # no second search: the history is the same
    assert list(again.budgets) == ["0.3"] and len(again.history) == 3
    whole = CIESS("mf", split, tiny_config(episodes=1)).run().to_dict()
    assert untimed(again.to_dict())["budgets"]["0.3"] == untimed(whole)["budgets"]["0.3"]
    with pytest.raises(ValueError, match="not among the config's"):
        search.run(budgets=(0.5,))


def test_settled_density_is_the_last_episodes_mean():
    history = [{"density": d} for d in (0.9, 0.8, 0.5, 0.3, 0.1)]
    assert ciess_module.settled_density(history, 2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no history"):
        ciess_module.settled_density([], 2)


def test_lambda_per_budget_bisects_towards_the_band(split):
    """Each step moves lambda up when the search settled above the budget and down when below its
    band; the retrained masks come from the accepted (or nearest) search; deterministic."""
    config = tiny_config(episodes=1, reward="paper", budgets=(0.6, 0.3))
    out = ciess_module.lambda_per_budget("mf", split, config, bracket=(0.01, 100.0), steps=3)
    assert list(out) == [0.6, 0.3]
    for b, got in out.items():
        trace = got["trace"]
        assert 1 <= len(trace) <= 3 and got["band"] == list(budget_bands(config.budgets)[b])
        assert trace[0]["lam"] == pytest.approx(1.0)                                # geometric middle
        for before, after in zip(trace, trace[1:]):
            assert not before["in_band"]
            assert (after["lam"] > before["lam"]) == (before["settled_density"] >= b)
        lower = got["band"][0]
        gap = [0 if t["in_band"] else min(abs(t["settled_density"] - lower), abs(t["settled_density"] - b))
               for t in trace]
        assert got["lam"] == trace[int(np.argmin(gap))]["lam"] and got["in_band"] == (min(gap) == 0)
        assert "recall@20" in got["budget"]["best"]["test"]
    again = ciess_module.lambda_per_budget("mf", split, config, bracket=(0.01, 100.0), steps=3)
    assert [t["settled_density"] for t in again[0.3]["trace"]] == [t["settled_density"] for t in out[0.3]["trace"]]
    for kw, match in ((dict(bracket=(1.0, 0.5)), "bracket"), (dict(steps=0), "steps"),
                      (dict(which=(0.7,)), "not among")):
        with pytest.raises(ValueError, match=match):
            ciess_module.lambda_per_budget("mf", split, config, **kw)


def test_ciess_script_lambda_per_budget_records_the_bisection(tiny_split, monkeypatch, tmp_path, capsys):
    import sys
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("ciess", None)
    import ciess as bench
    monkeypatch.setattr(bench, "prepare", lambda *a, **k: tiny_split)
    out = tmp_path / "bisect.json"
    args = ["--quick", "--part", "ciess", "--reward", "paper", "--lambda-per-budget", "--bracket", "0.1", "1.6",
            "--steps", "2", "--bisect", "0.9", "--label", "bisect", "--out", str(out)]
    assert bench.main(args) == 0
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    assert run["method"] == "bisect" and run["density"] == 0.1 and run["band"] == [0.05, 0.1]
    assert 1 <= len(run["trace"]) <= 2 and run["trace"][0]["lam"] == pytest.approx(0.4)
    assert run["lambda"] in [t["lam"] for t in run["trace"]]
    assert "lambda" in capsys.readouterr().out
    for bad, needle in ((["--bisect", "0.7"], "--bisect takes sparsities"), (["--steps", "0"], "--steps must be"),
                        (["--bracket", "2", "1"], "--bracket must be")):
        with pytest.raises(SystemExit):
            bench.main([*args[:-2], *bad, "--out", str(tmp_path / "x.json")])
        assert needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--lambda-per-budget", "--out", str(tmp_path / "x.json")])
    assert "add --part ciess" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
