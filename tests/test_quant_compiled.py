"""The compiled low-bit decode step (`splitrl.quant.compiled`) against the eager one.

Compilation is real (inductor, C++), on the 6-layer tiny LLaMA: the compiled step equals the eager
step to float rounding, a split equals the unsplit model at every cut with compilation on, steps
it does not compile (prefill, fp32, GPT-2) stay eager, and a failing compiler falls back to eager.
"""
from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers.cache_utils import DynamicCache

from splitrl.cli import main
from splitrl.errors import UsageError
from splitrl.models import load_model
from splitrl.quant.compiled import chunk_lengths
from splitrl.runtime import SplitRuntime


def _ids(n: int = 14, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 5000, (1, n), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def _decode_logits(view, cuts: list[int], precision: str, steps: int = 6) -> torch.Tensor:
    """Prefill then ``steps`` greedy decode steps through segments ``cuts`` (own cache each): logits ``[steps, V]``."""
    ids = _ids()
    bounds = list(zip(cuts[:-1], cuts[1:]))
    caches = [DynamicCache(config=view.config) for _ in bounds]
    pos = torch.arange(ids.shape[1]).unsqueeze(0)

    def through(h, p):
        for (a, b), c in zip(bounds, caches):
            h = view.run_layers(h, a, b, p, c, precision=precision)
        return view.head(h[:, -1:], precision)[0, -1]

    logits = [through(view.embed(ids, pos, precision), pos)]
    for i in range(steps):
        p = torch.tensor([[ids.shape[1] + i]])
        logits.append(through(view.embed(logits[-1].argmax().view(1, 1), p, precision), p))
    return torch.stack(logits[1:])


def test_chunk_lengths_are_the_binary_decomposition():
    for n in range(0, 70):
        parts = chunk_lengths(n)
        assert sum(parts) == n and parts == sorted(parts, reverse=True)
        assert all(x in (1, 2, 4, 8, 16) for x in parts)
        assert len(parts) == n // 16 + bin(n % 16).count("1")
    assert chunk_lengths(30) == [16, 8, 4, 2]
    with pytest.raises(UsageError, match="largest_chunk"):
        from splitrl.quant.compiled import CompiledDecode
        CompiledDecode(largest_chunk=12)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_compiled_decode_equals_eager_and_splits_exactly_at_every_cut(precision):
    lm = load_model("llama-tiny")
    view, L = lm.view, lm.view.num_layers
    eager = _decode_logits(view, [0, L], precision)
    view.compile_decode = True
    compiled = _decode_logits(view, [0, L], precision)
    assert view.compiled_decode.failed is None
    assert view.compiled_decode.compiled_steps == 6             # every decode step, none of the prefill
    scale = float(eager.abs().max())
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5 * scale)
    assert compiled.argmax(-1).tolist() == eager.argmax(-1).tolist()
    for s in range(1, L):
        split = _decode_logits(view, [0, s, L], precision)
        assert torch.allclose(split, compiled, rtol=1e-5, atol=1e-5 * scale), s
    # the runtime's greedy ids through every cut equal the eager unsplit ones
    rt = SplitRuntime(lm)
    view.compile_decode = False
    ref = rt.generate(_ids(), L, max_new_tokens=8, precision=precision, stop_at_eos=False).token_ids
    view.compile_decode = True
    for s in range(L + 1):
        assert rt.generate(_ids(), s, max_new_tokens=8, precision=precision, stop_at_eos=False).token_ids == ref, s
    # every cut reused the power-of-two graphs: lengths 1, 2, 4 for a 6-layer model
    assert sorted(n for _, n in view.compiled_decode._fns) == [1, 2, 4]


@pytest.mark.timeout(120)
def test_what_it_does_not_compile_stays_eager(tiny_models):
    for name, precision in (("llama-tiny", "fp32"), ("gpt2-tiny", "int4")):
        view = tiny_models[name].view
        before = _decode_logits(view, [0, view.num_layers], precision)
        state = (view.compiled_decode.compiled_steps, set(view.compiled_decode._fns))  # shared fixture: others compile
        view.compile_decode = True
        try:
            after = _decode_logits(view, [0, view.num_layers], precision)
            assert (view.compiled_decode.compiled_steps, set(view.compiled_decode._fns)) == state, name
        finally:
            view.compile_decode = False
        assert torch.equal(before, after), name                  # bit for bit: the same eager code ran


@pytest.mark.timeout(300)
def test_a_failing_compiler_falls_back_to_eager_once_with_a_warning(caplog):
    import torch._inductor.config as inductor_config

    lm = load_model("llama-tiny")
    view = lm.view
    eager = _decode_logits(view, [0, view.num_layers], "int4")
    view.compile_decode = True
    torch._dynamo.reset()       # no graph from an earlier test may be reused from memory
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}), \
            caplog.at_level(logging.WARNING, logger="splitrl.quant.compiled"):
        got = _decode_logits(view, [0, view.num_layers], "int4")
    assert view.compiled_decode.failed is not None and view.compiled_decode.compiled_steps == 0
    assert sum("running eager from now on" in r.getMessage() for r in caplog.records) == 1
    assert torch.equal(got, eager)


@pytest.mark.timeout(600)
def test_generate_compile_flag_reports_compiled_steps_and_the_same_tokens(capsys):
    argv = ["generate", "--model", "llama-tiny", "--precision", "int4", "--split", "2", "--max-new-tokens", "5", "--json"]
    assert main(argv) == 0
    eager = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*argv, "--compile"]) == 0
    compiled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert compiled["token_ids"] == eager["token_ids"]
    assert eager["compiled_segment_steps"] == 0 and not eager["compile"]
    assert compiled["compile"] and compiled["compile_failed"] is None
    assert compiled["compiled_segment_steps"] == 2 * 4          # two segments x four decode steps


@pytest.mark.timeout(600)
def test_edge_and_ue_with_compile_equal_the_eager_in_process_run(tmp_path, tiny_models):
    from splitrl.deploy.client import UEClient
    from splitrl.proc import spawn_splitrl, wait_for_port_file

    port_file = tmp_path / "edge.port"
    child = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--token-file", tmp_path / "token", "--port-file",
                           port_file, "--model", "llama-tiny", "--precision", "int4", "--compile", "--threads", "1"],
                          log_path=tmp_path / "edge.log")
    try:
        port = wait_for_port_file(port_file, child, timeout_s=120)
        ue_model = load_model("llama-tiny", precision="int4", compile_decode=True)
        ue = UEClient(f"127.0.0.1:{port}", (tmp_path / "token").read_text().strip(), ue_model)
        assert ue.edge_info.precision == "int4"
        rt = SplitRuntime(tiny_models["llama-tiny"])
        for s in (2, 3):
            remote = ue.generate(_ids(), s, max_new_tokens=6, stop_at_eos=False)
            assert remote.report.fallback_segments == []
            assert remote.token_ids == rt.generate(_ids(), s, max_new_tokens=6, stop_at_eos=False,
                                                   precision="int4").token_ids, s
        ue.close()
        assert ue_model.view.compiled_decode.compiled_steps == 2 * 5
    finally:
        child.stop()
    log = (tmp_path / "edge.log").read_text()
    assert "decode graphs for chunks of [1, 2, 4] layers ready" in log      # compiled before it served
