"""`splitrl serve --local` as a real child process, driven by the official openai client."""
import json

import openai
import pytest
from test_agents_support import assets

from splitrl.proc import spawn_splitrl, wait_for_port_file

TOKEN = "tok-" + "x" * 24


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    (d / "token").write_text(TOKEN + "\n")
    a = assets()
    # the synthetic sweep table relabelled for the lossless fp32 codec: every request is exact, so the
    # streamed and plain answers can be compared token for token
    table = (d / "fp32.csv")
    table.write_text(open(a["table"]).read().replace(",awgn,", ",fp32,"))
    child = spawn_splitrl(
        ["serve", "--local", "--agent", "fixed", "--model", "llama-tiny", "--token-file", d / "token",
         "--set", f"env.table={table}", f"env.ue_profile={a['ue_profile']}", "env.transport=fp32",
         "--channel", "markov", "--port", "0", "--port-file", d / "port", "--out", d / "log", "--max-tokens-limit", "32"],
        log_path=d / "child.log")
    try:
        port = wait_for_port_file(d / "port", child, timeout_s=240)
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0, timeout=120), d, port
    finally:
        child.stop()


@pytest.mark.timeout(400)
def test_openai_client_completions_and_chat_plain_and_streaming(served):
    client, d, _ = served
    assert [m.id for m in client.models.list().data] == ["llama-tiny"]
    c = client.completions.create(model="llama-tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert c.choices[0].finish_reason in ("length", "stop") and c.usage.completion_tokens == 5
    assert c.usage.total_tokens == c.usage.prompt_tokens + 5
    fig = c.model_extra["splitrl"]
    assert 1 <= fig["split"] <= 6 and fig["emulated_ttft_s"] > 0 and fig["fallback"] is False
    pieces = list(client.completions.create(model="llama-tiny", prompt="Once upon a time", max_tokens=5,
                                            temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces if p.choices) == c.choices[0].text  # lossless link: exact
    chat = client.chat.completions.create(model="llama-tiny", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, temperature=0.7, seed=5)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 4
    stream = client.chat.completions.create(model="llama-tiny", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=4, temperature=0.7, seed=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 4
    rows = [json.loads(line) for line in (d / "log" / "decisions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and [r["request"] for r in rows] == [0, 1, 2, 3]
    assert all(r["policy"] == "fixed" and r["transport"] == "fp32" for r in rows)


@pytest.mark.timeout(200)
def test_openai_client_errors_then_the_server_keeps_serving(served):
    client, _, port = served
    bad = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="llama-tiny", prompt="x", max_tokens=33)
    assert e.value.code == "context_length_exceeded"
    import httpx

    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    assert client.completions.create(model="llama-tiny", prompt="still here", max_tokens=2).usage.completion_tokens >= 1
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["status"] == "ok"


@pytest.mark.timeout(120)
def test_serve_usage_errors_are_one_line(tmp_path, capsys):
    from splitrl.cli import main

    tok = tmp_path / "t"
    tok.write_text(TOKEN)
    assert main(["serve", "--local", "--split", "2", "--token-file", str(tmp_path / "none")]) == 2
    assert "--token-file" in capsys.readouterr().err
    assert main(["serve", "--local", "--split", "2", "--token-file", str(tok), "--host", "0.0.0.0"]) == 2
    assert "--insecure" in capsys.readouterr().err
    assert main(["serve", "--split", "2", "--token-file", str(tok)]) == 2
    assert "--edge" in capsys.readouterr().err
    assert main(["serve", "--local", "--checkpoint", str(tmp_path / "nope"), "--token-file", str(tok)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and len(err.strip().splitlines()) == 1
