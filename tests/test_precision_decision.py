"""UE weight precision on the decision side (issue 19 section 3): profiles' per-precision rates,
the cost model's exact bytes, the (split, UE precision) action behind ``ue_precisions``, the table
env's quality per precision and the calibration's report. Switch off reproduces every old figure
(the existing tests guard that bit for bit); switch on changes what it should, and nothing else."""
import math
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import yaml
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import splitrl  # noqa: F401  (registers the environments)
from splitrl.decision.costs import RequestCostService
from splitrl.decision.observation import ObservationSpec
from splitrl.cost import CostModel, UEProfile, load_profile, profile_from_dict
from splitrl.cost.profiles import PROFILE_DIR
from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv, SweepTable
from splitrl.errors import UsageError
from splitrl.quant.precision import PRECISIONS, linear_weight_bytes

L_TINY = 6
UE_MIN = {"name": "u", "flops_per_s": 1e11, "memory_budget_bytes": 1e9, "compute_power_w": 2.0}
RATES = {p: {"compute": 1.0, "memory": 1.0} for p in PRECISIONS}
# Per-precision quality of the synthetic table: ppl x factor^(split / L) (more UE layers, more loss).
PPL_FACTOR = {"fp32": 1.0, "bf16": 1.0, "int8": 1.02, "int4": 1.5}


# --- synthetic sweep tables (no model run: built from the cost model's shape only) ---------------
def _sweep_rows(precision: str | None, *, transports=("awgn", "int8-biterr"), levels=(-5.0, 10.0, 30.0),
                seeds=2, clean=40.0) -> pd.DataFrame:
    """Rows shaped like `splitrl sweep`'s CSV: ppl falls with SNR for 0 < s < L, precision loss
    grows with the layers on the UE; ``precision`` None writes no ue_precision column."""
    rng = np.random.default_rng(0)
    rows = []
    f = PPL_FACTOR[precision or "fp32"]
    for t in transports:
        for lv in levels:
            for s in range(L_TINY + 1):
                for k in range(seeds):
                    link = 0.0 if s in (0, L_TINY) else max(0.0, (15.0 - lv) / 10.0) * (1.0 + 0.1 * k)
                    ppl = clean * math.exp(link + 0.01 * rng.standard_normal()) * f ** (s / L_TINY)
                    row = {"model": "llama-tiny", "transport": t, "level_kind": "snr", "level": lv, "snr_db": lv,
                           "split": s, "seed_index": k, "ppl": ppl, "clean_ppl": clean,
                           "log_ppl_ratio": math.log(ppl / clean)}
                    if precision is not None:
                        row["ue_precision"] = precision
                    rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("precision_sweep")
    plain = d / "plain.csv"            # today's committed format: no ue_precision column (all fp32)
    _sweep_rows(None).to_csv(plain, index=False)
    full = d / "full.csv"              # the lead's new sweep: fp32 rows + one block per precision
    pd.concat([_sweep_rows(p) for p in PRECISIONS]).to_csv(full, index=False)
    partial = d / "partial.csv"        # fp32 and int4 only
    pd.concat([_sweep_rows("fp32"), _sweep_rows("int4")]).to_csv(partial, index=False)
    return {"plain": plain, "full": full, "partial": partial}


def _env(table, llama_tiny, fast_path=True, **kw):
    cfg = SplitPointConfig(model="llama-tiny", table=str(table), **kw)
    return SplitPointTableEnv(cfg, view=llama_tiny.view, fast_path=fast_path)


# --- profiles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["phone-midrange", "phone-flagship", "jetson-orin"])
def test_shipped_ue_profiles_list_every_precision_with_sources(name):
    p = load_profile("ue", name)
    assert p.supported_precisions == PRECISIONS
    for prec in PRECISIONS:
        flops, bw = p.rates_at(prec)
        f = p.precision_rates[prec]
        assert flops == p.flops_per_s * f["compute"] and bw == p.memory_bandwidth_bytes_per_s * f["memory"]
    assert p.precision_rates["int4"]["memory"] < p.precision_rates["int8"]["memory"] <= 1.0
    text = (PROFILE_DIR / f"{name}.yaml").read_text()
    block = text[text.index("# Weight precisions"):]
    assert "discussions/4167" in block and block.count("#") >= 6, "every precision rate carries its source"


