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
