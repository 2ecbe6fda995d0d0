"""The tensor-parallel driver: host the store, start (or wait for) the ranks, run requests, detect failures.

`TPCluster` is the Python API behind ``splitrl tp generate|ppl``. It hosts the TCP store (port 0
on loopback by default), starts ``python -m splitrl tp worker`` children for the local slots
(remote slots join with ``splitrl tp worker --rank R --world N --master HOST:PORT``), writes
the shard files, and sends commands (see `splitrl.tp.worker`).

Failures are bounded in time: while waiting for results the driver watches its children (an
exited child, or one stopped by SIGSTOP, is named at once) and every rank's progress counter in
the store; after the collective timeout plus a grace period the rank that stopped making progress
is named. The request then fails with `RankFailure`, or — with ``retries`` — the driver stops the
failed rank (by pid), re-plans the shards over the survivors and re-forms the group as a new
generation on the same store, and runs the request again.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from splitrl.dist import Endpoint, check_trusted, connect_store
from splitrl.errors import UsageError
from splitrl.proc import spawn_splitrl
from splitrl.tp.plan import ModelDims, ShardPlan
from splitrl.tp.shard import write_shards
from splitrl.tp.worker import TPRunConfig

__all__ = ["RankFailure", "TPCluster", "TPGeneration", "prepare_shards"]


class RankFailure(RuntimeError):
    """A rank died, hung or failed; ``slot``/``rank`` name it (None when it cannot be pinned down)."""

    def __init__(self, message: str, slot: int | None = None, rank: int | None = None) -> None:
        super().__init__(message)
        self.slot, self.rank = slot, rank


@dataclass
class TPGeneration:
    """Result of one tensor-parallel generation."""

    token_ids: list[int]
    step_seconds: list[float]
    ranks: list[dict[str, Any]]  # per rank: allreduce/broadcast/scheduler stats, memory
    world: int
    retried: int = 0
    text: str = ""

    @property
    def prefill_seconds(self) -> float:
        return self.step_seconds[0] if self.step_seconds else 0.0

    @property
    def decode_seconds_per_token(self) -> float:
        d = self.step_seconds[1:]
        return sum(d) / len(d) if d else float("nan")


def _plan_key(model: str, dtype: str, ratios: Sequence[float], seed: int) -> str:
    text = json.dumps([model, dtype, [round(r, 12) for r in ratios], seed])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_shards(loaded: Any, ratios: Sequence[float], root: str | Path, *, dtype: str = "float32",
                   seed: int = 0) -> Path:
    """Write (once; reused when present) the shard directory of ``loaded`` for ``ratios`` under ``root``."""
    plan = ShardPlan.build(ModelDims.from_config(loaded.view.config), ratios)
    d = Path(root) / f"{Path(str(loaded.name)).name}-{dtype}-n{plan.world}-{_plan_key(loaded.name, dtype, plan.ratios, seed)}"
    if (d / "manifest.json").is_file():
        return d
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-shards-"))
    write_shards(loaded.view, plan, tmp, model_name=str(loaded.name), dtype=dtype)
    try:
        tmp.rename(d)
    except OSError:  # written concurrently by someone else: theirs is as good
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return d


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


class TPCluster:
    """N worker processes on one store; see the module docstring.

    Args:
        processes: number of slots (worker processes), the largest group it can form.
        master: ``HOST:PORT`` of the store to host (port 0 = any free port).
        local: slots to start here (default all); the rest must join from elsewhere.
        trusted_network: allow a non-loopback address (gloo has no authentication).
        work_dir: where logs (and by default shards) go.
        threads: CPU threads per worker.
        join_timeout_s: how long to wait for all slots to say hello.
        env: extra environment for the children.
    """

    def __init__(self, processes: int, *, master: str = "127.0.0.1:0", local: Sequence[int] | None = None,
                 trusted_network: bool = False, work_dir: str | Path | None = None, threads: int = 1,
                 join_timeout_s: float = 180.0, env: dict[str, str] | None = None) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise UsageError(f"--shards must be an integer >= 1, got {processes!r}")
        self.processes = processes
        self.endpoint = Endpoint.parse(master)
        check_trusted(self.endpoint, trusted_network)
        self.trusted_network = trusted_network
        self.local = list(range(processes)) if local is None else sorted(set(int(s) for s in local))
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="splitrl-tp-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.threads, self.join_timeout_s, self.env = threads, join_timeout_s, dict(env or {})
        self.store: Any = None
        self.children: dict[int, Any] = {}
        self.pids: dict[int, int] = {}
        self.alive: list[int] = list(range(processes))
        self.seq = 0
        self.generation = -1
        self.ranks: dict[int, int] = {}  # slot -> rank of the current group
        self.config: TPRunConfig | None = None
        self.timeout_s = 30.0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "TPCluster":
        self.store = connect_store(self.endpoint, host_store=True)
        addr = f"{self.endpoint.host}:{self.store.port}" if ":" not in self.endpoint.host else f"[{self.endpoint.host}]:{self.store.port}"
        self.address = addr
        for slot in self.local:
            args = ["tp", "worker", "--rank", slot, "--world", self.processes, "--master", addr,
                    "--timeout", self.timeout_s]
            if self.trusted_network:
                args.append("--trusted-network")
            self.children[slot] = spawn_splitrl(args, threads=self.threads, log_path=self.work_dir / f"worker{slot}.log",
                                                env=self.env)
        remote = [s for s in range(self.processes) if s not in self.local]
        if remote:
            print(f"waiting for remote slots {remote}: on each machine run\n  splitrl tp worker --rank R --world "
                  f"{self.processes} --master {addr} --trusted-network", flush=True)
        deadline = time.monotonic() + self.join_timeout_s
        for slot in range(self.processes):
            while True:
                if self.store.check([f"tp/hello/{slot}"]):
                    self.pids[slot] = json.loads(self.store.get(f"tp/hello/{slot}"))["pid"]
                    break
                ch = self.children.get(slot)
                if ch is not None and not ch.alive():
                    raise RankFailure(f"worker slot {slot} (pid {ch.pid}) exited with status {ch.popen.returncode} "
                                      f"at start-up:\n{ch.log_tail()}", slot)
                if time.monotonic() > deadline:
                    raise RankFailure(f"worker slot {slot} did not join the store at {addr} within "
                                      f"{self.join_timeout_s:.0f} s", slot)
                time.sleep(0.05)
        return self

    def close(self) -> None:
        if self.store is not None:
            try:
                self._send({"op": "shutdown"})
            except Exception:
                pass
        for ch in self.children.values():
            try:
                ch.popen.wait(timeout=10)
            except Exception:
                pass
            ch.stop()
        self.children.clear()

    def __enter__(self) -> "TPCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------
    def _send(self, cmd: dict[str, Any]) -> int:
        seq = self.seq
        self.store.set(f"tp/cmd/{seq}", json.dumps(cmd).encode())
        self.seq += 1
        return seq

    def _diagnose(self, waiting: list[int]) -> RankFailure | None:
        """A dead or stopped local child among the group, named (None if all look alive)."""
        for slot in self.ranks:
            ch = self.children.get(slot)
            if ch is None:
                continue
            rank = self.ranks[slot]
            if not ch.alive():
                rc = ch.popen.returncode
                how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
                return RankFailure(f"rank {rank} (slot {slot}, pid {ch.pid}) {how}", slot, rank)
            if _proc_state(ch.pid) == "T":
                return RankFailure(f"rank {rank} (slot {slot}, pid {ch.pid}) is stopped (SIGSTOP): hung", slot, rank)
        return None

    def _laggard(self) -> tuple[int | None, int | None]:
        """The rank with the least progress this generation (a hung remote rank)."""
        worst, worst_slot = None, None
        for slot, rank in self.ranks.items():
            k = f"tp/progress/{self.generation}/{rank}"
            p = int(self.store.get(k)) if self.store.check([k]) else -1
            if worst is None or p < worst:
                worst, worst_slot = p, slot
        return worst_slot, (self.ranks.get(worst_slot) if worst_slot is not None else None)

    def _collect(self, seq: int, timeout_s: float) -> dict[int, dict[str, Any]]:
        """Results of command ``seq`` from every slot of the group, or a `RankFailure` within the bound."""
        deadline = time.monotonic() + timeout_s
        out: dict[int, dict[str, Any]] = {}
        while True:
            for slot in self.ranks:
                if slot not in out and self.store.check([f"tp/res/{seq}/{slot}"]):
                    out[slot] = json.loads(self.store.get(f"tp/res/{seq}/{slot}"))
            if len(out) == len(self.ranks):
                break
            bad = self._diagnose([s for s in self.ranks if s not in out])
            if bad is not None:
                raise bad
            if time.monotonic() > deadline:
                slot, rank = self._laggard()
                missing = [s for s in self.ranks if s not in out]
                raise RankFailure(f"no result from slots {missing} after {timeout_s:.0f} s; rank {rank} "
                                  f"(slot {slot}) made the least progress: hung or unreachable", slot, rank)
            time.sleep(0.002)
        errors = {s: r for s, r in out.items() if not r.get("ok")}
        if errors:
            # A peer error names who failed to deliver; the failing rank itself may report a different error.
            peers = [r.get("peer") for r in errors.values() if r.get("peer") is not None and r.get("peer") >= 0]
            bad = self._diagnose([])
            if bad is not None:
                raise bad
            if peers:
                rank = max(set(peers), key=peers.count)
                slot = next((s for s, r in self.ranks.items() if r == rank), None)
                raise RankFailure(f"rank {rank} (slot {slot}) failed: "
                                  + "; ".join(r["error"] for r in errors.values()), slot, rank)
            s, r = next(iter(errors.items()))
            if r.get("error", "").startswith("UsageError"):
                raise UsageError(r["error"].split(": ", 1)[1])
            raise RankFailure(f"rank {r.get('rank')} (slot {s}) failed: {r.get('error')}\n{r.get('trace', '')}",
                              s, r.get("rank"))
        return out

    def setup(self, config: TPRunConfig, slots: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
        """(Re-)form a group over ``slots`` (default: the first alive slots the shards need) and load its shards (``config.shard_dir``)."""
        manifest_path = Path(config.shard_dir) / "manifest.json"
        if not manifest_path.is_file():
            raise UsageError(f"shard_dir: no manifest.json in {config.shard_dir}")
        manifest = json.loads(manifest_path.read_text())
        world = int(manifest["plan"]["world"])
        if slots is None:
            if world > len(self.alive):
                raise UsageError(f"shard_dir is for {world} ranks, only {len(self.alive)} worker slots are alive")
            slots = self.alive[:world]
        slots = list(slots)
        if manifest["plan"]["world"] != len(slots):
            raise UsageError(f"shard_dir is for {manifest['plan']['world']} ranks, asked for {len(slots)} slots")
        self.generation += 1
        self.ranks = {s: r for r, s in enumerate(slots)}
        self.config = config
        self.timeout_s = config.timeout_s
        seq = self._send({"op": "setup", "generation": self.generation, "ranks": self.ranks, "config": config.to_dict()})
        return self._collect(seq, config.timeout_s + 120.0)

    def _request(self, cmd: dict[str, Any]) -> dict[int, dict[str, Any]]:
        if self.config is None:
            raise UsageError("call setup() before running requests")
        cmd = dict(cmd, ranks=self.ranks)
        seq = self._send(cmd)
        res = self._collect(seq, 4 * self.timeout_s + 60.0)
        res[-1] = {"seq": seq}
        return res

    def _by_rank(self, res: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        return [res[s] for s, _ in sorted(self.ranks.items(), key=lambda kv: kv[1])]

    def generate(self, prompt: Sequence[int], max_new_tokens: int = 32, *, sampling: dict | None = None,
                 stop_at_eos: bool = True, sample_memory: bool = False, retries: int = 0,
                 reshard: Any = None) -> TPGeneration:
        """Generate from token ids; ``retries`` re-forms the group without a failed rank (needs ``reshard``).

        ``reshard(survivor_count) -> shard_dir`` writes shards for the smaller group.
        """
        if max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
        cmd = {"op": "generate", "prompt": [int(t) for t in prompt], "max_new_tokens": int(max_new_tokens),
               "sampling": sampling or {}, "stop_at_eos": bool(stop_at_eos), "sample_memory": sample_memory}
        attempt = 0
        while True:
            try:
                res = self._request(cmd)
                break
            except RankFailure as e:
                if attempt >= retries or reshard is None or e.slot is None:
                    raise
                attempt += 1
                self._drop(e.slot)
                survivors = [s for s in self.alive]
                new_dir = reshard(len(survivors))
                assert self.config is not None
                self.setup(replace(self.config, shard_dir=str(new_dir)), survivors)
        ranks = self._by_rank(res)
        master = ranks[0]
        return TPGeneration(master["tokens"], master["step_seconds"], ranks, len(ranks), attempt)

    def _drop(self, slot: int) -> None:
        """Stop a failed slot (by its pid) and forget it."""
        import signal

        ch = self.children.get(slot)
        if ch is not None:
            ch.signal(signal.SIGKILL)
            try:
                ch.popen.wait(timeout=10)
            except Exception:
                pass
        if slot in self.alive:
            self.alive.remove(slot)

    def logits(self, ids: Sequence[int]) -> torch.Tensor:
        """Logits ``[1, T, V]`` of one full forward through the group."""
        import numpy as np

        res = self._request({"op": "logits", "ids": [int(t) for t in ids]})
        seq = res[-1]["seq"]
        meta = self._by_rank(res)[0]["logits"]
        raw = self.store.get(f"tp/out/{seq}")
        arr = np.frombuffer(raw, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
        return torch.from_numpy(arr.copy())

    def nll(self, ids: Sequence[int], windows: Sequence[Sequence[int]]) -> dict[str, Any]:
        res = self._request({"op": "nll", "ids": [int(t) for t in ids], "windows": [list(map(int, w)) for w in windows]})
        return self._by_rank(res)[0]