def test_precision_rates_validate_in_the_profile_error_shape():
    ok = UEProfile(**UE_MIN, memory_bandwidth_bytes_per_s=1e10, precision_rates={"int4": {"compute": 0.5, "memory": 0.6}})
    assert ok.supported_precisions == ("int4",) and ok.rates_at("int4") == (0.5e11, 0.6e10)
    assert UEProfile(**UE_MIN).supported_precisions == () and UEProfile(**UE_MIN).precision_rates is None
    bad = [
        ({"int3": {"compute": 1, "memory": 1}}, "precision_rates key = 'int3': must be one of"),
        ({"int8": {"compute": 1}}, "precision_rates.int8 = .*exactly the keys 'compute' and 'memory'"),
        ({"int8": {"compute": 0, "memory": 1}}, r"precision_rates.int8.compute = 0: must be a number in \(0, 100\]"),
        ({"int8": {"compute": 1, "memory": "fast"}}, "precision_rates.int8.memory = 'fast'"),
        ({}, "precision_rates = {}: must be None or a non-empty mapping"),
        ([1], "precision_rates = "),
    ]
    for rates, msg in bad:
        with pytest.raises(ValueError, match=f"UEProfile 'u': {msg}"):
            UEProfile(**UE_MIN, precision_rates=rates)
    with pytest.raises(ValueError, match=r"UEProfile 'u': precision = 'fp32': must be one the profile's "
                                         r"precision_rates lists \(int4\)"):
        ok.rates_at("fp32")
    with pytest.raises(ValueError, match="must be one of fp32, bf16, int8, int4"):
        ok.rates_at("fp8")


def test_precision_rates_load_from_yaml(tmp_path):
    text = yaml.safe_dump({"kind": "ue", **UE_MIN, "precision_rates": {"int8": {"compute": "1e0", "memory": 0.9}}})
    path = tmp_path / "u.yaml"
    path.write_text(text)
    p = load_profile("ue", path)
    assert p.precision_rates == {"int8": {"compute": 1.0, "memory": 0.9}}
    assert p.scaled(2.0).rates_at("int8") == (2e11, None)  # relative factors follow a scaled profile
    with pytest.raises(ValueError, match="unknown key"):
        profile_from_dict("ue", {**UE_MIN, "precision_speedup": {}})


# --- cost model: exact bytes, memory, rates ------------------------------------------------------
def _hand_ue(**kw) -> UEProfile:
    base = dict(name="hand-ue", flops_per_s=1e15, memory_bandwidth_bytes_per_s=1e9, layer_overhead_s=0.0,
                memory_budget_bytes=1e12, compute_power_w=1.0, weight_dtype="fp32", kv_dtype="fp32",
                precision_rates=RATES)
    return UEProfile(**{**base, **kw})


def _held_weight_bytes(model_name: str, split: int, num_layers: int, precision: str) -> int:
    """What a UE process loaded at ``precision`` for ``split`` really holds (its quantised buffers too)."""
    from splitrl.models import load_model
    from splitrl.pipeline.stage import param_bytes

    if split == 0:
        return 0  # the UE sends token ids and holds no weights
    ue = load_model(model_name, precision=precision, layers=(0, split), embed=True, head=split == num_layers)
    return param_bytes(ue.model)


