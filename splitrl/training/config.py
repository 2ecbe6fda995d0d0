"""Run configuration: YAML files with defaults, ``--set key=value`` overrides, validation.

A run config has five parts (YAML keys)::

    kind: ppo                        # the agent (train.py --agent); optional in files
    env_id: splitrl/SplitPointTable-v0
    seed: 0
    env:   {...}                     # SplitPointConfig fields (reward: {RewardConfig fields})
    agent: {...}                     # the agent's config dataclass fields (AGENTS[kind][1])
    train: {...}                     # TrainConfig fields

A file may start with ``extends: other.yaml`` (a path relative to it): the other file is loaded
first and this one is merged over it, mapping by mapping. ``configs/<kind>.yaml`` are the defaults
of each agent (they extend ``configs/base.yaml``).

Overrides (``--set KEY=VALUE``, applied after the file): KEY is a dotted path — ``seed``,
``env_id``, ``agent.FIELD``, ``env.FIELD``, ``env.reward.FIELD``, ``train.FIELD``; a bare ``FIELD``
means ``agent.FIELD``. VALUE is read as YAML (``1e-4``, ``true``, ``null``, ``[64, 64]``,
``{kind: markov}``) and coerced to the field's type (``64,64`` also makes a list). Unknown names and
invalid values are rejected with the allowed names / range.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

import splitrl.envs  # noqa: F401  (registers the envs that env_class looks up)
from splitrl.agents.config import ConfigError, build, coerce, describe, documented, param, validate
from splitrl.agents.registry import AGENTS
from splitrl.decision.reward import RewardConfig
from splitrl.envs.split_point import SplitPointConfig
from splitrl.errors import UsageError
from splitrl.resources import resource_path
from splitrl.yamlio import check_size, load_yaml_file, load_yaml_text, short

__all__ = ["TrainConfig", "RunConfig", "load_run_config", "parse_override", "default_config_path", "CONFIG_DIR",
           "DEFAULT_ENV_ID", "env_class", "env_fields"]

CONFIG_DIR = resource_path("configs")
DEFAULT_ENV_ID = "splitrl/SplitPointTable-v0"
_TOP_KEYS = ("kind", "env_id", "seed", "env", "agent", "train")
MAX_RUN_SEED = 2**31 - 1
_ENV_ARGS_HANDLED = {"self", "config", "view", "loaded"}


@documented
@dataclass
class TrainConfig:
    """How `splitrl.training.Trainer` runs, logs, evaluates and checkpoints."""

    total_steps: int = param(100_000, "env steps to learn from (exact baselines: steps rolled out for the logs)", low=1)
    checkpoint_every: int = param(10_000, "checkpoint at the first agent boundary at or after every multiple of this many steps", low=1)
    keep_checkpoints: int = param(2, "complete checkpoints kept per run", low=1)
    eval_every: int = param(5_000, "steps between evaluations against the oracle on held-out seeds (0: only at the end)", low=0)
    eval_episodes: int = param(4, "held-out episodes per evaluation", low=1)
    eval_steps: int | None = param(None, "steps per evaluation episode (None: the training episode length)", low=1)
    eval_seed: int = param(1_000_000, "evaluation episodes use seeds eval_seed, eval_seed + 1, ... (held out from training)", low=0,
                           high=2**31 - 1)
    eval_feedback: bool = param(False, "offer Agent.feedback(info) in evaluation episodes (online-adapting agents adapt, and pay evaluations, while evaluated)")
    eval_env_id: str | None = param(None, "env id for evaluation (None: the training env id), e.g. the table env for a real-eval run")
    max_episode_steps: int | None = param(None, "training episode length (None: the env's registered limit)", low=1)
    log_every: int = param(10, "steps between per-step scalars (channel/snr_db, split/chosen, cost/real_evaluations)", low=1)
    histogram_every: int = param(1_000, "steps per histogram of chosen splits (split/histogram)", low=1)
    reward_floor: float = param(-100.0, "per-step rewards below this count as this in logged returns and evaluation (a guard against non-finite rewards)")
    torch_threads: int = param(1, "torch intra-op threads of the process (results depend on it)", low=1)

    def __post_init__(self) -> None:
        validate(self)


def env_class(env_id: str) -> type:
    """The class a registered env id builds."""
    import gymnasium as gym

    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        known = ", ".join(k for k in gym.registry if k.startswith("splitrl/"))
        raise ConfigError(f"unknown env {short(env_id)}; registered splitrl envs: {known}") from None
    ep = spec.entry_point
    if callable(ep):
        return ep
    module, _, name = ep.partition(":")
    import importlib

    return getattr(importlib.import_module(module), name)


def env_fields(env_id: str) -> tuple[type, list[str]]:
    """(config dataclass of the env, extra keyword arguments its constructor takes)."""
    cls = env_class(env_id)
    extras = []
    try:
        for name, p in inspect.signature(cls).parameters.items():
            if name not in _ENV_ARGS_HANDLED and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                extras.append(name)
    except (TypeError, ValueError):
        pass
    return SplitPointConfig, extras


def default_config_path(kind: str) -> Path:
    return CONFIG_DIR / f"{kind}.yaml"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``extends`` chain merged in."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'extends'")
    try:
        data = load_yaml_file(path, what="config file")
    except UsageError as e:
        raise ConfigError(str(e)) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {short(parent)}")
    if len(_seen) > 16:
        raise ConfigError(f"{path}: 'extends' chain longer than 16 files")
    if parent:
        data = _merge(load_yaml(path.parent / parent, _seen + (path,)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"agent.learning_rate=1e-4"`` -> (["agent", "learning_rate"], "1e-4" read as YAML)."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set takes KEY=VALUE with a dotted KEY (e.g. agent.learning_rate=1e-4, env.transport=int8-biterr), got {text!r}")
    try:
        parsed = load_yaml_text(value, f"--set {key}") if value.strip() else None
    except UsageError as e:
        if "expands to" in str(e) or "nested" in str(e) or "contains itself" in str(e):
            raise ConfigError(str(e)) from None
        parsed = value  # not YAML: the text itself (coerced to the field's type later)
    path = key.split(".")
    if len(path) == 1 and path[0] not in ("seed", "env_id", "kind"):
        path = ["agent", *path]
    return path, parsed


def _apply(raw: dict, path: list[str], value: Any) -> None:
    if path[0] not in _TOP_KEYS:
        raise ConfigError(f"unknown config key {short(path[0])}; allowed: seed, env_id, env.FIELD, agent.FIELD, train.FIELD")
    node = raw
    for part in path[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part} is {short(nxt)}, not a mapping")
        node = nxt
    node[path[-1]] = value


@dataclass
class RunConfig:
    """A fully resolved, validated run config (see the module docstring)."""

    kind: str
    env_id: str
    seed: int
    env: dict[str, Any]
    agent: Any
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "env_id": self.env_id, "seed": self.seed, "env": dict(self.env),
                "agent": asdict(self.agent), "train": asdict(self.train)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, overrides: Sequence[str] = ()) -> "RunConfig":
        """Validate a raw mapping (+ overrides) into a RunConfig."""
        if not isinstance(data, dict):
            raise ConfigError(f"a run config must be a mapping of {', '.join(_TOP_KEYS)}, got {short(data)}")
        try:
            check_size(data, "run config")
        except UsageError as e:
            raise ConfigError(str(e)) from None
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in dict(data).items()}
        unknown = [k for k in raw if k not in _TOP_KEYS]
        if unknown:
            raise ConfigError(f"unknown config key {short(unknown[0])}; allowed: {', '.join(_TOP_KEYS)}")
        for part in ("env", "agent", "train"):
            if raw.get(part) is not None and not isinstance(raw[part], dict):
                raise ConfigError(f"{part} must be a mapping of fields, got {short(raw[part])}")
        for text in overrides:
            _apply(raw, *parse_override(text))
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in AGENTS:
            raise ConfigError(f"unknown agent {short(kind)}; choose from {', '.join(AGENTS)}")
        _, config_cls = AGENTS[kind]
        seed = coerce(raw.get("seed", 0), int, "seed")
        if not 0 <= seed <= MAX_RUN_SEED:  # numpy's legacy seeding (stable-baselines3) takes 32 bits; runs add offsets
            raise ConfigError(f"seed must be an integer in 0..{MAX_RUN_SEED}, got {str(seed)[:40]}")
        env_id = raw.get("env_id") or DEFAULT_ENV_ID
        if not isinstance(env_id, str):
            raise ConfigError(f"env_id must be a string, got {short(env_id)}")
        env_cfg_cls, extras = env_fields(env_id)
        env_raw = dict(raw.get("env") or {})
        extra_raw = {k: env_raw.pop(k) for k in list(env_raw) if k in extras and k not in {f.name for f in dataclasses.fields(env_cfg_cls)}}
        try:
            env_cfg = build(env_cfg_cls, env_raw, where="env.")
        except ConfigError as e:
            if "unknown field" in str(e) and extras:
                raise ConfigError(f"{e}; this env also takes: {', '.join(extras)}") from None
            raise
        env = {**asdict(env_cfg), **extra_raw}
        agent = build(config_cls, raw.get("agent") or {}, where="agent.")
        train = build(TrainConfig, raw.get("train") or {}, where="train.")
        return cls(kind=kind, env_id=env_id, seed=seed, env=env, agent=agent, train=train)


def load_run_config(kind: str, config_file: str | Path | None = None, overrides: Sequence[str] = (), *,
                    seed: int | None = None, total_steps: int | None = None, env_id: str | None = None) -> RunConfig:
    """The run config of agent ``kind``: ``config_file`` (default ``configs/<kind>.yaml``, or the
    built-in defaults when absent), then ``overrides``, then the explicit arguments."""
    if kind not in AGENTS:
        raise ConfigError(f"unknown agent {kind!r}; choose from {', '.join(AGENTS)}")
    if config_file is not None:
        raw = load_yaml(Path(config_file))
    else:
        path = default_config_path(kind)
        raw = load_yaml(path) if path.is_file() else {}
    if raw.get("kind") not in (None, kind):
        raise ConfigError(f"{config_file or default_config_path(kind)} is a config for agent {short(raw['kind'])}, not {kind!r}")
    raw["kind"] = kind
    extra = []
    if seed is not None:
        extra.append(f"seed={int(seed)}")
    if env_id is not None:
        extra.append(f"env_id={env_id}")
    if total_steps is not None:
        extra.append(f"train.total_steps={int(total_steps)}")
    return RunConfig.from_dict(raw, overrides=[*overrides, *extra])


def describe_kind(kind: str) -> str:
    """Every overridable field of a run of ``kind``: agent, train and env (for --list-config)."""
    agent_cls, config_cls = AGENTS[kind]
    lines = [f"agent '{kind}' ({agent_cls.__name__}, config {config_cls.__name__}); override with --set KEY=VALUE", ""]
    lines += ["agent.* (" + config_cls.__name__ + "):"] + ["  " + s for s in describe(config_cls, prefix="agent.")]
    lines += ["", "train.* (TrainConfig):"] + ["  " + s for s in describe(TrainConfig, prefix="train.")]
    env_names = [f"env.{f.name}" for f in dataclasses.fields(SplitPointConfig)]
    reward_names = [f"env.reward.{f.name}" for f in dataclasses.fields(RewardConfig)]
    lines += ["", "env.* (SplitPointConfig; see splitrl.envs.split_point):", "  " + ", ".join(env_names),
              "  " + ", ".join(reward_names), "", "top level: seed, env_id"]
    return "\n".join(lines)
