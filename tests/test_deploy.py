"""UE and edge as separate processes: the distributed result equals the in-process one, faults lose nothing.

Every test starts real ``python -m splitrl edge`` children on 127.0.0.1:0 (one thread each, port
file), talks to them with the UE client in this process, and stops or faults them only through
their own pid.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import grpc
import pytest
import torch

from splitrl.deploy import wire
from splitrl.deploy.client import EdgeConnection, UEClient
from splitrl.deploy.server import SERVICE
from splitrl.proc import spawn_splitrl, wait_for_port_file
from splitrl.runtime import ExecutorError, SamplingConfig, SplitRuntime

PROMPT = "The edge server and the phone share one model"


def _start_edge(tmp_path, model: str, *, layers: str = "0:", port: int = 0, name: str = "edge", extra=()):
    token_file = tmp_path / "token"
    port_file = tmp_path / f"{name}.port"
    port_file.unlink(missing_ok=True)
    child = spawn_splitrl(["edge", "--listen", f"127.0.0.1:{port}", "--token-file", token_file, "--port-file",
                           port_file, "--model", model, "--layers", layers, *extra], log_path=tmp_path / f"{name}.log")
    try:
        bound = wait_for_port_file(port_file, child, timeout_s=120)
    except BaseException:
        child.stop()
        raise
    return child, bound, token_file.read_text().strip()


@pytest.fixture(scope="module")
def llama_edge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge-llama")
    child, port, token = _start_edge(tmp, "llama-tiny")
    yield child, port, token
    child.stop()


@pytest.fixture()
def fresh_edge(tmp_path):
    """An edge of its own, for tests that kill or stop it."""
    started = []

    def start(model="llama-tiny", port=0, layers="0:", extra=()):
        child, bound, token = _start_edge(tmp_path, model, port=port, layers=layers, name=f"edge{len(started)}",
                                          extra=extra)
        started.append(child)
        return child, bound, token

    yield start
    for c in started:
        c.stop()


def _ids(loaded, text=PROMPT):
    return loaded.tokenizer(text, return_tensors="pt").input_ids


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", ["llama-tiny", "gpt2-tiny"])
def test_two_process_tokens_equal_in_process_at_every_split(tmp_path, tiny_models, model):
    loaded = tiny_models[model]
    child, port, token = _start_edge(tmp_path, model)
    try:
        ue = UEClient(f"127.0.0.1:{port}", token, loaded)
        rt = SplitRuntime(loaded)
        ids = _ids(loaded)
        L = loaded.view.num_layers
        for s in range(0, L + 1):
            local = rt.generate(ids, s, max_new_tokens=12, stop_at_eos=False)
            remote = ue.generate(ids, s, max_new_tokens=12, stop_at_eos=False)
            assert remote.token_ids == local.token_ids, s
            assert remote.report.bytes_per_boundary == local.report.bytes_per_boundary
            assert remote.report.fallback_segments == []
        ue.close()
    finally:
        child.stop()


@pytest.mark.timeout(180)
def test_lossy_links_and_sampling_match_the_emulation_with_the_same_seed(llama_edge, llama_tiny):
    from splitrl.link import link_at

    _, port, token = llama_edge
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    rt = SplitRuntime(llama_tiny)
    ids = _ids(llama_tiny)
    sampling = SamplingConfig(do_sample=True, top_p=0.9, temperature=1.3, seed=7)
    for link, snr in (("int8-biterr", 6.0), ("awgn", 5.0), ("int4", 20.0), ("fp16-erasure", 3.0)):
        local = rt.generate(ids, 3, max_new_tokens=16, sampling=sampling, stop_at_eos=False,
                            links=link_at(link, seed=11, snr_db=snr, vocab_size=llama_tiny.view.vocab_size))
        remote = ue.generate(ids, 3, link=link, snr_db=snr, seed=11, sampling=sampling, max_new_tokens=16,
                             stop_at_eos=False)
        assert remote.token_ids == local.token_ids, link
        assert remote.report.bytes_per_boundary == local.report.bytes_per_boundary, link
    ue.close()


@pytest.mark.timeout(180)
def test_resplit_between_requests_on_one_edge(llama_edge, llama_tiny):
    _, port, token = llama_edge
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    rt = SplitRuntime(llama_tiny)
    ids = _ids(llama_tiny)
    for s in (1, 5, 2, 6, 0, 3):
        assert ue.generate(ids, s, max_new_tokens=6, stop_at_eos=False).token_ids == \
            rt.generate(ids, s, max_new_tokens=6, stop_at_eos=False).token_ids
    ue.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_edge_dies_or_hangs_mid_request_ue_finishes_exactly_and_picks_the_edge_up_again(fresh_edge, llama_tiny, fault):
    child, port, token = fresh_edge()
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny, health_interval_s=0.3)
    rt = SplitRuntime(llama_tiny)
    ids = _ids(llama_tiny)
    sampling = SamplingConfig(do_sample=True, top_k=50, seed=3)
    want = rt.generate(ids, 2, max_new_tokens=20, sampling=sampling, stop_at_eos=False).token_ids
    sig = signal.SIGKILL if fault == "kill" else signal.SIGSTOP
    seen: list[int] = []

    def on_token(tok):
        seen.append(tok)
        if len(seen) == 5:
            child.signal(sig)

    got = ue.generate(ids, 2, sampling=sampling, max_new_tokens=20, stop_at_eos=False, on_token=on_token)
    assert got.token_ids == want  # finished on the UE, exactly
    assert got.report.fallback_segments == [1]
    assert not ue.edge_available  # the controller keeps the split on the UE meanwhile
    again = ue.generate(ids, 2, max_new_tokens=6, stop_at_eos=False)
    assert again.report.fallback_segments == [1]  # served locally while the edge is down
    if fault == "kill":
        child.popen.wait(timeout=10)
        fresh_edge(port=port)  # restarted at the same address: picked up without restarting the UE
    else:
        child.signal(signal.SIGCONT)
    assert ue.wait_available(60)
    back = ue.generate(ids, 2, max_new_tokens=6, stop_at_eos=False)
    assert back.report.fallback_segments == [] and back.token_ids == again.token_ids
    ue.close()


@pytest.mark.timeout(120)
def test_ue_without_the_layers_gets_a_clear_error_not_a_hang(fresh_edge, llama_tiny):
    from splitrl.models import load_model

    child, port, token = fresh_edge()
    part = load_model("llama-tiny", layers=(0, 3), head=False)
    ue = UEClient(f"127.0.0.1:{port}", token, part)
    ids = _ids(part)
    assert len(ue.generate(ids, 3, max_new_tokens=3).token_ids) == 3
    child.signal(signal.SIGKILL)
    child.popen.wait(timeout=10)
    with pytest.raises(ExecutorError, match="cannot finish locally|unavailable"):
        ue.generate(ids, 3, max_new_tokens=3)
    ue.close()


@pytest.mark.timeout(120)
def test_auth_failures_are_clear_and_the_edge_keeps_serving(llama_edge, llama_tiny):
    _, port, token = llama_edge
    with pytest.raises(ExecutorError, match="bearer token"):
        UEClient(f"127.0.0.1:{port}", "x" * 32, llama_tiny)
    conn = EdgeConnection(f"127.0.0.1:{port}", "x" * 32)
    stream = conn.session(iter([wire.encode(wire.Message("close", "r", 0))]), metadata=conn.metadata)
    with pytest.raises(grpc.RpcError) as e:
        list(stream)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    conn.close()
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    assert len(ue.generate(_ids(llama_tiny), 3, max_new_tokens=2).token_ids) == 2
    ue.close()


@pytest.mark.timeout(120)
def test_model_mismatch_and_missing_layers_are_refused(tmp_path, llama_edge, gpt2_tiny, llama_tiny, fresh_edge):
    _, port, token = llama_edge
    with pytest.raises(ExecutorError, match="model mismatch"):
        UEClient(f"127.0.0.1:{port}", token, gpt2_tiny)
    _, port2, token2 = fresh_edge(layers="3:")
    ue = UEClient(f"127.0.0.1:{port2}", token2, llama_tiny)
    assert ue.min_split() == 3
    with pytest.raises(ExecutorError, match="not loaded"):
        ue.generate(_ids(llama_tiny), 1, max_new_tokens=2)
    assert len(ue.generate(_ids(llama_tiny), 4, max_new_tokens=2).token_ids) == 2
    ue.close()


def _raw_session(port, token, frames, timeout=10):
    conn = EdgeConnection(f"127.0.0.1:{port}", token)
    try:
        return [wire.decode(r) for r in conn.session(iter(frames), metadata=conn.metadata, timeout=timeout)]
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_bad_frames_oversized_messages_and_disconnects_do_not_stop_the_edge(llama_edge, llama_tiny):
    _, port, token = llama_edge
    fp = llama_tiny.fingerprint
    garbage = [b"", b"\x00" * 3, b"\xff\xff\xff\xff junk", os.urandom(64)]
    for g in garbage:
        replies = _raw_session(port, token, [g])
        assert replies[-1].type == "error" and "bad frame" in replies[-1].get("msg")
    open_msg = wire.Message("open", "r1", 0, {"L": 6, "cuts": [3], "seg": 1, "sampling": {}, "policy": {}, "fp": fp})
    wrong = wire.Message("step", "r1", 1, {"ph": "prefill", "b": 0, "k": "hidden", "codec": "fp32", "dt": "float32",
                                         "shape": [1, 2, 64], "q": 0}, b"\x00" * 16)  # not a codec frame
    replies = _raw_session(port, token, [wire.encode(open_msg), wire.encode(wrong)])
    assert [r.type for r in replies] == ["ok", "error"] and "step 1 failed" in replies[1].get("msg")
    bad_fp = wire.Message("open", "r2", 0, {**open_msg.fields, "fp": "0" * 64})
    assert "model mismatch" in _raw_session(port, token, [wire.encode(bad_fp)])[-1].get("msg")
    conn = EdgeConnection(f"127.0.0.1:{port}", token, max_message_bytes=200 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as e:
        list(conn.session(iter([b"\x00" * (80 * 1024 * 1024)]), metadata=conn.metadata, timeout=30))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A client that opens a session and vanishes mid-stream.
    call = conn.session(iter([wire.encode(open_msg)] + [None] * 0), metadata=conn.metadata)
    call.cancel()
    conn.close()
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    assert len(ue.generate(_ids(llama_tiny), 3, max_new_tokens=3).token_ids) == 3
    ue.close()


@pytest.mark.timeout(300)
def test_cli_refuses_a_public_bind_without_tls_in_one_line(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "splitrl", "edge", "--listen", "0.0.0.0:0", "--token-file",
                        str(tmp_path / "t"), "--model", "llama-tiny"], capture_output=True, text=True, timeout=140)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--tls-cert" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "splitrl", "ue", "--edge", "nope", "--token-file", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=140)
    assert r.returncode == 2 and "--edge must be HOST:PORT" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_two_process_equals_in_process_at_several_splits(tmp_path, smollm2):
    child, port, token = _start_edge(tmp_path, "smollm2-135m", layers="1:")
    try:
        ue = UEClient(f"127.0.0.1:{port}", token, smollm2)
        rt = SplitRuntime(smollm2)
        ids = _ids(smollm2)
        for s in (1, 10, 15, 29, 30):
            assert ue.generate(ids, s, max_new_tokens=16).token_ids == rt.generate(ids, s, max_new_tokens=16).token_ids
        ue.close()
    finally:
        child.stop()


@pytest.mark.timeout(180)
@pytest.mark.skipif(__import__("shutil").which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_tls_edge_serves_a_ue_that_verifies_its_certificate(tmp_path, llama_tiny):
    import subprocess

    cert, key = tmp_path / "edge.pem", tmp_path / "edge.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    port_file = tmp_path / "tls.port"
    child = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--token-file", tmp_path / "token", "--port-file", port_file,
                           "--model", "llama-tiny", "--tls-cert", cert, "--tls-key", key], log_path=tmp_path / "tls.log")
    with child:
        port = wait_for_port_file(port_file, child, timeout_s=120)
        token = (tmp_path / "token").read_text().strip()
        ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny, tls_root=cert.read_bytes(), server_name="localhost")
        ids = _ids(llama_tiny)
        assert ue.generate(ids, 3, max_new_tokens=5, stop_at_eos=False).token_ids == \
            SplitRuntime(llama_tiny).generate(ids, 3, max_new_tokens=5, stop_at_eos=False).token_ids
        ue.close()
        with pytest.raises(ExecutorError):  # plaintext against a TLS edge: no silent downgrade
            UEClient(f"127.0.0.1:{port}", token, llama_tiny)


@pytest.mark.timeout(120)
def test_requests_the_wire_refuses_close_their_stream_and_the_edge_keeps_every_session(fresh_edge, llama_tiny):
    """Values the wire encoder refuses (seed -1, temperature 1e-7, ...) used to leave the stream open on the
    edge; after --max-sessions of them every UE got RESOURCE_EXHAUSTED. Each now closes its stream."""
    child, port, token = fresh_edge(extra=["--max-sessions", "2"])
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    ids = _ids(llama_tiny)
    bad = [SamplingConfig(do_sample=True, seed=-1), SamplingConfig(do_sample=True, seed=2**63),
           SamplingConfig(do_sample=True, temperature=1e-7), SamplingConfig(do_sample=True, top_p=1e-12)]
    for sampling in bad * 2:
        with pytest.raises(ExecutorError, match="sampling|seed|temperature|top_p"):
            ue.generate(ids, 3, sampling=sampling, max_new_tokens=2)
    deadline = time.monotonic() + 10
    while ue.conn.hello().sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ue.conn.hello().sessions == 0
    ok = ue.generate(ids, 3, max_new_tokens=3)
    assert len(ok.token_ids) == 3 and ok.report.fallback_segments == []  # served by the edge, not RESOURCE_EXHAUSTED
    ue.close()


def _silent_stream(conn):
    """A stream that is open and authenticated but never sends a frame (until ``stop.put(None)``)."""
    import queue as _queue

    stop: _queue.Queue = _queue.Queue()
    call = conn.session(iter(stop.get, None), metadata=conn.metadata)
    return call, stop


@pytest.mark.timeout(120)
def test_silent_streams_are_closed_after_the_idle_deadline_and_capped_per_client(fresh_edge, llama_tiny):
    child, port, token = fresh_edge(extra=["--max-sessions", "2", "--idle-timeout", "2", "--max-streams-per-client", "2"])
    conn = EdgeConnection(f"127.0.0.1:{port}", token)
    held = [_silent_stream(conn) for _ in range(2)]
    # The edge admits concurrent streams in whatever order its threads pick them up: wait until both held
    # streams are admitted, or the third could be admitted first and one of these refused instead.
    deadline = time.monotonic() + 10
    while conn.hello().streams < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert conn.hello().streams == 2
    over, over_stop = _silent_stream(conn)  # a third on the same connection: refused at once
    with pytest.raises(grpc.RpcError) as e:
        list(over)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-streams-per-client" in e.value.details()
    assert conn.hello().sessions == 0  # Hello still answers while the silent streams are held
    for call, _ in held:  # the edge ends them after the idle deadline (the test's timeout bounds the wait)
        with pytest.raises(grpc.RpcError) as e:
            list(call)
        assert e.value.code() == grpc.StatusCode.CANCELLED
    for _, stop in held + [(over, over_stop)]:
        stop.put(None)
    conn.close()
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    ok = ue.generate(_ids(llama_tiny), 3, max_new_tokens=3)
    assert ok.report.fallback_segments == []
    ue.close()
    assert "no frame for" in (child.log_path.read_text())


@pytest.mark.timeout(180)
def test_a_busy_or_mismatched_edge_is_treated_as_unavailable(fresh_edge, llama_tiny):
    """Edge full (too many open sessions) or restarted with another model: the UE finishes the request
    itself, exactly, marks the edge down and says why (serve's /health reports it)."""
    child, port, token = fresh_edge(extra=["--max-sessions", "1"])
    ids = _ids(llama_tiny)
    want = SplitRuntime(llama_tiny).generate(ids, 3, max_new_tokens=4, stop_at_eos=False).token_ids
    holder = EdgeConnection(f"127.0.0.1:{port}", token)  # another client holds the only session
    open_msg = wire.Message("open", "h", 0, {"L": 6, "cuts": [3], "seg": 1, "sampling": {}, "policy": {},
                                             "fp": llama_tiny.fingerprint})
    import queue as _queue

    frames: _queue.Queue = _queue.Queue()
    frames.put(wire.encode(open_msg))
    call = holder.session(iter(frames.get, None), metadata=holder.metadata)
    assert wire.decode(next(call)).type == "ok"
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny, health_interval_s=0.3)
    busy = ue.generate(ids, 3, max_new_tokens=4, stop_at_eos=False)
    assert busy.token_ids == want and busy.report.fallback_segments == [1]
    assert not ue.edge_available and "busy" in ue.edge_error
    frames.put(None)
    call.cancel()
    holder.close()
    assert ue.wait_available(30)  # the session is free again: the health check passes
    assert ue.generate(ids, 3, max_new_tokens=4, stop_at_eos=False).report.fallback_segments == []
    # The edge restarted at the same address with another model.
    child.stop()
    fresh_edge(model="gpt2-tiny", port=port)
    other = ue.generate(ids, 3, max_new_tokens=4, stop_at_eos=False)
    assert other.token_ids == want and other.report.fallback_segments == [1]
    assert not ue.edge_available and "mismatch" in ue.edge_error
    time.sleep(1.0)  # the health check keeps failing: a mismatched edge stays down
    assert not ue.edge_available and "mismatch" in ue.edge_error
    assert ue.generate(ids, 3, max_new_tokens=4, stop_at_eos=False).report.fallback_segments == [1]
    ue.close()