@pytest.mark.parametrize("model", ["llama_tiny", "gpt2_tiny"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_ue_weight_bytes_are_the_runtime_storage(request, model, precision):
    lm = request.getfixturevalue(model)
    cm = CostModel(lm.view, _hand_ue(), "edge-a100", "nr-sub6-20mhz", ue_precision=precision)
    t = cm.estimate_all(20.0, 16, 4)
    L = lm.view.num_layers
    for s in (0, 1, 3, L):
        assert t.ue_weight_bytes[s] == _held_weight_bytes(lm.name, s, L, precision), s
    assert cm.ue_precision == precision and precision in repr(cm)


def test_precision_sets_memory_mask_and_bandwidth_bound_decode(llama_tiny):
    L = llama_tiny.view.num_layers
    cms = {p: CostModel(llama_tiny.view, _hand_ue(), "edge-a100", "nr-sub6-20mhz", ue_precision=p) for p in PRECISIONS}
    tabs = {p: cm.estimate_all(20.0, 16, 2) for p, cm in cms.items()}
    w = {p: tabs[p].ue_weight_bytes for p in PRECISIONS}
    assert (w["int4"][1:L] < w["int8"][1:L]).all() and (w["int8"][1:] < w["bf16"][1:]).all()
    # all on the UE at int4 the tied head is its own int4 matrix beside the int8 embedding rows: on a
    # 64-wide model with a 50k vocabulary that costs more than int8's shared matrix
    assert w["int4"][L] > w["int8"][L]
    assert (w["bf16"][1:] < w["fp32"][1:]).all() and (w["fp32"][0] == 0)
    # Memory-bound decode (FLOP/s 1e15): one step at context T + 1 reads the weights, one embedding
    # row and the KV cache, at the bandwidth x the precision's memory factor.
    rates = {**RATES, "int4": {"compute": 1.0, "memory": 0.5}}
    cm4 = CostModel(llama_tiny.view, _hand_ue(precision_rates=rates), "edge-a100", "nr-sub6-20mhz", ue_precision="int4")
    t4 = cm4.estimate_all(20.0, 16, 2)
    kv = tabs["fp32"].ue_kv_bytes / (16 + 1)  # fp32 KV bytes per position (kv_dtype is the profile's)
    V, H = llama_tiny.view.embed_tokens.weight.shape
    row = H + 2                                        # one int8 embedding row and its bf16 scale
    table = V * H + 2 * V                              # held, not streamed per step
    for s in (1, 3):
        expect = (t4.ue_weight_bytes[s] - table + row + kv[s] * 17) / (1e9 * 0.5)
        assert t4.ue_decode_s[s] == pytest.approx(expect, rel=1e-12)
    assert (tabs["int4"].ue_decode_s[1:] < tabs["fp32"].ue_decode_s[1:]).all()
    # The edge is untouched by the UE's precision.
    for p in PRECISIONS:
        np.testing.assert_array_equal(tabs[p].edge_prefill_s, tabs["fp32"].edge_prefill_s)
        np.testing.assert_array_equal(tabs[p].edge_decode_s, tabs["fp32"].edge_decode_s)
    # A budget between the int4 and the fp32 weights: fp32 fits nowhere past split 0, int4 everywhere.
    budget = float((w["int4"][L] + w["fp32"][1]) / 2)
    small = {p: CostModel(llama_tiny.view, _hand_ue(memory_budget_bytes=budget), "edge-a100", "nr-sub6-20mhz",
                          ue_precision=p) for p in ("fp32", "int4")}
    assert small["fp32"].feasible_splits(17).tolist() == [0]
    assert small["int4"].feasible_splits(17).tolist() == list(range(L + 1))


def test_unsupported_precision_and_default_path(llama_tiny):
    with pytest.raises(ValueError, match="precision_rates lists"):
        CostModel(llama_tiny.view, _hand_ue(precision_rates=None), "edge-a100", "nr-sub6-20mhz", ue_precision="int4")
    with pytest.raises(ValueError, match="ue_precision = 'int2'"):
        CostModel(llama_tiny.view, _hand_ue(), "edge-a100", "nr-sub6-20mhz", ue_precision="int2")
    a = CostModel(llama_tiny.view, "phone-midrange", "edge-a100", "nr-sub6-20mhz").estimate_all(10.0, 128, 32)
    b = CostModel(llama_tiny.view, "phone-midrange", "edge-a100", "nr-sub6-20mhz",
                  ue_precision=None).estimate_all(10.0, 128, 32)
    np.testing.assert_array_equal(a.e2e_latency_s, b.e2e_latency_s)
    np.testing.assert_array_equal(a.ue_memory_bytes, b.ue_memory_bytes)


# --- cost service and the compiled kernel ----------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {},
    {"edge_load": {}, "include_ue_state": True, "battery_aware_energy": True, "prefill_chunks": 4},
    {"codecs": ("awgn", "int8-biterr"), "request_timeout_s": 0.05, "edge_load": {}},
])
def test_compiled_base_rewards_equal_the_service_at_every_precision(llama_tiny, kw):
    """`splitrl.decision.kernel_numba.base_rewards_into` on a precision's kernel inputs and link rows gives
    `RequestCostService.base_rewards(precision=...)` bit for bit."""
    from splitrl.decision.kernel_numba import base_rewards_into

    svc = RequestCostService(SplitPointConfig(model="llama-tiny", ue_precisions=PRECISIONS, **kw), llama_tiny.view)
    rng = np.random.default_rng(3)
    for t, p in svc.options:
        static, steps, consts = svc.kernel_inputs(t, p)
        for _ in range(12):
            snr = float(np.round(rng.uniform(-25, 45), 1))
            load = float(rng.uniform(0, 1)) if rng.random() < 0.8 else None
            edge = float(rng.uniform(0, 0.99)) if svc.config.edge_load is not None and rng.random() < 0.9 else None
            battery = float(rng.uniform(0.01, 1)) if rng.random() < 0.7 else None
            state = {k: v for k, v in (("edge_load", edge), ("battery", battery)) if v is not None}
            out = np.empty(svc.L + 1)
            base_rewards_into(out, static, steps, consts, svc.link_rows(snr, t, p), load or 0.0, load is not None,
                              edge or 0.0, edge is not None, 1.0 if battery is None else battery, battery is not None)
            np.testing.assert_array_equal(out, svc.base_rewards(snr, load, transport=t, precision=p, **state))
    # None is the first configured precision, for the kernel as for numpy.
    np.testing.assert_array_equal(svc.kernel_inputs()[0], svc.kernel_inputs(None, "fp32")[0])
    np.testing.assert_array_equal(svc.link_rows(7.0), svc.link_rows(7.0, None, "fp32"))


