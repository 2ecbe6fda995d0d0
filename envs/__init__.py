"""Split-point environments (Gymnasium); importable as ``splitrl.envs``.

Importing ``splitrl`` registers:

* ``splitrl/SplitPoint-v0`` — reward from a real perplexity evaluation each step.
* ``splitrl/SplitPointTable-v0`` — the same MDP backed by the measured sweep table.
* ``splitrl/ChenLayerSplit-v0`` — the Chen et al. reference MDP, reproduced on our runtime.
* ``splitrl/AirCompAssign-v0`` — slow-timescale model assignment for AirComp tensor parallelism.
* ``splitrl/PipelineSplit-v0`` — active devices and cut vector of a K-device ring (multi-cut).
"""
from __future__ import annotations

import gymnasium as gym

_REGISTRY = {
    "splitrl/SplitPoint-v0": ("splitrl.envs.split_point:SplitPointEnv", 64),
    "splitrl/SplitPointTable-v0": ("splitrl.envs.split_point:SplitPointTableEnv", 256),
    # The Chen env cuts its own 5-step episodes (ChenConfig.episode_steps): no TimeLimit on top.
    "splitrl/ChenLayerSplit-v0": ("splitrl.envs.chen:ChenLayerSplitEnv", None),
    "splitrl/AirCompAssign-v0": ("splitrl.envs.aircomp_assign:AirCompAssignEnv", None),  # episode_steps cuts episodes
    "splitrl/PipelineSplit-v0": ("splitrl.envs.pipeline_split:PipelineSplitEnv", 64),
}


def register_envs() -> None:
    """Register the environments with Gymnasium (idempotent)."""
    for env_id, (entry_point, steps) in _REGISTRY.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=steps)


register_envs()
