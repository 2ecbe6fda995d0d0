"""`benchmarks/reproduce.py`: the comparison that says a rerun reproduced a committed result.

The reruns themselves take minutes (they are the benchmarks); these tests hold the rules: run
records never count, seeded values must be equal to the bit, timing values are skipped (seeded) or
compared as ratios (timed), structure changes are reported with their path, and the recorded
command is rerun with this interpreter and a new ``--out``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("reproduce_bench", ROOT / "benchmarks" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _result(**over):
    base = {"command": ".venv/bin/python benchmarks/x.py", "git_revision": "a" * 40, "git_dirty": False,
            "date_utc": "2026-01-01T00:00:00+00:00", "machine": "m", "python": "3.11", "torch": "2.13",
            "threads": 2, "loadavg_1_5_15": [0.1, 0.2, 0.3],
            "regret": {"mbrl": 1.53, "ppo": [291.0, 250.0]}, "wall_s": 304.4,
            "speed": {"steps_per_s": {"median": 1000.0}}, "labels": ["a", "b"]}
    base.update(over)
    return base


def test_a_rerun_that_differs_only_in_its_run_record_and_timings_reproduces(rp):
    spec = rp.Reproduction("x.json")
    new = _result(git_revision="b" * 40, date_utc="2027-01-01", threads=1, loadavg_1_5_15=[9, 9, 9],
                  wall_s=10.0, speed={"steps_per_s": {"median": 5.0}})
    assert rp.compare(_result(), new, spec) == ([], [])


def test_a_seeded_value_one_ulp_off_is_a_mismatch_named_by_its_path(rp):
    spec = rp.Reproduction("x.json")
    new = _result(regret={"mbrl": 1.5300000000000002, "ppo": [291.0, 250.0]})
    mismatches, _ = rp.compare(_result(), new, spec)
    assert mismatches == ["/regret/mbrl: 1.53 != 1.5300000000000002"]


def test_structure_changes_are_reported(rp):
    spec = rp.Reproduction("x.json")
    new = _result(regret={"ppo": [291.0]}, extra=1)
    mismatches, _ = rp.compare(_result(), new, spec)
    assert "/regret/mbrl: missing in the rerun" in mismatches
    assert "/regret/ppo: 2 items committed, 1 in the rerun" in mismatches
    assert "/extra: new in the rerun" in mismatches
    # an int where a float was is a change of the result's type, not noise
    assert rp.compare({"n": 1.0}, {"n": 1}, spec)[0] == ["/n: 1.0 != 1"]


def test_run_record_keys_count_below_the_top_and_ignore_patterns_apply_anywhere(rp):
    spec = rp.Reproduction("x.json", ignore=("table",))
    committed = {"config": {"threads": 4, "table": "/a/sweep.csv"}}
    new = {"config": {"threads": 8, "table": "/b/sweep.csv"}}
    assert rp.compare(committed, new, spec)[0] == ["/config/threads: 4 != 8"]


def test_a_timed_benchmark_compares_its_timings_as_ratios_within_its_tolerance(rp):
    spec = rp.Reproduction("x.json", kind="timed", tolerance=0.3, timing=("speedup",))
    committed = {"steps_per_s": {"median": 1000.0, "n": 5}, "speedup": 10.0, "env": "table"}
    close = {"steps_per_s": {"median": 800.0, "n": 5}, "speedup": 12.0, "env": "table"}
    mismatches, ratios = rp.compare(committed, close, spec)
    assert mismatches == [] and sorted(ratios) == pytest.approx([0.8, 1.0, 1.2])
    far = {"steps_per_s": {"median": 500.0, "n": 5}, "speedup": 10.0, "env": "table"}
    mismatches, _ = rp.compare(committed, far, spec)
    assert len(mismatches) == 1 and mismatches[0].startswith("/steps_per_s/median: 1000.0 -> 500.0 (x0.50")


def test_paths_into_a_checkout_compare_from_the_project_folder_on(rp):
    spec = rp.Reproduction("x.json")
    committed = {"channel": "trace:/work/main/benchmarks/traces/walk.csv", "gguf": "/a/.venv/lib/site-packages/m.gguf"}
    elsewhere = {"channel": "trace:/home/u/clone/benchmarks/traces/walk.csv", "gguf": "/b/v/lib/site-packages/m.gguf"}
    assert rp.compare(committed, elsewhere, spec) == ([], [])
    other_file = {**elsewhere, "channel": "trace:/home/u/clone/benchmarks/traces/drop.csv"}
    assert len(rp.compare(committed, other_file, spec)[0]) == 1


def test_environment_changes_name_what_moved(rp):
    old = {"python": "3.11.7", "torch": "2.13.0", "threads": 2, "packages": {"numpy": "2.4.5", "scipy": "1.17.1"}}
    new = {"python": "3.11.7", "torch": "2.13.0", "threads": 1, "packages": {"numpy": "2.4.6", "scipy": "1.17.1"}}
    assert rp.environment_changes(old, new) == {"threads": [2, 1], "packages/numpy": ["2.4.5", "2.4.6"]}
    assert rp.environment_changes({}, {"packages": {}})["packages"].startswith("the committed result records no")
    # the versions are part of the run record: never a mismatch of the result itself
    assert rp.compare({**old, "v": 1}, {**new, "v": 1}, rp.Reproduction("x.json")) == ([], [])


def test_nan_equals_nan(rp):
    assert rp.compare({"v": float("nan")}, {"v": float("nan")}, rp.Reproduction("x.json")) == ([], [])


def test_the_recorded_command_is_rerun_with_this_python_and_a_new_out(rp, tmp_path):
    file_spec = rp.Reproduction("pipeline_controller.json")
    argv, produced = rp.rerun_command(
        ".venv/bin/python benchmarks/pipeline_controller.py --budget-curve 25,100 --out old.json --overwrite",
        file_spec, tmp_path)
    assert argv == [sys.executable, "benchmarks/pipeline_controller.py", "--budget-curve", "25,100",
                    "--out", str(tmp_path / "pipeline_controller.json")]
    assert produced == tmp_path / "pipeline_controller.json"
    dir_spec = rp.Reproduction("agents.json", out="dir", extra_args=("--rows", "{workdir}/rows.jsonl"))
    argv, produced = rp.rerun_command("python -m splitrl surrogate-report --out=x.json", dir_spec, tmp_path)
    assert argv == [sys.executable, "-m", "splitrl", "surrogate-report", "--rows", f"{tmp_path}/rows.jsonl",
                    "--out", str(tmp_path)]
    assert produced == tmp_path / "agents.json"
    with pytest.raises(rp.UsageError, match="python command line"):
        rp.rerun_command("make bench", file_spec, tmp_path)


def test_bad_registrations_name_the_field(rp):
    with pytest.raises(rp.UsageError, match="Reproduction.out"):
        rp.Reproduction("x.json", out="folder")
    with pytest.raises(rp.UsageError, match="Reproduction.kind"):
        rp.Reproduction("x.json", kind="noisy")
    with pytest.raises(rp.UsageError, match="not a regex"):
        rp.Reproduction("x.json", ignore=("(",))


def test_every_registered_result_is_committed_and_records_its_command_and_agrees_with_itself(rp):
    for name, spec in rp.BENCHMARKS.items():
        path = rp.RESULTS / spec.result
        committed = json.loads(path.read_text())
        assert isinstance(committed.get("command"), str), name
        rp.rerun_command(committed["command"], spec, Path("/tmp/x"))
        assert rp.compare(committed, committed, spec)[0] == [], name


def test_compare_cli_exit_status(rp, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result()))
    b.write_text(json.dumps(_result(labels=["a", "c"])))
    assert rp.main(["--compare", str(a), str(a), "--name", "agents"]) == 0
    assert rp.main(["--compare", str(a), str(b), "--name", "agents"]) == 1
    assert "/labels[1]: 'b' != 'c'" in capsys.readouterr().out
    assert rp.main(["--compare", str(a), str(b), "--name", "nope"]) == 2
    assert rp.main(["no-such-benchmark"]) == 2
    assert rp.main(["--compare", str(a), str(tmp_path / "missing.json"), "--name", "agents"]) == 2
    assert "cannot read a result JSON" in capsys.readouterr().err
