"""``surrogate_report`` and its CLI handler on a tiny sweep (llama-tiny, seconds)."""
import argparse
import json

import numpy as np
import pytest

from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.surrogate import FeatureSpec, Surrogate, cut_statistics
from splitrl.sweep import SweepConfig, run_sweep

SMALL = {"extratrees": {"n_estimators": 20}, "gbr": {"members": 2, "n_estimators": 20},
         "gp": {"n_restarts_optimizer": 0}, "mlp": {"members": 2, "hidden": [8], "max_iter": 50}}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, llama_tiny):
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    path = tmp_path_factory.mktemp("sweep") / "tiny.csv"
    cfg = SweepConfig(model="llama-tiny", splits=list(range(7)), levels=[0, 10, 20, 30],
                      transports=["awgn", "int8-biterr"], seeds=2, tokens=64, window=64, stride=64)
    run_sweep(cfg, path, progress=False, loaded=llama_tiny)
    return path


def test_cut_statistics_cover_every_cut_and_fit_a_spec(llama_tiny):
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    st = cut_statistics(llama_tiny, tokens=64)
    assert set(st["stats"]) and all(len(v) == 7 and np.isfinite(v).all() for v in st["stats"].values())
    assert st["source"]["tokens"] == 64
    spec = FeatureSpec(num_layers=6, transports=["awgn"], cut_stats=st["stats"])
    assert spec.encode([("awgn", 3, 10.0)]).shape == (1, spec.n_features)


def test_report_on_a_tiny_sweep_has_every_key_and_writes_its_files(tiny_sweep, llama_tiny, tmp_path):
    from splitrl.surrogate.report import surrogate_report

    out = tmp_path / "rep.json"
    rep = surrogate_report(tiny_sweep, model="llama-tiny", loaded=llama_tiny, budget=14, initial=6, batch=4,
                           seeds=(0, 1), eval_every=4, stats_tokens=64, real_repeats=1, query_repeats=2,
                           kind_params=SMALL, out_json=out, out_png=tmp_path / "rep.png", out_md=tmp_path / "rep.md")
    for key in ("best_split_agreement", "r2_log_ppl", "real_evaluations", "query_speedup_vs_real", "spearman_per_snr",
                "single_query_speedup_vs_real", "default_kind", "per_model", "baselines", "timings", "protocol",
                "targets", "feature_ablation", "feature_names", "cut_stats", "heldout_best_split_agreement",
                "cost_only_agreement", "per_snr", "single_query_latency_s", "command", "git_revision"):
        assert key in rep, key
    h = rep["heldout_snr"]
    assert 0.0 <= rep["heldout_best_split_agreement"] <= 1.0 and 0.0 <= rep["cost_only_agreement"] <= 1.0
    assert h["levels_db"] and not set(h["levels_db"]) & {min(rep["protocol"]["levels_db"]), max(rep["protocol"]["levels_db"])}
    assert all(min(abs(np.array(h["levels_db"]) - x)) < min(abs(np.array(rep["protocol"]["levels_db"]) - x)) + 1e-9
               for x in h["decision_snrs_db"])  # every decision is nearest to a held-out level
    assert set(h["per_snr"]) == {f"{t}@{lv:g}dB" for t in rep["protocol"]["transports"] for lv in h["levels_db"]}
    assert rep["real_evaluations"] == 14 and rep["default_kind"] in rep["per_model"]
    assert set(rep["per_model"]) == {"extratrees", "gbr", "gp", "mlp"}
    for by in rep["per_model"].values():
        assert set(by) == {"active", "random"}
        curve = by["active"]["curve"]
        assert [p["n"] for p in curve] == [6, 10, 14]  # after the initial design, then each batch reaching a mark
        assert curve[-1]["n"] == 14 and 0.0 <= by["active"]["final"]["best_split_agreement"]["mean"] <= 1.0
    assert rep["protocol"]["cells"] == 2 * 5 * 4 and rep["protocol"]["held_out_cells"] == 12
    assert rep["query_speedup_vs_real"] > 0 and rep["timings"]["real_step"]["repeats"] == 1
    assert json.loads(out.read_text())["best_split_agreement"] == rep["best_split_agreement"]
    assert (tmp_path / "rep.png").stat().st_size > 1000 and "| kind | strategy |" in (tmp_path / "rep.md").read_text()


def test_cli_handler_writes_the_report_and_rejects_bad_input(tiny_sweep, tmp_path, capsys, monkeypatch):
    from splitrl.surrogate import report as rp

    from splitrl.cli import surrogate_report as cli

    parser = argparse.ArgumentParser()
    p = parser.add_subparsers(dest="command").add_parser("surrogate-report")
    cli.add_arguments(p)
    p.set_defaults(func=cli.run)
    calls = {}
    real = rp.surrogate_report

    def small(*a, **k):  # keep the handler's wiring, shrink the work
        calls.update(k)
        return real(*a, **{**k, "kind_params": SMALL, "stats_tokens": 64, "real_repeats": 1, "eval_every": 4})

    monkeypatch.setattr(rp, "surrogate_report", small)
    out = tmp_path / "r.json"
    args = parser.parse_args(["surrogate-report", str(tiny_sweep), "--model", "llama-tiny", "--kinds", "extratrees",
                              "--budget", "10", "--initial", "6", "--batch", "4", "--seeds", "0", "--no-ablation",
                              "--out", str(out)])
    assert args.func(args) == 0
    assert out.is_file() and out.with_suffix(".png").is_file() and out.with_suffix(".md").is_file()
    assert calls["kinds"] == ["extratrees"] and calls["seeds"] == [0] and "wrote" in capsys.readouterr().out
    bad = parser.parse_args(["surrogate-report", str(tmp_path / "missing.csv"), "--model", "llama-tiny"])
    assert bad.func(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "no sweep table" in err and len(err.splitlines()) == 1
    bad = parser.parse_args(["surrogate-report", str(tiny_sweep), "--model", "llama-tiny", "--kinds", "svm"])
    assert bad.func(bad) == 2 and "unknown surrogate kinds" in capsys.readouterr().err


def test_a_saved_report_surrogate_drives_the_env(tiny_sweep, llama_tiny, tmp_path):
    """A surrogate fitted on table cells, saved, reloaded against the expected spec, runs SurrogateEnv."""
    import pandas as pd

    from splitrl.envs.split_point import SplitPointConfig
    from splitrl.surrogate import make_surrogate
    from splitrl.surrogate.env import SurrogateEnv

    df = pd.read_csv(tiny_sweep)
    spec = FeatureSpec(num_layers=6, transports=["awgn", "int8-biterr"], snr_range=(0.0, 30.0),
                       ppl_clean={t: float(g.clean_ppl.iloc[0]) for t, g in df.groupby("transport")})
    sur = make_surrogate("extratrees", spec, n_estimators=20).fit(df, df.log_ppl_ratio)
    sur.save(tmp_path / "s")
    back = Surrogate.load(tmp_path / "s.json", expected_spec=spec)
    channel = {"kind": "markov", "bin_edges_db": [0, 20, 40], "transition": [[0.5, 0.5], [0.5, 0.5]]}
    env = SurrogateEnv(back, SplitPointConfig(model="llama-tiny", transport="int8-biterr", channel=channel),
                       view=llama_tiny.view)
    env.reset(seed=0)
    for a in range(env.action_space.n):
        _, r, _, _, info = env.step(a)
        assert np.isfinite(r) and info["real_evaluations"] == 0
        assert info["log_ppl_ratio"] == pytest.approx(back.predict([("int8-biterr", info["split"], info["snr_db"])])[0])
