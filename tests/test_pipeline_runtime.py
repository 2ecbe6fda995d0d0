"""The ring runtime with real stage processes: exactness, seeded sampling, stage death and re-formation."""
from __future__ import annotations

import signal
import time

import pytest
import torch

from splitrl.errors import UsageError
from splitrl.models import load_model
from splitrl.pipeline import PipelineConfig, PipelineRun, run_pipeline
from splitrl.pipeline.protocol import (
    HEADER_LEN, RESET, STOP, Header, JobSpec, Plan, decode_frame, encode_frame, frame_bytes,
)

PROMPTS = [
    "The history of the city begins",
    "In mathematics, a prime number is",
    "The river",
    "Scientists have discovered that the old bridge",
    "Once",
    "A transformer model is a neural network",
]


def _reference(name: str, prompts: list[str], max_new: list[int]) -> list[list[int]]:
    lm = load_model(name)
    out = []
    for p, n in zip(prompts, max_new):
        ids = torch.tensor([lm.tokenizer(p)["input_ids"]])
        with torch.no_grad():
            gen = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                    pad_token_id=lm.tokenizer.eos_token_id, eos_token_id=None)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def test_header_roundtrip_and_validation():
    h = Header(3, 17, 1, RESET, 123456)
    t = h.tensor()
    assert t.dtype == torch.int64 and t.shape == (HEADER_LEN,)
    assert Header.from_tensor(t) == h
    assert not Header(0, 0, 0, STOP).has_payload
    with pytest.raises(ValueError):
        Header.from_tensor(torch.tensor([-1, 0, 1, 0, 0]))
    with pytest.raises(ValueError):
        Header.from_tensor(torch.tensor([0, 0, 1, 64, 0]))
    # The fixed first frame of a hop: header + one inline position (decode), bit-exact.
    x = torch.randn(1, 1, 8)
    got, inline = decode_frame(encode_frame(Header(3, 17, 1, RESET, 2**60 + 5), x, 8), 8)
    assert got == Header(3, 17, 1, RESET, 2**60 + 5) and torch.equal(inline, x)
    assert decode_frame(encode_frame(Header(1, 0, 6, RESET), torch.randn(1, 6, 8), 8), 8) == (Header(1, 0, 6, RESET), None)
    assert decode_frame(encode_frame(Header(2, 0, 0, STOP), None, 8), 8) == (Header(2, 0, 0, STOP), None)
    with pytest.raises(ValueError):
        decode_frame(torch.zeros(frame_bytes(8) + 1, dtype=torch.uint8), 8)
    job = JobSpec(model="llama-tiny", prompts=[[1, 2]], max_new_tokens=[3])
    assert JobSpec.from_json(job.to_json()) == job
    plan = Plan(1, [0, 2], [3])
    assert Plan.from_json(plan.to_json()) == plan and plan.bounds(6) == [(0, 3), (3, 6)]


def test_config_rejects_bad_input():
    with pytest.raises(UsageError, match="--cuts"):
        PipelineConfig(model="llama-tiny", cuts=[], prompts=["a"])
    with pytest.raises(UsageError, match="--link"):
        PipelineConfig(model="llama-tiny", cuts=[2], prompts=["a"], hop_links=["nope"])
    with pytest.raises(UsageError, match="--cuts"):
        PipelineRun(PipelineConfig(model="llama-tiny", cuts=[4, 2], prompts=["a"]))
    with pytest.raises(UsageError, match="not loopback"):
        PipelineRun(PipelineConfig(model="llama-tiny", cuts=[2], prompts=["a"], listen="10.1.2.3:0"))


