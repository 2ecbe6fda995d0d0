"""PPO trained on a learned surrogate of the split-point MDP (the Chen et al.-style "seed" agent).

``learn(env, n)`` has two phases:

1. **Real phase** — spend at most ``real_budget`` real evaluations (over all ``learn`` calls; at
   most ``n`` in this call) in ``env``, collecting (split, SNR, log_ppl_ratio) cells with the
   model-based agent's acquisition (`splitrl.agents.mbrl.MBRLAgent.learn`: random warm-up, then
   `splitrl.surrogate.propose` — or random throughout with ``explore: random``). Every one of these
   steps is counted in ``real_evaluations``; the trainer's callback sees them as env steps.
2. **Surrogate phase** — once the budget is spent: fit the surrogate on all cells, build a
   `splitrl.surrogate.env.SurrogateEnv` with the *same* `SplitPointConfig` as ``env`` (its quality
   model tabulated on an SNR grid so a step does not call scikit-learn), and train SB3 PPO on it
   for ``surrogate_steps`` steps. These steps are free: ``real_evaluations`` does not grow.

``act`` is the PPO policy's (deterministic) action on the real env's observation: the surrogate
env has the same observation and action spaces. ``learns = True``. Persistence: ``agent.json``
(counters, config, phase), ``evaluations.json`` (the measured cells), ``surrogate.json`` (data + seed, refitted on load)
(`Surrogate.save`, SHA-256 checked on load) and ``ppo/`` (`PPOAgent` artefacts: SB3 zip + JSON).

Not supported: resuming *inside* the surrogate phase (a checkpoint taken during the real phase
resumes the real phase exactly, as `MBRLAgent` does; the surrogate phase runs uninterrupted).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from splitrl.agents.base import Agent, StepCallback, problem_of
from splitrl.agents.config import build, documented, param, validate
from splitrl.agents.mbrl import MBRLAgent, MBRLConfig
from splitrl.agents.sb3 import PPOAgent, PPOConfig
from splitrl.models import load_model
from splitrl.surrogate import SURROGATE_KINDS
from splitrl.surrogate.env import SurrogateEnv
from splitrl.errors import UsageError

__all__ = ["PPOSurrogateConfig", "PPOSurrogateAgent"]

_VIEWS: dict[str, Any] = {}


def _ppo_default() -> PPOConfig:
    return PPOConfig(n_steps=1024, gamma=0.95)


@documented
@dataclass
class PPOSurrogateConfig:
    """PPO-on-surrogate settings: the real-evaluation budget, the surrogate, and PPO itself."""

    real_budget: int = param(200, "real evaluations spent collecting (split, SNR, log_ppl_ratio) cells", low=2)
    surrogate_steps: int = param(50_000, "PPO steps on the surrogate env (free: no real evaluations)", low=0)
    surrogate_kind: str = param("extratrees", "splitrl.surrogate.SURROGATE_KINDS key",
                                choices=("extratrees", "gbr", "gp", "mlp"))
    explore: str = param("active", "acquisition: active (splitrl.surrogate.propose after warm-up) or random",
                         choices=("active", "random"))
    warmup_evaluations: int = param(20, "random-split evaluations before active acquisition starts", low=2)
    refit_every: int = param(10, "refit the surrogate after this many new evaluations while acquiring", low=1)
    beta: float = param(2.0, "width (stds) of the confidence bounds used by active acquisition", low=0)
    snr_grid_step_db: float = param(0.25, "SNR step of the tabulated surrogate the PPO env interpolates", low=0, low_open=True)
    surrogate_episode_steps: int = param(256, "episode length of the surrogate env (TimeLimit)", low=1)
    ppo: PPOConfig = param(doc="PPO hyper-parameters (PPOConfig fields)", default_factory=_ppo_default)

    def __post_init__(self) -> None:
        if isinstance(self.ppo, dict):
            self.ppo = build(PPOConfig, self.ppo, where="ppo.")
        validate(self)
        if self.surrogate_kind not in SURROGATE_KINDS:
            raise UsageError(f"PPOSurrogateConfig.surrogate_kind must be one of {', '.join(SURROGATE_KINDS)}, "
                             f"got {self.surrogate_kind!r}")


def _view_for(env_u: Any, model: str):
    """The model view behind ``env_u``'s cost model: the real-evaluation env's loaded model, else
    ``model`` loaded once per name."""
    loaded = getattr(env_u, "loaded", None)
    if loaded is not None:
        return loaded.view
    name = model
    if name not in _VIEWS:
        _VIEWS[name] = load_model(name).view
    return _VIEWS[name]


def _tabulated_surrogate_env(surrogate, config, view, step_db: float, ppl_clean: float):
    """A `SurrogateEnv` whose quality is the surrogate's mean tabulated on an SNR grid over its
    training range and interpolated linearly (clipped to the range, like `SurrogateEnv`)."""
    class _Tabulated(SurrogateEnv):
        def __init__(self) -> None:
            super().__init__(surrogate, config, view=view, ppl_clean=ppl_clean)
            lo, hi = surrogate.spec.snr_range
            n = max(2, int(np.ceil((hi - lo) / step_db)) + 1)
            self._grid = np.linspace(lo, hi, n)
            L = self.L
            cells = ([config.transport] * (n * (L + 1)), np.tile(np.arange(L + 1), n), np.repeat(self._grid, L + 1))
            self._q = np.asarray(surrogate.predict(cells), float).reshape(n, L + 1)

        def predicted_quality(self, snr_db: float) -> np.ndarray:
            g = self._grid
            x = float(np.clip(float(snr_db), g[0], g[-1]))
            if len(g) == 1 or g[-1] == g[0]:
                return self._q[0]
            pos = (x - g[0]) / (g[1] - g[0])
            i = min(int(pos), len(g) - 2)
            w = pos - i
            return (1 - w) * self._q[i] + w * self._q[i + 1]

    return _Tabulated()


class PPOSurrogateAgent(Agent):
    """PPO trained on a surrogate fitted from ``real_budget`` real evaluations (see module doc)."""

    kind = "ppo-surrogate"
    learns = True

    def __init__(self, env: gym.Env, config: PPOSurrogateConfig | None = None, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config if config is not None else PPOSurrogateConfig()
        if not isinstance(self.config, PPOSurrogateConfig):
            raise TypeError(f"PPOSurrogateAgent needs a PPOSurrogateConfig, got {type(self.config).__name__}")
        self.seed = int(seed)
        c = self.config
        # The acquisition machinery (and the measured cells) live in an MBRL agent we never act with.
        self.collector = MBRLAgent(env, MBRLConfig(
            surrogate_kind=c.surrogate_kind, warmup_evaluations=c.warmup_evaluations, refit_every=c.refit_every,
            beta=c.beta, explore=c.explore, eval_threshold=0.0), seed=self.seed)
        self.policy = PPOAgent(env, c.ppo, seed=self.seed)
        self.surrogate_env_steps = 0
        self.trained = False
        self.show_progress = False  # the trainer turns it on with its own progress bar

    @property
    def surrogate(self):
        return self.collector.surrogate

    # --- acting / learning -------------------------------------------------------------------
    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        return self.policy.act(obs, deterministic=deterministic)

    def learn(self, env: gym.Env, total_steps: int, *, callback: StepCallback | None = None) -> "PPOSurrogateAgent":
        """Real phase (at most ``min(total_steps, budget left)`` real evaluations), then — when the
        budget is spent and the policy is not yet trained — the surrogate phase (module doc)."""
        left = self.config.real_budget - self.collector.real_evaluations
        n = max(0, min(int(total_steps), left))
        if n:
            before = self.collector.real_evaluations
            self.collector.learn(env, n, callback=callback)
            self.real_evaluations = self.collector.real_evaluations
            self.env_steps = self.collector.env_steps
            if self.collector.real_evaluations - before < n:  # interrupted by the callback
                return self
        if self.collector.real_evaluations >= self.config.real_budget and not self.trained:
            self._train_on_surrogate(env)
        return self

    def _train_on_surrogate(self, env: gym.Env) -> None:
        col = self.collector
        if col.surrogate is None or col._since_fit:
            col._fit()
        e, config = env.unwrapped, problem_of(env).config
        senv = _tabulated_surrogate_env(col.surrogate, config, _view_for(e, config.model), self.config.snr_grid_step_db,
                                        float(e.ppl_clean))
        senv = gym.wrappers.TimeLimit(senv, max_episode_steps=self.config.surrogate_episode_steps)
        if self.config.surrogate_steps > 0:
            # This phase makes no real evaluation and is not part of the requested env steps: its
            # own progress bar, so an outer bar at 100% is not mistaken for a hang.
            from tqdm.auto import tqdm

            bar = tqdm(total=self.config.surrogate_steps, desc="ppo-surrogate: PPO on the surrogate", unit="step",
                       leave=False, mininterval=0.5, disable=not self.show_progress)
            try:
                self.policy.learn(senv, self.config.surrogate_steps, callback=lambda d: bar.update(1) and None)
            finally:
                bar.close()
        self.surrogate_env_steps = int(self.policy.model.num_timesteps)
        self.policy.real_evaluations = 0
        self.trained = True

    def learning_progress(self) -> tuple[int, ...]:
        return (*super().learning_progress(), int(self.trained), int(self.surrogate_env_steps))

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seed": self.seed, "config": asdict(self.config), "trained": self.trained,
                "surrogate_env_steps": self.surrogate_env_steps, "collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.trained = bool(state.get("trained", False))
        self.surrogate_env_steps = int(state.get("surrogate_env_steps", 0))
        if "collector" in state:
            self.collector.load_state_dict(state["collector"])

    def save_artifacts(self, directory: Path) -> None:
        d = Path(directory)
        self.collector.save_artifacts(d)  # evaluations.json + surrogate.json (refitted on load, no pickle)
        (d / "ppo").mkdir(exist_ok=True)
        self.policy.save_artifacts(d / "ppo")

    def load_artifacts(self, directory: Path) -> None:
        d = Path(directory)
        if not (d / "evaluations.json").is_file():
            raise FileNotFoundError(f"{d / 'evaluations.json'} not found: not a ppo-surrogate checkpoint")
        self.collector.load_artifacts(d)
        self.policy.load_artifacts(d / "ppo")


def config_from_state(state: dict[str, Any]) -> PPOSurrogateConfig:
    """The config saved in an ``agent.json`` state (for loading without a run config)."""
    raw = dict(state.get("config") or {})
    return build(PPOSurrogateConfig, raw)

