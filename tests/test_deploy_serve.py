"""The whole deployment: `splitrl edge` + `splitrl serve --edge` as real processes, driven by the openai client."""
import signal

import openai
import pytest
from test_agents_support import assets

from splitrl.proc import spawn_splitrl, wait_for_port_file

TOKEN = "tok-" + "y" * 28


@pytest.mark.timeout(600)
def test_openai_client_through_the_edge_and_through_its_failure(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    a = assets()
    table = tmp_path / "fp32.csv"
    table.write_text(open(a["table"]).read().replace(",awgn,", ",fp32,"))
    edge = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--token-file", tmp_path / "token", "--port-file",
                          tmp_path / "edge.port", "--model", "llama-tiny", "--layers", "1:"], log_path=tmp_path / "edge.log")
    with edge:
        edge_port = wait_for_port_file(tmp_path / "edge.port", edge, timeout_s=240)
        serve = spawn_splitrl(
            ["serve", "--edge", f"127.0.0.1:{edge_port}", "--split", "3", "--model", "llama-tiny", "--token-file",
             tmp_path / "token", "--set", f"env.table={table}", f"env.ue_profile={a['ue_profile']}", "env.transport=fp32",
             "--channel", "markov", "--port", "0", "--port-file", tmp_path / "serve.port", "--out", tmp_path / "log"],
            log_path=tmp_path / "serve.log")
        with serve:
            port = wait_for_port_file(tmp_path / "serve.port", serve, timeout_s=240)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0, timeout=120)
            first = client.completions.create(model="llama-tiny", prompt="The edge and the phone", max_tokens=6,
                                              temperature=0)
            fig = first.model_extra["splitrl"]
            assert fig["split"] == 3 and fig["fallback"] is False
            edge.signal(signal.SIGKILL)
            edge.popen.wait(timeout=10)
            second = client.completions.create(model="llama-tiny", prompt="The edge and the phone", max_tokens=6,
                                               temperature=0)
            assert second.choices[0].text == first.choices[0].text  # served on the UE, same tokens
            assert second.model_extra["splitrl"]["fallback"] is True
            assert client.models.list().data[0].id == "llama-tiny"  # the front-end keeps serving


@pytest.mark.timeout(600)
def test_serve_edge_bad_requests_are_400_leak_nothing_and_a_disconnect_stops_generation(tmp_path):
    """`seed: -1` and friends used to be 500s that left their edge stream open; after --max-sessions of them
    every request got RESOURCE_EXHAUSTED. Now: 400 at the door, and the edge keeps every session."""
    import json
    import time

    import httpx

    from splitrl.deploy.client import EdgeConnection

    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    a = assets()
    table = tmp_path / "fp32.csv"
    table.write_text(open(a["table"]).read().replace(",awgn,", ",fp32,"))
    edge = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--token-file", tmp_path / "token", "--port-file",
                          tmp_path / "edge.port", "--model", "llama-tiny", "--max-sessions", "2"],
                         log_path=tmp_path / "edge.log")
    with edge:
        edge_port = wait_for_port_file(tmp_path / "edge.port", edge, timeout_s=240)
        serve = spawn_splitrl(
            ["serve", "--edge", f"127.0.0.1:{edge_port}", "--split", "3", "--model", "llama-tiny", "--token-file",
             tmp_path / "token", "--set", f"env.table={table}", f"env.ue_profile={a['ue_profile']}", "env.transport=fp32",
             "--channel", "markov", "--port", "0", "--port-file", tmp_path / "serve.port", "--out", tmp_path / "log",
             "--max-tokens-limit", "480"], log_path=tmp_path / "serve.log")
        with serve:
            port = wait_for_port_file(tmp_path / "serve.port", serve, timeout_s=240)
            url = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            ok = {"model": "llama-tiny", "prompt": "The edge and the phone", "max_tokens": 4, "temperature": 0.7}
            bad = [{**ok, "seed": -1}, {**ok, "seed": 2**63}, {**ok, "seed": 10**30}, {**ok, "temperature": 1e7},
                   {**ok, "stop": 5}, {**ok, "top_p": 0}]
            raw = [json.dumps(b).encode() for b in bad]
            raw += [json.dumps(ok).encode().replace(b'"temperature": 0.7', b'"temperature": Infinity'),
                    json.dumps({**ok, "prompt": "\ud800"}).encode(),
                    b'{"model": "llama-tiny", "prompt": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"]
            with httpx.Client(timeout=120) as http:
                for body in raw:
                    r = http.post(f"{url}/v1/completions", content=body, headers=auth)
                    assert r.status_code == 400, (body[:80], r.text)
                    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
                good = http.post(f"{url}/v1/completions", json={**ok, "seed": 5}, headers=auth)
                assert good.status_code == 200, good.text
                assert good.json()["splitrl"]["fallback"] is False  # the edge served it: no RESOURCE_EXHAUSTED
                health = http.get(f"{url}/health").json()
                assert health["edge_available"] is True and health["edge_error"] is None
                served = health["requests_served"]
                # A client that disconnects mid-stream: generation stops (the edge's session is closed).
                with http.stream("POST", f"{url}/v1/completions", headers=auth,
                                 json={**ok, "max_tokens": 470, "stream": True}) as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            break  # first token seen: hang up
                conn = EdgeConnection(f"127.0.0.1:{edge_port}", TOKEN)
                deadline = time.monotonic() + 10
                while conn.hello().sessions and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert conn.hello().sessions == 0
                conn.close()
                time.sleep(1.0)
                assert http.get(f"{url}/health").json()["requests_served"] == served  # not run to 470 tokens
                again = http.post(f"{url}/v1/completions", json={**ok, "seed": 5}, headers=auth)
                assert again.status_code == 200 and again.json()["choices"] == good.json()["choices"]
