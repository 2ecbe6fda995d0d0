"""K-device model-distributed inference: recurrent pipeline parallelism over a ring of stages (MDI-LLM).

* `protocol` — the int64 message header and the store keys (JSON, never pickle).
* `hops` — per-hop link emulation (codec / channel noise, air time from a link profile).
* `stage` — one stage process: layer range, a KV cache per sample, starter logic, failure handling.
* `driver` — `PipelineRun` / `run_pipeline`: hosts the store, starts stages, re-forms the ring.
* `partition` — exact DP cut search (min slowest stage incl. hops, memory limits), equal split,
  MDI-LLM's starter-gets-fewer table, brute force.
* `simulator` — a discrete-event simulator of the ring and the closed-form throughput.
* ``splitrl pipeline generate|stage|plan`` is `splitrl.cli.pipeline`.

Importing the package starts nothing and loads no model.
"""
from splitrl.pipeline.driver import (
    PipelineConfig, PipelineFailure, PipelineResult, PipelineRun, equal_cuts, run_pipeline,
)
from splitrl.pipeline.protocol import Header, JobSpec, Plan

__all__ = [
    "PipelineConfig", "PipelineFailure", "PipelineResult", "PipelineRun", "equal_cuts", "run_pipeline",
    "Header", "JobSpec", "Plan",
]