def test_service_references_do_not_move_with_the_switch(llama_tiny):
    off = RequestCostService(SplitPointConfig(model="llama-tiny"), llama_tiny.view)
    on = RequestCostService(SplitPointConfig(model="llama-tiny", ue_precisions=("int4", "fp32")), llama_tiny.view)
    assert (on.latency_ref_s, on.energy_ref_j) == (off.latency_ref_s, off.energy_ref_j)
    assert on.options == (("awgn", "int4"), ("awgn", "fp32")) and off.options == (("awgn", None),)
    assert on.default_precision == "int4" and off.default_precision is None
    e4, e32 = (on.costs_at(20.0, precision=p).ue_energy_j_per_token for p in ("int4", "fp32"))
    assert e4[-1] < e32[-1]  # all on the UE: fewer bytes streamed per token
    np.testing.assert_array_equal(off.base_rewards(5.0), RequestCostService(
        SplitPointConfig(model="llama-tiny"), llama_tiny.view).base_rewards(5.0))
    with pytest.raises(ValueError, match="precision 'bf16' is not configured"):
        on.costs_at(20.0, precision="bf16")


# --- config and observation spec -------------------------------------------------------------------
def test_config_validates_ue_precisions():
    assert SplitPointConfig(ue_precisions=["int4", "fp32"]).ue_precisions == ("int4", "fp32")
    with pytest.raises(ValueError, match="ue_precisions = 'fp8': must be one of fp32, bf16, int8, int4"):
        SplitPointConfig(ue_precisions=("fp8",))
    with pytest.raises(ValueError, match="distinct"):
        SplitPointConfig(ue_precisions=("int4", "int4"))
    with pytest.raises(ValueError, match="needs action_mode absolute"):
        SplitPointConfig(ue_precisions=("int4", "fp32"), action_mode="relative")
    with pytest.raises(ValueError, match="a list of precisions"):
        SplitPointConfig(ue_precisions="int4")
    SplitPointConfig(ue_precisions=("int4",), action_mode="relative")  # one precision: no choice to make


