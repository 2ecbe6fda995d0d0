"""Sweep shards run in separate processes merge into the table one sweep would have written."""
import json

import pandas as pd
import pytest

from splitrl.errors import UsageError
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.sweep import SweepConfig, merge_tables, run_sweep

pytestmark = pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")


def _cfg(splits, **kw):
    return SweepConfig(model="llama-tiny", splits=splits, levels=[-10.0, 10.0], transports=["awgn", "int4-biterr"],
                       seeds=1, tokens=32, window=32, stride=32, **kw)


def test_merged_shards_equal_one_sweep(tmp_path, llama_tiny, capsys):
    whole, a, b = tmp_path / "whole.csv", tmp_path / "a.csv", tmp_path / "b.csv"
    run_sweep(_cfg(list(range(7))), whole, progress=False, loaded=llama_tiny)
    run_sweep(_cfg([0, 1, 2, 3]), a, progress=False, loaded=llama_tiny)
    run_sweep(_cfg([3, 4, 5, 6]), b, progress=False, loaded=llama_tiny)  # split 3 in both: kept once
    from splitrl.cli import main

    assert main(["sweep-merge", "--out", str(a), "--from", str(b)]) == 0
    assert "12 rows" in capsys.readouterr().out
    key = ["transport", "split", "level", "seed_index"]
    cols = [c for c in pd.read_csv(whole).columns if c != "seconds"]
    got = pd.read_csv(a)[cols].sort_values(key).reset_index(drop=True)
    want = pd.read_csv(whole)[cols].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    runs = json.loads((tmp_path / "a.csv.meta.json").read_text())["runs"]
    assert len(runs) == 3 and runs[1]["merged_from"] == str(b) and runs[2]["merged_rows"] == 12
    assert all(r["command"] and "git_revision" in r for r in runs)
    assert merge_tables(a, b) == 0  # idempotent


def test_merge_refuses_another_setup(tmp_path, llama_tiny):
    a, c = tmp_path / "a.csv", tmp_path / "c.csv"
    run_sweep(_cfg([0]), a, progress=False, loaded=llama_tiny)
    run_sweep(SweepConfig(model="llama-tiny", splits=[1], levels=[0.0], transports=["awgn"], seeds=1, tokens=64,
                          window=64, stride=64), c, progress=False, loaded=llama_tiny)
    before = a.read_bytes()
    with pytest.raises(UsageError, match="different sweep setup"):
        merge_tables(a, c)
    with pytest.raises(UsageError, match="not a sweep table"):
        merge_tables(a, tmp_path / "missing.csv")
    assert a.read_bytes() == before
