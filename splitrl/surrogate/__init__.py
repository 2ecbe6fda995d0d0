"""Learned quality surrogates: log(ppl/ppl_clean) of a (transport, split, SNR) cell without running the model.

* `Surrogate` — the contract (``fit``, ``predict``, ``predict_with_uncertainty``, ``update``,
  ``save``, ``load``), after mbrl-lib's small ``Model``; kinds ``extratrees``, ``gbr``, ``gp``,
  ``mlp`` (`make_surrogate`, `SURROGATE_KINDS`).
* `FeatureSpec`, `cut_statistics` — the features (split, SNR, transport one-hot, channel error
  intensity, clean-activation statistics at the cut), serialisable to JSON.
* `propose`, `run_acquisition`, `RewardModel` — choosing the next real evaluations where the
  reward is at stake and the surrogate is unsure.
* `SurrogateEnv` — the split-point MDP with quality from the surrogate (no real evaluations).
* `surrogate_report` — accuracy, best-split agreement, learning curves and query cost on a sweep
  table (``splitrl surrogate-report``).
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


def __getattr__(name: str):
    # SurrogateEnv and the report import the env/model stack: load them on first use.
    if name == "SurrogateEnv":
        from splitrl.surrogate.env import SurrogateEnv

        return SurrogateEnv
    if name == "surrogate_report":
        from splitrl.surrogate.report import surrogate_report

        return surrogate_report
    raise AttributeError(f"module 'splitrl.surrogate' has no attribute {name!r}")


__all__ = [
    "CUT_STAT_NAMES", "DEFAULT_KIND", "STRATEGIES", "SURROGATE_KINDS", "AcquisitionResult", "ExtraTreesSurrogate",
    "FeatureSpec", "GaussianProcessSurrogate", "GradientBoostingSurrogate", "MLPEnsembleSurrogate", "RewardModel",
    "Surrogate", "SurrogateEnv", "SurrogateLoadError", "as_cells", "cut_statistics", "load_surrogate",
    "make_surrogate", "propose", "run_acquisition", "surrogate_report", "table_oracle",
]
