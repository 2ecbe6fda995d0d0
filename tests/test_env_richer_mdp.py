"""The richer split-point MDP: shared edge load, battery, memory, privacy floor, codec per request,
pipelined prefill — each switch off reproduces the old figures, on changes them the way it should."""
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import splitrl  # noqa: F401  (registers the environments)
from splitrl.decision.costs import RequestCostService
from splitrl.decision.observation import Observation, ObservationSpec
from splitrl.cost import CostModel
from splitrl.cost.edge_load import EdgeLoadConfig, EdgeLoadProcess, md1_slowdown
from splitrl.cost.privacy import PrivacyTable
from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv
from splitrl.errors import UsageError
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.sweep import SweepConfig, run_sweep

L_TINY = 6


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory, llama_tiny):
    path = tmp_path_factory.mktemp("sweep") / "tiny.csv"
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    cfg = SweepConfig(model="llama-tiny", splits=list(range(L_TINY + 1)), levels=[-5, 10, 30],
                      transports=["awgn", "int8-biterr", "int4-biterr"], seeds=2, tokens=32, window=32, stride=32)
    run_sweep(cfg, path, progress=False, loaded=llama_tiny)
    return path


@pytest.fixture(scope="module")
def privacy_file(tmp_path_factory):
    """A synthetic privacy file (the measured one comes from the privacy-probe benchmark)."""
    path = tmp_path_factory.mktemp("privacy") / "privacy_tiny.json"
    rec = [1.0, 0.9, 0.6, 0.3, 0.1, 0.05, 0.4]  # last value: the final hidden state (nothing crosses at L)
    path.write_text(json.dumps({"model": "llama-tiny", "splits": list(range(L_TINY + 1)), "top1_recovery": rec}))
    return path


def _env(tiny_table, llama_tiny, **kw):
    cfg = SplitPointConfig(model="llama-tiny", table=str(tiny_table), **kw)
    return gym.wrappers.TimeLimit(SplitPointTableEnv(cfg, view=llama_tiny.view), max_episode_steps=20)


RICH = {"edge_load": {}, "prefill_chunks": 8, "include_ue_state": True, "battery_aware_energy": True,
        "battery_range": (0.1, 1.0), "memory_mask": True}


# --- cost service: new keywords, None = the old behaviour --------------------------------------
def test_service_without_new_state_matches_old_figures(llama_tiny):
    cfg = SplitPointConfig(model="llama-tiny")
    svc = RequestCostService(cfg, llama_tiny.view)
    for snr in (-3.0, 7.0, 25.0):
        old = svc.request_costs(snr)
        new = svc.request_costs(snr, None, edge_load=None, battery=None)
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(svc.base_rewards(snr), svc.base_rewards(snr, edge_load=None, battery=None))


@pytest.mark.parametrize("privacy", [False, True])
def test_base_rewards_equal_the_charged_reward_at_zero_quality(llama_tiny, privacy_file, privacy):
    """`base_rewards` (written flat for the decision path) is exactly the reward `request_outcome`
    charges each split with no quality loss and no switch, at every state term, with timeouts."""
    cfg = SplitPointConfig(model="llama-tiny", prefill_chunks=8, edge_load={}, include_ue_state=True,
                           battery_aware_energy=True, request_timeout_s=0.5,
                           privacy_table=str(privacy_file) if privacy else None)
    svc = RequestCostService(cfg, llama_tiny.view)
    rng = np.random.default_rng(0)
    for snr in (-20.0, -4.0, 6.5, 31.0):
        for _ in range(3):
            st = {"edge_load": float(rng.uniform(0, 0.97)), "battery": float(rng.uniform(0.02, 1.0))}
            load = float(rng.uniform(0, 1))
            base = svc.base_rewards(snr, load, **st)
            want = [svc.request_outcome(s, snr, previous_split=s, load=load, **st)["reward"] for s in range(svc.L + 1)]
            np.testing.assert_array_equal(base, want)
    assert svc.request_costs(-20.0, 0.5)[2].any()  # the timeout branch was exercised


