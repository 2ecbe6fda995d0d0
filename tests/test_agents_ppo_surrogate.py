"""PPO trained on a learned surrogate: real-evaluation budget, free surrogate phase, config, persistence."""
import numpy as np
import pytest

from splitrl.agents.config import ConfigError, build
from splitrl.agents.ppo_surrogate import PPOSurrogateAgent, PPOSurrogateConfig
from splitrl.agents.registry import AGENTS, make_agent
from test_agents_support import make_env


def _cfg(**kw):
    base = dict(real_budget=40, surrogate_steps=512, warmup_evaluations=10, ppo={"n_steps": 256, "batch_size": 64})
    return build(PPOSurrogateConfig, {**base, **kw})


def test_learns_within_its_real_budget_and_the_surrogate_phase_is_free():
    env = make_env()
    agent = make_agent("ppo-surrogate", env, _cfg(), seed=0)
    assert isinstance(agent, PPOSurrogateAgent) and AGENTS["ppo-surrogate"][0] is PPOSurrogateAgent
    agent.learn(env, 10_000)
    assert agent.trained and agent.real_evaluations == 40 == env.unwrapped.real_evaluations
    assert agent.surrogate is not None and agent.surrogate_env_steps >= 512
    agent.learn(env, 10_000)  # budget spent: nothing more is measured or trained
    assert agent.real_evaluations == 40 == env.unwrapped.real_evaluations
    obs, _ = env.reset(seed=5)
    assert env.action_space.contains(agent.act(obs))


def test_total_steps_caps_each_call_and_training_waits_for_the_budget():
    env = make_env()
    agent = make_agent("ppo-surrogate", env, _cfg(surrogate_steps=256), seed=1)
    agent.learn(env, 15)
    assert agent.real_evaluations == 15 and not agent.trained
    agent.learn(env, 100)
    assert agent.real_evaluations == 40 and agent.trained


def test_save_load_gives_identical_actions(tmp_path):
    env = make_env()
    a = make_agent("ppo-surrogate", env, _cfg(), seed=2).learn(env, 40)
    a.save(tmp_path / "ckpt")
    b = make_agent("ppo-surrogate", env, _cfg(), seed=2).load(tmp_path / "ckpt")
    assert b.real_evaluations == 40 and b.trained and b.surrogate is not None
    assert len(b.collector.targets) == 40
    obs, _ = env.reset(seed=11)
    for _ in range(30):
        act = a.act(obs)
        assert b.act(obs) == act
        obs = env.step(act)[0]
    (tmp_path / "ckpt" / "surrogate.json").write_text("{}")
    with pytest.raises(Exception, match="(?i)checksum|corrupt"):
        make_agent("ppo-surrogate", env, _cfg(), seed=2).load(tmp_path / "ckpt")


def test_config_is_typed_and_validated():
    c = build(PPOSurrogateConfig, {"real_budget": "300", "ppo": {"learning_rate": "1e-3", "n_steps": 128}})
    assert c.real_budget == 300 and c.ppo.learning_rate == 1e-3 and c.ppo.n_steps == 128
    with pytest.raises(ConfigError, match="real_budget"):
        PPOSurrogateConfig(real_budget=1)
    with pytest.raises(ConfigError, match="explore"):
        build(PPOSurrogateConfig, {"explore": "greedy"})
    with pytest.raises(ConfigError, match="unknown field"):
        build(PPOSurrogateConfig, {"ppo": {"n_step": 5}})
    from splitrl.training.config import load_run_config

    rc = load_run_config("ppo-surrogate")  # configs/ppo-surrogate.yaml
    assert rc.agent.real_budget == rc.train.total_steps == 200 and rc.agent.surrogate_steps == 50_000
    np.testing.assert_equal(rc.agent.ppo.net_arch, [64, 64])
