"""The splitrl command line, run in-process."""
import json

import pytest

from splitrl.cli import main


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


def test_info_lists_layers(capsys):
    assert main(["info", "--model", "gpt2-tiny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_layers"] == 6 and len(data["layers"]) == 6


@pytest.mark.parametrize("argv,message", [
    (["ppl", "--model", "gpt2-tiny", "--split", "9"], "allowed 0..6"),
    (["generate", "--model", "no-such-model"], "unknown model"),
    (["ppl", "--model", "gpt2-tiny", "--corpus", "/nonexistent/wiki.test.raw"], "--corpus PATH"),
    (["generate", "--model", "gpt2-tiny", "--split", "x"], "--split must be"),
    (["generate", "--model", "gpt2-tiny", "--top-p", "0"], "top_p"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
