"""``splitrl control``: serve requests with a trained controller choosing the split (JSONL + TensorBoard).

The controller itself is `splitrl.controller.session.Controller`; this module only parses its options.
"""
from __future__ import annotations

import argparse
import json

from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="trained run folder checkpoints/<run> (or a checkpoint folder)")
    p.add_argument("--agent", default=None, help="exact baseline to run without a checkpoint (oracle, latency-only, ...)")
    p.add_argument("--model", default=None, help="model for --agent runs (default: the env config's)")
    p.add_argument("--channel", default="fading",
                   help="fading | markov | trace:FILE.csv | FILE.csv | spec.yaml (a trace is read on its time column)")
    p.add_argument("--scenario", default=None,
                   help="scenario YAML (channel + edge-load traces, arrivals, battery, privacy target); replaces --channel")
    p.add_argument("--arrival-rate", type=float, default=None,
                   help="requests per second on the channel's clock (default: 1 / env.decision_interval_s)")
    p.add_argument("--battery", type=float, default=None, help="UE battery level at the first request, (0, 1]")
    p.add_argument("--privacy-target", type=int, default=None, help="smallest split any request may use")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="env config overrides as in train.py: env.transport=int8-biterr, env.reward.w_energy=2, ...")
    p.add_argument("--requests", type=int, default=None, help="requests to serve (default: 20, or the scenario's)")
    p.add_argument("--prompts", default=None, help="text file, one prompt per line (default: WikiText-2 passages)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per request")
    p.add_argument("--ppl-tokens", type=int, default=0, help="also measure perplexity on N tokens per decision")
    p.add_argument("--out", default="runs/control",
                   help="new folder for decisions.jsonl, summary.json, TensorBoard (a used one is refused)")
    p.add_argument("--seed", type=int, default=0, help="seed of the channel process, the policy and the link noise")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")



def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.controller.session import Controller, ControlConfig, env_overrides

    try:
        env = env_overrides(args.overrides)
        if args.model:
            env["model"] = args.model
        cfg = ControlConfig(checkpoint=args.checkpoint, agent=args.agent, env=env, channel=args.channel,
                            scenario=args.scenario, arrival_rate_hz=args.arrival_rate, battery_start=args.battery,
                            privacy_target=args.privacy_target, requests=args.requests, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                            ppl_tokens=args.ppl_tokens, out=args.out, seed=args.seed)
        summary = Controller(cfg).run()
    except UsageError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    print(json.dumps(summary, indent=2))
    return 0

