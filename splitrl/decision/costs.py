"""The per-request cost/reward service: what one request at a split and an SNR costs, and its reward.

`RequestCostService` owns the device cost model (UE/edge/link profiles, the transport's codec),
the latency and energy references of the reward, the request-timeout policy and the reward
terms. The split-point envs (through `splitrl.decision.problem.SplitProblem`) delegate to it,
and the deployed controller uses it directly, so serving a request never builds a gym env and the
env and the controller charge a request identically.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from splitrl.cost import CostModel, load_profile
from splitrl.cost.edge_load import RHO_MAX, md1_slowdown
from splitrl.cost.privacy import PrivacyTable
from splitrl.decision.reward import RewardConfig, battery_energy_scale, reward_terms
from splitrl.link.factory import codec_for
from splitrl.quant.precision import check_precision
from splitrl.errors import UsageError

__all__ = ["RequestCostService", "LATENCY_FIELDS"]

LATENCY_FIELDS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_latency_s"}
"""The reward's latency metric -> the `CostTable` field that holds it."""


class RequestCostService:
    """Per-request costs and rewards of every split of one model under one configuration.

    Args:
        config: a `SplitPointConfig` (or any object with its cost fields: ``transport``,
            ``ue_profile``, ``edge_profile``, ``link_profile``, ``prompt_tokens``, ``new_tokens``,
            ``reward``, ``include_ue_state``, ``request_timeout_s``; optional: ``prefill_chunks``,
            ``decision_interval_s``, ``edge_load``, ``privacy_table``, ``codecs``, ``ue_precisions``).
        view: the model's `DecoderView` (its shape drives the cost model).

    Every cost method takes the request's state: ``snr_db``, the UE compute ``load`` (used only
    with ``include_ue_state``), keyword-only ``edge_load`` (the shared edge's background
    utilisation in [0, 1); None: a dedicated idle edge, the old behaviour), ``battery`` (UE
    battery level in [0, 1]; None: not modelled, energy weight 1), ``transport`` (one of the
    configured codec transports; None: ``config.transport``) and ``precision`` (the UE's weight
    precision, one of ``config.ue_precisions``; None: the first of them, or — with none configured —
    the UE profile's ``weight_dtype``, the model before precisions existed).

    With ``ue_precisions`` the service holds one cost model per (transport, UE precision)
    (`CostModel(ue_precision=...)`); the reward's references stay the all-on-UE figures of the
    model without a precision, so switching precisions on does not rescale the reward.
    """

    def __init__(self, config: Any, view) -> None:
        self.config = config
        self.reward_config: RewardConfig = config.reward
        self.L = int(view.num_layers)
        self.link_profile = load_profile("link", config.link_profile)
        chunks = int(getattr(config, "prefill_chunks", 1) or 1)
        self.transports: tuple[str, ...] = tuple(getattr(config, "codecs", None) or ()) or (config.transport,)
        self.cost_models = {t: CostModel(view, config.ue_profile, config.edge_profile, self.link_profile,
                                         codec=codec_for(t), prefill_chunks=chunks) for t in self.transports}
        if config.transport not in self.cost_models:
            self.cost_models[config.transport] = CostModel(view, config.ue_profile, config.edge_profile,
                                                           self.link_profile, codec=codec_for(config.transport),
                                                           prefill_chunks=chunks)
        self.cost_model = self.cost_models[config.transport]
        self.precisions: tuple[str, ...] = tuple(
            check_precision(p, "ue_precisions") for p in (getattr(config, "ue_precisions", None) or ()))
        self.default_precision: str | None = self.precisions[0] if self.precisions else None
        # One cost model per (transport, UE precision) with the switch on; none without it.
        self.precision_models: dict[tuple[str, str], Any] = {
            (t, p): CostModel(view, config.ue_profile, config.edge_profile, self.link_profile, codec=codec_for(t),
                              prefill_chunks=chunks, ue_precision=p)
            for t in self.cost_models for p in self.precisions}
        ue_only = self.cost_model.estimate(self.L, snr_db=30.0, prompt_tokens=config.prompt_tokens,
                                           new_tokens=config.new_tokens)
        self.latency_field = LATENCY_FIELDS[self.reward_config.latency_metric]
        # References default to the all-on-UE split: no link involved, so they do not move with the SNR.
        self.latency_ref_s = self.reward_config.latency_ref_s or float(getattr(ue_only, self.latency_field))
        self.energy_ref_j = self.reward_config.energy_ref_j or float(ue_only.ue_energy_j_per_token)
        self.bandwidth_mhz = float(self.link_profile.bandwidth_hz) / 1e6
        ue = self.cost_model.ue
        busy_w = ue.compute_power_w + ue.radio_tx_power_w(self.link_profile.tx_power_w)
        # A timed-out request burns compute + radio power until the timeout, spread over its tokens.
        self.timeout_energy_per_token = busy_w * config.request_timeout_s / max(1, config.new_tokens)
        self.interval_s = float(getattr(config, "decision_interval_s", 0.5))
        load_cfg = getattr(config, "edge_load", None)
        self.self_load = bool(getattr(load_cfg, "self_load", True)) if load_cfg is not None else True
        # This UE's own edge work per request (idle edge), per split: what it adds to the edge's load.
        self._edge_busy = {t: self._edge_busy_s(cm) for t, cm in self.cost_models.items()}
        self.privacy = None
        if getattr(config, "privacy_table", None):
            self.privacy = PrivacyTable.load(config.privacy_table, num_layers=self.L, model=config.model)
        self._rows = np.arange(self.L + 1)
        self._link_rows: dict[tuple[float, str | None], np.ndarray] = {}

    def model_for(self, transport: str | None = None, precision: str | None = None):
        """The `CostModel` of ``transport`` at UE ``precision`` (None: the defaults, see the class doc)."""
        t = transport or self.config.transport
        p = precision if precision is not None else self.default_precision
        if p is None:
            return self.cost_models[t]
        cm = self.precision_models.get((t, p))
        if cm is None:
            raise UsageError(f"precision {p!r} is not configured (ue_precisions = {', '.join(self.precisions) or 'none'})")
        return cm

    @property
    def options(self) -> tuple[tuple[str, str | None], ...]:
        """(transport, UE precision) of every action option, in action order: codec major, precision
        minor (precision None without ``ue_precisions``)."""
        return tuple((t, p) for t in self.transports for p in (self.precisions or (None,)))

    def _edge_busy_s(self, cm) -> np.ndarray:
        c = self.config
        t = cm.estimate_all(snr_db=30.0, prompt_tokens=c.prompt_tokens, new_tokens=c.new_tokens)
        return np.asarray(t.edge_prefill_s + max(0, c.new_tokens - 1) * t.edge_decode_s, dtype=float)

    # --- state -> per-split figures ---------------------------------------------------------
    @staticmethod
    def check_edge_load(edge_load: float) -> float:
        """``edge_load`` as a float, or a ValueError naming what is allowed."""
        rho = float(edge_load)
        if not 0.0 <= rho < 1.0:
            raise UsageError(f"edge_load must be in [0, 1), got {edge_load!r}")
        return rho

    def edge_utilization(self, edge_load: float | None, transport: str | None = None) -> np.ndarray | None:
        """Utilisation the edge runs at for each split 0..L: background + this UE's own work per
        decision interval (``config.edge_load.self_load``), capped at `RHO_MAX`; None for no edge load."""
        if edge_load is None:
            return None
        rho = self.check_edge_load(edge_load)
        own = self._edge_busy[transport or self.config.transport] / self.interval_s if self.self_load else 0.0
        return np.minimum(rho + own, RHO_MAX)

    def costs_at(self, snr_db: float, *, edge_load: float | None = None, transport: str | None = None,
                 precision: str | None = None):
        """Cost-model figures of every split at ``snr_db`` (a `CostTable`), the edge's compute time
        stretched by the M/D/1 factor at ``edge_load`` (`splitrl.cost.edge_load`)."""
        c = self.config
        cm = self.model_for(transport, precision)
        rho = self.edge_utilization(edge_load, transport)
        slow = None if rho is None else md1_slowdown(rho)
        return cm.estimate_all(snr_db=float(snr_db), prompt_tokens=c.prompt_tokens, new_tokens=c.new_tokens,
                               edge_slowdown=slow)

    def kernel_inputs(self, transport: str | None = None, precision: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(static rows, chunk steps, constants) of `splitrl.decision.kernel_numba.base_rewards_into` for this
        service's request lengths and reward (cached per transport and UE precision; see that
        module's docstring)."""
        t = transport or self.config.transport
        p = precision if precision is not None else self.default_precision
        key = t if p is None else (t, p)
        cache = self.__dict__.setdefault("_kernel_inputs", {})
        if key not in cache:
            c, rc = self.config, self.reward_config
            cm = self.model_for(t, p)
            head, steps = cm.kernel_static(c.prompt_tokens, c.new_tokens)
            own = self._edge_busy[t] / self.interval_s if self.self_load else np.zeros(self.L + 1)
            rec = self.privacy.recovery if self.privacy is not None else np.zeros(self.L + 1)
            hidden = ((self._rows > 0) & (self._rows < self.L)).astype(np.float64)
            static = np.ascontiguousarray(np.vstack([head[:4], own, rec, hidden, head[4:]]))
            N = int(c.new_tokens)
            consts = np.array([rc.w_latency, self.latency_ref_s, rc.w_energy, self.energy_ref_j, rc.w_privacy,
                               c.request_timeout_s, self.timeout_energy_per_token, cm.ue.idle_power_w, N, N - 1,
                               max(N - 1, 1), RHO_MAX, ("ttft_s", "tpot_s", "e2e_latency_s").index(self.latency_field),
                               float(bool(c.include_ue_state)), float(self.privacy is not None), len(steps)],
                              dtype=np.float64)
            cache[key] = (static, steps, consts)
        return cache[key]

    def link_rows(self, snr_db: float, transport: str | None = None, precision: str | None = None) -> np.ndarray:
        """The channel-dependent rows of `splitrl.decision.kernel_numba` at ``snr_db`` (cached per SNR)."""
        key = (snr_db, transport) if precision is None else (snr_db, transport, precision)
        rows = self._link_rows.get(key)  # one dict lookup on a decision's hot path
        if rows is None:
            c = self.config
            rows = self.model_for(transport, precision).link_rows(float(snr_db), c.prompt_tokens, c.new_tokens)
            if len(self._link_rows) >= 8192:  # bounded: observed SNRs are rounded, their values few
                self._link_rows.clear()
            self._link_rows[key] = rows
        return rows

    def warm(self, snrs) -> None:
        """Work out the channel-dependent cost terms at each SNR in ``snrs`` for every transport
        now (cached by the cost models), so that later requests at these SNRs only add the
        load-dependent part. Results are unchanged."""
        for t, p in self.options:
            for snr in snrs:
                self.link_rows(float(snr), None if t == self.config.transport else t,
                               None if p == self.default_precision else p)

    def request_latency(self, snr_db: float, load: float | None = None, *, edge_load: float | None = None,
                        battery: float | None = None, transport: str | None = None,
                        precision: str | None = None) -> np.ndarray:
        """Latency (the reward's metric) of every split 0..L at ``snr_db``, with the UE slow-down
        under compute ``load`` when UE state is modelled and the edge's queueing at ``edge_load``;
        before the request timeout (a dead link is ``inf`` here). ``battery`` does not change latency."""
        return self._latency(self._latency_energy(snr_db, edge_load, transport, precision), load)

    def _latency_energy(self, snr_db: float, edge_load: float | None, transport: str | None,
                        precision: str | None = None):
        """`CostModel.latency_energy` at this state: the `costs_at` figures a reward needs, cheaply."""
        c = self.config
        rho = self.edge_utilization(edge_load, transport)
        return self.model_for(transport, precision).latency_energy(
            float(snr_db), c.prompt_tokens, c.new_tokens, edge_slowdown=None if rho is None else md1_slowdown(rho))

    def _latency(self, t, load: float | None) -> np.ndarray:
        lat = np.asarray(getattr(t, self.latency_field), dtype=float)
        if self.config.include_ue_state and load is not None:
            slow = 1.0 / (1.0 - 0.5 * float(load))
            extra = {"ttft_s": t.ue_prefill_s, "tpot_s": t.ue_decode_s,
                     "e2e_latency_s": t.ue_prefill_s + t.ue_decode_s * max(0, self.config.new_tokens - 1)}
            lat = lat + (slow - 1.0) * np.asarray(extra[self.latency_field], dtype=float)
        return lat

    def request_costs(self, snr_db: float, load: float | None = None, *, edge_load: float | None = None,
                      battery: float | None = None, transport: str | None = None, precision: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latency, UE energy per token, timed out) of every split 0..L, as the reward charges them:
        a request slower than ``request_timeout_s`` is charged the timeout, and the energy of
        computing and transmitting until then. Energy is physical (joules): the battery level
        changes its weight in the reward, not the joules."""
        t = self._latency_energy(snr_db, edge_load, transport, precision)
        lat = self._latency(t, load)
        timeout = self.config.request_timeout_s
        timed_out = ~(lat <= timeout)
        energy = np.asarray(t.ue_energy_j_per_token, dtype=float)
        energy = np.where(timed_out, np.minimum(energy, self.timeout_energy_per_token), energy)
        return np.minimum(lat, timeout), energy, timed_out

    def privacy_recovery(self, transport: str | None = None) -> np.ndarray | None:
        """Probe top-1 token recovery at each cut 0..L (None when privacy is not modelled)."""
        return None if self.privacy is None else self.privacy.recovery

    def reward(self, *, log_ppl_ratio, latency_s, energy_j, split, previous_split, battery: float | None = None,
               privacy_recovery=None) -> dict[str, Any]:
        """The reward terms (`splitrl.decision.reward.reward_terms`) with this service's references;
        arguments broadcast like numpy arrays. ``battery`` scales the energy weight
        (`splitrl.decision.reward.battery_energy_scale`; None: 1)."""
        scale = 1.0 if battery is None else battery_energy_scale(battery)
        return reward_terms(self.reward_config, log_ppl_ratio=log_ppl_ratio, latency_s=latency_s, energy_j=energy_j,
                            split=split, previous_split=previous_split, latency_ref_s=self.latency_ref_s,
                            energy_ref_j=self.energy_ref_j, privacy_recovery=privacy_recovery, energy_scale=scale)

    def base_rewards(self, snr_db: float, load: float | None = None, *, edge_load: float | None = None,
                     battery: float | None = None, transport: str | None = None,
                     precision: str | None = None) -> np.ndarray:
        """Reward of every split 0..L at this state with no quality loss and no switch; the reward of
        split ``s`` at quality loss ``q`` is ``base_rewards(snr)[s] - w_quality * q`` minus switching.
        (`splitrl.decision.kernel_numba.base_rewards_into` is the compiled copy a planner's decision uses.)"""
        lat, energy, _ = self.request_costs(snr_db, load, edge_load=edge_load, transport=transport, precision=precision)
        splits = self._rows
        return np.asarray(self.reward(log_ppl_ratio=0.0, latency_s=lat, energy_j=energy, split=splits,
                                      previous_split=splits, battery=battery,
                                      privacy_recovery=self.privacy_recovery(transport))["reward"], dtype=float)

    def request_outcome(self, split: int, snr_db: float, *, previous_split: int, log_ppl_ratio: float = 0.0,
                        load: float | None = None, edge_load: float | None = None, battery: float | None = None,
                        transport: str | None = None, precision: str | None = None) -> dict[str, Any]:
        """One request's charged latency/energy, timeout flag and reward at ``split`` (the env's step
        figures without the quality measurement: pass the quality loss when one is known)."""
        lat, energy, timed_out = self.request_costs(snr_db, load, edge_load=edge_load, transport=transport,
                                                    precision=precision)
        rec = self.privacy_recovery(transport)
        terms = self.reward(log_ppl_ratio=log_ppl_ratio, latency_s=float(lat[split]), energy_j=float(energy[split]),
                            split=int(split), previous_split=int(previous_split), battery=battery,
                            privacy_recovery=None if rec is None else float(rec[split]))
        return {"latency_s": float(lat[split]), "energy_j": float(energy[split]), "timed_out": bool(timed_out[split]),
                "reward": float(terms["reward"]),
                "reward_terms": {k: float(v) for k, v in terms.items() if k != "reward"}}

    def privacy_min_split(self, target: float | None) -> int | None:
        """Smallest split whose recovery is at most ``target`` (None: no target or privacy not modelled)."""
        if target is None or self.privacy is None:
            return None
        return self.privacy.min_split(target)