@pytest.mark.parametrize("kw", [
    {},
    {"prefill_chunks": 8, "edge_load": {}, "include_ue_state": True, "battery_aware_energy": True},
    {"prefill_chunks": 4, "edge_load": {"self_load": False}, "include_ue_state": True, "request_timeout_s": 0.3,
     "privacy": True},
    {"prefill_chunks": 8, "edge_load": {}, "include_ue_state": True, "reward": {"latency_metric": "ttft"}},
    {"prefill_chunks": 8, "edge_load": {}, "include_ue_state": True, "reward": {"latency_metric": "tpot"},
     "new_tokens": 1},
], ids=["plain", "rich", "timeouts-privacy", "ttft", "tpot-one-token"])
def test_compiled_base_rewards_equal_the_service(llama_tiny, privacy_file, kw):
    """`splitrl.decision.kernel_numba.base_rewards_into` gives `RequestCostService.base_rewards` bit for bit."""
    from splitrl.decision.kernel_numba import base_rewards_into

    kw = dict(kw)
    if kw.pop("privacy", False):
        kw["privacy_table"] = str(privacy_file)
    svc = RequestCostService(SplitPointConfig(model="llama-tiny", **kw), llama_tiny.view)
    static, steps, consts = svc.kernel_inputs()
    rng = np.random.default_rng(1)
    timed_out = False
    for _ in range(40):
        snr = float(np.round(rng.uniform(-25, 45), 1))
        load = float(rng.uniform(0, 1)) if rng.random() < 0.8 else None
        edge = float(rng.uniform(0, 0.99)) if svc.config.edge_load is not None and rng.random() < 0.9 else None
        battery = float(rng.uniform(0.01, 1)) if rng.random() < 0.7 else None
        state = {k: v for k, v in (("edge_load", edge), ("battery", battery)) if v is not None}
        out = np.empty(svc.L + 1)
        base_rewards_into(out, static, steps, consts, svc.link_rows(snr), load or 0.0, load is not None, edge or 0.0,
                          edge is not None, 1.0 if battery is None else battery, battery is not None)
        np.testing.assert_array_equal(out, svc.base_rewards(snr, load, **state))
        timed_out |= bool(svc.request_costs(snr, load, edge_load=edge)[2].any())
    assert timed_out or "request_timeout_s" not in kw


def test_edge_load_slows_only_the_edge_and_grows_with_load(llama_tiny):
    svc = RequestCostService(SplitPointConfig(model="llama-tiny", edge_load={"self_load": False}), llama_tiny.view)
    idle = svc.costs_at(20.0)
    busy = svc.costs_at(20.0, edge_load=0.8)
    # M/D/1: the edge's compute time is multiplied by 1 + rho / (2 (1 - rho)) = 3 at rho = 0.8.
    np.testing.assert_allclose(busy.edge_prefill_s, 3.0 * idle.edge_prefill_s)
    np.testing.assert_allclose(busy.ue_prefill_s, idle.ue_prefill_s)
    assert busy.e2e_latency_s[-1] == idle.e2e_latency_s[-1]  # all on the UE: no edge involved
    lat = [svc.request_latency(20.0, edge_load=r)[0] for r in (0.0, 0.3, 0.6, 0.9)]
    assert all(b > a for a, b in zip(lat, lat[1:]))
    assert md1_slowdown(0.0) == 1.0 and np.isclose(md1_slowdown(0.5), 1.5)


def test_own_offloaded_work_adds_to_edge_utilisation(llama_tiny):
    svc = RequestCostService(SplitPointConfig(model="llama-tiny", edge_load={}), llama_tiny.view)
    rho = svc.edge_utilization(0.5)
    assert rho[-1] == 0.5 and (rho[:-1] > 0.5).all()
    assert (np.diff(rho) <= 0).all()  # fewer layers offloaded, less added load


