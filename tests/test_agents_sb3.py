"""SB3 agents: learn a few hundred steps through the Agent interface, forward steps and diagnostics,
stop at boundaries, save/load exactly, validate their configs, are deterministic."""
import numpy as np
import pytest
import torch

from splitrl.agents.config import ConfigError, build
from splitrl.agents.sb3 import A2CConfig, DQNConfig, PPOConfig
from splitrl.agents.registry import make_agent
from test_agents_support import make_env

SMALL = {
    "ppo": PPOConfig(n_steps=64, batch_size=32, n_epochs=2),
    "a2c": A2CConfig(n_steps=8),
    "dqn": DQNConfig(learning_starts=64, buffer_size=1000, target_update_interval=50, train_freq=4),
}


def _params(agent):
    return {k: v.clone() for k, v in agent.model.policy.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Recorder:
    def __init__(self, stop_at=None):
        self.steps, self.boundaries, self.scalars, self.stop_at = [], [], {}, stop_at

    def __call__(self, d):
        self.steps.append(d)

    def on_boundary(self, step):
        self.boundaries.append(step)
        return not (self.stop_at is not None and step >= self.stop_at)

    def log_scalars(self, values, step):
        for k, v in values.items():
            self.scalars.setdefault(k, []).append((step, v))


@pytest.mark.parametrize("kind", ["ppo", "a2c", "dqn"])
def test_sb3_agent_learns_forwards_steps_and_round_trips(kind, tmp_path):
    env = make_env()
    agent = make_agent(kind, env, SMALL[kind], seed=0)
    rec = Recorder()
    agent.learn(env, 256, callback=rec)
    assert agent.env_steps == 256 and agent.real_evaluations == 256  # one table cell per step
    assert [d["step"] for d in rec.steps] == list(range(1, 257))
    d = rec.steps[10]
    assert {"obs", "action", "reward", "next_obs", "done", "terminated", "truncated", "info"} <= set(d)
    assert env.action_space.contains(d["action"]) and "split" in d["info"] and np.isfinite(d["reward"])
    assert sum(x["truncated"] for x in rec.steps) == 256 // 64  # 64-step episodes
    gran = {"ppo": 64, "a2c": 8, "dqn": 4}[kind]
    assert rec.boundaries and all(b % gran == 0 for b in rec.boundaries)
    assert any(k.startswith("train/") for k in rec.scalars), rec.scalars.keys()
    for v in _params(agent).values():
        assert torch.isfinite(v).all()  # learning stays finite (dead-link requests time out in the env)

    obs_batch = [x["obs"] for x in rec.steps[::5]]
    agent.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.zip").is_file() and (tmp_path / "ckpt" / "agent.json").is_file()
    fresh = make_agent(kind, env, SMALL[kind], seed=123)  # other initial weights
    assert not _same(_params(fresh), _params(agent))
    fresh.load(tmp_path / "ckpt")
    assert _same(_params(fresh), _params(agent))
    assert [fresh.act(o) for o in obs_batch] == [agent.act(o) for o in obs_batch]
    assert fresh.env_steps == 256 and fresh.real_evaluations == 256
    if kind == "dqn":
        rb, rb2 = agent.model.replay_buffer, fresh.model.replay_buffer
        assert rb2.pos == rb.pos and np.array_equal(rb2.observations[: rb.pos], rb.observations[: rb.pos])


def test_same_seed_same_weights_other_seed_differs():
    runs = []
    for seed in (4, 4, 5):
        env = make_env()
        agent = make_agent("ppo", env, SMALL["ppo"], seed=seed)
        rewards = []
        agent.learn(env, 128, callback=lambda d: rewards.append(d["reward"]))
        runs.append((_params(agent), rewards))
    assert _same(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not _same(runs[0][0], runs[2][0]) and runs[0][1] != runs[2][1]


@pytest.mark.parametrize("kind", ["ppo", "dqn"])
def test_stopping_at_a_boundary_and_learning_on_equals_one_call(kind):
    env_a, env_b = make_env(), make_env()
    a = make_agent(kind, env_a, SMALL[kind], seed=2)
    a.learn(env_a, 256)
    b = make_agent(kind, env_b, SMALL[kind], seed=2)
    rec = Recorder(stop_at=128)
    b.learn(env_b, 256, callback=rec)
    assert b.env_steps == 128 and rec.boundaries[-1] == 128 and len(rec.steps) == 128  # nothing past the boundary
    b.learn(env_b, 128)
    assert _same(_params(a), _params(b))


def test_relative_action_mode_trains():
    env = make_env(action_mode="relative", max_move=2)
    agent = make_agent("a2c", env, SMALL["a2c"], seed=0)
    agent.learn(env, 64)
    obs, _ = env.reset(seed=0)
    assert env.action_space.n == 5 and 0 <= agent.act(obs) < 5


def test_new_env_in_learn_is_seeded_with_the_agent_seed():
    firsts = []
    for _ in range(2):
        agent = make_agent("ppo", make_env(), SMALL["ppo"], seed=6)
        other = make_env()
        seen = []
        agent.learn(other, 64, callback=lambda d: seen.append(d["obs"].tolist()))
        firsts.append(seen[:3])
    assert firsts[0] == firsts[1]


@pytest.mark.parametrize("cls, kw, match", [
    (PPOConfig, {"gamma": 1.5}, r"PPOConfig.gamma must be in \[0, 1\], got 1.5"),
    (PPOConfig, {"learning_rate": 0.0}, r"PPOConfig.learning_rate must be > 0"),
    (PPOConfig, {"batch_size": 128, "n_steps": 64}, r"batch_size must be <= n_steps \(64\)"),
    (PPOConfig, {"activation": "gelu"}, r"PPOConfig.activation must be one of tanh, relu"),
    (PPOConfig, {"net_arch": [64, 0]}, r"PPOConfig.net_arch must be >= 1"),
    (A2CConfig, {"n_steps": 0}, r"A2CConfig.n_steps must be >= 1"),
    (DQNConfig, {"exploration_final_eps": 2.0}, r"DQNConfig.exploration_final_eps must be in \[0, 1\]"),
    (DQNConfig, {"tau": 0.0}, r"DQNConfig.tau must be in \(0, 1\]"),
])
def test_config_ranges_are_checked_with_the_field_and_range(cls, kw, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kw)


def test_config_build_coerces_and_rejects_unknown_names():
    cfg = build(PPOConfig, {"learning_rate": "1e-4", "n_steps": "128", "net_arch": "32,32", "normalize_obs": "false",
                            "target_kl": "null"}, where="agent.")
    assert cfg.learning_rate == 1e-4 and cfg.n_steps == 128 and cfg.net_arch == [32, 32]
    assert cfg.normalize_obs is False and cfg.target_kl is None
    with pytest.raises(ConfigError, match=r"unknown field agent.learning_rat for PPOConfig \(did you mean agent.learning_rate\?\); allowed: .*batch_size"):
        build(PPOConfig, {"learning_rat": 1}, where="agent.")
    with pytest.raises(ConfigError, match="agent.n_steps must be an integer, got 'abc'"):
        build(PPOConfig, {"n_steps": "abc"}, where="agent.")
    assert "learning_rate (float, default 0.0003; > 0)" in PPOConfig.__doc__  # every field documented
