"""The split decision problem of one model under one configuration, as agents and envs see it.

`SplitProblem` bundles what is fixed for a run: the configuration, the model's depth, the request
cost service, the observation spec, the action options, the edge-load model, the UE memory mask
and the measured sweep tables. The split-point envs are thin Gymnasium adapters over it (they add
the state that moves: channel, battery, loads), and agents are built from it, so an agent never
reads an env's internals to know what it is deciding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from splitrl.cost.edge_load import EdgeLoadModel
from splitrl.decision.config import SplitPointConfig
from splitrl.decision.costs import RequestCostService
from splitrl.decision.observation import ObservationSpec
from splitrl.decision.reward import switch_cost
from splitrl.decision.tables import DEFAULT_TABLE, SweepTable, table_key
from splitrl.errors import UsageError

__all__ = ["SplitProblem", "problem_of"]


@dataclass(frozen=True)
class SplitProblem:
    """The split-point MDP's fixed parts for one model (``view``) and one `SplitPointConfig`.

    Attributes:
        config: the validated configuration.
        num_layers: the model's decoder layers L (splits run 0..L).
        costs: the per-request cost and reward service.
        spec: observation layout and action <-> split mapping.
        splits: the allowed split range ``[s_min, L]``.
        options: (transport, UE precision) of each action option, in action order (precision None:
            no ``ue_precisions`` configured).
        edge_process: the shared edge's (stateless) load model, None without ``edge_load``.
        memory_fit: per UE precision (None without precisions), which splits 0..L fit the UE's
            memory budget (all of them without ``memory_mask``).

    Sweep tables are read on first use (`sweep_table`) and kept, so one problem shared by several
    envs reads each CSV once. Build one with `SplitProblem.build`.
    """

    config: SplitPointConfig
    num_layers: int
    costs: RequestCostService
    spec: ObservationSpec
    splits: np.ndarray
    options: tuple[tuple[str, str | None], ...]
    edge_process: EdgeLoadModel | None
    memory_fit: dict[str | None, np.ndarray]
    tables: dict[Any, SweepTable] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        c, L = self.config, self.num_layers
        if not 0 <= c.s_min <= L:
            raise UsageError(f"s_min must be in 0..{L}, got {c.s_min}")
        if c.initial_split is not None and not c.s_min <= c.initial_split <= L:
            raise UsageError(f"initial_split must be in {c.s_min}..{L}, got {c.initial_split}")
        if self.spec.num_layers != L or self.costs.L != L:
            raise UsageError(f"costs, spec and problem disagree on the number of layers ({self.costs.L}, "
                             f"{self.spec.num_layers}, {L})")

    @classmethod
    def build(cls, config: SplitPointConfig | None, view, **overrides: Any) -> "SplitProblem":
        """The problem of ``config`` (None: the defaults; ``overrides``: field replacements) for the
        model whose `DecoderView` is ``view`` (its shape drives the cost model)."""
        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        L = int(view.num_layers)
        if not 0 <= cfg.s_min <= L:  # before the cost model is built: the cheap error first
            raise UsageError(f"s_min must be in 0..{L}, got {cfg.s_min}")
        if cfg.initial_split is not None and not cfg.s_min <= cfg.initial_split <= L:
            raise UsageError(f"initial_split must be in {cfg.s_min}..{L}, got {cfg.initial_split}")
        costs = RequestCostService(cfg, view)
        splits = np.arange(cfg.s_min, L + 1)
        precisions = tuple(cfg.ue_precisions)
        memory_fit: dict[str | None, np.ndarray] = {}
        # With UE precisions, one mask per precision: each precision's weight bytes decide what fits.
        for p in (precisions or (None,)):
            fit = np.ones(L + 1, dtype=bool)
            if cfg.memory_mask:
                fit[:] = False
                cm = costs.model_for(None, p) if p is not None else costs.cost_model
                fit[cm.feasible_splits(cfg.prompt_tokens + cfg.new_tokens - 1)] = True
            memory_fit[p] = fit
        if cfg.memory_mask and not any(f[splits].any() for f in memory_fit.values()):
            raise UsageError(f"memory_mask: no split in {cfg.s_min}..{L} fits the UE memory budget "
                             f"of {cfg.ue_profile}" + (f" at any of {', '.join(precisions)}" if precisions else ""))
        edge = EdgeLoadModel(cfg.edge_load) if cfg.edge_load is not None else None
        return cls(config=cfg, num_layers=L, costs=costs, spec=ObservationSpec.from_config(cfg, L), splits=splits,
                   options=costs.options, edge_process=edge, memory_fit=memory_fit)

    # --- shape ------------------------------------------------------------------------------
    @property
    def L(self) -> int:
        return self.num_layers

    @property
    def precisions(self) -> tuple[str, ...]:
        """The UE weight precisions an action may choose (empty: none configured)."""
        return tuple(self.config.ue_precisions)

    @property
    def default_precision(self) -> str | None:
        """The first configured UE precision (None without ``ue_precisions``)."""
        return self.precisions[0] if self.precisions else None

    @property
    def memory_feasible(self) -> np.ndarray:
        """`memory_fit` at the default UE precision."""
        return self.memory_fit[self.default_precision]

    # --- sweep tables -----------------------------------------------------------------------
    def sweep_table(self, transport: str | None = None, precision: str | None = None, *,
                    check_model: bool = True) -> SweepTable:
        """The configured sweep table (``config.table``, or `DEFAULT_TABLE`) for ``transport``
        (None: ``config.transport``) at UE ``precision`` (None: the default precision, fp32 without
        one), read on first use. ``check_model`` refuses a table measured with another model; the
        baselines' quality estimate for a backend without a table reads it unchecked."""
        t = transport or self.config.transport
        p = precision if precision is not None else self.default_precision
        key = (table_key(t, p), bool(check_model))
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = SweepTable(self.config.table or DEFAULT_TABLE, t, self.splits,
                                                  model=self.config.model if check_model else None,
                                                  precision=p or "fp32")
        return table

    def mean_quality(self, snr_db: float, transport: str | None = None, precision: str | None = None) -> np.ndarray:
        """Expected log(ppl / ppl_clean) of every split 0..L at ``snr_db`` (the sweep table's mean
        over measured seeds) at UE ``precision`` (None: the default precision; fp32 without any);
        0 outside the allowed splits."""
        out = np.zeros(self.L + 1)
        out[self.splits] = self.sweep_table(transport, precision).mean_table(snr_db, self.splits)
        return out

    # --- allowed splits ---------------------------------------------------------------------
    def allowed_splits(self, privacy_floor: int | None = None, precision: str | None = None) -> np.ndarray:
        """Boolean mask over splits 0..L allowed for a request with ``privacy_floor`` (s_min, memory
        at UE ``precision``; None: the default precision, or the profile's dtype)."""
        ok = (self.memory_feasible if precision is None else self.memory_fit[precision]).copy()
        ok[: max(self.config.s_min, privacy_floor or 0)] = False
        if not ok.any():  # the privacy floor and the memory budget exclude each other: all on the UE
            ok[self.L] = True
        return ok

    @staticmethod
    def nearest_allowed(split: int, ok: np.ndarray) -> int:
        """``split`` if ``ok`` allows it, else the nearest allowed split above it (the largest
        allowed one when none is above)."""
        if ok[split]:
            return split
        up = np.flatnonzero(ok[split:])
        if len(up):
            return int(split + up[0])
        return int(np.flatnonzero(ok)[-1])

    def privacy_floor(self, target: float) -> int:
        """The smallest split meeting privacy ``target`` (never below ``s_min``)."""
        return max(self.config.s_min, self.costs.privacy_min_split(target))

    # --- values -----------------------------------------------------------------------------
    def action_values(self, snr_db: float, *, load: float | None = None, edge_load: float | None = None,
                      battery: float | None = None, privacy_floor: int | None = None,
                      previous_split: int | None = None) -> np.ndarray:
        """Expected reward ``[len(splits), len(options)]`` of each (split, option) at a state (SNR,
        UE load, edge load, battery, privacy floor), from ``previous_split`` (None: no switch
        charged); ``-inf`` where the split is not allowed. Option ``j`` is ``options[j]``."""
        rc = self.config.reward
        out = np.empty((len(self.splits), len(self.options)))
        for j, (t, p) in enumerate(self.options):
            ok = self.allowed_splits(privacy_floor, p)[self.splits]
            base = self.costs.base_rewards(snr_db, load, edge_load=edge_load, battery=battery, transport=t,
                                           precision=p)
            v = base[self.splits] - rc.w_quality * self.mean_quality(snr_db, t, p)[self.splits]
            if previous_split is not None:
                v = v - rc.w_switch * switch_cost(rc, self.splits, int(previous_split))
            out[:, j] = np.where(ok, v, -np.inf)
        return out


def problem_of(source: Any) -> SplitProblem:
    """The `SplitProblem` an agent or a planner is built from: ``source`` itself, or the problem a
    split-point env (under any wrappers) adapts. A TypeError for anything else."""
    if isinstance(source, SplitProblem):
        return source
    problem = getattr(getattr(source, "unwrapped", source), "problem", None)
    if not isinstance(problem, SplitProblem):
        raise TypeError(f"this agent needs a SplitProblem or a split-point env (SplitPointBaseEnv), "
                        f"got {type(getattr(source, 'unwrapped', source)).__name__}")
    return problem