def test_battery_raises_energy_weight(llama_tiny):
    svc = RequestCostService(SplitPointConfig(model="llama-tiny"), llama_tiny.view)
    full = svc.request_outcome(3, 15.0, previous_split=3, battery=1.0)
    low = svc.request_outcome(3, 15.0, previous_split=3, battery=0.25)
    assert np.isclose(low["reward_terms"]["energy"], 4.0 * full["reward_terms"]["energy"])
    assert low["latency_s"] == full["latency_s"]


# --- pipelined prefill -------------------------------------------------------------------------
def test_pipelined_prefill_never_slower_and_formula_at_balance(llama_tiny):
    seq = CostModel(llama_tiny.view, "phone-midrange", "edge-cpu-server", "nr-sub6-20mhz", codec="fp16")
    pipe = CostModel(llama_tiny.view, "phone-midrange", "edge-cpu-server", "nr-sub6-20mhz", codec="fp16",
                     prefill_chunks=4)
    for snr in (0.0, 15.0, 30.0):
        a = seq.estimate_all(snr, prompt_tokens=128, new_tokens=8)
        b = pipe.estimate_all(snr, prompt_tokens=128, new_tokens=8)
        assert (b.ttft_s <= a.ttft_s + 1e-15).all()
        assert b.ttft_s[0] == a.ttft_s[0] and b.ttft_s[-1] == a.ttft_s[-1]  # no pipelining at the ends
        np.testing.assert_array_equal(b.tpot_s, a.tpot_s)
    # Recompute one split's pipelined TTFT by hand for c = 4 and check the model takes the min.
    s, T, c = 3, 128, 4
    tc = T // c
    ue, edge = pipe._ue, pipe._edge
    air = pipe.transfer_s(int(pipe._uplink_bytes(tc)[s]), 15.0)
    ttft4 = (ue.chunk_s(tc, 0, head=False)[s] + air + edge.chunk_s(tc, 0, head=False)[s]
             + (c - 1) * max(ue.chunk_s(tc, T - tc, head=False)[s], air, edge.chunk_s(tc, T - tc, head=True)[s])
             + pipe.estimate_all(15.0, 128, 8).downlink_s[s])
    assert pipe.estimate_all(15.0, 128, 8).ttft_s[s] <= ttft4 + 1e-12
    with pytest.raises(ValueError, match="prefill_chunks"):
        CostModel(llama_tiny.view, "phone-midrange", "edge-a100", "nr-sub6-20mhz", prefill_chunks=0)


# --- edge-load process -------------------------------------------------------------------------
def test_edge_load_chain_keeps_its_stationary_law_and_delays_reports():
    cfg = EdgeLoadConfig(delay_steps=2, move_probability=0.5)
    P = cfg.transition_matrix()
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(cfg.stationary() @ P, cfg.stationary(), atol=1e-12)
    proc = EdgeLoadProcess(cfg)
    proc.reset(np.random.default_rng(0))
    seen = [proc.current]
    for _ in range(50):
        proc.step()
        seen.append(proc.current)
        assert proc.observed == seen[max(0, len(seen) - 3)]
    with pytest.raises(UsageError, match="edge_load.levels"):
        EdgeLoadConfig(levels=(0.5, 0.2))


