"""The deployed controller: a trained agent choosing the split for every request the runtime serves.

`Controller` runs the agent and the partitioned runtime in one process. For each incoming
request the channel advances one slot, the agent reads the observed SNR (and the split in
place) and picks the split, the runtime generates through that split with the link emulated at
this slot's SNR, and the decision is logged — split, SNR, emulated TTFT/energy (cost model),
measured tokens/s, optionally a measured perplexity — to a JSONL file and TensorBoard.

The agent's MDP bookkeeping (observation layout, action mapping, channel, costs) is the env the
agent was trained with (from its checkpoint), with its channel replaced by the one asked for;
stepping that env after each request advances the channel and gives online-adapting agents
(`Agent.feedback`) the measured outcome they may pay for. Decision latency is timed around
``agent.act`` alone and compared with the runtime's decode step.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

DEFAULT_MARKOV = {
    "kind": "markov",
    "bin_edges_db": [-10.0, 4.0, 12.0, 20.0, 40.0],
    "state_snr_db": [0.0, 8.0, 16.0, 26.0],
    "transition": [[0.85, 0.15, 0.0, 0.0], [0.1, 0.8, 0.1, 0.0], [0.0, 0.1, 0.8, 0.1], [0.0, 0.0, 0.15, 0.85]],
}


def channel_spec(text: str) -> dict | None:
    """``fading`` (the link profile's own), ``markov`` (a 4-state default), ``trace:FILE.csv`` or
    ``FILE.csv`` (replay), or a YAML file holding a `splitrl.channel.make_channel` spec."""
    if text in ("fading", "profile"):
        return None
    if text == "markov":
        return dict(DEFAULT_MARKOV)
    path = text.split(":", 1)[1] if text.startswith("trace:") else text
    p = Path(path)
    if p.suffix == ".csv":
        if not p.is_file():
            raise ValueError(f"--channel: trace file {p} not found")
        return {"kind": "trace", "path": str(p), "on_end": "loop"}
    if p.suffix in (".yaml", ".yml") and p.is_file():
        import yaml

        spec = yaml.safe_load(p.read_text())
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ValueError(f"--channel: {p} must hold a mapping with a 'kind' (fading, markov, trace)")
        return spec
    raise ValueError(f"--channel must be fading, markov, trace:FILE.csv, FILE.csv or a spec.yaml; got {text!r}")


@dataclass
class ControlConfig:
    """One controller session.

    Attributes:
        checkpoint: a run folder (``checkpoints/<run>``, its ``latest`` is used) or a checkpoint folder.
        agent: an exact-baseline kind to run without a checkpoint (``oracle``, ``fixed``, ...).
        env: SplitPointConfig overrides when no checkpoint gives them (e.g. ``{"model": "llama-tiny"}``).
        channel: see `channel_spec`.
        requests: number of requests to serve (>= 1).
        prompts: text file with one prompt per line (None: WikiText-2 passages).
        max_new_tokens: tokens generated per request (>= 1).
        ppl_tokens: also measure perplexity on this many WikiText tokens through the chosen split (0: off).
        out: folder for ``decisions.jsonl`` and the TensorBoard events.
        seed: seed of the channel and of the link noise.
    """

    checkpoint: str | None = None
    agent: str | None = None
    env: dict = field(default_factory=dict)
    channel: str = "fading"
    requests: int = 20
    prompts: str | None = None
    max_new_tokens: int = 16
    ppl_tokens: int = 0
    out: str = "runs/control"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.agent is None):
            raise ValueError("give exactly one of checkpoint (a trained run) or agent (an exact baseline kind)")
        if self.requests < 1 or self.max_new_tokens < 1 or self.ppl_tokens < 0:
            raise ValueError("requests and max_new_tokens must be >= 1, ppl_tokens >= 0")


def load_checkpointed_agent(path: str | Path, *, env_overrides: dict | None = None, models: dict | None = None):
    """(agent, env, run config) from a run or checkpoint folder; the env is the run's own (unwrapped)."""
    import yaml

    from splitrl.agents.registry import make_agent
    from splitrl.training.checkpoint import latest_checkpoint
    from splitrl.training.config import RunConfig
    from splitrl.training.trainer import make_env

    p = Path(path)
    ckpt = p if (p / "manifest.json").is_file() else latest_checkpoint(p)
    config = RunConfig.from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()))
    config.env.update(env_overrides or {})
    env = make_env(config, models=models)
    agent = make_agent(config.kind, env, config.agent, seed=config.seed).load(ckpt / "agent")
    return agent, env.unwrapped, config


