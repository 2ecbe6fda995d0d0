"""Stable-Baselines3 PPO, A2C and DQN as split-point `Agent`s.

Each agent owns one SB3 model built from its typed config (`PPOConfig`, `A2CConfig`,
`DQNConfig`: every SB3 hyper-parameter we use, documented and range-checked) and a seed:

* ``learn(env, n, callback=...)`` runs ``model.learn`` for ``n`` *more* steps (the model's step
  counter continues across calls and after `load`), forwarding every env step to the
  `StepCallback` as a dict, counting ``real_evaluations`` from the env's lifetime counter, handing
  SB3's own diagnostics (``train/loss``, ``train/entropy_loss``, ``rollout/exploration_rate``, ...)
  to ``callback.log_scalars`` and announcing rollout boundaries to ``callback.on_boundary`` (see
  `splitrl.agents.hooks`). A boundary that answers False stops learning *at* the boundary, so the
  agent in memory is exactly what a checkpoint written there holds.
* Determinism: the model gets ``seed=`` (SB3 seeds Python, NumPy, torch and the action space),
  the first reset of the env is seeded with it, and torch uses ``torch_threads`` threads while
  learning.
* ``save`` writes SB3's zip (``model.zip``: policy and optimizer state) plus, as JSON/NPZ, what SB3
  does not save: step/update counters, the exploration rate, the last observation, the episode
  statistics and (DQN) the replay buffer. ``load`` restores them into a model built from the same
  config; weights are read with ``torch.load(weights_only=True)`` via ``set_parameters``, never by
  unpickling SB3's data section. Training continues from a save made at a boundary exactly as if it
  had not stopped, given the env and global RNG states are restored too (the trainer does that).

Observations are scaled to [-1, 1] by the observation space's bounds inside the policy
(`BoundsScaler`, ``normalize_obs``), so the policy acts on raw env observations.
"""
from __future__ import annotations

import json
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from splitrl.agents import hooks
from splitrl.agents.base import Agent, StepCallback
from splitrl.agents.config import ConfigError, documented, param, validate
from splitrl.errors import UsageError