@pytest.mark.timeout(240)
def test_greedy_exact_k4_s6_independent_lengths():
    """6 samples of different prompt and output lengths on a 4-stage ring == generate on each prompt alone."""
    max_new = [9, 4, 12, 6, 10, 7]
    res = run_pipeline(PipelineConfig(model="llama-tiny", cuts=[1, 3, 5], prompts=PROMPTS, max_new_tokens=max_new,
                                      stop_at_eos=False, hop_links=["identity", "fp32", "identity", "fp32"]))
    ref = _reference("llama-tiny", PROMPTS, max_new)
    assert [s.token_ids for s in res.samples] == ref
    assert [s.finish_reason for s in res.samples] == ["length"] * 6
    assert not res.failures
    # Every stage saw every token of every sample (prefill + decode) and counted its hop's bytes.
    assert sorted(r["rank"] for r in res.reports) == [0, 1, 2, 3]
    for r in res.reports:
        assert r["messages"] == sum(max_new)
        assert r["hop"]["bytes"] > 0
    # Each stage process materialised only its own layers (the starter also the embeddings and the head).
    full = load_model("llama-tiny").view
    bounds = [(0, 1), (1, 3), (3, 5), (5, 6)]
    for r in res.reports:
        a, b = bounds[r["rank"]]
        tensors = {id(p): p for i in range(a, b) for p in full.layers[i].parameters()}
        if r["rank"] == 0:
            for m in (full.embed_tokens, full.final_norm, full.lm_head):
                tensors.update({id(p): p for p in m.parameters()})
        assert r["param_bytes"] == sum(p.numel() * p.element_size() for p in tensors.values())
        assert r["held_layers"] == [a, b] and r["holds_embed_head"] == (r["rank"] == 0)


