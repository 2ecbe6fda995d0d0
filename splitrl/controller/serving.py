"""Serving one request: observe the state -> the policy decides -> the backend generates -> figures.

`RequestServer` holds what a controller needs between requests — the policy, the generation
backend, the per-request cost service, the state process (a `ChannelProcess`, one slot per
request, or a `ScenarioProcess`, the scenario's arrivals on its traces' clock), the UE battery
and the split in place — and `serve` runs one request and returns its `DecisionRecord` (split,
SNR, edge load, battery, decision time, measured tokens/s, emulated TTFT/energy, fallback). No
gym env is built or stepped. `splitrl control` (in-process experiments) and `splitrl serve` (the
HTTP endpoint) both serve through it and log through `splitrl.controller.sinks`.

What the controller observes vs what the request is charged:

* SNR: this request's (observed = true).
* Edge load: the observation holds the *reported* utilisation (``edge_load_delay_s`` old in a
  scenario); the request is charged at the *true* utilisation at its arrival.
* Battery: observed at its current level (charged at it when the config's
  ``battery_aware_energy`` is on); after the request it drains by the UE energy the request was
  charged (per token x ``new_tokens``) over the battery capacity.
* Privacy target: a hard floor; a policy's split below it is raised to it (``privacy_raised``).

Decision latency (``decision_us``) is measured from the start of building the observation to the
partition being in place for the backend (`LocalBackend.prepare`), i.e. everything the serving
loop adds before the first layer runs; ``policy_us`` is the policy's own share.
"""
from __future__ import annotations

import inspect
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from splitrl.controller.backend import GenerationBackend
from splitrl.controller.policy import SplitPolicy
from splitrl.cost import emulate_report
from splitrl.decision.channel import ChannelProcess
from splitrl.decision.costs import RequestCostService
from splitrl.decision.observation import Observation
from splitrl.errors import UsageError
from splitrl.runtime.engine import GenerationResult
from splitrl.runtime.partition import Partition
from splitrl.runtime.sampling import SamplingConfig

__all__ = ["DecisionRecord", "RequestServer"]


@dataclass
class DecisionRecord:
    """One served request, as logged (JSONL line, TensorBoard scalars, the HTTP ``splitrl`` field)."""

    request: int
    snr_db: float
    split: int
    previous_split: int
    policy: str
    transport: str
    decision_us: float
    decision_reason: str
    edge_available: bool
    fallback: bool
    fallback_segments: list[int]
    prompt_tokens: int
    new_tokens: int
    decode_step_ms: float
    decision_pct_of_decode_step: float | None
    tokens_per_s: float
    prefill_s_measured: float
    emulated_ttft_s: float
    emulated_tpot_s: float
    emulated_ue_energy_j_per_token: float
    bytes_on_air: int
    charged_latency_s: float
    timed_out: bool
    reward_costs: float
    arrival_s: float = 0.0
    edge_load: float | None = None
    edge_load_reported: float | None = None
    battery: float | None = None
    privacy_target: int | None = None
    privacy_raised: bool = False
    policy_us: float = 0.0
    charged_energy_j_per_token: float = 0.0
    link_seed: int = 0
    request_id: str | None = None
    reward_table: float | None = None
    ppl_measured: float | None = None
    agent_paid_evaluation: bool = False
    ue_precision: str | None = None  # the UE segment's weight precision, when the policy chooses it
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def _cost_keywords(costs: RequestCostService) -> frozenset[str]:
    """The state keywords ``costs.request_outcome`` is charged with, as the env charges them.

    ``edge_load`` whenever the state has one (the queueing is physical); ``battery`` only with the
    config's ``battery_aware_energy`` (the reward's energy weight then rises as it drains; without
    it the env's reward does not depend on the battery, and neither does the controller's). Read
    once at construction, not per request."""
    params = inspect.signature(costs.request_outcome).parameters
    keys = {"edge_load"} if "edge_load" in params else set()
    if "battery" in params and getattr(costs.config, "battery_aware_energy", False):
        keys.add("battery")
    return frozenset(keys)


