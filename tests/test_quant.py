"""Weight precision per segment: each precision's split equals its own unsplit model, at every cut.

Also: the low-bit linears against their dequantised weights, the GGUF Q4_1 reader against gguf-py,
the lean LLaMA layer against the Hugging Face layer with the same quantised linears, loading at a
precision (quantised while loading) against quantising an fp32 model, the precision in the UE/edge
handshake over real processes, and clear refusals.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from splitrl.errors import UsageError
from splitrl.models import load_model
from splitrl.quant import PRECISIONS, check_precision, linear_weight_bytes
from splitrl.quant.decoder import LeanLlamaLayer
from splitrl.quant.gguf import _decode_q4_1, match_rows
from splitrl.quant.linear import BF16Linear, Int4Linear, Int8Linear, QuantEmbedding
from splitrl.quant.weights import count_params, quantize_layer
from splitrl.runtime import SplitRuntime
from splitrl.runtime.partition import InvalidPartitionError, Partition

LOW = ("bf16", "int8", "int4")


def _ids(n: int = 14, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5000, (1, n), generator=g)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_split_equals_unsplit_at_every_cut(tiny_models, model, precision):
    rt = SplitRuntime(tiny_models[model])
    L = rt.num_layers
    ids = _ids()
    ref = rt.forward(ids, L, precision=precision)             # everything on one device = unsplit
    ref_ids = rt.generate(ids, L, max_new_tokens=8, precision=precision, stop_at_eos=False).token_ids
    for s in range(L + 1):
        out = rt.forward(ids, s, precision=precision)
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max())), s
        assert rt.generate(ids, s, max_new_tokens=8, precision=precision, stop_at_eos=False).token_ids == ref_ids, s


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["llama-tiny", "gpt2-tiny"])
def test_low_bit_changes_the_numbers_but_stays_close_to_fp32(tiny_models, model):
    rt = SplitRuntime(tiny_models[model])
    ids = _ids()
    fp = rt.forward(ids, 3)
    errs = {p: float((rt.forward(ids, 3, precision=p) - fp).abs().max() / fp.abs().max()) for p in LOW}
    assert all(e > 0 for e in errs.values()), errs                 # really another computation
    assert errs["bf16"] < errs["int8"] < errs["int4"] < 0.5, errs   # ordered by bits, not garbage


@pytest.mark.timeout(120)
def test_mixed_precision_partition_runs_each_segment_at_its_own(tiny_models):
    rt = SplitRuntime(tiny_models["llama-tiny"])
    ids = _ids()
    L = rt.num_layers
    mixed = rt.forward(ids, 3, precision=("int4", "fp32"))
    assert not torch.equal(mixed, rt.forward(ids, 3))
    assert not torch.equal(mixed, rt.forward(ids, 3, precision="int4"))
    # the UE's half at int4 equals running those layers at int4 by hand
    view = rt.view
    pos = torch.arange(ids.shape[1])[None]
    h = view.run_layers(view.embed(ids, pos, "int4"), 0, 3, pos, precision="int4")
    h = view.run_layers(h, 3, L, pos)
    assert torch.equal(view.head(h), mixed)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision", LOW)
def test_lean_layer_equals_the_hf_layer_with_the_same_quantised_linears(tiny_models, precision):
    view = tiny_models["llama-tiny"].view
    ids = _ids()
    pos = torch.arange(ids.shape[1])[None]
    x = view.embed(ids, pos)
    lean = x
    for i in range(view.num_layers):
        layer = view.precision_weights.layer(i, precision)
        assert isinstance(layer, LeanLlamaLayer)
    lean = view.run_layers(x, 0, view.num_layers, pos, precision=precision)
    hf_layers = [quantize_layer(view.layers[i], precision) for i in range(view.num_layers)]
    ctx = view.layer_context(x, pos, None, 0)
    hf = x
    for layer in hf_layers:
        hf = layer(hf, **ctx)
        hf = hf[0] if isinstance(hf, tuple) else hf
    assert torch.allclose(lean, hf, rtol=1e-4, atol=1e-4 * float(hf.abs().max()))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n,k", [(64, 64), (50, 176), (160, 96)])
@torch.no_grad()
def test_low_bit_linears_equal_their_dequantised_weights(n, k):
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n)
    x = torch.randn(3, 5, k)
    ref = lin(x)
    i8 = Int8Linear.from_module(lin)
    w8 = i8.codes.float() * i8.scales.float()[:, None]
    assert torch.allclose(i8(x), torch.nn.functional.linear(x.bfloat16().float(), w8, lin.bias), rtol=2e-2, atol=2e-2)
    i4 = Int4Linear.from_module(lin)
    assert i4(x).shape == ref.shape
    assert float((i4(x) - ref).abs().max() / ref.abs().max()) < 0.25
    b = BF16Linear(lin.weight.detach(), lin.bias.detach())
    assert torch.allclose(b(x), ref, rtol=2e-2, atol=2e-2)


def test_int4_kernel_computes_q4_1_dequantisation():
    torch.manual_seed(1)
    n, k = 32, 64
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    d = torch.rand(n, k // 32) * 0.1
    m = -torch.rand(n, k // 32)
    lin = Int4Linear(codes, d, m, None)
    deq = codes.float() * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1)
    x = torch.randn(2, k)
    ref = x.bfloat16().float() @ deq.t()
    assert torch.allclose(lin(x), ref, rtol=3e-2, atol=3e-2 * float(ref.abs().max()))


def test_q4_1_decoder_matches_gguf_py_and_rows_are_matched_exactly():
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 64)).astype(np.float32)
    raw = quantize(w, GGMLQuantizationType.Q4_1)
    codes, d, m = _decode_q4_1(raw, 12, 64)
    ref = dequantize(raw, GGMLQuantizationType.Q4_1)
    mine = np.repeat(d, 32, axis=1) * codes.astype(np.float32) + np.repeat(m, 32, axis=1)
    assert np.array_equal(mine.astype(np.float32), ref.astype(np.float32))
    perm = rng.permutation(12)
    hit = match_rows((codes, d, m), torch.from_numpy(ref[perm].copy()))
    assert hit is not None and np.array_equal(hit[0], codes[perm])
    wrong = ref[perm].copy()
    wrong[3, 5] += 1e-3
    assert match_rows((codes, d, m), torch.from_numpy(wrong)) is None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("model", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("precision", LOW)
def test_loading_at_a_precision_equals_quantising_the_fp32_model(tiny_models, model, precision):
    q = load_model(model, precision=precision)
    assert q.view.base_precision == precision
    assert not any(isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D" for m in q.model.modules())
    fp = tiny_models[model]
    ids = _ids()
    assert torch.equal(SplitRuntime(q).forward(ids, 2), SplitRuntime(fp).forward(ids, 2, precision=precision))
    # analytic costs still count the original weights
    assert q.view.layer_cost(0) == fp.view.layer_cost(0)
    assert q.view.summary()["params_total"] == fp.view.summary()["params_total"]


@pytest.mark.timeout(120)
def test_partial_load_at_int4_holds_only_its_layers(tiny_models):
    q = load_model("llama-tiny", precision="int4", layers=(0, 3), head=False)
    assert q.view.held_layers() == [0, 1, 2]
    assert q.view.holds_embed and not q.view.holds_head
    rt = SplitRuntime(q)
    full = SplitRuntime(tiny_models["llama-tiny"])
    ids = _ids()
    part = rt.segments(rt.partition(3))[0]
    part.reset()
    ref = full.segments(full.partition(3, "int4"))[0]
    ref.reset()
    assert torch.equal(part.step(ids), ref.step(ids))


def test_a_process_at_int4_refuses_another_precision_clearly(tiny_models):
    q = load_model("llama-tiny", precision="int4")
    rt = SplitRuntime(q)
    assert rt.partition(3).precisions == ("int4", "int4")
    with pytest.raises(ValueError, match="holds its weights at int4"):
        rt.forward(_ids(), 3, precision="fp32")
    assert "not fp32" in q.view.holds(0, 2, precision="fp32")


def test_partition_precision_validation():
    assert Partition.of(3, 6).precisions is None
    assert Partition.of(3, 6, "fp32").precisions is None                 # one spelling of the default
    p = Partition.of([2, 4], 6, ("int4", "int8", "fp32"))
    assert [s.precision for s in p.segments()] == ["int4", "int8", "fp32"]
    with pytest.raises(InvalidPartitionError, match="segment 1 = 'int3'"):
        Partition.of(3, 6, ("int4", "int3"))
    with pytest.raises(InvalidPartitionError, match="one precision per segment"):
        Partition.of(3, 6, ("int4",))
    with pytest.raises(UsageError, match="fp32, bf16, int8, int4"):
        check_precision("fp8")


def test_weight_bytes_match_the_modules_buffers():
    lin = torch.nn.Linear(576, 1536, bias=False)
    for precision, module in (("int8", Int8Linear.from_module(lin)), ("int4", Int4Linear.from_module(lin)),
                              ("bf16", BF16Linear(lin.weight.detach(), None))):
        stored = sum(b.numel() * b.element_size() for b in module.buffers())
        assert stored == linear_weight_bytes(1536, 576, precision), precision
    assert linear_weight_bytes(1536, 576, "fp32") == 4 * 1536 * 576
    emb = QuantEmbedding(torch.randn(100, 64), "int8")
    assert count_params(emb) == 6400


# ---- two processes: the precision travels in the handshake -------------------------------
@pytest.mark.timeout(240)
def test_two_process_ue_int4_edge_fp32_equals_in_process(tmp_path, tiny_models):
    from splitrl.deploy.client import UEClient
    from splitrl.proc import spawn_splitrl, wait_for_port_file

    fp = tiny_models["llama-tiny"]
    ue_model = load_model("llama-tiny", precision="int4")
    children = []

    def edge(precision: str):
        port_file = tmp_path / f"{precision}.port"
        child = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--token-file", tmp_path / "token", "--port-file",
                               port_file, "--model", "llama-tiny", "--precision", precision],
                              log_path=tmp_path / f"{precision}.log")
        children.append(child)
        return wait_for_port_file(port_file, child, timeout_s=120)

    try:
        port = edge("fp32")
        token = (tmp_path / "token").read_text().strip()
        ue = UEClient(f"127.0.0.1:{port}", token, ue_model)
        assert ue.edge_info.precision == "fp32"
        rt = SplitRuntime(fp)
        ids = _ids()
        for s in (0, 2, 4, 6):
            remote = ue.generate(ids, s, max_new_tokens=8, stop_at_eos=False)
            local = rt.generate(ids, s, max_new_tokens=8, stop_at_eos=False, precision=("int4", "fp32"))
            assert remote.token_ids == local.token_ids, s
            assert remote.report.fallback_segments == []
        ue.close()
        port8 = edge("int8")
        ue8 = UEClient(f"127.0.0.1:{port8}", token, fp)            # an fp32 UE can replay an int8 edge
        assert ue8.edge_info.precision == "int8"
        local = rt.generate(ids, 3, max_new_tokens=8, stop_at_eos=False, precision=("fp32", "int8"))
        assert ue8.generate(ids, 3, max_new_tokens=8, stop_at_eos=False).token_ids == local.token_ids
        ue8.close()
    finally:
        for c in children:
            c.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_int4_uses_the_published_codes_and_splits_exactly():
    from splitrl.quant.gguf import GGUFCodes
    import splitrl.quant.gguf as g

    used = []
    real_init = GGUFCodes.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        used.append(self)

    g.GGUFCodes.__init__ = spy
    try:
        q = load_model("smollm2-135m", precision="int4")
    finally:
        g.GGUFCodes.__init__ = real_init
    assert used and used[0].used == 210 and not used[0].unmatched
    rt = SplitRuntime(q)
    ids = _ids(32)
    ref = rt.forward(ids, 30)
    ref_ids = rt.generate(ids, 30, max_new_tokens=8, stop_at_eos=False).token_ids
    for s in (0, 7, 15, 29):
        assert torch.allclose(rt.forward(ids, s), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        assert rt.generate(ids, s, max_new_tokens=8, stop_at_eos=False).token_ids == ref_ids


# ---- quality per precision: perplexity and the sweep column ------------------------------
def test_perplexity_per_precision_uses_each_segments_weights(tiny_models):
    from splitrl.eval import PerplexityConfig, PerplexityEvaluator

    lm = tiny_models["llama-tiny"]
    ids = _ids(96)
    ev = PerplexityEvaluator(lm, PerplexityConfig(tokens=96, window=48, stride=24), input_ids=ids)
    L = lm.view.num_layers
    fp = ev.evaluate(3).ppl
    for p in LOW:
        cached = ev.evaluate(3, precision=(p, "fp32"))
        uncached = ev.evaluate(3, precision=(p, "fp32"), use_prefix_cache=False)
        assert cached.precision == [p, "fp32"]
        assert cached.ppl == pytest.approx(uncached.ppl, rel=1e-6) and cached.ppl != fp
        # s = 0: the edge runs everything at fp32; s = L: the UE runs everything at p
        assert ev.evaluate(0, precision=(p, "fp32")).ppl == pytest.approx(fp, rel=1e-6)
        assert ev.evaluate(L, precision=(p, "fp32")).ppl == pytest.approx(ev.evaluate(L, precision=p).ppl, rel=1e-6)


@pytest.mark.timeout(300)
def test_sweep_adds_precisions_to_an_fp32_table_and_resumes(tmp_path):
    import csv

    from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
    from splitrl.sweep import FP32_COLUMNS, SweepConfig, read_sweep_table, run_sweep

    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    out = tmp_path / "t.csv"
    base = dict(model="llama-tiny", splits=[0, 3, 6], levels=[30.0], transports=["awgn"], seeds=1, tokens=64,
                window=64, stride=64)
    run_sweep(SweepConfig(**base), out, progress=False)
    # make it a table from before the column existed, as the committed one is
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FP32_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    run_sweep(SweepConfig(**base, ue_precisions=["fp32", "int4"]), out, progress=False)
    run_sweep(SweepConfig(**base, ue_precisions=["fp32", "int4"]), out, progress=False)   # nothing left to do
    everything = read_sweep_table(out, ue_precision=None)
    assert sorted(everything.groupby("ue_precision").size().to_dict().items()) == [("fp32", 3), ("int4", 3)]
    fp, q = read_sweep_table(out), read_sweep_table(out, ue_precision="int4")
    assert list(fp["ppl"]) == [float(r["ppl"]) for r in rows]                  # old rows untouched
    by_split = dict(zip(q["split"], q["ppl"]))
    assert by_split[0] == pytest.approx(fp.loc[fp["split"] == 0, "ppl"].iloc[0])   # s=0: nothing on the UE
    assert by_split[6] != fp.loc[fp["split"] == 6, "ppl"].iloc[0]
    assert set(q["clean_ppl"]) == set(fp["clean_ppl"])                          # one fp32 reference


def test_profile_measures_precision_rates_into_a_loadable_profile(tiny_models, tmp_path):
    from splitrl.cost.measure import measure_layer_times, measure_precision_rates
    from splitrl.cost.profiles import load_profile

    lm = tiny_models["llama-tiny"]
    rates = measure_precision_rates(lm, ["int8", "int4"], context=16, repeats=1, warmup=0)
    assert set(rates["precision_rates"]) == {"fp32", "int8", "int4"}
    assert rates["precision_rates"]["fp32"] == {"compute": 1.0, "memory": 1.0}
    assert all(r["compute"] > 0 and r["memory"] > 0 for r in rates["precision_rates"].values())
    assert rates["timings"]["int4"]["decode_bytes"] < rates["timings"]["fp32"]["decode_bytes"]
    result = measure_layer_times(lm, [16], 1, warmup=0, measure_bandwidth=False, progress=False)
    result.precision_rates = rates
    out = result.write_yaml(tmp_path / "m.yaml")
    prof = load_profile("ue", out)
    assert set(prof.precision_rates) == {"fp32", "int8", "int4"}


@pytest.mark.timeout(120)
def test_serving_loads_the_model_at_the_asked_precision(tiny_models):
    from splitrl.controller.session import build_server

    server, loaded, _ = build_server(checkpoint=None, agent=None, split=3, channel="markov", seed=0,
                                     env={"model": "llama-tiny", "transport": "identity"}, precision="int4")
    assert loaded.view.base_precision == "int4"
    ids = loaded.tokenizer("the phone and the edge", return_tensors="pt").input_ids
    result, rec = server.serve(ids, max_new_tokens=5, stop_at_eos=False)
    want = SplitRuntime(tiny_models["llama-tiny"]).generate(ids, 3, max_new_tokens=5, stop_at_eos=False,
                                                            precision="int4")
    assert result.token_ids == want.token_ids and rec.split == 3
    with pytest.raises(UsageError, match="--precision with --checkpoint"):
        build_server(checkpoint="nowhere", agent=None, env={"model": "llama-tiny"}, channel="markov", seed=0,
                     precision="int8")


def test_a_view_with_quantised_copies_can_be_deep_copied(tiny_models):
    import copy

    view = tiny_models["llama-tiny"].view
    ids = _ids()
    pos = torch.arange(ids.shape[1])[None]
    ref = view.run_layers(view.embed(ids, pos, "int8"), 0, 3, pos, precision="int8")   # caches int8 copies
    clone = copy.deepcopy(view)
    assert torch.equal(clone.run_layers(clone.embed(ids, pos, "int8"), 0, 3, pos, precision="int8"), ref)
