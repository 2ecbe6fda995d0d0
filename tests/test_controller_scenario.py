"""Scenarios and the serving loop's richer state: traces on their time column, delayed edge-load
reports, a draining battery, the privacy floor, decision latency up to the partition in place."""
from pathlib import Path

import numpy as np
import pytest
from test_agents_support import assets

from splitrl.controller.session import ControlConfig, Controller, iter_decisions
from splitrl.decision.channel import ChannelProcess
from splitrl.controller.scenario import ScenarioProcess, load_scenario
from splitrl.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def _scenario(tmp_path, **fields) -> Path:
    (tmp_path / "snr.csv").write_text("time,snr_db\n" + "".join(f"{t},{30 - 2 * t}\n" for t in range(20)))
    (tmp_path / "load.csv").write_text("time,edge_load\n" + "".join(f"{t},{t / 25}\n" for t in range(20)))
    body = {"name": "t", "channel": "snr.csv", "edge_load": "load.csv", "edge_load_delay_s": 2.0,
            "arrivals": "{times: [0.5, 1.0, 4.2, 4.9, 11.0]}", "battery_start": 0.5, "battery_capacity_j": 100.0,
            **fields}
    text = "".join(f"{k}: {v}\n" for k, v in body.items() if v is not None)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_scenario_replays_state_at_arrival_times_with_a_delayed_load_report(tmp_path):
    s = load_scenario(_scenario(tmp_path))
    assert s.requests == 5 and s.arrivals_s.tolist() == [0.5, 1.0, 4.2, 4.9, 11.0]
    proc = ScenarioProcess(s, history=2)
    seen = []
    for _ in range(s.requests):
        seen.append((proc.time_s, proc.snr_db, proc.edge_load, proc.edge_load_reported, tuple(proc.history)))
        proc.advance()
    # zero-order hold: the row at or before each arrival; the report is the row at t - 2 s
    assert [x[1] for x in seen] == [30.0, 28.0, 22.0, 22.0, 8.0]
    assert [x[2] for x in seen] == pytest.approx([0.0, 0.04, 0.16, 0.16, 0.44])
    assert [x[3] for x in seen] == pytest.approx([0.0, 0.0, 0.08, 0.08, 0.36])
    assert seen[3][4] == (22.0, 28.0)  # newest first, two entries
    with pytest.raises(UsageError, match="requests"):
        _ = proc.snr_db


def test_rate_arrivals_and_committed_scenarios(tmp_path):
    s = load_scenario(_scenario(tmp_path, arrivals="{rate_hz: 4}", requests=6))
    assert s.arrivals_s.tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25])
    for name in ("walk_away", "busy_hour"):
        c = load_scenario(ROOT / "benchmarks" / "scenarios" / f"{name}.yaml")
        assert c.requests >= 30 and c.edge_load is not None and c.battery_start is not None


@pytest.mark.parametrize("fields, match", [
    ({"channel": None}, r"\.channel: required"),
    ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
    ({"arrivals": "{rate_hz: 2}"}, r"\.requests: required with arrivals.rate_hz"),
    ({"arrivals": "{rate_hz: -1}", "requests": 3}, r"arrivals.rate_hz: must be a number in \(0"),
    ({"arrivals": "{times: [1, 0.5]}"}, r"arrivals.times: need >= 1 finite, strictly increasing"),
    ({"arrivals": "{times: [1, 30]}"}, r"\.arrivals: requests arrive over \[1, 30\] s but the channel trace covers \[0, 20\]"),
    ({"battery_start": 1.5}, r"\.battery_start: must be a number in \(0.0, 1.0\]"),
    ({"privacy_target": 2.5}, r"\.privacy_target: must be an integer"),
    ({"edge_load": "nope.csv"}, r"\.edge_load: file .*nope.csv not found"),
])
def test_bad_scenarios_name_the_field(tmp_path, fields, match):
    with pytest.raises(UsageError, match=match):
        load_scenario(_scenario(tmp_path, **fields))


def test_bad_load_value_and_bad_trace_rows_are_usage_errors(tmp_path):
    p = _scenario(tmp_path)
    (tmp_path / "load.csv").write_text("time,edge_load\n0,0.1\n1,1.2\n")
    with pytest.raises(UsageError, match=r"edge_load: utilisation must be in \[0, 1\).*1.2 at time 1.0"):
        load_scenario(p)
    (tmp_path / "load.csv").write_text("time,edge_load\n0,0.1\n1,abc\n")
    with pytest.raises(UsageError, match=r"edge_load: .*:3: column 'edge_load': 'abc' is not a number"):
        load_scenario(p)


