"""The ``splitrl/cli/`` package: fast start-up (no torch for --help or argument errors), every
option documented with its default shown once, ``splitrl train`` = ``train.py``, and the copies of
library constants the option builders show (kept so --help need not import torch) still equal."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitrl.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "stable_baselines3")


def _subparsers(parser: argparse.ArgumentParser, prefix=()):
    """(path, parser) for every parser reachable from ``parser``, itself included."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*prefix, name))


ALL = [path for path, _ in _subparsers(build_parser()) if path]


def test_help_of_every_command_and_argument_errors_import_no_torch():
    """One child runs ``--help`` of every command and sub-command, then argument errors, in turn."""
    calls = [[*path, "--help"] for path in ALL] + [["generate", "--no-such-flag"], ["ppl", "--tokens", "x"],
                                                    ["tp", "plan", "--shards", "x"], ["nosuch"], []]
    code = f"""
import contextlib, io, json, sys
from splitrl.cli import main
out = []
for argv in {calls!r}:
    with contextlib.redirect_stdout(io.StringIO()) as o, contextlib.redirect_stderr(io.StringIO()) as e:
        rc = main(argv)
    out.append([argv, rc, [m for m in {HEAVY!r} if m in sys.modules], len(e.getvalue().splitlines())])
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    for argv, rc, heavy, err_lines in json.loads(r.stdout):
        assert heavy == [], f"splitrl {' '.join(argv)} imported {heavy}"
        assert rc == (0 if "--help" in argv else 2), argv
        assert err_lines == (0 if "--help" in argv else 1), argv


def test_main_imports_only_the_chosen_command():
    code = ("import contextlib, io, sys\nfrom splitrl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['info', '--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('splitrl.cli.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert eval(r.stdout) == ["splitrl.cli._common", "splitrl.cli.info"]


def test_every_option_has_help_and_shows_its_default_once():
    for path, parser in _subparsers(build_parser()):
        fmt = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"splitrl {' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{where} has no help"
            text = fmt._get_help_string(action) % {**vars(action), "prog": parser.prog}
            assert text.count("default") <= 1 + action.help.count("default") - action.help.count("(default"), where
            assert text.count("(default") <= 1, f"{where}: {text}"
            shows = action.default in (None, False, argparse.SUPPRESS, []) or "(default" in text
            assert shows, f"{where} does not show its default {action.default!r}"


def test_every_command_module_has_add_arguments_and_run():
    for name, cmd in COMMANDS.items():
        add, run = cmd.functions()
        assert callable(add) and callable(run), name


def test_train_has_the_options_of_train_py_and_states_each_default_once(capsys):
    from splitrl.cli import main
    from splitrl.cli.train import build_parser as train_parser

    def options(p):
        return sorted((tuple(a.option_strings), a.default, a.help) for a in p._actions)

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    assert options(sub) == options(train_parser())
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "(default: runs)" in r.stdout and "(default: runs) (default: runs)" not in r.stdout
    assert main(["train", "--agent", "nope"]) == 2
    assert "splitrl train: error: argument --agent: invalid choice" in capsys.readouterr().err


def test_the_old_training_cli_module_is_gone():
    r = subprocess.run([sys.executable, "-m", "splitrl.training.cli", "--agent", "mbrl"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode != 0


def test_constants_copied_for_a_fast_help_equal_the_library():
    from splitrl.cli import _common, deploy, privacy_probe, train
    from splitrl.agents.registry import AGENTS
    from splitrl.deploy import server
    from splitrl.models import loader
    from splitrl.privacy.probe import ProbeConfig

    assert (_common.DEFAULT_MODEL, _common.NAMED_MODELS) == (loader.DEFAULT_MODEL, loader.NAMED_MODELS)
    assert list(train.AGENT_KINDS) == list(AGENTS)
    assert deploy.DEFAULT_IDLE_TIMEOUT_S == server.DEFAULT_IDLE_TIMEOUT_S
    assert deploy.DEFAULT_MAX_STREAMS_PER_CLIENT == server.DEFAULT_MAX_STREAMS_PER_CLIENT
    d = ProbeConfig()
    assert privacy_probe.PROBE_DEFAULTS == {k: getattr(d, k) for k in privacy_probe.PROBE_DEFAULTS}


def test_import_splitrl_registers_the_envs_without_importing_gymnasium():
    code = ("import sys, splitrl\nassert 'gymnasium' not in sys.modules\nimport gymnasium as gym\n"
            "print(sorted(k for k in gym.registry if k.startswith('splitrl/')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "splitrl/SplitPointTable-v0" in r.stdout and "splitrl/SplitPoint-v0" in r.stdout


@pytest.mark.parametrize("first", ["gymnasium", "splitrl.envs.split_point"])
def test_envs_are_registered_whatever_is_imported_first(first):
    code = (f"import {first}\nimport splitrl, gymnasium as gym\n"
            "print(sorted(k for k in gym.registry if k.startswith('splitrl/')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "splitrl/PipelineSplit-v0" in r.stdout, r.stderr[-2000:]
