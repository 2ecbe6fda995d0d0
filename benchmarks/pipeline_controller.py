"""Controllers of the ring's cut vector on held-out episodes -> benchmarks/results/pipeline_controller.json.

Policies on ``splitrl/PipelineSplit-v0`` (SmolLM2-135M sizes; Jetson, Jetson, phone-flagship):
the step-wise oracle that knows the true state, the static DP partition, the equal split, the
model-based `RingPlanner` (channel + load models, receding-horizon DP over the candidates), and
PPO (stable-baselines3, trained on other seeds). Same held-out episode seeds for every policy.
Two scenarios: Wi-Fi 6 with every device storing the whole model (switching is free), and NR
sub-6 where moving layers costs their weight bytes over the link.

    .venv/bin/python benchmarks/pipeline_controller.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitrl.envs.pipeline_split import PipelineSplitEnv  # noqa: E402
from splitrl.models import load_model  # noqa: E402
from splitrl.pipeline.controller import RingPlanner, evaluate_policies  # noqa: E402

SCENARIOS = {
    "wifi6_preloaded": dict(link_profile="wifi6-20mhz", load_sigma=0.8, load_rho=0.9, arrival_rate=10.0,
                            preload_all=True),
    "nr_sub6_weights_move": dict(link_profile="nr-sub6-20mhz", load_sigma=0.8, load_rho=0.9, arrival_rate=3.0,
                                 preload_all=False),
}


def git_revision() -> dict:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    return {"git_revision": rev, "dirty": dirty}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--ppo-steps", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/pipeline_controller.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    view = load_model("smollm2-135m").view
    out: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **git_revision(),
                 "loadavg_start": list(os.getloadavg()), "held_out_seeds": list(range(1000, 1000 + args.episodes)),
                 "steps_per_episode": args.steps, "real_evaluations_used": 0,
                 "note": "the planner scores candidates with the analytic pipeline cost model (no real runs); "
                         "the oracle is step-wise greedy on the true state", "scenarios": {}}
    for name, kw in SCENARIOS.items():
        def make():
            return PipelineSplitEnv(view=view, **kw)

        env0 = make()
        planners: dict[int, RingPlanner] = {}

        def planner(env, obs):
            p = planners.get(id(env))
            if p is None:
                p = planners[id(env)] = RingPlanner(env)
            return p.act(obs)

        policies = {
            "oracle": lambda e, o: e.oracle_action(),
            "static_dp": lambda e, o: e.static_action(),
            "equal": lambda e, o: e.equal_action(),
            "planner": planner,
        }
        t0 = time.perf_counter()
        ppo_info = {"trained": False}
        try:
            from gymnasium.wrappers import TimeLimit
            from stable_baselines3 import PPO

            train_env = TimeLimit(make(), max_episode_steps=args.steps)
            model = PPO("MlpPolicy", train_env, seed=args.seed, n_steps=512, batch_size=128, verbose=0, device="cpu")
            model.learn(total_timesteps=args.ppo_steps)
            policies["ppo"] = lambda e, o: int(model.predict(o, deterministic=True)[0])
            ppo_info = {"trained": True, "timesteps": args.ppo_steps, "train_s": time.perf_counter() - t0}
        except ImportError as e:  # stable-baselines3 is an optional dependency
            ppo_info = {"trained": False, "reason": str(e)}
        res = evaluate_policies(make, policies, out["held_out_seeds"], args.steps)
        out["scenarios"][name] = {
            "config": kw, "candidates": [{"active": list(c.active), "cuts": list(c.cuts), "kind": c.kind}
                                         for c in env0.candidates],
            "ppo": ppo_info, "results": res,
        }
        print(name, {k: round(v["throughput_fraction_of_oracle"], 3) for k, v in res.items()})
    out["controller_throughput_fraction_of_oracle"] = {
        n: s["results"]["planner"]["throughput_fraction_of_oracle"] for n, s in out["scenarios"].items()}
    out["ppo_throughput_fraction_of_oracle"] = {
        n: s["results"].get("ppo", {}).get("throughput_fraction_of_oracle") for n, s in out["scenarios"].items()}
    out["loadavg_end"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
