"""`SurrogateEnv`: the split-point MDP with quality from a learned surrogate (mbrl-lib's ModelEnv pattern).

Same channel, observations, actions, costs and reward as every `SplitPointBaseEnv`; only
``quality(split, snr)`` differs: the surrogate's MEAN log(ppl/ppl_clean) (deterministic — no noise
is sampled, so equal seeds give equal trajectories). No real evaluation is ever made:
``real_evaluations`` stays 0. The SNR is clipped to the surrogate's training range
(`FeatureSpec.snr_range`), as `SplitPointTableEnv` clips to the measured range.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

import numpy as np

from splitrl.envs.split_point import SplitPointBaseEnv, SplitPointConfig
from splitrl.models import load_model
from splitrl.surrogate.base import Surrogate
from splitrl.errors import UsageError

__all__ = ["SurrogateEnv"]


class SurrogateEnv(SplitPointBaseEnv):
    """`SplitPointBaseEnv` whose quality is a fitted `Surrogate`'s mean prediction.

    Args:
        surrogate: a fitted surrogate whose spec knows ``config.transport``.
        config: the MDP configuration (``table``/``eval_*`` are unused).
        view: the model's `DecoderView` for the cost model (None: load ``config.model``).
        ppl_clean: clean perplexity for ``info["ppl"]`` (None: ``surrogate.spec.ppl_clean[transport]``).
        cache_size: predictions of all splits are cached for this many distinct SNRs.
    """

    def __init__(self, surrogate: Surrogate, config: SplitPointConfig | None = None, *, view=None,
                 ppl_clean: float | None = None, cache_size: int = 4096, **overrides: Any) -> None:
        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        if not isinstance(surrogate, Surrogate) or not surrogate.is_fitted:
            raise UsageError("SurrogateEnv needs a fitted Surrogate")
        spec = surrogate.spec
        if cfg.transport not in spec.transports:
            raise UsageError(f"the surrogate knows transports {spec.transports}, not {cfg.transport!r}")
        if view is None:
            view = load_model(cfg.model).view
        if view.num_layers != spec.num_layers:
            raise UsageError(f"the surrogate was fitted for {spec.num_layers} layers, the model has {view.num_layers}")
        super().__init__(cfg, num_layers=view.num_layers, view=view)
        self.surrogate = surrogate
        clean = ppl_clean if ppl_clean is not None else spec.ppl_clean.get(cfg.transport)
        if clean is None or not (math.isfinite(clean) and clean > 0):
            raise UsageError("clean perplexity unknown: pass ppl_clean= or fit with spec.ppl_clean set")
        self._ppl_clean = float(clean)
        self._cache: OrderedDict[float, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)

    @property
    def ppl_clean(self) -> float:
        return self._ppl_clean

    def predicted_quality(self, snr_db: float) -> np.ndarray:
        """Predicted log(ppl/ppl_clean) of every split 0..L at ``snr_db`` (cached per SNR)."""
        key = float(np.clip(float(snr_db), *self.surrogate.spec.snr_range))
        hit = self._cache.get(key)
        if hit is None:
            L = self.L
            hit = self.surrogate.predict(([self.config.transport] * (L + 1), np.arange(L + 1), np.full(L + 1, key)))
            hit.setflags(write=False)
            self._cache[key] = hit
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def quality(self, split: int, snr_db: float, transport: str | None = None) -> tuple[float, float]:
        if transport is not None and transport != self.config.transport:
            # per-request codecs (SplitPointConfig.codecs) need a surrogate per transport
            raise UsageError(f"this SurrogateEnv predicts transport {self.config.transport!r} only, not {transport!r}")
        log_ratio = float(self.predicted_quality(snr_db)[int(split)])
        return self._ppl_clean * math.exp(log_ratio), log_ratio
