"""Training runs of split-point agents: config loading, TensorBoard logging, evaluation against the
oracle, atomic checkpoints and exact resume. ``splitrl train`` and ``train.py`` are `splitrl.cli.train`.

* `config` — `RunConfig` / `TrainConfig`, YAML defaults (``configs/``), ``--set`` overrides.
* `trainer` — `Trainer` (build env + agent, learn, log, evaluate, checkpoint; `Trainer.resume`).
* `checkpoint` — atomic ``checkpoints/<run>/latest``.
* `state` — env and RNG state capture/restore without pickle.
* `evaluation` — held-out-seed evaluation and regret vs `OracleAgent`.
* `logger` — `RunLogger` (one SummaryWriter per run, namespaced tags).
"""
from splitrl.training.config import RunConfig, TrainConfig, load_run_config
from splitrl.training.trainer import Trainer, TrainResult, make_env

__all__ = ["RunConfig", "TrainConfig", "load_run_config", "Trainer", "TrainResult", "make_env"]
