#!/usr/bin/env python
"""How often is the reward-best split interior (1 < s < L) in the default env's stationary states?

For the default env (``configs/base.yaml``'s env section) and variants that switch one cost term
off or change one assumption, rolls the env's exogenous processes (channel, shared-edge load, UE
load, battery, privacy floor) forward from many seeds, acting with the reward-best action at each
state, and records that action: the expected reward (sweep-table mean quality + the cost model's
latency/energy + privacy, no switching cost) maximised over the allowed (split, codec) actions —
what `SplitPointBaseEnv.action_values` returns. ``interior_best_share`` is the share of visited
states whose best split has 1 < s < L. The parameters are the profiles' sourced/assumed values;
no weight is tuned here.

Also draws the policy maps: best split vs SNR x edge load (battery full) and vs SNR x battery
(edge load at its stationary median), for the default env.

With ``--ue-precisions fp32,bf16,int8,int4`` (issue 19) it adds the variant "UE precision per
request": the default env with the action (split, UE weight precision) (`SplitPointConfig.ue_precisions`;
quality from the sweep rows of each ``ue_precision``, costs from the UE profile's ``precision_rates``
and `splitrl.quant.linear_weight_bytes`), and reports for it how often each precision is
reward-best (``precision_best_share``) and the best split histogram per precision. Without the
flag the output is what it was (no precision anywhere). A sweep lacking a precision's rows makes
the variant ``skipped`` with the error naming the precision.

Reproduce:  .venv/bin/python benchmarks/reward_calibration.py [--episodes 24 --steps 256]
            [--ue-precisions fp32,bf16,int8,int4] [--table SWEEP.csv] [--out DIR]
Writes benchmarks/results/reward_calibration.{json,md}, policy_map.png, policy_map_battery.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from splitrl.plotting import pyplot, save_figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def default_env_config() -> dict:
    """The env section of configs/base.yaml (what train.py and the agent benchmarks use)."""
    return dict(yaml.safe_load((ROOT / "configs" / "base.yaml").read_text())["env"])


PRECISION_VARIANT = "UE precision per request"


def variants(base: dict, ue_precisions: tuple[str, ...] = ()) -> dict[str, dict]:
    """The default env and one-term-changed variants (the conditions under which interior splits win);
    with ``ue_precisions``, also the default env whose action picks the UE precision per request."""
    out = {"default": base}
    old = {k: base[k] for k in ("model", "transport", "modulation", "s_min", "action_mode", "max_move", "history")
           if k in base}
    old["reward"] = {k: v for k, v in base.get("reward", {}).items() if k != "w_privacy"}
    out["previous_default (no new terms)"] = old
    out["no pipelined prefill"] = {**base, "prefill_chunks": 1}
    out["no edge load (dedicated idle edge)"] = {**base, "edge_load": None}
    out["edge-a100 instead of edge-cpu-server"] = {**base, "edge_profile": "edge-a100"}
    out["no battery-aware energy weight"] = {**base, "battery_aware_energy": False}
    out["latency metric ttft"] = {**base, "reward": {**base.get("reward", {}), "latency_metric": "ttft"}}
    from splitrl.cost.privacy import DEFAULT_PRIVACY_FILE

    # Illustrations, not sourced settings: a third of the requests unconstrained, a third tolerating
    # 70 % and a third 50 % top-1 recovery (with the measured SmolLM2 curve: floors s >= 11 and
    # s >= 28); and the privacy term alone at weight 1 (one all-on-UE latency per unit of recovery).
    out["privacy floors (targets 1.0 / 0.7 / 0.5 per request)"] = {
        **base, "privacy_table": str(DEFAULT_PRIVACY_FILE), "privacy_targets": [1.0, 0.7, 0.5]}
    out["privacy term w_privacy = 1"] = {
        **base, "privacy_table": str(DEFAULT_PRIVACY_FILE), "reward": {**base.get("reward", {}), "w_privacy": 1.0}}
    out["codec per request (int4/int8/fp16-biterr)"] = {
        **base, "codecs": ["int4-biterr", "int8-biterr", "fp16-biterr"], "transport": "int8-biterr"}
    if ue_precisions:
        out[PRECISION_VARIANT] = {**base, "ue_precisions": list(ue_precisions)}
    return out


def stationary_best(env, episodes: int, steps: int, seed0: int) -> dict:
    """Roll ``episodes`` x ``steps`` states acting with the reward-best action; the best splits seen."""
    from tqdm import tqdm

    best, snrs, loads, precs = [], [], [], []
    precisions = tuple(getattr(env, "precisions", ()) or ())
    for ep in tqdm(range(episodes), desc="episodes", leave=False):
        env.reset(seed=seed0 + ep)
        for _ in range(steps):
            v = env.action_values(previous_split=None)
            i, j = np.unravel_index(int(np.argmax(v)), v.shape)
            split = int(env.splits[i])
            best.append(split)
            snrs.append(env._snr)
            loads.append(env.edge_load if env.edge_load is not None else float("nan"))
            if precisions:  # column j is option (codec, precision) = divmod(j, n_precisions)
                codec, p = divmod(int(j), len(precisions))
                precs.append(precisions[p])
                env.step(env.action_for_split(split, codec=codec, precision=p))
            else:
                env.step(env.action_for_split(split, codec=int(j)))
    best_a = np.asarray(best)
    L = env.L
    counts = np.bincount(best_a, minlength=L + 1)
    extra = {}
    if precisions:
        pa = np.asarray(precs)
        extra = {
            "precision_best_share": {p: float(np.mean(pa == p)) for p in precisions},
            "best_split_histogram_by_precision": {
                p: {int(s): int(c) for s, c in enumerate(np.bincount(best_a[pa == p], minlength=L + 1)) if c}
                for p in precisions},
        }
    return {
        "states": int(len(best_a)),
        "interior_best_share": float(np.mean((best_a > 1) & (best_a < L))),
        "share_s_le_1": float(np.mean(best_a <= 1)),
        "share_s_eq_L": float(np.mean(best_a == L)),
        "best_split_histogram": {int(s): int(c) for s, c in enumerate(counts) if c},
        "snr_db_mean": float(np.mean(snrs)),
        "snr_db_p10_p90": [float(np.percentile(snrs, 10)), float(np.percentile(snrs, 90))],
        "edge_load_mean": float(np.nanmean(loads)) if not np.isnan(loads).all() else None,
        **extra,
    }


def policy_map(env, snrs, *, edge_loads=None, batteries=None, ue_load=0.3) -> np.ndarray:
    """Best split on a grid: rows = edge loads (or batteries), columns = SNRs."""
    c = env.config
    rows = edge_loads if edge_loads is not None else batteries
    out = np.zeros((len(rows), len(snrs)), dtype=int)
    median_load = None
    if env.edge_process is not None:
        cdf = np.cumsum(c.edge_load.stationary())
        median_load = float(env.edge_process.levels[int(np.searchsorted(cdf, 0.5))])
    for a, r in enumerate(rows):
        el = r if edge_loads is not None else median_load
        bat = (1.0 if edge_loads is not None else r) if (c.include_ue_state and c.battery_aware_energy) else None
        for b, snr in enumerate(snrs):
            best = -np.inf
            for t in env.transports:
                v = (env.costs.base_rewards(float(snr), ue_load if c.include_ue_state else None, edge_load=el,
                                            battery=bat, transport=t)
                     - c.reward.w_quality * env.mean_quality(float(snr), t))[env.splits]
                i = int(np.argmax(v))
                if v[i] > best:
                    best, out[a, b] = v[i], int(env.splits[i])
    return out


def markdown_lines(results: dict, ue_precisions: tuple[str, ...] = ()) -> list[str]:
    """The results table (and, with precisions, how often each UE precision is reward-best)."""
    lines = ["| configuration | interior best share | s <= 1 | s = L |", "|---|---|---|---|"]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped'][:80]} | | |")
        else:
            lines.append(f"| {name} | {r['interior_best_share']:.3f} | {r['share_s_le_1']:.3f} | {r['share_s_eq_L']:.3f} |")
    r = results.get(PRECISION_VARIANT, {})
    if ue_precisions and "precision_best_share" in r:
        lines += ["", f"Reward-best UE precision ({PRECISION_VARIANT}, share of visited states):", "",
                  "| UE precision | reward-best share | best splits (histogram) |", "|---|---|---|"]
        for p in ue_precisions:
            hist = r["best_split_histogram_by_precision"].get(p, {})
            lines.append(f"| {p} | {r['precision_best_share'][p]:.3f} | "
                         f"{', '.join(f's={s}: {c}' for s, c in sorted(hist.items())) or '-'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--ue-precisions", default="",
                    help="comma-separated UE weight precisions (fp32,bf16,int8,int4): add the variant whose action "
                         "picks the UE precision per request, and report how often each is reward-best")
    ap.add_argument("--table", default=None, help="sweep CSV for every variant (default: the committed sweep)")
    args = ap.parse_args()
    from splitrl.quant.precision import check_precision

    ue_precisions = tuple(check_precision(p, "--ue-precisions") for p in args.ue_precisions.split(",") if p)

    from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv
    from splitrl.models import load_model
    from splitrl.provenance import run_record

    base = default_env_config()
    if args.table:
        base["table"] = str(args.table)
    view = load_model(base.get("model", "smollm2-135m")).view
    results = {}
    envs = {}
    for name, cfg in variants(base, ue_precisions).items():
        try:
            env = SplitPointTableEnv(SplitPointConfig(**cfg), view=view)
        except Exception as e:  # a variant whose data is missing (e.g. codec rows not yet swept)
            results[name] = {"skipped": f"{type(e).__name__}: {e}"}
            print(f"{name}: skipped ({e})")
            continue
        envs[name] = env
        results[name] = {"config": {k: v for k, v in SplitPointConfig(**cfg).to_dict().items() if v is not None},
                         **stationary_best(env, args.episodes, args.steps, args.seed)}
        print(f"{name}: interior_best_share = {results[name]['interior_best_share']:.3f}")
        if "precision_best_share" in results[name]:
            print(f"{name}: precision_best_share = {results[name]['precision_best_share']}")

    env = envs["default"]
    snrs = np.arange(-10.0, 35.1, 1.0)
    maps = {}
    if env.edge_process is not None:
        loads = list(env.edge_process.levels)
        maps["edge_load"] = {"edge_loads": loads, "snr_db": snrs.tolist(),
                             "best_split": policy_map(env, snrs, edge_loads=loads).tolist()}
    batteries = np.linspace(0.05, 1.0, 20)
    maps["battery"] = {"batteries": batteries.tolist(), "snr_db": snrs.tolist(),
                       "best_split": policy_map(env, snrs, batteries=batteries).tolist()}

    extra = {}
    if ue_precisions:
        r = results.get(PRECISION_VARIANT, {})
        extra = {"ue_precisions": list(ue_precisions),
                 "precision_best_share": r.get("precision_best_share"),
                 "precision_definition": "share of visited states of the 'UE precision per request' variant (reward-best "
                                         "(split, UE precision) at every step, no switching cost) whose best action "
                                         "runs the UE at each precision"}
    out = {**run_record(), "interior_best_share": results["default"]["interior_best_share"], **extra,
           "num_layers": env.L, "episodes": args.episodes, "steps": args.steps,
           "definition": "share of visited states (default env, reward-best action at every step, no switching "
                         "cost) whose best split s has 1 < s < L",
           "variants": results, "policy_maps": maps,
           "produced_files": ["reward_calibration.json", "reward_calibration.md", "policy_map.png",
                              "policy_map_battery.png"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reward_calibration.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = markdown_lines(results, ue_precisions)
    (args.out / "reward_calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    plt = pyplot()

    def draw(key, rows, ylabel, fname, title):
        fig, ax = plt.subplots(figsize=(7, 4))
        grid = np.asarray(maps[key]["best_split"])
        im = ax.pcolormesh(snrs, rows, grid, shading="nearest", cmap="turbo", vmin=0, vmax=env.L)
        fig.colorbar(im, ax=ax, label="reward-best split s (layers on UE)")
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        save_figure(fig, args.out / fname, dpi=120)

    c = env.config
    if "edge_load" in maps:
        draw("edge_load", maps["edge_load"]["edge_loads"], "edge background utilisation",
             "policy_map.png", f"SmolLM2-135M, {c.ue_profile} / {c.edge_profile} / {c.link_profile}: best split, battery full")
    draw("battery", batteries, "UE battery level", "policy_map_battery.png",
         f"SmolLM2-135M, {c.ue_profile} / {c.edge_profile}: best split, edge load at its median")


if __name__ == "__main__":
    main()
