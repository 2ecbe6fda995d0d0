"""Exact baselines: each picks what it claims, in absolute and relative action modes; the oracle
is never beaten on the same seeds; save/load round-trips."""
import gymnasium as gym
import numpy as np
import pytest

from splitrl.agents.baselines import (
    AllOnUEAgent, FixedSplitAgent, FixedSplitConfig, LatencyOnlyAgent, MinUEAgent, OracleAgent, RandomAgent,
    action_towards, expected_rewards, latency_per_split,
)
from splitrl.agents.registry import AGENTS, make_agent
from splitrl.training.evaluation import rollout
from test_agents_support import make_env

BASELINES = ["oracle", "fixed", "all-on-ue", "min-ue", "latency-only", "random"]


def _steps(env, agent, seed, n):
    """(obs acted on, info) pairs of ``n`` steps."""
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(n):
        nxt, _, _, _, info = env.step(agent.act(obs))
        out.append((obs, info))
        obs = nxt
    return out


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_all_on_ue_and_min_ue_go_to_the_ends(mode):
    env = make_env(action_mode=mode, initial_split=3, max_move=2)
    u = env.unwrapped
    for agent, target in ((AllOnUEAgent(env), u.L), (MinUEAgent(env), u.config.s_min)):
        splits = [info["split"] for _, info in _steps(env, agent, 0, 4)]
        if mode == "absolute":
            assert splits == [target] * 4
        else:  # moves of at most max_move towards the target, then stays
            assert splits[0] == 3 + np.clip(target - 3, -2, 2) and splits[-1] == target
            assert all(abs(b - a) <= 2 for a, b in zip([3] + splits, splits))


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_action_towards_matches_the_envs_action_for_split(mode):
    env = make_env(action_mode=mode)
    u = env.unwrapped
    obs, _ = env.reset(seed=1)
    for target in u.splits:
        assert action_towards(u, int(target), obs) == u.action_for_split(int(target))


def test_latency_only_picks_the_argmin_latency_split():
    env = make_env()
    u = env.unwrapped
    agent = LatencyOnlyAgent(env)
    chosen = set()
    for obs, info in _steps(env, agent, 2, 40):
        lat = getattr(u.costs_at(float(obs[0])), u.costs.latency_field)[u.splits]
        assert info["split"] == u.splits[int(np.argmin(lat))]
        chosen.add(info["split"])
    assert info["latency_s"] == pytest.approx(float(np.min(getattr(u.costs_at(info["snr_db"]), u.costs.latency_field)[u.splits])), rel=1e-5)


DEAD_LINK_SOMETIMES = {"kind": "markov", "bin_edges_db": [-30, -10, 10, 30],
                       "transition": [[0.6, 0.4, 0.0], [0.2, 0.6, 0.2], [0.0, 0.4, 0.6]]}  # -20 dB: no link


@pytest.mark.parametrize("kw", [{}, {"include_ue_state": True, "s_min": 0}, {"channel": DEAD_LINK_SOMETIMES}])
def test_expected_rewards_replicate_the_env_reward(kw):
    """The oracle's reward model = the env's reward with the table's mean quality in place of the sampled seed."""
    env = make_env(**kw)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=4)
    timeouts = 0
    for _ in range(40):
        a = int(rng.integers(env.action_space.n))
        prev = int(round(obs[u.config.history + 2]))
        load = float(obs[-1]) if u.config.include_ue_state else None
        exp = expected_rewards(u, u._snr, prev, load=load)
        mean_q = u.table.mean_table(u._snr, u.splits)
        obs, r, _, _, info = env.step(a)
        i = info["split"] - u.config.s_min
        w = u.config.reward.w_quality
        assert r + w * info["log_ppl_ratio"] - w * mean_q[i] == pytest.approx(exp[i], rel=1e-6, abs=1e-9)
        timeouts += info["timed_out"]
    if "channel" in kw:
        assert timeouts > 0  # the request timeout is replicated too


