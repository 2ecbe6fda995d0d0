"""Fuzz-style: every subcommand and train.py, fed hostile arguments and input files, answers with
exit status 2 and exactly ONE line on stderr (or runs, status 0) — never a traceback.

The argument pool is drawn with a fixed seed (the same cases every run): each case takes a
subcommand's cheap base arguments and replaces one option's value by a hostile one (NaN, inf,
huge, negative, text, YAML lists/maps, a folder, a binary file, an empty file, a YAML alias
bomb, a missing path, a pickle, a CSV that is not a sweep table). The cases run in-process.
"""
import pickle
import random

import pytest

from splitrl.cli import main as splitrl_main
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.cli.train import main as train_main
from test_agents_support import assets, cli_sets

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")) + "seed: *h\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "folder").mkdir()
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (d / "empty.yaml").write_text("")
    (d / "bomb.yaml").write_text(BOMB)
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "pickle.pkl").write_bytes(pickle.dumps({"a": 1}))
    (d / "notsweep.csv").write_text("a,b\n1,2\n")
    (d / "badutf.csv").write_bytes(b"\xff\xfe\x00garbage")
    return {k: str(d / k) for k in ("folder", "binary.yaml", "empty.yaml", "bomb.yaml", "list.yaml", "pickle.pkl",
                                    "notsweep.csv", "badutf.csv")} | {"missing": str(d / "missing" / "x.yaml")}


VALUES = ["nan", "inf", "-inf", "1e309", "-1", "0", "x" * 300, "[1, 2]", "{a: 1}", "", "99999999999999999999"]
FILE_KEYS = ["folder", "binary.yaml", "empty.yaml", "bomb.yaml", "list.yaml", "pickle.pkl", "notsweep.csv",
             "badutf.csv", "missing"]

# (program, base argv, options to fuzz with values, options to fuzz with files)
TARGETS = [
    ("splitrl", ["ppl", "--model", "gpt2-tiny", "--tokens", "64", "--window", "32", "--link", "awgn"],
     ["--snr", "--tokens", "--window", "--stride", "--split", "--threads", "--seed"], ["--corpus", "--model"]),
    ("splitrl", ["generate", "--model", "gpt2-tiny", "--max-new-tokens", "2", "--sample"],
     ["--temperature", "--top-k", "--top-p", "--max-new-tokens", "--split", "--snr", "--link"],
     ["--ue", "--edge", "--link-profile"]),
    ("splitrl", ["info", "--model", "gpt2-tiny"], ["--context", "--threads"], ["--model"]),
    ("splitrl", ["sweep", "--model", "llama-tiny", "--splits", "1", "--levels", "10", "--seeds", "1", "--tokens", "32",
                 "--window", "32", "--transports", "awgn", "--no-progress"],
     ["--splits", "--levels", "--seeds", "--transports", "--tokens", "--window", "--level-kind"], ["--out", "--corpus"]),
    ("splitrl", ["plot"], [], [""]),
    ("splitrl", ["evaluate", "--agents", "oracle", "--episodes", "1", "--steps", "2"],
     ["--episodes", "--steps", "--seed", "--env", "--set", "--agents"], ["--agents=mbrl"]),
    ("splitrl", ["surrogate-report", "--model", "llama-tiny", "--no-real", "--no-ablation", "--budget", "10",
                 "--kinds", "extratrees", "--strategies", "random", "--seeds", "0"],
     ["--budget", "--initial", "--batch", "--holdout", "--seeds", "--kinds", "--strategies"], [""]),
    ("splitrl", ["profile", "--model", "gpt2-tiny", "--no-bandwidth", "--repeats", "1", "--contexts", "8"],
     ["--contexts", "--repeats", "--warmup", "--threads"], ["--out", "--power-like"]),
    ("train.py", ["--agent", "oracle", "--total-steps", "4", "--no-progress", "--set", *cli_sets()],
     ["--seed", "--total-steps", "--stop-at", "--set", "--env", "--run"], ["--config"]),
    ("train.py", ["--no-progress"], ["--resume"], ["--checkpoints-dir"]),
]


