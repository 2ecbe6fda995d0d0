"""Cost model of a UE-edge split: device/link profiles, latency/energy/memory estimates, measurement.

* `profiles` — typed, validated UE / edge / link profiles and the shipped YAML files
  (`load_profile`, `list_profiles`).
* `model` — `CostModel.estimate` / `estimate_all`: TTFT, time per output token, UE energy, UE
  memory and bytes on the air for a split and an SNR; `emulate_report` for real runtime requests.
* `edge_load` — a shared edge: its utilisation process (Markov / trace, delayed report) and the
  M/D/1 slow-down of its compute (`EdgeLoadConfig`, `EdgeLoadModel`, `md1_slowdown`).
* `privacy` — `PrivacyTable`: measured top-1 token recovery per cut, and the privacy floor.
* `measure` — `measure_layer_times`: time this machine's layers, fit FLOP/s, write a UE profile.
The ``splitrl profile`` subcommand is `splitrl.cli.profile`.

Importing the package measures nothing.
"""
from splitrl.cost.measure import ProfileResult, measure_layer_times, measure_memory_bandwidth
from splitrl.cost.model import CostEstimate, CostModel, CostTable, ModelCosts, emulate_report, sum_max_linear
from splitrl.cost.profiles import (
    DTYPE_BYTES,
    PROFILE_KINDS,
    EdgeProfile,
    HarqSpec,
    LinkProfile,
    RateSpec,
    UEProfile,
    dbm_to_w,
    list_profiles,
    load_profile,
    profile_from_dict,
    time_scale,
)

__all__ = [
    "DTYPE_BYTES", "PROFILE_KINDS", "CostEstimate", "CostModel", "CostTable", "EdgeProfile", "HarqSpec",
    "LinkProfile", "ModelCosts", "ProfileResult", "RateSpec", "UEProfile", "dbm_to_w", "emulate_report",
    "list_profiles", "load_profile", "measure_layer_times", "measure_memory_bandwidth", "profile_from_dict",
    "sum_max_linear", "time_scale",
]
