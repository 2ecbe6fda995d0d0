"""A tensor-parallel rank: ``splitrl tp worker`` joins the driver's store and serves its commands.

Control plane (no pickle): the driver writes each command as JSON under ``tp/cmd/{seq}`` in the
TCP store; every process (a *slot*) reads the commands in order, the ones the command names take
part, and each writes a JSON result under ``tp/res/{seq}/{slot}`` (large outputs, e.g. logits, as
raw little-endian bytes under ``tp/out/{seq}``). Commands:

* ``setup``: (re-)form process group generation ``g`` over the named slots (slot -> rank), load
  this rank's shard (all blocks, or through the sliding-window scheduler) and build the
  all-reduce ``make_allreduce(name, **kwargs)`` — any registered all-reduce works.
* ``generate``: greedy/sampled decoding with a KV cache per rank.
* ``logits``: one full forward (no cache), the master returns all logits.
* ``nll``: summed next-token NLL over windows (perplexity), computed on the master.
* ``shutdown``.

Data plane per forward pass: the master embeds the tokens and broadcasts one frame
(``[T*H hidden | 1 control word]``) to the other ranks; each rank runs its heads and FFN columns
of every layer, with 2 all-reduces per layer (attention output, FFN output); the master runs the
head and samples. Generating n tokens = n forward passes = n broadcasts + 2·L·n all-reduces
(plus one stop frame if EOS ends the request early).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from splitrl.dist import ALLREDUCE_KINDS, Endpoint, check_trusted, connect_store, form_group, leave_group, make_allreduce
from splitrl.errors import UsageError
from splitrl.log import configure_logging, get_logger
from splitrl.proc import anon_rss_bytes  # one /proc/<pid>/status reader for every per-process memory figure
from splitrl.runtime.sampling import SamplingConfig, TokenSampler
from splitrl.tp.allreduce import LinkSpec, MasterBroadcast, PeerError
from splitrl.tp.plan import ModelDims, ShardPlan
from splitrl.tp.scheduler import BlockScheduler
from splitrl.tp.shard import DTYPES, BufferPool, RankModel, Reducer, block_names, load_block_file

__all__ = ["AnonMemorySampler", "TPRank", "TPRunConfig", "anon_rss_bytes", "pin_mmap_threshold", "serve"]

log = get_logger("tp.worker")


def pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold so large tensors are mmapped and returned to the OS when freed.

    glibc raises its mmap threshold each time a large mmapped chunk is freed (up to 32 MiB); after
    that, weight blocks come from the heap arenas (the loader thread's and the main thread's) and
    freed blocks stay resident as fragmented free lists, so a streamed rank's memory grows with
    every token (measured: 28 MB -> 300+ MB above baseline over 56 tokens of SmolLM2 at W = 2).
    Setting ``M_MMAP_THRESHOLD`` explicitly disables that adjustment. Returns False where
    ``mallopt`` is unavailable (non-glibc); nothing else changes.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(nbytes)))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


class AnonMemorySampler:
    """Samples `anon_rss_bytes` on a thread every ``interval_s`` while running (peak + all samples)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "AnonMemorySampler":
        self.samples = [anon_rss_bytes()]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tp-memsample")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(anon_rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(anon_rss_bytes())

    def summary(self, baseline: int) -> dict[str, float]:
        import statistics as st

        s = self.samples or [anon_rss_bytes()]
        tail = s[len(s) // 2:]
        return {"baseline_mb": baseline / 2**20, "peak_mb": max(s) / 2**20,
                "steady_mb": float(st.median(tail)) / 2**20, "samples": len(s)}


ALLREDUCE_PLUGINS = ("splitrl.tp.allreduce", "splitrl.aircomp")


def load_allreduce_plugins() -> None:
    """Import the modules that register all-reduce kinds (those that exist in this installation)."""
    import importlib
    import importlib.util

    for mod in ALLREDUCE_PLUGINS:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


@dataclass(frozen=True)
class TPRunConfig:
    """What a rank needs to take part (travels as JSON in the ``setup`` command).

    Attributes:
        shard_dir: the shard directory (`splitrl.tp.shard.write_shards`) as seen by the ranks.
        allreduce: a registered all-reduce name (``star``, ``ring``, ``engine``, or e.g. ``aircomp``).
        allreduce_kwargs: keyword arguments for ``make_allreduce`` (JSON values only).
        link: the emulated link (`LinkSpec` fields) for the TP all-reduces and the broadcast.
        window: resident blocks per rank for the sliding-window scheduler (0 = all resident).
        load_delay_s: injected extra seconds per block load (emulates a slow disk).
        timeout_s: timeout of every collective and point-to-point wait.
        threads: torch CPU threads of each rank.
    """

    shard_dir: str
    allreduce: str = "star"
    allreduce_kwargs: dict = field(default_factory=dict)
    link: dict = field(default_factory=dict)
    window: int = 0
    load_delay_s: float = 0.0
    timeout_s: float = 30.0
    threads: int = 1

    def __post_init__(self) -> None:
        load_allreduce_plugins()
        if self.allreduce not in ALLREDUCE_KINDS:
            raise UsageError(f"--allreduce: unknown kind {self.allreduce!r}; allowed: {', '.join(sorted(ALLREDUCE_KINDS))}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise UsageError(f"--window must be an integer >= 0 (0 = all weights resident), got {self.window!r}")
        if not self.load_delay_s >= 0:
            raise UsageError(f"--load-delay must be >= 0 s, got {self.load_delay_s}")
        if not self.timeout_s > 0:
            raise UsageError(f"--timeout must be > 0 s, got {self.timeout_s}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise UsageError(f"--threads must be an integer >= 1, got {self.threads!r}")
        json.dumps(self.allreduce_kwargs)  # must travel as JSON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TPRank:
    """One rank's model share, all-reduce, broadcast and (optionally) weight scheduler."""

    def __init__(self, config: TPRunConfig, rank: int, world: int) -> None:
        self.config, self.rank, self.world = config, rank, world
        root = Path(config.shard_dir)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise UsageError(f"shard_dir: no manifest.json in {root} (write shards with the driver first)")
        manifest = json.loads(manifest_path.read_text())
        dims = ModelDims(**manifest["dims"])
        plan = ShardPlan.build(dims, manifest["plan"]["ratios"])
        if plan.to_dict()["shards"] != manifest["plan"]["shards"]:
            raise UsageError(f"shard_dir {root}: the manifest's plan does not match this version's plan")
        if plan.world != world:
            raise UsageError(f"shard_dir {root} is for {plan.world} shards, the group has {world} ranks")
        self.plan, self.dims = plan, dims
        self.dtype = DTYPES[manifest["dtype"]]
        link = LinkSpec.coerce(config.link or None)
        kwargs = dict(config.allreduce_kwargs)
        if config.allreduce in ("star", "ring", "engine"):
            kwargs.setdefault("link", link)
            kwargs.setdefault("timeout_s", config.timeout_s)
        self.allreduce = make_allreduce(config.allreduce, **kwargs)
        self.broadcaster = MasterBroadcast(link=link, timeout_s=config.timeout_s)
        self.reducer = Reducer()
        self.reducer.world = world
        self.reducer.op = self.allreduce.reduce
        self.model = RankModel(root, rank, plan, self.dtype, self.reducer)
        self.view = self.model.view
        self.scheduler: BlockScheduler | None = None
        blocks = block_names(dims.num_layers)
        if config.window and config.window < len(blocks):
            m = self.model
            pool = BufferPool()

            def release(b: str, st: dict) -> None:
                m.release_block(b, list(st.keys()))
                pool.give(st)  # the parameters no longer view these bytes: reuse them for the next load

            self.scheduler = BlockScheduler(
                blocks, load=lambda b: load_block_file(m.block_file(b), pool), assign=m.assign_block,
                release=release, window=config.window, load_delay_s=config.load_delay_s,
            )
            self._install_hooks()
            self.scheduler.start()
        else:
            self.model.load_all()

    def _install_hooks(self) -> None:
        sch = self.scheduler
        assert sch is not None
        for l, layer in enumerate(self.view.layers):
            attn_b, ffn_b = f"layer{l:03d}.attn", f"layer{l:03d}.ffn"
            if self.dims.family == "llama":
                attn_mod, norm2, mlp = layer.self_attn, layer.post_attention_layernorm, layer.mlp
            else:
                attn_mod, norm2, mlp = layer.attn, layer.ln_2, layer.mlp
            layer.register_forward_pre_hook(lambda *_a, b=attn_b: sch.acquire(b))
            attn_mod.register_forward_hook(lambda *_a, b=attn_b: sch.release(b))
            norm2.register_forward_pre_hook(lambda *_a, b=ffn_b: sch.acquire(b))
            mlp.register_forward_hook(lambda *_a, b=ffn_b: sch.release(b))

    # -- one forward pass ---------------------------------------------------------------------
    def _frame(self, hidden: torch.Tensor | None, n_tokens: int, go: bool) -> tuple[torch.Tensor | None, bool]:
        """Broadcast ``[T*H | control]`` from the master; returns (hidden [1, T, H], go) on every rank."""
        H = self.dims.hidden_size
        if self.rank == 0:
            body = hidden.reshape(-1) if hidden is not None else torch.zeros(n_tokens * H, dtype=self.dtype)
            frame = torch.cat([body, torch.tensor([1.0 if go else 0.0], dtype=self.dtype)])
            if self.world > 1:
                self.broadcaster.broadcast(frame)
            return hidden, go
        frame = self.broadcaster.broadcast(torch.empty(n_tokens * H + 1, dtype=self.dtype))
        go = bool(frame[-1].item() > 0.5)
        return frame[:-1].reshape(1, n_tokens, H), go

    def _layers(self, hidden: torch.Tensor, offset: int, cache: Any) -> torch.Tensor:
        n = hidden.shape[1]
        pos = torch.arange(offset, offset + n).unsqueeze(0)  # [1, T]
        return self.view.run_layers(hidden, 0, self.dims.num_layers, pos, cache=cache)

    def _embed(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        pos = torch.arange(offset, offset + ids.shape[1]).unsqueeze(0)
        return self.view.embed(ids, pos)

    def reset_stats(self) -> None:
        self.allreduce.stats.reset()
        self.broadcaster.stats.reset()

    def stats(self) -> dict[str, Any]:
        out = {"allreduce": self.allreduce.stats.to_dict(), "broadcast": self.broadcaster.stats.to_dict()}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.stats.to_dict()
        return out

    @torch.inference_mode()
    def generate(self, prompt: list[int], max_new_tokens: int, sampling: dict, stop_at_eos: bool,
                 progress: Any = None) -> dict[str, Any]:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.view.config)
        sampler = TokenSampler(SamplingConfig(**sampling)) if self.rank == 0 else None
        eos = getattr(self.view.config, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
        tokens: list[int] = []
        step_s: list[float] = []
        ids = torch.tensor([prompt], dtype=torch.long)
        offset, n = 0, len(prompt)
        for step in range(max_new_tokens):
            t0 = time.perf_counter()
            hidden = self._embed(ids, offset) if self.rank == 0 else None
            hidden, go = self._frame(hidden, n, True)
            if not go:
                break
            hidden = self._layers(hidden, offset, cache)
            offset += n
            if progress is not None:
                progress(step)
            if self.rank == 0:
                logits = self.view.head(hidden[:, -1:, :])[:, -1, :]  # [1, V]
                tok = int(sampler(logits)[0])
                tokens.append(tok)
                ids, n = torch.tensor([[tok]]), 1
                step_s.append(time.perf_counter() - t0)
                last = step == max_new_tokens - 1
                if stop_at_eos and tok in eos_ids and not last:
                    self._frame(None, 1, False)  # tell the workers to stop early
                    break
            else:
                n = 1
                step_s.append(time.perf_counter() - t0)
        return {"tokens": tokens, "step_seconds": step_s}

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor | None:
        """Logits ``[1, T, V]`` of one full forward (master), None on the other ranks."""
        t = torch.tensor([ids], dtype=torch.long)
        hidden = self._embed(t, 0) if self.rank == 0 else None
        hidden, _ = self._frame(hidden, len(ids), True)
        hidden = self._layers(hidden, 0, None)
        return self.view.head(hidden) if self.rank == 0 else None

    @torch.inference_mode()
    def nll(self, ids: list[int], windows: list[list[int]]) -> dict[str, float]:
        """Sum of next-token NLL over ``windows`` = ``[begin, end, target_start]`` (absolute indices)."""
        import torch.nn.functional as F

        total, count = 0.0, 0
        for begin, end, tstart in windows:
            lg = self.logits(ids[begin:end])
            if self.rank == 0:
                x = torch.tensor(ids[begin:end])
                pred = lg[0, :-1].double()  # [T-1, V]
                tgt = x[1:]
                keep = torch.arange(begin + 1, end) >= tstart
                total += float(F.cross_entropy(pred[keep], tgt[keep], reduction="sum"))
                count += int(keep.sum())
        return {"nll_sum": total, "tokens": count}

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()


# ---- the worker process ------------------------------------------------------------------------

def _json(store: Any, key: str, value: Any) -> None:
    store.set(key, json.dumps(value).encode())


@dataclass
class _Slot:
    """One worker process between commands: its store, its rank's shard, its process group and whether it broke."""

    slot: int
    store: Any
    baseline: int  # anonymous RSS after imports, before any weight
    rank_state: TPRank | None = None
    group: tuple[int, int, int] | None = None  # generation, rank, world
    broken: bool = False

    def close(self) -> None:
        if self.rank_state is not None:
            self.rank_state.close()
            self.rank_state = None


def _wait_command(store: Any, key: str, ep: Any, slot: int, idle_since: float, idle_timeout_s: float) -> bool | None:
    """Wait up to 2 s for command ``key``: True when it is there, False to wait again, None to exit."""
    try:
        store.wait([key], _dt.timedelta(seconds=2.0))
    except Exception as e:  # timeout (keep waiting) or the driver's store is gone (exit)
        if "timeout" not in str(e).lower() and "timed out" not in str(e).lower():
            log.warning("tp worker %d: store at %s unreachable (%s); exiting", slot, ep, e)
            return None
        if time.monotonic() - idle_since > idle_timeout_s:
            log.warning("tp worker %d: no command for %.0f s; exiting", slot, idle_timeout_s)
            return None
        return False
    return True


def _setup(s: _Slot, cmd: dict[str, Any], ranks: dict[int, int], rank: int, res: dict[str, Any]) -> None:
    """``setup``: (re-)form the process group and load this rank's shard."""
    import torch.distributed as dist

    s.close()
    config = TPRunConfig(**cmd["config"])
    torch.set_num_threads(config.threads)
    world = len(ranks)
    form_group(dist.PrefixStore("tp/pg", s.store), rank, world, generation=int(cmd["generation"]),
               backend="gloo", timeout_s=config.timeout_s)
    s.group = (int(cmd["generation"]), rank, world)
    with AnonMemorySampler() as mem:
        s.rank_state = TPRank(config, rank, world)
    res["memory"] = mem.summary(s.baseline)
    res["plan"] = s.rank_state.plan.to_dict()["shards"][rank]
    s.broken = False


def _dispatch(s: _Slot, cmd: dict[str, Any], seq: int, res: dict[str, Any], progress: Any) -> None:
    """Run one ``generate`` / ``logits`` / ``nll`` command on this rank, its outputs into ``res``."""
    if cmd["op"] == "generate":
        res.update(s.rank_state.generate(cmd["prompt"], int(cmd["max_new_tokens"]), cmd.get("sampling", {}),
                                         bool(cmd.get("stop_at_eos", True)), progress))
    elif cmd["op"] == "logits":
        lg = s.rank_state.logits(cmd["ids"])
        if lg is not None:
            arr = lg.detach().contiguous()
            s.store.set(f"tp/out/{seq}", arr.numpy().tobytes())
            res["logits"] = {"shape": list(arr.shape), "dtype": str(arr.dtype).replace("torch.", "")}
    elif cmd["op"] == "nll":
        res.update(s.rank_state.nll(cmd["ids"], cmd["windows"]))
    else:
        raise UsageError(f"unknown tp command {cmd['op']!r}")


def _run_op(s: _Slot, cmd: dict[str, Any], rank: int, seq: int, res: dict[str, Any]) -> None:
    """A command on a formed group: timed, its memory sampled if asked, the rank's traffic stats added."""
    if s.rank_state is None or s.group is None:
        raise UsageError(f"slot {s.slot}: no setup before {cmd['op']!r}")
    if s.broken:
        raise RuntimeError(f"rank {rank}: the group of generation {s.group[0]} is broken; re-form it with setup")
    s.rank_state.reset_stats()
    prog_key = f"tp/progress/{s.group[0]}/{rank}"

    def progress(step: int) -> None:
        s.store.set(prog_key, str(step))

    sample = bool(cmd.get("sample_memory"))
    mem = AnonMemorySampler() if sample else None
    if mem:
        mem.__enter__()
    t0 = time.perf_counter()
    try:
        _dispatch(s, cmd, seq, res, progress)
    finally:
        if mem:
            mem.__exit__(None, None, None)
    res["seconds"] = time.perf_counter() - t0
    if mem:
        res["memory"] = mem.summary(s.baseline)
    res.update(s.rank_state.stats())


def _handle(s: _Slot, cmd: dict[str, Any], ranks: dict[int, int], seq: int) -> dict[str, Any]:
    """The result of command ``seq`` on this slot; a failure is reported, not raised, and may mark the group broken."""
    rank = ranks[s.slot]
    res: dict[str, Any] = {"ok": True, "slot": s.slot, "rank": rank, "pid": os.getpid()}
    try:
        if cmd["op"] == "setup":
            _setup(s, cmd, ranks, rank, res)
        else:
            _run_op(s, cmd, rank, seq, res)
    except PeerError as e:
        s.broken = True
        res.update(ok=False, error=str(e), peer=e.peer)
    except Exception as e:  # reported to the driver; the worker stays up for the next command
        s.broken = s.broken or cmd["op"] != "setup" and not isinstance(e, UsageError)
        res.update(ok=False, error=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-1500:])
    return res


def serve(slot: int, master: str, *, trusted_network: bool = False, timeout_s: float = 30.0,
          idle_timeout_s: float = 3600.0) -> int:
    """Run the command loop of slot ``slot`` against the driver's store at ``master``; returns the exit code."""
    configure_logging()
    pin_mmap_threshold()
    baseline = anon_rss_bytes()  # after imports, before any weight
    ep = Endpoint.parse(master)
    check_trusted(ep, trusted_network)
    store = connect_store(ep, host_store=False, timeout_s=timeout_s)
    _json(store, f"tp/hello/{slot}", {"pid": os.getpid(), "host": socket.gethostname(), "baseline_anon_mb": baseline / 2**20})
    s = _Slot(slot, store, baseline)
    seq = 0
    idle_since = time.monotonic()
    while True:
        key = f"tp/cmd/{seq}"
        ready = _wait_command(store, key, ep, slot, idle_since, idle_timeout_s)
        if ready is None:
            break
        if not ready:
            continue
        idle_since = time.monotonic()
        cmd = json.loads(store.get(key).decode())
        seq += 1
        ranks = {int(k): int(v) for k, v in cmd.get("ranks", {}).items()}
        if cmd["op"] == "shutdown":
            break
        if slot not in ranks:
            continue
        _json(store, f"tp/res/{seq - 1}/{slot}", _handle(s, cmd, ranks, seq - 1))
    s.close()
    leave_group()
    return 0
