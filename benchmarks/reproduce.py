#!/usr/bin/env python
"""Rerun committed benchmarks and check that their result files reproduce.

Every result JSON under ``benchmarks/results/`` records the command that wrote it (``command``,
from `splitrl.provenance.run_record`). This script reruns that very command — the recorded
interpreter replaced by this one, its ``--out`` sent to a temporary folder — and compares the new
JSON with the committed one, key by key:

* **seeded** results (agents, controllers, calibrations) must be equal leaf for leaf: same keys,
  same list lengths, same strings, numbers equal to the last bit (JSON round-trips floats exactly);
* **timed** values (keys that hold seconds, rates or memory of this run) are left out of the
  equality; for a ``timed`` benchmark they are compared instead as ratios new/committed, which
  must lie within ``1 ± tolerance`` (noise, not a change of behaviour);
* the run record of each run (command, revision, date, machine, load, threads) always differs and
  is never compared; an absolute path into a checkout (``/x/y/benchmarks/traces/a.csv``) is
  compared from its project folder on (``<checkout>/benchmarks/traces/a.csv``), so a clone
  elsewhere reproduces too.

A mismatch names the JSON path and both values. The report (``--report``, default
``runs/reproduce.json``) has its own run record, one entry per benchmark (status, seconds, the
first mismatches) and is what the closing note of a reshape cites.

    .venv/bin/python benchmarks/reproduce.py --list
    .venv/bin/python benchmarks/reproduce.py                      # the default set (about 15 min)
    .venv/bin/python benchmarks/reproduce.py agents reward_calibration
    .venv/bin/python benchmarks/reproduce.py --compare OLD.json NEW.json --name agents

Exit status: 0 when every benchmark run reproduced, 1 when one did not, 2 for a usage error.
Run it on a clean tree: a dirty one is reported (the rerun is of the working tree, not of a commit).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # the checkout's splitrl, as every benchmark script uses it

from splitrl.errors import UsageError  # noqa: E402
from splitrl.provenance import run_record  # noqa: E402

# What `run_record` writes: different on every run by construction.
RUN_RECORD_KEYS = frozenset({"command", "git_revision", "git_dirty", "date_utc", "machine", "python", "torch",
                             "packages", "threads", "loadavg_1_5_15"})
# Keys that hold this run's time, rate, load or memory. Matched on the key name (not the path): a
# benchmark's timing keys share these names wherever they sit in its tree.
TIMING_KEY = re.compile(
    r"(^|_)(seconds|wall_s|elapsed_s|runtime_s|median_s|min_s|max_s|all_s|load_s|setup_s|prefill_s|span_s)$"
    r"|^loadavg|_tok_s$|tokens_per_s|steps_per_s|_ms$|_MiB$|^Vm(HWM|RSS)|_latency_s$|latency_per_prediction_s$"
    r"|^(learning|learn|fit_and_evaluate|train_and_eval|cut_statistics|query|single_query)_seconds"
    r"|seconds_per_1000$|step_seconds$|sweep_cell_(median|min)_seconds$|^load_average"
    r"|(^|_)train(_and_eval)?_s(_mean)?$")


@dataclass(frozen=True)
class Reproduction:
    """How to rerun one committed result: its file, how its script takes ``--out``, and what to compare.

    ``out`` is ``"file"`` (``--out`` names the JSON) or ``"dir"`` (``--out`` names the folder the
    JSON is written into). ``ignore`` adds key names (regexes, full match) left out of the
    comparison altogether (e.g. a path of this checkout, a noisy minimum); ``timing`` adds key
    names treated like `TIMING_KEY` matches: values derived from this run's timings, e.g. a
    speed-up of two rates. ``kind="timed"`` compares the timing values as ratios within
    ``tolerance``; ``kind="seeded"`` leaves them out.
    """

    result: str
    out: str = "file"
    kind: str = "seeded"
    minutes: float = 5.0
    default: bool = True
    ignore: tuple[str, ...] = ()
    timing: tuple[str, ...] = ()
    tolerance: float = 0.25
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.out not in ("file", "dir"):
            raise UsageError(f"Reproduction.out: {self.out!r}; allowed: 'file', 'dir'")
        if self.kind not in ("seeded", "timed"):
            raise UsageError(f"Reproduction.kind: {self.kind!r}; allowed: 'seeded', 'timed'")
        if not 0 < self.tolerance < 1:
            raise UsageError(f"Reproduction.tolerance: {self.tolerance}; allowed: 0 < tolerance < 1")
        for pattern in (*self.ignore, *self.timing):
            try:
                re.compile(pattern)
            except re.error as e:
                raise UsageError(f"Reproduction.ignore/timing: {pattern!r} is not a regex ({e})") from None


BENCHMARKS: dict[str, Reproduction] = {
    "agents": Reproduction("agents.json", out="dir", minutes=6),
    "reward_calibration": Reproduction("reward_calibration.json", out="dir", minutes=2),
    "pipeline_controller": Reproduction("pipeline_controller.json", minutes=4),
    # the report's learning curves are seeded; its timings (a real SplitPointEnv step, query
    # latencies) are this machine's, so the speed-up ratios built from them are left out too
    "surrogate_report": Reproduction("surrogate_report.json", minutes=2, timing=(r".*speedup.*", r"timings")),
    # medians only: a minimum of five runs on a shared 2-core VM is one scheduler hiccup
    "env_speed": Reproduction("env_speed.json", kind="timed", minutes=2, tolerance=0.3,
                              ignore=("min", "max", "runs"), timing=("speedup_fast_over_slow",)),
    # SmolLM2 runs: seeded, but long; run with --all or by name
    "privacy_smollm2": Reproduction("privacy_smollm2.json", minutes=25, default=False),
    # --rows: its resumable per-cell cache, sent to the rerun's folder so nothing is reused
    "aircomp": Reproduction("aircomp.json", minutes=25, default=False, extra_args=("--rows", "{workdir}/rows.jsonl"),
                            timing=(r".*time.*", r"tp_runtime", r"emulation_vs_runtime_rel_diff")),
}


# ---------------------------------------------------------------- comparison


# An absolute path into a checkout or a venv, up to the project folder it names: results record
# some inputs by absolute path (a trace, a table), which differ between clones but not in content.
_CHECKOUT_PATH = re.compile(r"(?:/[^/\s:'\"]+)+?/(benchmarks|configs|splitrl|site-packages)/")


def _normalise(value: str) -> str:
    return _CHECKOUT_PATH.sub(r"<checkout>/\1/", value)


def _skipped(key: str, path: str, spec: Reproduction) -> bool:
    """Left out of the comparison: the run record (at the top, where `run_record` puts it; load
    averages anywhere) and the benchmark's own ``ignore`` keys."""
    return ((path == "" and key in RUN_RECORD_KEYS) or key.startswith("loadavg")
            or any(re.fullmatch(p, key) for p in spec.ignore))


