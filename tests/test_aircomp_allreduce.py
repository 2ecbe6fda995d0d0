"""AirCompAllReduce over real gloo processes: exact at SNR = inf, empirical MSE = the design's MSE."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from splitrl.dist import Endpoint, connect_store, make_allreduce
from splitrl.errors import UsageError
from splitrl.proc import spawn_splitrl


def _run(tmp_path, world: int, *extra: str, timeout: float = 270.0) -> dict:
    store = connect_store(Endpoint("127.0.0.1", 0), host_store=True)
    out = tmp_path / "report.json"
    kids = [
        spawn_splitrl(["aircomp-worker", "--store", f"127.0.0.1:{store.port}", "--rank", r, "--world", world,
                       "--timeout", 120, *extra] + (["--out", out] if r == 0 else []),
                      log_path=tmp_path / f"rank{r}.log")
        for r in range(world)
    ]
    try:
        for k in kids:
            k.popen.wait(timeout=timeout)
        for k in kids:
            assert k.popen.returncode == 0, k.log_tail()
        return json.loads(out.read_text())
    finally:
        for k in kids:
            k.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_noiseless_aircomp_is_the_digital_star_sum(tmp_path, world):
    rep = _run(tmp_path, world, "--snr", "inf", "--antennas", 4, "--calls", 3)
    assert len(rep["calls"]) == 3
    for c in rep["calls"]:
        assert c["equals_star"] and c["input_untouched"]
        assert c["normalised_mse"] < 1e-12
    assert rep["stats"]["calls"] == 3 and rep["stats"]["air_seconds"] > 0


@pytest.mark.timeout(300)
def test_noisy_aircomp_mse_matches_design(tmp_path):
    # Fixed channel block (coherence over all calls), N = 2, M = 2 with the SDR design: 40 calls of 64 x 256.
    rep = _run(tmp_path, 2, "--snr", "10", "--antennas", 2, "--calls", 40, "--coherence-calls", 40,
               "--rows", 64, "--dim", 256, "--seed", 3)
    pred = {c["predicted_mse"] for c in rep["calls"]}
    assert len(pred) == 1 and next(iter(pred)) > 0
    emp = float(np.mean([c["normalised_mse"] for c in rep["calls"]]))
    assert abs(emp / next(iter(pred)) - 1.0) < 0.03
    assert all(not c["equals_star"] and c["input_untouched"] for c in rep["calls"])


def test_aircomp_is_registered_and_validates():
    import splitrl.aircomp  # noqa: F401

    ar = make_allreduce("aircomp", snr_db=math.inf, antennas=2)
    assert ar.name == "aircomp"
    with pytest.raises(UsageError):
        make_allreduce("aircomp", design="nope")
    with pytest.raises(UsageError):
        make_allreduce("aircomp", antennas=0)