__all__ = ["PPOConfig", "A2CConfig", "DQNConfig", "SB3Agent", "PPOAgent", "A2CAgent", "DQNAgent", "BoundsScaler"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


# --- configs ----------------------------------------------------------------------------------
def _net_arch_default() -> list[int]:
    return [64, 64]


@documented
@dataclass
class PPOConfig:
    """PPO hyper-parameters (Schulman et al. 2017; SB3 names and defaults unless noted)."""

    learning_rate: float = param(3e-4, "Adam step size", low=0, low_open=True)
    n_steps: int = param(2048, "env steps per rollout (one update per rollout; also the checkpoint granularity)", low=2)
    batch_size: int = param(64, "minibatch size of the update (<= n_steps)", low=2)
    n_epochs: int = param(10, "passes over each rollout", low=1)
    gamma: float = param(0.99, "discount factor", low=0, high=1)
    gae_lambda: float = param(0.95, "GAE bias/variance trade-off", low=0, high=1)
    clip_range: float = param(0.2, "policy ratio clipping", low=0, high=1, low_open=True)
    clip_range_vf: float | None = param(None, "value clipping (None: none)", low=0, low_open=True)
    normalize_advantage: bool = param(True, "normalise advantages per minibatch")
    ent_coef: float = param(0.0, "entropy bonus weight", low=0)
    vf_coef: float = param(0.5, "value loss weight", low=0)
    max_grad_norm: float = param(0.5, "gradient clipping norm", low=0, low_open=True)
    target_kl: float | None = param(None, "stop an update's epochs early beyond this KL (None: never)", low=0, low_open=True)
    net_arch: list[int] = param(doc="hidden layer sizes of the policy and value networks", low=1,
                                default_factory=_net_arch_default)
    activation: str = param("tanh", "hidden activation", choices=tuple(_ACTIVATIONS))
    normalize_obs: bool = param(True, "scale observations to [-1, 1] by the observation space bounds (in the policy)")
    reward_floor: float = param(-100.0, "rewards are raised to at least this while learning (a guard: non-finite rewards would make value targets NaN)")
    torch_threads: int = param(1, "torch threads while learning (fixed: results depend on it)", low=1)

    def __post_init__(self) -> None:
        validate(self)
        if self.batch_size > self.n_steps:
            raise ConfigError(f"PPOConfig.batch_size must be <= n_steps ({self.n_steps}), got {self.batch_size}")


@documented
@dataclass
class A2CConfig:
    """A2C hyper-parameters (Mnih et al. 2016; SB3 names and defaults)."""

    learning_rate: float = param(7e-4, "optimizer step size", low=0, low_open=True)
    n_steps: int = param(5, "env steps per update (also the checkpoint granularity)", low=1)
    gamma: float = param(0.99, "discount factor", low=0, high=1)
    gae_lambda: float = param(1.0, "GAE bias/variance trade-off (1: plain n-step returns)", low=0, high=1)
    ent_coef: float = param(0.0, "entropy bonus weight", low=0)
    vf_coef: float = param(0.5, "value loss weight", low=0)
    max_grad_norm: float = param(0.5, "gradient clipping norm", low=0, low_open=True)
    use_rms_prop: bool = param(True, "RMSprop (True) or Adam (False)")
    rms_prop_eps: float = param(1e-5, "RMSprop epsilon", low=0, low_open=True)
    normalize_advantage: bool = param(False, "normalise advantages")
    net_arch: list[int] = param(doc="hidden layer sizes of the policy and value networks", low=1,
                                default_factory=_net_arch_default)
    activation: str = param("tanh", "hidden activation", choices=tuple(_ACTIVATIONS))
    normalize_obs: bool = param(True, "scale observations to [-1, 1] by the observation space bounds (in the policy)")
    reward_floor: float = param(-100.0, "rewards are raised to at least this while learning (a guard: non-finite rewards would make value targets NaN)")
    torch_threads: int = param(1, "torch threads while learning (fixed: results depend on it)", low=1)

    def __post_init__(self) -> None:
        validate(self)


@documented
@dataclass
class DQNConfig:
    """DQN hyper-parameters (Mnih et al. 2015; SB3 names and defaults unless noted)."""

    learning_rate: float = param(1e-4, "Adam step size", low=0, low_open=True)
    buffer_size: int = param(100_000, "replay buffer capacity (transitions); saved with checkpoints", low=1)
    learning_starts: int = param(1000, "env steps of uniform random actions before learning starts", low=0)
    batch_size: int = param(32, "minibatch size per gradient step", low=1)
    tau: float = param(1.0, "target network soft-update coefficient (1: hard copy)", low=0, high=1, low_open=True)
    gamma: float = param(0.99, "discount factor", low=0, high=1)
    train_freq: int = param(4, "env steps between updates (also the checkpoint granularity)", low=1)
    gradient_steps: int = param(1, "gradient steps per update", low=1)
    target_update_interval: int = param(1000, "env steps between target network updates", low=1)
    exploration_fraction: float = param(0.1, "fraction of training over which epsilon decays", low=0, high=1)
    exploration_initial_eps: float = param(1.0, "initial epsilon", low=0, high=1)
    exploration_final_eps: float = param(0.05, "final epsilon", low=0, high=1)
    max_grad_norm: float = param(10.0, "gradient clipping norm", low=0, low_open=True)
    net_arch: list[int] = param(doc="hidden layer sizes of the Q network", low=1, default_factory=_net_arch_default)
    activation: str = param("relu", "hidden activation", choices=tuple(_ACTIVATIONS))
    normalize_obs: bool = param(True, "scale observations to [-1, 1] by the observation space bounds (in the policy)")
    reward_floor: float = param(-100.0, "rewards are raised to at least this while learning (a guard: non-finite rewards would make value targets NaN)")
    torch_threads: int = param(1, "torch threads while learning (fixed: results depend on it)", low=1)

    def __post_init__(self) -> None:
        validate(self)


# --- plumbing ---------------------------------------------------------------------------------
class BoundsScaler(BaseFeaturesExtractor):
    """Flattens and maps each observation component from its Box bounds to [-1, 1] (components
    with infinite or degenerate bounds pass unchanged). The constants are buffers of the policy."""

    def __init__(self, observation_space: spaces.Box) -> None:
        n = int(np.prod(observation_space.shape))
        super().__init__(observation_space, features_dim=n)
        low = np.asarray(observation_space.low, np.float64).reshape(-1)
        high = np.asarray(observation_space.high, np.float64).reshape(-1)
        ok = np.isfinite(low) & np.isfinite(high) & (high > low)
        self.register_buffer("center", torch.as_tensor(np.where(ok, (low + high) / 2, 0.0), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.where(ok, (high - low) / 2, 1.0), dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations.flatten(1) - self.center) / self.scale


@contextmanager
def _torch_threads(n: int):
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class RewardFloor(gym.RewardWrapper):
    """Raises rewards to at least ``floor`` (-inf or NaN become ``floor``): outages must not turn
    value targets into NaN. Stateless."""

    def __init__(self, env: gym.Env, floor: float) -> None:
        super().__init__(env)
        self.floor = float(floor)

    def reward(self, reward):
        r = float(reward)
        return self.floor if not r >= self.floor else r


def _vec_env(env: gym.Env, reward_floor: float) -> DummyVecEnv:
    """One-env DummyVecEnv over ``env`` (adding SB3's Monitor unless it is there already) with
    rewards floored at ``reward_floor``."""
    wrapped = RewardFloor(env if is_wrapped(env, Monitor) else Monitor(env), reward_floor)
    return DummyVecEnv([lambda: wrapped])


class _StopAtBoundary(Exception):
    """Raised inside model.learn to stop exactly at a rollout boundary."""


class _ScalarForward(KVWriter):
    """SB3 logger output that hands numeric records to ``callback.log_scalars``."""

    def __init__(self, callback: Any) -> None:
        self.callback = callback

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        values = {}
        for k, v in key_values.items():
            excluded = key_excluded.get(k) or ()
            if "tensorboard" in excluded or isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.number)):
                continue
            values[k if "/" in k else f"train/{k}"] = float(v)
        hooks.log_scalars(self.callback, values, step)

    def close(self) -> None:
        pass


