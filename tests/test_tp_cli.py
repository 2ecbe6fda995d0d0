"""``splitrl tp``: usage errors (exit 2, one line), the plan command, the trust check, a real run (slow)."""
import json
import subprocess
import sys

import pytest

from splitrl.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["tp", "generate", "--model", "gpt2-tiny", "--shards", "3", "--ratio", "1,2"], "--ratio"),
    (["tp", "generate", "--model", "gpt2-tiny", "--shards", "0"], "--shards"),
    (["tp", "generate", "--model", "gpt2-tiny", "--allreduce", "telepathy"], "--allreduce"),
    (["tp", "generate", "--model", "gpt2-tiny", "--link", "int8-biterr"], "--link"),
    (["tp", "generate", "--model", "gpt2-tiny", "--window", "-2"], "--window"),
    (["tp", "generate", "--model", "gpt2-tiny", "--master", "10.1.2.3:0"], "trusted-network"),
    (["tp", "generate", "--model", "gpt2-tiny", "--allreduce-arg", "snr"], "--allreduce-arg"),
    (["tp", "worker", "--rank", "0", "--world", "2", "--master", "10.1.2.3:29500"], "trusted-network"),
    (["tp", "worker", "--rank", "2", "--world", "2", "--master", "127.0.0.1:1"], "--rank"),
])
def test_usage_errors_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_plan_command_prints_plan_and_exact_census(capsys):
    assert main(["tp", "plan", "--model", "llama-tiny", "--shards", "3", "--ratio", ".5,.25,.25"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["census"]["exact"] and out["plan"]["world"] == 3


def test_allreduce_kwargs_pass_through_untouched():
    import argparse

    from splitrl.cli.tp import allreduce_kwargs_from_args

    ns = argparse.Namespace(allreduce_arg=["snr_db=20", "antennas=4", "mode=digital", "noise=[1, 2]"])
    assert allreduce_kwargs_from_args(ns) == {"snr_db": 20, "antennas": 4, "mode": "digital", "noise": [1, 2]}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_generate_runs_two_ranks(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "splitrl", "tp", "generate", "--model", "llama-tiny", "--shards", "2", "--ratio", ".7,.3",
         "--allreduce", "ring", "--link", "int8", "--window", "3", "--max-new-tokens", "5", "--json",
         "--work-dir", str(tmp_path)], capture_output=True, text=True, timeout=280,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert len(rep["tokens"]) == 5 and rep["world"] == 2
    assert all(x["allreduce"]["calls"] == 2 * 6 * 5 for x in rep["ranks"])


def test_snr_and_antennas_are_aircomp_shortcuts():
    import argparse

    from splitrl.errors import UsageError
    from splitrl.cli.tp import allreduce_kwargs_from_args

    ns = argparse.Namespace(allreduce="aircomp", allreduce_arg=['design="mrt"'], snr=20.0, antennas=4)
    assert allreduce_kwargs_from_args(ns) == {"design": "mrt", "snr_db": 20.0, "antennas": 4}
    with pytest.raises(UsageError, match="--snr applies to --allreduce aircomp"):
        allreduce_kwargs_from_args(argparse.Namespace(allreduce="star", allreduce_arg=[], snr=20.0, antennas=None))
    with pytest.raises(UsageError, match="contradicts"):
        allreduce_kwargs_from_args(argparse.Namespace(allreduce="aircomp", allreduce_arg=["antennas=2"], snr=None, antennas=4))
