"""The OpenAI-compatible app, in-process (FastAPI TestClient over the LocalBackend)."""
import json

import pytest
from fastapi.testclient import TestClient

from splitrl.control import build_server
from splitrl.controller.sinks import JsonlSink, iter_decisions
from splitrl.serve.app import create_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def client(llama_tiny, tmp_path):
    server, loaded, _ = build_server(checkpoint=None, agent=None, split=3, env={"model": "llama-tiny", "transport": "identity"},
                                     channel="markov", seed=0, loaded=llama_tiny)
    sink = JsonlSink(tmp_path / "decisions.jsonl")
    app = create_app(server, token=TOKEN, model_name=loaded.name, max_tokens_limit=64, sinks=[sink])
    with TestClient(app) as c:
        c.server, c.log = server, tmp_path / "decisions.jsonl"
        yield c
    sink.close()


def _error(resp, status, code=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code:
        assert err["code"] == code
    return err


def test_completion_matches_the_runtime_and_reports_the_split(client, llama_tiny):
    body = {"model": "llama-tiny", "prompt": "The capital of France", "max_tokens": 6, "temperature": 0}
    r = client.post("/v1/completions", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["object"] == "text_completion" and d["model"] == "llama-tiny"
    n_prompt = len(llama_tiny.tokenizer("The capital of France").input_ids)
    assert d["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 6, "total_tokens": n_prompt + 6}
    fig = d["splitrl"]
    assert fig["split"] == 3 and fig["num_layers"] == 6 and fig["emulated_ttft_s"] > 0 and fig["fallback"] is False
    # the text is what the runtime generates at that split, link and seed
    from splitrl.link import link_at
    from splitrl.runtime import SplitRuntime

    rec = list(iter_decisions(client.log))[0]
    link = link_at("identity", seed=rec["link_seed"], snr_db=rec["snr_db"], vocab_size=llama_tiny.view.vocab_size)
    ref = SplitRuntime(llama_tiny).generate("The capital of France", 3, max_new_tokens=6, links=link)
    assert rec["transport"] == "identity" and rec["bytes_on_air"] > 0
    assert d["choices"][0]["text"] == ref.text and rec["snr_db"] == fig["snr_db"]


def test_chat_stream_concatenates_to_the_non_streamed_text(client):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    body = {"model": "llama-tiny", "messages": msgs, "max_tokens": 5, "temperature": 0.8, "seed": 11}
    plain = client.post("/v1/chat/completions", json=body, headers=AUTH).json()
    assert plain["object"] == "chat.completion" and plain["choices"][0]["message"]["role"] == "assistant"
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]  # same sampling seed -> same tokens
    assert chunks[-1]["usage"] == plain["usage"] and any("splitrl" in c for c in chunks)


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client):
    ok = {"model": "llama-tiny", "prompt": "hi", "max_tokens": 2}
    _error(client.post("/v1/completions", json=ok), 401, "invalid_api_key")
    _error(client.post("/v1/completions", json=ok, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    _error(client.get("/v1/models", headers={"Authorization": "Basic abc"}), 401)
    _error(client.post("/v1/completions", content=b'{"model": "llama-tiny",', headers=AUTH), 400)
    _error(client.post("/v1/completions", content=b"[1, 2]", headers=AUTH), 400)
    _error(client.post("/v1/completions", json={**ok, "model": "gpt-4"}, headers=AUTH), 404, "model_not_found")
    _error(client.post("/v1/completions", json={**ok, "max_tokens": 65}, headers=AUTH), 400, "context_length_exceeded")
    _error(client.post("/v1/completions", json={**ok, "prompt": "word " * 500, "max_tokens": 60}, headers=AUTH),
           400, "context_length_exceeded")
    _error(client.post("/v1/completions", json={**ok, "max_tokens": 0}, headers=AUTH), 400)
    _error(client.post("/v1/completions", json={**ok, "prompt": "x" * (2 << 20)}, headers=AUTH), 413)
    _error(client.post("/v1/completions", json={**ok, "temperature": -1}, headers=AUTH), 400)
    _error(client.post("/v1/completions", json={**ok, "n": 2}, headers=AUTH), 400)
    _error(client.post("/v1/chat/completions", json={"model": "llama-tiny", "messages": []}, headers=AUTH), 400)
    _error(client.post("/v1/chat/completions", json={"model": "llama-tiny", "messages": [{"content": "x"}]},
                       headers=AUTH), 400)
    assert client.server.requests == 0  # nothing reached the model
    r = client.post("/v1/completions", json=ok, headers=AUTH)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    assert client.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == "llama-tiny"
    assert client.get("/health").json()["requests_served"] == 1


def test_stop_sequence_truncates(client):
    body = {"model": "llama-tiny", "prompt": "one two three", "max_tokens": 8, "temperature": 0}
    full = client.post("/v1/completions", json=body, headers=AUTH).json()["choices"][0]["text"]
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = client.post("/v1/completions", json={**body, "stop": stop}, headers=AUTH).json()["choices"][0]
    assert cut["text"] == full[: full.find(stop)] and cut["finish_reason"] == "stop"
