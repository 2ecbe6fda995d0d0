"""The splitrl command line, run in-process."""
import json

import pytest

from splitrl.cli import main
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH


def test_generate_streams_text_and_prints_the_report(capsys):
    assert main(["generate", "--model", "gpt2-tiny", "--split", "2", "--max-new-tokens", "5", "--prompt", "Hi"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Hi") and "split [2]" in out and "cut 0 at layer  2" in out


def test_generate_json_three_segments(capsys):
    assert main(["generate", "--model", "llama-tiny", "--split", "1,4", "--max-new-tokens", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["report"]["cuts"] == [1, 4] and len(data["token_ids"]) >= 1


def test_ppl_json_has_the_documented_keys(capsys):
    assert main(["ppl", "--model", "gpt2-tiny", "--split", "3", "--tokens", "64", "--window", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"ppl", "tokens", "split", "seconds"} <= data.keys() and data["tokens"] == 64 and data["split"] == [3]
    assert data["model"] == "gpt2-tiny" and data["link"] == "identity" and data["clean_ppl"] == data["ppl"]
    assert data["threads"] >= 1 and data["ppl_finite"] is True


def test_ppl_reports_a_destroyed_link_as_null_plus_flag_in_valid_json(capsys):
    """int8 bit errors at -30 dB make the perplexity non-finite: JSON has no NaN, so it is null + a flag."""
    argv = ["ppl", "--model", "gpt2-tiny", "--split", "3", "--tokens", "64", "--window", "32", "--json",
            "--link", "int8-biterr", "--snr", "-30"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    data = json.loads(out)
    assert data["ppl"] is None and data["ppl_finite"] is False and data["snr_db"] == -30.0
    assert data["modulation"] == "qpsk" and data["clean_ppl"] > 0


def test_generate_states_what_it_measured_and_the_clean_reference(capsys):
    argv = ["generate", "--model", "gpt2-tiny", "--split", "3", "--max-new-tokens", "4", "--link", "awgn", "--snr", "10",
            "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "gpt2-tiny" and data["link"] == "awgn" and data["snr_db"] == 10.0
    assert isinstance(data["clean_text"], str) and 0 <= data["tokens_matching_clean"] <= 4 and data["threads"] >= 1


def test_help_lists_every_subcommand_and_shows_defaults(capsys):
    from splitrl.cli import COMMANDS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["ppl", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 1024)" in out and "(default: qpsk)" in out


def test_info_lists_layers(capsys):
    assert main(["info", "--model", "gpt2-tiny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_layers"] == 6 and len(data["layers"]) == 6


@pytest.mark.parametrize("argv,message", [
    (["ppl", "--model", "gpt2-tiny", "--split", "9"], "allowed 0..6"),
    (["generate", "--model", "no-such-model"], "unknown model"),
    (["ppl", "--model", "gpt2-tiny", "--corpus", "/nonexistent/wiki.test.raw"], "--corpus PATH"),
    (["generate", "--model", "gpt2-tiny", "--split", "x"], "--split must be"),
    (["generate", "--model", "gpt2-tiny", "--sample", "--top-p", "0"], "top_p"),
    (["generate", "--model", "gpt2-tiny", "--top-p", "0.5"], "--top-p applies only with --sample"),
    (["ppl", "--model", "gpt2-tiny", "--snr", "5"], "--snr has no effect with --link identity"),
    (["ppl", "--model", "gpt2-tiny", "--link", "awgn", "--snr", "nan"], "--snr must be a finite number"),
    (["ppl", "--model", "gpt2-tiny", "--link", "awgn", "--dropout", "0.1"], "--dropout applies only to --link dropout"),
    (["ppl", "--model", "gpt2-tiny", "--tokens", "999999999"], "more than the corpus holds"),
    (["ppl", "--model", "gpt2-tiny", "--ue", "x"], "unrecognized arguments: --ue"),
    (["ppl", "--threads", "0"], "--threads must be >= 1"),
    (["nosuch"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("SPLITRL_WIKITEXT", str(DEFAULT_WIKITEXT_PATH))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_plot_prints_the_table_and_writes_the_figure(tmp_path, capsys):
    from test_agents_support import assets

    png = tmp_path / "t.png"
    assert main(["plot", assets()["table"], "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "awgn: mean perplexity over seeds" in out and "int8-biterr" in out and png.stat().st_size > 10_000
    assert main(["plot", assets()["table"], "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
