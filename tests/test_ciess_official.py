"""CIESS as its authors ran it (issue 16, Chapter 6): every official behaviour and every remaining
departure, each a named setting of CIESSConfig. Fast: the recommender's training is stubbed out except
where the per-iteration training itself is under test."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from conftest import untimed
from recsize.data import make_split, make_synthetic
from recsize.search import ciess as ciess_module
from recsize.search import td3 as td3_module
from recsize.search.ciess import CIESS, OFFICIAL_TRAINING, CIESSConfig
from recsize.search.ciess_env import budget_bands, make_state, normalised_frequency, reward, update_candidates
from recsize.search.td3 import TD3, ReplayBuffer, action_feature, pace_settings


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=30, n_items=40, mean_per_user=8, d_true=6, seed=0), seed=0)


def config(**kw) -> CIESSConfig:
    base = dict(d_max=16, episodes=1, iterations=3, training="official", iteration_batches=2,
                iteration_batch_size=32, top_l=3, hidden=8, full_epochs=2, retrain_epochs=1, patience=0,
                budgets=(0.5, 0.25), walk_length=3, progress=False)
    return CIESSConfig(**{**base, **kw})


def stubbed(split, **kw) -> CIESS:
    """A search whose environment returns fixed qualities instead of training a recommender."""
    search = CIESS("mf", split, config(**kw))
    nu, ni = split.n_users, split.n_items
    search.env.full_user_eval, search.env.full_item_eval = np.full(nu, 0.4), np.full(ni, 0.4)
    search.state["reference"] = {"user_eval": search.env.full_user_eval, "item_eval": search.env.full_item_eval}
    calls = []

    def step(user_sizes, item_sizes, training, seed):
        calls.append((np.array(user_sizes), np.array(item_sizes), training, seed))
        users = np.linspace(0.1, 0.3, nu)
        users[0] = np.nan  # a user without validation positives
        items = np.linspace(0.2, 0.4, ni)
        return {"q_user": np.minimum(np.nan_to_num(users) / 0.4, 1), "q_item": items / 0.4, "user_eval": users,
                "item_eval": items, "valid": {"recall@20": 0.3, "ndcg@20": 0.1 + 0.01 * len(calls)}}
    search.env.step = step
    search.calls = calls
    return search


# -- exploration ------------------------------------------------------------------------------------

def test_official_noise_is_added_after_the_critics_pick(split, monkeypatch):
    search = stubbed(split)
    states = np.zeros((4, 3), np.float32)
    agent = search.agents["user"]
    monkeypatch.setattr(agent, "act", lambda s: np.array([3.2, 7.0, 15.6, 1.0]))
    visited = np.array([[3, 5, 6], [7, 9, 8], [16, 15, 14], [1, 2, 3]])
    seen = {}

    def walk(start, d_max, rng, t, length):
        seen["start"], seen["t"] = np.array(start), t
        return visited
    monkeypatch.setattr(ciess_module, "random_walk", walk)
    monkeypatch.setattr(agent, "score", lambda s, a: np.asarray(a, float))  # the critic prefers wide
    widths = search.choose_widths("user", states, noise=2.6)
    np.testing.assert_array_equal(seen["start"], [3.2, 7.0, 15.6, 1.0])  # the walk starts at the actor
    np.testing.assert_array_equal(widths, [9, 12, 16, 6])  # best visited + 2.6, rounded, clipped to 16
    np.testing.assert_array_equal(search.choose_widths("user", states, noise=-9.0), [1, 1, 7, 1])
    with pytest.raises(ValueError, match="pass noise"):
        search.choose_widths("user", states)


def test_per_entity_noise_is_added_before_the_walk(split, monkeypatch):
    search = stubbed(split, exploration="per-entity", sigma=64.0)
    agent = search.agents["item"]
    monkeypatch.setattr(agent, "act", lambda s: np.full(len(s), 8.0))
    seen = {}

    def walk(start, d_max, rng, t, length):
        seen["start"] = np.array(start)
        return np.stack([np.clip(np.rint(start), 1, d_max)] * 2, 1).astype(np.int64)
    monkeypatch.setattr(ciess_module, "random_walk", walk)
    widths = search.choose_widths("item", np.zeros((50, 3), np.float32))
    assert len(np.unique(seen["start"])) == 50  # one independent draw per entity, before the walk
    np.testing.assert_array_equal(widths, np.clip(np.rint(seen["start"]), 1, 16))  # nothing after the pick


def test_one_noise_scalar_per_iteration_shared_by_users_and_items(split, monkeypatch):
    search = stubbed(split)
    draws, noises = [], []
    real = ciess_module.exploration_noise

    def counting(kind, sigma, n, rng, state=None):
        draws.append(n)
        return real(kind, sigma, n, rng, state)
    monkeypatch.setattr(ciess_module, "exploration_noise", counting)
    real_choose = search.choose_widths

    def choose(side, states, noise=None):
        noises.append((side, noise))
        return real_choose(side, states, noise)
    monkeypatch.setattr(search, "choose_widths", choose)
    rows = [search.iteration(g) for g in range(3)]
    assert draws == [1, 1, 1]  # one scalar per iteration
    for g in range(3):
        (s1, n1), (s2, n2) = noises[2 * g:2 * g + 2]
        assert (s1, s2) == ("user", "item") and n1 == n2 == rows[g]["noise"]
    assert len({r["noise"] for r in rows}) == 3


def test_noise_and_walk_rescale_with_d_max():
    at64 = CIESSConfig(d_max=64)
    assert at64.exploration_sigma() == pytest.approx(3.0) and at64.walk_neighbourhood() == 3
    at128 = CIESSConfig(d_max=128)
    assert at128.exploration_sigma() == pytest.approx(6.0) and at128.walk_neighbourhood() == 5
    assert CIESSConfig(d_max=8, budgets=(0.5,)).walk_neighbourhood() == 1  # never below 1
    old = CIESSConfig(d_max=64, rescale=False)
    assert old.exploration_sigma() == 6.0 and old.walk_neighbourhood() == 5
    rng = np.random.default_rng(0)
    search_sigma = [ciess_module.exploration_noise("gaussian", at64.exploration_sigma(), 1, rng)[0][0]
                    for _ in range(4000)]
    assert np.std(search_sigma) == pytest.approx(3.0, rel=0.05)


# -- state ------------------------------------------------------------------------------------------

def test_official_state_is_in_minus_one_one():
    freq = normalised_frequency([2, 4, 0])
    np.testing.assert_allclose(freq, [0.0, 1.0, -1.0])
    np.testing.assert_allclose(normalised_frequency([3, 3]), [0.0, 0.0])  # all equal: no division by 0
    s = make_state(freq, [16, 1, 6], [1.0, 0.0, 0.25], d_max=16)
    np.testing.assert_allclose(s, [[0, 1, 1], [1, -1, -1], [-1, 5 / 15 * 2 - 1, -0.5]], atol=1e-7)
    assert s.dtype == np.float32 and np.abs(s).max() <= 1
    assert action_feature(torch.tensor([1.0, 16.0]), 16, True).tolist() == [-1.0, 1.0]
    assert action_feature(torch.tensor([8.0]), 16, False).tolist() == [0.5]
    with pytest.raises(ValueError, match="unknown state"):
        make_state(freq, [1, 1, 1], [1, 1, 1], 16, form="raw")


def test_episode_starts_with_the_codes_state(split):
    search = stubbed(split)
    states = []
    real = ciess_module.make_state

    def spy(*args, **kw):
        states.append(real(*args, **kw))
        return states[-1]
    ciess_module.make_state, saved = spy, ciess_module.make_state
    try:
        search.iteration(0)
    finally:
        ciess_module.make_state = saved
    first = states[0]  # the users' state before the first action: full width, quality reset to 0
    assert (first[:, 1] == 1).all() and (first[:, 2] == 0).all()
    assert first[:, 0].min() == -1 and first[:, 0].max() == 1
    recsize = stubbed(split, state="recsize")
    assert recsize.start_q == 1.0 and recsize.freq["user"].min() >= 0


# -- reward -----------------------------------------------------------------------------------------

def test_both_reward_forms_by_hand():
    code = reward([0.3, 0.3, np.nan], [1, 16, 9], d_max=16, lam=0.01, form="code")
    np.testing.assert_allclose(code, [0.3, 0.3 - 0.01 * (15 / 16) ** 2, -0.01 * (8 / 16) ** 2])
    paper = reward([1.0, 0.5], [16, 4], d_max=16, lam=0.4, form="paper")
    np.testing.assert_allclose(paper, [0.6, 0.5 - 0.4 / 16])
    with pytest.raises(ValueError, match="unknown reward"):
        reward([1.0], [1], 16, 0.1, form="mixed")
    assert CIESSConfig().reward == "code" and CIESSConfig().lam == 0.01
    assert CIESSConfig(reward="paper").lam == 0.4 and CIESSConfig(reward="paper", lam=0.1).lam == 0.1


@pytest.mark.parametrize("form", ["code", "paper"])
def test_the_search_pays_the_chosen_reward(split, form):
    search = stubbed(split, reward=form)
    row = search.iteration(0)
    user_sizes = search.calls[0][0]
    users = np.linspace(0.1, 0.3, split.n_users)
    users[0] = np.nan
    quality = users if form == "code" else np.minimum(np.nan_to_num(users) / 0.4, 1)
    expected = reward(quality, user_sizes, 16, search.config.lam, form).mean()
    assert row["reward_user"] == pytest.approx(expected)


# -- TD3 pace ---------------------------------------------------------------------------------------

def test_pace_settings_official_and_recsize():
    off = pace_settings("official", 64, scale=0.5)
    assert (off["batch_size"], off["updates"], off["critic_lr"], off["actor_lr"], off["grad_clip"]) == \
        (4096, 1, 3e-3, 1e-3, 0.01)
    assert off["target_sigma"] == 1.0 and off["target_clip"] == 2.5 and off["shared_target_noise"]
    assert off["critic_target_every_step"] and off["output_init"] == 3e-3 and not off["use_done"]
    old = pace_settings("recsize", 64)
    assert (old["batch_size"], old["updates"], old["critic_lr"], old["grad_clip"]) == (256, 32, 1e-3, None)
    assert old["target_sigma"] == pytest.approx(0.2 * 31.5) and old["target_clip"] == pytest.approx(0.5 * 31.5)
    with pytest.raises(ValueError, match="unknown TD3 pace"):
        pace_settings("fast", 64)
    c = CIESSConfig(d_max=128, critic_lr=1e-4, agent_batch_size=64)
    assert c.agent_settings()["critic_lr"] == 1e-4 and c.agent_settings()["batch_size"] == 64
    assert c.agent_settings()["target_sigma"] == 2.0  # the code's N(0, 2) at d_max = 128


def _official_td3(**kw):
    torch.manual_seed(0)
    settings = {k: v for k, v in pace_settings("official", 16, 16 / 128).items()
                if k not in ("batch_size", "updates", "wait_for_batch")}
    return TD3(16, hidden=8, **{**settings, **kw})


def test_official_td3_init_lrs_and_target_noise():
    agent = _official_td3()
    assert agent.actor.net[-1].weight.abs().max() <= 3e-3
    assert agent.critic_opt.param_groups[0]["lr"] == 3e-3 and agent.actor_opt.param_groups[0]["lr"] == 1e-3
    noise = agent.target_noise(4096, np.random.default_rng(0))
    assert len(np.unique(noise)) == 1 and abs(noise[0]) <= 5 * 16 / 128  # one clipped scalar per batch
    per_sample = TD3(16, hidden=8).target_noise(4096, np.random.default_rng(0))
    assert len(np.unique(per_sample)) > 100 and np.abs(per_sample).max() <= 0.5 * 7.5


def _buffer(done: float) -> ReplayBuffer:
    b = ReplayBuffer(64)
    b.add(np.full((64, 3), 0.3), np.full(64, 5.0), 0.0, np.full((64, 3), 0.3), done)
    return b


def test_official_td3_clips_moves_the_critic_target_every_step_and_ignores_done(monkeypatch):
    clipped = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        clipped.append(max_norm)
        return real(params, max_norm, *a, **kw)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    agent = _official_td3()
    actor_t = [p.clone() for p in agent.actor_target.parameters()]
    critic_t = [p.clone() for p in agent.critic_target.parameters()]
    agent.update(_buffer(1.0), 16, np.random.default_rng(0))  # step 1: critic only
    assert clipped == [0.01]
    assert any(not torch.equal(a, b) for a, b in zip(critic_t, agent.critic_target.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(actor_t, agent.actor_target.parameters()))
    agent.update(_buffer(1.0), 16, np.random.default_rng(0))  # step 2: critic and actor, both clipped
    assert clipped == [0.01, 0.01, 0.01]
    assert any(not torch.equal(a, b) for a, b in zip(actor_t, agent.actor_target.parameters()))
    # the recsize pace moves no target on a critic-only step and clips nothing
    old = TD3(16, hidden=8)
    before = [p.clone() for p in old.critic_target.parameters()]
    old.update(_buffer(1.0), 16, np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip(before, old.critic_target.parameters()))
    assert clipped == [0.01, 0.01, 0.01]


@pytest.mark.parametrize("use_done", [True, False])
def test_terminal_flag_only_with_the_recsize_pace(use_done):
    """Every transition terminal, reward 0: with use_done the target is 0, so the critic loss is
    Q1^2 + Q2^2; the official target ignores the flag and bootstraps."""
    agent = _official_td3(use_done=use_done)
    s, a = torch.full((1, 3), 0.3), torch.full((1,), 5.0)
    with torch.no_grad():
        q1, q2 = agent.critic(s, a)
    loss = agent.update(_buffer(1.0), 16, np.random.default_rng(0))["critic_loss"]
    zero_target = float(q1[0] ** 2 + q2[0] ** 2)
    assert (loss == pytest.approx(zero_target, rel=1e-5)) == use_done


def test_official_pace_steps_once_per_iteration_from_the_first(split):
    search = stubbed(split, agent_batch_size=None, updates_per_iteration=None)
    search.iteration(0)
    assert search.agents["user"].updates == 1 and search.agents["item"].updates == 1  # 30 < 4096: with replacement
    assert search.buffers["user"].capacity == 100 * split.n_users
    old = stubbed(split, pace="recsize", agent_batch_size=None, updates_per_iteration=None)
    old.iteration(0)
    assert old.agents["user"].updates == 0  # waits for a whole batch of 256
    assert old.buffers["user"].capacity == 100 * split.n_users


# -- selection --------------------------------------------------------------------------------------

def test_budget_bands():
    assert budget_bands((0.2, 0.1, 0.05)) == {0.05: (0.0, 0.05), 0.1: (0.05, 0.1), 0.2: (0.1, 0.2)}


def test_official_selection_by_band_and_raw_user_quality():
    masks = [{"density": 0.2, "mean_user_quality": 0.9}, {"density": 0.15, "mean_user_quality": 0.3},
             {"density": 0.1, "mean_user_quality": 0.5}, {"density": 0.05, "mean_user_quality": 0.8},
             {"density": 0.12, "mean_user_quality": 0.4}, {"density": 0.19, "mean_user_quality": 0.35},
             {"density": 0.11, "mean_user_quality": 0.6}, {"density": 0.04, "mean_user_quality": 0.1}]
    bands = budget_bands((0.2, 0.1, 0.05))
    kept = {b: [] for b in bands}
    for m in masks:
        for b, (lo, _) in bands.items():
            kept[b] = update_candidates(kept[b], m, b, 3, "mean_user_quality", lo)
    assert [m["density"] for m in kept[0.2]] == [0.11, 0.1, 0.12]  # by quality; 0.2 is not under 0.2
    assert [m["density"] for m in kept[0.1]] == [0.05]  # 0.1 belongs to 0.2's band, 0.04 to 0.05's
    assert [m["density"] for m in kept[0.05]] == [0.04]
    recsize = []
    for m in masks:
        recsize = update_candidates(recsize, {**m, "mean_q": m["mean_user_quality"]}, 0.1, 3)
    assert [m["density"] for m in recsize] == [0.05, 0.1, 0.04]  # anywhere at or under the budget


@pytest.mark.parametrize("selection, key", [("official", "mean_user_quality"), ("ndcg", "valid_ndcg@20"),
                                            ("recsize", "mean_q")])
def test_the_search_selects_with_the_named_rule(split, monkeypatch, selection, key):
    search = stubbed(split, selection=selection, budgets=(0.5, 0.25), iterations=4)
    for g, width in enumerate([8, 6, 3, 2]):  # densities 0.5, 0.375, 0.1875, 0.125
        monkeypatch.setattr(search, "choose_widths",
                            lambda side, states, noise=None, w=width: np.full(len(states), w, np.int64))
        row = search.iteration(g)
        assert row["valid_ndcg@20"] == pytest.approx(0.1 + 0.01 * (g + 1))
    got = {b: [m["density"] for m in search.state["candidates"][b]] for b in (0.5, 0.25)}
    if selection == "recsize":  # at or under the budget; every mask has the same mean q: order kept
        assert got[0.5] == [0.5, 0.375, 0.1875] and got[0.25] == [0.1875, 0.125]
    else:  # bands [0.25, 0.5) and [0, 0.25)
        assert got[0.5] == [0.375]
        ranked = [m[key] for m in search.state["candidates"][0.25]]
        assert sorted(got[0.25]) == [0.125, 0.1875] and ranked == sorted(ranked, reverse=True)
        if selection == "ndcg":  # the later iteration had the higher validation NDCG@20
            assert got[0.25] == [0.125, 0.1875]


# -- per-iteration training -------------------------------------------------------------------------

def test_official_training_settings_per_backbone():
    c = CIESSConfig()
    assert c.training == "official"
    lg = c.iteration_training("lightgcn")
    assert (lg["batches"], lg["batch_size"], lg["lr"], lg["decay"], lg["decay_every"], lg["min_lr"]) == \
        (2000, 10_000, 0.03, 0.9, 200, 1e-3)
    assert OFFICIAL_TRAINING["neumf"] == (1500, 50, 1e-4) and OFFICIAL_TRAINING["ngcf"] == (3000, 100, 1e-3)
    mine = CIESSConfig(iteration_batches=7, lr_decay_every=3, min_lr=0.0).iteration_training("neumf")
    assert (mine["batches"], mine["decay_every"], mine["min_lr"]) == (7, 3, 0.0)
    assert CIESSConfig(training="epochs", epochs_per_iteration=4).iteration_training("mf") == \
        {"training": "epochs", "epochs": 4}
    assert CIESSConfig.schedule("reduced").training == "epochs"
    assert CIESSConfig.schedule("paper").training == "official"


def test_official_training_counts_batches_and_decays_the_lr(split, monkeypatch):
    search = CIESS("mf", split, config())
    env = search.env
    seen = []
    real_build = env.build

    def build(*args):
        model = real_build(*args)
        real_loss = model.loss

        def loss(users, pos, neg):
            seen.append(len(users))
            assert bool((np.asarray(split.train[users.numpy().copy(), pos.numpy().copy()]) > 0).all())  # training positives
            assert not bool((np.asarray(split.train[users.numpy().copy(), neg.numpy().copy()]) > 0).any())  # negatives
            return real_loss(users, pos, neg)
        model.loss = loss
        return model
    monkeypatch.setattr(env, "build", build)
    env.fit_batches(None, None, batches=5, batch_size=48, lr=0.03, decay=0.9, decay_every=2, min_lr=0.025, seed=0)
    assert seen == [48] * 5 and env.last_lr == pytest.approx(0.025)  # 0.03 -> 0.027 -> floor 0.025
    env.fit_batches(None, None, batches=4, batch_size=8, lr=0.03, decay=0.9, decay_every=2, min_lr=0.0, seed=0)
    assert env.last_lr == pytest.approx(0.03 * 0.81)


# -- the whole search, official and with every departure ----------------------------------------------

DEPARTURES = dict(exploration="per-entity", training="epochs", epochs_per_iteration=1, reward="paper",
                  state="recsize", pace="recsize", selection="recsize", rescale=False,
                  agent_batch_size=16, updates_per_iteration=2)


@pytest.mark.parametrize("settings", [{}, DEPARTURES], ids=["official", "departures"])
def test_search_is_deterministic_and_records_selection_signals(split, settings):
    a = untimed(CIESS("mf", split, config(**settings)).run().to_dict())
    b = untimed(CIESS("mf", split, config(**settings)).run().to_dict())
    assert a == b
    c = untimed(CIESS("mf", split, config(**settings, seed=1)).run().to_dict())
    assert a["history"] != c["history"]
    assert {"valid_ndcg@20", "mean_user_quality", "noise"} <= set(a["history"][0])
    assert (a["history"][0]["noise"] is None) == bool(settings)
    resolved = a["config"]["resolved"]
    assert resolved["iteration_training"]["training"] == ("epochs" if settings else "official")
    for budget in a["budgets"].values():
        for cand in budget["candidates"]:
            assert "search_valid_ndcg@20" in cand and "search_mean_user_quality" in cand


@pytest.mark.parametrize("kw, match", [
    (dict(exploration="gaussian"), "unknown exploration 'gaussian'"), (dict(reward="both"), "unknown reward"),
    (dict(state="raw"), "unknown state"), (dict(pace="fast"), "unknown pace"),
    (dict(selection="best"), "unknown selection"), (dict(training="steps"), "unknown training"),
    (dict(iteration_batches=0), "iteration_batches must be >= 1"), (dict(iteration_lr=0), "iteration_lr"),
    (dict(min_lr=-1), "min_lr"), (dict(agent_batch_size=0), "agent_batch_size")])
def test_bad_settings_say_what_to_choose(kw, match):
    with pytest.raises(ValueError, match=match):
        CIESSConfig(**kw)


def test_td3_module_keeps_one_generator():
    """Exploration and TD3 draw from the caller's generator only (resumable bit for bit)."""
    from pathlib import Path
    assert "np.random.normal(" not in Path(td3_module.__file__).read_text()
