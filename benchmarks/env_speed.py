#!/usr/bin/env python
"""Steps per second of ``splitrl/SplitPointTable-v0`` on the default env: fast path vs slow path.

Builds the default env (``configs/base.yaml``'s env section) through ``gym.make`` (TimeLimit,
order enforcing and the passive checker included) twice — with the precomputed per-state
tables (`SplitPointTableEnv` fast path, SNR rounded to ``snr_resolution_db``) and with
``fast_path=False`` (every step through the cost model) — warms both up (the fast path fills its
SNR bins lazily), then times interleaved rounds of random actions and reports the median and the
spread of steps/s per path, and their ratio. Also times an SB3 vector env of 8 copies
(`make_table_vec_env`, steps of all copies per second).

Run under the shared-machine lock: flock /tmp/splitrl-bench.lock .venv/bin/python benchmarks/env_speed.py
Writes benchmarks/results/env_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _steps_per_s(env, actions: list[int]) -> float:
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=100000, help="fast-path warm-up steps (fills the SNR bins)")
    ap.add_argument("--out", type=Path, default=RESULTS / "env_speed.json")
    args = ap.parse_args()

    import gymnasium as gym
    import torch
    import yaml

    import splitrl  # noqa: F401  (registers the envs)
    from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv, make_table_vec_env
    from splitrl.models import load_model
    from splitrl.provenance import run_record

    torch.set_num_threads(1)
    cfg = SplitPointConfig(**yaml.safe_load((ROOT / "configs" / "base.yaml").read_text())["env"])
    view = load_model(cfg.model).view
    fast = gym.make("splitrl/SplitPointTable-v0", config=cfg, view=view)
    slow = gym.wrappers.TimeLimit(SplitPointTableEnv(cfg, view=view, fast_path=False), max_episode_steps=256)
    assert fast.unwrapped.fast_path and not slow.unwrapped.fast_path
    rng = np.random.default_rng(0)
    n_act = fast.action_space.n
    fast.reset(seed=0)
    slow.reset(seed=0)
    _steps_per_s(fast, rng.integers(n_act, size=args.warmup).tolist())
    _steps_per_s(slow, rng.integers(n_act, size=2000).tolist())
    slow_steps = max(1000, args.steps // 10)  # the slow path is ~10x slower: fewer steps, same rounds
    runs = {"fast": [], "slow": [], "vec8": []}
    vec = make_table_vec_env(cfg, 8, seed=0, view=view)
    vec.reset()
    for _ in range(args.rounds):  # interleaved: fast, slow, vector env, repeat
        runs["fast"].append(_steps_per_s(fast, rng.integers(n_act, size=args.steps).tolist()))
        runs["slow"].append(_steps_per_s(slow, rng.integers(n_act, size=slow_steps).tolist()))
        acts = rng.integers(n_act, size=(args.steps // 8, 8))
        t0 = time.perf_counter()
        for a in acts:
            vec.step(a)
        runs["vec8"].append(acts.size / (time.perf_counter() - t0))
    summary = {k: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)), "runs": v}
               for k, v in runs.items()}
    out = {**run_record(threads=1), "loadavg_after": list(os.getloadavg()),
           "env": "splitrl/SplitPointTable-v0 via gym.make, configs/base.yaml env",
           "snr_bins_filled": len(fast.unwrapped.state_tables._bins),
           "steps_per_s": summary,
           "speedup_fast_over_slow": summary["fast"]["median"] / summary["slow"]["median"],
           "target_steps_per_s": 20000}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: round(v["median"]) for k, v in summary.items()}), f"speedup {out['speedup_fast_over_slow']:.1f}x")


if __name__ == "__main__":
    main()
