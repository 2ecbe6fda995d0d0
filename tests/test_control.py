"""The deployed controller: a trained agent choosing splits for real requests through the runtime."""
import json
import subprocess
import sys

import pytest
from test_agents_support import ROOT, assets, cli_sets

from splitrl.controller.session import ControlConfig, Controller, channel_spec, iter_decisions


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


def test_control_cli_set_overrides_summary_and_one_session_per_folder(tmp_path, capsys):
    from splitrl.cli import main

    out = tmp_path / "ctl"
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\nthe weather today\n")
    a = assets()
    args = ["control", "--agent", "latency-only", "--model", "llama-tiny", "--channel", f"trace:{_drop_trace(tmp_path, n=3)}",
            "--requests", "4", "--max-new-tokens", "2", "--prompts", str(prompts), "--out", str(out),
            "--set", f"env.table={a['table']}", f"env.ue_profile={a['ue_profile']}", "env.transport=int8-biterr",
            "env.reward.w_energy=3"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transport"] == "int8-biterr" and summary["mean_emulated_ue_energy_j_per_token"] > 0
    assert summary["requests"] == 4 and summary["fallbacks"] == 0
    rows = list(iter_decisions(out / "decisions.jsonl"))
    assert all(r["transport"] == "int8-biterr" and r["reward_table"] is not None for r in rows)
    # a reused folder is refused in one line, and its log is left as it was
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a session" in err
    assert len(list(iter_decisions(out / "decisions.jsonl"))) == 4


def test_control_cli_bad_checkpoint_and_bad_set_are_one_line(tmp_path, capsys):
    from splitrl.cli import main

    assert main(["control", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--checkpoint" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{}")
    (bad / "config.yaml").write_text("kind: [not, an, agent]\n")
    assert main(["control", "--checkpoint", str(bad), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--checkpoint" in err
    assert main(["control", "--agent", "oracle", "--set", "agent.learning_rate=1", "--out", str(tmp_path / "o3")]) == 2
    assert "env.FIELD" in capsys.readouterr().err
    assert main(["control", "--agent", "oracle", "--set", "env.transport=smoke-signals", "--out", str(tmp_path / "o4")]) == 2
    assert "transport" in capsys.readouterr().err