def _is_timing(key: str, spec: Reproduction) -> bool:
    return bool(TIMING_KEY.search(key)) or any(re.fullmatch(p, key) for p in spec.timing)


def compare(committed: Any, new: Any, spec: Reproduction, path: str = "", *,
            timing: bool = False) -> tuple[list[str], list[float]]:
    """Mismatches between two result trees (``path: committed != new`` lines) and, for a timed
    benchmark, the ratios new/committed of its timing values (seeded benchmarks skip those).
    ``timing``: this subtree sits under a timing key (its numbers are this run's)."""
    mismatches: list[str] = []
    ratios: list[float] = []
    if isinstance(committed, dict) and isinstance(new, dict):
        for key in sorted(set(committed) | set(new), key=str):
            if _skipped(str(key), path, spec):
                continue
            sub = f"{path}/{key}"
            if key not in new or key not in committed:
                mismatches.append(f"{sub}: {'missing in the rerun' if key not in new else 'new in the rerun'}")
                continue
            m, r = compare(committed[key], new[key], spec, sub, timing=timing or _is_timing(str(key), spec))
            mismatches += m
            ratios += r
        return mismatches, ratios
    if isinstance(committed, list) and isinstance(new, list):
        if len(committed) != len(new):
            if timing:  # a timing list (runs of a repeat) may have another length; its summary is compared
                return mismatches, ratios
            return [f"{path}: {len(committed)} items committed, {len(new)} in the rerun"], ratios
        for i, (a, b) in enumerate(zip(committed, new)):
            m, r = compare(a, b, spec, f"{path}[{i}]", timing=timing)
            mismatches += m
            ratios += r
        return mismatches, ratios
    if timing:
        return _timing_ratio(committed, new, path, spec)
    both_nan = isinstance(committed, float) and isinstance(new, float) and math.isnan(committed) and math.isnan(new)
    if isinstance(committed, str) and isinstance(new, str):
        committed, new = _normalise(committed), _normalise(new)
    if not both_nan and not (committed == new and type(committed) is type(new)):
        mismatches.append(f"{path or '/'}: {committed!r} != {new!r}")
    return mismatches, ratios


