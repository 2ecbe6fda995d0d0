"""The driver of a pipeline run: hosts the store, starts the stages, watches them, re-forms the ring.

`PipelineRun` is the Python API behind ``splitrl pipeline generate``. It computes nothing itself
(so its store outlives any stage): it publishes the `JobSpec` and generation 0's `Plan`, starts
the local stage processes (``python -m splitrl pipeline stage ...``, one thread each), and then
watches three things: the committed tokens (progress), the stages' liveness (exit status of local
children, heartbeats of every stage) and acknowledgements of a broken generation. When a stage
dies it records which stage and which samples were in flight, waits (bounded) for the survivors to
leave the broken group, and publishes the next generation over the survivors with the layers
re-split among them; the new starter replays every unfinished sample from its committed tokens.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from splitrl.cost.profiles import list_profiles
from splitrl.dist import Endpoint, check_trusted, connect_store
from splitrl.errors import UsageError
from splitrl.link import LINK_NAMES
from splitrl.models import load_model
from splitrl.pipeline.protocol import JobSpec, Plan, key
from splitrl.pipeline.stage import parse_committed
from splitrl.proc import ChildProcess, spawn_splitrl
from splitrl.quant import check_precision
from splitrl.runtime import InvalidPartitionError, Partition

__all__ = ["PipelineConfig", "PipelineResult", "PipelineRun", "PipelineFailure", "equal_cuts", "run_pipeline"]


class PipelineFailure(RuntimeError):
    """The run cannot go on (a stage failed at start-up, or no stage survived)."""


def equal_cuts(num_layers: int, stages: int) -> list[int]:
    """K-1 cuts giving K stages layer counts that differ by at most one (earlier stages get fewer)."""
    if stages < 1 or stages > max(1, num_layers):
        raise UsageError(f"stages must be in 1..{num_layers} for a {num_layers}-layer model, got {stages}")
    base, extra = divmod(num_layers, stages)
    sizes = [base + (1 if k >= stages - extra else 0) for k in range(stages)]
    cuts, acc = [], 0
    for s in sizes[:-1]:
        acc += s
        cuts.append(acc)
    return cuts


@dataclass
class PipelineConfig:
    """A pipeline run.

    Attributes:
        model: model name or path (`splitrl.models.load_model`).
        cuts: K-1 non-decreasing cut points; stage k runs layers ``[cuts[k-1], cuts[k])``.
        prompts: prompt texts (or give ``prompt_ids``).
        prompt_ids: prompt token ids (take precedence over ``prompts``).
        max_new_tokens: per run or per sample.
        stop_at_eos: a sample ends at the tokenizer's EOS token.
        do_sample, temperature, top_k, top_p, seed, seeds: token selection (see `JobSpec`).
        hop_links: a link name per hop (one name = every hop); hop K-1 returns to the starter.
        link_profile: emulate each hop's air time with this `splitrl.cost` link profile.
        snr_db: fixed per-hop SNRs (None: the profile's fading process).
        listen: where the driver hosts the store (``127.0.0.1:0`` = loopback, any free port).
        trusted_network: allow a non-loopback ``listen`` (gloo has no authentication).
        spawn: stage ids this driver starts itself (None = all); others join with ``pipeline stage``.
        threads: CPU threads per stage process.
        timeout_s: torch.distributed timeout per operation.
        heartbeat_timeout_s: a stage whose heartbeat is older than this is declared dead.
        reform: re-form the ring over the survivors after a stage death (else fail the run).
        log_dir: where stage logs go (default: a temporary folder).
        precisions: weight precision per stage id (one name = every stage; `splitrl.quant.PRECISIONS`);
            a stage keeps its precision when a re-formation gives it more layers.
    """

    model: str
    cuts: Sequence[int]
    prompts: Sequence[str] = ()
    prompt_ids: Sequence[Sequence[int]] | None = None
    max_new_tokens: int | Sequence[int] = 32
    stop_at_eos: bool = True
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    seeds: Sequence[int] | None = None
    hop_links: Sequence[str] = ("identity",)
    link_profile: str | None = None
    snr_db: Sequence[float] | None = None
    listen: str = "127.0.0.1:0"
    trusted_network: bool = False
    spawn: Sequence[int] | None = None
    threads: int = 1
    timeout_s: float = 60.0
    heartbeat_timeout_s: float = 3.0
    reform: bool = True
    log_dir: str | None = None
    precisions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.cuts = [int(c) for c in self.cuts]
        if not self.cuts:
            raise UsageError("--cuts: give K-1 >= 1 cut points (e.g. 10,20 for 3 stages)")
        if self.precisions is not None:
            k = len(self.cuts) + 1
            names = [self.precisions] if isinstance(self.precisions, str) else list(self.precisions)
            if len(names) == 1:
                names = names * k
            if len(names) != k:
                raise UsageError(f"--precision: one name or one per stage ({k}), got {','.join(names)}")
            self.precisions = [check_precision(p, "--precision") for p in names]
        if self.prompt_ids is None and not self.prompts:
            raise UsageError("--prompts: at least one prompt is needed")
        if self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}")
        if not self.timeout_s > 0 or not self.heartbeat_timeout_s > 0:
            raise UsageError("timeout_s and heartbeat_timeout_s must be > 0")
        for name in self.hop_links:
            if name not in LINK_NAMES:
                raise UsageError(f"--link: unknown link {name!r}; allowed: {', '.join(LINK_NAMES)}")
        if self.link_profile is not None:
            if self.link_profile not in list_profiles("link") and not Path(self.link_profile).is_file():
                raise UsageError(f"--link-profile: unknown {self.link_profile!r}; shipped: "
                                 f"{', '.join(list_profiles('link'))}, or a YAML path")

    @property
    def stages(self) -> int:
        return len(self.cuts) + 1


@dataclass
class SampleResult:
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass
class PipelineResult:
    """What a run produced and measured."""

    samples: list[SampleResult]
    plans: list[dict]
    failures: list[dict]
    reports: list[dict]
    wall_s: float
    tokens: int
    startup_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d

    def format(self) -> str:
        """A per-stage timing table of the last generation, plus failures."""
        lines = [f"{len(self.samples)} samples, {self.tokens} tokens in {self.wall_s:.2f} s "
                 f"({self.tokens_per_s:.1f} tok/s; start-up {self.startup_s:.1f} s)"]
        for f in self.failures:
            lines.append(f"  failure in generation {f['generation']}: stage(s) {f['dead_stages']} died; samples in "
                         f"flight {f['in_flight_samples']}; detected {f['detect_s']:.2f} s into the run; "
                         f"re-formed over {f['survivors']}")
        last_g = self.plans[-1]["generation"] if self.plans else 0
        lines.append("  stage  rank  layers    msgs  compute_s  recv_wait_s  air_wait_s  hop_bytes  hop_air_s  "
                     "param_MB  rss_MB")
        for r in sorted((r for r in self.reports if r["generation"] == last_g), key=lambda r: r["rank"]):
            hop = r.get("hop") or {}
            lines.append(
                f"  {r['stage']:>5}  {r['rank']:>4}  {r['layers'][0]:>2}-{r['layers'][1]:<4} {r['messages']:>6}  "
                f"{r['compute_s']:9.3f}  {r['recv_wait_s']:11.3f}  {r['air_wait_s']:10.3f}  "
                f"{hop.get('bytes', 0):>9}  {hop.get('air_s', 0.0):9.3f}  {r.get('param_bytes', 0) / 2**20:8.0f}  "
                f"{r.get('rss_bytes', 0) / 2**20:6.0f}"
            )
        return "\n".join(lines)


class PipelineRun:
    """One pipeline job: `start`, then `wait` (or use it as a context manager); `close` stops local stages."""

    def __init__(self, config: PipelineConfig, *, replan: Callable[[int, int], list[int]] | None = None) -> None:
        self.config = c = config
        # The driver computes nothing: tokenizer, config and fingerprint only, every weight on ``meta``.
        self.loaded = load_model(c.model, layers=(0, 0), embed=False, head=False)
        self.tokenizer = self.loaded.tokenizer
        L = self.loaded.view.num_layers
        try:
            Partition.of(list(c.cuts), L)
        except InvalidPartitionError as e:
            raise UsageError(f"--cuts: {e}") from None
        if c.prompt_ids is not None:
            prompts = [[int(t) for t in p] for p in c.prompt_ids]
        else:
            prompts = [list(self.tokenizer(p)["input_ids"]) for p in c.prompts]
        if any(len(p) == 0 for p in prompts):
            raise UsageError("--prompts: every prompt needs at least one token")
        n = len(prompts)
        mnt = [int(c.max_new_tokens)] * n if isinstance(c.max_new_tokens, int) else [int(m) for m in c.max_new_tokens]
        if len(mnt) != n or any(m < 1 for m in mnt):
            raise UsageError(f"max_new_tokens: one integer >= 1, or one per prompt ({n})")
        limit = self.loaded.view.max_positions
        if limit and any(len(p) + m > limit for p, m in zip(prompts, mnt)):
            raise UsageError(f"prompt + max_new_tokens exceeds the model's {limit} positions")
        hop_links = list(c.hop_links)
        eos = getattr(self.tokenizer, "eos_token_id", None) if c.stop_at_eos else None
        self.job = JobSpec(
            model=c.model, prompts=prompts, max_new_tokens=mnt, eos_token_id=eos, do_sample=c.do_sample,
            temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, seed=c.seed,
            seeds=None if c.seeds is None else [int(s) for s in c.seeds], hop_links=hop_links,
            link_profile=c.link_profile, snr_db=None if c.snr_db is None else [float(s) for s in c.snr_db],
            timeout_s=c.timeout_s, num_layers=L, fingerprint=self.loaded.fingerprint,
            precisions=None if c.precisions is None else list(c.precisions),
        )
        self.num_layers = L
        self.replan = replan or (lambda layers, k: equal_cuts(layers, k))
        self.endpoint = Endpoint.parse(c.listen, field="--listen")
        check_trusted(self.endpoint, c.trusted_network)
        self.store = None
        self.children: dict[int, ChildProcess] = {}
        self.plans: list[Plan] = []
        self.failures: list[dict] = []
        self._log_dir = Path(c.log_dir) if c.log_dir else Path(tempfile.mkdtemp(prefix="splitrl-pipeline-"))
        self._t0 = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.store.port)

    @property
    def master(self) -> str:
        return str(Endpoint(self.endpoint.host, self.port))

    def start(self) -> "PipelineRun":
        c = self.config
        self.store = connect_store(self.endpoint, host_store=True)
        self.store.set("job", self.job.to_json())
        plan = Plan(0, list(range(c.stages)), list(c.cuts))
        self.plans.append(plan)
        self.store.set(key("plan", 0), plan.to_json())
        spawn = range(c.stages) if c.spawn is None else c.spawn
        for sid in spawn:
            if not 0 <= int(sid) < c.stages:
                raise UsageError(f"--spawn: stage ids must be in 0..{c.stages - 1}, got {sid}")
            args = ["pipeline", "stage", "--rank", sid, "--world", c.stages, "--master", self.master]
            if c.trusted_network:
                args.append("--trusted-network")
            self.children[int(sid)] = spawn_splitrl(args, threads=c.threads,
                                                    log_path=self._log_dir / f"stage{sid}.log")
        self._t0 = time.perf_counter()
        self._wall0 = time.time()
        return self

    def close(self) -> None:
        if self.store is not None:
            try:
                self.store.set("final", "closed")
            except Exception:
                pass
        for child in self.children.values():
            child.stop(grace_s=10.0)

    def __enter__(self) -> "PipelineRun":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- watching ------------------------------------------------------------------------------
    def committed(self) -> list[list[int]]:
        """Tokens committed so far, per sample."""
        out = []
        for sid in range(len(self.job.prompts)):
            k = key("out", sid)
            out.append(parse_committed(self.store.get(k)) if self.store.check([k]) else [])
        return out

    def finished(self) -> list[bool]:
        return [self.store.check([key("done", sid)]) for sid in range(len(self.job.prompts))]

    def all_finished(self) -> bool:
        """Every sample finished (one store round trip: the driver's polling shares the stages' cores)."""
        return self.store.check([key("done", sid) for sid in range(len(self.job.prompts))])

    def _heartbeat_age(self, stage: int) -> float | None:
        k = key("hb", stage)
        if not self.store.check([k]):
            return None
        return time.time() - float(self.store.get(k).decode())

    def _errors(self) -> dict[int, str]:
        errs = {}
        for sid in range(self.config.stages):
            if self.store.check([key("error", sid)]):
                errs[sid] = self.store.get(key("error", sid)).decode()
        return errs

    def _dead(self, plan: Plan) -> set[int]:
        dead = set()
        for m in plan.members:
            child = self.children.get(m)
            if child is not None and not child.alive():
                dead.add(m)
                continue
            age = self._heartbeat_age(m)
            started = time.perf_counter() - self._t0
            if age is None:
                if started > 120.0 + self.config.heartbeat_timeout_s:
                    dead.add(m)  # never came up
            elif age > self.config.heartbeat_timeout_s:
                dead.add(m)
        return dead

    def _acked(self, plan: Plan) -> set[int]:
        return {m for m in plan.members if self.store.check([key("ack", plan.generation, m)])}

    def _check_errors(self) -> None:
        errs = self._errors()
        if errs:
            tails = "\n".join(f"--- stage {s}: {msg}\n{self._log_tail(s)}" for s, msg in errs.items())
            raise PipelineFailure(f"stage(s) {sorted(errs)} failed:\n{tails}")

    def _log_tail(self, stage: int) -> str:
        child = self.children.get(stage)
        return child.log_tail(1500) if child is not None else ""

    def _reform(self, plan: Plan, dead: set[int], t_detect: float) -> Plan:
        """Record the failure (``t_detect``: wall clock), wait for the survivors to leave generation g, publish g+1."""
        c = self.config
        in_flight = [sid for sid, done in enumerate(self.finished()) if not done]
        committed = {sid: len(t) for sid, t in enumerate(self.committed()) if sid in in_flight}
        deadline = time.monotonic() + c.heartbeat_timeout_s + c.timeout_s
        while time.monotonic() < deadline:
            dead |= self._dead(plan)
            if set(plan.members) <= (dead | self._acked(plan)):
                break
            time.sleep(0.02)
        dead |= set(plan.members) - self._acked(plan)  # never acknowledged in time: treat as dead
        for m in dead:
            if m in self.children:
                self.children[m].stop(grace_s=1.0)  # our own child: make sure it is gone (hung or stopped)
        survivors = [m for m in plan.members if m not in dead]
        record = {
            "generation": plan.generation, "dead_stages": sorted(dead), "in_flight_samples": in_flight,
            "committed_tokens": committed, "detected_at": t_detect, "detect_s": t_detect - self._wall0,
            "survivors": survivors,
        }
        self.failures.append(record)
        if not survivors or not c.reform:
            self.store.set("final", "failed")
            raise PipelineFailure(f"stage(s) {sorted(dead)} died in generation {plan.generation} with samples "
                                  f"{in_flight} in flight; {'no stage survived' if not survivors else 'reform off'}")
        new = Plan(plan.generation + 1, survivors, self.replan(self.num_layers, len(survivors)))
        self.plans.append(new)
        self.store.set(key("plan", new.generation), new.to_json())
        return new

    def wait(self, *, progress: bool = False, on_poll: Callable[["PipelineRun"], None] | None = None,
             poll_s: float = 0.1) -> PipelineResult:
        """Watch the run to the end (re-forming on stage deaths) and collect the result."""
        n = len(self.job.prompts)
        total = sum(self.job.max_new_tokens)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="tok", desc=f"pipeline K={self.config.stages} S={n}")
        plan = self.plans[-1]
        last_count = 0
        try:
            while True:
                if self.all_finished():
                    break
                self._check_errors()
                dead = self._dead(plan)
                acked = self._acked(plan)
                if (dead or acked) and not self.all_finished():  # (stages exit normally once all are done)
                    plan = self._reform(plan, dead, time.time())
                    if bar is not None:
                        bar.set_postfix_str(f"re-formed over stages {plan.members}")
                if on_poll is not None:
                    on_poll(self)
                if bar is not None:
                    count = sum(len(t) for t in self.committed())
                    bar.update(count - last_count)
                    last_count = count
                time.sleep(poll_s)
            wall = time.perf_counter() - self._t0
            # The members of the last generation publish their reports after the shutdown round.
            reports = []
            deadline = time.monotonic() + self.config.timeout_s
            for m in plan.members:
                k = key("report", plan.generation, m)
                while not self.store.check([k]) and time.monotonic() < deadline:
                    self._check_errors()
                    time.sleep(0.02)
            for p in self.plans:
                for m in p.members:
                    k = key("report", p.generation, m)
                    if self.store.check([k]):
                        reports.append(json.loads(self.store.get(k)))
        finally:
            if bar is not None:
                bar.close()
        samples = []
        for sid, toks in enumerate(self.committed()):
            reason = self.store.get(key("done", sid)).decode()
            samples.append(SampleResult(self.job.prompts[sid], toks,
                                        self.tokenizer.decode(toks, skip_special_tokens=True), reason))
        for child in self.children.values():
            try:
                child.popen.wait(timeout=30)
            except Exception:
                child.stop()
        # Generation time: from the first starter's start to the last starter's end (recoveries included);
        # model loading and group formation are reported apart as start-up.
        starters = [r for r in reports if r["rank"] == 0]
        if starters:
            t_first = min(r["t_start"] for r in starters)
            gen_wall = max(r["t_end"] for r in starters) - t_first
            startup = t_first - self._wall0
        else:
            gen_wall, startup = wall, 0.0
        return PipelineResult(samples, [asdict(p) for p in self.plans], self.failures, reports, gen_wall,
                              sum(len(s.token_ids) for s in samples), startup)


def run_pipeline(config: PipelineConfig, *, progress: bool = False) -> PipelineResult:
    """Start the stages, run the job to the end, stop the stages: the one-call Python API."""
    with PipelineRun(config) as run:
        return run.wait(progress=progress)
