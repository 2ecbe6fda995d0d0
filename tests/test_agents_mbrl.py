"""The model-based agent: budgeted learning, planning, online evaluations, persistence, channel drift."""
import numpy as np
import pytest

from splitrl.agents.channel_model import AR1ChannelModel
from splitrl.agents.mbrl import MBRLAgent, MBRLConfig
from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.decision.reward import reward_terms
from splitrl.sweep import SweepConfig, run_sweep

pytestmark = pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")


@pytest.fixture(scope="module")
def table(tmp_path_factory, llama_tiny):
    path = tmp_path_factory.mktemp("mbrl") / "tiny.csv"
    run_sweep(SweepConfig(model="llama-tiny", splits=list(range(7)), levels=[0, 10, 20, 30], transports=["awgn"],
                          seeds=2, tokens=64, window=64, stride=64), path, progress=False, loaded=llama_tiny)
    return path


def _env(table, llama_tiny, **kw):
    return SplitPointTableEnv(SplitPointConfig(model="llama-tiny", table=str(table), **kw), view=llama_tiny.view)


def _oracle_split(env, snr, prev):
    q = env.table.mean_table(snr, env.splits)
    t = env.costs_at(snr)
    r = reward_terms(env.config.reward, log_ppl_ratio=q, latency_s=getattr(t, env.costs.latency_field)[env.splits],
                     energy_j=t.ue_energy_j_per_token[env.splits], split=env.splits, previous_split=prev,
                     latency_ref_s=env.latency_ref_s, energy_ref_j=env.energy_ref_j)["reward"]
    return int(env.splits[int(np.argmax(r))])


def _run(agent, env, seed, steps=150):
    obs, _ = env.reset(seed=seed)
    agent.reset()
    total = 0.0
    for _ in range(steps):
        obs, r, _, _, info = env.step(agent.act(obs))
        agent.feedback(info)
        total += r
    return total / steps


def test_learning_spends_exactly_its_budget(table, llama_tiny):
    env = _env(table, llama_tiny)
    agent = MBRLAgent(env, MBRLConfig(warmup_evaluations=10), seed=1).learn(env, 60)
    assert agent.real_evaluations == 60 == len(agent.targets) and agent.surrogate is not None


def test_planner_with_exact_quality_matches_the_greedy_oracle(table, llama_tiny):
    env = _env(table, llama_tiny)
    agent = MBRLAgent(env, MBRLConfig(horizon=1), seed=0)
    # Replace the learned quality by the table's mean: the plan must then equal the oracle's choice.
    from splitrl.agents.mbrl import SNR_GRID

    agent._q_grid = np.stack([env.table.mean_table(float(s), env.splits) for s in SNR_GRID])
    agent._r_grid = None
    for snr in (0.0, 7.5, 15.0, 30.0):
        for prev in (1, 4, 6):
            assert agent.plan(snr, prev)[0] == _oracle_split(env, snr, prev)


def test_reaches_most_of_the_oracle_reward_with_few_evaluations(table, llama_tiny):
    env = _env(table, llama_tiny)
    agent = MBRLAgent(env, MBRLConfig(eval_threshold=0.0), seed=0).learn(env, 120)
    got = _run(agent, env, seed=777)
    obs, _ = env.reset(seed=777)
    oracle = 0.0
    for _ in range(150):
        obs, r, _, _, _ = env.step(env.action_for_split(_oracle_split(env, float(obs[0]), int(obs[env.config.history + 2]))))
        oracle += r
    oracle /= 150
    worst = min(_run(_FixedAgent(env, s), env, seed=777) for s in env.splits)
    assert got >= oracle - 0.1 * abs(oracle) and got > worst


class _FixedAgent:
    def __init__(self, env, split):
        self.a = env.action_for_split(int(split))

    def act(self, obs):
        return self.a

    def reset(self):
        pass

    def feedback(self, info):
        return False


def test_online_evaluations_are_paid_for_and_capped(table, llama_tiny):
    env = _env(table, llama_tiny)
    agent = MBRLAgent(env, MBRLConfig(eval_threshold=1e6, online_budget_fraction=0.1), seed=0).learn(env, 30)
    before = agent.real_evaluations
    _run(agent, env, seed=3, steps=100)
    assert 0 < agent.online_evaluations <= 10
    assert agent.real_evaluations == before + agent.online_evaluations
    assert agent.feedback({"split": 2}) is False  # nothing pending, nothing paid


