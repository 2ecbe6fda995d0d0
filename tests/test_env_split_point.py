"""The split-point MDP: Gymnasium/SB3 checks, determinism, actions, reward, table semantics."""
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import splitrl  # noqa: F401  (registers the environments)
from splitrl.envs.split_point import SplitPointConfig, SplitPointEnv, SplitPointTableEnv, SweepTable
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.decision.reward import RewardConfig
from splitrl.sweep import SweepConfig, run_sweep

needs_corpus = pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory, llama_tiny):
    path = tmp_path_factory.mktemp("sweep") / "tiny.csv"
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    cfg = SweepConfig(model="llama-tiny", splits=list(range(7)), levels=[0, 10, 20, 30],
                      transports=["awgn", "int8-biterr"], seeds=2, tokens=64, window=64, stride=64)
    run_sweep(cfg, path, progress=False, loaded=llama_tiny)
    return path


def _table_env(tiny_table, llama_tiny, **kw):
    cfg = SplitPointConfig(model="llama-tiny", table=str(tiny_table), **kw)
    return gym.wrappers.TimeLimit(SplitPointTableEnv(cfg, view=llama_tiny.view), max_episode_steps=20)


def _rollout(env, seed, n=30):
    obs, info = env.reset(seed=seed)
    out = [obs.tolist()]
    rng = np.random.default_rng(123)
    for _ in range(n):
        obs, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        out.append((obs.tolist(), r, term, trunc, {k: v for k, v in info.items()}))
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs.tolist())
    return out


@pytest.mark.parametrize("kw", [{}, {"action_mode": "relative"}, {"include_ue_state": True, "s_min": 0}])
def test_table_env_passes_gymnasium_and_sb3_checks_without_warnings(tiny_table, llama_tiny, kw):
    env = _table_env(tiny_table, llama_tiny, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)


def test_same_seed_same_trajectory_and_seeds_differ(tiny_table, llama_tiny):
    a = _rollout(_table_env(tiny_table, llama_tiny), seed=5)
    b = _rollout(_table_env(tiny_table, llama_tiny), seed=5)
    c = _rollout(_table_env(tiny_table, llama_tiny), seed=6)
    assert a == b
    assert a != c


def test_time_limit_truncates_and_never_terminates(tiny_table, llama_tiny):
    env = _table_env(tiny_table, llama_tiny)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(20)]
    assert all(not t for t, _ in flags) and [tr for _, tr in flags] == [False] * 19 + [True]


def test_actions_map_to_splits(tiny_table, llama_tiny):
    env = _table_env(tiny_table, llama_tiny).unwrapped
    assert env.action_space.n == 6 and env.split_for_action(0) == 1 and env.split_for_action(5) == 6
    rel = _table_env(tiny_table, llama_tiny, action_mode="relative", initial_split=2, max_move=4).unwrapped
    rel.reset(seed=0)
    assert rel.action_space.n == 9
    assert rel.split_for_action(4) == 2 and rel.split_for_action(0) == 1 and rel.split_for_action(8) == 6
    with pytest.raises(ValueError, match="outside"):
        env.split_for_action(6)


def test_reward_is_the_documented_weighted_sum(tiny_table, llama_tiny):
    env = _table_env(tiny_table, llama_tiny, initial_split=3,
                     reward=RewardConfig(w_quality=2.0, w_latency=0.5, w_energy=0.25, w_switch=3.0)).unwrapped
    env.reset(seed=1)
    _, r, _, _, info = env.step(env.action_for_split(5))
    c = env.config.reward
    expected = -(2.0 * info["log_ppl_ratio"] + 0.5 * info["latency_s"] / env.latency_ref_s
                 + 0.25 * info["energy_j"] / env.energy_ref_j + 3.0 * (c.switch_fixed + 2 * c.switch_per_layer))
    assert r == pytest.approx(expected)
    assert info["previous_split"] == 3 and info["split"] == 5
    _, r2, _, _, info2 = env.step(env.action_for_split(5))
    assert info2["reward_terms"]["switch"] == 0.0
    assert info2["real_evaluations"] == 2


def test_all_on_ue_loses_no_quality_and_sends_nothing(tiny_table, llama_tiny):
    env = _table_env(tiny_table, llama_tiny).unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_for_split(6))
    assert info["log_ppl_ratio"] == 0.0 and info["bytes_on_air"] == 0


def test_table_lookup_interpolates_over_snr_and_clips(tiny_table):
    t = SweepTable(tiny_table, "awgn", np.arange(1, 7))
    lo, hi = t.lookup(2, 10.0, 0), t.lookup(2, 20.0, 0)
    assert t.lookup(2, 15.0, 0) == pytest.approx((lo + hi) / 2)
    assert t.lookup(2, -40.0, 1) == t.lookup(2, 0.0, 1) and t.lookup(2, 99.0, 1) == t.lookup(2, 30.0, 1)
    assert t.lookup(2, 0.0) > t.lookup(2, 30.0)  # noise hurts more at low SNR


def test_config_errors_name_the_field(tiny_table, llama_tiny):
    with pytest.raises(ValueError, match="transport"):
        SplitPointConfig(transport="smoke-signals")
    with pytest.raises(ValueError, match="action_mode"):
        SplitPointConfig(action_mode="sideways")
    with pytest.raises(ValueError, match="s_min must be in 0..6"):
        _table_env(tiny_table, llama_tiny, s_min=7)
    with pytest.raises(ValueError, match=r"measured with model \['llama-tiny'\], not 'gpt2-tiny': run `splitrl sweep --model gpt2-tiny"):
        SplitPointTableEnv(SplitPointConfig(model="gpt2-tiny", table=str(tiny_table)), view=_fake_view(8))
    with pytest.raises(ValueError, match=r"lacks splits \[7, 8\] .*a partial sweep"):
        SplitPointTableEnv(SplitPointConfig(model="llama-tiny", table=str(tiny_table)), view=_fake_view(8))


def _fake_view(n_layers):
    from splitrl.models import load_model

    loaded = load_model("gpt2-tiny")
    return loaded.view if loaded.view.num_layers == n_layers else _deeper(n_layers)


def _deeper(n):
    from transformers import GPT2Config, GPT2LMHeadModel

    from splitrl.models.view import DecoderView

    return DecoderView(GPT2LMHeadModel(GPT2Config(n_layer=n, n_embd=32, n_head=2, vocab_size=100, n_positions=64)))


@needs_corpus
def test_real_env_steps_with_real_evaluations(llama_tiny):
    env = SplitPointEnv(SplitPointConfig(model="llama-tiny", eval_tokens=64, eval_window=64), loaded=llama_tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
    env.reset(seed=3)
    infos = [env.step(env.action_for_split(s))[4] for s in (2, 2, 6)]
    assert infos[0]["ppl"] != infos[1]["ppl"]  # fresh noise every step
    assert infos[2]["ppl"] == pytest.approx(env.ppl_clean) and infos[2]["real_evaluations"] >= 3


def test_registered_ids_make_envs(tiny_table, llama_tiny):
    env = gym.make("splitrl/SplitPointTable-v0", model="llama-tiny", table=str(tiny_table), view=llama_tiny.view)
    assert env.spec.max_episode_steps == 256
    env.reset(seed=0)
    assert env.step(0)[0].shape == env.observation_space.shape
