"""measure_layer_times and the `splitrl profile` subcommand (tiny model, tiny contexts)."""
import argparse
import math

import numpy as np
import pytest

from splitrl.cost import CostModel, load_profile, measure_layer_times
from splitrl.cli.profile import add_arguments as build_profile_parser, run as cmd_profile
from splitrl.cost.measure import _fit


def test_measure_layer_times_on_gpt2_tiny_writes_a_loadable_profile(gpt2_tiny, tmp_path):
    out = tmp_path / "this-machine.yaml"
    view = gpt2_tiny.view
    r = measure_layer_times(gpt2_tiny, context_lengths=(8, 24), repeats=2, threads=1, out=out)
    assert r.context_lengths == [8, 24] and r.threads == 1 and r.dtype == "fp32"
    assert len(r.layer_times_s) == 2 and all(len(row) == view.num_layers for row in r.layer_times_s)
    assert all(t > 0 for row in r.layer_times_s for t in row) and all(t > 0 for t in r.head_times_s)
    assert math.isfinite(r.flops_per_s) and r.flops_per_s > 0
    assert math.isfinite(r.flops_per_s_through_origin) and r.flops_per_s_through_origin > 0
    assert r.layer_overhead_s >= 0 and r.memory_bandwidth_bytes_per_s > 0
    # The FLOPs attached to each timing are the view's analytic prefill FLOPs.
    lc = view.layer_cost(0)
    assert r.layer_flops[1][0] == 24 * lc.flops_per_token_base + lc.flops_per_token_per_ctx * 24 * 25 / 2
    assert r.head_flops[0] == 8 * view.head_flops_per_token()

    p = load_profile("ue", out)
    assert p.name == "this-machine"
    assert p.flops_per_s == pytest.approx(r.flops_per_s)
    assert p.layer_overhead_s == pytest.approx(r.layer_overhead_s)
    assert p.weight_dtype == "fp32"
    assert p.measurement["layer_times_s"] == r.layer_times_s
    assert "not measured" in p.description
    phone = load_profile("ue", "phone-midrange")
    assert p.compute_power_w == phone.compute_power_w  # copied, and the description says so
    # A measured profile plugs straight into the cost model.
    e = CostModel(gpt2_tiny, out, "edge-a100", "wifi6-20mhz").estimate(view.num_layers, 20.0, 16, 4)
    assert e.ttft_s > 0 and e.uplink_prefill_s == 0.0


def test_bad_measurement_arguments(gpt2_tiny):
    with pytest.raises(ValueError, match="context_lengths"):
        measure_layer_times(gpt2_tiny, context_lengths=(0,))
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        measure_layer_times(gpt2_tiny, context_lengths=(1024,))
    with pytest.raises(ValueError, match="repeats"):
        measure_layer_times(gpt2_tiny, context_lengths=(4,), repeats=0)


def test_fit_recovers_a_known_rate_and_overhead():
    flops = np.array([1e6, 5e6, 2e7, 8e7, 3e8])
    times = 2e-5 + flops / 4e10
    rate, overhead, origin, r2 = _fit(flops, times)
    assert rate == pytest.approx(4e10, rel=1e-6)
    assert overhead == pytest.approx(2e-5, rel=1e-6)
    assert r2 == pytest.approx(1.0)
    # Times that do not grow with FLOPs (pure overhead): fall back to the through-origin rate.
    rate, overhead, origin, _ = _fit(flops, np.array([5e-3, 4e-3, 3e-3, 2e-3, 1e-3]))
    assert overhead == 0.0 and rate == origin > 0


def test_profile_subcommand(gpt2_tiny, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="splitrl")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile")
    build_profile_parser(p)
    p.set_defaults(func=cmd_profile)
    out = tmp_path / "m.yaml"
    args = parser.parse_args(["profile", "--model", "gpt2-tiny", "--contexts", "8,16", "--repeats", "1",
                              "--threads", "1", "--no-bandwidth", "--out", str(out), "--accept-poor-fit"])
    assert args.func(args) == 0  # a tiny model on a shared CPU may fit poorly: accepted here (and warned)
    assert "GFLOP/s" in capsys.readouterr().out
    p = load_profile("ue", out)
    assert p.flops_per_s > 0 and p.memory_bandwidth_bytes_per_s is None

    bad = parser.parse_args(["profile", "--model", "gpt2-tiny", "--contexts", "8,x", "--out", str(out)])
    assert cmd_profile(bad) == 2
    assert "--contexts" in capsys.readouterr().err
    missing = parser.parse_args(["profile", "--model", "no-such-model", "--contexts", "8", "--out", str(out)])
    assert cmd_profile(missing) == 2


def test_profile_is_in_the_splitrl_command_table():
    from splitrl.cli import COMMANDS

    builder, fn = COMMANDS["profile"].functions()
    assert fn is cmd_profile and builder is build_profile_parser


def test_profile_refuses_to_write_a_poor_fit(tmp_path, capsys):
    """--min-r2 1 makes any real fit "poor": nothing is written, one line says why and what to do."""
    from splitrl.cli import main

    out = tmp_path / "poor.yaml"
    rc = main(["profile", "--model", "gpt2-tiny", "--contexts", "8,16", "--repeats", "1", "--threads", "1",
               "--no-bandwidth", "--out", str(out), "--min-r2", "1.0"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and "poor fit (R^2" in err[0] and "NOT written" in err[0] and "--accept-poor-fit" in err[0]
