"""`benchmarks/decode_speed.py` runs its engines and writes well-formed records (correctness only).

On the tiny LLaMA with minimal settings (1 thread, 1 repeat, a few tokens): every engine it builds
either runs or says why not, the records and ratios have their fields, fp32 splitrl's greedy tokens
equal plain transformers'. Never asserts a speed: timings belong to the benchmark's result file.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ds():
    spec = importlib.util.spec_from_file_location("decode_speed_bench", ROOT / "benchmarks" / "decode_speed.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _check_spread(s: dict, n: int) -> None:
    assert len(s["values"]) == n and s["min"] <= s["median"] <= s["max"]
    assert s["iqr"][0] <= s["median"] <= s["iqr"][1]


def test_engines_measure_and_summarise(ds, llama_tiny, keep_threads, tmp_path):
    ids = torch.arange(100, 124).view(1, -1)
    engines = ds.build_engines(llama_tiny, ids, threads=(1,), llama_python=str(tmp_path / "no-python"),
                               gguf=None, split=3, include_two_process=False, compiled=("int4",))
    keys = {e.key for e in engines}
    assert {f"splitrl-{p}-t1" for p in ds.PRECISIONS} <= keys
    assert "splitrl-int4-compiled-t1" in keys and "splitrl-int8-compiled-t1" not in keys
    assert {"transformers-fp32-t1", "llama.cpp-t1"} <= keys
    assert any(p[0] != p[1] for p in ds.TWO_PROCESS) == any("+" in k for k in keys if k.startswith("splitrl-"))
    runs = ds.measure(engines, repeats=2, new_tokens=3, warmup_tokens=2, progress=False)
    res = ds.summarise(engines, runs, threads=(1,))
    eng = res["engines"]
    assert set(eng) == keys
    for key, d in eng.items():
        assert {"kind", "threads", "precision", "available"} <= set(d)
        if d["available"]:
            _check_spread(d["decode_tokens_per_s"], 2)
            _check_spread(d["prefill_s"], 2)
            assert len(d["token_ids"]) == 3 and d["tokens_same_every_repeat"]
            assert sorted(d["repeat_order"]) == [0, 1]
        else:
            assert d["decode_tokens_per_s"] is None and d["reason"]
    assert eng["splitrl-fp32-t1"]["available"] and eng["transformers-fp32-t1"]["available"]
    assert not eng["llama.cpp-t1"]["available"]  # no GGUF (and no such python): says so instead of a number
    assert res["greedy_tokens_vs_transformers_fp32"]["splitrl-fp32-t1"]["identical"]
    r = res["ratios"]["fp32_vs_transformers"]["t1"]
    _check_spread(r, 2)
    assert r["engines"] == ["splitrl-fp32-t1", "transformers-fp32-t1"] and r["ratio_of_medians"] > 0
    assert res["ratios"]["int4_vs_llama_cpp"]["t1"] is None  # llama.cpp unavailable: no ratio
    # --compile: the same greedy tokens as eager, the compilation in the warm-up
    assert eng["splitrl-int4-compiled-t1"]["token_ids"] == eng["splitrl-int4-t1"]["token_ids"]
    assert eng["splitrl-int4-compiled-t1"]["compiled"] and eng["splitrl-int4-compiled-t1"]["warmup_s"] > 0
    json.dumps(res)  # the whole record is JSON


@pytest.mark.parametrize("ue_p,edge_p,compiled", [("fp32", "fp32", False), ("int4", "fp32", True)])
def test_two_process_engine(ds, llama_tiny, keep_threads, tmp_path, ue_p, edge_p, compiled):
    ids = torch.arange(100, 116).view(1, -1)
    e = ds.two_process_engine(llama_tiny, ids, ue_p, edge_p, tmp_path, split=3, compiled=compiled)
    try:
        assert e.available
        runs = ds.measure([e], repeats=1, new_tokens=3, warmup_tokens=2, progress=False)
    finally:
        e.close()
    rec = runs[e.key][0]
    assert rec["new_tokens"] == 3 and rec["decode_tokens_per_s"] > 0 and rec["prefill_s"] > 0
    from splitrl.runtime import SplitRuntime

    want = SplitRuntime(llama_tiny).generate(ids, 3, max_new_tokens=3, stop_at_eos=False,
                                             precision=(ue_p, edge_p)).token_ids
    assert rec["token_ids"] == want  # the same tokens as the in-process run at the same precisions


def test_llama_helper_without_llama_cpp_says_so():
    """The helper under a Python without llama_cpp prints one JSON line saying so (exit 0)."""
    try:
        import llama_cpp  # noqa: F401
        pytest.skip("llama_cpp is importable here")
    except ImportError:
        pass
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "llama_cpp_decode.py"), "--model", "x.gguf",
                        "--threads", "1"], input="[1, 2, 3]", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    assert rec["available"] is False and "llama_cpp" in rec["reason"]


def test_probe_reports_missing_python(ds, tmp_path):
    assert not ds.llama_cpp_probe(None)["available"]
    probe = ds.llama_cpp_probe(str(tmp_path / "nope"))
    assert not probe["available"] and "does not exist" in probe["reason"]
    probe = ds.llama_cpp_probe(sys.executable)
    try:
        import llama_cpp  # noqa: F401
        assert probe["available"]
    except ImportError:
        assert not probe["available"] and "not importable" in probe["reason"]
