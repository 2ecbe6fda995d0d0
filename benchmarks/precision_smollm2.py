"""Quality and memory of SmolLM2-135M at each weight precision, one fresh process per measurement.

For every precision in `splitrl.quant.PRECISIONS`:
- WikiText-2 perplexity of the whole model (256 tokens in one 256-token window, as the sweep
  scores; and 1,024 tokens in one 1,024-token window), and its ratio to fp32;
- memory of a one-precision process holding (a) the whole model and (b) the UE's part at split 15
  (embeddings + layers [0, 15)) and (c) the edge's part (layers [15, 30) + head): the process's
  own ``VmHWM`` (peak) and ``VmRSS`` after loading and after running (the whole model: a 32-token
  generation; a part: its layers over 32 tokens, so every weight is resident), read from
  ``/proc/self/status`` *inside that child* (a child's getrusage max-RSS would report the parent's
  peak, which Linux keeps across exec), and the bytes of the weights it holds.

Writes ``benchmarks/results/precision_smollm2.json`` (``--out``) with provenance.

    .venv/bin/python benchmarks/precision_smollm2.py --out benchmarks/results/precision_smollm2.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = {"whole": None, "ue@15": (0, 15), "edge@15": (15, 30)}


def _status() -> dict[str, float]:
    """This process's own peak and current resident memory (VmHWM, VmRSS), in MiB."""
    from splitrl.proc import peak_rss_bytes, rss_bytes

    return {"VmHWM_MiB": peak_rss_bytes() / 2**20, "VmRSS_MiB": rss_bytes() / 2**20}


def child(precision: str, part: str, tokens: list[int]) -> dict:
    """One measurement in this (fresh) process: load, optionally score, generate."""
    import torch

    torch.set_num_threads(1)
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime

    before = _status()
    layers = PARTS[part]
    if layers is None:
        lm = load_model("smollm2-135m", precision=precision)
    else:
        lm = load_model("smollm2-135m", precision=precision, layers=layers, embed=layers[0] == 0,
                        head=layers[1] == 30)
    loaded = _status()
    held = sum(t.numel() * t.element_size() for t in (*lm.model.parameters(), *lm.model.buffers())
               if t.device.type != "meta")
    rec = {"precision": precision, "part": part, "weights_MiB": held / 2**20, "before_load": before,
           "after_load": loaded}
    if layers is None:
        from splitrl.eval import PerplexityConfig, PerplexityEvaluator

        rec["ppl"] = {}
        for n in tokens:
            ev = PerplexityEvaluator(lm, PerplexityConfig(tokens=n, window=n, stride=n))
            rec["ppl"][str(n)] = ev.evaluate(30).ppl
        rt = SplitRuntime(lm)
        rt.generate("Edge computing lets a phone", 15, max_new_tokens=32, stop_at_eos=False)
    else:
        # Run the part once (32 tokens) so every weight it holds is resident: an fp32 part is
        # memory-mapped and would otherwise look smaller than it is.
        view = lm.view
        with torch.inference_mode():
            pos = torch.arange(32).unsqueeze(0)
            if layers[0] == 0:
                view.run_layers(view.embed(torch.arange(100, 132).unsqueeze(0), pos), *layers, pos)
            else:
                view.head(view.run_layers(torch.randn(1, 32, view.hidden_size), *layers, pos))
    rec["after_generate"] = _status()
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="result JSON (default: runs/precision_smollm2.json)")
    ap.add_argument("--tokens", default="256,1024", help="perplexity token counts (one window each)")
    ap.add_argument("--child", nargs=2, metavar=("PRECISION", "PART"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    tokens = [int(x) for x in args.tokens.split(",")]
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], tokens)))
        return
    from tqdm import tqdm

    from splitrl.provenance import run_record
    from splitrl.quant import PRECISIONS

    jobs = [(p, part) for p in PRECISIONS for part in PARTS]
    records = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for p, part in tqdm(jobs, desc="precision x part", unit="proc"):
        cp = subprocess.run([sys.executable, __file__, "--tokens", args.tokens, "--child", p, part], env=env,
                            capture_output=True, text=True, timeout=1800, check=False)
        if cp.returncode != 0:
            raise SystemExit(f"child {p} {part} failed:\n{cp.stderr[-2000:]}")
        records.append(json.loads(cp.stdout.strip().splitlines()[-1]))
    fp32 = next(r for r in records if r["precision"] == "fp32" and r["part"] == "whole")
    summary = {}
    for r in records:
        s = summary.setdefault(r["precision"], {})
        s[f"{r['part']}_weights_MiB"] = round(r["weights_MiB"], 2)
        s[f"{r['part']}_peak_MiB"] = round(r["after_generate"]["VmHWM_MiB"], 1)
        s[f"{r['part']}_rss_after_generate_MiB"] = round(r["after_generate"]["VmRSS_MiB"], 1)
        if "ppl" in r:
            for n, v in r["ppl"].items():
                s[f"ppl_{n}"] = round(v, 4)
                s[f"ppl_{n}_vs_fp32"] = round(v / fp32["ppl"][n], 4)
    result = {**run_record(threads=1), "model": "smollm2-135m", "tokens": tokens, "summary": summary,
              "records": records,
              "notes": "peak = VmHWM of the child itself; it includes the interpreter + torch + transformers "
                       "(before_load) and the transient of quantising while loading"}
    out = Path(args.out) if args.out else ROOT / "runs" / "precision_smollm2.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