def test_channel_process_reads_a_trace_on_its_time_column(tmp_path):
    trace = tmp_path / "fast.csv"  # rows every 0.25 s, requests every 0.5 s: every other row
    trace.write_text("time,snr_db\n" + "".join(f"{0.25 * i},{float(i)}\n" for i in range(16)))
    proc = ChannelProcess({"kind": "trace", "path": str(trace), "on_end": "loop"}, None, slot_s=0.5, history=1)
    snrs = [proc.snr_db] + [proc.advance() for _ in range(4)]
    assert snrs == [0.0, 2.0, 4.0, 6.0, 8.0] and proc.time_s == 2.0
    slow = ChannelProcess({"kind": "trace", "path": str(trace), "on_end": "loop"}, None, slot_s=0.1, history=1)
    assert [slow.snr_db] + [slow.advance() for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0, 2.0]


@pytest.mark.timeout(300)
def test_controller_serves_a_scenario_with_battery_load_and_privacy_floor(tmp_path, llama_tiny):
    scen = _scenario(tmp_path, privacy_target=3)
    cfg = ControlConfig(agent="min-ue", env={"model": "llama-tiny", **assets()}, scenario=str(scen),
                        max_new_tokens=3, out=str(tmp_path / "ctl"))
    ctl = Controller(cfg, loaded=llama_tiny)
    summary = ctl.run(progress=False)
    rows = list(iter_decisions(tmp_path / "ctl" / "decisions.jsonl"))
    assert summary["requests"] == 5 and [r["arrival_s"] for r in rows] == [0.5, 1.0, 4.2, 4.9, 11.0]
    # charged at the TRUE load at arrival (the observation only had the 2 s old report)
    costs = ctl.server.costs
    assert summary["charged_with"] == ["edge_load"]  # battery_aware_energy is off: the reward ignores the battery
    for r in rows:
        want = costs.request_outcome(r["split"], r["snr_db"], previous_split=r["previous_split"], edge_load=r["edge_load"])
        assert r["charged_latency_s"] == want["latency_s"]
    busy = costs.request_outcome(3, 30.0, previous_split=3, edge_load=0.9)["latency_s"]
    assert busy > costs.request_outcome(3, 30.0, previous_split=3, edge_load=0.0)["latency_s"]
    assert [r["snr_db"] for r in rows] == [30.0, 28.0, 22.0, 22.0, 8.0]
    assert [r["edge_load_reported"] for r in rows] == pytest.approx([0.0, 0.0, 0.08, 0.08, 0.36])
    # min-ue would take split 1; the privacy target is a hard floor
    assert all(r["split"] == 3 and r["privacy_raised"] for r in rows) and summary["privacy_raised"] == 5
    bat = [r["battery"] for r in rows]
    assert bat[0] == 0.5 and all(b > a for a, b in zip(bat[1:], bat))  # drains every request
    # each request takes the UE energy it was charged: per token x the cost model's request tokens (32)
    drained = [(a - b) * 100.0 / r["charged_energy_j_per_token"] for a, b, r in zip(bat, bat[1:], rows)]
    assert drained == pytest.approx([32.0] * 4)
    assert all(r["decision_us"] >= r["policy_us"] > 0 for r in rows)
    assert summary["decision_latency_us_p95"] >= summary["decision_latency_us_median"] > 0


def test_control_config_rejects_conflicting_arrivals():
    with pytest.raises(UsageError, match="--arrival-rate"):
        ControlConfig(agent="oracle", scenario="x.yaml", arrival_rate_hz=2.0)
    with pytest.raises(UsageError, match="--battery"):
        ControlConfig(agent="oracle", battery_start=0.0)


def test_cli_bad_scenario_is_one_line(tmp_path, capsys):
    from splitrl.cli import main

    assert main(["control", "--agent", "oracle", "--model", "llama-tiny", "--scenario", str(tmp_path / "no.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scenario:" in err[0] and "not found" in err[0]
    bad = _scenario(tmp_path, edge_load_delay_s=-1)
    assert main(["control", "--agent", "oracle", "--model", "llama-tiny", "--scenario", str(bad)]) == 2
    assert "edge_load_delay_s: must be a number in [0" in capsys.readouterr().err
