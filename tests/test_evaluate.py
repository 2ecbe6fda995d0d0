"""splitrl.experiments.evaluate: held-out comparison of agents, the score definitions, outputs and the CLI."""
import argparse
import json

import pytest

from splitrl.agents.mbrl import MBRLAgent, MBRLConfig
from splitrl.experiments.evaluate import (
    DEFINITIONS, AgentSpec, evaluate_agents, parse_agent_spec, scores, write_outputs,
)
from test_agents_support import assets, make_env

ROW_KEYS = {"reward_per_step", "fraction_of_oracle", "reward_ratio_to_oracle", "regret_pct", "real_evaluations",
            "online_evaluations", "decision_latency_us"}


@pytest.fixture(scope="module")
def mbrl_ckpt(tmp_path_factory):
    env = make_env()
    d = tmp_path_factory.mktemp("ev") / "mbrl"
    MBRLAgent(env, MBRLConfig(warmup_evaluations=10), seed=0).learn(env, 30).save(d)
    return d


def test_scores_are_defined_for_negative_rewards():
    assert scores(-1.0, -1.0, -3.0) == {"fraction_of_oracle": 1.0, "reward_ratio_to_oracle": 1.0, "regret_pct": 0.0}
    s = scores(-3.0, -1.0, -3.0)
    assert s["fraction_of_oracle"] == 0.0 and s["reward_ratio_to_oracle"] == 3.0 and s["regret_pct"] == 200.0
    assert scores(-2.0, -1.0, -3.0)["fraction_of_oracle"] == 0.5


def test_baselines_and_a_trained_agent_on_the_same_held_out_episodes(mbrl_ckpt, tmp_path):
    specs = ["oracle", "random", "all-on-ue", "latency-only", AgentSpec("mbrl", mbrl_ckpt, "mbrl@30")]
    res = evaluate_agents(specs, env=make_env(episode=32), episodes=2, steps=32, seed=2_000_000)
    rows = res["agents"]
    assert list(rows) == ["oracle", "random", "all-on-ue", "latency-only", "mbrl@30"]
    for r in rows.values():
        assert ROW_KEYS <= set(r) and r["decision_latency_us"] > 0
    assert rows["oracle"]["fraction_of_oracle"] == 1.0 and rows["oracle"]["regret_pct"] == 0.0
    assert rows["random"]["fraction_of_oracle"] == 0.0  # same seed, same episodes: the reference itself
    assert rows["mbrl@30"]["real_evaluations"] == 30 and rows["mbrl@30"]["online_evaluations"] == 0
    assert rows["mbrl@30"]["fraction_of_oracle"] > 0.5
    assert res["seeds"] == [2_000_000, 2_000_001] and res["definitions"] == DEFINITIONS
    paths = write_outputs(res, tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    assert set(doc["agents"]) == set(rows) and doc["oracle_reward_per_step"] == rows["oracle"]["reward_per_step"]
    md = paths["md"].read_text()
    assert "fraction of oracle" in md and "mbrl@30" in md and "(R - R_random)" in md
    assert paths["png"].stat().st_size > 0


def test_feedback_counts_online_evaluations(mbrl_ckpt, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(mbrl_ckpt, d)
    meta = json.loads((d / "agent.json").read_text())
    meta["state"]["config"]["eval_threshold"] = 1e6
    (d / "agent.json").write_text(json.dumps(meta))
    res = evaluate_agents([AgentSpec("mbrl", d)], env=make_env(episode=32), episodes=1, steps=32, feedback=True)
    assert res["agents"]["mbrl"]["online_evaluations"] > 0 and res["agents"]["mbrl"]["real_evaluations"] == 30


def test_parse_agent_spec():
    assert parse_agent_spec("oracle").checkpoint is None
    assert str(parse_agent_spec("ppo=runs/x").checkpoint) == "runs/x"
    for bad in ("nope", "ppo="):
        with pytest.raises(ValueError):
            parse_agent_spec(bad)


def _cli():
    from splitrl.cli import COMMANDS

    builder, fn = COMMANDS["evaluate"].functions()
    p = argparse.ArgumentParser()
    builder(p)
    return lambda argv: fn(p.parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["--agents", "nope"], ["--agents", "oracle", "--episodes", "0"], ["--agents", "oracle", "--episodes", "x"],
    ["--agents", "mbrl=/no/such/dir"], ["--agents", "oracle", "--env", "splitrl/Nope-v0"], [],
    ["--agents", "oracle", "--set", "transport=nope"],
])
def test_cli_bad_arguments_exit_2_with_one_line(argv, capsys):
    assert _cli()(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("splitrl evaluate: error:") and len(err.splitlines()) == 1


def test_cli_wrong_kind_for_checkpoint_and_a_good_run(mbrl_ckpt, tmp_path, capsys):
    a = assets()
    env = ["--set", "model=llama-tiny", "--set", f"table={a['table']}", "--set", f"ue_profile={a['ue_profile']}"]
    assert _cli()(["--agents", f"ppo={mbrl_ckpt}", *env]) == 2
    assert "holds a 'mbrl' agent" in capsys.readouterr().err
    out = tmp_path / "ev"
    assert _cli()(["--agents", "oracle", f"mbrl={mbrl_ckpt}", "--episodes", "1", "--steps", "16", "--out", str(out), *env]) == 0
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["agents"]["mbrl"]["real_evaluations"] == 30 and (out / "evaluation.md").is_file()


def test_a_trainer_checkpoint_is_evaluated_on_its_own_env_config(tmp_path):
    """Without --set the evaluation env is the run's own (here the tiny llama table env, not the
    default SmolLM2 one); a different configuration is refused naming the fields, unless allowed."""
    from splitrl.errors import UsageError
    from splitrl.training import Trainer, load_run_config
    from test_agents_support import cli_sets

    cfg = load_run_config("latency-only", overrides=[*cli_sets(), "train.eval_every=0", "train.eval_episodes=1",
                                                     "train.max_episode_steps=8"], total_steps=8)
    t = Trainer(cfg, "lat", runs_dir=tmp_path / "runs", checkpoints_dir=tmp_path / "ckpt", progress=False)
    t.train()
    t.close()
    run = tmp_path / "ckpt" / "lat"
    res = evaluate_agents([AgentSpec("latency-only", run)], episodes=1, steps=4)
    row = res["agents"]["latency-only"]
    assert row["env_differences"] == [] and row["trained_env_id"] == cfg.env_id
    assert row["real_evaluations"] == 0  # latency-only never pays for a quality measurement
    with pytest.raises(UsageError, match=r"trained on another env configuration \(env.transport differ"):
        evaluate_agents([AgentSpec("latency-only", run)], episodes=1, steps=4,
                        env_overrides=[*(s.removeprefix("env.") for s in cli_sets()), "transport=int8-biterr"])
    res = evaluate_agents([AgentSpec("latency-only", run)], episodes=1, steps=4, allow_env_mismatch=True,
                          env_overrides=[*(s.removeprefix("env.") for s in cli_sets()), "transport=int8-biterr"])
    assert res["agents"]["latency-only"]["env_differences"] == ["env.transport"]
    out = write_outputs(res, tmp_path / "ev")
    json.loads(out["json"].read_text())  # valid JSON even where a score is undefined