def test_edge_load_trace_is_replayed(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text("time_s,utilization\n0,0.1\n1,0.5\n2,0.9\n")
    proc = EdgeLoadProcess(EdgeLoadConfig(kind="trace", trace=str(path), delay_steps=0))
    first = proc.reset(np.random.default_rng(1))
    vals = [first] + [proc.step() for _ in range(5)]
    i = [0.1, 0.5, 0.9].index(first)
    assert vals == [[0.1, 0.5, 0.9][(i + k) % 3] for k in range(6)]
    bad = tmp_path / "bad.csv"
    bad.write_text("utilization\n1.5\n")
    with pytest.raises(UsageError, match="edge_load.trace"):
        EdgeLoadProcess(EdgeLoadConfig(kind="trace", trace=str(bad)))


# --- privacy -----------------------------------------------------------------------------------
def test_privacy_table_and_floor(privacy_file):
    t = PrivacyTable.load(privacy_file, num_layers=L_TINY, model="llama-tiny")
    assert t.recovery[L_TINY] == 0.0  # nothing crosses at s = L
    assert t.min_split(0.1) == 4 and t.min_split(1.0) == 0 and t.min_split(0.0) == L_TINY
    with pytest.raises(UsageError, match="privacy_table"):
        PrivacyTable.load(privacy_file, num_layers=L_TINY, model="smollm2-135m")


def test_privacy_floor_is_observed_and_enforced(tiny_table, llama_tiny, privacy_file):
    env = _env(tiny_table, llama_tiny, privacy_table=str(privacy_file), privacy_targets=(0.1,),
               reward={"w_privacy": 1.0})
    obs, _ = env.reset(seed=0)
    spec = env.unwrapped.obs_spec
    assert obs[spec.index("privacy_target")] == 4
    _, _, _, _, info = env.step(0)  # asks for split 1 (s_min)
    assert info["split"] == 4 and info["requested_split"] == 1
    assert np.isclose(info["reward_terms"]["privacy"], 0.1)
    assert env.unwrapped.action_masks().tolist() == [False, False, False, True, True, True]


# --- codec per request -------------------------------------------------------------------------
def test_codec_action_changes_bytes_and_quality_source(tiny_table, llama_tiny):
    env = _env(tiny_table, llama_tiny, codecs=("int8-biterr", "int4-biterr"))
    u = env.unwrapped
    assert env.action_space.n == 2 * L_TINY
    env.reset(seed=0)
    _, _, _, _, i8 = env.step(u.action_for_split(2, codec=0))
    _, _, _, _, i4 = env.step(u.action_for_split(2, codec=1))
    assert i8["transport"] == "int8-biterr" and i4["transport"] == "int4-biterr"
    assert i4["bytes_on_air"] < i8["bytes_on_air"]


# --- observation spec and env checks -----------------------------------------------------------
def test_observation_spec_layout():
    spec = ObservationSpec(num_layers=6, history=2, include_ue_state=True, include_edge_load=True,
                           include_privacy_target=True)
    v = spec.vector(Observation(snr_db=3.0, split=2, battery=0.5, load=0.1, edge_load=0.7, privacy_target=4))
    assert v.shape == (spec.size,) == (spec.box().shape[0],)
    assert v[spec.index("edge_load")] == np.float32(0.7) and v[spec.index("privacy_target")] == 4
    assert v[spec.index("battery")] == 0.5 and v[spec.index("split")] == 2
    old = ObservationSpec(num_layers=6, history=2)
    assert old.size == 5 and old.vector(Observation(snr_db=3.0, edge_load=0.7)).shape == (5,)
    with pytest.raises(KeyError):
        old.index("edge_load")


@pytest.mark.parametrize("kw", [RICH, {**RICH, "action_mode": "relative"}, {"codecs": ("int8-biterr", "int4-biterr")}])
def test_rich_env_passes_gymnasium_and_sb3_checks(tiny_table, llama_tiny, kw):
    env = _env(tiny_table, llama_tiny, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)


def test_rich_env_is_seeded_and_reports_edge_load(tiny_table, llama_tiny):
    def roll(seed):
        env = _env(tiny_table, llama_tiny, **RICH)
        obs, _ = env.reset(seed=seed)
        out = [obs.tolist()]
        for a in range(12):
            obs, r, *_, info = env.step(a % env.action_space.n)
            out.append((obs.tolist(), r, info["edge_load"]))
        return out
    assert roll(3) == roll(3) and roll(3) != roll(4)


# --- table env fast path -----------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {**RICH, "snr_resolution_db": 0.1},
    {**RICH, "snr_resolution_db": 0.5, "action_mode": "relative", "battery_aware_energy": False},
    {"snr_resolution_db": 0.1, "codecs": ("int8-biterr", "int4-biterr"), "edge_load": {"delay_steps": 0}},
])
def test_fast_table_step_equals_slow_path_at_the_same_states(tiny_table, llama_tiny, kw):
    fast = _env(tiny_table, llama_tiny, **kw)
    cfg = SplitPointConfig(model="llama-tiny", table=str(tiny_table), **kw)
    slow = gym.wrappers.TimeLimit(SplitPointTableEnv(cfg, view=llama_tiny.view, fast_path=False), max_episode_steps=20)
    assert fast.unwrapped.fast_path and not slow.unwrapped.fast_path
    rng = np.random.default_rng(7)
    of, _ = fast.reset(seed=11)
    os_, _ = slow.reset(seed=11)
    np.testing.assert_array_equal(of, os_)
    for _ in range(60):
        a = int(rng.integers(fast.action_space.n))
        of, rf, tf, trf, inf = fast.step(a)
        os_, rs, ts, trs, ins = slow.step(a)
        np.testing.assert_allclose(of, os_, rtol=0, atol=0)
        assert np.isclose(rf, rs, rtol=1e-12, atol=1e-12) and (tf, trf) == (ts, trs)
        assert inf.keys() == ins.keys()
        for k, v in ins.items():
            if k == "reward_terms":
                assert v.keys() == inf[k].keys()
                np.testing.assert_allclose([inf[k][t] for t in v], list(v.values()), rtol=1e-12, atol=1e-15)
            else:
                assert np.isclose(inf[k], v, rtol=1e-12, atol=0) if isinstance(v, float) else inf[k] == v, k
        if trf:
            of, _ = fast.reset()
            os_, _ = slow.reset()


