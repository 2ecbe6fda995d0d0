"""The split × channel × transport × seed sweep: perplexity per cell, appended to a CSV, resumable.

Each cell evaluates WikiText-2 perplexity with the model cut at ``split`` and the activations
crossing through a link (``awgn``, ``int8-biterr``, ``dropout``, ... — see `splitrl.link`) at one
channel level (SNR in dB, a raw BER, or a dropout probability). The prefix cache means a cell
runs only layers ``[split, L)``. Rows are appended and fsynced one by one; a restarted sweep
reads what is there (dropping a half-written last line), skips finished cells and goes on, so an
interrupted sweep loses and duplicates nothing. Every cell's noise seed derives from the base
seed and the cell's coordinates, so a resumed sweep writes exactly what an uninterrupted one would.

One writer per table: a sweep holds an exclusive ``flock`` on ``<out>.lock`` while it runs, so a
second ``splitrl sweep --out`` on the same file stops at once with one line and the first is
untouched. Grids are capped (`MAX_CELLS`); a cell whose perplexity is not finite (the link
destroyed the activations) is written with ``ppl_finite = False`` and counted in the summary.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from splitrl.channel.state import ChannelState
from splitrl.errors import UsageError
from splitrl.link import LINK_NAMES, codec_for
from splitrl.link.factory import link_at, state_for
from splitrl.lock import ExclusiveLock
from splitrl.plotting import pyplot, save_figure
from splitrl.provenance import run_record
from splitrl.quant import PRECISIONS

LEVEL_KINDS = ("snr", "ber", "dropout")
COLUMNS = [
    "model", "transport", "level_kind", "level", "snr_db", "ber", "bler", "split", "seed_index", "seed",
    "ppl", "nll", "clean_ppl", "log_ppl_ratio", "scored_tokens", "bytes_per_token", "seconds",
    "emulated_ttft_s", "emulated_tpot_s", "emulated_e2e_latency_s", "emulated_ue_energy_j_per_token",
    "emulated_bytes_on_air", "ppl_finite", "ue_precision",
]
# Tables written before ppl_finite / ue_precision existed are read and resumed as they are
# (a row without ue_precision ran fp32 weights).
OLD_COLUMNS = COLUMNS[:-2]
FP32_COLUMNS = COLUMNS[:-1]
EMULATED = COLUMNS[-7:-2]
MAX_CELLS = 100_000  # a grid larger than this is refused (split it into several sweeps)
MAX_LEVELS = 10_000
PROVENANCE_KEY = "runs"  # meta.json key listing the runs that wrote the table (not compared on resume)


@dataclass
class SweepConfig:
    """One sweep grid.

    Attributes:
        model: model name or path (see `splitrl.models.load_model`).
        splits: split points to evaluate (each in 0..L).
        levels: channel levels (SNR dB for ``snr``, bit error rate for ``ber``, probability for ``dropout``).
        level_kind: ``snr``, ``ber`` or ``dropout``.
        transports: link names (`splitrl.link.LINK_NAMES`), e.g. ``awgn``, ``int8-biterr``.
        seeds: repeat draws of the corruption per cell (>= 1).
        base_seed: root of every cell's seed.
        modulation: maps SNR to BER for ``*-biterr``/``*-erasure`` transports (uncoded, AWGN).
        erasure_block_bytes: block size turning BER into block error rate for ``*-erasure``.
        tokens, window, stride: perplexity setup (see `PerplexityConfig`).
        corpus_path: WikiText-2 file (None: default location).
        ue_profile, edge_profile, link_profile: devices and radio of the emulated latency/energy columns.
        prompt_tokens, new_tokens: the request those columns describe.
        ue_precisions: weight precisions of the UE's layers ``[0, s)`` (`splitrl.quant.PRECISIONS`);
            the edge runs fp32. The clean reference (``clean_ppl``) is the fp32 model, so
            ``log_ppl_ratio`` carries the precision's cost as well as the link's.
    """

    model: str = "smollm2-135m"
    splits: list[int] = field(default_factory=list)
    levels: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0])
    level_kind: str = "snr"
    transports: list[str] = field(default_factory=lambda: ["awgn", "int8-biterr"])
    seeds: int = 3
    base_seed: int = 0
    modulation: str = "qpsk"
    erasure_block_bytes: int = 128
    tokens: int = 1024
    window: int = 1024
    stride: int = 1024
    corpus_path: str | None = None
    ue_profile: str = "phone-midrange"
    edge_profile: str = "edge-a100"
    link_profile: str = "nr-sub6-20mhz"
    prompt_tokens: int = 128
    new_tokens: int = 32
    ue_precisions: list[str] = field(default_factory=lambda: ["fp32"])

    def __post_init__(self) -> None:
        bad_p = [p for p in self.ue_precisions if p not in PRECISIONS]
        if bad_p or not self.ue_precisions or len(set(self.ue_precisions)) != len(self.ue_precisions):
            raise UsageError(f"ue_precisions {self.ue_precisions}: must be distinct names from {', '.join(PRECISIONS)}")

        # One cell per coordinate: a repeated split, transport or level (5 and 5.0, -0 and 0, or levels
        # equal to 6 significant digits, which share a row key) would write the same cell twice.
        self.splits = _unique(self.splits, int)
        self.transports = _unique(self.transports, str)
        self.levels = [float(v) + 0.0 for v in _unique(self.levels, _level_key)]
        if self.level_kind not in LEVEL_KINDS:
            raise UsageError(f"level_kind must be one of {', '.join(LEVEL_KINDS)}, got {self.level_kind!r}")
        if self.seeds < 1:
            raise UsageError(f"seeds must be >= 1, got {self.seeds}")
        if not all(math.isfinite(float(v)) for v in self.levels) or not self.levels:
            raise UsageError(f"levels must be finite numbers (at least one), got {self.levels[:5]}")
        n = len(self.splits) * len(self.levels) * len(self.transports) * self.seeds * len(self.ue_precisions)
        if n > MAX_CELLS:
            raise UsageError(f"the grid has {n} cells (splits {len(self.splits)} x levels {len(self.levels)} x transports "
                             f"{len(self.transports)} x seeds {self.seeds}); at most {MAX_CELLS}: split it into several sweeps")
        bad = [t for t in self.transports if t not in LINK_NAMES]
        if bad or not self.transports:
            raise UsageError(f"transports {bad or '[]'} not allowed; choose from {', '.join(LINK_NAMES)}")
        if self.level_kind == "dropout" and any(not 0 <= p < 1 for p in self.levels):
            raise UsageError("dropout levels must be probabilities in [0, 1)")
        if self.level_kind == "ber" and any(not 0 <= p <= 0.5 for p in self.levels):
            raise UsageError("ber levels must be in [0, 0.5]")

    def identity(self) -> dict:
        """Fields that must match for rows to be appended to an existing table."""
        d = asdict(self)
        for k in ("splits", "levels", "transports", "seeds", "ue_precisions"):  # the grid may grow between runs
            d.pop(k)
        return d


@dataclass(frozen=True)
class Cell:
    transport: str
    split: int
    level: float
    seed_index: int
    ue_precision: str = "fp32"

    @property
    def key(self) -> tuple:
        return (self.transport, self.split, _level_key(self.level), self.seed_index, self.ue_precision)


def _level_key(level: float) -> str:
    return f"{float(level) + 0.0:.6g}"  # (+ 0.0: -0.0 is 0.0)


def _unique(values, key) -> list:
    """``values`` without repeats (by ``key``), in first-seen order."""
    seen, out = set(), []
    for v in values:
        k = key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def cell_seed(base_seed: int, cell: Cell) -> int:
    """A 32-bit seed determined by the base seed and the cell's coordinates (order independent)."""
    ss = np.random.SeedSequence(
        [base_seed, zlib.crc32(cell.transport.encode()), cell.split, zlib.crc32(_level_key(cell.level).encode()), cell.seed_index]
    )
    return int(ss.generate_state(1)[0])


