"""Per-process memory figures are the process's own (`splitrl.proc.peak_rss_bytes`, VmHWM).

``getrusage(RUSAGE_SELF).ru_maxrss`` read in a child survives fork + exec on Linux: every child
of a big parent reports at least the parent's resident set (that made both stages of
``pipeline.json`` report the driver's 1,013.47 MiB). These tests start a child that allocates
little after this process allocated a lot, and check the child's reported peak is below ours.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitrl.proc import anon_rss_bytes, peak_rss_bytes, proc_status_bytes, rss_bytes

ROOT = Path(__file__).resolve().parents[1]
HAS_PROCFS = Path("/proc/self/status").is_file()

# The child: no torch, a few MiB of its own; prints its figures as one JSON line.
_CHILD = """
import json, resource
from splitrl.proc import peak_rss_bytes
print(json.dumps({"peak": peak_rss_bytes(), "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


@pytest.mark.skipif(not HAS_PROCFS, reason="needs /proc (Linux)")
def test_child_peak_is_its_own_not_the_parents():
    big = bytearray(400 * 2**20)  # 400 MiB, touched page by page so it is resident
    for i in range(0, len(big), 4096):
        big[i] = 1
    parent_peak = peak_rss_bytes()
    assert parent_peak >= 400 * 2**20
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    del big
    # the child's own peak: an interpreter and splitrl.proc, far below the parent's 400+ MiB
    assert 0 < child["peak"] < parent_peak - 300 * 2**20
    # why ru_maxrss is not used: in the same child it carries the parent's resident set over fork + exec
    if child["ru_maxrss"] >= 400 * 2**20:
        assert child["ru_maxrss"] > child["peak"]


@pytest.mark.skipif(not HAS_PROCFS, reason="needs /proc (Linux)")
def test_status_fields_are_consistent():
    assert proc_status_bytes("NoSuchField") is None
    assert proc_status_bytes("VmHWM", pid=2**30) is None  # no such process
    peak, now, anon = peak_rss_bytes(), rss_bytes(), anon_rss_bytes()
    assert 0 < anon <= now <= peak
    import os

    assert abs(peak_rss_bytes(os.getpid()) - peak_rss_bytes()) < 64 * 2**20


def test_no_per_process_peak_from_ru_maxrss():
    """No module or benchmark computes a per-process memory figure from ru_maxrss."""
    offenders = []
    for folder in ("splitrl", "benchmarks", "agents", "envs"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if ".ru_maxrss" in text and path.name != "proc.py":
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"use splitrl.proc.peak_rss_bytes (VmHWM) instead of ru_maxrss in {offenders}"
