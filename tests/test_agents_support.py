"""Helpers shared by the agent and trainer tests (this module holds no tests).

The test env is the table env on the tiny random LLaMA (6 layers) with:

* a synthetic sweep table in the sweep CSV schema — quality loss grows towards early splits and low
  SNR (the tiny random model's measured loss is ~0 everywhere, which would leave the quality
  trade-off untested; a synthetic table also needs no corpus and no sweep CPU time);
* a deliberately slow UE profile, so that offloading pays at good SNR and the best split moves
  with the channel (with the shipped phone the tiny model is always best kept on the UE).
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

import splitrl  # noqa: F401  (registers the envs)
from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (-10.0, 0.0, 10.0, 20.0, 30.0)
EPISODE = 64


def write_synthetic_table(path: Path, *, num_layers: int = 6, seeds: int = 2) -> Path:
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for transport, scale in (("awgn", 2.0), ("int8-biterr", 1.0)):
        for split in range(num_layers + 1):
            for level in LEVELS:
                for seed in range(seeds):
                    if split in (0, num_layers):
                        ratio = 0.0  # token ids / nothing cross: no loss
                    else:
                        ratio = scale * (num_layers - split) / num_layers * np.exp(-level / 8.0)
                        ratio *= float(np.exp(0.1 * rng.standard_normal()))
                    rows.append({"model": "llama-tiny", "transport": transport, "level_kind": "snr", "level": level,
                                 "snr_db": level, "ber": np.nan, "bler": np.nan, "split": split, "seed_index": seed,
                                 "seed": 1000 + seed, "ppl": 20.0 * np.exp(ratio), "nll": np.log(20.0) + ratio,
                                 "clean_ppl": 20.0, "log_ppl_ratio": ratio, "scored_tokens": 63,
                                 "bytes_per_token": 128.0, "seconds": 0.0})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_slow_ue_profile(path: Path) -> Path:
    text = (ROOT / "splitrl" / "cost" / "profiles" / "phone-midrange.yaml").read_text()
    out = []
    for line in text.splitlines():
        key = line.split(":")[0]
        if key == "name":
            line = "name: phone-slow-test"
        elif key == "peak_flops_per_s":
            line = "peak_flops_per_s: 3.0e+8"
        elif key == "layer_overhead_s":
            line = "layer_overhead_s: 2.0e-3"
        elif key == "memory_bandwidth_bytes_per_s":
            line = "memory_bandwidth_bytes_per_s: 5.0e+7"
        out.append(line)
    path.write_text("\n".join(out) + "\n")
    return path


@functools.lru_cache(maxsize=None)
def assets() -> dict[str, str]:
    """Paths of the synthetic table and the slow UE profile (made once per test session)."""
    d = Path(tempfile.mkdtemp(prefix="splitrl-agents-"))
    atexit.register(shutil.rmtree, d, True)
    return {"table": str(write_synthetic_table(d / "tiny.csv")), "ue_profile": str(write_slow_ue_profile(d / "slow.yaml"))}


@functools.lru_cache(maxsize=None)
def llama_view():
    from splitrl.models import load_model

    return load_model("llama-tiny").view


def env_kwargs(**overrides) -> dict:
    return {"model": "llama-tiny", **assets(), **overrides}


def make_env(episode: int = EPISODE, **overrides) -> gym.Env:
    """The tiny table env (TimeLimit ``episode``) with SplitPointConfig ``overrides``."""
    cfg = SplitPointConfig(**env_kwargs(**overrides))
    return gym.wrappers.TimeLimit(SplitPointTableEnv(cfg, view=llama_view()), max_episode_steps=episode)


def cli_sets(**overrides) -> list[str]:
    """``--set`` items pointing train.py at the tiny env."""
    return [f"env.{k}={v}" for k, v in env_kwargs(**overrides).items()]


def test_synthetic_table_is_a_valid_sweep_table_with_an_snr_dependent_optimum():
    from splitrl.envs.split_point import SweepTable

    t = SweepTable(assets()["table"], "awgn", np.arange(1, 7))
    assert t.seeds == 2 and list(t.levels) == list(LEVELS)
    assert t.lookup(1, 0.0) > t.lookup(5, 0.0) > 0.0 == t.lookup(6, 0.0)  # early cuts lose more
    assert t.lookup(1, 30.0) < t.lookup(1, 0.0)  # and less at high SNR
    env = make_env().unwrapped
    lat = env.costs_at(20.0).e2e_latency_s
    assert lat[1] < lat[6]  # the slow UE makes offloading pay at good SNR
