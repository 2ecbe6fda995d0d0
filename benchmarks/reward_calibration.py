#!/usr/bin/env python
"""Does the best split move with SNR under the default reward? (How the default weights were chosen.)

For each transport of the committed SmolLM2 sweep and each SNR on a 1 dB grid, computes the
reward of every allowed split (mean measured quality from the sweep table, latency/energy from
the cost model, no switching) and reports the best split. The default `RewardConfig` weights are
chosen so that the best split spans from offloading early (high SNR: the edge is fast and the
link clean) to keeping most or all layers on the UE (low SNR: what crosses the air is corrupted).

Reproduce:  .venv/bin/python benchmarks/reward_calibration.py
Writes benchmarks/results/reward_calibration.{json,md,png}.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def best_splits(env, snrs) -> dict:
    from splitrl.reward import reward_terms

    rows = []
    for snr in snrs:
        q = env.table.mean_table(snr, env.splits)
        lat, energy, _ = env.request_costs(snr)
        terms = reward_terms(env.config.reward, log_ppl_ratio=q, latency_s=lat[env.splits], energy_j=energy[env.splits],
                             split=env.splits, previous_split=env.splits, latency_ref_s=env.latency_ref_s,
                             energy_ref_j=env.energy_ref_j)
        r = terms["reward"]
        i = int(np.argmax(r))
        rows.append({"snr_db": float(snr), "best_split": int(env.splits[i]), "best_reward": float(r[i]),
                     "reward_all_on_ue": float(r[-1]), "reward_min_ue": float(r[0]),
                     "quality_term": float(terms["quality"][i]), "latency_term": float(terms["latency"][i]),
                     "energy_term": float(terms["energy"][i])})
    return {"rows": rows, "distinct_best_splits": sorted({r["best_split"] for r in rows})}


def main() -> None:
    from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv
    from splitrl.models import load_model

    view = load_model("smollm2-135m").view
    snrs = np.arange(0, 31, 1.0)
    out = {}
    for transport in ("awgn", "int8-biterr"):
        env = SplitPointTableEnv(SplitPointConfig(transport=transport), view=view)
        out[transport] = best_splits(env, snrs)
        out[transport]["reward_config"] = env.config.reward.to_dict()
        out[transport]["latency_ref_s"], out[transport]["energy_ref_j"] = env.latency_ref_s, env.energy_ref_j
    from splitrl.provenance import run_record

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reward_calibration.json").write_text(json.dumps({**run_record(), **out}, indent=2) + "\n")
    lines = ["| SNR (dB) | " + " | ".join(f"best split ({t})" for t in out) + " |", "|---|" + "---|" * len(out)]
    for i, snr in enumerate(snrs):
        if snr % 5 == 0 or any(out[t]["rows"][i]["best_split"] != out[t]["rows"][i - 1]["best_split"] for t in out if i):
            lines.append(f"| {snr:g} | " + " | ".join(str(out[t]["rows"][i]["best_split"]) for t in out) + " |")
    (RESULTS / "reward_calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for t in out:
        ax.step(snrs, [r["best_split"] for r in out[t]["rows"]], where="mid", label=t)
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("reward-best split s (layers on UE)")
    ax.set_title("SmolLM2-135M: best split vs SNR, default reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "reward_calibration.png", dpi=120)


if __name__ == "__main__":
    main()
