"""Controllers of the ring's cut vector on held-out episodes -> benchmarks/results/pipeline_controller.json.

Policies on ``splitrl/PipelineSplit-v0`` (SmolLM2-135M sizes; Jetson, Jetson, phone-flagship),
every one on the same held-out episode seeds:

* ``oracle`` — step-wise oracle that knows the true state (evaluates every candidate's true reward);
* ``static_dp`` — the DP partition for the nominal state, never changed; ``equal`` — the equal split;
* ``mbrl`` — the model-based agent: `RingPlanner` (AR(1) channel + load forecasts, receding-horizon
  DP over the candidates) scoring steps with a learned `RingSurrogate`, fitted from ``--evals``
  real evaluations (noisy `PipelineSplitEnv.measure` calls at random candidates and states) and
  refined online from what each served step reports; one agent per ``--agent-seeds`` seed;
* ``planner_exact`` — the same planner with the env's exact cost model (the upper reference of
  the model-based agent: what a perfect surrogate would give);
* ``ppo`` — stable-baselines3 PPO trained on other seeds for ``--ppo-steps`` env steps, one per
  ``--ppo-seeds`` seed (its real evaluations are its training steps).

Two scenarios: Wi-Fi 6 with every device storing the whole model (switching is free), and NR
sub-6 where moving layers costs their weight bytes over the link. Throughput is reported as a
fraction of the oracle's per episode (mean and a 95 % t-interval over episodes x agent seeds).
Also: the surrogate's held-out prediction error and the mbrl fraction vs the evaluation budget.

    .venv/bin/python benchmarks/pipeline_controller.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitrl.envs.pipeline_split import PipelineSplitEnv  # noqa: E402
from splitrl.models import load_model  # noqa: E402
from splitrl.agents.ring import RingPlanner, RingSurrogate  # noqa: E402
from splitrl.experiments.ring import collect_evaluations, evaluate_policies, mean_ci  # noqa: E402
from splitrl.provenance import run_record  # noqa: E402

SCENARIOS = {
    "wifi6_preloaded": dict(link_profile="wifi6-20mhz", load_sigma=0.8, load_rho=0.9, arrival_rate=10.0,
                            preload_all=True),
    "nr_sub6_weights_move": dict(link_profile="nr-sub6-20mhz", load_sigma=0.8, load_rho=0.9, arrival_rate=3.0,
                                 preload_all=False),
}


class PlannerPolicy:
    """A `RingPlanner` per episode env (a fresh copy of the fitted surrogate each time: episodes stay independent)."""

    def __init__(self, surrogate: RingSurrogate | None) -> None:
        self.surrogate = surrogate
        self.planners: dict[int, RingPlanner] = {}

    def _get(self, env) -> RingPlanner:
        p = self.planners.get(id(env))
        if p is None:
            model = self.surrogate.clone() if self.surrogate is not None else None
            p = self.planners[id(env)] = RingPlanner(env, model=model)
        return p

    def __call__(self, env, obs) -> int:
        return self._get(env).act(obs)

    def observe_step(self, env, action: int, info: dict) -> None:
        self._get(env).observe_step(action, info)


def pooled(results: list[dict], name: str) -> dict:
    """One policy's per-episode fractions of the oracle pooled over agent seeds (mean, 95 % interval)."""
    ref = results[0]["oracle"]["per_episode_throughput"]
    fr = [t / o for r in results for t, o in zip(r[name]["per_episode_throughput"], ref) if o > 0]
    rw = [x for r in results for x in r[name]["per_episode_reward"]]
    return {"throughput_fraction_of_oracle": mean_ci(fr), "reward": mean_ci(rw), "reward_median": float(np.median(rw)),
            "mean_throughput_tok_s": float(np.mean([r[name]["mean_throughput_tok_s"] for r in results])),
            "switches_per_episode": float(np.mean([r[name]["switches_per_episode"] for r in results]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=8, help="held-out episodes (seeds 1000..)")
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--evals", type=int, default=100, help="real evaluations the surrogate is fitted from")
    ap.add_argument("--eval-noise", type=float, default=0.05, help="log-normal noise of a real evaluation")
    ap.add_argument("--budget-curve", default="25,50,100,200", help="evaluation budgets for the mbrl curve")
    ap.add_argument("--agent-seeds", type=int, default=5)
    ap.add_argument("--ppo-steps", type=int, default=8192)
    ap.add_argument("--ppo-seeds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/pipeline_controller.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    view = load_model("smollm2-135m", layers=(0, 0), embed=False, head=False).view  # sizes only
    seeds = list(range(1000, 1000 + args.episodes))
    budgets = [int(b) for b in args.budget_curve.split(",") if b]
    out: dict = {**run_record(), "held_out_seeds": seeds, "steps_per_episode": args.steps,
                 "agent_seeds": args.agent_seeds, "evals": args.evals, "eval_noise": args.eval_noise,
                 "note": "oracle = step-wise greedy on the true state; mbrl = planner + learned surrogate "
                         "fitted from `evals` noisy real evaluations (+ online reports of served steps); "
                         "planner_exact = same planner with the exact cost model; fractions are per "
                         "episode vs the oracle, pooled over agent seeds, mean with a 95 % t-interval",
                 "scenarios": {}}
    from tqdm import tqdm

    for name, kw in SCENARIOS.items():
        def make():
            return PipelineSplitEnv(view=view, **kw)

        env0 = make()
        t0 = time.perf_counter()
        base = evaluate_policies(make, {"oracle": lambda e, o: e.oracle_action(),
                                        "static_dp": lambda e, o: e.static_action(),
                                        "equal": lambda e, o: e.equal_action(),
                                        "planner_exact": PlannerPolicy(None)}, seeds, args.steps)
        summary = {k: pooled([base], k) for k in base}
        # the model-based agent, one per seed, at the main budget; its surrogate's held-out error
        runs, errs, online = [], [], []
        curve: dict[str, list] = {str(b): [] for b in budgets}
        test = collect_evaluations(env0, 300, np.random.default_rng(12345), noise=0.0)
        for seed in tqdm(range(args.agent_seeds), desc=f"{name}: mbrl seeds"):
            for b in sorted(set(budgets) | {args.evals}):
                sur = RingSurrogate(env0)
                for d in collect_evaluations(env0, b, np.random.default_rng(seed), noise=args.eval_noise):
                    sur.add(*d)
                sur.fit()
                pol = PlannerPolicy(sur)
                res = evaluate_policies(make, {"oracle": lambda e, o: e.oracle_action(), "mbrl": pol}, seeds, args.steps)
                if str(b) in curve:
                    curve[str(b)].append(res)
                if b == args.evals:
                    runs.append(res)
                    errs.append(sur.rel_error(test, env0.config.max_samples))
                    online.append(sum(p.model.observations for p in pol.planners.values()) / len(pol.planners))
        summary["mbrl"] = pooled(runs, "mbrl")
        summary["mbrl"]["real_evaluations"] = args.evals
        summary["mbrl"]["online_step_reports_per_episode"] = float(np.mean(online))
        summary["mbrl"]["surrogate_heldout_rel_error"] = {
            k: float(np.median([e[k] for e in errs])) for k in errs[0]}
        summary["planner_exact"]["real_evaluations"] = 0
        summary["planner_exact"]["note"] = "uses the env's exact cost model (not learnable in deployment)"
        mbrl_curve = {b: pooled(v, "mbrl")["throughput_fraction_of_oracle"] for b, v in curve.items() if v}
        # PPO, one per training seed
        ppo_info: dict = {"trained": False}
        try:
            from gymnasium.wrappers import TimeLimit
            from stable_baselines3 import PPO

            ppo_runs = []
            t1 = time.perf_counter()
            for seed in tqdm(range(args.ppo_seeds), desc=f"{name}: ppo seeds"):
                train_env = TimeLimit(make(), max_episode_steps=args.steps)
                model = PPO("MlpPolicy", train_env, seed=seed, n_steps=512, batch_size=128, verbose=0, device="cpu")
                model.learn(total_timesteps=args.ppo_steps)
                res = evaluate_policies(make, {"oracle": lambda e, o: e.oracle_action(),
                                               "ppo": lambda e, o, m=model: int(m.predict(o, deterministic=True)[0])},
                                        seeds, args.steps)
                ppo_runs.append(res)
            summary["ppo"] = pooled(ppo_runs, "ppo")
            summary["ppo"]["real_evaluations"] = args.ppo_steps
            ppo_info = {"trained": True, "timesteps": args.ppo_steps, "seeds": args.ppo_seeds,
                        "train_and_eval_s": time.perf_counter() - t1}
        except ImportError as e:  # stable-baselines3 is an optional dependency
            ppo_info = {"trained": False, "reason": str(e)}
        for k in ("oracle", "static_dp", "equal"):
            summary[k]["real_evaluations"] = 0
        out["scenarios"][name] = {
            "config": kw, "candidates": [{"active": list(c.active), "cuts": list(c.cuts), "kind": c.kind}
                                         for c in env0.candidates],
            "ppo": ppo_info, "policies": summary, "mbrl_fraction_vs_evaluations": mbrl_curve,
            "wall_s": time.perf_counter() - t0,
        }
        print(name, {k: round(v["throughput_fraction_of_oracle"]["mean"], 3) for k, v in summary.items()})
    out["controller_throughput_fraction_of_oracle"] = {
        n: s["policies"]["mbrl"]["throughput_fraction_of_oracle"] for n, s in out["scenarios"].items()}
    out["ppo_throughput_fraction_of_oracle"] = {
        n: s["policies"].get("ppo", {}).get("throughput_fraction_of_oracle") for n, s in out["scenarios"].items()}
    out["loadavg_end"] = list(__import__("os").getloadavg())
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
