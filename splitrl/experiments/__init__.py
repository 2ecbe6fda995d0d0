"""Held-out experiments: the comparison harnesses built on the one rollout loop (`splitrl.rollout`).

``evaluate``  trained agents vs the exact baselines on held-out channel episodes (``splitrl evaluate``);
``aircomp``   the AirComp assignment policies (``splitrl/AirCompAssign-v0``);
``ring``      the pipeline ring's controllers (``splitrl/PipelineSplit-v0``).

The rollout loop itself sits below, in `splitrl.rollout`, because the trainer's periodic
evaluation (`splitrl.training.evaluation`) runs on it too; the harnesses sit above the trainer
(``evaluate`` loads its checkpoints). Nothing is imported here.
"""
