"""The deployed controller: a trained agent choosing splits for real requests through the runtime."""
import json
import subprocess
import sys

import pytest
from test_agents_support import ROOT, assets, cli_sets

from splitrl.control import ControlConfig, Controller, channel_spec, iter_decisions


def _drop_trace(tmp_path, high=28.0, low=-5.0, n=12):
    trace = tmp_path / "drop.csv"
    snrs = [high] * n + [low] * n
    trace.write_text("time,snr_db\n" + "".join(f"{i * 0.5},{s}\n" for i, s in enumerate(snrs)))
    return trace


def test_oracle_controller_changes_split_after_the_snr_drops(tmp_path, llama_tiny):
    cfg = ControlConfig(agent="oracle", env={"model": "llama-tiny", **assets()}, channel=f"trace:{_drop_trace(tmp_path)}",
                        requests=24, max_new_tokens=4, out=str(tmp_path / "ctl"))
    summary = Controller(cfg, loaded=llama_tiny).run(progress=False)
    rows = list(iter_decisions(tmp_path / "ctl" / "decisions.jsonl"))
    assert len(rows) == 24 == summary["requests"]
    before = {r["split"] for r in rows[1:12]}
    after = {r["split"] for r in rows[13:]}
    assert max(before) < min(after)  # deep fade: keep more layers on the UE
    assert all(r["snr_db"] == 28.0 for r in rows[:12]) and all(r["snr_db"] == -5.0 for r in rows[12:])
    assert summary["split_changes"] >= 1 and summary["decision_latency_us_median"] > 0
    assert (tmp_path / "ctl" / "summary.json").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "ctl").iterdir())


def test_trained_checkpoint_controls_the_runtime(tmp_path, llama_tiny):
    run = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--agent", "mbrl", "--seed", "0", "--total-steps", "60",
         "--run", "ctl-mbrl", "--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(tmp_path / "ckpt"),
         "--no-progress", "--set", *cli_sets(), "--set", "train.eval_every=1000", "train.eval_episodes=1"],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    cfg = ControlConfig(checkpoint=str(tmp_path / "ckpt" / "ctl-mbrl"), channel=f"trace:{_drop_trace(tmp_path)}",
                        requests=20, max_new_tokens=3, ppl_tokens=32, out=str(tmp_path / "ctl"))
    summary = Controller(cfg, loaded=llama_tiny).run(progress=False)
    rows = list(iter_decisions(tmp_path / "ctl" / "decisions.jsonl"))
    assert summary["agent_real_evaluations"] >= 60 and len(rows) == 20
    assert all(r["ppl_measured"] > 0 and r["emulated_ttft_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert {r["split"] for r in rows[:10]} != {r["split"] for r in rows[11:]}
    assert json.loads((tmp_path / "ctl" / "summary.json").read_text())["decision_pct_of_decode_step"] > 0


def test_channel_specs_and_errors(tmp_path):
    assert channel_spec("fading") is None and channel_spec("markov")["kind"] == "markov"
    trace = _drop_trace(tmp_path)
    assert channel_spec(str(trace))["path"] == str(trace)
    with pytest.raises(ValueError, match="not found"):
        channel_spec("trace:/nope.csv")
    with pytest.raises(ValueError, match="--channel must be"):
        channel_spec("carrier-pigeon")
    with pytest.raises(ValueError, match="exactly one"):
        ControlConfig()


def test_cli_rejects_bad_channel_with_one_line(capsys):
    from splitrl.cli import main

    assert main(["control", "--agent", "oracle", "--channel", "nope"]) == 2
    assert "--channel must be" in capsys.readouterr().err
