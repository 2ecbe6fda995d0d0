"""train.py: CLI end to end (subprocess), TensorBoard tags, config overrides and errors, atomic
checkpoints, exact resume, determinism, load-then-act."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from splitrl.agents.config import ConfigError
from splitrl.training import Trainer, load_run_config, make_env
from splitrl.training.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, write_checkpoint
from splitrl.cli.train import main
from test_agents_support import ROOT, cli_sets

SMALL = {
    "ppo": ["agent.n_steps=64", "agent.batch_size=32", "agent.n_epochs=2"],
    "dqn": ["agent.learning_starts=64", "agent.buffer_size=1000", "agent.target_update_interval=50"],
    "a2c": ["agent.n_steps=8"],
}
TRAIN = ["train.max_episode_steps=64", "train.eval_every=128", "train.eval_episodes=2", "train.checkpoint_every=128",
         "train.log_every=4", "train.histogram_every=64"]


def _args(tmp_path, kind, run, *, seed=0, steps=256, extra=()):
    return ["--agent", kind, "--seed", str(seed), "--total-steps", str(steps), "--run", run, "--no-progress",
            "--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(tmp_path / "ckpt"),
            "--set", *cli_sets(), *SMALL.get(kind, []), *TRAIN, *extra]


def _scalars(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return ea, {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def _policy(ckpt):
    with zipfile.ZipFile(Path(ckpt) / "agent" / "model.zip") as z:
        return torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)


def test_cli_end_to_end_writes_tensorboard_and_checkpoints(tmp_path):
    args = _args(tmp_path, "ppo", "e2e", steps=192)
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "e2e: done at step 192" in proc.stdout
    run_dir = tmp_path / "runs" / "e2e"
    assert list(run_dir.glob("events.out.tfevents.*"))
    ea, sc = _scalars(run_dir)
    for tag in ("rollout/ep_reward", "rollout/ep_len", "eval/regret_vs_oracle", "eval/return", "cost/real_evaluations",
                "channel/snr_db", "split/chosen", "train/loss", "train/value_loss", "train/entropy_loss"):
        assert tag in sc, (tag, sorted(sc))
    assert [s for s, _ in sc["rollout/ep_reward"]] == [64, 128, 192] and all(v == 64 for _, v in sc["rollout/ep_len"])
    assert sc["cost/real_evaluations"][-1] == (192, 192.0)
    assert [s for s, _ in sc["eval/regret_vs_oracle"]] == [128, 192]
    assert "split/histogram" in ea.Tags()["histograms"]
    assert "config/text_summary" in ea.Tags()["tensors"]
    assert "_hparams_/experiment" in ea.PluginTagToContent("hparams")
    ckpt = latest_checkpoint(tmp_path / "ckpt" / "e2e")
    assert ckpt.name == "step-000000000192" and len(list_checkpoints(tmp_path / "ckpt" / "e2e")) == 2  # keep 2
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["kind"] == "ppo" and manifest["step"] == 192
    assert {"config.yaml", "agent/model.zip", "agent/agent.json", "env_state.json", "rng.json",
            "torch_rng.safetensors", "trainer.json"} <= set(manifest["files"])
    saved = yaml.safe_load((ckpt / "config.yaml").read_text())
    assert saved["agent"]["n_steps"] == 64 and saved["env"]["model"] == "llama-tiny" and saved["seed"] == 0
    assert json.loads((ckpt / "agent" / "agent.json").read_text())["state"]["env_steps"] == 192


MARKOV = "env.channel={kind: markov, bin_edges_db: [-10, 5, 15, 30], transition: [[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]]}"


@pytest.mark.parametrize("kind, env_sets", [
    ("ppo", []),
    ("dqn", []),
    ("a2c", [MARKOV, "env.action_mode=relative", "env.include_ue_state=true"]),
])
def test_resume_gives_the_uninterrupted_result(kind, env_sets, tmp_path):
    assert main(_args(tmp_path, kind, "straight", seed=3, steps=320, extra=env_sets)) == 0
    assert main(_args(tmp_path, kind, "split", seed=3, steps=320, extra=env_sets) + ["--stop-at", "150"]) == 0
    stopped = latest_checkpoint(tmp_path / "ckpt" / "split")
    gran = {"ppo": 64, "dqn": 4, "a2c": 8}[kind]
    assert int(stopped.name.split("-")[1]) == -(-150 // gran) * gran  # first boundary at/after 150
    assert main(["--resume", "split", "--no-progress", "--runs-dir", str(tmp_path / "runs"),
                 "--checkpoints-dir", str(tmp_path / "ckpt")]) == 0
    a, b = latest_checkpoint(tmp_path / "ckpt" / "straight"), latest_checkpoint(tmp_path / "ckpt" / "split")
    pa, pb = _policy(a), _policy(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    ja, jb = (json.loads((c / "agent" / "agent.json").read_text())["state"] for c in (a, b))
    assert ja["env_steps"] == jb["env_steps"] == 320 and ja["real_evaluations"] == jb["real_evaluations"]
    _, sa = _scalars(tmp_path / "runs" / "straight")
    _, sb = _scalars(tmp_path / "runs" / "split")  # two event files; the resumed one purges the overlap
    assert {"rollout/ep_reward", "eval/regret_vs_oracle", "channel/snr_db"} <= set(sa)
    assert any(t.startswith("train/") for t in sa)
    for tag in sa:  # every logged curve (SB3's train/* included) but wall-clock ones
        if not tag.startswith("time/"):
            assert sa[tag] == sb[tag], tag
    assert set(sa) == set(sb)
    # and the resumed agent acts like the uninterrupted one
    ta, tb = (Trainer.resume(r, runs_dir=tmp_path / "runs2", checkpoints_dir=tmp_path / "ckpt", progress=False)
              for r in ("straight", "split"))
    obs, _ = make_env(ta.config).reset(seed=77)
    batch = [obs + np.float32(d) for d in np.linspace(-20, 20, 9)]
    assert [ta.agent.act(o) for o in batch] == [tb.agent.act(o) for o in batch]


def test_same_seed_same_training_curve(tmp_path):
    curves = []
    for run, seed in (("a", 1), ("b", 1), ("c", 2)):
        cfg = load_run_config("a2c", overrides=[*cli_sets(), *SMALL["a2c"], *TRAIN], seed=seed, total_steps=192)
        t = Trainer(cfg, run, runs_dir=tmp_path / "runs", checkpoints_dir=tmp_path / "ckpt", progress=False)
        res = t.train()
        t.close()
        _, sc = _scalars(tmp_path / "runs" / run)
        curves.append((res.episode_rewards, sc["rollout/ep_reward"], sc["split/chosen"]))
    assert len(curves[0][0]) == 3
    assert curves[0] == curves[1]
    assert curves[0][0] != curves[2][0]


def test_loading_a_checkpoint_then_acting_matches_the_agent_before_saving(tmp_path):
    cfg = load_run_config("dqn", overrides=[*cli_sets(), *SMALL["dqn"], *TRAIN], seed=0, total_steps=128)
    t = Trainer(cfg, "act", runs_dir=tmp_path / "runs", checkpoints_dir=tmp_path / "ckpt", progress=False)
    t.train()
    obs, _ = make_env(cfg).reset(seed=5)
    batch = [obs + np.float32(d) for d in np.linspace(-15, 15, 7)]
    before = [t.agent.act(o) for o in batch]
    t.close()
    again = Trainer.resume("act", runs_dir=tmp_path / "runs", checkpoints_dir=tmp_path / "ckpt", progress=False)
    assert [again.agent.act(o) for o in batch] == before
    assert again.step == 128 and again.agent.env_steps == 128


@pytest.mark.parametrize("kind", ["oracle", "fixed", "random", "latency-only"])
def test_baselines_run_through_train_py(kind, tmp_path):
    extra = ["agent.episodes=1", "agent.episode_steps=16"] if kind == "fixed" else []
    assert main(_args(tmp_path, kind, kind, steps=128, extra=extra)) == 0
    _, sc = _scalars(tmp_path / "runs" / kind)
    assert len(sc["rollout/ep_reward"]) == 2 and "eval/regret_vs_oracle" in sc
    if kind == "oracle":
        assert all(v == 0.0 for _, v in sc["eval/regret_vs_oracle"])
    assert latest_checkpoint(tmp_path / "ckpt" / kind).name == "step-000000000128"


def test_overrides_reach_env_agent_and_train():
    cfg = load_run_config("ppo", overrides=[*cli_sets(), "env.transport=int8-biterr", "env.reward.w_switch=2",
                                            "agent.learning_rate=1e-4", "net_arch=32,32", "train.eval_every=7",
                                            MARKOV], seed=4, total_steps=99, env_id="splitrl/SplitPointTable-v0")
    assert cfg.env["transport"] == "int8-biterr" and cfg.env["reward"]["w_switch"] == 2.0
    assert cfg.agent.learning_rate == 1e-4 and cfg.agent.net_arch == [32, 32]
    assert cfg.train.eval_every == 7 and cfg.train.total_steps == 99 and cfg.seed == 4
    assert cfg.env["channel"]["kind"] == "markov"
    defaults = load_run_config("ppo")
    assert defaults.agent.gamma == 0.95 and defaults.env["model"] == "smollm2-135m"  # from configs/ppo.yaml
    env = make_env(cfg)
    assert env.unwrapped.config.transport == "int8-biterr" and env.unwrapped.table.path.name == "tiny.csv"
    env.reset(seed=0)
    snrs = {round(env.step(0)[4]["snr_db"], 6) for _ in range(30)}
    assert snrs <= {-2.5, 10.0, 22.5}  # the Markov chain's bin midpoints


@pytest.mark.parametrize("sets, message", [
    (["agent.lerning_rate=1"], "unknown field agent.lerning_rate for PPOConfig (did you mean agent.learning_rate?); allowed: "),
    (["agent.gamma=2"], "PPOConfig.gamma must be in [0, 1], got 2.0"),
    (["agent.n_steps=abc"], "agent.n_steps must be an integer, got 'abc'"),
    (["env.transprt=awgn"], "unknown field env.transprt for SplitPointConfig (did you mean env.transport?)"),
    (["env.transport=smoke"], "transport 'smoke' not allowed; choose from "),
    (["env.reward.w_switch=-1"], "RewardConfig.w_switch must be a finite number >= 0"),
    (["train.eval_every=-5"], "TrainConfig.eval_every must be >= 0, got -5"),
    (["bogus.x=1"], "unknown config key 'bogus'"),
    (["agent.gamma"], "--set takes KEY=VALUE"),
    (["seed=12345678901234567890123"], "seed must be an integer in 0..2147483647, got 12345678901234567890123"),
    (["train.eval_seed=100000000000000000000"], "TrainConfig.eval_seed must be"),
])
def test_cli_rejects_bad_overrides_with_the_allowed_names(sets, message, tmp_path, capsys):
    rc = main(["--agent", "ppo", "--run", "bad", "--no-progress", "--runs-dir", str(tmp_path), "--checkpoints-dir",
               str(tmp_path), "--set", *sets])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("train.py: error: ") and message in err, err
    assert not (tmp_path / "bad").exists()


def test_cli_argument_errors(tmp_path, capsys):
    d = ["--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(tmp_path / "ckpt"), "--no-progress"]
    assert main(["--resume", "nothing", *d]) == 2 and "does not exist" in capsys.readouterr().err
    assert main(["--resume", "x", "--set", "agent.gamma=0.5", *d]) == 2 and "drop --set" in capsys.readouterr().err
    assert main([*d]) == 2 and "--agent is required" in capsys.readouterr().err
    assert main(["--agent", "ppo", "--config", str(tmp_path / "missing.yaml"), *d]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "dqn.yaml").write_text("kind: dqn\n")
    assert main(["--agent", "ppo", "--config", str(tmp_path / "dqn.yaml"), *d]) == 2
    assert "config for agent 'dqn', not 'ppo'" in capsys.readouterr().err
    (tmp_path / "ckpt" / "taken").mkdir(parents=True)
    assert main(["--agent", "oracle", "--run", "taken", *d]) == 2 and "exists" in capsys.readouterr().err
    assert main(["--agent", "sarsa"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'sarsa'" in err
    assert main(["--agent", "dqn", "--list-config"]) == 0
    out = capsys.readouterr().out
    assert all(f"agent.{f}" in out for f in ("learning_rate", "buffer_size", "exploration_final_eps")) and "env.transport" in out


def test_a_huge_seed_or_an_unphysical_trace_row_is_one_line(tmp_path, capsys):
    d = ["--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(tmp_path / "ckpt"), "--no-progress",
         "--total-steps", "10"]
    assert main(["--agent", "random", "--seed", "12345678901234567890123", *d]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed must be an integer in 0..2147483647" in err
    (tmp_path / "seed.yaml").write_text("seed: 12345678901234567890123\n")
    assert main(["--agent", "random", "--config", str(tmp_path / "seed.yaml"), *d]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed must be an integer in 0..2147483647" in err
    trace = tmp_path / "t.csv"
    trace.write_text("time,snr_db\n0,1e308\n1,5\n")
    assert main(["--agent", "random", *d, "--set", "env.channel.kind=trace", f"env.channel.path={trace}"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("train.py: error: ") and "outside [-200, 200] dB" in err
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_every_agent_default_config_loads():
    from splitrl.agents.registry import AGENTS

    for kind in AGENTS:
        cfg = load_run_config(kind)
        assert cfg.kind == kind and (ROOT / "configs" / f"{kind}.yaml").is_file()
        assert load_run_config(kind, overrides=[f"{k}={v}" for k, v in _flat(cfg.to_dict()["agent"]).items()]).agent == cfg.agent
    with pytest.raises(ConfigError, match="unknown agent"):
        load_run_config("sarsa")


def _flat(d):
    return {f"agent.{k}": (",".join(map(str, v)) if isinstance(v, list) else ("null" if v is None else v)) for k, v in d.items()}


def test_sigterm_stops_at_the_next_boundary_with_a_checkpoint(tmp_path):
    import signal

    cfg = load_run_config("ppo", overrides=[*cli_sets(), *SMALL["ppo"], *TRAIN], seed=0, total_steps=512)
    t = Trainer(cfg, "sig", runs_dir=tmp_path / "runs", checkpoints_dir=tmp_path / "ckpt", progress=False)
    on_step = t._on_step

    def step_then_signal(d):
        if t.step == 99:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler pre-empting the job would
        return on_step(d)

    t._on_step = step_then_signal
    res = t.train()
    t.close()
    assert not res.completed and res.steps == 128
    assert latest_checkpoint(tmp_path / "ckpt" / "sig").name == "step-000000000128"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_checkpoint_writes_are_atomic(tmp_path):
    run = tmp_path / "run"

    def fill(text):
        def f(d):
            (d / "a.txt").write_text(text)
        return f

    write_checkpoint(run, 10, fill("ten"))
    good = latest_checkpoint(run)

    def dies(d):  # killed half way through writing
        (d / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(run, 20, dies)
    assert latest_checkpoint(run) == good and (good / "a.txt").read_text() == "ten"
    assert list(run.glob(".tmp-*"))  # the half-written folder is left aside ...
    write_checkpoint(run, 30, fill("thirty"))
    assert not list(run.glob(".tmp-*"))  # ... and cleared by the next write
    assert (latest_checkpoint(run) / "a.txt").read_text() == "thirty"
    (latest_checkpoint(run) / "a.txt").write_text("tampered")
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        latest_checkpoint(run)
    write_checkpoint(run, 40, fill("forty"), keep=2)
    assert [p.name for p in list_checkpoints(run)] == ["step-000000000030", "step-000000000040"]


def test_mbrl_resume_gives_the_uninterrupted_result(tmp_path):
    assert main(_args(tmp_path, "mbrl", "straight", seed=2, steps=90)) == 0
    assert main(_args(tmp_path, "mbrl", "split", seed=2, steps=90) + ["--stop-at", "41"]) == 0
    assert int(latest_checkpoint(tmp_path / "ckpt" / "split").name.split("-")[1]) == 41  # boundary after every step
    assert main(["--resume", "split", "--no-progress", "--runs-dir", str(tmp_path / "runs"),
                 "--checkpoints-dir", str(tmp_path / "ckpt")]) == 0
    a, b = latest_checkpoint(tmp_path / "ckpt" / "straight"), latest_checkpoint(tmp_path / "ckpt" / "split")
    ea, eb = (json.loads((c / "agent" / "evaluations.json").read_text()) for c in (a, b))
    assert ea == eb and len(ea["targets"]) == 90  # the same real evaluations, in the same order
    ja, jb = (json.loads((c / "agent" / "agent.json").read_text())["state"] for c in (a, b))
    assert ja["channel"] == jb["channel"] and ja["rng"] == jb["rng"]
    _, sa = _scalars(tmp_path / "runs" / "straight")
    _, sb = _scalars(tmp_path / "runs" / "split")
    assert {"surrogate/train_points", "cost/real_evaluations"} <= set(sa)
    for tag in sa:
        if not tag.startswith("time/"):
            assert sa[tag] == sb[tag], tag
