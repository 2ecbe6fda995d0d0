"""Agents benchmark: raw regret vs real evaluations, 5 training seeds, two information settings.

Reproduce (2 worker processes; <= 15 min on 2 idle cores with the defaults)::

    .venv/bin/python benchmarks/agents_benchmark.py          # writes benchmarks/results/agents.{json,md,png}
    .venv/bin/python benchmarks/agents_benchmark.py --quick  # smoke run, tiny budgets, to a temp folder

Protocol
--------
* Env and agent settings are exactly ``train.py``'s: every learner is built from
  ``configs/<kind>.yaml`` with `splitrl.training.config.load_run_config` and its env with
  `splitrl.training.trainer.make_env` (``splitrl/SplitPointTable-v0`` unless the config says
  otherwise). Only the budget (``train.total_steps``) is set here, per snapshot; the training seed
  replaces the config's ``seed``. ``ppo-surrogate`` runs its config unchanged (real_budget 200,
  50k surrogate steps), so ``python train.py --agent ppo-surrogate --seed S`` trains the same agent.
* Information settings (`splitrl.agents.information`): ``known-costs`` — the cost model's known
  terms (latency, energy, switching, and UE/edge load where modelled) are given to every learner
  (observation features for PPO/DQN via `KnownCostsObservation`; the bandit, threshold rule and
  MBRL add them and learn only the quality term); ``reward-only`` — nobody gets them (MBRL learns
  the whole reward and the switching cost). ``ppo-surrogate`` exists only in ``known-costs`` (its
  surrogate env is built from the cost model).
* Training seeds 0..seeds-1. Every table-env step while learning is one real evaluation. Learning
  continues across the budgets of one run (snapshots), so a curve is one training run per seed.
* Held-out evaluation: episodes with env seeds 3,000,000,000 + i — outside ``[0, 2^31)``, the range
  every agent draws its training-episode seeds from, so they are disjoint by construction —
  ``--steps`` steps each, deterministic actions, no online feedback. The oracle (true expected
  reward per state, `splitrl.agents.baselines.OracleAgent`) runs on the same episodes; the table
  env draws its measurement noise independently of the action, so regret is a paired difference.
* Regret % = 100 (R_oracle - R) / |R_oracle| per step over the held-out episodes, per training
  seed; reported as the mean over seeds with a 95% Student-t interval over seeds. The normalised
  score (R - R_random)/(R_oracle - R_random) is a secondary column.
* Real evaluations to reach a regret target: the smallest snapshot budget whose mean regret over
  seeds is <= the target ("never within budget" if none); ``..._ci`` uses the upper end of the
  interval instead (stricter).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from splitrl.plotting import pyplot, save_figure
from splitrl.stats import t_interval

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED0 = 3_000_000_000
TARGETS = (10.0, 5.0, 2.0)
SETTINGS = ("known-costs", "reward-only")
BUDGETS = {
    "threshold": [25, 50, 100, 200, 400],
    "bandit": [25, 50, 100, 200, 400],
    "mbrl": [25, 50, 100, 200, 400],
    "ppo": [2048, 4096, 8192, 16384],
    "dqn": [2048, 4096, 8192, 16384],
    "ppo-surrogate": [200],
}
QUICK_BUDGETS = {"threshold": [20, 40], "bandit": [20, 40], "mbrl": [20, 40], "ppo": [256, 512], "dqn": [1200, 1400],
                 "ppo-surrogate": [30]}
BASELINES = ("oracle", "random", "all-on-ue", "min-ue", "latency-only")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_MODELS: dict = {}


def _env(kind: str, setting: str, *, seed: int, quick: bool, total_steps: int | None = None):
    from splitrl.agents.information import wrap_for_setting
    from splitrl.training.config import load_run_config
    from splitrl.training.trainer import make_env

    overrides = []
    if quick and kind == "ppo-surrogate":
        overrides = ["agent.real_budget=30", "agent.surrogate_steps=512", "agent.warmup_evaluations=10"]
    if quick and kind == "dqn":
        overrides = ["agent.learning_starts=1000"]
    if kind in ("threshold", "bandit", "mbrl"):
        overrides.append(f"agent.information={setting}")
    rc = load_run_config(kind, overrides=overrides, seed=seed, total_steps=total_steps)
    env = make_env(rc, models=_MODELS)
    if kind in ("ppo", "dqn", "a2c"):
        env = wrap_for_setting(env, setting)
    return rc, env


def _rollouts(agent, env, episodes: int, steps: int) -> list[float]:
    """Mean reward per step of each held-out episode (seeds EVAL_SEED0 + i)."""
    from splitrl.training.evaluation import rollout

    res = rollout(agent, env, [EVAL_SEED0 + i for i in range(episodes)], steps, reward_floor=-100.0)
    return [r / steps for r in res.returns]


def run_job(job: dict) -> dict:
    """Train one (learner, setting, seed) through its budgets; evaluate every snapshot."""
    import torch

    torch.set_num_threads(1)
    from splitrl.agents.registry import make_agent

    kind, setting, seed, quick = job["kind"], job["setting"], job["seed"], job["quick"]
    budgets = job["budgets"]
    rc, env = _env(kind, setting, seed=seed, quick=quick, total_steps=budgets[-1])
    _, eval_env = _env(kind, setting, seed=seed, quick=quick)
    agent = make_agent(kind, env, rc.agent, seed=seed)
    points, t0 = [], time.time()
    for b in budgets:
        if kind == "ppo-surrogate":
            agent.learn(env, b)
        else:
            have = agent.env_steps
            agent.learn(env, b - have)
        points.append({"real_evaluations": int(agent.real_evaluations), "env_steps": int(agent.env_steps),
                       "train_s": time.time() - t0, "episode_rewards": _rollouts(agent, eval_env, job["episodes"], job["steps"])})
    extra = {"surrogate_env_steps": int(agent.surrogate_env_steps)} if kind == "ppo-surrogate" else {}
    return {**job, "points": points, **extra}


def baseline_job(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from splitrl.agents.registry import make_agent

    kind = job["kind"]
    rc, env = _env(kind, "reward-only", seed=job["seed"], quick=job["quick"])
    agent = make_agent(kind, env, rc.agent, seed=job["seed"])
    return {**job, "episode_rewards": _rollouts(agent, env, job["episodes"], job["steps"])}


def _ci95(values: list[float]) -> tuple[float, list[float]]:
    t = t_interval(values)
    return t["mean"], [t["lo"], t["hi"]]


def summarise(results: list[dict], base: dict[str, list[float]], seeds: int) -> dict:
    oracle = np.asarray(base["oracle"])  # [episodes] reward/step
    rnd = float(np.mean(base["random"]))
    R_o = float(oracle.mean())

    def regret(ep_rewards) -> float:
        return 100.0 * (R_o - float(np.mean(ep_rewards))) / abs(R_o)

    out: dict[str, dict] = {}
    for r in results:
        out.setdefault(r["kind"], {}).setdefault(r["setting"], []).append(r)
    agents: dict[str, dict] = {}
    for kind, by_setting in out.items():
        for setting, runs in by_setting.items():
            runs = sorted(runs, key=lambda r: r["seed"])
            curve = []
            for i in range(len(runs[0]["points"])):
                regs = [regret(r["points"][i]["episode_rewards"]) for r in runs]
                scores = [(float(np.mean(r["points"][i]["episode_rewards"])) - rnd) / (R_o - rnd) for r in runs]
                m, ci = _ci95(regs)
                curve.append({"real_evaluations": int(np.mean([r["points"][i]["real_evaluations"] for r in runs])),
                              "env_steps": int(np.mean([r["points"][i]["env_steps"] for r in runs])),
                              "regret_pct": m, "regret_ci95": ci, "regret_pct_per_seed": regs,
                              "normalised_score": float(np.mean(scores)),
                              "train_s_mean": float(np.mean([r["points"][i]["train_s"] for r in runs]))})
            need, need_ci = {}, {}
            for t in TARGETS:
                hit = next((c for c in curve if c["regret_pct"] <= t), None)
                hit_ci = next((c for c in curve if c["regret_ci95"][1] <= t), None)
                need[f"{t:g}%"] = hit["real_evaluations"] if hit else "never within budget"
                need_ci[f"{t:g}%"] = hit_ci["real_evaluations"] if hit_ci else "never within budget"
            last = curve[-1]
            entry = {"regret_pct": last["regret_pct"], "regret_ci95": last["regret_ci95"],
                     "normalised_score": last["normalised_score"], "budget_real_evaluations": last["real_evaluations"],
                     "real_evaluations": need, "real_evaluations_ci_upper": need_ci, "seeds": len(runs), "curve": curve}
            if kind == "ppo-surrogate":
                entry["surrogate_env_steps"] = runs[0].get("surrogate_env_steps")
            agents.setdefault(kind, {})[setting] = entry
    baselines = {}
    for k, eps in base.items():
        baselines[k] = {"regret_pct": regret(eps), "normalised_score": (float(np.mean(eps)) - rnd) / (R_o - rnd),
                        "reward_per_step": float(np.mean(eps))}
    return {"agents": agents, "baselines": baselines, "oracle_reward_per_step": R_o, "random_reward_per_step": rnd}


def advantage(agents: dict) -> dict:
    """Per setting and regret target: MBRL's real evaluations vs the best other learner's."""
    out = {}
    for setting in SETTINGS:
        rows = {}
        m = agents.get("mbrl", {}).get(setting)
        for t in TARGETS:
            key = f"{t:g}%"
            others = {k: v[setting]["real_evaluations"][key] for k, v in agents.items() if k != "mbrl" and setting in v}
            reached = {k: n for k, n in others.items() if isinstance(n, int)}
            best = min(reached.items(), key=lambda kv: kv[1]) if reached else None
            mine = m["real_evaluations"][key] if m else None
            if not isinstance(mine, int):
                text = "MBRL never within budget" + (f"; {best[0]} reached it with {best[1]}" if best else "; nobody did")
                ratio = None
            elif best is None:
                text, ratio = f"MBRL {mine}; no other learner within budget (ratio is a lower bound)", None
            else:
                ratio = best[1] / mine
                text = f"MBRL {mine} vs best other ({best[0]}) {best[1]}: ratio {ratio:.2g}x"
            rows[key] = {"mbrl": mine, "best_other": best[0] if best else None,
                         "best_other_evaluations": best[1] if best else None, "ratio_other_to_mbrl": ratio, "text": text}
        out[setting] = rows
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    colors = {"mbrl": "C0", "ppo": "C1", "dqn": "C2", "threshold": "C3", "bandit": "C4", "ppo-surrogate": "C5"}
    for ax, setting in zip(axes, SETTINGS):
        for kind, by in summary["agents"].items():
            if setting not in by:
                continue
            c = by[setting]["curve"]
            x = [p["real_evaluations"] for p in c]
            y = [max(p["regret_pct"], 0.05) for p in c]
            lo = [max(p["regret_ci95"][0], 0.05) for p in c]
            hi = [max(p["regret_ci95"][1], 0.05) for p in c]
            ax.plot(x, y, "o-", color=colors.get(kind), label=kind)
            ax.fill_between(x, lo, hi, color=colors.get(kind), alpha=0.2)
        for k, st in (("latency-only", ":"), ("all-on-ue", "--"), ("random", "-.")):
            if k in summary["baselines"]:
                ax.axhline(max(summary["baselines"][k]["regret_pct"], 0.05), color="gray", ls=st, lw=1, label=k)
        for t in TARGETS:
            ax.axhline(t, color="k", lw=0.5, alpha=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("real evaluations consumed while learning")
        ax.set_title(f"{setting}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("regret vs oracle, % (mean, 95% CI over seeds)")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=110)


def markdown(doc: dict) -> str:
    p = doc["protocol"]
    lines = [f"# Agents benchmark ({p['env_id']}, {doc['env_note']})", "",
             f"`{doc['command']}` at `{doc['git_revision'][:12]}`. {len(doc['seeds'])} training seeds {doc['seeds']}; "
             f"{p['episodes']} held-out episodes x {p['steps']} steps (env seeds {EVAL_SEED0}+i); 95% t-intervals over seeds. "
             f"Oracle {doc['oracle_reward_per_step']:.4f}, random {doc['random_reward_per_step']:.4f} reward/step.", ""]
    for setting in SETTINGS:
        lines += [f"## {setting}", "", "| agent | budget (real evals) | regret % | 95% CI | evals to 10% | to 5% | to 2% | normalised score |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for kind, by in doc["agents"].items():
            if setting not in by:
                continue
            e = by[setting]
            n = e["real_evaluations"]
            lines.append(f"| {kind} | {e['budget_real_evaluations']} | {e['regret_pct']:.2f} | [{e['regret_ci95'][0]:.2f}, "
                         f"{e['regret_ci95'][1]:.2f}] | {n['10%']} | {n['5%']} | {n['2%']} | {e['normalised_score']:.3f} |")
        lines += ["", "MBRL's advantage: " + "; ".join(f"{k}: {v['text']}" for k, v in doc["mbrl_advantage"][setting].items()), ""]
    lines += ["## Baselines (no learning)", "", "| baseline | regret % | normalised score |", "|---|---:|---:|"]
    for k, b in doc["baselines"].items():
        lines.append(f"| {k} | {b['regret_pct']:.2f} | {b['normalised_score']:.3f} |")
    lines += ["", "## Curves (mean regret % per budget)", ""]
    for kind, by in doc["agents"].items():
        for setting, e in by.items():
            pts = ", ".join(f"{c['real_evaluations']}: {c['regret_pct']:.2f} [{c['regret_ci95'][0]:.2f}, {c['regret_ci95'][1]:.2f}]"
                            for c in e["curve"])
            lines.append(f"* {kind} / {setting}: {pts}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets, 2 seeds, outputs to a temp folder")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results, or a temp one with --quick)")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per learner (>= 2)")
    ap.add_argument("--episodes", type=int, default=8, help="held-out episodes")
    ap.add_argument("--steps", type=int, default=128, help="steps per held-out episode")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    ap.add_argument("--agents", nargs="+", default=list(BUDGETS), choices=list(BUDGETS), help="learners to run")
    ap.add_argument("--sb3-budgets", type=int, nargs="+", default=None, metavar="STEPS",
                    help=f"PPO/DQN snapshot budgets (default {BUDGETS['ppo']})")
    ap.add_argument("--budgets", type=int, nargs="+", default=None, metavar="N",
                    help=f"threshold/bandit/mbrl snapshot budgets (default {BUDGETS['mbrl']})")
    args = ap.parse_args(argv)
    if args.seeds < 2 or args.episodes < 1 or args.steps < 1 or args.workers < 1:
        from splitrl.errors import UsageError

        raise UsageError("--seeds must be >= 2, --episodes, --steps and --workers >= 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import tempfile

    quick = args.quick
    budgets = dict(QUICK_BUDGETS if quick else BUDGETS)
    if args.sb3_budgets:
        budgets.update(ppo=sorted(args.sb3_budgets), dqn=sorted(args.sb3_budgets))
    if args.budgets:
        budgets.update({k: sorted(args.budgets) for k in ("threshold", "bandit", "mbrl")})
    seeds = list(range(2 if quick else args.seeds))
    episodes, steps = (2, 32) if quick else (args.episodes, args.steps)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="agents-bench-")) if quick else ROOT / "benchmarks" / "results")
    jobs = []
    for kind in args.agents:
        for setting in (("known-costs",) if kind == "ppo-surrogate" else SETTINGS):
            for s in seeds:
                jobs.append({"kind": kind, "setting": setting, "seed": s, "budgets": budgets[kind], "quick": quick,
                             "episodes": episodes, "steps": steps})
    # the slow ones first so the pool stays busy
    order = {"ppo-surrogate": 0, "ppo": 1, "dqn": 2, "mbrl": 3, "bandit": 4, "threshold": 5}
    jobs.sort(key=lambda j: order.get(j["kind"], 9))
    bjobs = [{"kind": k, "seed": 0, "quick": quick, "episodes": episodes, "steps": steps} for k in BASELINES]
    t0 = time.time()
    results, base = [], {}
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = [pool.submit(run_job, j) for j in jobs]
        bfuts = [pool.submit(baseline_job, j) for j in bjobs]
        for f in tqdm(futs + bfuts, desc="agents benchmark jobs", unit="job"):
            r = f.result()
            if "points" in r:
                results.append(r)
                _log(f"{r['kind']}/{r['setting']}/seed {r['seed']}: final regret inputs ready ({time.time() - t0:.0f}s)")
            else:
                base[r["kind"]] = r["episode_rewards"]
    summary = summarise(results, base, len(seeds))
    from splitrl.provenance import run_record

    rc_env = _env("mbrl", "known-costs", seed=0, quick=quick)[1].unwrapped
    env_note = ("default SplitPointConfig of configs/base.yaml: " +
                ", ".join(f"{k}={v}" for k, v in sorted(rc_env.config.to_dict().items())
                          if k in ("transport", "action_mode", "include_ue_state", "edge_load", "codecs", "prefill_chunks",
                                   "privacy_table", "battery_aware_energy")))
    doc = {
        **run_record(threads=1),
        "seeds": seeds,
        "produced_files": ["agents.md", "agents_regret.png"],
        "env_note": env_note,
        "agents": summary["agents"],
        "baselines": summary["baselines"],
        "mbrl_advantage": advantage(summary["agents"]),
        "oracle_reward_per_step": summary["oracle_reward_per_step"],
        "random_reward_per_step": summary["random_reward_per_step"],
        "protocol": {"env_id": "splitrl/SplitPointTable-v0 (configs/<kind>.yaml via load_run_config)", "episodes": episodes,
                     "steps": steps, "eval_seeds": [EVAL_SEED0, EVAL_SEED0 + episodes - 1], "budgets": budgets,
                     "settings": list(SETTINGS), "targets_pct": list(TARGETS), "workers": args.workers,
                     "wall_s": round(time.time() - t0, 1), "quick": quick,
                     "notes": ["ppo-surrogate: configs/ppo-surrogate.yaml unchanged (known-costs only: its surrogate env "
                               "is built from the cost model)",
                               "PPO/DQN budgets are capped for a <= 15 min run; previous single-seed runs needed ~1e5 "
                               "steps for PPO to reach 2%",
                               "threshold/bandit/mbrl: learning continued across budgets (one run per seed)"]},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "agents.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "agents.md").write_text(markdown(doc))
    plot(summary, out / "agents_regret.png", f"SplitPointTable-v0: held-out regret vs real evaluations ({len(seeds)} seeds, 95% CI)")
    _log(f"wrote {out / 'agents.json'} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
