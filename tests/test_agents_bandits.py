"""Threshold rule, LinUCB bandit, the two information settings, MBRL reward-only, and the trainer's
final checkpoint of an agent that learns after its last env step (ppo-surrogate)."""
import json

import numpy as np
import pytest

from splitrl.agents.bandits import LinUCBAgent, ThresholdAgent
from splitrl.agents.config import ConfigError, build
from splitrl.agents.information import KnownCostsObservation, known_reward_parts, wrap_for_setting
from splitrl.agents.mbrl import MBRLAgent, MBRLConfig, estimate_switch_cost
from splitrl.agents.registry import AGENTS, make_agent
from splitrl.errors import UsageError
from test_agents_support import cli_sets, make_env


def test_known_parts_minus_the_quality_term_is_the_reward():
    env = make_env()
    e = env.unwrapped
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = int(rng.integers(env.action_space.n))
        parts = known_reward_parts(env, obs)
        assert parts.shape == (env.action_space.n,)
        nxt, r, *_, info = env.step(a)
        assert r == pytest.approx(parts[a] - e.config.reward.w_quality * info["log_ppl_ratio"], abs=1e-9)
        obs = nxt


def test_known_costs_observation_appends_one_feature_per_action_and_keeps_the_original():
    env = make_env()
    w = wrap_for_setting(make_env(), "known-costs")
    assert isinstance(w, KnownCostsObservation) and wrap_for_setting(env, "reward-only") is env
    o1, _ = env.reset(seed=1)
    o2, _ = w.reset(seed=1)
    n = env.action_space.n
    assert o2.shape == (o1.shape[0] + n,) and w.observation_space.contains(o2)
    np.testing.assert_array_equal(o2[: o1.shape[0]], o1)
    np.testing.assert_allclose(o2[o1.shape[0]:], np.clip(known_reward_parts(env, o1), -w.bound, w.bound), rtol=1e-6)
    with pytest.raises(UsageError, match="information setting"):
        wrap_for_setting(env, "everything")


@pytest.mark.parametrize("kind,cls", [("threshold", ThresholdAgent), ("bandit", LinUCBAgent)])
@pytest.mark.parametrize("information", ["known-costs", "reward-only"])
def test_budget_learners_spend_their_budget_are_seeded_and_reload(kind, cls, information, tmp_path):
    cfg = build(AGENTS[kind][1], {"information": information})
    env = make_env()
    a = make_agent(kind, env, cfg, seed=4).learn(env, 60)
    assert isinstance(a, cls) and a.real_evaluations == 60 == env.unwrapped.real_evaluations
    env2 = make_env()
    b = make_agent(kind, env2, cfg, seed=4).learn(env2, 60)
    obs = [env.reset(seed=s)[0] for s in range(6)]
    acts = [a.act(o) for o in obs]
    assert acts == [b.act(o) for o in obs]
    assert all(env.action_space.contains(x) for x in acts)
    a.save(tmp_path / kind)
    c = make_agent(kind, make_env(), cfg, seed=9).load(tmp_path / kind)
    assert [c.act(o) for o in obs] == acts


def test_threshold_rule_finds_the_best_split_per_band_with_enough_budget():
    env = make_env()
    a = make_agent("threshold", env, build(AGENTS["threshold"][1], {"bands": 3}), seed=0).learn(env, 900)
    rule = a.rule()
    assert len(rule) == 3 and rule[0]["snr_from_db"] == -np.inf and rule[-1]["snr_to_db"] == np.inf
    oracle = make_agent("oracle", env)
    obs, _ = env.reset(seed=11)
    agree = []
    for _ in range(100):
        agree.append(a.target_split(obs) == oracle.target_split(obs))
        obs, *_ = env.step(oracle.act(obs))
    assert np.mean(agree) >= 0.6  # a per-band rule cannot follow the optimum inside a band


def test_bandit_config_is_validated():
    with pytest.raises(ConfigError, match="alpha"):
        build(AGENTS["bandit"][1], {"alpha": -1})
    with pytest.raises(ConfigError, match="information"):
        build(AGENTS["threshold"][1], {"information": "all"})


def test_switch_cost_is_recovered_from_rewards_alone():
    rng = np.random.default_rng(0)
    n = 400
    s, p = rng.integers(1, 9, n), rng.integers(1, 9, n)
    s[:80] = p[:80]  # some steps stay
    snr = rng.uniform(0, 30, n)
    r0 = -(0.1 * s + np.exp(-snr / 8) * (9 - s))
    moved = np.abs(s - p)
    reward = r0 - np.where(moved > 0, 0.3 + 0.02 * moved, 0.0) + rng.normal(0, 0.01, n)
    fixed, per_layer = estimate_switch_cost(s, p, snr, reward)
    assert fixed == pytest.approx(0.3, abs=0.05) and per_layer == pytest.approx(0.02, abs=0.01)


def test_reward_only_mbrl_learns_the_reward_and_reloads(tmp_path):
    env = make_env()
    a = MBRLAgent(env, MBRLConfig(information="reward-only", warmup_evaluations=10), seed=0).learn(env, 80)
    assert a.real_evaluations == 80 and len(a.rewards) == len(a.previous) == 80
    assert a.switch_coef[0] >= 0 and a.switch_coef[1] >= 0
    a.feedback({"log_ppl_ratio": 0.0, "split": 1, "snr_db": 5.0})  # reward-only: no online evaluations
    assert a.online_evaluations == 0
    obs = [env.reset(seed=s)[0] for s in range(5)]
    acts = [a.act(o) for o in obs]
    a.save(tmp_path / "m")
    b = MBRLAgent(make_env(), MBRLConfig(information="reward-only", warmup_evaluations=10), seed=3).load(tmp_path / "m")
    assert [b.act(o) for o in obs] == acts


def test_train_py_ppo_surrogate_checkpoints_and_reports_the_trained_policy(tmp_path):
    """The run's last env step is the last real evaluation; the policy is trained after it. The
    final checkpoint and evaluation must be of the trained policy (they were of the untrained one)."""
    from splitrl.cli.train import main

    args = ["--agent", "ppo-surrogate", "--total-steps", "24", "--run", "ps", "--no-progress",
            "--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(tmp_path / "ckpt"),
            "--set", *cli_sets(), "agent.real_budget=24", "agent.warmup_evaluations=8", "agent.surrogate_steps=256",
            "agent.ppo.n_steps=128", "agent.ppo.batch_size=64", "agent.ppo.n_epochs=1", "train.checkpoint_every=12",
            "train.eval_every=12", "train.eval_episodes=1", "train.eval_steps=16", "train.max_episode_steps=64"]
    assert main(args) == 0
    state = json.loads((tmp_path / "ckpt" / "ps" / "latest" / "agent" / "agent.json").read_text())["state"]
    assert state["trained"] is True and state["surrogate_env_steps"] >= 256 and state["real_evaluations"] == 24
