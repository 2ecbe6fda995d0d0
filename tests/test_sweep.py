"""The split x channel sweep: resumable after a real kill, deterministic per cell, plotted."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.sweep import COLUMNS, EMULATED, Cell, SweepConfig, cell_seed, parse_levels, parse_range, plot_sweep, read_done

pytestmark = pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")

ARGS = ["sweep", "--model", "llama-tiny", "--splits", "0,2,4,6", "--levels", "0,15,30",
        "--transports", "awgn,int8-biterr", "--seeds", "2", "--tokens", "96", "--window", "48", "--no-progress"]


def _sweep(out, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "splitrl.cli", *ARGS, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_killed_sweep_resumes_without_lost_or_duplicated_rows(tmp_path):
    full = tmp_path / "full.csv"
    assert _sweep(full).returncode == 0
    killed = tmp_path / "killed.csv"
    r = _sweep(killed, {"SPLITRL_SWEEP_KILL_AFTER": "7"})
    assert r.returncode == -9  # SIGKILL, mid-sweep
    assert len(_rows(killed)) == 7
    with open(killed, "a") as f:  # a half-written line, as a kill during write() leaves
        f.write("llama-tiny,awgn,snr,0.0,0.0")
    assert _sweep(killed).returncode == 0
    a, b = _rows(full), _rows(killed)
    key = lambda r: (r["transport"], r["split"], r["level"], r["seed_index"])  # noqa: E731
    assert len(b) == len(a) == 4 * 3 * 2 * 2 and len({key(r) for r in b}) == len(b)
    by_key = {key(r): r["ppl"] for r in a}
    assert all(by_key[key(r)] == r["ppl"] for r in b)  # resumed cells are bit-identical


def test_rows_are_sane(tmp_path):
    out = tmp_path / "s.csv"
    assert _sweep(out).returncode == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    # Split 0 sends lossless token ids: every seed and SNR gives the clean perplexity.
    assert (df[df.split == 0].ppl - df.clean_ppl[0]).abs().max() < 1e-9
    # Low SNR hurts the analog link more than high SNR at a middle split.
    mid = df[(df.split == 2) & (df.transport == "awgn")].groupby("level").ppl.mean()
    assert mid[0.0] > mid[30.0]
    # int8 crossing: one byte per element, a 4-byte scale per token, a 16-byte header per window (2).
    assert df[(df.transport == "int8-biterr") & (df.split == 2)].bytes_per_token.iloc[0] == pytest.approx(64 + 4 + 2 * 16 / 96)
    # Emulated request figures are the cost model's for the cell (analog charged as fp16).
    from splitrl.cost import CostModel
    from splitrl.models import load_model

    assert df[EMULATED].notna().all().all()
    one = df[(df.transport == "awgn") & (df.level == 15.0) & (df.seed_index == 0)].set_index("split")
    assert one.emulated_bytes_on_air[6] == 0 and one.emulated_bytes_on_air[2] > 0
    est = CostModel(load_model("llama-tiny").view, "phone-midrange", "edge-a100", "nr-sub6-20mhz", codec="fp16").estimate(
        2, snr_db=15.0, prompt_tokens=128, new_tokens=32)
    assert one.emulated_ttft_s[2] == pytest.approx(est.ttft_s) and one.emulated_ue_energy_j_per_token[2] == pytest.approx(
        est.ue_energy_j_per_token)
    png = plot_sweep(out, tmp_path / "h.png")
    assert png.stat().st_size > 10_000


def test_changing_the_setup_refuses_to_append(tmp_path):
    out = tmp_path / "s.csv"
    assert _sweep(out).returncode == 0
    r = subprocess.run([sys.executable, "-m", "splitrl.cli", *ARGS[:-1], "--tokens", "64", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "different sweep setup" in r.stderr


def test_cell_seeds_depend_on_coordinates_not_order():
    a = cell_seed(0, Cell("awgn", 3, 10.0, 1))
    assert a == cell_seed(0, Cell("awgn", 3, 10.0, 1))
    assert len({a, cell_seed(0, Cell("awgn", 3, 10.0, 2)), cell_seed(1, Cell("awgn", 3, 10.0, 1)),
                cell_seed(0, Cell("awgn", 4, 10.0, 1)), cell_seed(0, Cell("int8-biterr", 3, 10.0, 1))}) == 5


def test_parsers_and_validation(tmp_path):
    assert parse_levels("0:30:5") == [0, 5, 10, 15, 20, 25, 30]
    assert parse_range("all", 3) == [0, 1, 2, 3] and parse_range("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(ValueError, match="allowed"):
        SweepConfig(transports=["carrier-pigeon"])
    with pytest.raises(ValueError, match="level_kind"):
        SweepConfig(level_kind="volume")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_done(bad)


@pytest.mark.timeout(120)
def test_a_second_writer_gets_one_line_and_the_first_is_untouched(tmp_path):
    """While a sweep holds the table (here: this test holds its lock), another sweep on the same
    --out stops at once with one line, exit 2, and writes nothing."""
    from splitrl.sweep import TableLock

    out = tmp_path / "busy.csv"
    out.write_text(",".join(COLUMNS) + "\n")
    before = out.read_bytes()
    lock = TableLock(out)
    try:
        r = _sweep(out)
    finally:
        lock.release()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"pid {os.getpid()}" in r.stderr and "is writing" in r.stderr
    assert out.read_bytes() == before and not out.with_suffix(".csv.meta.json").exists()


def test_grids_and_levels_are_bounded_with_one_line(capsys):
    from splitrl.cli import main

    base = ["sweep", "--model", "llama-tiny", "--no-progress", "--out", "/nonexistent-dir/never.csv"]
    assert main([*base, "--splits", "all", "--levels", "0:999:0.5", "--seeds", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 100000" in err and "split it into several sweeps" in err
    for levels, msg in [("0:1e9:1e-3", "at most 10000"), ("0:nan:1", "finite numbers"), ("a,b", "finite numbers")]:
        assert main([*base, "--splits", "1", "--levels", levels]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, err
    assert main([*base, "--splits", "0-99999999999"]) == 2 and "--splits must be" in capsys.readouterr().err


def test_repeated_coordinates_give_one_cell_and_a_duplicated_row_is_dropped_on_resume(tmp_path):
    from splitrl.sweep import cells

    cfg = SweepConfig(splits=[2, 2, 4], levels=[5, 5.0, -0.0, 0.0, 1.0000001, 1.0000002], transports=["awgn", "awgn"],
                      seeds=1)
    assert cfg.splits == [2, 4] and cfg.transports == ["awgn"] and cfg.levels == [5.0, 0.0, 1.0000001]
    keys = [c.key for c in cells(cfg)]
    assert len(keys) == len(set(keys)) == 2 * 3
    table = tmp_path / "t.csv"
    row = {c: "" for c in COLUMNS} | {"model": "m", "transport": "awgn", "level": "5.0", "split": "2", "seed_index": "0",
                                      "ppl": "3.5"}
    other = {**row, "split": "4"}
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows([row, other, {**row, "ppl": "9.9"}])  # the first cell twice
    assert read_done(table) == {("awgn", 2, "5", 0, "fp32"), ("awgn", 4, "5", 0, "fp32")}
    rows = _rows(table)
    assert [(r["split"], r["ppl"]) for r in rows] == [("2", "3.5"), ("4", "3.5")]  # the first kept, in order
    assert read_done(table) == {("awgn", 2, "5", 0, "fp32"), ("awgn", 4, "5", 0, "fp32")} and len(_rows(table)) == 2
