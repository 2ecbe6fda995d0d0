"""SplitPointTable-v0 and SplitPoint-v0 describe the same MDP: a sweep built with the real env's
tokens/window reports the same clean perplexity and, at the same (split, SNR) states, the same
quality up to the noise of the draws; the committed SmolLM2 table is built that way."""
import json

import numpy as np
import pytest

from splitrl.envs.split_point import DEFAULT_TABLE, SplitPointConfig, SplitPointEnv, SplitPointTableEnv
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH
from splitrl.sweep import SweepConfig, run_sweep

LEVELS = [-10.0, 10.0, 30.0]
SEEDS = 4


@pytest.fixture(scope="module")
def both_envs(tmp_path_factory, llama_tiny):
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    cfg = SplitPointConfig(model="llama-tiny", eval_tokens=64, eval_window=64, transport="awgn")
    path = tmp_path_factory.mktemp("sweep") / "tiny.csv"
    run_sweep(SweepConfig(model="llama-tiny", splits=list(range(llama_tiny.view.num_layers + 1)), levels=LEVELS,
                          transports=["awgn"], seeds=SEEDS, tokens=cfg.eval_tokens, window=cfg.eval_window,
                          stride=cfg.eval_window, modulation=cfg.modulation),
              path, progress=False, loaded=llama_tiny)
    real = SplitPointEnv(cfg, loaded=llama_tiny)
    table = SplitPointTableEnv(SplitPointConfig(**{**cfg.to_dict(), "table": str(path)}), view=llama_tiny.view)
    return real, table


def test_same_clean_perplexity_and_costs(both_envs):
    real, table = both_envs
    assert real.ppl_clean == pytest.approx(table.ppl_clean, rel=1e-9)
    for snr in LEVELS:
        np.testing.assert_allclose(real.base_rewards(snr), table.base_rewards(snr))


def test_quality_agrees_at_the_same_states(both_envs):
    real, table = both_envs
    real.reset(seed=0)
    L = real.L
    for s in range(L + 1):
        for li, snr in enumerate(LEVELS):
            r = np.array([real.quality(s, snr)[1] for _ in range(SEEDS)])  # fresh noise per real evaluation
            t = table.table.log_ratio[s, li]  # the sweep's measured draws [SEEDS]
            assert table.table.lookup(s, snr) == pytest.approx(t.mean())
            if s == L:  # nothing crosses: both exactly clean
                assert np.all(r == 0) and np.all(t == 0)
                continue
            se = np.sqrt(r.var(ddof=1) / len(r) + t.var(ddof=1) / len(t))
            assert abs(r.mean() - t.mean()) <= 4 * se + 0.02, (s, snr, r.mean(), t.mean(), se)


def test_committed_table_matches_the_real_env_setup():
    meta = json.loads(DEFAULT_TABLE.with_suffix(".csv.meta.json").read_text())
    cfg = SplitPointConfig()
    assert (meta["tokens"], meta["window"], meta["stride"]) == (cfg.eval_tokens, cfg.eval_window, cfg.eval_window)
    assert meta["model"] == cfg.model and meta["modulation"] == cfg.modulation and meta["level_kind"] == "snr"
    assert meta["runs"] and all(r["command"] and r["git_revision"] for r in meta["runs"])
    import pandas as pd

    df = pd.read_csv(DEFAULT_TABLE)
    # The default channel goes below 0 dB (~7% of slots, ~1% below -10 dB): the table covers it.
    assert df.level.min() <= -10 and df.level.max() >= 30
    assert {"awgn", "int4-biterr", "int8-biterr", "fp16-biterr"} <= set(df.transport)
    assert df.seed_index.nunique() >= 2 and df.split.nunique() == 31


def _reproduce_cells(real, table_path, cells):
    """The real env's evaluator and link builder, given a table row's recorded noise seed,
    give that row's perplexity exactly: a table cell is one real evaluation of that state."""
    import pandas as pd

    from splitrl.link import link_at

    df = pd.read_csv(table_path)
    for s, snr in cells:
        row = df[(df.transport == real.config.transport) & (df.split == s) & (df.level == snr)].iloc[0]
        link = link_at(real.config.transport, seed=int(row.seed), snr_db=snr, modulation=real.config.modulation,
                       vocab_size=real.loaded.view.vocab_size)
        assert real.evaluator.evaluate(s, link).ppl == pytest.approx(float(row.ppl), rel=1e-9), (s, snr)


def test_env_evaluation_reproduces_table_cells_exactly(both_envs):
    real, table = both_envs
    _reproduce_cells(real, table.table.path, [(1, -10.0), (3, 10.0), (5, 30.0)])


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")
def test_smollm2_real_env_reproduces_the_committed_table(smollm2):
    table = SplitPointTableEnv(SplitPointConfig(), view=smollm2.view)
    real = SplitPointEnv(SplitPointConfig(), loaded=smollm2)
    assert real.ppl_clean == pytest.approx(table.ppl_clean, rel=1e-9)
    _reproduce_cells(real, DEFAULT_TABLE, [(5, 10.0), (15, -5.0), (29, 20.0)])
