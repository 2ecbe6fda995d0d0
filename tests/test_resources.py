"""splitrl.resources: the shipped default data is the checkout's source-of-truth files, and is all in the wheel."""
import fnmatch
import os
import pathlib
import subprocess
import tomllib

import pytest

from splitrl.errors import UsageError
from splitrl.resources import checkout_root, resource_path, results_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "splitrl" / "data"

# name under splitrl/data/ -> the file the committed scripts write (or the folder users edit)
SOURCES = {
    "sweep_smollm2.csv": "benchmarks/results/sweep_smollm2.csv",
    "sweep_smollm2.csv.meta.json": "benchmarks/results/sweep_smollm2.csv.meta.json",
    "privacy_smollm2.json": "benchmarks/results/privacy_smollm2.json",
    "aircomp.json": "benchmarks/results/aircomp.json",
    "configs": "configs",
}


def test_every_shipped_name_is_its_source_of_truth():
    assert sorted(p.name for p in DATA.iterdir()) == sorted(SOURCES)
    for name, source in SOURCES.items():
        # Symlinks, not copies: the same inode, so the package can never lag behind a benchmark rerun.
        assert (DATA / name).is_symlink(), f"splitrl/data/{name} must be a symlink to {source}"
        assert resource_path(name) == (ROOT / source).resolve()
        assert resource_path(name).samefile(ROOT / source)


def test_git_stores_the_data_as_symlinks():
    try:
        out = subprocess.run(["git", "ls-files", "-s", "splitrl/data"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if not out:
        pytest.skip("splitrl/data not committed yet")
    modes = {line.split("\t")[1].removeprefix("splitrl/data/"): line.split()[0] for line in out.splitlines()}
    assert modes == {name: "120000" for name in SOURCES}


def test_package_data_globs_ship_every_data_file():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["splitrl"]
    # os.walk, not rglob: the configs folder is a symlinked directory, which rglob does not enter.
    files = [(pathlib.Path(top) / f).relative_to(ROOT / "splitrl").as_posix()
             for top, _, names in os.walk(DATA, followlinks=True) for f in names]
    assert len(files) > len(SOURCES)  # the configs folder holds several files
    missed = [f for f in files if not any(fnmatch.fnmatchcase(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missed, f"package-data in pyproject.toml misses {missed}"


def test_library_defaults_read_the_shipped_data():
    from splitrl.cost.privacy import DEFAULT_PRIVACY_FILE
    from splitrl.envs.aircomp_assign import DEFAULT_CALIBRATION
    from splitrl.envs.split_point import DEFAULT_TABLE
    from splitrl.training.config import CONFIG_DIR, default_config_path

    assert DEFAULT_TABLE == resource_path("sweep_smollm2.csv")
    assert DEFAULT_PRIVACY_FILE == resource_path("privacy_smollm2.json")
    assert DEFAULT_CALIBRATION == resource_path("aircomp.json")
    assert CONFIG_DIR == resource_path("configs")
    assert default_config_path("ppo").parent == CONFIG_DIR


def test_a_missing_data_file_is_a_usage_error_naming_it():
    with pytest.raises(UsageError, match=r"splitrl/data/no_such\.csv is missing"):
        resource_path("no_such.csv")


def test_checkout_root_and_results_dir_in_a_checkout():
    assert checkout_root() == ROOT
    assert results_dir() == ROOT / "benchmarks" / "results"


def test_a_missing_corpus_is_a_usage_error_that_says_how_to_point_to_it(tmp_path):
    from splitrl.eval.corpus import CorpusError, load_wikitext2_test

    assert issubclass(CorpusError, UsageError)
    missing = tmp_path / "wiki.test.raw"
    with pytest.raises(UsageError, match="SPLITRL_WIKITEXT") as info:
        load_wikitext2_test(missing)
    assert str(missing) in str(info.value) and "--corpus PATH" in str(info.value)
