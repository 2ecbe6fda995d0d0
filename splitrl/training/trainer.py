"""The trainer behind ``train.py``: builds env and agent from a `RunConfig`, learns, logs, evaluates,
checkpoints, resumes.

Determinism and resume
----------------------
A run is a deterministic function of its config (seed included) given a fixed torch thread count
(``train.torch_threads``; SB3 agents also fix theirs while learning). Checkpoints are taken only at
agent *boundaries* (`splitrl.agents.hooks`): PPO/A2C after each update (every ``n_steps``), DQN
every ``train_freq`` steps, baselines after any step — points where nothing is half done. A
checkpoint holds the agent (weights, optimizer, counters, replay buffer, pending SB3 log records),
the training env's mutable state (`splitrl.training.state`), the global Python/NumPy/torch RNG
states and the trainer's own counters. `Trainer.resume` rebuilds everything from the saved config
in the same order as a fresh run, loads the checkpoint over it, restores the RNG states last and
continues to the same ``total_steps``: the result (weights, actions, logged training curve) is
identical to the uninterrupted run's. ``time/fps`` and wall times differ, nothing else.
"""
from __future__ import annotations

import inspect
import json
import random
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError

from splitrl.agents.base import Agent
from splitrl.agents.config import ConfigError
from splitrl.errors import UsageError
from splitrl.agents.registry import make_agent
from splitrl.models import load_model
from splitrl.training.checkpoint import CheckpointError, RunLock, latest_checkpoint, read_manifest, write_checkpoint
from splitrl.training.config import RunConfig, env_class, env_fields
from splitrl.training.evaluation import Evaluator
from splitrl.training.logger import RunLogger, flatten
from splitrl.yamlio import load_yaml_file
from splitrl.training.state import capture_env_state, restore_env_state, rng_state, set_rng_state

__all__ = ["Trainer", "TrainResult", "make_env"]


@dataclass
class TrainResult:
    """What a `Trainer.train` call did."""

    steps: int
    completed: bool
    checkpoint: Path | None
    episode_rewards: list[float] = field(default_factory=list)
    last_eval: dict[str, float] | None = None


def make_env(config: RunConfig, *, env_id: str | None = None, max_episode_steps: int | None = None,
             models: dict[str, Any] | None = None) -> gym.Env:
    """``gym.make`` of the run's env with its SplitPointConfig; the LM is loaded once per name and
    shared through ``models`` (a cache dict)."""
    env_id = env_id or config.env_id
    cfg_cls, _ = env_fields(env_id)
    names = set(cfg_cls.__dataclass_fields__)
    sp = cfg_cls(**{k: v for k, v in config.env.items() if k in names})
    kwargs: dict[str, Any] = {k: v for k, v in config.env.items() if k not in names}  # the env's own extras
    params = inspect.signature(env_class(env_id)).parameters
    kwargs["config"] = sp
    if "view" in params or "loaded" in params:
        cache = models if models is not None else {}
        if sp.model not in cache:
            cache[sp.model] = load_model(sp.model)
        if "loaded" in params:
            kwargs["loaded"] = cache[sp.model]
        else:
            kwargs["view"] = cache[sp.model].view
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    try:
        return gym.make(env_id, **kwargs)
    except UsageError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        # The env refused its configuration (e.g. s_min beyond the model's layers): one line naming
        # it, without gymnasium's appended dump of every constructor argument.
        msg = str(e).split(" was raised from the environment creator")[0]
        raise ConfigError(f"env ({env_id}): {' '.join(msg.split())[:300]}") from None


class _Callback:
    """The `StepCallback` (+ hooks) the trainer hands to ``agent.learn``."""

    def __init__(self, trainer: "Trainer") -> None:
        self.t = trainer

    def __call__(self, d: dict[str, Any]) -> bool:
        return self.t._on_step(d)

    def on_boundary(self, step: int) -> bool:
        return self.t._on_boundary(step)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.t.logger.scalars(values, step)