@pytest.mark.timeout(240)
def test_per_stage_precision_equals_the_same_precisions_in_process():
    """Stages at fp32 / int8 / fp32 (the starter runs the head) == SplitRuntime with those segment precisions."""
    from splitrl.runtime import SplitRuntime

    max_new = [7, 5, 9]
    res = run_pipeline(PipelineConfig(model="llama-tiny", cuts=[1, 3], prompts=PROMPTS[:3], max_new_tokens=max_new,
                                      stop_at_eos=False, precisions=["fp32", "int8", "fp32"]))
    lm = load_model("llama-tiny")
    rt = SplitRuntime(lm)
    ref = [rt.generate(torch.tensor([lm.tokenizer(p)["input_ids"]]), [1, 3], max_new_tokens=n, stop_at_eos=False,
                       precision=("fp32", "int8", "fp32")).token_ids for p, n in zip(PROMPTS[:3], max_new)]
    assert [s.token_ids for s in res.samples] == ref
    ids = torch.tensor([lm.tokenizer(PROMPTS[0])["input_ids"]])
    assert not torch.equal(rt.forward(ids, [1, 3], precision=("fp32", "int8", "fp32")), rt.forward(ids, [1, 3]))
    stage1 = next(r for r in res.reports if r["rank"] == 1)
    full = load_model("llama-tiny").view
    fp32_bytes = sum(p.numel() * p.element_size() for i in (1, 2) for p in full.layers[i].parameters())
    assert 0 < stage1["param_bytes"] < fp32_bytes / 2                       # int8 weights, not fp32
    with pytest.raises(UsageError, match="one per stage"):
        PipelineConfig(model="llama-tiny", cuts=[1, 3], prompts=["x"], precisions=["int8", "fp32"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_greedy_exact_gpt2_k2_and_codec_hop():
    """GPT-2 (learned positions) on 2 stages, an empty starter range (embed + head only) and 3 samples."""
    prompts, max_new = PROMPTS[:3], [5, 8, 3]
    res = run_pipeline(PipelineConfig(model="gpt2-tiny", cuts=[0], prompts=prompts, max_new_tokens=max_new,
                                      stop_at_eos=False))
    assert [s.token_ids for s in res.samples] == _reference("gpt2-tiny", prompts, max_new)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_seeded_sampling_independent_of_interleaving():
    kw = dict(model="llama-tiny", max_new_tokens=8, stop_at_eos=False, do_sample=True, temperature=1.5,
              top_k=50, seed=11)
    a = run_pipeline(PipelineConfig(cuts=[3], prompts=PROMPTS[:4], **kw))
    b = run_pipeline(PipelineConfig(cuts=[1, 2, 4], prompts=PROMPTS[:4], **kw))
    # Sample 2 alone (its own seed 11 + 2) gives the same text as inside the group.
    c = run_pipeline(PipelineConfig(cuts=[2, 4], prompts=PROMPTS[2:3], seeds=[13], **kw))
    ta, tb = [s.token_ids for s in a.samples], [s.token_ids for s in b.samples]
    assert ta == tb
    assert c.samples[0].token_ids == ta[2]
    assert len({tuple(t) for t in ta}) > 1


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("victim", [1, 0])
def test_stage_death_is_detected_reported_and_replayed(victim):
    """SIGKILL a stage mid-run (a middle one, or the starter): the driver names it and the in-flight samples,
    re-forms the ring over the survivors on the same store, and every sample still equals generate."""
    prompts, max_new = PROMPTS[:3], [40, 40, 40]
    cfg = PipelineConfig(model="llama-tiny", cuts=[2, 4], prompts=prompts, max_new_tokens=max_new,
                         stop_at_eos=False, link_profile="wifi6-20mhz", snr_db=[25.0, 25.0, 25.0],
                         heartbeat_timeout_s=3.0, timeout_s=30.0)
    killed = {}

    def kill_when_started(run: PipelineRun) -> None:
        if not killed and sum(len(t) for t in run.committed()) >= 6:
            run.children[victim].signal(signal.SIGKILL)
            killed["at"] = time.time()
            killed["committed"] = [len(t) for t in run.committed()]

    with PipelineRun(cfg) as run:
        res = run.wait(on_poll=kill_when_started)
    assert killed, "the run finished before the kill"
    assert len(res.failures) == 1
    f = res.failures[0]
    survivors = [m for m in (0, 1, 2) if m != victim]
    assert f["generation"] == 0 and f["dead_stages"] == [victim] and f["survivors"] == survivors
    assert f["in_flight_samples"] == [i for i, n in enumerate(killed["committed"]) if n < 40]
    assert f["detected_at"] - killed["at"] < 5.0  # bounded detection (pid poll; heartbeat bound 3 s)
    assert [p["members"] for p in res.plans] == [[0, 1, 2], survivors]
    assert [s.token_ids for s in res.samples] == _reference("llama-tiny", prompts, max_new)
    # The re-formed generation ran on two members with the layers re-split between them.
    last = [r for r in res.reports if r["generation"] == 1]
    assert sorted(r["stage"] for r in last) == survivors and {tuple(r["layers"]) for r in last} == {(0, 3), (3, 6)}
    # The survivors loaded the layers they newly own, and only those.
    for r in last:
        assert r["held_layers"] == r["layers"] and r["holds_embed_head"] == (r["rank"] == 0)


def test_cli_usage_errors(capsys):
    from splitrl.cli import main

    assert main(["pipeline", "generate", "--model", "llama-tiny", "--cuts", "9"]) == 2
    assert "--cuts" in capsys.readouterr().err
    assert main(["pipeline", "stage", "--rank", "0", "--world", "2", "--master", "10.1.2.3:29500"]) == 2
    assert "not loopback" in capsys.readouterr().err
    assert main(["pipeline", "generate", "--model", "llama-tiny", "--cuts", "a,b"]) == 2


def test_cli_plan_prints_dp_equal_and_mdi(capsys):
    import json

    from splitrl.cli import main

    assert main(["pipeline", "plan", "--model", "llama-tiny", "--devices", "phone-midrange,jetson-orin"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"dp", "equal", "mdi_llm"}
    assert out["dp"]["bottleneck_tok_s"] >= out["equal"]["bottleneck_tok_s"] - 1e-9


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("cuts", [[12], [8, 20]], ids=["K2", "K3"])
def test_smollm2_greedy_exact_k2_and_k3(cuts):
    """SmolLM2-135M on real 2- and 3-stage rings (partial loads): each sample == generate on its own prompt."""
    prompts, max_new = PROMPTS[:3], [12, 7, 10]
    res = run_pipeline(PipelineConfig(model="smollm2-135m", cuts=cuts, prompts=prompts, max_new_tokens=max_new,
                                      stop_at_eos=False))
    assert [s.token_ids for s in res.samples] == _reference("smollm2-135m", prompts, max_new)
    assert sorted(r["rank"] for r in res.reports) == list(range(len(cuts) + 1))