class _Bridge(BaseCallback):
    """SB3 callback: forwards steps, counts evaluations, announces rollout boundaries."""

    def __init__(self, agent: "SB3Agent", callback: StepCallback | None) -> None:
        super().__init__()
        self.agent = agent
        self.user = callback
        self.env_u = agent._env.unwrapped
        self.evals0 = (agent.real_evaluations, int(getattr(self.env_u, "real_evaluations", 0)))
        self.start_step = agent.model.num_timesteps

    def _on_rollout_start(self) -> None:
        n = self.model.num_timesteps
        if n != self.start_step and not hooks.at_boundary(self.user, n):
            raise _StopAtBoundary

    def _on_step(self) -> bool:
        a = self.agent
        n = int(self.model.num_timesteps)
        a.env_steps = n
        a.real_evaluations = self.evals0[0] + int(getattr(self.env_u, "real_evaluations", 0)) - self.evals0[1]
        if self.user is None:
            return True
        loc = self.locals
        info = loc["infos"][0]
        done = bool(loc["dones"][0])
        truncated = bool(info.get("TimeLimit.truncated", False))
        next_obs = info["terminal_observation"] if done and "terminal_observation" in info else loc["new_obs"][0]
        step = {
            "step": n, "obs": np.asarray(self.model._last_obs)[0], "action": int(np.asarray(loc["actions"]).reshape(-1)[0]),
            "reward": float(np.asarray(loc["rewards"]).reshape(-1)[0]), "next_obs": next_obs, "done": done,
            "terminated": done and not truncated, "truncated": truncated, "info": info,
        }
        return self.user(step) is not False


