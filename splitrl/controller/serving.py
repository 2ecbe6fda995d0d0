"""Serving one request: observe the channel -> the policy decides -> the backend generates -> figures.

`RequestServer` holds what a controller needs between requests — the policy, the generation
backend, the per-request cost service, the channel process (one slot per request) and the split
in place — and `serve` runs one request and returns its `DecisionRecord` (split, SNR, decision
time, measured tokens/s, emulated TTFT/energy from the cost model, fallback). No gym env is
built or stepped. `splitrl control` (in-process experiments) and `splitrl serve` (the HTTP
endpoint) both serve through it and log through `splitrl.controller.sinks`.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from splitrl.controller.backend import GenerationBackend
from splitrl.controller.channel import ChannelProcess
from splitrl.controller.costs import RequestCostService
from splitrl.controller.policy import Observation, SplitPolicy
from splitrl.runtime.engine import GenerationResult
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
    link_seed: int = 0
    request_id: str | None = None
    reward_table: float | None = None
    ppl_measured: float | None = None
    agent_paid_evaluation: bool = False
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


class RequestServer:
    """Serves requests one at a time under a policy (see module doc); thread-safe (one lock)."""

    def __init__(self, policy: SplitPolicy, backend: GenerationBackend, costs: RequestCostService,
                 channel: ChannelProcess, *, transport: str, seed: int = 0, initial_split: int | None = None) -> None:
        if backend.view.num_layers != policy.num_layers:
            raise ValueError(f"the policy decides for {policy.num_layers} layers, the model has {backend.view.num_layers}")
        self.policy, self.backend, self.costs, self.channel = policy, backend, costs, channel
        self.transport = transport
        self.rng = np.random.default_rng(seed)
        self.split = int(initial_split if initial_split is not None else policy.num_layers)
        self.requests = 0
        self.lock = threading.Lock()
        policy.reset()

    def observation(self) -> Observation:
        return Observation(snr_db=self.channel.snr_db, snr_history_db=tuple(self.channel.history),
                           bandwidth_mhz=self.costs.bandwidth_mhz, split=self.split,
                           edge_available=bool(self.backend.edge_available))

    def serve(self, prompt_ids: torch.Tensor, *, sampling: SamplingConfig | None = None, max_new_tokens: int = 16,
              stop_at_eos: bool = True, on_token: Callable[[int], None] | None = None,
              request_id: str | None = None) -> tuple[GenerationResult, DecisionRecord]:
        """Decide the split for this slot, generate through it, then move the channel to the next slot."""
        from splitrl.cost import emulate_report

        with self.lock:
            obs = self.observation()
            decision = self.policy.decide(obs)
            seed = int(self.rng.integers(2**31 - 1))
            result = self.backend.generate(prompt_ids, decision.split, link=self.transport, snr_db=obs.snr_db,
                                           seed=seed, sampling=sampling or SamplingConfig(),
                                           max_new_tokens=max_new_tokens, stop_at_eos=stop_at_eos, on_token=on_token)
            rep = result.report
            emulated = emulate_report(rep, self.costs.cost_model, obs.snr_db)
            outcome = self.costs.request_outcome(decision.split, obs.snr_db, previous_split=obs.split)
            decode_step_s = rep.decode_seconds / max(1, rep.new_tokens - 1)
            record = DecisionRecord(
                request=self.requests, request_id=request_id, snr_db=obs.snr_db, split=decision.split,
                previous_split=obs.split, policy=self.policy.name, transport=self.transport,
                decision_us=decision.decision_us, decision_reason=decision.reason,
                edge_available=obs.edge_available, fallback=bool(rep.fallback_segments),
                fallback_segments=list(rep.fallback_segments), prompt_tokens=rep.prompt_tokens,
                new_tokens=rep.new_tokens, decode_step_ms=decode_step_s * 1e3,
                decision_pct_of_decode_step=(100 * decision.decision_us / 1e6 / decode_step_s
                                             if decode_step_s > 0 else None),
                tokens_per_s=rep.decode_tokens_per_s, prefill_s_measured=rep.prefill_seconds,
                emulated_ttft_s=float(emulated["ttft_s"]), emulated_tpot_s=float(emulated["tpot_s"]),
                emulated_ue_energy_j_per_token=float(emulated["ue_energy_j_per_token"]),
                bytes_on_air=rep.bytes_per_boundary[0] if rep.bytes_per_boundary else 0,
                charged_latency_s=outcome["latency_s"], timed_out=outcome["timed_out"],
                reward_costs=outcome["reward"], link_seed=seed, text=result.text,
            )
            self.split = decision.split
            self.requests += 1
            self.channel.advance()
            return result, record