def test_observation_spec_action_layout_with_precisions():
    spec = ObservationSpec(num_layers=6, s_min=1, num_codecs=2, num_precisions=3)
    assert spec.num_options == 6 and spec.num_actions == 36
    seen = set()
    for s in range(1, 7):
        for c in range(2):
            for p in range(3):
                a = spec.action_for_split(s, 0, c, p)
                assert (spec.split_for_action(a, 0), spec.codec_for_action(a), spec.precision_for_action(a)) == (s, c, p)
                seen.add(a)
    assert seen == set(range(36))
    old = ObservationSpec(num_layers=6, s_min=1, num_codecs=2)  # one precision: the codec layout of before
    assert [old.codec_for_action(a) for a in range(4)] == [0, 1, 0, 1] and old.action_for_split(3, 0, 1) == 5
    with pytest.raises(ValueError, match="precision 3 outside"):
        spec.action_for_split(1, 0, 0, 3)
    with pytest.raises(UsageError, match="ue_precisions"):
        ObservationSpec(num_layers=6, action_mode="relative", num_precisions=2)


# --- the table env ----------------------------------------------------------------------------------
def test_sweep_table_reads_quality_per_precision(tables):
    splits = np.arange(1, L_TINY + 1)
    plain = SweepTable(tables["plain"], "awgn", splits)
    fp32 = SweepTable(tables["full"], "awgn", splits, precision="fp32")
    np.testing.assert_array_equal(plain.log_ratio, fp32.log_ratio)  # no column = fp32, bit for bit
    assert plain.ppl_clean == fp32.ppl_clean == 40.0
    int4 = SweepTable(tables["full"], "awgn", splits, precision="int4")
    df = pd.read_csv(tables["full"])
    cell = df[(df.ue_precision == "int4") & (df.transport == "awgn") & (df.level == 10.0) & (df.split == 4)
              & (df.seed_index == 1)]
    assert int4.lookup(4, 10.0, 1) == pytest.approx(math.log(float(cell.ppl.iloc[0]) / 40.0), rel=1e-12)
    assert int4.ppl_clean == 40.0  # scored against the fp32 model's clean perplexity
    assert (int4.log_ratio[L_TINY] > fp32.log_ratio[L_TINY]).all()  # all-on-UE int4 loses quality
    with pytest.raises(UsageError, match="no rows for UE precision 'int8'.*ue_precision fp32, int4"):
        SweepTable(tables["partial"], "awgn", splits, precision="int8")
    with pytest.raises(UsageError, match="no rows for UE precision 'int4'"):
        SweepTable(tables["plain"], "awgn", splits, precision="int4")


def test_sweep_table_rejects_bad_precision_rows(tmp_path):
    splits = np.arange(1, L_TINY + 1)
    only4 = tmp_path / "only4.csv"
    _sweep_rows("int4").to_csv(only4, index=False)
    with pytest.raises(UsageError, match="no fp32 rows"):
        SweepTable(only4, "awgn", splits, precision="int4")
    odd = tmp_path / "odd.csv"
    pd.concat([_sweep_rows("fp32"), _sweep_rows("int4").assign(ue_precision="q4_1")]).to_csv(odd, index=False)
    with pytest.raises(UsageError, match=r"ue_precision values \['q4_1'\]"):
        SweepTable(odd, "awgn", splits)


