"""The controller pieces without a gym env: cost service, observation spec, policies, channel process, serving."""
import numpy as np
import pytest
from test_agents_support import assets, llama_view, make_env

from splitrl.decision.channel import ChannelProcess, channel_spec
from splitrl.decision.costs import RequestCostService
from splitrl.controller.policy import AgentPolicy, FixedPolicy
from splitrl.decision.observation import Observation, ObservationSpec
from splitrl.envs.split_point import SplitPointConfig
from splitrl.errors import UsageError


def test_env_delegates_to_the_one_cost_service():
    env = make_env().unwrapped
    assert isinstance(env.costs, RequestCostService)
    own = RequestCostService(env.config, llama_view())
    for snr in (-5.0, 10.0, 30.0):
        for a, b in zip(env.request_costs(snr), own.request_costs(snr)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(env.base_rewards(snr), own.base_rewards(snr))
    assert env.latency_ref_s == own.latency_ref_s and env.energy_ref_j == own.energy_ref_j
    # one step's reward is the service's reward of the step's figures
    env.reset(seed=3)
    prev = env._split
    _, reward, _, _, info = env.step(2)
    out = own.request_outcome(info["split"], info["snr_db"], previous_split=prev, log_ppl_ratio=info["log_ppl_ratio"])
    assert reward == pytest.approx(out["reward"]) and info["latency_s"] == pytest.approx(out["latency_s"])


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_observation_spec_is_the_envs_layout_and_action_mapping(mode):
    env = make_env(action_mode=mode, include_ue_state=True, history=3).unwrapped
    obs, _ = env.reset(seed=1)
    for _ in range(5):
        np.testing.assert_array_equal(obs, env.obs_spec.vector(env.observation()))
        a = int(env.action_space.sample())
        assert env.split_for_action(a) == env.obs_spec.split_for_action(a, env._split)
        obs, *_ = env.step(a)
    spec = ObservationSpec(num_layers=6, history=2)
    v = spec.vector(Observation(snr_db=100.0, snr_history_db=(5.0,), bandwidth_mhz=20.0, split=4))
    assert v.tolist() == [80.0, 5.0, 80.0, 20.0, 4.0]  # padded with the current SNR, clipped to the bounds
    with pytest.raises(ValueError, match="outside"):
        spec.split_for_action(6, 3)


def test_agent_policy_decides_like_the_agent_in_the_env_and_keeps_the_ue_after_a_fallback():
    env = make_env().unwrapped
    cfg = env.config
    policy = AgentPolicy.baseline("oracle", cfg, llama_view())
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        o = env.observation()
        d = policy.decide(o)
        assert d.split == env.split_for_action(policy.agent.act(obs)) and d.decision_us > 0
        obs, *_ = env.step(env.action_for_split(d.split))
    assert {policy.decide(Observation(snr_db=s, split=3, bandwidth_mhz=20.0)).split for s in (30.0, -10.0)} != {6}
    down = policy.decide(Observation(snr_db=30.0, split=2, bandwidth_mhz=20.0, edge_available=False))
    assert down.split == 6 and down.reason.startswith("edge unavailable")
    assert FixedPolicy(2, 6).decide(Observation(snr_db=0.0)).split == 2
    assert FixedPolicy(2, 6).decide(Observation(snr_db=0.0, edge_available=False)).split == 6
    with pytest.raises(UsageError, match="--split"):
        FixedPolicy(7, 6)
    with pytest.raises(UsageError, match="unknown agent"):
        AgentPolicy.baseline("nope", cfg, llama_view())


def test_channel_process_sees_the_envs_snrs_with_the_same_seed(tmp_path):
    # rows one decision interval (0.5 s) apart: the controller reads a trace on its time column
    # (tests/test_controller_scenario.py), the env one row per step; here the two coincide
    trace = tmp_path / "t.csv"
    trace.write_text("time,snr_db\n" + "".join(f"{0.5 * i},{v}\n" for i, v in enumerate([3.0, 9.0, 27.0])))
    for spec in (None, channel_spec("markov"), channel_spec(f"trace:{trace}")):
        env = make_env(channel=spec).unwrapped
        env.reset(seed=7)
        proc = ChannelProcess(spec, env.link_profile, slot_s=env.config.decision_interval_s, history=4, seed=7)
        for _ in range(6):
            assert proc.snr_db == env._snr and proc.history == env._history
            env.step(0)
            proc.advance()


def test_request_server_serves_without_an_env_and_logs_the_figures(llama_tiny, tmp_path):
    from splitrl.controller.session import build_server
    from splitrl.controller.sinks import JsonlSink, iter_decisions

    server, loaded, env_cfg = build_server(checkpoint=None, agent=None, split=2, env={"model": "llama-tiny"},
                                           channel="markov", seed=0, loaded=llama_tiny)
    ids = server.backend.runtime.encode("The quick brown fox")
    sink = JsonlSink(tmp_path / "d.jsonl")
    snrs = []
    for i in range(3):
        snrs.append(server.channel.snr_db)
        result, rec = server.serve(ids, max_new_tokens=4, stop_at_eos=False)
        sink.write(rec.to_dict())
        assert rec.request == i and rec.split == 2 and rec.snr_db == snrs[-1] and len(result.token_ids) == 4
        assert rec.emulated_ttft_s > 0 and rec.bytes_on_air > 0 and not rec.fallback and rec.edge_available
    sink.close()
    rows = list(iter_decisions(tmp_path / "d.jsonl"))
    assert [r["snr_db"] for r in rows] == snrs and rows[1]["previous_split"] == 2
    # same seed -> same decisions, noise and tokens
    again, *_ = build_server(checkpoint=None, agent=None, split=2, env={"model": "llama-tiny"}, channel="markov",
                             seed=0, loaded=llama_tiny)
    assert [again.serve(ids, max_new_tokens=4, stop_at_eos=False)[1].text for _ in range(3)] == [r["text"] for r in rows]


def test_local_backend_satisfies_the_generation_backend_protocol(llama_tiny):
    from splitrl.controller.backend import GenerationBackend, LocalBackend
    from splitrl.runtime import SamplingConfig, SplitRuntime

    backend = LocalBackend(SplitRuntime(llama_tiny), model_name="llama-tiny")
    assert isinstance(backend, GenerationBackend) and backend.edge_available
    ids = backend.tokenizer("split computing", return_tensors="pt").input_ids
    kw = dict(link="int8-biterr", snr_db=5.0, seed=3, sampling=SamplingConfig(), max_new_tokens=4, stop_at_eos=False)
    a, b = backend.generate(ids, 2, **kw), backend.generate(ids, 2, **kw)
    assert a.token_ids == b.token_ids and a.report.cuts == [2] and a.report.fallback_segments == []
    streamed = []
    backend.generate(ids, 2, on_token=streamed.append, **kw)
    assert streamed == a.token_ids


def test_observation_spec_rounds_snrs_like_the_env_and_lists_its_levels():
    spec = ObservationSpec(num_layers=6, history=2, snr_resolution_db=0.5)
    v = spec.vector(Observation(snr_db=12.26, snr_history_db=(3.74, -0.2), bandwidth_mhz=20.0, split=4))
    assert v[:3].tolist() == [12.5, 3.5, 0.0]
    levels = spec.snr_levels()
    assert levels[0] == -50.0 and levels[-1] == 80.0 and len(levels) == 261
    assert float(v[0]) in set(levels) and ObservationSpec(num_layers=6).snr_levels() == []
    with pytest.raises(ValueError, match="snr_resolution_db"):
        ObservationSpec(num_layers=6, snr_resolution_db=-1.0)
    env = make_env(snr_resolution_db=0.1).unwrapped
    assert env.obs_spec.snr_resolution_db == 0.1
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs, env.obs_spec.vector(env.observation()))  # rounding twice changes nothing


def test_agent_policy_prepares_the_mbrl_agent_without_changing_a_decision():
    """Loading an MBRL agent into a policy compiles its kernel and works out the link terms of every
    observable SNR; costs and decisions stay what they were."""
    import copy

    from splitrl.agents.mbrl import MBRLAgent, MBRLConfig

    env = make_env(snr_resolution_db=0.5, edge_load={}, include_ue_state=True).unwrapped
    agent = MBRLAgent(env, MBRLConfig(warmup_evaluations=5), seed=0).learn(env, 12)
    cold = env.costs.base_rewards(7.5, 0.3, edge_load=0.4)
    twin = copy.deepcopy(agent)
    policy = AgentPolicy(agent, env, "mbrl")
    assert len(env.costs._link_rows) >= len(policy.spec.snr_levels())
    np.testing.assert_array_equal(env.costs.base_rewards(7.5, 0.3, edge_load=0.4), cold)
    obs, _ = env.reset(seed=0)
    for _ in range(10):
        d = policy.decide(env.observation())
        assert d.split == env.split_for_action(twin.act(obs))
        obs, *_ = env.step(env.action_for_split(d.split))
