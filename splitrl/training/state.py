"""Capturing and restoring run state without pickle: global RNGs and a live env's mutable state.

RNGs (`rng_state` / `set_rng_state`): Python's ``random`` and NumPy's legacy global generator as
JSON (the bit generator's state dict), torch's CPU generator as a tensor (saved with safetensors
by the checkpoint module).

Envs (`capture_env_state` / `restore_env_state`): the mutable state of an env is spread over its
wrappers (``TimeLimit._elapsed_steps``, SB3 ``Monitor`` episode sums, ...), the base env
(``_np_random``, the split in place, the SNR history, counters, ...), its channel (generator,
fading state) and its spaces (the action space's sampler). `capture_env_state` walks that object
graph from the outermost wrapper — descending into attributes that are gym envs/wrappers, gym
spaces or `splitrl.channel.Channel`s — and records every attribute holding plain data: numbers,
strings, None, lists/tuples/dicts of those, NumPy arrays and scalars, and NumPy generators (as
their bit-generator state). Everything else (configs, cost models, sweep tables, model views) is
rebuilt from the configuration and not recorded. `restore_env_state` replays the record into a
freshly built env of the same configuration. An object that knows better can define
``checkpoint_state() -> (dict, {name: ndarray})`` and ``restore_checkpoint_state(dict, arrays)``;
the walker then uses those for it (e.g. a learned-model env whose state lives in a torch module).
"""
from __future__ import annotations

import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from splitrl.channel import Channel
from splitrl.errors import UsageError

__all__ = ["rng_state", "set_rng_state", "capture_env_state", "restore_env_state"]


# --- global RNGs ------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, Any], torch.Tensor]:
    """(JSON-serialisable Python + NumPy global RNG states, torch CPU RNG state tensor)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_json = {**np_state, "state": {"key": np.asarray(np_state["state"]["key"]).tolist(), "pos": int(np_state["state"]["pos"])}}
    return {"python": [version, list(internal), gauss], "numpy": np_json}, torch.get_rng_state()


def set_rng_state(state: dict[str, Any], torch_state: torch.Tensor | None) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32), "pos": int(np_state["state"]["pos"])}
    np.random.set_state(np_state)
    if torch_state is not None:
        torch.set_rng_state(torch_state.to(torch.uint8).cpu())


# --- env state --------------------------------------------------------------------------------
_SKIP = object()


def _container_types() -> tuple[type, ...]:
    return (gym.Env, gym.Wrapper, gym.spaces.Space, Channel)


def _is_plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain(x) for k, x in v.items())
    return isinstance(v, np.generic) and not isinstance(v, np.object_)


def _encode_plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return {"__np__": v.dtype.str, "v": v.item()}
    if isinstance(v, tuple):
        return {"__tuple__": [_encode_plain(x) for x in v]}
    if isinstance(v, list):
        return [_encode_plain(x) for x in v]
    if isinstance(v, dict):
        return {"__dict__": {k: _encode_plain(x) for k, x in v.items()}}
    return v


def _decode_plain(v: Any) -> Any:
    if isinstance(v, list):
        return [_decode_plain(x) for x in v]
    if isinstance(v, dict):
        if "__np__" in v:
            return np.dtype(v["__np__"]).type(v["v"])
        if "__tuple__" in v:
            return tuple(_decode_plain(x) for x in v["__tuple__"])
        if "__dict__" in v:
            return {k: _decode_plain(x) for k, x in v["__dict__"].items()}
    return v


def capture_env_state(env: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON-able record, arrays) of the mutable state of ``env`` and everything it wraps."""
    arrays: dict[str, np.ndarray] = {}
    containers = _container_types()
    seen: set[int] = set()

    def walk(obj: Any, path: str) -> dict[str, Any]:
        seen.add(id(obj))
        if hasattr(obj, "checkpoint_state") and hasattr(obj, "restore_checkpoint_state"):
            data, arrs = obj.checkpoint_state()
            for k, a in arrs.items():
                arrays[f"{path}#{k}"] = np.asarray(a)
            return {"__custom__": data, "__arrays__": sorted(arrs)}
        out: dict[str, Any] = {}
        for name, v in sorted(vars(obj).items()):
            key = f"{path}.{name}"
            if isinstance(v, containers):
                if id(v) not in seen:
                    out[name] = {"__obj__": walk(v, key)}
            elif isinstance(v, np.random.Generator):
                out[name] = {"__generator__": v.bit_generator.state}
            elif isinstance(v, np.ndarray):
                if v.dtype.kind in "biufc":
                    arrays[key] = v
                    out[name] = {"__array__": key}
            elif _is_plain(v):
                out[name] = _encode_plain(v)
        return out

    return {"format": 1, "root": type(env).__name__, "state": walk(env, "env")}, arrays


def restore_env_state(env: Any, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Put the state `capture_env_state` recorded into ``env`` (built from the same configuration).

    Raises ValueError when the object graph differs (another wrapper stack or env class)."""
    if record.get("format") != 1:
        raise UsageError(f"unknown env state format {record.get('format')!r}")
    if record.get("root") != type(env).__name__:
        raise UsageError(f"env state was captured from a {record.get('root')}, not a {type(env).__name__}")

    def put(obj: Any, state: dict[str, Any], path: str) -> None:
        if "__custom__" in state:
            obj.restore_checkpoint_state(state["__custom__"], {k: arrays[f"{path}#{k}"] for k in state["__arrays__"]})
            return
        for name, v in state.items():
            key = f"{path}.{name}"
            if isinstance(v, dict) and "__obj__" in v:
                child = getattr(obj, name, None)
                if child is None:
                    raise UsageError(f"env state: {key} is missing in the rebuilt env")
                put(child, v["__obj__"], key)
            elif isinstance(v, dict) and "__generator__" in v:
                st = v["__generator__"]
                cur = getattr(obj, name, None)
                if isinstance(cur, np.random.Generator) and cur.bit_generator.state["bit_generator"] == st["bit_generator"]:
                    cur.bit_generator.state = st  # in place: other holders of this generator follow
                else:
                    g = np.random.Generator(getattr(np.random, st["bit_generator"])())
                    g.bit_generator.state = st
                    setattr(obj, name, g)
            elif isinstance(v, dict) and "__array__" in v:
                setattr(obj, name, np.array(arrays[v["__array__"]], copy=True))
            else:
                setattr(obj, name, _decode_plain(v))

    put(env, record["state"], "env")