def _cases(n: int = 40):
    rng = random.Random(2026)
    out = []
    for _ in range(n):
        prog, base, opts, file_opts = TARGETS[rng.randrange(len(TARGETS))]
        use_file = file_opts and (not opts or rng.random() < 0.4)
        if use_file:
            out.append((prog, base, rng.choice(file_opts), "@" + rng.choice(FILE_KEYS)))
        else:
            out.append((prog, base, rng.choice(opts), rng.choice(VALUES)))
    # Always included: the cases the issue names.
    must = [(0, "--snr", "nan"), (0, "--tokens", "99999999999999999999"), (3, "--levels", "nan"), (3, "--out", "@folder"),
            (5, "--agents=mbrl", "@folder"), (5, "--agents=mbrl", "@pickle.pkl"), (8, "--config", "@bomb.yaml"),
            (8, "--config", "@binary.yaml"), (8, "--config", "@folder"), (8, "--set", "99"), (4, "", "@badutf.csv"),
            (9, "--resume", "nothing")]
    for t, opt, v in must:
        prog, base, _, _ = TARGETS[t]
        out.append((prog, base, opt, v))
    return sorted(set((p, tuple(b), o, v) for p, b, o, v in out))


def _argv(base, opt, value, files, tmp_path, prog):
    v = files[value[1:]] if value.startswith("@") else value
    if opt == "":  # a positional argument (plot's / surrogate-report's table)
        argv = [*base, v]
    elif base[0] == "surrogate-report":  # hostile option, valid (tiny) table
        argv = [*base, f"{opt}={v}", assets()["table"]]
    elif opt == "--agents=mbrl":
        argv = [*base[:1], "--agents", f"mbrl={v}", *base[3:]]
    elif opt == "--set":
        argv = [*base, "--set", f"env.s_min={v}"] if prog == "train.py" else [*base, "--set", f"transport={v}"]
    else:
        argv = [*base, f"{opt}={v}"]
    if prog == "train.py":
        argv += ["--runs-dir", str(tmp_path / "runs")] + ([] if "--checkpoints-dir" in opt else
                                                          ["--checkpoints-dir", str(tmp_path / "ckpt")])
    elif base[0] in ("sweep", "evaluate", "surrogate-report", "profile") and opt != "--out":
        argv += ["--out", str(tmp_path / ("out.csv" if base[0] == "sweep" else "out.json" if base[0] != "evaluate"
                                          else "ev"))]
    return argv


@pytest.mark.timeout(600)
@pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")
def test_hostile_arguments_and_files_get_one_line_and_status_2(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPLITRL_WIKITEXT", str(DEFAULT_WIKITEXT_PATH))
    failures = []
    for i, (prog, base, opt, value) in enumerate(_cases()):
        argv = _argv(list(base), opt, value, files, tmp_path / str(i), prog)
        run = splitrl_main if prog == "splitrl" else train_main
        try:
            rc = run(argv)
        except BaseException as e:  # noqa: BLE001 — any escape is a failure of the CLI contract
            capsys.readouterr()
            failures.append(f"{prog} {argv}: raised {type(e).__name__}: {str(e)[:200]}")
            continue
        err = capsys.readouterr().err
        # progress bars (tqdm: "...N unit/s]" segments between carriage returns) are not messages
        lines = [ln for ln in err.splitlines() if ln.strip() and "/s]" not in ln and "%|" not in ln
                 and not ln.startswith(("Loading weights", "[transformers]"))]
        if rc not in (0, 2) or "Traceback" in err or (rc == 2 and len(lines) != 1):
            failures.append(f"{prog} {argv}: rc={rc}, stderr={err[-400:]!r}")
    assert not failures, "\n".join(failures)