@pytest.mark.timeout(120)
def test_the_edge_caps_context_length_at_the_models_positions(llama_edge, llama_tiny):
    _, port, token = llama_edge
    fp = llama_tiny.fingerprint
    limit = llama_tiny.view.max_positions
    open_msg = wire.Message("open", "r9", 0, {"L": 6, "cuts": [3], "seg": 1, "sampling": {}, "policy": {}, "fp": fp})
    hidden = llama_tiny.view.hidden_size
    huge = wire.Message("step", "r9", 1, {"ph": "prefill", "b": 0, "k": "hidden", "codec": "fp32", "dt": "float32",
                                        "shape": [1, limit + 1, hidden], "q": 0}, b"\x00" * 16)
    replies = _raw_session(port, token, [wire.encode(open_msg), wire.encode(huge)])
    assert [r.type for r in replies] == ["ok", "error"]
    assert "context length" in replies[1].get("msg") and str(limit) in replies[1].get("msg")
    ue = UEClient(f"127.0.0.1:{port}", token, llama_tiny)
    assert len(ue.generate(_ids(llama_tiny), 3, max_new_tokens=3).token_ids) == 3
    ue.close()


def test_a_token_file_other_users_can_read_is_accepted_with_a_warning(tmp_path, caplog):
    from splitrl.deploy.security import read_token

    path = tmp_path / "token"
    path.write_text("t" * 32 + "\n")
    path.chmod(0o600)
    with caplog.at_level("WARNING", logger="splitrl.security"):
        assert read_token(path) == "t" * 32
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="splitrl.security"):
        assert read_token(path) == "t" * 32
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text
