"""The OpenAI-compatible app, in-process (FastAPI TestClient over the LocalBackend)."""
import json

import pytest
from fastapi.testclient import TestClient

from splitrl.controller.session import build_server
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


def test_out_of_range_sampling_and_malformed_text_are_400_naming_the_field(client):
    ok = {"model": "llama-tiny", "prompt": "hi", "max_tokens": 2}
    cases = [({"seed": -1}, "seed"), ({"seed": 2**63}, "seed"), ({"seed": 10**30}, "seed"), ({"seed": 1.5}, "seed"),
             ({"temperature": 1e7}, "temperature"), ({"temperature": "hot"}, "temperature"), ({"top_p": 0}, "top_p"),
             ({"top_p": 1.5}, "top_p"), ({"stop": 5}, "stop"), ({"stop": ["a"] * 5}, "stop"), ({"stream": "yes"}, "stream"),
             ({"max_tokens": True}, "max_tokens"), ({"echo": True}, "echo"), ({"logprobs": 2}, "logprobs")]
    for extra, field in cases:
        err = _error(client.post("/v1/completions", json={**ok, **extra}, headers=AUTH), 400)
        assert err["param"] == field and field in err["message"], (extra, err)
    # JSON's non-standard literals (Python's json accepts them), a lone surrogate, a 200,000-deep body.
    for raw, field in [(b'{"model": "llama-tiny", "prompt": "hi", "temperature": Infinity}', "temperature"),
                       (b'{"model": "llama-tiny", "prompt": "hi", "top_p": NaN}', "top_p"),
                       (b'{"model": "llama-tiny", "prompt": "\\ud800"}', "prompt"),
                       (b'{"model": "llama-tiny", "prompt": "hi", "stop": ["\\udfff"]}', "stop")]:
        err = _error(client.post("/v1/completions", content=raw, headers=AUTH), 400)
        assert err["param"] == field, (raw, err)
    chat = {"model": "llama-tiny", "messages": [{"role": "user", "content": "\ud800"}]}
    raw = json.dumps(chat).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
    assert _error(client.post("/v1/chat/completions", content=raw, headers=AUTH), 400)["param"] == "messages"
    deep = b'{"model": "llama-tiny", "prompt": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    _error(client.post("/v1/completions", content=deep, headers=AUTH), 400)
    assert client.server.requests == 0  # nothing reached the model
    # Values at the edges are served: a temperature below vLLM's epsilon is greedy, a tiny top_p keeps one token.
    greedy = client.post("/v1/completions", json={**ok, "temperature": 0}, headers=AUTH).json()["choices"][0]["text"]
    for extra in ({"temperature": 1e-7}, {"temperature": 0.5, "top_p": 1e-12}, {"seed": 2**63 - 1, "temperature": 1}):
        r = client.post("/v1/completions", json={**ok, **extra}, headers=AUTH)
        assert r.status_code == 200, (extra, r.text)
        if "top_p" in extra or extra.get("temperature", 1) < 1e-5:
            assert r.json()["choices"][0]["text"] == greedy


def _streamed(client, body) -> tuple[str, str]:
    with client.stream("POST", "/v1/completions", headers=AUTH, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"]), chunks[-1]["choices"][0]["finish_reason"]


def test_streamed_text_equals_the_non_streamed_text_for_stop_strings_spanning_tokens(client, llama_tiny):
    body = {"model": "llama-tiny", "prompt": "Wireless links", "max_tokens": 12, "temperature": 0}
    full = client.post("/v1/completions", json=body, headers=AUTH).json()
    ids_text = full["choices"][0]["text"]
    from splitrl.runtime import SplitRuntime

    toks = SplitRuntime(llama_tiny).generate("Wireless links", 3, max_new_tokens=12).token_ids
    pieces = [llama_tiny.tokenizer.decode(toks[: i + 1]) for i in range(len(toks))]
    stops, checked = [], 0
    for i in range(1, len(pieces) - 1):  # strings that start in token i and end in token i+1
        a, b = pieces[i - 1], pieces[i + 1]
        if len(pieces[i]) - len(a) >= 2 and len(b) - len(pieces[i]) >= 1:
            stops.append(b[len(pieces[i]) - 2: len(pieces[i]) + 1])
    stops += [ids_text[:3], ids_text[-3:], "zzz-never"]
    assert len(stops) >= 4, (pieces, stops)
    for stop in stops:
        plain = client.post("/v1/completions", json={**body, "stop": [stop]}, headers=AUTH).json()["choices"][0]
        text, reason = _streamed(client, {**body, "stop": [stop]})
        assert text == plain["text"] and reason == plain["finish_reason"], (stop, text, plain)
        checked += 1
    assert checked == len(stops)


@pytest.mark.timeout(120)
def test_a_huge_prompt_is_tokenised_off_the_event_loop(client):
    import threading
    import time

    big = {"model": "llama-tiny", "prompt": "word and another " * 61_000, "max_tokens": 2}  # ~1 MB
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=client.post("/v1/completions", json=big, headers=AUTH)))
    worst = 0.0
    worker.start()
    while worker.is_alive():
        t0 = time.perf_counter()
        assert client.get("/health").status_code == 200
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.01)
    worker.join()
    _error(out["r"], 400, "context_length_exceeded")  # it was tokenised (and is too long for the model)
    assert worst < 0.25, f"/health waited {worst:.2f} s behind the tokenizer"