def test_oracle_picks_the_best_expected_split_and_it_moves_with_the_channel():
    env = make_env()
    u = env.unwrapped
    oracle = OracleAgent(env)
    chosen = []
    for obs, info in _steps(env, oracle, 3, 64):
        r = expected_rewards(u, float(obs[0]), int(round(obs[u.config.history + 2])))
        assert info["split"] == u.splits[int(np.argmax(r))]
        chosen.append(info["split"])
    assert len(set(chosen)) > 1  # the test env makes the best split depend on the SNR


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_oracle_is_not_beaten_by_any_baseline_on_the_same_seeds(mode):
    env = make_env(action_mode=mode)
    seeds, steps = [11, 12, 13], 64
    returns = {}
    for kind in BASELINES:
        cfg = FixedSplitConfig(episodes=1, episode_steps=32) if kind == "fixed" else None
        agent = make_agent(kind, env, cfg, seed=0)
        returns[kind] = rollout(agent, env.unwrapped, seeds, steps, reward_floor=-100.0).mean_return
    assert np.isfinite(returns["oracle"])
    for kind, ret in returns.items():
        assert returns["oracle"] >= ret - 1e-9, (kind, returns)


def test_fixed_split_is_the_best_mean_reward_split_on_training_seeds():
    env = make_env()
    agent = FixedSplitAgent(env, FixedSplitConfig(episodes=2, episode_steps=32), seed=5)
    u = env.unwrapped
    assert set(agent.scores) == set(u.splits.tolist())
    assert agent.split == max(agent.scores, key=agent.scores.get)
    assert agent.real_evaluations == len(u.splits) * 2 * 32  # table cells consumed by the rollouts
    obs, _ = env.reset(seed=0)
    assert u.split_for_action(agent.act(obs)) == agent.split
    given = FixedSplitAgent(env, FixedSplitConfig(split=2))
    assert given.split == 2 and given.real_evaluations == 0
    with pytest.raises(ValueError, match="split must be in 1..6"):
        FixedSplitAgent(env, FixedSplitConfig(split=9))


def test_random_agent_is_seeded_and_covers_the_splits():
    env = make_env()
    seq = [[info["split"] for _, info in _steps(env, RandomAgent(env, seed=s), 0, 60)] for s in (7, 7, 8)]
    assert seq[0] == seq[1] and seq[0] != seq[2]
    assert set(seq[0]) == set(env.unwrapped.splits.tolist())


@pytest.mark.parametrize("kind", BASELINES)
def test_baselines_save_and_load_act_identically(kind, tmp_path):
    env = make_env(action_mode="relative" if kind == "latency-only" else "absolute")
    cfg = FixedSplitConfig(episodes=1, episode_steps=16) if kind == "fixed" else None
    agent = make_agent(kind, env, cfg, seed=3)
    obs_batch = [o for o, _ in _steps(env, agent, 9, 20)]
    agent.save(tmp_path / "a")
    fresh = make_agent(kind, env, FixedSplitConfig(split=1) if kind == "fixed" else None, seed=99)
    fresh.load(tmp_path / "a")
    assert [fresh.act(o) for o in obs_batch] == [agent.act(o) for o in obs_batch]
    assert fresh.real_evaluations == agent.real_evaluations
    with pytest.raises(ValueError, match="holds a"):
        other = "oracle" if kind != "oracle" else "all-on-ue"
        make_agent(other, env).load(tmp_path / "a")


def test_baselines_need_a_split_point_env():
    with pytest.raises(TypeError, match="split-point env"):
        OracleAgent(gym.make("CartPole-v1"))


def test_registry_lists_every_kind_with_its_config():
    assert set(BASELINES) | {"ppo", "a2c", "dqn"} <= set(AGENTS)
    for kind, (cls, cfg_cls) in AGENTS.items():
        assert cls.kind == kind and isinstance(cfg_cls(), cfg_cls)
    with pytest.raises(ValueError, match="unknown agent 'nope'; choose from ppo"):
        make_agent("nope", make_env())


def test_latency_per_split_includes_the_ue_load_slowdown():
    env = make_env(include_ue_state=True)
    u = env.unwrapped
    base = latency_per_split(u, 10.0, None)
    loaded = latency_per_split(u, 10.0, 0.8)
    assert np.all(loaded >= base) and loaded[-1] > base[-1]
