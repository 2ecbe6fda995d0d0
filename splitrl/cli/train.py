"""``splitrl train`` / ``train.py``: train (or roll out) a split-point agent with logging, evaluation
and checkpoints.

    python train.py --agent {ppo,a2c,dqn,mbrl,ppo-surrogate,threshold,bandit,oracle,fixed,all-on-ue,min-ue,
                             latency-only,random}
                    [--env ID] [--config FILE.yaml] [--seed N] [--total-steps N] [--run NAME]
                    [--set KEY=VALUE ...] [--stop-at STEP] [--runs-dir DIR] [--checkpoints-dir DIR]
                    [--no-progress]
    python train.py --resume RUN [--total-steps N] [--stop-at STEP] [--runs-dir DIR] [--checkpoints-dir DIR]
    python train.py --agent KIND --list-config

``splitrl train ...`` takes the same options (errors then read ``splitrl train: error: ...``).

Defaults come from ``configs/<agent>.yaml``; ``--set`` overrides any field (see
`splitrl.training.config`): ``agent.learning_rate=1e-4``, ``env.transport=int8-biterr``,
``env.reward.w_switch=2``, ``train.eval_every=2000``, ``seed=3``; a bare ``FIELD=VALUE`` is an
agent field. TensorBoard logs go to ``<runs-dir>/<run>``, checkpoints to
``<checkpoints-dir>/<run>/latest``. Bad arguments exit with status 2 and one line saying what is
allowed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
from pathlib import Path
from typing import Sequence

from splitrl.errors import UsageArgumentParser, UsageError

__all__ = ["AGENT_KINDS", "add_arguments", "build_parser", "main", "run"]

DESCRIPTION = "Train a split-point agent (see splitrl.training)."
# The kinds of `splitrl.agents.registry.AGENTS` (importing it imports torch and stable-baselines3);
# tests/test_cli_package.py checks they are the same.
AGENT_KINDS = ("ppo", "a2c", "dqn", "mbrl", "ppo-surrogate", "oracle", "fixed", "all-on-ue", "min-ue", "latency-only",
               "random", "threshold", "bandit")

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def build_parser() -> argparse.ArgumentParser:
    """The ``train.py`` parser (``splitrl train`` gets the same options from `add_arguments`)."""
    p = UsageArgumentParser(prog="train.py", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", choices=list(AGENT_KINDS), help="agent kind (required unless --resume)")
    p.add_argument("--env", dest="env_id", help="Gymnasium env id (default: the config's env_id, splitrl/SplitPointTable-v0)")
    p.add_argument("--config", help="YAML config (default: configs/<agent>.yaml)")
    p.add_argument("--seed", type=int, help="run seed (default: the config's, 0)")
    p.add_argument("--total-steps", type=int, help="env steps to train for (default: the config's train.total_steps)")
    p.add_argument("--run", help="run name (default: <agent>-<env>-s<seed>-<UTC time>)")
    p.add_argument("--resume", metavar="RUN", help="continue run RUN from its latest checkpoint")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config fields: agent.FIELD, env.FIELD, env.reward.FIELD, train.FIELD, seed, env_id")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop at the first checkpointable point at/after STEP env steps, after checkpointing (resume later)")
    p.add_argument("--runs-dir", default="runs", help="TensorBoard root")
    p.add_argument("--checkpoints-dir", default="checkpoints", help="checkpoint root")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-config", action="store_true", help="list the agent's overridable fields and exit")


def _default_run(kind: str, env_id: str, seed: int) -> str:
    env = re.sub(r"[^A-Za-z0-9]+", "-", env_id.split("/")[-1]).strip("-")
    return f"{kind}-{env}-s{seed}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.training.config import describe_kind, load_run_config
    from splitrl.training.trainer import Trainer

    for flag, d in (("--runs-dir", args.runs_dir), ("--checkpoints-dir", args.checkpoints_dir)):
        if Path(d).exists() and not Path(d).is_dir():
            raise UsageError(f"{flag} {d} is a file, not a folder")
    if args.total_steps is not None and args.total_steps < 1:
        raise UsageError(f"--total-steps must be >= 1, got {args.total_steps}")
    if args.stop_at is not None and args.stop_at < 1:
        raise UsageError(f"--stop-at must be >= 1, got {args.stop_at}")
    if args.resume:
        given = [f for f, v in (("--agent", args.agent), ("--env", args.env_id), ("--config", args.config),
                                ("--seed", args.seed), ("--run", args.run), ("--set", args.overrides or None)) if v]
        if given:
            raise UsageError(f"--resume continues a run with its saved config; drop {', '.join(given)} "
                            "(allowed with --resume: --total-steps, --stop-at, --runs-dir, --checkpoints-dir, --no-progress)")
        if not _RUN_NAME.match(args.resume):
            raise UsageError(f"--resume: bad run name {args.resume!r}")
        trainer = Trainer.resume(args.resume, runs_dir=args.runs_dir, checkpoints_dir=args.checkpoints_dir,
                                 total_steps=args.total_steps, progress=not args.no_progress)
        if trainer.step > trainer.config.train.total_steps:
            raise UsageError(f"--total-steps {trainer.config.train.total_steps} is below the run's {trainer.step} steps")
        run = args.resume
    else:
        if not args.agent:
            raise UsageError("--agent is required (or --resume RUN)")
        config = load_run_config(args.agent, args.config, args.overrides, seed=args.seed,
                                 total_steps=args.total_steps, env_id=args.env_id)
        if args.list_config:
            print(describe_kind(args.agent))
            print("\nresolved config (file + --set + options):\n" + config.to_yaml())
            return 0
        run = args.run or _default_run(config.kind, config.env_id, config.seed)
        if not _RUN_NAME.match(run):
            raise UsageError(f"--run must match {_RUN_NAME.pattern} (letters, digits, '.', '_', '-'), got {run!r}")
        for d in (Path(args.runs_dir) / run, Path(args.checkpoints_dir) / run):
            if d.exists():
                raise UsageError(f"run {run!r} exists ({d}); pick another --run or continue it with --resume {run}")
        trainer = Trainer(config, run, runs_dir=args.runs_dir, checkpoints_dir=args.checkpoints_dir,
                          progress=not args.no_progress)
    try:
        result = trainer.train(stop_at=args.stop_at)
    finally:
        trainer.close()
    ev = result.last_eval or {}
    regret = ev.get("eval/regret_vs_oracle")
    status = "done" if result.completed else "stopped (checkpointed)"
    msg = f"{run}: {status} at step {result.steps}"
    if regret is not None:
        msg += (f"; eval at step {trainer.last_eval_step}: regret vs oracle {regret:.4g} per episode "
                f"(return {ev.get('eval/return', float('nan')):.4g})")
    print(msg)
    print(f"  tensorboard: {Path(args.runs_dir) / run}   checkpoint: {Path(args.checkpoints_dir) / run / 'latest'}")
    if not result.completed:
        print(f"  continue with: python train.py --resume {run}" +
              ("" if args.checkpoints_dir == "checkpoints" else f" --checkpoints-dir {args.checkpoints_dir}") +
              ("" if args.runs_dir == "runs" else f" --runs-dir {args.runs_dir}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``train.py``: parse ``argv`` and train; the exit status (2 with one line on stderr for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad flag (2, one line already printed)
        return int(e.code or 0)
    try:
        return run(args)
    except UsageError as e:  # config, checkpoint, lock, file and flag errors: one line each
        print(f"train.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder the user named cannot be created or written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"train.py: error: {where}{e.strerror or type(e).__name__}", file=sys.stderr)
        return 2