class Trainer:
    """Runs one training run (see the module docstring); `train` learns until ``total_steps``."""

    def __init__(self, config: RunConfig, run: str, *, runs_dir: str | Path = "runs",
                 checkpoints_dir: str | Path = "checkpoints", progress: bool = True,
                 _resume_from: Path | None = None, _lock: RunLock | None = None) -> None:
        self.config = config
        self.run = run
        self.run_dir = Path(runs_dir) / run
        self.ckpt_dir = Path(checkpoints_dir) / run
        self.progress_enabled = progress
        # One writer per run: a new run creates its checkpoint folder atomically, every writer
        # holds its lock until close() (a second `train.py --run X` gets one line, exit 2).
        self._lock = _lock if _lock is not None else RunLock(self.ckpt_dir, new=_resume_from is None)
        try:
            self._setup(config, _resume_from)
        except BaseException:
            self._lock.release()
            if _resume_from is None and [p.name for p in self.ckpt_dir.iterdir()] == [".lock"]:
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # nothing written: leave no run behind
            raise

    def _setup(self, config: RunConfig, _resume_from: Path | None) -> None:
        c, tc = config, config.train
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(tc.torch_threads)
        random.seed(c.seed)
        np.random.seed(c.seed % 2**32)
        torch.manual_seed(c.seed)
        self._models: dict[str, Any] = {}
        self.env = self._make_train_env()
        self.env_u = self.env.unwrapped
        spec_steps = self.env.spec.max_episode_steps if self.env.spec is not None else None
        eval_env, real_eval = self._make_eval_env()
        eval_steps = tc.eval_steps or tc.max_episode_steps or spec_steps or 256
        self.agent: Agent = make_agent(c.kind, self.env, c.agent, seed=c.seed)
        if real_eval:
            n = tc.eval_episodes * eval_steps
            self._note(f"evaluating on {real_eval}: {n} real perplexity evaluations per evaluation "
                       f"({tc.eval_episodes} episodes x {eval_steps} steps), plus as many once up front for the "
                       "oracle reference where a sweep table gives one; progress is shown")
        self.evaluator = Evaluator(eval_env, episodes=tc.eval_episodes, steps=eval_steps, seed0=tc.eval_seed,
                                   reward_floor=tc.reward_floor, feedback=tc.eval_feedback,
                                   progress=bool(real_eval) and self.progress_enabled)
        # trainer state (checkpointed)
        self.step = 0
        self.next_eval = tc.eval_every if tc.eval_every else None
        self.next_checkpoint = tc.checkpoint_every
        self.last_checkpoint_step = -1
        self.last_eval_step = -1
        self.ep_reward, self.ep_len = 0.0, 0
        self.hist_window: list[int] = []
        self.obs: np.ndarray | None = None  # baselines' rollout loop
        self.last_eval: dict[str, float] | None = None
        # the agent's learning_progress() at the last evaluation / checkpoint (not checkpointed:
        # after a resume they are unknown, and the final evaluation and checkpoint are redone)
        self._eval_progress: tuple | None = None
        self._ckpt_progress: tuple | None = None
        self.episode_rewards: list[float] = []
        self._stop_at: int | None = None
        self._interrupted = False
        self._stopped = False
        self._pbar = None
        purge = None
        if _resume_from is not None:
            purge = self._load(_resume_from) + 1
        self.logger = RunLogger(self.run_dir, purge_step=purge)
        if _resume_from is None:
            self.logger.text("config", "    " + config.to_yaml().replace("\n", "\n    "))
            self.logger.hparams({"kind": c.kind, "env_id": c.env_id, "seed": c.seed,
                                 **flatten({"agent": c.to_dict()["agent"], "train": c.to_dict()["train"], "env": c.env})},
                                ["eval/regret_vs_oracle", "eval/return", "rollout/ep_reward"])
        self._callback = _Callback(self)

    # --- construction --------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        """A one-line notice on stderr about what the run will do (not an error)."""
        import sys

        print(f"train.py: note: {text}", file=sys.stderr)

    def _make_eval_env(self) -> tuple[gym.Env, str]:
        """(evaluation env, its id if every step of it is a real perplexity evaluation, else "").

        The reference evaluation is explicit and cheap by default: a run on the real env
        (``splitrl/SplitPoint-v0``) is evaluated on the measured table env of the same
        configuration unless ``train.eval_env_id`` names the real env; without a table for this
        configuration it falls back to the real env, says so, and shows progress."""
        c, tc = self.config, self.config.train
        real = "splitrl/SplitPoint-v0"
        eval_id = tc.eval_env_id
        if eval_id is None and c.env_id == real:
            try:
                env = make_env(c, env_id="splitrl/SplitPointTable-v0", models=self._models)
                self._note("evaluating on splitrl/SplitPointTable-v0 (the measured sweep table of this configuration: "
                           f"no real evaluations); set train.eval_env_id={real} to evaluate with real perplexity runs")
                return env, ""
            except UsageError as e:
                self._note(f"no sweep table for this configuration ({str(e)[:160]}...); evaluating on the real env")
                eval_id = real
        env = make_env(c, env_id=eval_id, models=self._models)
        return env, (eval_id or c.env_id) if (eval_id or c.env_id) == real else ""

    def _make_train_env(self) -> gym.Env:
        from stable_baselines3.common.monitor import Monitor

        return Monitor(make_env(self.config, max_episode_steps=self.config.train.max_episode_steps, models=self._models))

    @classmethod
    def resume(cls, run: str, *, runs_dir: str | Path = "runs", checkpoints_dir: str | Path = "checkpoints",
               total_steps: int | None = None, progress: bool = True) -> "Trainer":
        """Continue run ``run`` from ``checkpoints/<run>/latest`` (optionally to a new ``total_steps``)."""
        lock = RunLock(Path(checkpoints_dir) / run, new=False)
        try:
            ckpt = latest_checkpoint(Path(checkpoints_dir) / run)
            config = RunConfig.from_dict(load_yaml_file(ckpt / "config.yaml", what="checkpoint config"))
            if total_steps is not None:
                config.train.total_steps = int(total_steps)
            return cls(config, run, runs_dir=runs_dir, checkpoints_dir=checkpoints_dir, progress=progress,
                       _resume_from=ckpt, _lock=lock)
        except BaseException:
            lock.release()
            raise

    # --- checkpoints ---------------------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "next_eval": self.next_eval, "next_checkpoint": self.next_checkpoint,
                "last_checkpoint_step": self.step, "last_eval_step": self.last_eval_step,
                "ep_reward": self.ep_reward, "ep_len": self.ep_len, "hist_window": self.hist_window,
                "last_eval": self.last_eval}

    def checkpoint(self) -> Path:
        """Write a checkpoint of the current (boundary) state atomically; returns its folder."""
        def fill(d: Path) -> None:
            (d / "config.yaml").write_text(self.config.to_yaml())
            self.agent.save(d / "agent")
            record, arrays = capture_env_state(self.env)
            (d / "env_state.json").write_text(json.dumps(record))
            with open(d / "env_arrays.npz", "wb") as f:
                np.savez(f, **arrays)
            rng, torch_rng = rng_state()
            (d / "rng.json").write_text(json.dumps(rng))
            from safetensors.torch import save_file

            save_file({"cpu": torch_rng.contiguous()}, str(d / "torch_rng.safetensors"))
            (d / "trainer.json").write_text(json.dumps(self._trainer_state(), indent=1))
            with open(d / "trainer_arrays.npz", "wb") as f:
                np.savez(f, **({"obs": np.asarray(self.obs)} if self.obs is not None else {}))

        path = write_checkpoint(self.ckpt_dir, self.step, fill, keep=self.config.train.keep_checkpoints,
                                meta={"run": self.run, "kind": self.config.kind, "env_id": self.config.env_id})
        self.last_checkpoint_step = self.step
        self._ckpt_progress = self.agent.learning_progress()
        self.logger.flush()
        return path

    def _load(self, ckpt: Path) -> int:
        try:
            return self._load_unchecked(ckpt)
        except UsageError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, OSError, RuntimeError, EOFError, SafetensorError) as e:
            raise CheckpointError(f"{ckpt}: cannot restore the run: {type(e).__name__}: {str(e)[:200]}") from None

    def _load_unchecked(self, ckpt: Path) -> int:
        manifest = read_manifest(ckpt)
        if manifest.get("kind") != self.config.kind:
            raise CheckpointError(f"{ckpt} holds a {str(manifest.get('kind'))[:40]!r} run, not {self.config.kind!r}")
        self.agent.load(ckpt / "agent")
        record = json.loads((ckpt / "env_state.json").read_text())
        with np.load(ckpt / "env_arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        restore_env_state(self.env, record, arrays)
        st = json.loads((ckpt / "trainer.json").read_text())
        self.step = int(st["step"])
        self.next_eval, self.next_checkpoint = st["next_eval"], int(st["next_checkpoint"])
        self.last_checkpoint_step, self.last_eval_step = int(st["last_checkpoint_step"]), int(st["last_eval_step"])
        self.ep_reward, self.ep_len = float(st["ep_reward"]), int(st["ep_len"])
        self.hist_window = [int(x) for x in st["hist_window"]]
        self.last_eval = st.get("last_eval")
        with np.load(ckpt / "trainer_arrays.npz", allow_pickle=False) as z:
            self.obs = z["obs"].copy() if "obs" in z.files else None
        from safetensors.torch import load_file

        set_rng_state(json.loads((ckpt / "rng.json").read_text()), load_file(str(ckpt / "torch_rng.safetensors"))["cpu"])
        return self.step

    # --- per step / boundary ---------------------------------------------------------------------
    def _on_step(self, d: dict[str, Any]) -> bool:
        tc = self.config.train
        self.step += 1  # counted here: agents' "step" keys need not be global
        info = d.get("info") or {}
        r = float(d["reward"])
        self.ep_reward += r if r >= tc.reward_floor else tc.reward_floor
        self.ep_len += 1
        split = info.get("split")
        if split is not None:
            self.hist_window.append(int(split))
        if self.step % tc.log_every == 0:
            if "snr_db" in info:
                self.logger.scalar("channel/snr_db", info["snr_db"], self.step)
            if split is not None:
                self.logger.scalar("split/chosen", split, self.step)
            self.logger.scalar("cost/real_evaluations", self.agent.real_evaluations, self.step)
        if len(self.hist_window) >= tc.histogram_every:
            self._flush_histogram()
        if d.get("done") or d.get("terminated") or d.get("truncated"):
            self.logger.scalar("rollout/ep_reward", self.ep_reward, self.step)
            self.logger.scalar("rollout/ep_len", self.ep_len, self.step)
            self.episode_rewards.append(self.ep_reward)
            if self._pbar is not None:
                self._pbar.set_postfix(ep_reward=f"{self.ep_reward:.3g}", refresh=False)
            self.ep_reward, self.ep_len = 0.0, 0
        if self.next_eval is not None and self.step >= self.next_eval:
            self.evaluate()
            every = tc.eval_every
            self.next_eval = (self.step // every + 1) * every
        if self._pbar is not None:
            self._pbar.update(self.step - self._pbar.n)
        return True

    def _flush_histogram(self) -> None:
        if self.hist_window:
            self.logger.histogram("split/histogram", self.hist_window, self.step, lo=self.env_u.config.s_min, hi=self.env_u.L)
            self.hist_window = []

    def evaluate(self) -> dict[str, float]:
        """Evaluate the agent now on the held-out seeds; logs ``eval/*`` at the current step."""
        metrics = self.evaluator(self.agent)
        self.logger.scalars(metrics, self.step)
        self.last_eval, self.last_eval_step = metrics, self.step
        self._eval_progress = self.agent.learning_progress()
        if self._pbar is not None and "eval/regret_vs_oracle" in metrics:
            self._pbar.set_postfix(regret=f"{metrics['eval/regret_vs_oracle']:.3g}", refresh=False)
        return metrics

    def _on_boundary(self, step: int) -> bool:
        self.step = int(step)
        if step == self.last_checkpoint_step:
            return True
        stop = self._interrupted or (self._stop_at is not None and step >= self._stop_at)
        if stop or step >= self.next_checkpoint:
            every = self.config.train.checkpoint_every
            self.next_checkpoint = (step // every + 1) * every
            self.checkpoint()
        if stop:
            self._stopped = True
            return False
        return True

    # --- the loop ---------------------------------------------------------------------------------
    def _rollout_loop(self, steps: int) -> None:
        """Roll a non-learning agent out for ``steps`` steps (logs like learning; boundary after each step)."""
        env, agent = self.env, self.agent
        if self.obs is None:
            self.obs, _ = env.reset(seed=self.config.seed)
            agent.reset()
        end = self.step + steps
        while self.step < end:
            obs = self.obs
            a = agent.act(obs, deterministic=True)
            nxt, r, terminated, truncated, info = env.step(a)
            agent.feedback(info)
            agent.env_steps = self.step + 1
            d = {"step": self.step + 1, "obs": obs, "action": int(a), "reward": float(r), "next_obs": nxt,
                 "terminated": bool(terminated), "truncated": bool(truncated), "done": bool(terminated or truncated),
                 "info": info}
            if terminated or truncated:
                self.obs, _ = env.reset()
                agent.reset()
            else:
                self.obs = nxt
            if self._callback(d) is False or not self._callback.on_boundary(self.step):
                break

    def train(self, *, stop_at: int | None = None) -> TrainResult:
        """Learn until ``train.total_steps`` (or stop at the first boundary at/after ``stop_at`` env
        steps, after checkpointing there — as an interruption would). SIGINT/SIGTERM also stop at the
        next boundary with a checkpoint."""
        tc = self.config.train
        self._stop_at, self._stopped = stop_at, False
        remaining = tc.total_steps - self.step
        handlers = self._install_signal_handlers()
        try:
            from tqdm.auto import tqdm

            total = tc.total_steps
            if remaining > 0:
                total = max(total, self._announce_rounding(remaining))
            if hasattr(self.agent, "show_progress"):
                self.agent.show_progress = self.progress_enabled
            self._pbar = tqdm(total=total, initial=self.step, disable=not self.progress_enabled,
                              desc=self.run, unit="step", dynamic_ncols=True, mininterval=0.5)
            if remaining > 0:
                if getattr(self.agent, "learns", True):
                    self.agent.learn(self.env, remaining, callback=self._callback)
                else:
                    self._rollout_loop(remaining)
            completed = not self._stopped
            if completed:
                self.step = max(self.step, int(self.agent.env_steps))
                self._flush_histogram()
                # Also when the step count did not move but the agent did (learning after its last
                # env step, e.g. ppo-surrogate's surrogate phase): report and keep the final policy.
                progress = self.agent.learning_progress()
                if self.last_eval_step != self.step or self._eval_progress != progress:
                    if self._pbar is not None:
                        self._pbar.set_description(f"{self.run}: final evaluation", refresh=True)
                    self.evaluate()
                if self.last_checkpoint_step != self.step or self._ckpt_progress != progress:
                    self.checkpoint()
            self.logger.flush()
        finally:
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None
            self._restore_signal_handlers(handlers)
        latest = self.ckpt_dir / "latest"
        return TrainResult(steps=self.step, completed=completed, checkpoint=latest if latest.exists() else None,
                           episode_rewards=list(self.episode_rewards), last_eval=self.last_eval)

    def _announce_rounding(self, remaining: int) -> int:
        """Say when the algorithm will not run exactly the requested steps (one note line); returns
        the env step count the run will end at."""
        a, tc = self.agent, self.config.train
        n_steps = getattr(getattr(a, "config", None), "n_steps", None)
        if self.config.kind in ("ppo", "a2c") and n_steps:
            done = int(getattr(a, "env_steps", 0))
            end = done + -(-remaining // n_steps) * n_steps  # SB3 finishes whole rollouts
            if end != tc.total_steps:
                self._note(f"{self.config.kind} learns in rollouts of agent.n_steps={n_steps} steps: "
                           f"train.total_steps={tc.total_steps} runs as {end} steps")
            return end
        elif self.config.kind == "ppo-surrogate":
            c = a.config
            real = min(tc.total_steps, c.real_budget)
            self._note(f"ppo-surrogate: {real} real evaluations (agent.real_budget={c.real_budget}, capped by "
                       f"train.total_steps), then {c.surrogate_steps} PPO steps on the surrogate (no real evaluations; "
                       "not counted in train.total_steps, shown by their own progress bar)")
        return tc.total_steps

    def close(self) -> None:
        """Close the log and the env; restore the process's torch thread count; free the run."""
        try:
            self.logger.close()
            self.env.close()
            torch.set_num_threads(self._threads_before)
        finally:
            self._lock.release()

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {}

        def handler(signum, frame):
            if self._interrupted:  # second signal: give up at once
                raise KeyboardInterrupt
            self._interrupted = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        return old

    @staticmethod
    def _restore_signal_handlers(old) -> None:
        if old:
            for sig, h in old.items():
                signal.signal(sig, h)