def test_switch_off_reads_only_fp32_rows_of_a_mixed_table(tables, llama_tiny):
    """The lead's new sweep (fp32 + precision rows) leaves every switch-off figure as the old table's."""
    def roll(table):
        env = _env(table, llama_tiny, edge_load={}, include_ue_state=True, memory_mask=True, snr_resolution_db=0.1)
        obs, _ = env.reset(seed=4)
        out = [obs.tolist()]
        for a in range(30):
            obs, r, *_, info = env.step((7 * a) % env.action_space.n)
            out.append((obs.tolist(), r, info["ppl"], "ue_precision" in info))
        return out, env.action_space.n
    assert roll(tables["plain"]) == roll(tables["full"])
    assert roll(tables["full"])[1] == L_TINY


def test_precision_action_changes_costs_quality_and_info(tables, llama_tiny):
    env = _env(tables["full"], llama_tiny, ue_precisions=("fp32", "int8", "int4"))
    assert env.action_space.n == 3 * L_TINY
    env.reset(seed=0)
    got = {}
    for j, p in enumerate(("fp32", "int8", "int4")):
        _, r, _, _, info = env.step(env.action_for_split(L_TINY, precision=j))
        got[p] = info
        assert info["ue_precision"] == p and info["split"] == L_TINY and "transport" not in info
    assert got["int4"]["log_ppl_ratio"] > got["int8"]["log_ppl_ratio"] > got["fp32"]["log_ppl_ratio"] - 1e-9
    assert got["int4"]["energy_j"] < got["fp32"]["energy_j"]  # all on the UE, fewer bytes per token
    assert got["int4"]["bytes_on_air"] == got["fp32"]["bytes_on_air"]  # what crosses the cut is unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(gym.wrappers.TimeLimit(env, max_episode_steps=10), warn=True)


def test_missing_precision_in_the_sweep_is_a_clear_error(tables, llama_tiny):
    with pytest.raises(UsageError, match="no rows for UE precision 'int8'"):
        _env(tables["partial"], llama_tiny, ue_precisions=("fp32", "int8"))
    _env(tables["partial"], llama_tiny, ue_precisions=("int4", "fp32"))
    env = _env(tables["plain"], llama_tiny, ue_precisions=("fp32",))  # the committed format runs fp32
    np.testing.assert_array_equal(env.mean_quality(10.0), _env(tables["plain"], llama_tiny).mean_quality(10.0))


def test_memory_mask_is_per_precision(tables, llama_tiny, tmp_path):
    cm = {p: CostModel(llama_tiny.view, "phone-midrange", "edge-a100", "nr-sub6-20mhz", ue_precision=p)
          for p in ("fp32", "int4")}
    ctx = 128 + 32 - 1
    budget = float((cm["int4"].ue_memory_bytes(ctx)[L_TINY] + cm["fp32"].ue_memory_bytes(ctx)[1]) / 2)
    data = yaml.safe_load((PROFILE_DIR / "phone-midrange.yaml").read_text())
    data.update(name="tight-phone", memory_budget_bytes=budget)
    prof = tmp_path / "tight-phone.yaml"
    prof.write_text(yaml.safe_dump(data))
    env = _env(tables["full"], llama_tiny, ue_precisions=("fp32", "int4"), memory_mask=True, ue_profile=str(prof))
    env.reset(seed=0)
    masks = env.action_masks().reshape(L_TINY, 2)
    assert masks[:, 1].all()                                   # int4 fits at every split
    assert masks[:, 0].tolist() == [False] * (L_TINY - 1) + [True]  # fp32 fits nowhere: all on the UE only
    _, _, _, _, info = env.step(env.action_for_split(2, precision=0))
    assert info["split"] == L_TINY and info["requested_split"] == 2 and info["ue_precision"] == "fp32"
    v = env.action_values()
    assert np.isneginf(v[:-1, 0]).all() and np.isfinite(v[:, 1]).all()


