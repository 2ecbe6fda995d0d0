"""AirComp inside the real tensor-parallel runtime (`splitrl tp ppl --allreduce aircomp`)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _ppl(tmp_path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "splitrl", "tp", "ppl", "--model", "llama-tiny", "--shards", "2", "--tokens", "64",
           "--ctx", "32", "--work-dir", str(tmp_path), "--json", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env={
        **__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])["perplexity"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tp_ppl_with_aircomp(tmp_path):
    star = _ppl(tmp_path / "star", "--allreduce", "star")
    exact = _ppl(tmp_path / "inf", "--allreduce", "aircomp", "--allreduce-arg", "snr_db=Infinity")
    noisy = _ppl(tmp_path / "noisy", "--allreduce", "aircomp", "--allreduce-arg", "snr_db=0", "--allreduce-arg", "antennas=2")
    assert exact == star            # SNR = inf: bitwise the digital star's result (N = 2: addition order is moot)
    assert noisy != star            # the channel noise reaches the model
