"""A checkpoint from someone else is data, never code; one writer per run.

Every forgery here rewrites the hashes too (agent.json's file list and the checkpoint manifest),
as anyone who can write the folder can: the defence under test is that nothing a loader reads can
execute, not the hashes. Each case then goes through the real load paths — `Trainer.resume`
(``train.py --resume``) and `splitrl.experiments.evaluate.load_agent` (``splitrl evaluate`` / the controller's
agent loading) — and checks that (a) the sentinel file a malicious pickle would create does not
exist and (b) any refusal is a one-line `UsageError`.
"""
import base64
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from splitrl.errors import UsageError
from splitrl.integrity import list_files, sha256_file
from splitrl.training import Trainer, load_run_config
from splitrl.training.checkpoint import RunLock, latest_checkpoint
from splitrl.cli.train import main as train_main
from test_agents_support import cli_sets

TRAIN = ["train.max_episode_steps=32", "train.eval_every=0", "train.eval_episodes=1", "train.checkpoint_every=16",
         "train.log_every=4", "train.histogram_every=64"]
RUNS = {
    "mbrl": (["agent.warmup_evaluations=5", "agent.refit_every=5"], 24),
    "ppo": (["agent.n_steps=16", "agent.batch_size=16", "agent.n_epochs=1"], 32),
}


