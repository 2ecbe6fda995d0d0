"""Compare trained agents and exact baselines on held-out channel episodes (``splitrl evaluate``).

Every agent is rolled out deterministically on the *same* episodes: ``episodes`` resets of the
evaluation env with seeds ``seed, seed + 1, ...`` (default 2000000: never a training seed — the
trainer evaluates on 1000000+ and trains on small seeds), ``steps`` steps each. The oracle
(`splitrl.agents.baselines.OracleAgent`) and the random baseline are always run as references.

Metrics per agent (keys of the JSON rows):

``reward_per_step``        mean reward per step over all episodes (rewards below ``reward_floor``
                           count as ``reward_floor``, the trainer's guard).
``fraction_of_oracle``     the *normalised score* (R − R_random) / (R_oracle − R_random): 1 for the
                           oracle and 0 for the random baseline by construction; rewards are
                           negative costs, so a plain ratio would not read as "fraction".
``reward_ratio_to_oracle`` the raw ratio R / R_oracle. Rewards are negative, so this is a *cost*
                           ratio: 1 is the oracle, 1.25 means 25 % more cost (lower is better).
``regret_pct``             100 · (R_oracle − R) / |R_oracle|: the extra cost in % of the oracle's.
``real_evaluations``       real evaluations (measured table cells / perplexity runs) the agent
                           consumed before evaluation: its training counter from the checkpoint
                           (``agent.json``), or what an exact baseline spent at construction
                           (``fixed`` rolls out every split on training seeds), else 0.
``online_evaluations``     real evaluations paid during evaluation through `Agent.feedback`
                           (only with ``feedback=True``; 0 otherwise).
``decision_latency_us``    median wall time of one ``agent.act`` call, microseconds.

A checkpoint is an agent folder (``agent.json`` + artefacts, `Agent.save`), a trainer checkpoint
(``step-*/`` with ``agent/`` and ``config.yaml``; the agent's config is read from it) or a run
folder (its ``latest`` checkpoint). Exact baselines need none (``KIND`` alone). Outputs:
``<out>/evaluation.json``, ``evaluation.md`` and ``evaluation.png`` (reward per step against real
evaluations consumed, log x; agents with 0 real evaluations are drawn as horizontal lines).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from splitrl.agents.config import build
from splitrl.agents.registry import AGENTS, make_agent
from splitrl.errors import UsageError
from splitrl.plotting import pyplot, save_figure
from splitrl.rollout import DEFAULT_SEED, rollout
from splitrl.training.checkpoint import CheckpointError, resolve_checkpoint
from splitrl.training.config import RunConfig, load_run_config
from splitrl.training.trainer import make_env
from splitrl.yamlio import load_yaml_file

__all__ = [
    "DEFAULT_SEED", "DEFINITIONS", "AgentSpec", "parse_agent_spec", "load_agent", "rollout_timed", "evaluate_agents",
    "scores", "write_outputs", "markdown_table", "plot_reward_vs_evaluations",
]

DEFINITIONS = {
    "reward_per_step": "mean reward per step over all held-out episodes (rewards floored at reward_floor)",
    "fraction_of_oracle": "normalised score (R - R_random) / (R_oracle - R_random): oracle 1, random 0",
    "reward_ratio_to_oracle": "raw ratio R / R_oracle; rewards are negative costs, so 1.25 = 25% more cost than the oracle",
    "regret_pct": "100 * (R_oracle - R) / |R_oracle|",
    "real_evaluations": "real evaluations (measured cells) consumed before evaluation (training / construction)",
    "online_evaluations": "real evaluations paid during evaluation via Agent.feedback (feedback=True only)",
    "decision_latency_us": "median wall time of one agent.act call, microseconds",
}


@dataclass
class AgentSpec:
    """``KIND`` or ``KIND=CHECKPOINT``; ``label`` names the row."""

    kind: str
    checkpoint: Path | None = None
    label: str | None = None


def parse_agent_spec(text: str) -> AgentSpec:
    """``KIND`` or ``KIND=CHECKPOINT_DIR`` (ValueError for an unknown kind or an empty part)."""
    kind, sep, path = str(text).partition("=")
    kind = kind.strip()
    if kind not in AGENTS:
        raise UsageError(f"unknown agent {kind!r} in {text!r}; choose from {', '.join(AGENTS)}")
    if sep and not path.strip():
        raise UsageError(f"{text!r}: empty checkpoint path after '='")
    return AgentSpec(kind, Path(path.strip()) if sep else None)


def _resolve_checkpoint(path: Path) -> tuple[Path, dict | None]:
    """(agent folder, raw run config or None) of an agent / trainer checkpoint / run folder.

    A trainer checkpoint (or a run folder, or the ``agent/`` folder inside a checkpoint) is
    verified against its manifest first (`splitrl.training.checkpoint.resolve_checkpoint`); a bare
    agent folder is verified by `Agent.load` against its own file list."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if (path / "agent.json").is_file() and not (path.name == "agent" and (path.parent / "manifest.json").is_file()):
        return path, None  # a bare Agent.save folder
    ckpt = resolve_checkpoint(path)
    cfg = ckpt / "config.yaml"
    return ckpt / "agent", (load_yaml_file(cfg, what="checkpoint config") if cfg.is_file() else None)