def _wikitext_prompts(tokenizer, n: int, tokens: int = 48) -> list[str]:
    from splitrl.eval.corpus import corpus_tokens

    ids = corpus_tokens(tokenizer, (n + 1) * tokens * 4)[0]
    return [tokenizer.decode(ids[i * 4 * tokens: i * 4 * tokens + tokens]) for i in range(n)]


class Controller:
    """Serves requests through the split runtime under an agent's decisions (see module doc)."""

    def __init__(self, config: ControlConfig, *, loaded=None) -> None:
        from splitrl.models import load_model
        from splitrl.runtime import SplitRuntime

        self.config = config
        spec = channel_spec(config.channel)
        overrides = dict(config.env)
        overrides["channel"] = spec
        if config.checkpoint is not None:
            models: dict[str, Any] = {}
            if loaded is not None:
                models[loaded.name] = loaded
            self.agent, self.env, run = load_checkpointed_agent(config.checkpoint, env_overrides=overrides, models=models)
            self.loaded = models.get(self.env.config.model) or loaded or load_model(self.env.config.model)
            self.agent_name = f"{run.kind}@{config.checkpoint}"
        else:
            from splitrl.agents.registry import make_agent
            from splitrl.envs.split_point import SplitPointConfig, SplitPointTableEnv

            env_cfg = SplitPointConfig(**overrides)
            self.loaded = loaded or load_model(env_cfg.model)
            self.env = SplitPointTableEnv(env_cfg, view=self.loaded.view)
            self.agent = make_agent(config.agent, self.env, seed=config.seed)
            self.agent_name = config.agent
        if self.loaded.view.num_layers != self.env.L:
            raise ValueError(f"the agent was trained for {self.env.L} layers, the model has {self.loaded.view.num_layers}")
        self.runtime = SplitRuntime(self.loaded)
        self.rng = np.random.default_rng(config.seed)
        self.evaluator = None
        if config.ppl_tokens:
            from splitrl.eval import PerplexityConfig, PerplexityEvaluator

            w = min(config.ppl_tokens, 512)
            self.evaluator = PerplexityEvaluator(self.loaded, PerplexityConfig(tokens=config.ppl_tokens, window=w, stride=w))

    def prompts(self) -> list[str]:
        c = self.config
        if c.prompts:
            lines = [ln.strip() for ln in Path(c.prompts).read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                raise ValueError(f"{c.prompts} holds no prompts")
            return [lines[i % len(lines)] for i in range(c.requests)]
        return _wikitext_prompts(self.loaded.tokenizer, c.requests)

    def run(self, *, progress: bool = True) -> dict[str, Any]:
        """Serve ``config.requests`` requests; returns the summary (also written to ``summary.json``)."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        from splitrl.cost import emulate_report
        from splitrl.link import link_at

        c = self.config
        out = Path(c.out)
        out.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out))
        writer.add_text("control/config", "```\n" + json.dumps(asdict(c), indent=2) + "\n```")
        env, agent = self.env, self.agent
        obs, _ = env.reset(seed=c.seed)
        agent.reset()
        records: list[dict[str, Any]] = []
        with open(out / "decisions.jsonl", "a", encoding="utf-8") as log:
            for i, prompt in enumerate(tqdm(self.prompts(), desc="control", unit="req", disable=not progress)):
                snr = float(obs[0])
                t0 = time.perf_counter_ns()
                action = agent.act(obs)
                decision_us = (time.perf_counter_ns() - t0) / 1e3
                split = env.split_for_action(action)
                seed = int(self.rng.integers(2**31 - 1))
                link = link_at(env.config.transport, seed=seed, snr_db=snr, modulation=env.config.modulation,
                               vocab_size=self.loaded.view.vocab_size)
                result = self.runtime.generate(prompt, split, max_new_tokens=c.max_new_tokens, links=link, stop_at_eos=False)
                emulated = emulate_report(result.report, env.cost_model, snr)
                ppl = None
                if self.evaluator is not None:
                    ppl = self.evaluator.evaluate(split, link_at(env.config.transport, seed=seed + 1, snr_db=snr,
                                                                 modulation=env.config.modulation,
                                                                 vocab_size=self.loaded.view.vocab_size)).ppl
                rep = result.report
                decode_step_s = rep.decode_seconds / max(1, rep.new_tokens - 1)
                obs, reward, _, _, info = env.step(action)
                paid = agent.feedback(info)
                rec = {
                    "request": i, "snr_db": snr, "split": split, "previous_split": info["previous_split"],
                    "decision_us": decision_us, "decode_step_ms": decode_step_s * 1e3,
                    "decision_pct_of_decode_step": 100 * decision_us / 1e6 / decode_step_s if decode_step_s > 0 else None,
                    "tokens_per_s": rep.decode_tokens_per_s, "prefill_s_measured": rep.prefill_seconds,
                    "emulated_ttft_s": emulated["ttft_s"], "emulated_tpot_s": emulated["tpot_s"],
                    "emulated_ue_energy_j_per_token": emulated["ue_energy_j_per_token"],
                    "bytes_on_air": rep.bytes_per_boundary[0] if rep.bytes_per_boundary else 0,
                    "reward_table": reward, "ppl_measured": ppl, "agent_paid_evaluation": bool(paid),
                    "text": result.text,
                }
                records.append(rec)
                log.write(json.dumps(rec) + "\n")
                log.flush()
                for tag, key in (("control/split", "split"), ("channel/snr_db", "snr_db"),
                                 ("control/decision_us", "decision_us"), ("control/tokens_per_s", "tokens_per_s"),
                                 ("control/emulated_ttft_s", "emulated_ttft_s"),
                                 ("control/emulated_ue_energy_j_per_token", "emulated_ue_energy_j_per_token"),
                                 ("control/reward_table", "reward_table")):
                    writer.add_scalar(tag, float(rec[key]), i)
                if ppl is not None:
                    writer.add_scalar("control/ppl", ppl, i)
        writer.close()
        dec = [r["decision_us"] for r in records]
        steps = [r["decode_step_ms"] for r in records if r["decode_step_ms"] > 0]
        splits = [r["split"] for r in records]
        summary = {
            "agent": self.agent_name, "requests": len(records), "channel": c.channel,
            "split_changes": int(sum(a != b for a, b in zip(splits, splits[1:]))),
            "splits_used": sorted(set(splits)),
            "decision_latency_us_median": statistics.median(dec), "decision_latency_us_p99": float(np.percentile(dec, 99)),
            "decode_step_ms_median": statistics.median(steps) if steps else None,
            "decision_pct_of_decode_step": 100 * statistics.median(dec) / 1e3 / statistics.median(steps) if steps else None,
            "mean_emulated_ttft_s": float(np.mean([r["emulated_ttft_s"] for r in records])),
            "mean_reward_table": float(np.mean([r["reward_table"] for r in records])),
            "agent_real_evaluations": int(getattr(agent, "real_evaluations", 0)),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def iter_decisions(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _build_control(p) -> None:
    p.add_argument("--checkpoint", default=None, help="trained run folder checkpoints/<run> (or a checkpoint folder)")
    p.add_argument("--agent", default=None, help="exact baseline to run without a checkpoint (oracle, latency-only, ...)")
    p.add_argument("--model", default=None, help="model for --agent runs (default: the env config's)")
    p.add_argument("--channel", default="fading", help="fading | markov | trace:FILE.csv | FILE.csv | spec.yaml")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--prompts", default=None, help="text file, one prompt per line (default: WikiText-2 passages)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--ppl-tokens", type=int, default=0, help="also measure perplexity on N tokens per decision")
    p.add_argument("--out", default="runs/control", help="folder for decisions.jsonl, summary.json, TensorBoard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)


def _cmd_control(args) -> int:
    from splitrl.cli import CLIError

    try:
        cfg = ControlConfig(checkpoint=args.checkpoint, agent=args.agent,
                            env={"model": args.model} if args.model else {}, channel=args.channel,
                            requests=args.requests, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                            ppl_tokens=args.ppl_tokens, out=args.out, seed=args.seed)
        summary = Controller(cfg).run()
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e))
    print(json.dumps(summary, indent=2))
    return 0


def register_cli(register) -> None:
    register("control", "serve requests with a trained controller choosing the split (JSONL + TensorBoard)")(_build_control)(_cmd_control)
