"""splitrl/PipelineSplit-v0: API conformance, candidates, determinism, oracle >= fixed baselines."""
from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import splitrl  # noqa: F401  (registers the envs)
from splitrl.models import load_model


@pytest.fixture(scope="module")
def view():
    return load_model("llama-tiny").view


def _env(view, **kw):
    from splitrl.envs.pipeline_split import PipelineSplitEnv

    return PipelineSplitEnv(view=view, model="llama-tiny", **kw)


def test_check_env_and_registration(view):
    env = _env(view)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    assert "splitrl/PipelineSplit-v0" in gym.registry
    made = gym.make("splitrl/PipelineSplit-v0", model="llama-tiny")
    obs, _ = made.reset(seed=0)
    assert made.observation_space.contains(obs)


def test_candidates_cover_active_sets(view):
    env = _env(view)
    actives = {c.active for c in env.candidates}
    assert actives == {(0,), (0, 1), (0, 2), (0, 1, 2)}
    for c in env.candidates:
        assert len(c.cuts) == len(c.active) - 1
        assert all(0 <= x <= env.L for x in c.cuts)
    with pytest.raises(ValueError):
        env.reset(seed=0)
        env.step(env.action_space.n)


def test_same_seed_same_episode_and_oracle_wins(view):
    def run(policy, seed):
        env = _env(view)
        env.reset(seed=seed)
        total, infos = 0.0, []
        for _ in range(20):
            a = policy(env)
            _, r, term, trunc, info = env.step(a)
            total += r
            infos.append(info["throughput"])
        return total, infos

    a = run(lambda e: e.static_action(), 3)
    b = run(lambda e: e.static_action(), 3)
    assert a == b
    oracle = run(lambda e: e.oracle_action(), 3)[0]
    assert oracle >= a[0] - 1e-9
    assert oracle >= run(lambda e: e.equal_action(), 3)[0] - 1e-9


def test_switching_costs_weight_bytes(view):
    env = _env(view)
    env.reset(seed=1)
    static = env.static_action()
    other = next(i for i, c in enumerate(env.candidates) if c.active == (0,))
    _, _, _, _, info = env.step(other)
    assert info["switch_s"] > 0.0  # the starter must fetch the helpers' layers
    _, _, _, _, info = env.step(static)
    assert info["switch_s"] == 0.0  # every device still holds what it had: nothing moves back
    _, _, _, _, info = env.step(static)
    assert info["switch_s"] == 0.0


def test_learned_surrogate_counts_evaluations_and_predicts_held_out(view):
    """The model-based agent's surrogate: fitted only from counted real evaluations, it predicts the
    throughput of unseen (candidate, state) pairs, and its planner is deterministic per seed."""
    import numpy as np

    from splitrl.agents.ring import RingPlanner, RingSurrogate
    from splitrl.experiments.ring import collect_evaluations, evaluate_policies

    env = _env(view, load_sigma=0.6)
    sur = RingSurrogate(env)
    with pytest.raises(ValueError):
        sur.fit()
    for d in collect_evaluations(env, 60, np.random.default_rng(0), noise=0.05):
        sur.add(*d)
    sur.fit()
    assert sur.evaluations == 60 and env.evaluations == 60
    err = sur.rel_error(collect_evaluations(env, 100, np.random.default_rng(1), noise=0.0), env.config.max_samples)
    assert err["throughput_median"] < 0.1 and err["round_s_median"] < 0.1
    # an exact copy of the step model is not what it learned: predictions differ from the truth a little
    a, snr, load, m = collect_evaluations(env, 1, np.random.default_rng(2), noise=0.0)[0]
    assert sur.predict(a, snr, load, env.config.max_samples)["throughput"] != m["throughput"]

    def planner_policy():
        planners = {}

        def act(e, o):
            p = planners.setdefault(id(e), RingPlanner(e, model=sur.clone()))
            return p.act(o)
        return act

    r1 = evaluate_policies(lambda: _env(view, load_sigma=0.6), {"oracle": lambda e, o: e.oracle_action(),
                                                                "mbrl": planner_policy()}, [5, 6], 8)
    r2 = evaluate_policies(lambda: _env(view, load_sigma=0.6), {"mbrl": planner_policy()}, [5, 6], 8)
    assert r1["mbrl"]["per_episode_throughput"] == r2["mbrl"]["per_episode_throughput"]
    assert r1["mbrl"]["throughput_fraction_of_oracle"] > 0.5