@pytest.mark.parametrize("kw", [
    {"ue_precisions": ("int4", "fp32", "int8"), "edge_load": {}, "include_ue_state": True, "memory_mask": True,
     "battery_aware_energy": True, "battery_range": (0.1, 1.0), "prefill_chunks": 4},
    {"ue_precisions": ("fp32", "int4"), "codecs": ("awgn", "int8-biterr"), "edge_load": {"delay_steps": 0}},
])
def test_fast_table_step_equals_slow_path_with_precisions(tables, llama_tiny, kw):
    fast = _env(tables["full"], llama_tiny, snr_resolution_db=0.1, **kw)
    slow = _env(tables["full"], llama_tiny, fast_path=False, snr_resolution_db=0.1, **kw)
    assert fast.fast_path and not slow.fast_path
    rng = np.random.default_rng(5)
    of, _ = fast.reset(seed=9)
    os_, _ = slow.reset(seed=9)
    np.testing.assert_array_equal(of, os_)
    for _ in range(60):
        a = int(rng.integers(fast.action_space.n))
        of, rf, *_, inf = fast.step(a)
        os_, rs, *_, ins = slow.step(a)
        np.testing.assert_array_equal(of, os_)
        assert np.isclose(rf, rs, rtol=1e-12, atol=1e-12) and inf.keys() == ins.keys()
        for k, v in ins.items():
            if k != "reward_terms":
                assert np.isclose(inf[k], v, rtol=1e-12, atol=0) if isinstance(v, float) else inf[k] == v, k


@pytest.mark.parametrize("fast", [True, False])
def test_action_values_and_oracle_pick_the_best_split_and_precision(tables, llama_tiny, fast):
    from splitrl.agents.baselines import OracleAgent

    env = _env(tables["full"], llama_tiny, fast_path=fast, ue_precisions=("fp32", "int8", "int4"), edge_load={},
               include_ue_state=True, snr_resolution_db=0.1)
    oracle = OracleAgent(env)
    obs, _ = env.reset(seed=1)
    w_q = env.config.reward.w_quality
    chosen = set()
    for _ in range(40):
        prev = env._split
        v = env.action_values(previous_split=prev)
        i, j = np.unravel_index(int(np.argmax(v)), v.shape)
        a = oracle.act(obs)
        assert a == env.action_for_option(int(env.splits[i]), int(j))
        mean_q = env.mean_quality(env._snr, None, env.options[j][1])
        obs, r, *_, info = env.step(a)
        chosen.add(info["ue_precision"])
        assert np.isclose(r, v[i, j] - w_q * (info["log_ppl_ratio"] - mean_q[info["split"]]), rtol=1e-9, atol=1e-12)
    assert chosen <= {"fp32", "int8", "int4"} and chosen


def test_known_cost_features_charge_each_precision(tables, llama_tiny):
    from splitrl.agents.information import known_reward_parts

    env = _env(tables["full"], llama_tiny, ue_precisions=("fp32", "int4"))
    obs, _ = env.reset(seed=0)
    parts = known_reward_parts(env, obs).reshape(L_TINY, 2)
    from splitrl.decision.reward import switch_cost

    rc = env.config.reward
    sw = rc.w_switch * switch_cost(rc, env.splits, env._split)
    for j, p in enumerate(("fp32", "int4")):
        np.testing.assert_allclose(parts[:, j], env.base_rewards(float(obs[0]), precision=p)[env.splits] - sw)
    assert not np.array_equal(parts[:, 0], parts[:, 1])


def test_mbrl_compiled_decisions_equal_numpy_at_a_precision(tables, llama_tiny):
    """MBRL plans at the first configured precision; its compiled kernel (that precision's cost
    inputs) decides exactly as the numpy planner."""
    import copy

    from splitrl.agents.mbrl import MBRLAgent, MBRLConfig

    env = gym.wrappers.TimeLimit(_env(tables["full"], llama_tiny, ue_precisions=("int4", "fp32"), edge_load={},
                                      include_ue_state=True, prefill_chunks=4, snr_resolution_db=0.1),
                                 max_episode_steps=20)
    fast = MBRLAgent(env, MBRLConfig(warmup_evaluations=6), seed=1).learn(env, 20)
    slow = copy.deepcopy(fast)
    slow.config.compiled_decisions = False
    fast.prepare_decisions()
    obs, _ = env.reset(seed=3)
    for _ in range(40):
        a = fast.act(obs)
        assert a == slow.act(obs)
        assert env.unwrapped.obs_spec.precision_for_action(a) == 0  # the planned-at precision
        obs, *_ = env.step(a)