def _timing_ratio(a: Any, b: Any, path: str, spec: Reproduction) -> tuple[list[str], list[float]]:
    """A timing leaf: skipped for a seeded benchmark; for a timed one, the ratio new/committed
    (numbers only, non-zero and finite) must lie within ``1 ± tolerance``."""
    if spec.kind != "timed" or isinstance(a, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return [], []
    if a == 0 or not math.isfinite(a) or not math.isfinite(b):
        return [], []
    ratio = b / a
    if abs(ratio - 1) > spec.tolerance:
        return [f"{path}: {a!r} -> {b!r} (x{ratio:.2f}, beyond 1 ± {spec.tolerance:g})"], [ratio]
    return [], [ratio]


def environment_changes(committed: dict, rerun: dict) -> dict[str, Any]:
    """What differs between the two runs' environments (python, torch, threads, library
    releases): the first suspects when a seeded result does not reproduce."""
    out: dict[str, Any] = {}
    for key in ("python", "torch", "threads", "machine"):
        if committed.get(key) != rerun.get(key):
            out[key] = [committed.get(key), rerun.get(key)]
    old, new = committed.get("packages"), rerun.get("packages") or {}
    if not isinstance(old, dict):
        out["packages"] = "the committed result records no package versions"
    else:
        out.update({f"packages/{k}": [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)})
    return out


# ---------------------------------------------------------------- rerunning


def rerun_command(recorded: str, spec: Reproduction, workdir: Path) -> tuple[list[str], Path]:
    """The recorded command with this interpreter and ``--out`` in ``workdir``; and where its JSON lands."""
    argv = shlex.split(recorded)
    if not argv or not Path(argv[0]).name.startswith("python"):
        raise UsageError(f"command {recorded!r}: expected a python command line (python SCRIPT|-m MODULE ...)")
    rest, i = [], 1
    while i < len(argv):
        a = argv[i]
        if a == "--out":
            i += 2
            continue
        if a.startswith("--out=") or a == "--overwrite":
            i += 1
            continue
        rest.append(a)
        i += 1
    target = workdir / spec.result if spec.out == "file" else workdir
    extra = [a.format(workdir=workdir) for a in spec.extra_args]
    return [sys.executable, *rest, *extra, "--out", str(target)], workdir / spec.result


def reproduce(name: str, spec: Reproduction, workdir: Path, log) -> dict[str, Any]:
    committed_path = RESULTS / spec.result
    if not committed_path.is_file():
        raise UsageError(f"{name}: no committed result {committed_path.relative_to(ROOT)}")
    committed = json.loads(committed_path.read_text())
    recorded = committed.get("command")
    if not isinstance(recorded, str):
        raise UsageError(f"{name}: {spec.result} records no 'command' to rerun")
    argv, produced = rerun_command(recorded, spec, workdir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    print(f"[reproduce] {name}: {shlex.join(argv)} (about {spec.minutes:g} min)", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = round(time.monotonic() - t0, 1)
    entry: dict[str, Any] = {"result": spec.result, "kind": spec.kind, "recorded_command": recorded,
                             "committed_revision": committed.get("git_revision"), "seconds": seconds}
    if proc.returncode != 0 or not produced.is_file():
        return {**entry, "status": "failed", "returncode": proc.returncode}
    rerun = json.loads(produced.read_text())
    entry["environment_changes"] = environment_changes(committed, rerun)
    mismatches, ratios = compare(committed, rerun, spec)
    if ratios:
        entry["timing_ratio_new_over_committed"] = {"min": round(min(ratios), 3), "max": round(max(ratios), 3),
                                                    "n": len(ratios)}
    return {**entry, "status": "reproduced" if not mismatches else "differs",
            "mismatches": len(mismatches), "first_mismatches": mismatches[:20]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"benchmarks to rerun (default: the default set); any of {', '.join(BENCHMARKS)}")
    ap.add_argument("--all", action="store_true", help="every registered benchmark, the SmolLM2 ones included")
    ap.add_argument("--list", action="store_true", help="list the registered benchmarks and exit")
    ap.add_argument("--report", default=str(ROOT / "runs" / "reproduce.json"), help="report JSON")
    ap.add_argument("--keep", default=None, help="folder for the rerun outputs (default: a temporary one, removed)")
    ap.add_argument("--compare", nargs=2, metavar=("COMMITTED", "NEW"), help="only compare two result files")
    ap.add_argument("--name", default=None, help="with --compare: the registered benchmark whose rules apply")
    args = ap.parse_args(argv)
    try:
        if args.list:
            for n, s in BENCHMARKS.items():
                print(f"{n:22s} {s.kind:7s} ~{s.minutes:g} min{'' if s.default else '  (not default)'}  {s.result}")
            return 0
        if args.compare:
            if args.name not in BENCHMARKS:
                raise UsageError(f"--name: {args.name!r}; allowed: {', '.join(BENCHMARKS)}")
            docs = []
            for p in args.compare:
                try:
                    docs.append(json.loads(Path(p).read_text()))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise UsageError(f"--compare {p}: cannot read a result JSON ({type(e).__name__})") from None
            a, b = docs
            mismatches, _ = compare(a, b, BENCHMARKS[args.name])
            print("\n".join(mismatches) if mismatches else "reproduced")
            return 1 if mismatches else 0
        unknown = [n for n in args.names if n not in BENCHMARKS]
        if unknown:
            raise UsageError(f"benchmark {unknown[0]!r}; allowed: {', '.join(BENCHMARKS)}")
        names = args.names or [n for n, s in BENCHMARKS.items() if args.all or s.default]
        report: dict[str, Any] = {**run_record(), "benchmarks": {}}
        if report.get("git_dirty"):
            print("[reproduce] warning: the work tree has uncommitted changes", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
            base = Path(args.keep) if args.keep else Path(tmp)
            for n in names:
                work = base / n
                work.mkdir(parents=True, exist_ok=True)
                with open(work / "log.txt", "w") as log:
                    report["benchmarks"][n] = reproduce(n, BENCHMARKS[n], work, log)
                e = report["benchmarks"][n]
                if e["status"] == "failed":
                    e["log_tail"] = (work / "log.txt").read_text()[-2000:]
                print(f"[reproduce] {n}: {e['status']} ({e['seconds']:.0f} s"
                      + (f", {e['mismatches']} mismatches" if e.get("mismatches") else "") + ")", file=sys.stderr)
        out = Path(args.report)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        ok = all(e["status"] == "reproduced" for e in report["benchmarks"].values())
        print(f"{'all reproduced' if ok else 'NOT all reproduced'}: {out}")
        return 0 if ok else 1
    except UsageError as e:
        print(f"reproduce.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
