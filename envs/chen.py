"""The Chen et al. layer-split MDP, reproduced on our runtime (``splitrl/ChenLayerSplit-v0``).

Reference: Y. Chen et al., "Adaptive Layer Splitting for Wireless LLM Inference in Edge
Computing: A Model-Based Reinforcement Learning Approach", arXiv:2406.02616, and its code
(GitHub ``Kanra13-ch/adaptive_layersplit``: ``train.py`` — the absolute-action environment with a
real perplexity reward; ``train__rsm.py`` — the 9-way relative-action environment; ``add_noise.py``
— the dropout "channel" and the perplexity routine). `ChenLayerSplitEnv` keeps that MDP (state,
actions, drift, reward, 5-step episodes) and fixes the reference's bugs; every difference is
listed in the class docstring.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.eval import PerplexityConfig, PerplexityEvaluator
from splitrl.link import DropoutLink
from splitrl.models import load_model
from splitrl.errors import UsageError

__all__ = [
    "ACTION_MODES", "REFERENCE_INIT", "ChenConfig", "ChenLayerSplitEnv", "drift_factor", "relative_moves",
    "relative_step",
]

ACTION_MODES = ("absolute", "relative")

#: The reference's reset law per action mode: (noise range, inclusive split range).
#: absolute (train.py): ``np.random.uniform(0.08, 0.22)``, ``np.random.randint(3, 7)`` -> 3..6;
#: relative (train__rsm.py): ``np.random.uniform(0.01, 0.3)``, ``np.random.randint(1, 10)`` -> 1..9.
REFERENCE_INIT: dict[str, tuple[tuple[float, float], tuple[int, int]]] = {
    "absolute": ((0.08, 0.22), (3, 6)),
    "relative": ((0.01, 0.3), (1, 9)),
}


def relative_moves(max_move: int = 4) -> np.ndarray:
    """Split change of each relative action: ``[0, -1, +1, -2, +2, ..., -max_move, +max_move]``.

    The reference's order (``train__rsm.py``, ``Discrete(9)``): action 0 stays, odd action
    ``2k-1`` moves the split down ``k`` layers (toward the UE), even action ``2k`` moves it up ``k``.
    """
    out = [0]
    for k in range(1, int(max_move) + 1):
        out += [-k, k]
    return np.asarray(out, dtype=np.int64)


def relative_step(split: int, action: int, max_split: int = 10, max_move: int = 4) -> int:
    """Split after relative ``action`` from ``split``: the move of `relative_moves`, clipped to ``1..max_split``.

    At ``max_split = 10`` this is exactly the reference's remapping table (e.g. from split 2 a
    "down 3" becomes "down 1"; from 10 any "up" becomes "stay").
    """
    moves = relative_moves(max_move)
    if not 0 <= int(action) < len(moves):
        raise UsageError(f"relative action must be in 0..{len(moves) - 1}, got {action!r}")
    return int(np.clip(int(split) + int(moves[int(action)]), 1, int(max_split)))


def drift_factor(move: int, mode: str, drift_step: float = 0.0005, reference_typo: bool = False) -> float:
    """Multiplicative noise drift of a split change of ``move`` layers (the move actually made).

    * ``absolute`` (``train.py``): only the direction counts — ``1 - drift_step`` when the split
      moves up (more layers on the UE), ``1 + drift_step`` when it moves down, 1 when it stays.
    * ``relative`` (``train__rsm.py``): ``1 - drift_step * move`` (e.g. +2 -> 0.999, -4 -> 1.002).
      The reference uses 0.9995 for +3 (a copy-paste slip of the +1 factor); ``reference_typo``
      reproduces it.
    """
    move = int(move)
    if mode == "absolute":
        return 1.0 - drift_step * float(np.sign(move))
    if mode != "relative":
        raise UsageError(f"mode must be one of {', '.join(ACTION_MODES)}, got {mode!r}")
    if reference_typo and move == 3:
        return 1.0 - drift_step
    return 1.0 - drift_step * move


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


@dataclass
class ChenConfig:
    """Configuration of `ChenLayerSplitEnv`. Defaults reproduce the reference MDP.

    Attributes:
        model: model name or path for `splitrl.models.load_model` (ignored when the env gets
            ``loaded=``). The reference used Llama-2-7B; we default to SmolLM2-135M (30 layers).
        action_mode: ``absolute`` (``Discrete(max_split)``, action ``a`` selects split ``a + 1``;
            reference ``train.py``) or ``relative`` (``Discrete(2 * max_move + 1)`` moves;
            reference ``train__rsm.py``).
        max_split: largest split, in layers (reference: 10); splits are ``1..max_split``.
            Must satisfy ``max_split + cut_offset <= L`` (checked against the model).
        max_move: largest relative move, in layers (reference: 4, i.e. 9 actions), >= 1.
        episode_steps: decisions per episode (reference: 5), >= 1.
        noise_max: upper clip of the dropout noise level (reference: 0.3), in (0, 1]; the lower clip is 0.
        init_noise_range: ``(low, high)`` of the uniform initial noise level, within ``[0, noise_max]``;
            None: the reference's law for the action mode (`REFERENCE_INIT`), clipped to ``noise_max``.
        init_split_range: inclusive ``(low, high)`` of the uniform initial split, within
            ``1..max_split``; None: the reference's range for the action mode, clipped to ``1..max_split``.
        drift_step: noise drift per move (reference: 0.0005), in [0, 0.1]; see `drift_factor`.
        reference_drift_typo: reproduce the reference's 0.9995 factor for a +3 relative move.
        inference_factor: weight of the perplexity term (reference: 10.5), >= 0.
        load_factor: weight of the load term (reference: 1), >= 0.
        cut_offset: extra layers on the UE beyond the split label: the dropout hits the hidden
            states entering layer ``split + cut_offset``. 0 (default): split ``s`` runs ``s`` layers on
            the UE (our runtime's convention); 1: the reference's cut (``if i == self.n`` after
            0-based layer ``n``, i.e. ``n + 1`` layers on the UE). >= 0.
        reuse_ppl_on_stay: when a step leaves the split unchanged (so the noise too), reuse the
            last measured perplexity instead of evaluating again (the reference's behaviour).
        terminate_at_horizon: report the 5-step cut as ``terminated`` (how SB3 read the reference's
            old-Gym ``done``) instead of ``truncated`` (default; see the env docstring).
        eval_tokens: WikiText-2 test tokens scored per evaluation, >= 2 (reference: 20-token windows).
        eval_window: tokens per forward pass, >= 2 (at most the model's positions).
        eval_stride: tokens between window starts, 1..eval_window; None: ``eval_window``.
    """

    model: str = "smollm2-135m"
    action_mode: str = "absolute"
    max_split: int = 10
    max_move: int = 4
    episode_steps: int = 5
    noise_max: float = 0.3
    init_noise_range: tuple[float, float] | None = None
    init_split_range: tuple[int, int] | None = None
    drift_step: float = 0.0005
    reference_drift_typo: bool = False
    inference_factor: float = 10.5
    load_factor: float = 1.0
    cut_offset: int = 0
    reuse_ppl_on_stay: bool = True
    terminate_at_horizon: bool = False
    eval_tokens: int = 256
    eval_window: int = 256
    eval_stride: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> UsageError:
            return UsageError(f"ChenConfig.{name} must be {allowed}, got {getattr(self, name)!r}")

        if not isinstance(self.model, str) or not self.model:
            raise bad("model", "a non-empty model name or path")
        if self.action_mode not in ACTION_MODES:
            raise bad("action_mode", f"one of {', '.join(map(repr, ACTION_MODES))}")
        if not _is_int(self.max_split) or self.max_split < 1:
            raise bad("max_split", "an int >= 1 (and <= L - cut_offset of the model)")
        if not _is_int(self.max_move) or self.max_move < 1:
            raise bad("max_move", "an int >= 1")
        if not _is_int(self.episode_steps) or self.episode_steps < 1:
            raise bad("episode_steps", "an int >= 1")
        if not _is_num(self.noise_max) or not 0.0 < self.noise_max <= 1.0:
            raise bad("noise_max", "a number in (0, 1]")
        if self.init_noise_range is not None:
            r = self.init_noise_range
            if (not isinstance(r, (tuple, list)) or len(r) != 2 or not all(_is_num(v) for v in r)
                    or not 0.0 <= r[0] <= r[1] <= self.noise_max):
                raise bad("init_noise_range", f"None or (low, high) with 0 <= low <= high <= noise_max={self.noise_max}")
            self.init_noise_range = (float(r[0]), float(r[1]))
        if self.init_split_range is not None:
            r = self.init_split_range
            if (not isinstance(r, (tuple, list)) or len(r) != 2 or not all(_is_int(v) for v in r)
                    or not 1 <= r[0] <= r[1] <= self.max_split):
                raise bad("init_split_range", f"None or ints (low, high) with 1 <= low <= high <= max_split={self.max_split}")
            self.init_split_range = (int(r[0]), int(r[1]))
        if not _is_num(self.drift_step) or not 0.0 <= self.drift_step <= 0.1:
            raise bad("drift_step", "a number in [0, 0.1]")
        for name in ("reference_drift_typo", "reuse_ppl_on_stay", "terminate_at_horizon"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        for name in ("inference_factor", "load_factor"):
            if not _is_num(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a finite number >= 0")
        if not _is_int(self.cut_offset) or self.cut_offset < 0:
            raise bad("cut_offset", "an int >= 0")
        if not _is_int(self.eval_tokens) or self.eval_tokens < 2:
            raise bad("eval_tokens", "an int >= 2")
        if not _is_int(self.eval_window) or self.eval_window < 2:
            raise bad("eval_window", "an int >= 2")
        if self.eval_stride is not None and (not _is_int(self.eval_stride) or not 1 <= self.eval_stride <= self.eval_window):
            raise bad("eval_stride", f"None or an int in 1..eval_window={self.eval_window}")

    @property
    def noise_range(self) -> tuple[float, float]:
        """Initial noise range in force (the reference's for the action mode, clipped to ``noise_max``, when unset)."""
        if self.init_noise_range is not None:
            return self.init_noise_range
        lo, hi = REFERENCE_INIT[self.action_mode][0]
        return min(lo, self.noise_max), min(hi, self.noise_max)

    @property
    def split_range(self) -> tuple[int, int]:
        """Initial split range in force (the reference's, clipped to ``1..max_split``, when unset)."""
        if self.init_split_range is not None:
            return self.init_split_range
        lo, hi = REFERENCE_INIT[self.action_mode][1]
        return min(lo, self.max_split), min(hi, self.max_split)

    def to_dict(self) -> dict:
        return asdict(self)


class ChenLayerSplitEnv(gym.Env):
    """Chen et al.'s adaptive layer-split MDP: pick the split of an LM whose cut activations suffer element dropout.

    ## Description
    A transformer LM runs its first ``split`` decoder layers on the UE and the rest on the edge
    server. The hidden states crossing the cut go through a lossy link modelled, as in the
    reference, by element dropout (`splitrl.link.DropoutLink`: each element is zeroed with
    probability equal to the *noise level*, no 1/(1-p) rescaling). Each step the agent moves the
    split; the noise level drifts multiplicatively with the move (moving the split up, i.e. more
    layers on the UE, lowers it slightly; moving down raises it). The reward trades the
    perplexity degradation, measured by a real evaluation of the split model on WikiText-2,
    against the load kept on the UE. The reference's world is a 5-step episode from a random
    (noise, split) start.

    ## Action space
    * ``absolute`` (default, reference ``train.py``): ``Discrete(max_split)``; action ``a`` selects
      split ``a + 1`` (``1..max_split``; 10 splits in the reference).
    * ``relative`` (reference ``train__rsm.py``): ``Discrete(2 * max_move + 1)`` (9 with the
      default ``max_move=4``); action 0 stays, odd ``2k-1`` moves the split down ``k`` layers, even
      ``2k`` moves it up ``k`` (`relative_moves`). A move past ``1`` or ``max_split`` is clipped
      to the bound, and the drift uses the move actually made (the reference's remapping table).

    ## Observation space
    ``Box(float32, shape=(2,))``:

    | index | observation | unit | min | max |
    |---|---|---|---|---|
    | 0 | noise level: dropout probability of each element crossing the cut | probability | 0 | ``noise_max`` (0.3) |
    | 1 | split currently in place: decoder layers run on the UE (minus ``cut_offset``) | layers | 1 | ``max_split`` (10) |

    ## Transition
    ``new_split`` from the action; ``noise <- clip(noise * drift_factor(new_split - split), 0, noise_max)``
    (`drift_factor`: absolute mode ``1 -/+ drift_step`` by direction only, relative mode
    ``1 - drift_step * move``; ``drift_step = 0.0005``). The perplexity ``ppl`` of the model cut at
    ``new_split + cut_offset`` with dropout ``noise`` is then evaluated on ``eval_tokens`` WikiText-2
    test tokens, the dropout mask seeded from ``self.np_random``; a step that leaves the split
    (hence the noise) unchanged reuses the last measured ``ppl`` (``reuse_ppl_on_stay``, as the
    reference). A cut at the last layer (``split + cut_offset == L``) sends nothing over the link.
    One mask per evaluation, as in the reference (``num_runs=1``): models with massive
    activations vary a lot between masks (SmolLM2, split 5, p = 0.17, 256 tokens: ppl 45..400
    over 8 masks, depending on whether the first token's outlier elements are dropped), so
    ``ppl_initial`` and each ``ppl`` are single noisy samples.

    ## Reward
    ``inference_factor * (ppl_initial - ppl) / ppl_initial + load_factor * (max_split - new_split) / max_split``
    with ``inference_factor = 10.5``, ``load_factor = 1``; ``ppl_initial`` is measured at the
    episode's starting state by `reset`.

    ## Starting state
    Noise ~ ``U(init_noise_range)``, then split ~ uniform integer in ``init_split_range`` (both drawn
    from ``self.np_random``, in that order). Defaults follow the reference per mode
    (`REFERENCE_INIT`): absolute ``U(0.08, 0.22)`` and ``3..6``; relative ``U(0.01, 0.3)`` and
    ``1..9``; split ranges are clipped to ``max_split``. ``reset(options={"noise_level": x, "split": s})``
    pins either. `reset` measures ``ppl_initial`` (one real evaluation).

    ## Episode end
    After ``episode_steps`` (5) steps the episode is **truncated** (``terminated`` is always
    False): nothing in the task ends it — the reference cuts a continuing control problem
    (noise drifts, the split keeps being chosen) into 5-step pieces to restart from diverse
    states, and the observation does not contain the step count, so treating the cut as a
    terminal state would make values depend on hidden time (Pardo et al., "Time Limits in RL").
    ``terminate_at_horizon=True`` reports it as terminated instead, which is how SB3 interpreted
    the reference's old-Gym ``done``. Stepping after the end (or before `reset`) raises RuntimeError.

    ## Info
    ``ppl`` (this step's perplexity), ``ppl_initial``, ``ppl_previous``, ``noise_level`` (float64; the
    observation holds it as float32), ``split``, ``previous_split``, ``move`` (layers actually
    moved), ``cut`` (layers on the UE), ``drift_factor``, ``evaluated`` (whether this step ran a
    real evaluation), ``reward_terms`` (``inference``, ``load``), ``step``, ``real_evaluations``
    (running count within the episode, the reset's included). The lifetime total is
    ``env.real_evaluations`` (kept out of ``info`` so that equal seeds give equal infos).

    ## Arguments
    ``ChenLayerSplitEnv(config=None, *, loaded=None, input_ids=None, render_mode=None, **overrides)``:
    a `ChenConfig` (or a dict of its fields), with keyword overrides of its fields (what
    ``gym.make("splitrl/ChenLayerSplit-v0", max_split=..., ...)`` passes); ``loaded`` a preloaded
    `splitrl.models.LoadedModel` (else ``config.model`` is loaded once); ``input_ids`` token ids
    ``[1, N]`` to score instead of WikiText-2. The model, the evaluator and its prefix cache of
    clean hidden states live as long as the env: a step runs only layers ``[cut, L)`` and the head.

    ## Differences from the reference
    1. **Stale perplexity across episodes (bug).** The reference keeps ``self.PPL_old`` across
       episodes (0 at construction, never reset) and, when a step keeps the split, scores it with
       ``PPL_new = self.PPL_old``: the first such step of an episode uses the previous episode's last
       perplexity — in the very first episode ``PPL_old = 0``, a bogus reward of ``10.5 + load``.
       Here `reset` sets ``ppl_previous = ppl_initial``, measured at the episode's start.
    2. **20-token evaluation windows (bug).** ``add_noise.calculate_ppl`` uses
       ``max_length = model.config.max_length`` — Hugging Face's generation default of 20 (the
       Llama-2 checkpoints' configs set none) — with stride 512: each window is 20 tokens (19
       predictions, each with < 20 tokens of context) and only ~4% of the text is scored. Here
       each evaluation scores ``eval_tokens`` (256) WikiText-2 test tokens with the standard
       sliding window (``eval_window``/``eval_stride``, each token scored once), tokenised once
       rather than re-read and re-tokenised per call.
    3. **Broken call (bug).** ``train.py`` calls ``calculate_ppl(model, tokenizer, test, device,
       num_runs=1)`` against ``calculate_ppl(model, tokenizer, device, num_runs)`` (a TypeError), and
       ``train_rsm.py`` imports a missing module ``subclassTheLlama``; we follow ``add_noise.py``'s
       semantics (one run, no averaging over masks).
    4. **Cut position.** The reference drops activations ``if i == self.n`` after the 0-based layer
       ``n``, so its "split n" runs ``n + 1`` layers on the UE. Here split ``s`` runs ``s`` layers
       (our runtime's convention); ``cut_offset=1`` reproduces the reference's cut.
    5. **Seeding.** The reference draws the start from the global ``np.random`` and the masks from
       the global torch RNG (unseeded). Here everything comes from ``self.np_random``
       (``reset(seed=)``): same seed, same trajectory, rewards and infos.
    6. **Gymnasium API.** ``reset`` returns ``(obs, info)`` and takes ``seed``/``options``; ``step``
       returns the 5-tuple with the cut as ``truncated`` (old Gym ``done``, which SB3 reads as a
       termination; see Episode end). No evaluation in ``__init__`` (the reference's constructor
       calls ``reset()``, a full perplexity run), no log file, no simulated delay (a no-op there).
       ``info`` carries the step's measurements (the reference returned ``{}``); stepping past the
       end raises (the reference kept stepping, ``done`` staying True).
    7. **Observation dtype and bounds.** Noise is kept in float64 (the reference round-trips it
       through the float32 state, so its drift runs in float32 and ``PPL_initial`` is measured at the
       unrounded value); bounds are ``[0, 1]``-``[noise_max, max_split]`` float32 in both modes
       (reference: ``Box([0, 1], [0.3, 10])`` from int arrays in ``train.py``, a loose
       ``Box([0, 0], [0.3, 11])`` in ``train__rsm.py``).
    8. **Relative-mode reward.** ``train__rsm.py`` has no real perplexity: a learned reward surrogate
       (an MLP on the new state) with ``inference_factor = 10``. Here the relative mode uses the same
       real-perplexity reward as the absolute mode (10.5), and measures ``ppl_initial`` at reset.
    9. **Relative drift typo (bug).** The reference's +3 move uses 0.9995 (the +1 factor) where every
       other move follows ``1 - 0.0005 * move`` (+3 -> 0.9985 here); ``reference_drift_typo=True``
       restores it. The reference's hard-coded clip table for splits 1..10 becomes a generic clip
       to ``1..max_split`` (identical at ``max_split = 10``).
    10. **Configurable range.** ``max_split`` (default 10, validated against the model's ``L``),
        the load term normalised by ``max_split`` (the reference hard-codes 10), initial split
        ranges clipped to ``max_split``; ``max_move`` generalises the 9-way move set (the
        reference's commented-out ``Discrete(5)`` is ``max_move=2``).
    11. **Model and precision.** Llama-2-7B in fp16 on a GPU there; any loaded model here
        (SmolLM2-135M by default, fp32). The divide-by-zero guard on ``PPL_initial`` is dropped
        (a perplexity is >= 1).

    ## Version history
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: ChenConfig | dict | None = None,
        *,
        loaded=None,
        input_ids=None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if render_mode is not None:
            raise UsageError(f"render_mode must be None (this env does not render), got {render_mode!r}")
        self.render_mode = None
        if isinstance(config, dict):
            config = ChenConfig(**config)
        elif config is not None and not isinstance(config, ChenConfig):
            raise TypeError(f"config must be a ChenConfig, a dict or None, got {type(config).__name__}")
        config = config or ChenConfig()
        if overrides:
            unknown = sorted(set(overrides) - {f.name for f in fields(ChenConfig)})
            if unknown:
                raise TypeError(f"unknown ChenConfig field(s) {', '.join(unknown)}")
            config = ChenConfig(**{**asdict(config), **overrides})
        self.config = c = config

        if loaded is None:
            loaded = load_model(c.model)
        self.loaded = loaded
        self.L = int(loaded.view.num_layers)
        if c.max_split + c.cut_offset > self.L:
            raise UsageError(
                f"ChenConfig.max_split must be in 1..{self.L - c.cut_offset} (L={self.L} layers - cut_offset={c.cut_offset}), "
                f"got {c.max_split}"
            )
        stride = c.eval_stride if c.eval_stride is not None else c.eval_window
        self.evaluator = PerplexityEvaluator(
            loaded, PerplexityConfig(tokens=c.eval_tokens, window=c.eval_window, stride=stride), input_ids=input_ids
        )
        self.observation_space = spaces.Box(
            low=np.array([0.0, 1.0], dtype=np.float32),
            high=np.array([c.noise_max, c.max_split], dtype=np.float32),
            dtype=np.float32,
        )
        self.moves = relative_moves(c.max_move)
        n = c.max_split if c.action_mode == "absolute" else len(self.moves)
        self.action_space = spaces.Discrete(n)
        self.real_evaluations = 0  # lifetime total
        self._episode_evaluations = 0
        self._step_count = 0
        self._needs_reset = True
        self._noise = 0.0
        self._split = 1
        self._ppl_initial = math.nan
        self._ppl_previous = math.nan

    # --- dynamics -----------------------------------------------------------------------
    def target_split(self, action: int, split: int | None = None) -> int:
        """The split that ``action`` leads to from ``split`` (default: the one in place)."""
        arr = np.asarray(action)
        if arr.shape != () or arr.dtype.kind not in "iu" or not self.action_space.contains(int(arr)):
            raise UsageError(f"action {action!r} outside {self.action_space}")
        a = int(arr)
        if self.config.action_mode == "absolute":
            return a + 1
        s = self._split if split is None else int(split)
        return relative_step(s, a, self.config.max_split, self.config.max_move)

    def drift_factor(self, move: int) -> float:
        """Noise factor of a split change of ``move`` layers (see `drift_factor`)."""
        c = self.config
        return drift_factor(move, c.action_mode, c.drift_step, c.reference_drift_typo)

    def evaluate(self, split: int, noise: float) -> float:
        """One real evaluation: perplexity at ``split`` (+ ``cut_offset``) with dropout ``noise``,
        the mask seeded from ``self.np_random``."""
        link = DropoutLink(float(noise), seed=int(self.np_random.integers(2**63 - 1)),
                           vocab_size=int(self.loaded.view.vocab_size))
        ppl = float(self.evaluator.evaluate(int(split) + self.config.cut_offset, link).ppl)
        self.real_evaluations += 1
        self._episode_evaluations += 1
        return ppl

    def reward_terms(self, ppl: float, split: int) -> dict[str, float]:
        """``{"inference", "load", "reward"}`` of a step ending at ``split`` with perplexity ``ppl``."""
        c = self.config
        inference = (self._ppl_initial - ppl) / self._ppl_initial
        load = (c.max_split - split) / c.max_split
        return {"inference": float(inference), "load": float(load),
                "reward": float(c.inference_factor * inference + c.load_factor * load)}

    def _obs(self) -> np.ndarray:
        return np.array([self._noise, self._split], dtype=np.float32)

    # --- Gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c = self.config
        options = dict(options or {})
        unknown = sorted(set(options) - {"noise_level", "split"})
        if unknown:
            raise UsageError(f"unknown reset option(s) {', '.join(unknown)}; allowed: noise_level, split")
        lo, hi = c.noise_range
        noise = float(self.np_random.uniform(lo, hi))
        slo, shi = c.split_range
        split = int(self.np_random.integers(slo, shi + 1))
        if "noise_level" in options:
            x = options["noise_level"]
            if not _is_num(x) or not 0.0 <= x <= c.noise_max:
                raise UsageError(f"reset option noise_level must be in [0, {c.noise_max}], got {x!r}")
            noise = float(x)
        if "split" in options:
            s = options["split"]
            if not _is_int(s) or not 1 <= s <= c.max_split:
                raise UsageError(f"reset option split must be an int in 1..{c.max_split}, got {s!r}")
            split = int(s)
        self._noise, self._split = noise, split
        self._step_count = 0
        self._episode_evaluations = 0
        self._ppl_initial = self.evaluate(split, noise)
        self._ppl_previous = self._ppl_initial  # the fix: never carried over from the last episode
        self._needs_reset = False
        info = {
            "ppl": self._ppl_initial, "ppl_initial": self._ppl_initial, "noise_level": self._noise,
            "split": self._split, "cut": self._split + c.cut_offset, "step": 0,
            "real_evaluations": self._episode_evaluations,
        }
        return self._obs(), info

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode has not started or has ended)")
        c = self.config
        new_split = self.target_split(action)
        move = new_split - self._split
        factor = self.drift_factor(move)
        noise = min(max(self._noise * factor, 0.0), c.noise_max)
        if move == 0 and c.reuse_ppl_on_stay:
            ppl, evaluated = self._ppl_previous, False  # same split and noise: the last measurement
        else:
            ppl, evaluated = self.evaluate(new_split, noise), True
        terms = self.reward_terms(ppl, new_split)
        self._step_count += 1
        info = {
            "ppl": ppl, "ppl_initial": self._ppl_initial, "ppl_previous": self._ppl_previous,
            "noise_level": noise, "split": new_split, "previous_split": self._split, "move": move,
            "cut": new_split + c.cut_offset, "drift_factor": factor, "evaluated": evaluated,
            "reward_terms": {"inference": terms["inference"], "load": terms["load"]},
            "step": self._step_count, "real_evaluations": self._episode_evaluations,
        }
        self._noise, self._split, self._ppl_previous = noise, new_split, ppl
        end = self._step_count >= c.episode_steps
        self._needs_reset = end
        terminated = end and c.terminate_at_horizon
        truncated = end and not c.terminate_at_horizon
        return self._obs(), terms["reward"], terminated, truncated, info