class RequestServer:
    """Serves requests one at a time under a policy (see module doc); thread-safe (one lock).

    Args:
        state: a `ChannelProcess` or a `ScenarioProcess` (anything with ``snr_db``, ``history``,
            ``time_s``, ``edge_load``, ``edge_load_reported`` and ``advance()``).
        battery_start: UE battery level in (0, 1] at the first request (None: not modelled).
        battery_capacity_j: battery budget, J (None: the cost service's config ``battery_capacity_j``).
        privacy_target: smallest split any request may use (None: no floor beyond the policy's ``s_min``).
    """

    def __init__(self, policy: SplitPolicy, backend: GenerationBackend, costs: RequestCostService,
                 channel: ChannelProcess, *, transport: str, seed: int = 0, initial_split: int | None = None,
                 battery_start: float | None = None, battery_capacity_j: float | None = None,
                 privacy_target: int | None = None) -> None:
        if backend.view.num_layers != policy.num_layers:
            raise UsageError(f"the policy decides for {policy.num_layers} layers, the model has {backend.view.num_layers}")
        if battery_start is not None and not 0.0 < battery_start <= 1.0:
            raise UsageError(f"battery_start: must be in (0, 1], got {battery_start!r}")
        if privacy_target is not None and not 0 <= int(privacy_target) <= policy.num_layers:
            raise UsageError(f"privacy_target: must be in 0..{policy.num_layers}, got {privacy_target!r}")
        self.policy, self.backend, self.costs, self.channel = policy, backend, costs, channel
        self.transport = transport
        self.rng = np.random.default_rng(seed)
        self.split = int(initial_split if initial_split is not None else policy.num_layers)
        self.requests = 0
        self.lock = threading.Lock()
        self.battery = None if battery_start is None else float(battery_start)
        cap = battery_capacity_j if battery_capacity_j is not None else getattr(costs.config, "battery_capacity_j", None)
        if self.battery is not None and not (cap is not None and cap > 0):
            raise UsageError(f"battery_capacity_j: must be > 0 when the battery is modelled, got {cap!r}")
        self.battery_capacity_j = cap
        self.privacy_target = None if privacy_target is None else int(privacy_target)
        self.charged_with = _cost_keywords(costs)
        self.new_tokens = int(getattr(costs.config, "new_tokens", 1))
        self.bandwidth_mhz = float(costs.bandwidth_mhz)
        self._prepare = getattr(backend, "prepare", None)
        policy.reset()

    def observation(self) -> Observation:
        ch = self.channel
        return Observation(snr_db=ch.snr_db, snr_history_db=tuple(ch.history), bandwidth_mhz=self.bandwidth_mhz,
                           split=self.split, battery=self.battery, edge_load=ch.edge_load_reported,
                           privacy_target=self.privacy_target, edge_available=bool(self.backend.edge_available))

    def decide(self) -> tuple[Observation, Any, Any, int, bool, float]:
        """(observation, decision, partition or split, split, privacy raised, decision µs) for this
        request: the timed part of `serve`."""
        t0 = time.perf_counter_ns()
        obs = self.observation()
        decision = self.policy.decide(obs)
        split = decision.split
        raised = self.privacy_target is not None and split < self.privacy_target and obs.edge_available
        if raised:
            split = self.privacy_target
        placed = self._prepare(split) if self._prepare is not None else split
        if decision.ue_precision is not None and isinstance(placed, Partition):
            # (split, UE precision) actions: the UE's segment runs at the chosen precision, the rest fp32
            placed = placed.with_precision((decision.ue_precision,) + ("fp32",) * (placed.num_segments - 1))
        return obs, decision, placed, split, raised, (time.perf_counter_ns() - t0) / 1e3

    def charge(self, split: int, snr_db: float, previous_split: int, *, edge_load: float | None,
               battery: float | None, log_ppl_ratio: float = 0.0, precision: str | None = None) -> dict[str, Any]:
        """`RequestCostService.request_outcome` with the state terms the service supports."""
        state = {"edge_load": edge_load, "battery": battery}
        kw = {k: v for k, v in state.items() if k in self.charged_with and v is not None}
        return self.costs.request_outcome(split, snr_db, previous_split=previous_split, log_ppl_ratio=log_ppl_ratio,
                                          precision=precision, **kw)

    def serve(self, prompt_ids: torch.Tensor, *, sampling: SamplingConfig | None = None, max_new_tokens: int = 16,
              stop_at_eos: bool = True, on_token: Callable[[int], None] | None = None,
              request_id: str | None = None) -> tuple[GenerationResult, DecisionRecord]:
        """Decide the split for this request, generate through it, then move the state to the next request."""
        with self.lock:
            obs, decision, placed, split, raised, decision_us = self.decide()
            edge_load, t_arrival = self.channel.edge_load, float(self.channel.time_s)
            seed = int(self.rng.integers(2**31 - 1))
            result = self.backend.generate(prompt_ids, placed, link=self.transport, snr_db=obs.snr_db,
                                           seed=seed, sampling=sampling or SamplingConfig(),
                                           max_new_tokens=max_new_tokens, stop_at_eos=stop_at_eos, on_token=on_token)
            rep = result.report
            emulated = emulate_report(rep, self.costs.cost_model, obs.snr_db)
            outcome = self.charge(split, obs.snr_db, obs.split, edge_load=edge_load, battery=self.battery,
                                  precision=decision.ue_precision)
            decode_step_s = rep.decode_seconds / max(1, rep.new_tokens - 1)
            record = DecisionRecord(
                request=self.requests, request_id=request_id, snr_db=obs.snr_db, split=split,
                previous_split=obs.split, policy=self.policy.name, transport=self.transport,
                decision_us=decision_us, policy_us=decision.decision_us, decision_reason=decision.reason,
                ue_precision=decision.ue_precision,
                edge_available=obs.edge_available, fallback=bool(rep.fallback_segments),
                fallback_segments=list(rep.fallback_segments), prompt_tokens=rep.prompt_tokens,
                new_tokens=rep.new_tokens, decode_step_ms=decode_step_s * 1e3,
                decision_pct_of_decode_step=(100 * decision_us / 1e6 / decode_step_s if decode_step_s > 0 else None),
                tokens_per_s=rep.decode_tokens_per_s, prefill_s_measured=rep.prefill_seconds,
                emulated_ttft_s=float(emulated["ttft_s"]), emulated_tpot_s=float(emulated["tpot_s"]),
                emulated_ue_energy_j_per_token=float(emulated["ue_energy_j_per_token"]),
                bytes_on_air=rep.bytes_per_boundary[0] if rep.bytes_per_boundary else 0,
                charged_latency_s=outcome["latency_s"], timed_out=outcome["timed_out"],
                charged_energy_j_per_token=outcome["energy_j"], reward_costs=outcome["reward"],
                arrival_s=t_arrival, edge_load=edge_load, edge_load_reported=obs.edge_load, battery=self.battery,
                privacy_target=self.privacy_target, privacy_raised=raised, link_seed=seed, text=result.text,
            )
            self.split = split
            self.requests += 1
            self.drain_battery(outcome["energy_j"])
            self.channel.advance()
            return result, record

    def drain_battery(self, energy_j_per_token: float) -> None:
        """Take the UE energy one request was charged (per token x ``new_tokens``) off the battery."""
        if self.battery is not None:
            self.battery = max(0.0, self.battery - energy_j_per_token * self.new_tokens / self.battery_capacity_j)
