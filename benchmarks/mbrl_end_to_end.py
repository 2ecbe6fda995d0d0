#!/usr/bin/env python
"""The model-based agent end to end on `splitrl/SplitPoint-v0`: real perplexity evaluations, no table.

Learns with a budget of real evaluations on the real env (each step runs SmolLM2 through the
emulated link on WikiText-2), then is evaluated on held-out channel seeds of the real env next to
the table oracle's policy (its decisions from the committed sweep) and the all-on-UE / min-UE
baselines, all on the same seeds — every evaluation step is a real evaluation too.

Reproduce:  .venv/bin/python benchmarks/mbrl_end_to_end.py --budget 150 --episodes 2 --steps 40
Writes benchmarks/results/mbrl_end_to_end.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=150, help="real evaluations the agent may spend learning")
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="steps per evaluation episode")
    ap.add_argument("--eval-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from splitrl.agents.baselines import AllOnUEAgent, MinUEAgent, OracleAgent
    from splitrl.agents.mbrl import MBRLAgent, MBRLConfig
    from splitrl.envs.split_point import SplitPointConfig, SplitPointEnv, SplitPointTableEnv
    from splitrl.models import load_model

    loaded = load_model("smollm2-135m")
    cfg = SplitPointConfig(eval_tokens=args.eval_tokens, eval_window=args.eval_tokens)
    env = SplitPointEnv(cfg, loaded=loaded)
    table_env = SplitPointTableEnv(cfg, view=loaded.view)

    t0 = time.perf_counter()
    agent = MBRLAgent(env, MBRLConfig(), seed=0).learn(env, args.budget)
    learn_s = time.perf_counter() - t0
    learned_evals = agent.real_evaluations

    agents = {"mbrl": agent, "oracle(table)": OracleAgent(table_env), "all-on-ue": AllOnUEAgent(table_env),
              "min-ue": MinUEAgent(table_env)}
    results = {}
    for name, a in agents.items():
        rewards, splits, decide = [], [], []
        for ep in range(args.episodes):
            obs, _ = env.reset(seed=3_000_000 + ep)
            a.reset()
            for _ in range(args.steps):
                t = time.perf_counter_ns()
                act = a.act(obs)
                decide.append((time.perf_counter_ns() - t) / 1e3)
                obs, r, _, _, info = env.step(act)
                if name == "mbrl":
                    a.feedback(info)
                rewards.append(r)
                splits.append(info["split"])
        results[name] = {"mean_reward": float(np.mean(rewards)), "splits_used": sorted(set(splits)),
                         "decision_latency_us_median": float(np.median(decide))}
    o, lo = results["oracle(table)"]["mean_reward"], min(results["all-on-ue"]["mean_reward"], results["min-ue"]["mean_reward"])
    out = {
        "env": "splitrl/SplitPoint-v0", "model": "smollm2-135m", "eval_tokens": args.eval_tokens,
        "learning_real_evaluations": learned_evals, "learning_seconds": learn_s,
        "online_real_evaluations_during_eval": agent.online_evaluations,
        "eval_episodes": args.episodes, "eval_steps": args.steps, "agents": results,
        "mbrl_reward_over_oracle": results["mbrl"]["mean_reward"] / o if o else None,
        "mbrl_normalised_vs_worst_baseline": (results["mbrl"]["mean_reward"] - lo) / (o - lo) if o != lo else None,
        "total_real_evaluations": env.real_evaluations,
    }
    from splitrl.provenance import run_record

    out = {**run_record(), **out}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mbrl_end_to_end.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