def _env_differences(trained: dict[str, Any], used: dict[str, Any]) -> list[str]:
    """``env.FIELD`` names whose values differ between a run's env config and the evaluation env's."""
    keys = sorted(set(trained) | set(used))
    return [f"env.{k}" for k in keys if trained.get(k) != used.get(k)]


def load_agent(kind: str, env: Any, checkpoint: str | Path | None = None, *, seed: int = 0):
    """An agent of ``kind`` acting in ``env``: built fresh (exact baselines, or an untrained agent)
    or loaded from ``checkpoint`` with the config saved beside it (run ``config.yaml``, else the
    ``config`` in ``agent.json``'s state, else the defaults)."""
    if kind not in AGENTS:
        raise UsageError(f"unknown agent {kind!r}; choose from {', '.join(AGENTS)}")
    if checkpoint is None:
        return make_agent(kind, env, seed=seed)
    agent_dir, run_cfg = _resolve_checkpoint(Path(checkpoint))
    try:
        meta = json.loads((agent_dir / "agent.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"{agent_dir / 'agent.json'} is unreadable") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        got = meta.get("kind") if isinstance(meta, dict) else None
        raise UsageError(f"{checkpoint} holds a {str(got)[:40]!r} agent, not {kind!r}")
    _, config_cls = AGENTS[kind]
    config = None
    if run_cfg is not None and isinstance(run_cfg.get("agent"), dict):
        config = build(config_cls, run_cfg["agent"], where="agent.")
        seed = int(run_cfg.get("seed", seed))
    elif isinstance(meta.get("state", {}).get("config"), dict):
        config = build(config_cls, meta["state"]["config"], where="agent.")
    seed = int(meta.get("state", {}).get("seed", seed))
    agent = make_agent(kind, env, config, seed=seed)
    return agent.load(agent_dir)


def rollout_timed(agent: Any, env: Any, seeds: Sequence[int], steps: int, *, reward_floor: float = -100.0,
                  feedback: bool = False) -> dict[str, Any]:
    """Roll ``agent`` out (deterministically) on ``env.reset(seed=s)`` for each seed, timing every
    ``act`` (`splitrl.rollout.rollout`); returns rewards per episode, the act times (ns), the
    online evaluations paid."""
    episodes = rollout(lambda _env, obs: agent.act(obs, deterministic=True), env, seeds, int(steps), reset=agent.reset,
                       feedback=agent.feedback if feedback else None, reward_floor=reward_floor, timed=True)
    return {"returns": [ep.total for ep in episodes], "steps": sum(ep.steps for ep in episodes),
            "act_ns": [t for ep in episodes for t in ep.act_ns],
            "online_evaluations": sum(ep.paid_evaluations for ep in episodes)}


def scores(reward: float, oracle: float, random: float) -> dict[str, float]:
    """fraction_of_oracle (normalised), reward_ratio_to_oracle (raw) and regret_pct of ``reward``."""
    span = oracle - random
    return {
        "fraction_of_oracle": float((reward - random) / span) if span != 0 else float("nan"),
        "reward_ratio_to_oracle": float(reward / oracle) if oracle != 0 else float("nan"),
        "regret_pct": float(100.0 * (oracle - reward) / abs(oracle)) if oracle != 0 else float("nan"),
    }


def _make_eval_env(env_id: str, env_overrides: Sequence[str], models: dict | None):
    rc = load_run_config("oracle", env_id=env_id, overrides=[s if s.startswith("env.") else f"env.{s}" for s in env_overrides])
    return make_env(rc, models=models), rc


def _trained_envs(specs: Sequence[AgentSpec]) -> dict[int, dict[str, Any]]:
    """Spec index -> the env id and env config its run was trained on (specs with a trainer checkpoint)."""
    trained_env: dict[int, dict[str, Any]] = {}
    for i, sp in enumerate(specs):
        if sp.checkpoint is not None:
            _, run_cfg = _resolve_checkpoint(sp.checkpoint)
            if run_cfg is not None:
                trained_env[i] = {"env_id": run_cfg.get("env_id"), "env": RunConfig.from_dict(run_cfg).env}
    return trained_env


def _default_eval_env(trained_env: dict[int, dict[str, Any]], env_id: str, env_overrides: Sequence[str],
                      env_id_default: bool, models: dict | None) -> tuple[Any, str]:
    """(env, env id) to evaluate in when none is given: the first trained checkpoint's, else ``env_id`` + overrides."""
    if trained_env and not env_overrides and env_id_default:
        # Evaluate on the configuration the (first) checkpoint was trained on, not on defaults.
        first = trained_env[min(trained_env)]
        env_id = first["env_id"] or env_id
        env_overrides = [f"env.{k}={json.dumps(v)}" for k, v in first["env"].items()]
    env, _ = _make_eval_env(env_id, env_overrides, models)
    return env, env_id


def _refuse_env_mismatch(specs: Sequence[AgentSpec], trained_env: dict[int, dict[str, Any]],
                         used_env: dict[str, Any]) -> None:
    """`UsageError` naming the fields for the first checkpoint trained on another env configuration."""
    for i, sp in enumerate(specs):
        diffs = _env_differences(trained_env[i]["env"], used_env) if i in trained_env else []
        if diffs:
            raise UsageError(f"{sp.checkpoint} was trained on another env configuration ({', '.join(diffs[:6])} "
                             "differ); evaluate it on its own (no --set), or pass --allow-env-mismatch to measure it "
                             "on this one anyway")


def _load_counted(sp: AgentSpec, env: Any, agent_seed: int) -> tuple[Any, int]:
    """(agent of ``sp``, real evaluations it consumed before evaluation: training's, else its construction's)."""
    before_cells = env.real_evaluations
    agent = load_agent(sp.kind, env, sp.checkpoint, seed=agent_seed)
    trained_evals = int(getattr(agent, "real_evaluations", 0))
    if sp.checkpoint is None and trained_evals == 0:  # e.g. fixed: its selection rollouts
        trained_evals = int(env.real_evaluations - before_cells)
    return agent, trained_evals


def _unique_label(rows: dict[str, Any], name: str) -> str:
    """``name``, or ``name#2``, ``name#3``, ... when rows already has it (the same agent listed twice)."""
    label = name
    k = 2
    while label in rows:
        label = f"{name}#{k}"
        k += 1
    return label


def _agent_row(sp: AgentSpec, agent: Any, res: dict[str, Any], trained_evals: int, ref: dict[str, float],
               trained: dict[str, Any] | None, used_env: dict[str, Any]) -> dict[str, Any]:
    """One agent's row of the result document (metrics as in the module doc) from its rollout ``res``."""
    return {
        "kind": sp.kind, "checkpoint": str(sp.checkpoint) if sp.checkpoint else None,
        "reward_per_step": res["reward_per_step"], **scores(res["reward_per_step"], ref["oracle"], ref["random"]),
        "real_evaluations": trained_evals, "online_evaluations": int(res["online_evaluations"]),
        "decision_latency_us": float(np.median(res["act_ns"]) / 1e3) if res["act_ns"] else float("nan"),
        "env_steps": int(getattr(agent, "env_steps", 0)),
        "trained_env_id": trained["env_id"] if trained is not None else None,
        "env_differences": _env_differences(trained["env"], used_env) if trained is not None else [],
    }


def evaluate_agents(specs: Sequence[AgentSpec | str], *, env_id: str = "splitrl/SplitPointTable-v0", episodes: int = 8,
                    seed: int = DEFAULT_SEED, steps: int | None = None, env_overrides: Sequence[str] = (),
                    feedback: bool = False, reward_floor: float = -100.0, agent_seed: int = 0, env: Any = None,
                    models: dict | None = None, progress: Callable[[str], None] | None = None,
                    allow_env_mismatch: bool = False, env_id_default: bool = True) -> dict[str, Any]:
    """Evaluate each spec on the same held-out episodes; returns the result document (module doc).

    ``env``: an env to evaluate in (default: the env configuration the first trainer checkpoint
    among ``specs`` was trained on — when no ``env_overrides`` are given and ``env_id_default`` —
    else ``env_id`` built from ``configs/base.yaml``'s env plus ``env_overrides`` such as
    ``"transport=int8-biterr"``). A checkpoint trained on a different env configuration is refused
    (`UsageError` naming the fields) unless ``allow_env_mismatch``; its row then lists them in
    ``env_differences``. ``steps`` None: the env's episode limit.
    """
    specs = [parse_agent_spec(s) if isinstance(s, str) else s for s in specs]
    if episodes < 1:
        raise UsageError(f"episodes must be >= 1, got {episodes}")
    trained_env = _trained_envs(specs)
    if env is None:
        env, env_id = _default_eval_env(trained_env, env_id, env_overrides, env_id_default, models)
    spec_steps = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    steps = int(steps or spec_steps or 256)
    if steps < 1:
        raise UsageError(f"steps must be >= 1, got {steps}")
    u = env.unwrapped
    seeds = [int(seed) + i for i in range(int(episodes))]

    def run(agent) -> dict[str, Any]:
        res = rollout_timed(agent, u, seeds, steps, reward_floor=reward_floor, feedback=feedback)
        res["reward_per_step"] = float(np.sum(res["returns"]) / max(1, res["steps"]))
        return res

    ref = {k: run(make_agent(k, u, seed=agent_seed))["reward_per_step"] for k in ("oracle", "random")}
    used_env = asdict(u.config)
    if not allow_env_mismatch:
        _refuse_env_mismatch(specs, trained_env, used_env)
    rows: dict[str, dict[str, Any]] = {}
    for i, sp in enumerate(specs):
        if progress:
            progress(f"evaluating {sp.kind}" + (f" from {sp.checkpoint}" if sp.checkpoint else ""))
        agent, trained_evals = _load_counted(sp, u, agent_seed)
        res = run(agent)
        rows[_unique_label(rows, sp.label or sp.kind)] = _agent_row(sp, agent, res, trained_evals, ref,
                                                                    trained_env.get(i), used_env)
    return {
        "env_id": getattr(getattr(env, "spec", None), "id", None) or env_id, "transport": u.config.transport,
        "episodes": int(episodes), "steps": steps, "seeds": [seeds[0], seeds[-1]], "feedback": bool(feedback),
        "reward_floor": reward_floor, "oracle_reward_per_step": ref["oracle"], "random_reward_per_step": ref["random"],
        "torch_threads": __import__("torch").get_num_threads(),  # decision latencies depend on it
        "definitions": DEFINITIONS, "agents": rows,
    }


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def markdown_table(result: dict[str, Any], *, title: str = "Agent evaluation") -> str:
    """The result document as a markdown table (+ the definitions)."""
    lines = [f"# {title}", "",
             f"env `{result.get('env_id')}` ({result.get('transport')}), {result.get('episodes')} held-out episodes x "
             f"{result.get('steps')} steps, seeds {result.get('seeds')}; feedback={result.get('feedback')}; "
             f"oracle {_fmt(result.get('oracle_reward_per_step'), 4)}, random {_fmt(result.get('random_reward_per_step'), 4)} reward/step.",
             "", "| agent | reward/step | fraction of oracle | R/R_oracle | regret % | real evaluations | online evals | act µs (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["agents"].items():
        lines.append(f"| {name} | {_fmt(r.get('reward_per_step'), 4)} | {_fmt(r.get('fraction_of_oracle'))} | "
                     f"{_fmt(r.get('reward_ratio_to_oracle'))} | {_fmt(r.get('regret_pct'), 1)} | {r.get('real_evaluations')} | "
                     f"{r.get('online_evaluations', 0)} | {_fmt(r.get('decision_latency_us'), 1)} |")
    lines += ["", "Definitions:", ""] + [f"* `{k}`: {v}" for k, v in result.get("definitions", DEFINITIONS).items()]
    return "\n".join(lines) + "\n"


def plot_reward_vs_evaluations(result: dict[str, Any], path: str | Path, *, curves: dict[str, list[tuple[int, float]]] | None = None,
                               title: str | None = None) -> Path:
    """Reward per step against real evaluations consumed (log x): a marker per agent row, a line
    per ``curves`` entry (name -> [(real evaluations, reward per step)]), agents with 0 real
    evaluations as horizontal lines."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>pPXh*"
    i = 0
    for name, pts in (curves or {}).items():
        pts = [(x, y) for x, y in pts if x > 0]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, marker=markers[i % len(markers)], color=colors[i % len(colors)], label=name)
            i += 1
    for name, r in result["agents"].items():
        if curves and (name in curves or r.get("kind") in curves):
            continue
        x, y = r.get("real_evaluations", 0), r["reward_per_step"]
        c = colors[i % len(colors)]
        if x and x > 0:
            ax.plot([x], [y], marker=markers[i % len(markers)], ls="", ms=9, color=c, label=f"{name}")
        else:
            ax.axhline(y, color=c, ls="--", lw=1, label=f"{name} (no real evaluations)")
        i += 1
    ax.set_xscale("log")
    ax.set_xlabel("real evaluations consumed (measured table cells), log scale")
    ax.set_ylabel("mean reward per step (held-out episodes)")
    ax.set_title(title or f"{result.get('env_id')} ({result.get('transport')}): reward vs real evaluations")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    save_figure(fig, path, dpi=120)
    return path


def _json_safe(v: Any, where: str, undefined: list[str]) -> Any:
    """``v`` with non-finite floats replaced by None (their paths appended to ``undefined``)."""
    if isinstance(v, dict):
        return {k: _json_safe(x, f"{where}.{k}" if where else str(k), undefined) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x, f"{where}[{i}]", undefined) for i, x in enumerate(v)]
    if isinstance(v, float) and not math.isfinite(v):
        undefined.append(where)
        return None
    return v


def write_outputs(result: dict[str, Any], out_dir: str | Path, *, name: str = "evaluation") -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"json": d / f"{name}.json", "md": d / f"{name}.md", "png": d / f"{name}.png"}
    # JSON has no NaN: a score that is not defined (e.g. oracle == random) is null, and listed.
    undefined: list[str] = []
    paths["json"].write_text(json.dumps({**_json_safe(result, "", undefined), "undefined_fields": undefined},
                                        indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(markdown_table(result))
    plot_reward_vs_evaluations(result, paths["png"])
    return paths
