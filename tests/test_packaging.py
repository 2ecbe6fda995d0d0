"""Layout, import mapping and the tested dependency range."""
import pathlib
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("splitrl", "splitrl"), ("envs", "splitrl.envs"), ("agents", "splitrl.agents")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)) if rel else name)
    assert found == listed, f"pyproject packages out of date: missing {found - listed}, stale {listed - found}"


def test_envs_and_agents_import_under_the_splitrl_namespace():
    import splitrl.agents
    import splitrl.envs

    assert pathlib.Path(splitrl.envs.__file__).parent.name == "envs"
    assert pathlib.Path(splitrl.agents.__file__).parent.name == "agents"


def test_installed_transformers_is_in_the_tested_range():
    from splitrl.compat import check_transformers_version

    check_transformers_version()  # raises if the environment drifted outside the range


@pytest.mark.parametrize("version", ["4.57.1", "5.24.0", "6.0.0"])
def test_versions_outside_the_range_fail_loudly(version):
    from splitrl.compat import check_transformers_version

    with pytest.raises(RuntimeError, match="tested with transformers"):
        check_transformers_version(version)
