"""Privacy per cut: the inversion-probe pipeline end to end on a tiny model, held-out disjointness,
seeded determinism, the CLI's JSON (with provenance) and its usage errors."""
import json

import numpy as np
import pytest
import torch

from splitrl.errors import UsageError
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH, load_wikitext2_test
from splitrl.privacy import (
    ProbeConfig, block_bootstrap_ci, collect_hidden, partition_articles, run_privacy_probe, sample_windows,
    split_articles,
)

needs_corpus = pytest.mark.skipif(not DEFAULT_WIKITEXT_PATH.is_file(), reason="shared WikiText-2 not present")
TINY = dict(model="llama-tiny", train_tokens=1024, heldout_tokens=256, window=32, classes=256, bootstrap=200)


@pytest.fixture(scope="module")
def tiny_result(llama_tiny):
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present")
    return run_privacy_probe(ProbeConfig(**TINY), loaded=llama_tiny, progress=False)


def test_article_partition_is_disjoint_seeded_and_covers_all():
    a_train, a_held = partition_articles(62, 0.3, seed=0)
    assert set(a_train).isdisjoint(a_held) and sorted(a_train + a_held) == list(range(62))
    assert len(a_held) == round(0.3 * 62)
    assert partition_articles(62, 0.3, seed=0) == (a_train, a_held)
    assert partition_articles(62, 0.3, seed=1) != (a_train, a_held)
    with pytest.raises(UsageError, match="corpus"):
        partition_articles(1, 0.3, seed=0)


def test_windows_are_non_overlapping_and_refuse_too_few_tokens():
    ids = torch.arange(1000)
    w = sample_windows(ids, 320, 32, "train_tokens")
    assert w.shape == (10, 32)
    flat = w.reshape(-1)
    assert len(set(flat.tolist())) == flat.numel()  # no token position used twice
    with pytest.raises(UsageError, match="train_tokens"):
        sample_windows(ids, 2048, 32, "train_tokens")


def test_collect_hidden_matches_the_model_at_every_cut(llama_tiny):
    ids = torch.randint(0, llama_tiny.view.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    hs = collect_hidden(llama_tiny.view, ids, batch_windows=2)  # [L+1, 48, H]
    with torch.inference_mode():
        ref = llama_tiny.model(ids, output_hidden_states=True).hidden_states  # L+1 tensors [3, 16, H]
    L = llama_tiny.view.num_layers
    assert hs.shape == (L + 1, 48, llama_tiny.view.hidden_size)
    for c in range(L):  # transformers' last entry has the final norm applied; ours is the raw layer output
        torch.testing.assert_close(hs[c], ref[c].reshape(48, -1), rtol=1e-4, atol=1e-5)


def test_block_bootstrap_interval_brackets_the_mean():
    rng = np.random.default_rng(0)
    correct = rng.random(64 * 20) < 0.7
    lo, hi = block_bootstrap_ci(correct, 64, 500, seed=0)
    assert lo < correct.mean() < hi and hi - lo < 0.2
    assert block_bootstrap_ci(correct, 64, 500, seed=0) == (lo, hi)


@needs_corpus
def test_probe_end_to_end_on_a_tiny_model(tiny_result):
    r = tiny_result
    L = r["num_layers"]
    assert r["splits"] == list(range(L + 1))
    assert r["top1_recovery"][0] == 1.0 and r["top1_recovery"][L] == 0.0  # ids cross / nothing crosses
    # The embeddings output of a llama model is the token's embedding row: the probe must invert it.
    assert r["probes"]["ridge_nn"]["top1"][0] > 0.95
    assert r["train_tokens"] == 1024 and r["heldout_tokens"] == 256
    for s in range(1, L):
        t1, (lo, hi), t5 = r["top1_recovery"][s], r["top1_ci95"][s], r["top5_recovery"][s]
        assert 0 <= lo <= t1 <= hi <= 1 and t1 <= t5 <= 1
        assert t1 == r["probes"][r["chosen_probe"][s]]["top1"][s]
    # A random tiny model's residual stream keeps the input token: far above the frequency baseline.
    assert min(r["top1_recovery"][1:L]) > r["frequent_token_baseline"] + 0.3
    json.dumps(r)  # JSON-ready


@needs_corpus
def test_heldout_text_is_from_articles_the_probe_never_saw(tiny_result, llama_tiny):
    r = tiny_result
    assert set(r["train_article_ids"]).isdisjoint(r["heldout_article_ids"])
    articles = split_articles(load_wikitext2_test())
    assert len(articles) == r["articles"] == 62
    train_text = "\n".join(articles[i] for i in r["train_article_ids"])
    held_text = "\n".join(articles[i] for i in r["heldout_article_ids"])
    from splitrl.privacy.probe import _parts

    train, held, _ = _parts(ProbeConfig(**TINY), llama_tiny.tokenizer)
    for w in held.windows:
        text = llama_tiny.tokenizer.decode(w.tolist())
        assert text in held_text and text not in train_text
    for w in train.windows[:4]:
        assert llama_tiny.tokenizer.decode(w.tolist()) in train_text


@needs_corpus
def test_cli_writes_the_same_result_for_the_same_seed_with_provenance(tiny_result, tmp_path, capsys):
    from splitrl.cli import main

    out = tmp_path / "p.json"
    args = ["privacy-probe", "--model", "llama-tiny", "--train-tokens", "1024", "--heldout-tokens", "256",
            "--window", "32", "--classes", "256", "--bootstrap", "200", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    got = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "privacy-probe" in got["command"] and got["git_revision"]
    for key in ("top1_recovery", "top1_ci95", "top5_recovery", "frequent_token_baseline", "chosen_probe"):
        assert got[key] == tiny_result[key], key  # same seed, same numbers
    assert "most frequent token baseline" in capsys.readouterr().out
    assert main([*args[:-3], "--window", "1", "--out", str(out)]) == 2
    assert "window" in capsys.readouterr().err


def test_config_errors_name_the_field():
    for kw, field in [({"window": 1}, "window"), ({"train_tokens": 10}, "train_tokens"),
                      ({"heldout_fraction": 1.0}, "heldout_fraction"), ({"ridge_grid": (0.0,)}, "ridge_grid"),
                      ({"classes": 1}, "classes"), ({"bootstrap": 5}, "bootstrap")]:
        with pytest.raises(UsageError, match=field):
            ProbeConfig(**kw)