def channel_state(config: SweepConfig, transport: str, level: float) -> ChannelState:
    """The per-cell channel state the link sees (recorded in the table)."""
    if config.level_kind == "dropout":
        return ChannelState(snr_db=float("nan"))
    kw = {"snr_db": float(level)} if config.level_kind == "snr" else {"ber": float(level)}
    return state_for(transport, modulation=config.modulation, erasure_block_bytes=config.erasure_block_bytes, **kw)


def build_link(config: SweepConfig, transport: str, level: float, seed: int, vocab_size: int):
    """The cell's link, set to the cell's channel level."""
    kw: dict = {"dropout_p": float(level)} if config.level_kind == "dropout" else (
        {"snr_db": float(level)} if config.level_kind == "snr" else {"ber": float(level)})
    return link_at(transport, seed=seed, modulation=config.modulation,
                   erasure_block_bytes=config.erasure_block_bytes, vocab_size=vocab_size, **kw)


class Emulator:
    """Emulated latency/energy of a cell from `splitrl.cost.CostModel` (one model per codec)."""

    def __init__(self, config: SweepConfig, view) -> None:
        self.config, self.view, self._models = config, view, {}

    def __call__(self, transport: str, split: int, snr_db: float) -> dict:
        if not np.isfinite(snr_db):  # ber/dropout sweeps have no SNR to cost
            return {k: float("nan") for k in EMULATED}
        # lazy: splitrl.cost imports transformers, which reading, plotting and merging tables do without
        from splitrl.cost import CostModel

        c = self.config
        codec = codec_for(transport)
        if codec not in self._models:
            self._models[codec] = CostModel(self.view, c.ue_profile, c.edge_profile, c.link_profile, codec=codec)
        e = self._models[codec].estimate(int(split), snr_db=float(snr_db), prompt_tokens=c.prompt_tokens,
                                         new_tokens=c.new_tokens)
        return {"emulated_ttft_s": e.ttft_s, "emulated_tpot_s": e.tpot_s, "emulated_e2e_latency_s": e.e2e_latency_s,
                "emulated_ue_energy_j_per_token": e.ue_energy_j_per_token, "emulated_bytes_on_air": e.bytes_on_air}


