"""``splitrl evaluate``: compare agents/baselines on held-out channel episodes (`splitrl.experiments.evaluate`)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from splitrl.rollout import DEFAULT_SEED
from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``splitrl evaluate`` (values are checked by `run`: one-line errors)."""
    """Arguments of ``splitrl evaluate`` (values are checked by the handler: one-line errors)."""
    p.add_argument("--agents", nargs="+", default=None, metavar="KIND[=CHECKPOINT]",
                   help="agents to compare: KIND (exact baselines, untrained) or KIND=CHECKPOINT_DIR "
                        "(agent folder, trainer checkpoint or run folder)")
    p.add_argument("--env", default="splitrl/SplitPointTable-v0", help="evaluation env id")
    p.add_argument("--episodes", default="8", help="held-out episodes (>= 1)")
    p.add_argument("--seed", default=str(DEFAULT_SEED), help="seed of the first held-out episode (then +1, ...)")
    p.add_argument("--steps", default=None, help="steps per episode (default: the env's episode limit)")
    p.add_argument("--set", dest="env_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="env config override, e.g. --set transport=int8-biterr (repeatable)")
    p.add_argument("--feedback", action="store_true", help="offer Agent.feedback(info) (online evaluations are counted)")
    p.add_argument("--out", default="evaluation", help="output folder for evaluation.json/.md/.png")
    p.add_argument("--allow-env-mismatch", action="store_true",
                   help="evaluate checkpoints on an env configuration other than the one they were trained on "
                        "(the differing fields are listed in each row)")



def _int_arg(name: str, text: Any, low: int) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{name} must be an integer >= {low}, got {text!r}") from None
    if v < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {text!r}")
    return v



def run(args: argparse.Namespace) -> int:
    """Handler of ``splitrl evaluate``: 0 on success, 2 with one line on stderr for a bad argument."""
    # lazy: --help and argument errors must not import torch
    import gymnasium as gym

    import splitrl  # noqa: F401  (registers the envs)
    from splitrl.agents.config import ConfigError
    from splitrl.experiments.evaluate import evaluate_agents, markdown_table, parse_agent_spec, write_outputs
    from splitrl.training.checkpoint import CheckpointError

    try:
        if not args.agents:
            raise UsageError("--agents needs at least one KIND or KIND=CHECKPOINT_DIR")
        specs = [parse_agent_spec(s) for s in args.agents]
        for sp in specs:
            if sp.checkpoint is not None and not sp.checkpoint.exists():
                raise UsageError(f"checkpoint {sp.checkpoint} (for {sp.kind}) does not exist")
        episodes = _int_arg("--episodes", args.episodes, 1)
        seed = _int_arg("--seed", args.seed, 0)
        steps = _int_arg("--steps", args.steps, 1) if args.steps is not None else None
        if args.env not in gym.registry:
            raise UsageError(f"unknown env {args.env!r}; registered splitrl envs: "
                             f"{', '.join(k for k in gym.registry if k.startswith('splitrl/'))}")
        given = getattr(args, "_given", set())
        result = evaluate_agents(specs, env_id=args.env, episodes=episodes, seed=seed, steps=steps,
                                 env_overrides=args.env_set, feedback=args.feedback,
                                 allow_env_mismatch=args.allow_env_mismatch, env_id_default="env" not in given,
                                 progress=lambda m: print(m, file=sys.stderr))
        paths = write_outputs(result, args.out)
    except (ValueError, ConfigError, CheckpointError, FileNotFoundError, TypeError) as e:
        print(f"splitrl evaluate: error: {' '.join(str(e).split())[:500] or type(e).__name__}", file=sys.stderr)
        return 2
    print(markdown_table(result).split("\nDefinitions:")[0].rstrip())
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0

