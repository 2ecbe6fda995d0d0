"""Optional hooks a `StepCallback` object may carry, beyond being called after each env step.

`Agent.learn` calls ``callback(step_dict)`` after every env step (see `splitrl.agents.base`). A
trainer needs two more things, which an agent offers through duck-typed methods of the same
callback object (plain functions have neither and lose nothing):

``callback.on_boundary(step) -> bool | None``
    The agent is at a *consistent point*: everything up to env step ``step`` has been learned
    from and nothing is half done (no partial rollout waiting for its update), so saving the agent,
    the env and the RNG states now and restoring them later continues exactly as if uninterrupted.
    Returning False asks the agent to stop learning (it stops at its next step, without forwarding
    that step). SB3 agents call it at every rollout boundary (PPO/A2C: after each update, i.e. every
    ``n_steps``; DQN: every ``train_freq`` steps); agents without internal state may call it after
    every step.

``callback.log_scalars(values: dict[str, float], step: int) -> None``
    Learning diagnostics (losses, learning rate, ...) under namespaced tags such as ``train/loss``.

Step dicts should carry ``step`` (env steps learned from so far, 1-based after the step),
``obs`` (the observation acted on), ``action``, ``reward``, ``next_obs``, ``terminated``,
``truncated``, ``done`` and ``info`` (the env's info: ``split``, ``snr_db``, ...). The trainer
counts steps by calls (one call = one env step), logs an episode when ``done``/``terminated``/
``truncated`` is true, and reads ``info["split"]``/``info["snr_db"]`` for its per-step scalars.

What a new agent must do for the trainer's guarantees: call the step callback once per env step
(and stop when it returns False), and call `at_boundary` wherever its state is complete. An agent
that never calls `at_boundary` still trains and gets a final checkpoint, but no periodic ones, and
``--stop-at``/SIGTERM only take effect at the end of ``learn``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["at_boundary", "log_scalars"]


def at_boundary(callback: Any, step: int) -> bool:
    """Tell ``callback`` the agent is at a consistent point after ``step`` env steps; False: stop."""
    fn = getattr(callback, "on_boundary", None)
    return True if fn is None else fn(int(step)) is not False


def log_scalars(callback: Any, values: dict[str, float], step: int) -> None:
    """Hand learning diagnostics to ``callback`` if it takes them."""
    fn = getattr(callback, "log_scalars", None)
    if fn is not None and values:
        fn(values, int(step))