# --- agents -----------------------------------------------------------------------------------
class SB3Agent(Agent):
    """An SB3 algorithm as an `Agent` (see the module docstring). Subclasses set ``kind``,
    ``algo``, ``config_cls`` and ``algo_fields``: the config fields passed to the SB3 constructor
    under their own names (the config uses SB3's names, so the mapping is the identity)."""

    learns = True
    algo: ClassVar[type[BaseAlgorithm]]
    config_cls: ClassVar[type]
    algo_fields: ClassVar[tuple[str, ...]]
    log_interval: ClassVar[int] = 1
    _COUNTERS: ClassVar[tuple[str, ...]] = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining")

    def __init__(self, env: gym.Env, config: Any = None, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(self.config).__name__}")
        self.seed = int(seed)
        self._env = env
        self._vec = _vec_env(env, self.config.reward_floor)
        c = self.config
        policy_kwargs: dict[str, Any] = {"net_arch": list(c.net_arch), "activation_fn": _ACTIVATIONS[c.activation]}
        if c.normalize_obs:
            policy_kwargs["features_extractor_class"] = BoundsScaler
        with _torch_threads(c.torch_threads):
            self.model = self.algo("MlpPolicy", self._vec, seed=self.seed, device="cpu", verbose=0,
                                   policy_kwargs=policy_kwargs, **self._algo_kwargs())
        self.model.set_logger(Logger(None, []))
        self._pending_log: dict[str, Any] | None = None

    def _algo_kwargs(self) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in self.algo_fields}

    # --- acting / learning ---------------------------------------------------------------------
    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        action, _ = self.model.predict(np.asarray(obs, dtype=np.float32), deterministic=deterministic)
        return int(np.asarray(action).reshape(-1)[0])

    def learn(self, env: gym.Env, total_steps: int, *, callback: StepCallback | None = None) -> "SB3Agent":
        """Learn from ``total_steps`` more env steps of ``env`` (the env given at construction, or a
        new one whose first reset is seeded with the agent's seed)."""
        if total_steps <= 0:
            return self
        if env is not self._env:
            self._env = env
            self._vec = _vec_env(env, self.config.reward_floor)
            self.model.set_env(self._vec)
            self._vec.seed(self.seed)
        logger = Logger(None, [_ScalarForward(callback)])
        pending, self._pending_log = self._pending_log, None
        if pending:
            logger.name_to_value.update(pending["values"])
            logger.name_to_count.update(pending["counts"])
            logger.name_to_excluded.update({k: tuple(v) for k, v in pending["excluded"].items()})
        self.model.set_logger(logger)
        with _torch_threads(self.config.torch_threads):
            try:
                self.model.learn(total_timesteps=int(total_steps), callback=_Bridge(self, callback),
                                 reset_num_timesteps=False, log_interval=self.log_interval, progress_bar=False)
                self.model.logger.dump(self.model.num_timesteps)  # diagnostics of the last update
            except _StopAtBoundary:
                pass
        self.env_steps = int(self.model.num_timesteps)
        return self

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seed": self.seed, "config": asdict(self.config)}

    def _extra_state(self) -> dict[str, Any]:
        m = self.model
        rng = getattr(m.action_space, "_np_random", None)
        return {
            "counters": {k: getattr(m, k) for k in self._COUNTERS if hasattr(m, k)},
            "ep_info_buffer": list(m.ep_info_buffer) if m.ep_info_buffer is not None else None,
            "ep_success_buffer": [bool(x) for x in m.ep_success_buffer] if m.ep_success_buffer is not None else None,
            "action_space_rng": rng.bit_generator.state if rng is not None else None,
            # records SB3 made since its last dump (e.g. the losses of the update just done), so a
            # resumed run dumps exactly what the uninterrupted one would have
            "pending_log": {"values": dict(m.logger.name_to_value), "counts": dict(m.logger.name_to_count),
                            "excluded": {k: list(v) for k, v in m.logger.name_to_excluded.items()}},
        }

    def save_artifacts(self, directory: Path) -> None:
        d = Path(directory)
        self.model.save(d / "model.zip")
        (d / "sb3_state.json").write_text(json.dumps(self._extra_state(), indent=1, default=_json_default))
        arrays = {}
        if self.model._last_obs is not None:
            arrays["last_obs"] = np.asarray(self.model._last_obs)
        if self.model._last_episode_starts is not None:
            arrays["last_episode_starts"] = np.asarray(self.model._last_episode_starts)
        with open(d / "sb3_arrays.npz", "wb") as f:
            np.savez(f, **arrays)

    def load_artifacts(self, directory: Path) -> None:
        d = Path(directory)
        zip_path = d / "model.zip"
        if not zip_path.is_file():
            raise FileNotFoundError(f"{zip_path} not found: not an SB3 agent checkpoint")
        self.model.set_parameters(str(zip_path), exact_match=True, device="cpu")
        state_path = d / "sb3_state.json"
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            for k, v in state.get("counters", {}).items():
                setattr(self.model, k, v)
            window = self.model._stats_window_size
            if state.get("ep_info_buffer") is not None:
                self.model.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=window)
                self.model.ep_success_buffer = deque(state.get("ep_success_buffer") or [], maxlen=window)
            self._pending_log = state.get("pending_log")
            if state.get("action_space_rng") is not None:
                self.model.action_space.np_random.bit_generator.state = state["action_space_rng"]
            self._load_extra(d, state)
        arrays_path = d / "sb3_arrays.npz"
        if arrays_path.is_file():
            with np.load(arrays_path, allow_pickle=False) as z:
                if "last_obs" in z:
                    self.model._last_obs = z["last_obs"].copy()
                if "last_episode_starts" in z:
                    self.model._last_episode_starts = z["last_episode_starts"].copy()
        self.env_steps = int(self.model.num_timesteps)

    def _load_extra(self, d: Path, state: dict[str, Any]) -> None:
        pass


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