def cells(config: SweepConfig) -> list[Cell]:
    return [
        Cell(t, s, float(lv), r, p)
        for p in config.ue_precisions for s in config.splits for t in config.transports for lv in config.levels
        for r in range(config.seeds)
    ]


def _row_key(r: dict) -> tuple:
    """A CSV row's `Cell.key` (a row from before ``ue_precision`` ran fp32 weights)."""
    return (r["transport"], int(r["split"]), _level_key(float(r["level"])), int(r["seed_index"]),
            r.get("ue_precision") or "fp32")


def _add_precision_column(path: Path) -> list[str]:
    """Rewrite a table from before ``ue_precision`` with that column (``fp32``), atomically; new columns."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "ue_precision": "fp32"})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return COLUMNS


def read_done(path: Path) -> set[tuple]:
    """Keys of complete rows; a half-written last line (killed mid-write) is cut off the file.
    Call it only while holding the table's lock (`run_sweep` does)."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        raw = raw[:cut]
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    if reader.fieldnames and reader.fieldnames not in (COLUMNS, FP32_COLUMNS, OLD_COLUMNS):
        raise UsageError(f"{path} is not a sweep table of this version (its columns differ); write to a new file")
    done: set[tuple] = set()
    kept: list[dict] = []
    try:
        for r in reader:
            k = _row_key(r)
            if k not in done:
                done.add(k)
                kept.append(r)
    except (TypeError, ValueError, KeyError):
        raise UsageError(f"{path} has a malformed row (two writers at once, or edited by hand); write to a new file") from None
    if len(kept) < reader.line_num - 1:  # a cell written twice (an older version, or concatenated tables): keep the first
        tmp = path.with_name(path.name + f".dedup{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=reader.fieldnames)
            w.writeheader()
            w.writerows(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return done


class TableLock(ExclusiveLock):
    """Exclusive, non-waiting lock (`splitrl.lock.ExclusiveLock`) on ``<table>.lock`` for the life of one sweep."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.with_name(path.name + ".lock"), lambda holder: UsageError(
            f"another sweep (pid {holder}) is writing {path}; wait for it to finish or choose another --out"))


def run_sweep(
    config: SweepConfig,
    out: str | os.PathLike,
    *,
    progress: bool = True,
    loaded=None,
) -> Path:
    """Run (or resume) the sweep, appending one CSV row per finished cell. Returns the CSV path."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a CSV file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = TableLock(path)
    try:
        return _run_sweep_locked(config, path, progress=progress, loaded=loaded)
    finally:
        lock.release()


def _write_meta(meta_path: Path, config: SweepConfig, runs: list) -> None:
    """The table's setup (`SweepConfig.identity`) plus, under ``runs``, the provenance of every run
    that appended rows (command, git revision, machine, load: `splitrl.provenance.run_record`)."""
    meta = {**config.identity(), PROVENANCE_KEY: [*runs, run_record()]}
    tmp = meta_path.with_name(meta_path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)


def _previous_runs(config: SweepConfig, path: Path, meta_path: Path) -> list:
    """The provenance records of the runs that wrote the table so far; ValueError if its setup is another one."""
    if not meta_path.exists():
        return []
    try:
        previous = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"{meta_path} is unreadable; write to a new file") from None
    previous = previous if isinstance(previous, dict) else {}
    runs = list(previous.pop(PROVENANCE_KEY, None) or [])  # who wrote the rows is not part of the setup
    if previous != config.identity():
        raise UsageError(
            f"{path} was written by a different sweep setup ({meta_path}); "
            f"differences: {sorted(k for k in previous if previous.get(k) != config.identity().get(k))[:10]}. "
            "Write to a new file."
        )
    return runs


def _table_columns(path: Path, todo: list[Cell]) -> tuple[bool, list[str]]:
    """(whether the table is new, the columns rows are written with): an older table keeps its own."""
    new_file = not path.exists() or path.stat().st_size == 0
    columns = COLUMNS
    if not new_file:
        with open(path, newline="") as f:
            columns = next(csv.reader(f), COLUMNS)
        if "ue_precision" not in columns and any(c.ue_precision != "fp32" for c in todo):
            if columns != FP32_COLUMNS:
                raise UsageError(f"{path} predates the ppl_finite column; write other precisions to a new file")
            columns = _add_precision_column(path)
    return new_file, columns


def _cell_row(config: SweepConfig, cell: Cell, evaluator, clean: float, emulate: Emulator, vocab_size: int) -> dict:
    """Evaluate one cell: its table row (perplexity through the cell's link, then the emulated columns)."""
    seed = cell_seed(config.base_seed, cell)
    link = build_link(config, cell.transport, cell.level, seed, vocab_size)
    state = channel_state(config, cell.transport, cell.level)
    r = evaluator.evaluate(cell.split, link, precision=(cell.ue_precision, "fp32"))
    n_tok = evaluator.input_ids.shape[1]
    row = {
        "model": config.model, "transport": cell.transport, "level_kind": config.level_kind,
        "level": cell.level, "snr_db": state.snr_db, "ber": state.ber, "bler": state.bler,
        "split": cell.split, "seed_index": cell.seed_index, "seed": seed,
        "ppl": r.ppl, "nll": r.nll, "clean_ppl": clean,
        "log_ppl_ratio": math.log(r.ppl / clean) if math.isfinite(r.ppl) else float("nan"),
        "ppl_finite": math.isfinite(r.ppl),
        "scored_tokens": r.scored_tokens, "bytes_per_token": link.bytes_total / max(1, n_tok),
        "seconds": r.seconds, "ue_precision": cell.ue_precision,
    }
    row.update(emulate(cell.transport, cell.split, state.snr_db))
    return row


def _run_sweep_locked(config: SweepConfig, path: Path, *, progress: bool, loaded) -> Path:
    """`run_sweep` once the table's lock is held: check the setup, evaluate the missing cells, append their rows."""
    # lazy: model and perplexity code import transformers; reading, plotting and merging tables do without
    from splitrl.eval import PerplexityConfig, PerplexityEvaluator
    from splitrl.models import load_model

    meta_path = path.with_suffix(path.suffix + ".meta.json")
    runs = _previous_runs(config, path, meta_path)
    done = read_done(path)
    todo = [c for c in cells(config) if c.key not in done]
    if todo or not meta_path.exists():
        _write_meta(meta_path, config, runs)
    loaded = loaded or load_model(config.model)
    L = loaded.view.num_layers
    bad = [s for s in config.splits if not 0 <= s <= L]
    if bad:
        raise UsageError(f"split points {bad} out of range: allowed 0..{L} for {config.model}")
    kill_after = int(os.environ.get("SPLITRL_SWEEP_KILL_AFTER", "0"))  # test hook: a real SIGKILL mid-sweep
    if not todo:
        return path
    evaluator = PerplexityEvaluator(
        loaded, PerplexityConfig(tokens=config.tokens, window=config.window, stride=config.stride, corpus_path=config.corpus_path)
    )
    clean = evaluator.evaluate(L).ppl
    emulate = Emulator(config, loaded.view)
    new_file, columns = _table_columns(path, todo)
    non_finite = 0
    bar = tqdm(total=len(cells(config)), initial=len(cells(config)) - len(todo), desc="sweep", unit="cell",
               disable=not progress, smoothing=0.05)
    written = 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for cell in todo:
            row = _cell_row(config, cell, evaluator, clean, emulate, loaded.view.vocab_size)
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())  # one durable row per cell: a killed sweep resumes after the last one
            written += 1
            bar.update(1)
            non_finite += not math.isfinite(row["ppl"])
            bar.set_postfix(split=cell.split, ppl=f"{row['ppl']:.3g}", non_finite=non_finite)
            if kill_after and written >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    return path


