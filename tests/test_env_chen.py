"""splitrl/ChenLayerSplit-v0: checkers, determinism, episode structure, reward, moves, drift, bug fixes, config."""
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import splitrl  # noqa: F401  (registers the package's environments)
from splitrl.envs.chen import (
    REFERENCE_INIT, ChenConfig, ChenLayerSplitEnv, drift_factor, relative_moves, relative_step,
)
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.link import DropoutLink

TEST_ID = "splitrl_test/ChenLayerSplit-v0"  # test-local id: the package owns splitrl/ChenLayerSplit-v0
if TEST_ID not in gym.registry:
    gym.register(id=TEST_ID, entry_point="splitrl.envs.chen:ChenLayerSplitEnv")

SMALL = dict(max_split=6, eval_tokens=16, eval_window=16)  # llama-tiny has L = 6 layers


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 5000, (1, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def make(llama_tiny, ids):
    def _make(**kw):
        return ChenLayerSplitEnv(loaded=llama_tiny, input_ids=ids, **{**SMALL, **kw})
    return _make


def _rollout(env, seed, episodes=2):
    rng = np.random.default_rng(7)
    obs, info = env.reset(seed=seed)
    out = [(obs.tolist(), info)]
    for _ in range(episodes):
        while True:
            obs, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
            out.append((obs.tolist(), r, term, trunc, info))
            if term or trunc:
                break
        obs, info = env.reset()
        out.append((obs.tolist(), info))
    return out


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_gymnasium_and_sb3_checks_pass_without_warnings(llama_tiny, ids, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(TEST_ID, loaded=llama_tiny, input_ids=ids, action_mode=mode, **SMALL)
        gym_check_env(env.unwrapped)
        sb3_check_env(env, warn=True)
    assert env.action_space.n == (6 if mode == "absolute" else 9)
    assert env.observation_space.dtype == np.float32
    assert env.observation_space.low.tolist() == [0.0, 1.0]
    assert env.observation_space.high.tolist() == [pytest.approx(0.3), 6.0]


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_same_seed_same_trajectory_and_seeds_differ(make, mode):
    a = _rollout(make(action_mode=mode), seed=3)
    b = _rollout(make(action_mode=mode), seed=3)
    c = _rollout(make(action_mode=mode), seed=4)
    assert a == b
    assert a != c
    assert [x[0] for x in a] != [x[0] for x in c]  # observations differ, not only rewards


def test_masks_are_seeded_from_np_random(make):
    env = make()
    env.reset(seed=11, options={"noise_level": 0.2, "split": 3})
    first = [env.step(a)[4]["ppl"] for a in (4, 1, 4)]  # split 5, 2, 5: same config, fresh masks
    assert first[0] != first[2]
    env.reset(seed=11, options={"noise_level": 0.2, "split": 3})
    assert [env.step(a)[4]["ppl"] for a in (4, 1, 4)] == first


@pytest.mark.parametrize("mode", ["absolute", "relative"])
def test_episode_is_five_steps_then_truncated(make, mode):
    env = make(action_mode=mode)
    env.reset(seed=0)
    flags = []
    for _ in range(5):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        flags.append((term, trunc))
    assert flags == [(False, False)] * 4 + [(False, True)] and info["step"] == 5
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    env.step(0)  # a new episode starts


def test_terminate_at_horizon_and_episode_steps(make):
    env = make(terminate_at_horizon=True, episode_steps=2)
    env.reset(seed=0)
    assert env.step(0)[2:4] == (False, False)
    assert env.step(0)[2:4] == (True, False)
    with pytest.raises(RuntimeError):
        make().step(0)  # before reset


def test_reward_formula_from_info(make):
    for mode in ("absolute", "relative"):
        env = make(action_mode=mode)
        env.reset(seed=1)
        env.action_space.seed(1)
        for _ in range(5):
            _, r, _, _, info = env.step(env.action_space.sample())
            p0, p = info["ppl_initial"], info["ppl"]
            expected = 10.5 * (p0 - p) / p0 + (6 - info["split"]) / 6
            assert r == pytest.approx(expected, rel=1e-12, abs=1e-12)
            assert info["reward_terms"]["inference"] == pytest.approx((p0 - p) / p0)
            assert info["reward_terms"]["load"] == pytest.approx((6 - info["split"]) / 6)
    env = make(inference_factor=2.0, load_factor=0.5)
    env.reset(seed=1)
    _, r, _, _, info = env.step(0)
    assert r == pytest.approx(2.0 * (info["ppl_initial"] - info["ppl"]) / info["ppl_initial"] + 0.5 * 5 / 6)


def test_absolute_actions_select_split_a_plus_1(make):
    env = make()
    env.reset(seed=0, options={"split": 4, "noise_level": 0.1})
    assert [env.target_split(a) for a in range(6)] == [1, 2, 3, 4, 5, 6]
    assert [env.step(a)[4]["split"] for a in (0, 5, 2)] == [1, 6, 3]
    with pytest.raises(ValueError, match="outside"):
        env.target_split(6)
    with pytest.raises(ValueError, match="outside"):
        env.target_split(1.0)


def test_relative_move_set_and_clipping(make):
    assert relative_moves().tolist() == [0, -1, 1, -2, 2, -3, 3, -4, 4]
    assert relative_moves(2).tolist() == [0, -1, 1, -2, 2]
    env = make(action_mode="relative")
    env.reset(seed=0, options={"split": 3, "noise_level": 0.2})
    expected = {0: 3, 1: 2, 2: 4, 3: 1, 4: 5, 5: 1, 6: 6, 7: 1, 8: 6}
    assert {a: env.target_split(a) for a in range(9)} == expected
    _, _, _, _, info = env.step(7)  # down 4 from 3: clipped to 1, a 2-layer move
    assert (info["split"], info["move"]) == (1, -2) and info["drift_factor"] == pytest.approx(1.001)
    _, _, _, _, info = env.step(1)  # down 1 at the bottom: a stay, no evaluation, no drift
    assert (info["split"], info["move"], info["evaluated"]) == (1, 0, False) and info["drift_factor"] == 1.0
    _, _, _, _, info = env.step(8)  # up 4
    assert (info["split"], info["move"]) == (5, 4) and info["drift_factor"] == pytest.approx(0.998)
    _, _, _, _, info = env.step(4)  # up 2 from 5 with max_split 6: clipped to 6
    assert (info["split"], info["move"]) == (6, 1) and info["drift_factor"] == pytest.approx(0.9995)
    assert env.step(6)[4]["split"] == 6  # up 3 at the top: stays


def _reference_relative(split, action):
    """The remapping and drift of train__rsm.py's step(), transcribed (splits 1..10)."""
    if split == 1 and action in [1, 3, 5, 7]:
        action = 0
    elif split == 10 and action in [2, 4, 6, 8]:
        action = 0
    if split == 2 and action in [3, 5, 7]:
        action = 1
    elif split == 9 and action in [4, 6, 8]:
        action = 2
    if split == 3 and action in [5, 7]:
        action = 3
    elif split == 8 and action in [6, 8]:
        action = 4
    if split == 4 and action in [7]:
        action = 5
    elif split == 7 and action in [8]:
        action = 6
    table = {1: (-1, 1.0005), 2: (1, 0.9995), 3: (-2, 1.001), 4: (2, 0.999),
             5: (-3, 1.0015), 6: (3, 0.9995), 7: (-4, 1.002), 8: (4, 0.998)}
    move, factor = table.get(action, (0, 1.0))
    return min(max(split + move, 1), 10), factor


def test_relative_rule_matches_reference_table_at_ten_splits():
    for split in range(1, 11):
        for action in range(9):
            new, factor = _reference_relative(split, action)
            assert relative_step(split, action, 10, 4) == new
            move = new - split
            assert drift_factor(move, "relative", reference_typo=True) == pytest.approx(factor, abs=1e-15)
            fixed = 0.9985 if move == 3 else factor
            assert drift_factor(move, "relative") == pytest.approx(fixed, abs=1e-15)


def test_noise_drift_rule_absolute(make):
    env = make()
    obs, _ = env.reset(seed=0, options={"split": 3, "noise_level": 0.2})
    assert obs.tolist() == [pytest.approx(0.2), 3.0]
    noise = 0.2
    for action, factor in [(4, 0.9995), (5, 0.9995), (0, 1.0005), (0, 1.0), (2, 0.9995)]:  # 5, 6, 1, 1, 3
        obs, _, _, _, info = env.step(action)
        noise *= factor
        assert info["drift_factor"] == pytest.approx(factor, abs=1e-15)
        assert info["noise_level"] == pytest.approx(noise, rel=1e-12)
        assert obs[0] == np.float32(info["noise_level"]) and obs[1] == info["split"]
    assert [drift_factor(m, "absolute") for m in (-5, -1, 0, 1, 5)] == pytest.approx([1.0005] * 2 + [1.0] + [0.9995] * 2)


def test_noise_is_clipped_to_noise_max(make):
    env = make()
    env.reset(seed=0, options={"split": 5, "noise_level": 0.3})
    obs, _, _, _, info = env.step(0)  # down: factor 1.0005, clipped at 0.3
    assert info["noise_level"] == 0.3 and env.observation_space.contains(obs)
    env = make(drift_step=0.1, noise_max=0.25, action_mode="relative")
    env.reset(seed=0, options={"split": 5, "noise_level": 0.25})
    assert env.step(7)[4]["noise_level"] == 0.25  # x1.4 clipped


def test_ppl_initial_is_reset_per_episode(make):
    """The reference carried PPL_old across episodes: a first-step 'stay' scored the previous episode's ppl."""
    env = make()
    env.reset(seed=0, options={"split": 2, "noise_level": 0.3})
    for a in (5, 5, 5, 5, 5):  # ends at split 6 (no link: clean ppl)
        _, _, _, _, info = env.step(a)
    last_ppl = info["ppl"]
    _, info0 = env.reset(options={"split": 3, "noise_level": 0.25})
    assert info0["ppl"] == info0["ppl_initial"] != last_ppl
    _, r, _, _, info = env.step(2)  # stay at split 3
    assert info["evaluated"] is False and info["real_evaluations"] == 1
    assert info["ppl"] == info["ppl_previous"] == info0["ppl_initial"]
    assert info["reward_terms"]["inference"] == 0.0 and r == pytest.approx(3 / 6)
    # ppl_initial is a real evaluation of the episode's start, its mask drawn from the seeded stream
    _, info = env.reset(seed=5, options={"split": 4, "noise_level": 0.15})
    rng = np.random.default_rng(5)
    rng.uniform(0.08, 0.22), rng.integers(3, 7)  # the start draws that precede the mask seed
    link = DropoutLink(0.15, seed=int(rng.integers(2**63 - 1)))
    assert info["ppl_initial"] == env.evaluator.evaluate(4, link).ppl


def test_reuse_on_stay_can_be_disabled(make):
    env = make(reuse_ppl_on_stay=False)
    env.reset(seed=0, options={"split": 3, "noise_level": 0.25})
    info = env.step(2)[4]
    assert info["evaluated"] is True and info["real_evaluations"] == 2 and info["ppl"] != info["ppl_initial"]


def test_evaluation_counts_and_cached_evaluator(make, llama_tiny):
    env = make()
    ev = env.evaluator
    env.reset(seed=0, options={"split": 2})
    counts = [env.step(a)[4]["real_evaluations"] for a in (1, 3, 3, 0, 0)]  # split 2, 4, 4, 1, 1
    assert counts == [1, 2, 2, 3, 3]
    env.reset()
    assert env.evaluator is ev and env.loaded is llama_tiny and env.real_evaluations == 4
    assert env.step(0)[4]["real_evaluations"] in (1, 2)


def test_last_layer_cut_sends_nothing_and_cut_offset(make):
    env = make()
    env.reset(seed=0, options={"split": 6, "noise_level": 0.3})
    clean = env.evaluator.evaluate(6).ppl
    assert env._ppl_initial == clean
    env = make(max_split=5, cut_offset=1)
    _, info = env.reset(seed=0, options={"split": 5, "noise_level": 0.3})
    assert info["cut"] == 6 and info["ppl"] == clean
    assert env.step(0)[4]["cut"] == 2
    with pytest.raises(ValueError, match=r"ChenConfig.max_split must be in 1\.\.5"):
        make(max_split=6, cut_offset=1)


def test_initial_state_law(make):
    for mode in ("absolute", "relative"):
        env = make(action_mode=mode, eval_tokens=8, eval_window=8)
        (nlo, nhi), (slo, shi) = REFERENCE_INIT[mode]
        starts = []
        for i in range(16):
            obs, info = env.reset(seed=i)
            starts.append((info["noise_level"], info["split"]))
            assert env.observation_space.contains(obs)
        noises, splits = zip(*starts)
        assert nlo <= min(noises) and max(noises) <= nhi
        assert set(splits) <= set(range(slo, min(shi, 6) + 1)) and len(set(splits)) > 1
    assert ChenConfig().split_range == (3, 6) and ChenConfig(action_mode="relative").split_range == (1, 9)
    assert ChenConfig(max_split=6, action_mode="relative").split_range == (1, 6)
    assert ChenConfig(max_split=2).split_range == (2, 2)
    env = make(init_noise_range=(0.05, 0.05), init_split_range=(2, 2))
    _, info = env.reset(seed=0)
    assert (info["noise_level"], info["split"]) == (0.05, 2)


@pytest.mark.parametrize("field,value,match", [
    ("action_mode", "fancy", r"ChenConfig.action_mode must be one of 'absolute', 'relative'"),
    ("max_split", 0, r"ChenConfig.max_split must be an int >= 1"),
    ("max_split", 2.5, r"ChenConfig.max_split"),
    ("max_move", 0, r"ChenConfig.max_move must be an int >= 1"),
    ("episode_steps", 0, r"ChenConfig.episode_steps must be an int >= 1"),
    ("noise_max", 1.5, r"ChenConfig.noise_max must be a number in \(0, 1\]"),
    ("init_noise_range", (0.2, 0.1), r"ChenConfig.init_noise_range .*low <= high <= noise_max=0.3"),
    ("init_noise_range", (0.1, 0.5), r"ChenConfig.init_noise_range"),
    ("init_split_range", (0, 3), r"ChenConfig.init_split_range .*1 <= low <= high <= max_split=10"),
    ("drift_step", -0.1, r"ChenConfig.drift_step must be a number in \[0, 0.1\]"),
    ("reference_drift_typo", 1, r"ChenConfig.reference_drift_typo must be a bool"),
    ("inference_factor", float("nan"), r"ChenConfig.inference_factor must be a finite number >= 0"),
    ("load_factor", -1, r"ChenConfig.load_factor"),
    ("cut_offset", -1, r"ChenConfig.cut_offset must be an int >= 0"),
    ("eval_tokens", 1, r"ChenConfig.eval_tokens must be an int >= 2"),
    ("eval_window", True, r"ChenConfig.eval_window"),
    ("eval_stride", 300, r"ChenConfig.eval_stride must be None or an int in 1..eval_window=256"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        ChenConfig(**{field: value})


def test_env_argument_errors(make):
    with pytest.raises(ValueError, match=r"ChenConfig.max_split must be in 1\.\.6 \(L=6"):
        make(max_split=10)
    with pytest.raises(TypeError, match="unknown ChenConfig field"):
        make(max_splits=3)
    with pytest.raises(ValueError, match="render_mode"):
        make(render_mode="human")
    env = make()
    with pytest.raises(ValueError, match=r"noise_level must be in \[0, 0.3\]"):
        env.reset(seed=0, options={"noise_level": 0.5})
    with pytest.raises(ValueError, match=r"split must be an int in 1\.\.6"):
        env.reset(seed=0, options={"split": 7})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(seed=0, options={"snr": 3})


def test_config_object_dict_and_overrides(make, llama_tiny, ids):
    cfg = ChenConfig(action_mode="relative", **SMALL)
    a = ChenLayerSplitEnv(cfg, loaded=llama_tiny, input_ids=ids)
    b = ChenLayerSplitEnv(cfg.to_dict(), loaded=llama_tiny, input_ids=ids, max_move=2)
    assert a.action_space.n == 9 and b.action_space.n == 5 and a.config == cfg and b.config.max_move == 2


@pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")
def test_default_corpus_is_wikitext(llama_tiny):
    env = ChenLayerSplitEnv(loaded=llama_tiny, max_split=6, eval_tokens=64, eval_window=64)
    assert env.evaluator.input_ids.shape == (1, 64)
    _, info = env.reset(seed=0)
    assert math.isfinite(info["ppl_initial"]) and info["ppl_initial"] > 1
