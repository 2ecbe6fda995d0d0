"""`splitrl control`: the controller serving requests in-process, for experiments.

For each request (arriving at the trace's or scenario's clock: `splitrl.decision.channel`,
`splitrl.controller.scenario`) the state advances to its arrival time, the policy (a trained agent from its
checkpoint, or an exact baseline) reads the observed SNR and the split in place and picks the
split, the runtime generates through that split with the link emulated at this slot's SNR, and
the decision is logged — split, SNR, emulated TTFT/energy (cost model), measured tokens/s,
optionally a measured perplexity — to ``decisions.jsonl`` and TensorBoard. It is built from the
same pieces as `splitrl serve` (`splitrl.controller`: policy, serving of one request, sinks,
cost service, channel process); no gym env is stepped. Online-adapting agents
(`Agent.feedback`) are offered the outcome after each request: the measured perplexity when
``ppl_tokens`` > 0, else the sweep table's quality at that split and SNR.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from splitrl.agents.baselines import quality_table
from splitrl.controller.backend import LocalBackend
from splitrl.controller.policy import AgentPolicy, FixedPolicy
from splitrl.controller.policy import load_checkpointed_agent  # noqa: F401  (public name of this module)
from splitrl.controller.scenario import ScenarioProcess, load_scenario
from splitrl.controller.serving import RequestServer
from splitrl.controller.sinks import DECISIONS_FILE, JsonlSink, TensorBoardSink, claim_session_dir
from splitrl.controller.sinks import iter_decisions  # noqa: F401  (public name of this module)
from splitrl.decision.channel import DEFAULT_MARKOV, channel_spec  # noqa: F401  (public names of this module)
from splitrl.decision.channel import ChannelProcess
from splitrl.decision.costs import RequestCostService
from splitrl.envs.split_point import SplitPointConfig
from splitrl.errors import UsageError
from splitrl.eval import PerplexityConfig, PerplexityEvaluator
from splitrl.eval.corpus import corpus_tokens
from splitrl.link import link_at
from splitrl.models import load_model
from splitrl.runtime import SplitRuntime
from splitrl.training.config import parse_override


@dataclass
class ControlConfig:
    """One controller session.

    Attributes:
        checkpoint: a run folder (``checkpoints/<run>``, its ``latest`` is used) or a checkpoint folder.
        agent: an exact-baseline kind to run without a checkpoint (``oracle``, ``fixed``, ...).
        env: SplitPointConfig overrides (e.g. ``{"model": "llama-tiny", "reward": {"w_energy": 2}}``);
            with a checkpoint they are applied over the run's own env config.
        channel: see `splitrl.decision.channel.channel_spec` (a trace is read on its time column,
            one request every ``1 / arrival_rate_hz`` seconds).
        scenario: a scenario YAML file (`splitrl.controller.scenario`): channel and edge-load traces,
            request arrivals, battery, privacy target; replaces ``channel`` and ``arrival_rate_hz``.
        arrival_rate_hz: requests per second on the channel's clock (None: one per the env's
            ``decision_interval_s``).
        battery_start: UE battery level at the first request, (0, 1] (None: the scenario's, else not modelled).
        privacy_target: smallest split any request may use (None: the scenario's, else none).
        requests: number of requests to serve (>= 1; None: 20, or all of the scenario's).
        prompts: text file with one prompt per line (None: WikiText-2 passages).
        max_new_tokens: tokens generated per request (>= 1).
        ppl_tokens: also measure perplexity on this many WikiText tokens through the chosen split (0: off).
        out: folder for ``decisions.jsonl``, ``summary.json`` and the TensorBoard events (one session per folder).
        seed: seed of the channel and of the link noise.
    """

    checkpoint: str | None = None
    agent: str | None = None
    env: dict = field(default_factory=dict)
    channel: str = "fading"
    scenario: str | None = None
    arrival_rate_hz: float | None = None
    battery_start: float | None = None
    privacy_target: int | None = None
    requests: int | None = None
    prompts: str | None = None
    max_new_tokens: int = 16
    ppl_tokens: int = 0
    out: str = "runs/control"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.agent is None):
            raise UsageError("give exactly one of checkpoint (a trained run) or agent (an exact baseline kind)")
        if (self.requests is not None and self.requests < 1) or self.max_new_tokens < 1 or self.ppl_tokens < 0:
            raise UsageError("requests and max_new_tokens must be >= 1, ppl_tokens >= 0")
        if self.scenario is not None and self.arrival_rate_hz is not None:
            raise UsageError("--arrival-rate: a scenario sets its own arrivals; give one of --scenario or --arrival-rate")
        if self.arrival_rate_hz is not None and not self.arrival_rate_hz > 0:
            raise UsageError(f"--arrival-rate: must be > 0 requests/s, got {self.arrival_rate_hz}")
        if self.battery_start is not None and not 0 < self.battery_start <= 1:
            raise UsageError(f"--battery: must be in (0, 1], got {self.battery_start}")
        if self.privacy_target is not None and self.privacy_target < 0:
            raise UsageError(f"--privacy-target: must be >= 0, got {self.privacy_target}")


def env_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set env.FIELD=VALUE`` / ``env.reward.FIELD=VALUE`` items (train.py's syntax) as a nested dict."""
    out: dict[str, Any] = {}
    for text in items:
        path, value = parse_override(text)
        if path[0] != "env" or len(path) < 2 or (len(path) > 2 and path[1] != "reward") or len(path) > 3:
            raise UsageError(f"--set {text!r}: this command takes env.FIELD=VALUE or env.reward.FIELD=VALUE "
                             "(e.g. env.transport=int8-biterr, env.reward.w_energy=2)")
        if len(path) == 3:
            out.setdefault("reward", {})[path[2]] = value
        else:
            out[path[1]] = value
    return out


def merge_env(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` on top; the ``reward`` mapping is merged field by field."""
    merged = dict(base)
    for k, v in overrides.items():
        if k == "reward" and isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    return merged


def _wikitext_prompts(tokenizer, n: int, tokens: int = 48) -> list[str]:
    ids = corpus_tokens(tokenizer, (n + 1) * tokens * 4)[0]
    return [tokenizer.decode(ids[i * 4 * tokens: i * 4 * tokens + tokens]) for i in range(n)]


def build_server(*, checkpoint: str | None, agent: str | None, env: dict, channel: str, seed: int, loaded=None,
                 backend_factory=None, split: int | None = None, scenario=None, arrival_rate_hz: float | None = None,
                 battery_start: float | None = None, privacy_target: int | None = None, precision: str = "fp32"):
    """(RequestServer, loaded model, env config) for a checkpoint, a baseline kind or a fixed ``split``.

    ``scenario`` (a `splitrl.controller.scenario.Scenario`) replaces ``channel``: its env overrides
    apply under ``env``, its arrivals and traces drive the state, its battery and privacy target
    apply unless ``battery_start`` / ``privacy_target`` are given. Without a scenario, a trace
    channel is read on its time column at ``arrival_rate_hz`` (None: one request per
    ``decision_interval_s``).

    ``backend_factory(loaded, env_config)`` gives the `GenerationBackend` (default: an in-process
    `LocalBackend` over ``loaded``). ``precision``: the weight precision this process loads the
    model at when it loads it (``--agent``/``--split``; a checkpoint's agent loads its own fp32 model).
    The agent's problem (`SplitProblem`) is built once; its `RequestCostService` is the one the
    server charges requests with.
    """
    if scenario is not None:
        spec = {"kind": "trace", "path": scenario.channel.source, "on_end": "loop"}
        overrides = merge_env(merge_env(scenario.env, env), {"channel": spec})
        battery_start = scenario.battery_start if battery_start is None else battery_start
        privacy_target = scenario.privacy_target if privacy_target is None else privacy_target
    else:
        spec = channel_spec(channel)
        overrides = merge_env(env, {"channel": spec})
    if checkpoint is not None:
        if precision != "fp32" and loaded is None:
            raise UsageError("--precision with --checkpoint: not supported yet (the checkpoint's agent loads the "
                             "fp32 model); use --agent or --split, or --precision fp32")
        policy = AgentPolicy.from_checkpoint(checkpoint, env_overrides=overrides, loaded=loaded)
        env_cfg = policy.problem.config
        loaded = policy.loaded or loaded or load_model(env_cfg.model)
        costs = policy.problem.costs
    else:
        try:
            env_cfg = SplitPointConfig(**overrides)
        except TypeError as e:
            raise UsageError(f"--set: {e}; allowed: env.<SplitPointConfig field>") from None
        loaded = loaded or load_model(env_cfg.model, precision=precision)
        if split is None and agent is None:
            raise UsageError("give one of --checkpoint, --agent or --split")
        if agent is not None:
            policy = AgentPolicy.baseline(agent, env_cfg, loaded.view, seed=seed)
            costs = policy.problem.costs
        else:
            policy = FixedPolicy(int(split), loaded.view.num_layers)
            costs = RequestCostService(env_cfg, loaded.view)
    if loaded.view.num_layers != policy.num_layers:
        raise UsageError(f"the agent was trained for {policy.num_layers} layers, the model has {loaded.view.num_layers}")
    if scenario is not None:
        chan = ScenarioProcess(scenario, history=env_cfg.history)
        chan.rng = np.random.default_rng(seed)  # draws the initial split, as ChannelProcess's stream does
    else:
        slot_s = 1.0 / arrival_rate_hz if arrival_rate_hz else env_cfg.decision_interval_s
        chan = ChannelProcess(spec, costs.link_profile, slot_s=slot_s, history=env_cfg.history, seed=seed)
    # As the env's reset: the initial split is configured or drawn after the channel's stream.
    allowed = np.arange(env_cfg.s_min, loaded.view.num_layers + 1)
    initial = env_cfg.initial_split if env_cfg.initial_split is not None else int(chan.rng.choice(allowed))
    if backend_factory is not None:
        backend = backend_factory(loaded, env_cfg)
    else:
        backend = LocalBackend(SplitRuntime(loaded), model_name=loaded.name, modulation=env_cfg.modulation)
    capacity = scenario.battery_capacity_j if scenario is not None else None
    server = RequestServer(policy, backend, costs, chan, transport=env_cfg.transport, seed=seed, initial_split=initial,
                           battery_start=battery_start, battery_capacity_j=capacity, privacy_target=privacy_target)
    return server, loaded, env_cfg


class Controller:
    """Serves ``config.requests`` requests in-process under a policy (see module doc)."""

    def __init__(self, config: ControlConfig, *, loaded=None) -> None:
        self.config = config
        self.scenario = load_scenario(config.scenario) if config.scenario else None
        if self.scenario is not None and (config.requests or 0) > self.scenario.requests:
            raise UsageError(f"--requests: scenario {self.scenario.name} has {self.scenario.requests} requests, "
                             f"asked for {config.requests}")
        self.requests = config.requests or (self.scenario.requests if self.scenario is not None else 20)
        self.server, self.loaded, self.env_config = build_server(
            checkpoint=config.checkpoint, agent=config.agent, env=config.env, channel=config.channel,
            seed=config.seed, loaded=loaded, scenario=self.scenario, arrival_rate_hz=config.arrival_rate_hz,
            battery_start=config.battery_start, privacy_target=config.privacy_target)
        self.policy = self.server.policy
        self.agent_name = self.policy.name
        self.evaluator = None
        if config.ppl_tokens:
            w = min(config.ppl_tokens, 512)
            self.evaluator = PerplexityEvaluator(self.loaded, PerplexityConfig(tokens=config.ppl_tokens, window=w, stride=w))
        self.table = self._quality_table()

    def _quality_table(self):
        """The sweep table the agent's problem reads quality from (None for a fixed split, or when
        there is none for this model)."""
        if self.policy.problem is None:
            return None
        try:
            return quality_table(self.policy.problem)
        except (FileNotFoundError, ValueError):
            return None

    def prompts(self) -> list[str]:
        c = self.config
        if c.prompts:
            p = Path(c.prompts)
            if not p.is_file():
                raise UsageError(f"--prompts: {p} not found")
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                raise UsageError(f"--prompts: {c.prompts} holds no prompts")
            return [lines[i % len(lines)] for i in range(self.requests)]
        return _wikitext_prompts(self.loaded.tokenizer, self.requests)

    def run(self, *, progress: bool = True) -> dict[str, Any]:
        """Serve ``config.requests`` requests; returns the summary (also written to ``summary.json``)."""
        from tqdm.auto import tqdm

        c, server = self.config, self.server
        out = claim_session_dir(c.out)
        prompts = self.prompts()
        sinks = [JsonlSink(out / DECISIONS_FILE), TensorBoardSink(out, "control", config=asdict(c))]
        quality_rng = np.random.default_rng(c.seed + 1)
        ppl_clean = self.evaluator.evaluate(self.loaded.view.num_layers).ppl if self.evaluator is not None else None
        records: list[dict[str, Any]] = []
        try:
            for prompt in tqdm(prompts, desc="control", unit="req", disable=not progress):
                ids = server.backend.runtime.encode(prompt)
                _, rec = server.serve(ids, max_new_tokens=c.max_new_tokens, stop_at_eos=False)
                table_ratio = None
                if self.table is not None:
                    table_ratio = self.table.lookup(rec.split, rec.snr_db, int(quality_rng.integers(self.table.seeds)))
                    rec.reward_table = server.charge(rec.split, rec.snr_db, rec.previous_split, edge_load=rec.edge_load,
                                                     battery=rec.battery, log_ppl_ratio=table_ratio)["reward"]
                log_ratio = table_ratio
                if self.evaluator is not None:
                    link = link_at(self.env_config.transport, seed=rec.link_seed + 1, snr_db=rec.snr_db,
                                   modulation=self.env_config.modulation, vocab_size=self.loaded.view.vocab_size)
                    rec.ppl_measured = self.evaluator.evaluate(rec.split, link).ppl
                    log_ratio = math.log(rec.ppl_measured / ppl_clean)
                info = {"split": rec.split, "previous_split": rec.previous_split, "snr_db": rec.snr_db,
                        "latency_s": rec.charged_latency_s, "timed_out": rec.timed_out, "ppl": rec.ppl_measured}
                if log_ratio is not None:
                    info["log_ppl_ratio"] = log_ratio
                rec.agent_paid_evaluation = self.policy.feedback(info)
                row = rec.to_dict()
                records.append(row)
                for sink in sinks:
                    sink.write(row)
        finally:
            for sink in sinks:
                sink.close()
        channel = f"scenario:{self.scenario.source}" if self.scenario is not None else c.channel
        summary = summarize(records, agent=self.agent_name, channel=channel, transport=self.env_config.transport)
        summary["agent_real_evaluations"] = self.policy.real_evaluations
        summary["charged_with"] = sorted(server.charged_with)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def summarize(records: list[dict[str, Any]], *, agent: str, channel: str, transport: str) -> dict[str, Any]:
    """Session figures from the decision records."""
    dec = [r["decision_us"] for r in records if r["edge_available"]]  # a fallback decides without the policy
    dec = dec or [r["decision_us"] for r in records]
    steps = [r["decode_step_ms"] for r in records if r["decode_step_ms"] > 0]
    splits = [r["split"] for r in records]
    rewards = [r["reward_table"] for r in records if r.get("reward_table") is not None]
    return {
        "agent": agent, "requests": len(records), "channel": channel, "transport": transport,
        "split_changes": int(sum(a != b for a, b in zip(splits, splits[1:]))),
        "splits_used": sorted(set(splits)),
        "arrival_span_s": [records[0]["arrival_s"], records[-1]["arrival_s"]],
        "decision_latency_us_median": statistics.median(dec), "decision_latency_us_p95": float(np.percentile(dec, 95)),
        "decision_latency_us_p99": float(np.percentile(dec, 99)),
        "policy_latency_us_median": statistics.median(r["policy_us"] for r in records),
        "decode_step_ms_median": statistics.median(steps) if steps else None,
        "decision_pct_of_decode_step": 100 * statistics.median(dec) / 1e3 / statistics.median(steps) if steps else None,
        "mean_emulated_ttft_s": float(np.mean([r["emulated_ttft_s"] for r in records])),
        "mean_emulated_ue_energy_j_per_token": float(np.mean([r["emulated_ue_energy_j_per_token"] for r in records])),
        "mean_reward_table": float(np.mean(rewards)) if rewards else None,
        "fallbacks": int(sum(bool(r["fallback"]) for r in records)),
        "privacy_raised": int(sum(bool(r.get("privacy_raised")) for r in records)),
        "battery_end": records[-1].get("battery"),
        "mean_edge_load": (float(np.mean([r["edge_load"] for r in records]))
                           if records[0].get("edge_load") is not None else None),
    }