TABLE_NEEDS = ("model", "transport", "level_kind", "level", "split", "seed_index", "ppl", "clean_ppl", "log_ppl_ratio")


def read_sweep_table(path: str | os.PathLike, *, needs: tuple[str, ...] = TABLE_NEEDS,
                     ue_precision: str | None = "fp32"):
    """The sweep CSV at ``path`` as a DataFrame, or one `UsageError` line saying why it is not one.

    Only the rows of ``ue_precision`` (None: every row; a table from before the column is fp32),
    so a reader that groups by split and level never averages over precisions.
    """
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"sweep table {p} is a folder, not a CSV file")
    if not p.is_file():
        raise UsageError(f"no sweep table at {p} (write one with `splitrl sweep --out {p.name}`)")
    try:
        df = pd.read_csv(p)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as e:
        raise UsageError(f"sweep table {p} is not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise UsageError(f"{p} is not a sweep table written by `splitrl sweep` (missing columns {missing[:5]})")
    if "ue_precision" not in df.columns:
        df["ue_precision"] = "fp32"
    if ue_precision is not None:
        df = df[df["ue_precision"] == ue_precision].reset_index(drop=True)
    if df.empty:
        raise UsageError(f"sweep table {p} has no rows" + (f" with ue_precision {ue_precision}" if ue_precision else ""))
    return df


def parse_range(text: str, upper: int | None = None) -> list[int]:
    """``all`` | ``a-b`` | ``a,b,c`` -> sorted ints."""
    if text == "all":
        if upper is None:
            raise UsageError("'all' needs the number of layers")
        return list(range(upper + 1))
    allowed = f"--splits must be 'all', a range 'a-b' or a list 'a,b,c' of split points, got {text[:60]!r}"
    out: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                if int(b) - int(a) > MAX_CELLS:
                    raise UsageError(allowed)
                out.update(range(int(a), int(b) + 1))
            elif part.strip():
                out.add(int(part))
    except ValueError:  # int() of a non-number, or the range above (a UsageError is a ValueError)
        raise UsageError(allowed) from None
    if not out:
        raise UsageError("--splits names no split point")
    return sorted(out)


def parse_levels(text: str) -> list[float]:
    """``start:stop:step`` (inclusive) or comma-separated values."""
    allowed = f"--levels must be 'start:stop:step' or 'a,b,c' of finite numbers, got {text[:60]!r}"
    try:
        if ":" in text:
            a, b, st = (float(x) for x in text.split(":"))
            if not all(map(math.isfinite, (a, b, st))):
                raise UsageError(allowed)
            if st <= 0:
                raise UsageError("--levels: the step must be > 0")
            n = int(math.floor((b - a) / st + 1e-9)) + 1
            if n > MAX_LEVELS:
                raise UsageError(f"--levels {text[:60]!r} gives {n} levels; at most {MAX_LEVELS}")
            values = [round(a + i * st, 10) for i in range(max(n, 0))]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except UsageError:
        raise
    except ValueError:
        raise UsageError(allowed) from None
    if not values or not all(map(math.isfinite, values)):
        raise UsageError(allowed)
    return values


def best_splits(df, tolerance: float = 0.05):
    """The best split per (transport, level): the lowest emulated end-to-end latency among the
    splits whose mean perplexity is within ``tolerance`` of the clean one (None where no split
    qualifies or the table has no emulated latency). A DataFrame: transport, level, split,
    ppl, latency_s, energy_j_per_token."""
    import pandas as pd

    g = df.groupby(["transport", "level", "split"]).agg(
        ppl=("ppl", "mean"), clean=("clean_ppl", "first"), latency_s=("emulated_e2e_latency_s", "mean"),
        energy_j_per_token=("emulated_ue_energy_j_per_token", "mean")).reset_index()
    rows = []
    for (t, lv), cell in g.groupby(["transport", "level"]):
        ok = cell[np.isfinite(cell.ppl) & (cell.ppl <= cell.clean * (1 + tolerance)) & np.isfinite(cell.latency_s)]
        if ok.empty:
            rows.append({"transport": t, "level": lv, "split": None, "ppl": float("nan"), "latency_s": float("nan"),
                         "energy_j_per_token": float("nan")})
        else:
            b = ok.loc[ok.latency_s.idxmin()]
            rows.append({"transport": t, "level": lv, "split": int(b.split), "ppl": float(b.ppl),
                         "latency_s": float(b.latency_s), "energy_j_per_token": float(b.energy_j_per_token)})
    return pd.DataFrame(rows)


def table_text(df, *, max_splits: int = 40) -> str:
    """Mean perplexity as a printed split x level table, one block per transport (non-finite: ``inf``)."""
    kind = str(df["level_kind"].iloc[0])
    lines = []
    for t in dict.fromkeys(df["transport"]):
        grid = df[df.transport == t].groupby(["split", "level"])["ppl"].mean().unstack("level").sort_index()
        grid = grid.iloc[:max_splits]
        head = f"{'split':>5} | " + " ".join(f"{lv:>9g}" for lv in grid.columns)
        lines += [f"{t}: mean perplexity over seeds (clean {df['clean_ppl'].iloc[0]:.4g}); columns: {kind} level",
                  head, "-" * len(head)]
        for split, row in grid.iterrows():
            lines.append(f"{int(split):>5} | " + " ".join(f"{v:>9.4g}" if np.isfinite(v) else f"{'inf':>9}" for v in row))
        lines.append("")
    return "\n".join(lines).rstrip()


def plot_sweep(csv_path: str | os.PathLike, out: str | os.PathLike | None = None, *, tolerance: float = 0.05) -> Path:
    """What a reader of a split x channel sweep looks at, one PNG:

    row per transport — (1) perplexity vs channel level, one line per split (log y; non-finite
    perplexity drawn at the top of the axis as x marks), (2) emulated end-to-end latency and
    (3) UE energy per token as split x level heatmaps (SNR sweeps, from the emulated columns);
    last row — the best split per level (lowest latency within ``tolerance`` of clean perplexity)."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    df = read_sweep_table(csv_path)
    transports = list(dict.fromkeys(df["transport"]))
    kind = str(df["level_kind"].iloc[0])
    xlabel = {"snr": "SNR (dB)", "ber": "bit error rate", "dropout": "dropout p"}.get(kind, kind)
    has_cost = kind == "snr" and all(c in df for c in EMULATED) and df[EMULATED[2]].notna().any()
    ncols = 3 if has_cost else 1
    fig, axes = plt.subplots(len(transports) + 1, ncols, figsize=(6.0 * ncols, 4.2 * (len(transports) + 1)),
                             squeeze=False)
    clean = float(df["clean_ppl"].iloc[0])
    finite = df["ppl"][np.isfinite(df["ppl"])]
    top = float(finite.max()) * 2 if len(finite) else clean * 10
    for r, t in enumerate(transports):
        sub = df[df.transport == t]
        mean = sub.groupby(["split", "level"])["ppl"].mean().unstack("split").sort_index()
        ax = axes[r][0]
        cmap = plt.get_cmap("viridis")
        splits = list(mean.columns)
        for i, sp in enumerate(splits):
            y = mean[sp].to_numpy(float)
            color = cmap(i / max(1, len(splits) - 1))
            ax.plot(mean.index, np.where(np.isfinite(y), y, np.nan), color=color, lw=1.2, label=f"s={sp}")
            bad = ~np.isfinite(y)
            if bad.any():
                ax.scatter(np.asarray(mean.index)[bad], np.full(bad.sum(), top), marker="x", color=color)
        ax.axhline(clean, color="k", ls="--", lw=1, label=f"clean {clean:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("perplexity (log)")
        ax.set_title(f"{t}: perplexity per split (x: not finite)")
        if len(splits) <= 12:
            ax.legend(fontsize=7, ncol=2)
        else:
            sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(min(splits), max(splits)))
            fig.colorbar(sm, ax=ax, label="split point s")
        if has_cost:
            for c, (col, label) in enumerate([("emulated_e2e_latency_s", "emulated end-to-end latency (s)"),
                                              ("emulated_ue_energy_j_per_token", "UE energy per token (J)")], start=1):
                grid = sub.groupby(["level", "split"])[col].mean().unstack("split").sort_index()
                vals = grid.to_numpy(float)
                pos = vals[np.isfinite(vals) & (vals > 0)]
                norm = LogNorm(vmin=pos.min(), vmax=max(pos.max(), pos.min() * 1.0001)) if len(pos) else None
                im = axes[r][c].imshow(vals, aspect="auto", origin="lower", cmap="magma", norm=norm,
                                       extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5, -0.5, len(grid.index) - 0.5))
                axes[r][c].set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index])
                axes[r][c].set_xlabel("split point s (layers on the UE)")
                axes[r][c].set_ylabel(xlabel)
                axes[r][c].set_title(f"{t}: {label}")
                fig.colorbar(im, ax=axes[r][c], label=label + " (log)")
    ax = axes[-1][0]
    if has_cost:
        best = best_splits(df, tolerance)
        for t in transports:
            b = best[best.transport == t]
            ax.step(b.level, [np.nan if v is None else v for v in b.split], where="mid", marker="o", label=t)
        ax.set_ylim(-0.5, int(df["split"].max()) + 0.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("best split s (0: token ids cross, all layers on the edge)")
        ax.set_title(f"best split: lowest latency within {tolerance:.0%} of clean perplexity")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "best-split map needs an SNR sweep with emulated latency", ha="center", va="center")
        ax.set_axis_off()
    for c in range(1, ncols):
        axes[-1][c].set_axis_off()
    fig.suptitle(f"{df['model'].iloc[0]} on WikiText-2: split x channel sweep, mean over seeds")
    out_path = Path(out) if out else Path(csv_path).with_suffix(".png")
    save_figure(fig, out_path, dpi=110)
    return out_path


def record_plot(csv_path: str | os.PathLike, png: str | os.PathLike) -> bool:
    """Append this run (`splitrl plot`) to the table's sidecar ``runs`` with the PNG it wrote, when the
    PNG sits beside the table (a committed result); False when there is no sidecar or it is elsewhere."""
    csv_path, png = Path(csv_path), Path(png)
    meta_path = csv_path.with_suffix(csv_path.suffix + ".meta.json")
    if png.resolve().parent != csv_path.resolve().parent or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError):
        return False
    if not isinstance(meta, dict):
        return False
    runs = list(meta.get(PROVENANCE_KEY) or [])
    runs.append({**run_record(), "produced_files": [png.name]})
    tmp = meta_path.with_name(meta_path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({**meta, PROVENANCE_KEY: runs}, indent=2))
    os.replace(tmp, meta_path)
    return True


def merge_tables(dst: str | os.PathLike, src: str | os.PathLike) -> int:
    """Append to table ``dst`` the rows of table ``src`` (a shard of the same sweep run elsewhere,
    e.g. other splits in a second process) whose cells ``dst`` lacks. Both tables must come from
    the same setup (`SweepConfig.identity`, same columns, same clean perplexity); every cell's seed
    derives from its coordinates, so a merged table is what one sweep over the union would write.
    ``dst``'s meta gains ``src``'s runs (tagged ``merged_from``) and the merge's own record. Holds
    both tables' locks (a shard still being written is refused). Returns the rows appended."""
    dst_p, src_p = Path(dst), Path(src)
    for p in (dst_p, src_p):
        if not p.is_file() or not p.with_suffix(p.suffix + ".meta.json").is_file():
            raise UsageError(f"{p}: not a sweep table with its .meta.json (write it with `splitrl sweep --out {p.name}`)")
    if dst_p.resolve() == src_p.resolve():
        raise UsageError("--from: the shard must be another table than --out")
    locks = [TableLock(dst_p)]
    try:
        locks.append(TableLock(src_p))
    except UsageError:
        locks[0].release()
        raise
    try:
        metas = []
        for p in (dst_p, src_p):
            try:
                m = json.loads(p.with_suffix(p.suffix + ".meta.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                raise UsageError(f"{p}.meta.json is unreadable") from None
            if not isinstance(m, dict):
                raise UsageError(f"{p}.meta.json is not a sweep meta file")
            metas.append(m)
        ident = [{k: v for k, v in m.items() if k != PROVENANCE_KEY} for m in metas]
        if ident[0] != ident[1]:
            diff = sorted(k for k in set(ident[0]) | set(ident[1]) if ident[0].get(k) != ident[1].get(k))
            raise UsageError(f"{src_p} was written by a different sweep setup than {dst_p} (differences: {diff[:10]})")
        done = read_done(dst_p)
        read_done(src_p)  # cuts a half-written last line of the shard too
        with open(dst_p, newline="") as f:
            dst_rows = csv.DictReader(f)
            columns = dst_rows.fieldnames
            clean = next((r["clean_ppl"] for r in dst_rows), None)
        with open(src_p, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != columns:
                raise UsageError(f"{src_p} has other columns than {dst_p}; write to a new file")
            rows = list(reader)
        if clean is not None and rows and {r["clean_ppl"] for r in rows} != {clean}:
            raise UsageError(f"{src_p} has another clean perplexity than {dst_p}: not the same evaluation")
        new = []
        for r in rows:
            key = _row_key(r)
            if key not in done:
                done.add(key)
                new.append(r)
        with open(dst_p, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            for r in new:
                writer.writerow(r)
            f.flush()
            os.fsync(f.fileno())
        runs = list(metas[0].get(PROVENANCE_KEY) or [])
        runs += [{**r, "merged_from": str(src_p)} for r in (metas[1].get(PROVENANCE_KEY) or [])]
        runs.append({**run_record(), "merged_rows": len(new), "merged_from": str(src_p)})
        meta_path = dst_p.with_suffix(dst_p.suffix + ".meta.json")
        tmp = meta_path.with_name(meta_path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**ident[0], PROVENANCE_KEY: runs}, indent=2))
        os.replace(tmp, meta_path)
        return len(new)
    finally:
        for lock in locks:
            lock.release()