class PPOAgent(SB3Agent):
    """PPO (SB3) on the split-point MDP; see `PPOConfig`."""

    kind = "ppo"
    algo = PPO
    config_cls = PPOConfig
    algo_fields = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
                   "clip_range_vf", "normalize_advantage", "ent_coef", "vf_coef", "max_grad_norm", "target_kl")


class A2CAgent(SB3Agent):
    """A2C (SB3) on the split-point MDP; see `A2CConfig`."""

    kind = "a2c"
    algo = A2C
    config_cls = A2CConfig
    algo_fields = ("learning_rate", "n_steps", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm",
                   "use_rms_prop", "rms_prop_eps", "normalize_advantage")


class DQNAgent(SB3Agent):
    """DQN (SB3) on the split-point MDP; see `DQNConfig`. Checkpoints include the replay buffer
    (``replay_buffer.npz``) and the target-update counter, so resumed training is exact."""

    kind = "dqn"
    algo = DQN
    config_cls = DQNConfig
    _COUNTERS = SB3Agent._COUNTERS + ("_n_calls", "exploration_rate")
    _BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

    algo_fields = ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma", "gradient_steps",
                   "target_update_interval", "exploration_fraction", "exploration_initial_eps",
                   "exploration_final_eps", "max_grad_norm")

    def _algo_kwargs(self) -> dict[str, Any]:
        return {**super()._algo_kwargs(), "train_freq": (self.config.train_freq, "step")}  # SB3 takes (n, unit)

    def save_artifacts(self, directory: Path) -> None:
        super().save_artifacts(directory)
        rb = self.model.replay_buffer
        n = rb.buffer_size if rb.full else rb.pos
        arrays = {k: getattr(rb, k)[:n] for k in self._BUFFER_ARRAYS if getattr(rb, k, None) is not None}
        with open(Path(directory) / "replay_buffer.npz", "wb") as f:
            np.savez(f, pos=np.int64(rb.pos), full=np.bool_(rb.full), **arrays)

    def _load_extra(self, d: Path, state: dict[str, Any]) -> None:
        path = d / "replay_buffer.npz"
        if not path.is_file():
            return
        rb = self.model.replay_buffer
        with np.load(path, allow_pickle=False) as z:
            for k in self._BUFFER_ARRAYS:
                if k in z and getattr(rb, k, None) is not None:
                    src = z[k]
                    if src.shape[1:] != getattr(rb, k).shape[1:] or len(src) > rb.buffer_size:
                        raise UsageError(f"{path}: {k} has shape {src.shape}, the buffer holds {getattr(rb, k).shape}")
                    getattr(rb, k)[: len(src)] = src
            rb.pos = int(z["pos"])
            rb.full = bool(z["full"])
