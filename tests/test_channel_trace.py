"""CSV trace replay: exact values, looping/stopping, zero-order-hold clock, and file errors."""
from __future__ import annotations

import numpy as np
import pytest

from splitrl.channel.trace import (
    SnrTrace,
    TraceChannel,
    TraceChannelConfig,
    TraceExhausted,
    TraceFormatError,
    load_snr_trace,
    write_snr_trace,
)

CSV = """# measured walk, 100 ms sampling
time,snr_db,rsrp_dbm
0.0,12.5,-80
0.1,11.25,-81

0.2,-3.0,-95
0.3,7.125,-85
"""
VALUES = [12.5, 11.25, -3.0, 7.125]


@pytest.fixture
def trace_file(tmp_path):
    p = tmp_path / "walk.csv"
    p.write_text(CSV)
    return p


def _chan(path, seed=0, **kw):
    return TraceChannel(TraceChannelConfig(path=str(path), **kw), np.random.default_rng(seed))


def test_load_exact_values(trace_file):
    tr = load_snr_trace(trace_file)
    np.testing.assert_array_equal(tr.time_s, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(tr.snr_db, VALUES)
    assert len(tr) == 4
    assert tr.duration_s == pytest.approx(0.4)


def test_replay_loops(trace_file):
    ch = _chan(trace_file)
    assert [ch.step().snr_db for _ in range(2)] == VALUES[:2]
    np.testing.assert_array_equal(ch.sample(7), (VALUES * 3)[2:9])
    assert ch.remaining == float("inf")


def test_replay_stops_and_reset_replays(trace_file):
    ch = _chan(trace_file, on_end="stop")
    np.testing.assert_array_equal(ch.sample(3), VALUES[:3])
    assert ch.remaining == 1
    with pytest.raises(TraceExhausted, match="walk.csv"):
        ch.sample(2)  # refused without consuming
    assert ch.step().snr_db == VALUES[3]
    with pytest.raises(TraceExhausted):
        ch.step()
    ch.reset()
    np.testing.assert_array_equal(ch.sample(4), VALUES)


def test_random_start_is_a_rotation_drawn_from_rng(trace_file):
    starts = set()
    for seed in range(20):
        x = list(_chan(trace_file, seed=seed, random_start=True).sample(4))
        i = VALUES.index(x[0])
        assert x == (VALUES * 2)[i : i + 4]
        starts.add(i)
        assert list(_chan(trace_file, seed=seed, random_start=True).sample(4)) == x
    assert len(starts) > 1  # P(all 20 seeds pick the same row) = 4 * 4^-20


def test_zero_order_hold_clock(trace_file):
    ch = _chan(trace_file, slot_s=0.05)
    expect = [v for v in VALUES for _ in range(2)]
    np.testing.assert_array_equal(ch.sample(8), expect)
    np.testing.assert_array_equal(ch.sample(3), expect[:3])  # wraps after 0.4 s
    # 0.1 s slots land exactly on row times (3 * 0.1 != 0.3 in floating point)
    np.testing.assert_array_equal(_chan(trace_file, slot_s=0.1).sample(6), VALUES + VALUES[:2])
    stop = _chan(trace_file, slot_s=0.15, on_end="stop")  # slots at 0, .15, .3
    np.testing.assert_array_equal(stop.sample(3), [12.5, 11.25, 7.125])
    with pytest.raises(TraceExhausted):
        stop.step()


def test_write_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.uniform(0.001, 0.01, 50))
    s = rng.normal(10, 5, 50)
    write_snr_trace(tmp_path / "rt.csv", t, s)
    tr = load_snr_trace(tmp_path / "rt.csv")
    np.testing.assert_array_equal(tr.time_s, t)
    np.testing.assert_array_equal(tr.snr_db, s)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("time,snr\n0,1\n", r"bad\.csv:1: header .* lacks column\(s\) \['snr_db'\]"),
        ("0.0,1.0\n0.1,2.0\n", r"bad\.csv:1: header .* lacks"),
        ("time,snr_db\n0,1\n0.1,abc\n", r"bad\.csv:3: column 'snr_db': 'abc' is not a number"),
        ("time,snr_db\n0,1\n0.1,nan\n", r"bad\.csv:3: column 'snr_db': 'nan' is not finite"),
        ("time,snr_db\n0,1e308\n", r"bad\.csv:2: column 'snr_db': '1e308' dB is outside \[-200, 200\] dB"),
        ("time,snr_db\n0,1\n1,-250\n", r"bad\.csv:3: column 'snr_db': '-250' dB is outside"),
        ("time,snr_db\n0,1\n\n0.1,2,3\n", r"bad\.csv:4: expected 2 fields"),
        ("time,snr_db\n0,1\n0.1,2\n0.1,3\n", r"bad\.csv:4: column 'time': 0\.1 is not after"),
        ("time,snr_db,time\n0,1,0\n", r"bad\.csv:1: duplicate column"),
        ("", r"bad\.csv: empty file"),
        ("time,snr_db\n", r"bad\.csv: header but no data rows"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TraceFormatError, match=match):
        load_snr_trace(p)
    with pytest.raises(ValueError):  # TraceFormatError is a ValueError for generic handlers
        _chan(p)


def test_config_and_trace_validation(tmp_path):
    with pytest.raises(ValueError, match=r"TraceChannelConfig\.on_end = 'wrap'"):
        TraceChannelConfig(path="x.csv", on_end="wrap")
    with pytest.raises(ValueError, match=r"TraceChannelConfig\.slot_s = -1"):
        TraceChannelConfig(path="x.csv", slot_s=-1)
    with pytest.raises(FileNotFoundError):
        _chan(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="strictly increasing"):
        SnrTrace(np.array([0.0, 0.0]), np.array([1.0, 2.0]))


def test_in_memory_trace_and_determinism():
    tr = SnrTrace(np.arange(10.0), np.arange(10.0) * 2)
    cfg = TraceChannelConfig(random_start=True)
    a = TraceChannel(cfg, np.random.default_rng(1), trace=tr).sample(25)
    b = TraceChannel(cfg, np.random.default_rng(1), trace=tr).sample(25)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isin(a, tr.snr_db))