def test_controller_decision_carries_the_precision(tables, llama_tiny):
    from splitrl.controller.policy import AgentPolicy
    from splitrl.decision.observation import Observation

    cfg = SplitPointConfig(model="llama-tiny", table=str(tables["full"]), ue_precisions=("fp32", "int4"))
    pol = AgentPolicy.baseline("oracle", cfg, llama_tiny.view)
    d = pol.decide(Observation(snr_db=25.0, snr_history_db=(25.0,) * 4, bandwidth_mhz=20.0, split=L_TINY))
    assert d.ue_precision in ("fp32", "int4") and 1 <= d.split <= L_TINY
    assert pol.decide(Observation(snr_db=25.0, split=3, edge_available=False)).ue_precision is None
    off = AgentPolicy.baseline("all-on-ue", SplitPointConfig(model="llama-tiny", table=str(tables["full"])),
                               llama_tiny.view)
    assert off.decide(Observation(snr_db=25.0, split=3)).ue_precision is None


def test_real_evaluation_env_refuses_low_precisions():
    from splitrl.envs.split_point import SplitPointEnv

    with pytest.raises(UsageError, match="fp32 runtime only"):
        SplitPointEnv(SplitPointConfig(model="llama-tiny", ue_precisions=("int4",)))


# --- calibration ----------------------------------------------------------------------------------
def test_calibration_reports_how_often_each_precision_is_best(tables, llama_tiny):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reward_calibration.py"
    spec = importlib.util.spec_from_file_location("reward_calibration", path)
    cal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cal)
    base = {"model": "llama-tiny", "table": str(tables["full"])}
    vs = cal.variants(base, ("fp32", "int4"))
    assert vs[cal.PRECISION_VARIANT]["ue_precisions"] == ["fp32", "int4"]
    assert cal.PRECISION_VARIANT not in cal.variants(base)
    env = SplitPointTableEnv(SplitPointConfig(**vs[cal.PRECISION_VARIANT]), view=llama_tiny.view)
    r = cal.stationary_best(env, episodes=2, steps=12, seed0=0)
    shares = r["precision_best_share"]
    assert set(shares) == {"fp32", "int4"} and sum(shares.values()) == pytest.approx(1.0)
    assert sum(sum(h.values()) for h in r["best_split_histogram_by_precision"].values()) == r["states"] == 24
    plain = cal.stationary_best(SplitPointTableEnv(SplitPointConfig(**vs["default"]), view=llama_tiny.view), 1, 5, 0)
    assert "precision_best_share" not in plain
    lines = cal.markdown_lines({"default": plain, cal.PRECISION_VARIANT: r}, ("fp32", "int4"))
    assert any(line.startswith("| int4 | ") for line in lines) and lines[0].startswith("| configuration |")


def test_served_requests_run_the_chosen_ue_precision(tables, llama_tiny):
    """The serving loop generates at the (split, UE precision) the policy chose, and records it."""
    from splitrl.controller.session import build_server

    env = {"model": "llama-tiny", "table": str(tables["full"]), "ue_precisions": ["int4", "fp32"]}
    server, loaded, _ = build_server(checkpoint=None, agent="oracle", env=env, channel="fading", seed=0,
                                     loaded=llama_tiny)
    placed = []
    real = server.backend.generate

    def spy(prompt_ids, split, **kw):
        placed.append(split)
        return real(prompt_ids, split, **kw)

    server.backend.generate = spy
    ids = llama_tiny.tokenizer("the phone and the edge", return_tensors="pt").input_ids
    for _ in range(6):
        result, rec = server.serve(ids, max_new_tokens=4, stop_at_eos=False)
        part = placed[-1]
        assert rec.ue_precision in ("int4", "fp32")
        assert part.cuts == (rec.split,) and part.precision_of(0) == rec.ue_precision
        assert part.precision_of(1) == "fp32" and len(result.token_ids) == 4
