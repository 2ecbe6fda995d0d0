"""Learned quality surrogates: log(ppl/ppl_clean) of a (transport, split, SNR) cell without running the model.

* `Surrogate` — the contract (``fit``, ``predict``, ``predict_with_uncertainty``, ``update``,
  ``save``, ``load``), after mbrl-lib's small ``Model``; kinds ``extratrees``, ``gbr``, ``gp``,
  ``mlp`` (`make_surrogate`, `SURROGATE_KINDS`).
* `FeatureSpec`, `cut_statistics` — the features (split, SNR, transport one-hot, channel error
  intensity, clean-activation statistics at the cut), serialisable to JSON.
* `propose`, `run_acquisition`, `RewardModel` — choosing the next real evaluations where the
  reward is at stake and the surrogate is unsure.

Two modules sit above the split-point envs and are imported by name, not re-exported here (the
models above are what agents import, and they must not pull in the envs):

* `splitrl.surrogate.env.SurrogateEnv` — the split-point MDP with quality from the surrogate.
* `splitrl.surrogate.report.surrogate_report` — accuracy, best-split agreement, learning curves
  and query cost on a sweep table (``splitrl surrogate-report``).
"""
from splitrl.surrogate.acquisition import STRATEGIES, AcquisitionResult, RewardModel, propose, run_acquisition, table_oracle
from splitrl.surrogate.base import (
    SURROGATE_KINDS,
    ExtraTreesSurrogate,
    GaussianProcessSurrogate,
    GradientBoostingSurrogate,
    MLPEnsembleSurrogate,
    Surrogate,
    SurrogateLoadError,
    load_surrogate,
    make_surrogate,
)
from splitrl.surrogate.features import CUT_STAT_NAMES, FeatureSpec, as_cells, cut_statistics

DEFAULT_KIND = "extratrees"  # chosen by the numbers of benchmarks/results/surrogate_report.json


__all__ = [
    "CUT_STAT_NAMES", "DEFAULT_KIND", "STRATEGIES", "SURROGATE_KINDS", "AcquisitionResult", "ExtraTreesSurrogate",
    "FeatureSpec", "GaussianProcessSurrogate", "GradientBoostingSurrogate", "MLPEnsembleSurrogate", "RewardModel",
    "Surrogate", "SurrogateLoadError", "as_cells", "cut_statistics", "load_surrogate",
    "make_surrogate", "propose", "run_acquisition", "table_oracle",
]
