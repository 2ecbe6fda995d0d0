"""splitrl/AirCompAssign-v0: Gymnasium contract, documented action set, reward terms, policies."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import splitrl.envs  # noqa: F401  (registers the environments)
from splitrl.agents.aircomp import EqualPolicy, ModelBasedAgent, OptimiserPolicy
from splitrl.experiments.aircomp import evaluate_policy
from splitrl.errors import UsageError

# (mean AirComp MSE dB, log ppl ratio) points shaped like the SmolLM2 calibration.
CAL = [(-35.0, 0.01), (-25.0, 0.1), (-15.0, 1.2), (-5.0, 6.0), (5.0, 12.0)]


def _env(**kw):
    return gym.make("splitrl/AirCompAssign-v0", calibration=CAL, channel_samples=16, **kw)


def test_check_env_and_action_set():
    env = _env()
    check_env(env.unwrapped)
    u = env.unwrapped
    assert env.action_space.n == 28 and len(set(u.assignments)) == 28
    assert all(sum(a) == 9 and min(a) >= 1 for a in u.assignments)
    assert u.assignments[0] == (1, 1, 7) and u.assignments[u.equal_action] == (3, 3, 3)


def test_reward_terms_and_infeasible_penalty():
    env = _env()
    obs, _ = env.reset(seed=3)
    u = env.unwrapped
    for a in range(env.action_space.n):
        c = u.costs(a, obs)
        if not c["feasible"]:
            _, r, _, _, info = env.step(a)
            assert r == -u.config.infeasible_penalty and info["log_ppl_ratio"] is None
            break
    else:
        pytest.skip("every assignment feasible in this state")
    obs, _ = env.reset(seed=3)
    _, r, _, _, info = env.step(u.equal_action)
    if info["feasible"]:
        assert r == pytest.approx(u.reward_of(info["log_ppl_ratio"], info["latency_s"], info["energy_j"]))
    with pytest.raises(UsageError):
        env.step(99)


def test_episode_states_do_not_depend_on_the_policy():
    env = _env(episode_steps=5)
    trajs = []
    for policy in (lambda o: 0, lambda o: 15):
        obs, _ = env.reset(seed=11)
        seen = [obs]
        for _ in range(4):
            obs, *_ = env.step(policy(obs))
            seen.append(obs)
        trajs.append(np.stack(seen))
    assert np.array_equal(trajs[0], trajs[1])


def test_model_based_agent_learns_and_beats_equal():
    env = _env(episode_steps=8)
    agent = ModelBasedAgent(env, seed=0, warmup=16, trees=30).learn(env, 64, seed=0)
    assert agent.evaluations > 16
    held = [500, 501, 502]
    eq = evaluate_policy(env, EqualPolicy(env), held)
    opt = evaluate_policy(env, OptimiserPolicy(env, samples=64), held)
    ag = evaluate_policy(env, agent, held)
    assert ag["infeasible_steps"] == 0 and opt["infeasible_steps"] == 0
    assert ag["mean_return"] > eq["mean_return"] and opt["mean_return"] > eq["mean_return"]