def test_vector_env_shares_tables_and_runs_ppo_steps(tiny_table, llama_tiny):
    from stable_baselines3 import PPO

    from splitrl.envs.split_point import make_table_vec_env

    cfg = SplitPointConfig(model="llama-tiny", table=str(tiny_table), **RICH, snr_resolution_db=0.1)
    vec = make_table_vec_env(cfg, n_envs=3, seed=5, view=llama_tiny.view, max_episode_steps=16)
    envs = [e.unwrapped for e in vec.envs]
    assert len({id(e.state_tables) for e in envs}) == 1
    obs = vec.reset()
    assert obs.shape == (3, envs[0].obs_spec.size)
    assert not np.array_equal(obs[0], obs[1])  # different seeds
    PPO("MlpPolicy", vec, n_steps=16, batch_size=24, n_epochs=1, seed=0, device="cpu").learn(48)


@pytest.mark.parametrize("fast", [True, False])
def test_action_values_are_the_expected_step_reward(tiny_table, llama_tiny, privacy_file, fast):
    """action_values = the step's reward with the sampled quality replaced by the table mean."""
    cfg = SplitPointConfig(model="llama-tiny", table=str(tiny_table), **RICH, snr_resolution_db=0.1,
                           privacy_table=str(privacy_file), privacy_targets=(1.0, 0.6), reward={"w_privacy": 0.5})
    env = SplitPointTableEnv(cfg, view=llama_tiny.view, fast_path=fast)
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    w_q = cfg.reward.w_quality
    for _ in range(25):
        prev = env._split
        values = env.action_values(previous_split=prev)[:, 0]
        mean_q = env.mean_quality(env._snr)
        a = int(rng.integers(env.action_space.n))
        _, r, *_, info = env.step(a)
        i = int(np.flatnonzero(env.splits == info["split"])[0])
        assert np.isfinite(values[i])
        assert np.isclose(r, values[i] - w_q * (info["log_ppl_ratio"] - mean_q[info["split"]]), rtol=1e-9, atol=1e-12)
        if "privacy_floor" in info:
            assert np.isneginf(values[: max(0, info["privacy_floor"] - cfg.s_min)]).all() or info["privacy_floor"] <= cfg.s_min