class _Evil:
    """Unpickling this creates the sentinel file (a stand-in for arbitrary code)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _run_config(kind: str):
    sets, steps = RUNS[kind]
    return load_run_config(kind, overrides=[*cli_sets(), *sets, *TRAIN], seed=0, total_steps=steps)


def _run_env(kind: str):
    """The env the runs were trained in (configs/base.yaml's env + the tiny overrides): the agent's
    observation size must match it, and base.yaml's env differs from SplitPointConfig's defaults."""
    from splitrl.training.trainer import make_env as run_env

    return run_env(_run_config(kind))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    for kind in RUNS:
        cfg = _run_config(kind)
        t = Trainer(cfg, kind, runs_dir=root / "runs", checkpoints_dir=root / "ckpt", progress=False)
        t.train()
        t.close()
    return root


def _forge_hashes(ckpt: Path) -> None:
    """Rewrite agent.json's file list and the manifest so that every hash matches again."""
    agent = ckpt / "agent"
    meta = json.loads((agent / "agent.json").read_text())
    meta["files"] = {rel: sha256_file(p) for rel, p in list_files(agent, frozenset({"agent.json"})).items()}
    (agent / "agent.json").write_text(json.dumps(meta))
    man = json.loads((ckpt / "manifest.json").read_text())
    man["files"] = {rel: sha256_file(p) for rel, p in list_files(ckpt, frozenset({"manifest.json"})).items()}
    (ckpt / "manifest.json").write_text(json.dumps(man))


def _rewrite_zip(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    items[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for n, b in items.items():
            z.writestr(n, b)


def _tamper(case: str, ckpt: Path, sentinel: Path) -> None:
    evil = pickle.dumps(_Evil(sentinel))
    agent = ckpt / "agent"
    if case == "pickle-as-surrogate-joblib":  # the old format's file, now never read
        (agent / "surrogate.joblib").write_bytes(evil)
    elif case == "old-pickle-surrogate-format":
        meta = json.loads((agent / "surrogate.json").read_text())
        (agent / "surrogate.joblib").write_bytes(evil)
        meta.update({"format": "splitrl-surrogate/1", "joblib_file": "surrogate.joblib",
                     "joblib_sha256": sha256_file(agent / "surrogate.joblib")})
        (agent / "surrogate.json").write_text(json.dumps(meta))
    elif case == "pickle-as-policy-weights":
        _rewrite_zip(agent / "model.zip", "policy.pth", evil)
    elif case == "pickle-in-sb3-data":
        with zipfile.ZipFile(agent / "model.zip") as z:
            data = json.loads(z.read("data"))
        data["policy_class"] = {":type:": "<class 'type'>", ":serialized:": base64.b64encode(evil).decode()}
        _rewrite_zip(agent / "model.zip", "data", json.dumps(data).encode())
    elif case == "object-array-npz":
        with open(ckpt / "env_arrays.npz", "wb") as f:
            np.savez(f, x=np.array([_Evil(sentinel)], dtype=object))
    elif case == "pickle-as-torch-rng":
        (ckpt / "torch_rng.safetensors").write_bytes(evil)
    else:
        raise AssertionError(case)
    _forge_hashes(ckpt)


CASES = [
    ("mbrl", "pickle-as-surrogate-joblib"), ("mbrl", "old-pickle-surrogate-format"), ("mbrl", "object-array-npz"),
    ("ppo", "pickle-as-policy-weights"), ("ppo", "pickle-in-sb3-data"), ("ppo", "pickle-as-torch-rng"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind,case", CASES)
def test_a_forged_checkpoint_cannot_run_code(runs, tmp_path, kind, case):
    from splitrl.experiments.evaluate import load_agent

    ckroot = tmp_path / "ckpt"
    shutil.copytree(runs / "ckpt" / kind, ckroot / kind, symlinks=True)
    ckpt = latest_checkpoint(ckroot / kind)
    sentinel = tmp_path / "PWNED"
    _tamper(case, ckpt, sentinel)
    for load in (lambda: Trainer.resume(kind, runs_dir=tmp_path / "runs", checkpoints_dir=ckroot, progress=False).close(),
                 lambda: load_agent(kind, _run_env(kind), ckpt),
                 lambda: load_agent(kind, _run_env(kind), ckpt / "agent")):
        try:
            load()
        except UsageError as e:  # refused: fine, as one line
            assert "\n" not in str(e)
        assert not sentinel.exists(), f"{case}: loading ran code"


@pytest.mark.timeout(120)
def test_unlisted_or_linked_files_are_refused_on_every_load_path(runs, tmp_path, capsys):
    from splitrl.experiments.evaluate import load_agent

    ckroot = tmp_path / "ckpt"
    shutil.copytree(runs / "ckpt" / "mbrl", ckroot / "mbrl", symlinks=True)
    ckpt = latest_checkpoint(ckroot / "mbrl")
    (ckpt / "agent" / "extra.joblib").write_bytes(b"not listed")
    for load in (lambda: load_agent("mbrl", _run_env("mbrl"), ckpt), lambda: load_agent("mbrl", _run_env("mbrl"), ckpt / "agent"),
                 lambda: load_agent("mbrl", _run_env("mbrl"), ckroot / "mbrl")):
        with pytest.raises(UsageError, match="extra.joblib is not listed"):
            load()
    d = ["--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(ckroot), "--no-progress"]
    assert train_main(["--resume", "mbrl", *d]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not listed" in err
    (ckpt / "agent" / "extra.joblib").unlink()
    (ckpt / "agent" / "link.json").symlink_to(ckpt / "config.yaml")
    with pytest.raises(UsageError, match="symlink"):
        load_agent("mbrl", _run_env("mbrl"), ckpt / "agent")


@pytest.mark.timeout(120)
def test_one_writer_per_run(runs, tmp_path, capsys):
    """A run being written (its lock held, here by this test) cannot be resumed or started again;
    the second writer gets one line and exit 2, and the run's files are untouched."""
    ckroot = tmp_path / "ckpt"
    shutil.copytree(runs / "ckpt" / "ppo", ckroot / "ppo", symlinks=True)
    before = {rel: sha256_file(p) for rel, p in list_files(ckroot / "ppo").items() if not p.is_symlink()}
    d = ["--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(ckroot), "--no-progress"]
    with RunLock(ckroot / "ppo", new=False):
        assert train_main(["--resume", "ppo", "--total-steps", "64", *d]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is being written by another process" in err
        assert train_main(["--agent", "ppo", "--run", "ppo", "--set", *cli_sets(), *d]) == 2
        assert "exists" in capsys.readouterr().err
    after = {rel: sha256_file(p) for rel, p in list_files(ckroot / "ppo").items() if not p.is_symlink()}
    assert before == after and not (tmp_path / "runs" / "ppo").exists()
    # a new run name is created atomically: the folder cannot be taken twice
    RunLock(ckroot / "fresh", new=True).release()
    with pytest.raises(UsageError, match="exists"):
        RunLock(ckroot / "fresh", new=True)