def test_save_load_gives_identical_actions(table, llama_tiny, tmp_path):
    env = _env(table, llama_tiny)
    a = MBRLAgent(env, MBRLConfig(), seed=2).learn(env, 50)
    a.save(tmp_path / "ckpt")
    b = MBRLAgent(env, MBRLConfig(), seed=2).load(tmp_path / "ckpt")
    obs, _ = env.reset(seed=11)
    for _ in range(20):
        act = a.act(obs)
        assert b.act(obs) == act
        obs = env.step(act)[0]
    (tmp_path / "ckpt" / "surrogate.json").write_text("{}")
    with pytest.raises(Exception, match="(?i)checksum|corrupt"):
        MBRLAgent(env, MBRLConfig(), seed=2).load(tmp_path / "ckpt")


def test_same_seed_same_learning(table, llama_tiny):
    env1, env2 = _env(table, llama_tiny), _env(table, llama_tiny)
    a = MBRLAgent(env1, MBRLConfig(), seed=4).learn(env1, 40)
    b = MBRLAgent(env2, MBRLConfig(), seed=4).learn(env2, 40)
    assert a.cells == b.cells and a.targets == b.targets


def test_split_moves_deeper_when_the_trace_snr_drops(llama_tiny, tmp_path):
    from test_agents_support import assets

    table, ue = assets()["table"], assets()["ue_profile"]
    trace = tmp_path / "drop.csv"
    snrs = [28.0] * 40 + [0.5] * 40
    trace.write_text("time,snr_db\n" + "".join(f"{i * 0.5},{s}\n" for i, s in enumerate(snrs)))
    env = _env(table, llama_tiny, ue_profile=str(ue), channel={"kind": "trace", "path": str(trace), "on_end": "loop"})
    assert _oracle_split(env, 28.0, 1) < _oracle_split(env, 0.5, 1)  # the premise: the best split moves
    agent = MBRLAgent(env, MBRLConfig(eval_threshold=0.0), seed=0)
    agent.learn(_env(table, llama_tiny, ue_profile=str(ue)), 120)  # learned on the fading channel
    obs, _ = env.reset(seed=0)
    chosen = []
    for _ in range(80):
        act = agent.act(obs)
        obs, _, _, _, info = env.step(act)
        chosen.append(info["split"])
    before, after = np.mean(chosen[10:38]), np.mean(chosen[50:78])
    assert after > before  # at 0.5 dB the activations are corrupted: keep more layers on the UE
    mu, _, _ = agent.channel.params
    assert mu < 10  # the channel model followed the drop


def test_channel_model_recovers_ar1_and_forecasts():
    rng = np.random.default_rng(0)
    m = AR1ChannelModel(forgetting=1.0)
    x = 12.0
    for _ in range(4000):
        x = 12 + 0.8 * (x - 12) + 2 * rng.standard_normal()
        m.observe(x)
    mu, phi, sigma = m.params
    assert abs(mu - 12) < 0.5 and abs(phi - 0.8) < 0.05 and abs(sigma - 2) < 0.15
    mean, std = m.forecast(20.0, 3)
    assert mean[0] == 20.0 and std[0] == 0.0 and mean[2] < mean[1] < 20.0 and std[2] > std[1] > 0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="MBRLConfig.horizon"):
        MBRLConfig(horizon=0)
    with pytest.raises(ValueError, match="MBRLConfig.surrogate_kind"):
        MBRLConfig(surrogate_kind="crystal-ball")


@pytest.mark.parametrize("information", ["known-costs", "reward-only"])
def test_compiled_decisions_equal_the_numpy_planner(table, llama_tiny, information):
    """`MBRLConfig.compiled_decisions` (one numba call per decision) picks the same split and flags the
    same online evaluations as the numpy planner, step for step, on the richer state."""
    import copy

    kw = dict(edge_load={}, include_ue_state=True, battery_aware_energy=True, prefill_chunks=4, snr_resolution_db=0.1)
    env = _env(table, llama_tiny, **kw)
    fast = MBRLAgent(env, MBRLConfig(warmup_evaluations=10, information=information), seed=2).learn(env, 40)
    slow = copy.deepcopy(fast)
    slow.config.compiled_decisions = False
    fast.prepare_decisions()
    obs, _ = env.reset(seed=11)
    flagged = 0
    for _ in range(120):
        a = fast.act(obs)
        assert a == slow.act(obs) and fast._pending == slow._pending
        flagged += fast._pending is not None
        obs, *_ = env.step(a)
    assert flagged > 0  # the online-evaluation rule (margin, std) was exercised
    assert copy.deepcopy(fast).act(obs) == fast.act(obs)  # a deciding agent still copies (no compiled object held)
    assert fast._compiled_plan(float(obs[0]), 0, obs) is None  # a split outside the range: the numpy planner decides
