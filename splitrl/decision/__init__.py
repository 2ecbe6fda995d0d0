"""The split decision's core: what a split-point decision observes, costs and earns, with no gym
env, agent, trainer or controller in it (`tests/test_import_contract.py` enforces the layering
``decision < envs < agents < training < controller``).

* `config` — `SplitPointConfig` (the split MDP's configuration) and `ACTION_MODES`.
* `observation` — `Observation`, `ObservationSpec` (vector layout, action <-> split), `round_snr`.
* `reward` — `RewardConfig` and the reward terms, vectorised over splits.
* `costs` — `RequestCostService`: one request's latency, energy and reward at every split.
* `channel` — the channel process one slot per request (`build_channel`, `ChannelProcess`).
* `tables` — the measured sweep tables (`SweepTable`, `DEFAULT_TABLE`) and the table env's
  precomputed state figures (`StateTables`).
* `kernel`, `kernel_numba` — the known-cost reward's numpy reference and its compiled copy, and
  the model-based agent's compiled decision.
* `problem` — `SplitProblem`: all of the above bundled for one model, what agents are built from.

The package imports nothing at import time; import its modules.
"""
