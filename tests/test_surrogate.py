"""Quality surrogates: contract, uncertainty, online update, safe persistence, acquisition, SurrogateEnv."""
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from splitrl.envs.split_point import SplitPointConfig
from splitrl.surrogate import (
    SURROGATE_KINDS,
    FeatureSpec,
    GaussianProcessSurrogate,
    Surrogate,
    SurrogateLoadError,
    load_surrogate,
    make_surrogate,
    propose,
    run_acquisition,
)

L = 6
TRANSPORTS = ["awgn", "int8-biterr"]
# Small, fast hyperparameters: the tests check behaviour, not accuracy.
FAST = {"extratrees": {"n_estimators": 40}, "gbr": {"members": 5, "n_estimators": 150, "learning_rate": 0.1},
        "gp": {"n_restarts_optimizer": 0}, "mlp": {"members": 4, "hidden": [16], "max_iter": 300}}
KINDS = list(SURROGATE_KINDS)


def _spec(**kw):
    stats = {"log10_rms": [0.1 * i for i in range(L + 1)], "token_crest": [1.0 + 0.05 * (i % 3) for i in range(L + 1)]}
    return FeatureSpec(num_layers=L, transports=TRANSPORTS, cut_stats=stats, ppl_clean={"awgn": 20.0, "int8-biterr": 20.0},
                       **kw)


def _truth(t, s, q):
    return 3.0 * np.exp(-np.asarray(q, float) / 8.0) * (1 + 0.2 * np.asarray(s, float)) * np.where(np.asarray(t) == "awgn", 1.0, 1.5)


def _data(snrs=(0, 5, 10, 15, 20, 25, 30), splits=range(1, L), transports=TRANSPORTS):
    cells = [(t, s, float(q)) for t in transports for s in splits for q in snrs]
    t, s, q = zip(*cells)
    return cells, _truth(t, s, q)


def _fit(kind, cells=None, y=None, seed=0, spec=None):
    if cells is None:
        cells, y = _data()
    return make_surrogate(kind, spec or _spec(), seed=seed, **FAST[kind]).fit(cells, y)


# --- contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_predictions(kind, tmp_path):
    sur = _fit(kind)
    query, _ = _data(snrs=(2.5, 7.0, 18.0, 33.0), splits=range(0, L + 1))
    mean, std = sur.predict_with_uncertainty(query)
    js = sur.save(tmp_path / "m")
    meta = json.loads(js.read_text())
    assert meta["kind"] == kind and meta["fit_sizes"] == [sur.n_train] and len(meta["y_train"]) == sur.n_train
    assert {"sklearn", "numpy"} <= meta["versions"].keys() and meta["scaler"]["mean"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # one JSON file, nothing pickled
    for loader in (lambda: Surrogate.load(tmp_path / "m"), lambda: type(sur).load(tmp_path / "m.json"),
                   lambda: load_surrogate(js, expected_spec=_spec())):
        back = loader()
        m2, s2 = back.predict_with_uncertainty(query)
        assert type(back) is type(sur) and np.array_equal(mean, m2) and np.array_equal(std, s2)
        assert back.n_train == sur.n_train and back.spec.to_dict() == sur.spec.to_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_model_and_structural_zero_at_full_split(kind):
    a, b = _fit(kind, seed=3), _fit(kind, seed=3)
    q = [("awgn", s, 12.0) for s in range(L + 1)] + [("int8-biterr", L, 0.0)]
    ma, sa = a.predict_with_uncertainty(q)
    mb, sb = b.predict_with_uncertainty(q)
    assert np.array_equal(ma, mb) and np.array_equal(sa, sb)
    assert ma[L] == 0.0 and sa[L] == 0.0 and ma[-1] == 0.0  # nothing crosses the link at s = L
    assert np.all(sa >= 0)


@pytest.mark.parametrize("kind", KINDS)
def test_uncertainty_is_larger_away_from_the_data(kind):
    # Dense data at 0..10 dB, two lone points at 30 dB: the gap 16-24 dB is far from the data.
    dense = [("awgn", s, float(q)) for s in range(1, L) for q in range(0, 11)]
    lone = [("awgn", 2, 30.0), ("awgn", 4, 30.0)]
    cells = dense + lone
    y = _truth(*zip(*cells))
    sur = _fit(kind, cells, y)
    _, near = sur.predict_with_uncertainty(dense)
    _, far = sur.predict_with_uncertainty([("awgn", s, float(q)) for s in range(1, L) for q in (16, 18, 20, 22, 24)])
    # A bootstrap ensemble of boosted trees is the weakest here: every member puts its threshold
    # at the gap's midpoint, so only the draws that miss the lone points disagree.
    assert far.mean() > (1.2 if kind == "gbr" else 2.0) * near.mean()


@pytest.mark.parametrize("kind", KINDS)
def test_update_appends_data_and_changes_predictions(kind):
    low, ylow = _data(snrs=(0, 5, 10))
    high, yhigh = _data(snrs=(20, 25, 30))
    sur = _fit(kind, low, ylow)
    q = [("awgn", 3, 25.0), ("int8-biterr", 2, 30.0)]
    before = sur.predict(q)
    assert sur.update(high, yhigh) is sur
    after = sur.predict(q)
    assert sur.n_train == len(low) + len(high) and sur.n_updates == 1
    assert not np.allclose(before, after)
    assert np.abs(after - _truth(*zip(*q))).mean() < np.abs(before - _truth(*zip(*q))).mean()
    fresh = make_surrogate(kind, _spec(), **FAST[kind]).update(low, ylow)  # update on an unfitted model fits it
    assert fresh.is_fitted and fresh.n_train == len(low)


def test_encoded_matrix_and_cells_are_interchangeable_and_inputs_are_checked():
    sur = _fit("extratrees")
    cells, _ = _data(snrs=(3.0,))
    assert np.array_equal(sur.predict(cells), sur.predict(sur.spec.encode(cells)))
    with pytest.raises(ValueError, match="unknown to this surrogate"):
        sur.predict([("fp16", 2, 10.0)])
    with pytest.raises(ValueError, match="splits must be in 0..6"):
        sur.predict([("awgn", 7, 10.0)])
    with pytest.raises(ValueError, match="columns"):
        sur.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="rows"):
        make_surrogate("gp", _spec()).fit(cells, [0.0])
    with pytest.raises(RuntimeError, match="not fitted"):
        make_surrogate("gbr", _spec()).predict(cells)
    with pytest.raises(ValueError, match="unknown surrogate kind"):
        make_surrogate("xgboost", _spec())
    with pytest.raises(ValueError, match="unknown parameters"):
        make_surrogate("gp", _spec(), n_trees=3)


def test_feature_spec_json_round_trip_and_features():
    spec = _spec()
    back = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.fingerprint() == spec.fingerprint()
    names = spec.feature_names
    assert names[:4] == ["split", "snr_db", "layers_remaining", "token_ids_cross"]
    assert "transport=awgn" in names and "log10_channel_error" in names and "cut:log10_rms" in names
    X = spec.encode([("awgn", 0, 10.0), ("int8-biterr", 3, 50.0), ("int8-biterr", 3, 10.0)])
    row = dict(zip(names, X[1]))
    assert row["snr_db"] == 30.0  # clipped to snr_range
    assert row["layers_remaining"] == 3 and row["transport=int8-biterr"] == 1 and X[0, 3] == 1
    assert dict(zip(names, X[2]))["log10_channel_error"] == pytest.approx(np.log10(7.827e-4), abs=1e-3)  # QPSK BER
    assert dict(zip(names, X[0]))["log10_channel_error"] == -1.0  # analog: noise-to-signal power
    assert row["cut:log10_rms"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="one per cut"):
        FeatureSpec(num_layers=L, transports=TRANSPORTS, cut_stats={"x": [1.0, 2.0]})


# --- persistence errors ------------------------------------------------------------------
@pytest.fixture()
def saved(tmp_path):
    sur = _fit("extratrees")
    js = sur.save(tmp_path / "sur")
    return sur, js


def test_updates_are_replayed_on_load(tmp_path):
    """A GP warm-starts each update from the previous kernel: loading replays fit + updates."""
    X, y = _data(snrs=(0.0, 10.0, 20.0))
    sur = make_surrogate("gp", _spec(), seed=1, **FAST["gp"]).fit(X[:10], y[:10])
    sur.update(X[10:20], y[10:20]).update(X[20:], y[20:])
    js = sur.save(tmp_path / "g")
    assert json.loads(js.read_text())["fit_sizes"] == [10, 20, len(y)]
    back = Surrogate.load(js)
    q, _ = _data(snrs=(5.0, 25.0))
    assert np.array_equal(sur.predict_with_uncertainty(q)[0], back.predict_with_uncertainty(q)[0])
    assert back.n_updates == 2


def test_edited_data_is_refitted_and_flagged(saved):
    """The file holds data, not a model: an edited target changes the refit, and the check warns."""
    _, js = saved
    meta = json.loads(js.read_text())
    meta["y_train"][0] += 5.0
    js.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="predicts differently"):
        Surrogate.load(js)


def test_unreadable_malformed_or_old_files_give_clear_errors(saved, tmp_path):
    _, js = saved
    good = json.loads(js.read_text())
    with pytest.raises(SurrogateLoadError, match="no surrogate file"):
        Surrogate.load(tmp_path / "nothing")
    for bad, match in [({**good, "X_train": [[1.0]]}, "training data must be"),
                       ({**good, "y_train": good["y_train"][:-1]}, "training data must be"),
                       ({**good, "fit_sizes": [1]}, "training data must be"),
                       ({**good, "y_train": "abc"}, "malformed training data"),
                       ({**good, "params": {"n_estimators": "x"}}, "bad parameters|refitting failed"),
                       ({**good, "format": "splitrl-surrogate/1"}, "older pickle-based surrogate")]:
        js.write_text(json.dumps(bad))
        with pytest.raises(SurrogateLoadError, match=match):
            Surrogate.load(js)
    js.write_text("{not json")
    with pytest.raises(SurrogateLoadError, match=r"is corrupt: JSONDecodeError"):
        Surrogate.load(js)
    js.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SurrogateLoadError, match="not a splitrl-surrogate"):
        Surrogate.load(js)


def test_wrong_feature_spec_or_kind_is_refused(saved):
    _, js = saved
    other = FeatureSpec(num_layers=L, transports=["awgn"])
    with pytest.raises(SurrogateLoadError, match=r"feature spec differs.*cut_stats.*transports"):
        Surrogate.load(js, expected_spec=other)
    with pytest.raises(SurrogateLoadError, match="holds a 'extratrees' surrogate, not 'gp'"):
        GaussianProcessSurrogate.load(js)
    # Provenance fields (ppl_clean, cut_stats_source) do not make a spec different.
    same = FeatureSpec.from_dict({**_spec().to_dict(), "ppl_clean": {}, "cut_stats_source": {"x": 1}})
    assert Surrogate.load(js, expected_spec=same).is_fitted


def test_sklearn_version_drift_is_checked_by_predictions(saved):
    """Another writer version is fine when the refit predicts what was saved; when it does not,
    the warning names both versions."""
    _, js = saved
    meta = json.loads(js.read_text())
    meta["versions"]["sklearn"] = "0.1.0"
    js.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Surrogate.load(js)
    meta["check"]["mean"][0] += 1.0
    js.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="scikit-learn 0.1.0"):
        Surrogate.load(js)


# --- acquisition ----------------------------------------------------------------------------
class _Fixed(Surrogate):
    """A surrogate with hand-set mean/std per split (for testing the acquisition rule)."""

    kind = "extratrees"  # never saved
    MEAN = {1: 0.1, 2: 0.15, 3: 5.0, 4: 0.12, 5: 8.0, 6: 0.0}
    STD = {1: 0.05, 2: 0.2, 3: 0.5, 4: 0.01, 5: 0.1, 6: 0.0}

    def _fit(self, Z, y, *, warm):
        return "fixed"

    def predict_with_uncertainty(self, X):
        s = np.rint(self.features(X)[:, 0]).astype(int)
        return np.array([self.MEAN[int(i)] for i in s]), np.array([self.STD[int(i)] for i in s])

    def _predict(self, Z):  # pragma: no cover
        raise NotImplementedError


def _fixed():
    sur = _Fixed(_spec())
    sur._state = "fixed"
    return sur


def _zero_costs(transport, snr):
    return np.array([0, 0, 0, 0, 0, 0, -3.0])  # s = L is expensive, so its zero loss does not win


def test_propose_prefers_uncertain_relevant_cells_over_obviously_bad_ones():
    cands = [("awgn", s, 10.0) for s in range(1, 6)]
    idx, relevant, score = propose(_fixed(), cands, _zero_costs, 5, return_scores=True)
    assert relevant.tolist() == [True, True, False, True, False]  # splits 3 and 5 cannot beat split 1
    assert score[2] > score[1]  # split 3 is the most uncertain, yet not chosen first
    assert [cands[i][1] for i in idx] == [2, 1, 4, 3, 5]
    assert [cands[i][1] for i in propose(_fixed(), cands, _zero_costs, 1)] == [2]


def test_propose_within_budget_no_duplicates_and_seeded_tie_breaks():
    sur = _fit("extratrees")
    cands, _ = _data(snrs=(2.0, 12.0, 22.0))
    for k in (0, 1, 7, len(cands), len(cands) + 5):
        idx = propose(sur, cands, _zero_costs, k)
        assert len(idx) == min(k, len(cands)) and len(set(idx.tolist())) == len(idx)
        assert all(0 <= i < len(cands) for i in idx)
    ties = [("awgn", 6, q) for q in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)]  # all std 0 at s = L
    a = propose(sur, ties, _zero_costs, 6, allowed_splits=range(1, 7), seed=11)
    assert np.array_equal(a, propose(sur, ties, _zero_costs, 6, allowed_splits=range(1, 7), seed=11))
    orders = {tuple(propose(sur, ties, _zero_costs, 6, allowed_splits=range(1, 7), seed=s)) for s in range(6)}
    assert len(orders) > 1
    with pytest.raises(ValueError, match="k must be"):
        propose(sur, cands, _zero_costs, -1)


@pytest.mark.parametrize("strategy", ["active", "random"])
def test_run_acquisition_stays_within_budget_without_duplicates(strategy):
    pool, _ = _data()
    calls = []

    def oracle(t, s, q):
        calls.append((t, s, q))
        return float(_truth([t], [s], [q])[0])

    res = run_acquisition(oracle, 23, strategy, candidates=pool, costs_fn=_zero_costs, initial=8, batch=5, seed=4,
                          surrogate_factory=lambda: make_surrogate("extratrees", _spec(), **FAST["extratrees"]),
                          eval_fn=lambda sur: {"n_train": sur.n_train}, eval_at=[8, 18, 23])
    assert res.real_evaluations == 23 == len(calls) and len(set(res.cells)) == 23 and set(res.cells) <= set(pool)
    assert [p["n"] for p in res.curve] == [8, 18, 23] and res.curve[-1]["n_train"] == 23
    assert res.surrogate.n_train == 23
    again = run_acquisition(lambda t, s, q: float(_truth([t], [s], [q])[0]), 23, strategy, candidates=pool,
                            costs_fn=_zero_costs, initial=8, batch=5, seed=4,
                            surrogate_factory=lambda: make_surrogate("extratrees", _spec(), **FAST["extratrees"]))
    assert again.cells == res.cells  # deterministic given the seed and the measured values
    with pytest.raises(ValueError, match="strategy"):
        run_acquisition(oracle, 10, "grid", candidates=pool, surrogate_factory=lambda: None)
    with pytest.raises(ValueError, match="costs_fn"):
        run_acquisition(oracle, 10, "active", candidates=pool, surrogate_factory=lambda: None)


def test_active_acquisition_spends_evaluations_where_the_decision_is_open():
    # At 0-4 dB every cut is ruinous next to the all-on-UE split; once the surrogate has seen that
    # (after the first batches), active sampling should spend less there than random sampling.
    pool, _ = _data(snrs=(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20))
    costs = lambda t, q: -0.05 * np.arange(L + 1) - np.r_[np.zeros(L), 1.0]  # noqa: E731

    def counts(strategy):
        res = run_acquisition(lambda t, s, q: float(_truth([t], [s], [q])[0]), 60, strategy, candidates=pool,
                              costs_fn=costs, initial=20, batch=10, seed=0,
                              surrogate_factory=lambda: make_surrogate("extratrees", _spec(), **FAST["extratrees"]))
        return sum(1 for _, _, q in res.cells[40:] if q <= 4)

    assert counts("active") < counts("random")


# --- SurrogateEnv -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_surrogate():
    cells, y = _data()
    return make_surrogate("extratrees", _spec(), seed=0, **FAST["extratrees"]).fit(cells, y)


# A channel that never falls into outage: below about -6 dB the base env's cost model gives an
# infinite latency (reward -inf), which SB3's check_env reports as a warning whatever the backend.
MARKOV = {"kind": "markov", "bin_edges_db": [0, 10, 20, 30], "state_snr_db": [5, 15, 25],
          "transition": [[0.7, 0.3, 0.0], [0.2, 0.6, 0.2], [0.0, 0.3, 0.7]]}


def _senv(sur, view, **kw):
    from splitrl.surrogate.env import SurrogateEnv

    cfg = SplitPointConfig(model="llama-tiny", **{"channel": MARKOV, **kw})
    return gym.wrappers.TimeLimit(SurrogateEnv(sur, cfg, view=view), max_episode_steps=20)


@pytest.mark.parametrize("kw", [{}, {"action_mode": "relative"}, {"include_ue_state": True, "s_min": 0, "transport": "int8-biterr"}])
def test_surrogate_env_passes_gymnasium_and_sb3_checks_without_warnings(tiny_surrogate, llama_tiny, kw):
    env = _senv(tiny_surrogate, llama_tiny.view, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)


def _rollout(env, seed, n=30):
    obs, _ = env.reset(seed=seed)
    out = [obs.tolist()]
    rng = np.random.default_rng(123)
    for _ in range(n):
        obs, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        out.append((obs.tolist(), r, term, trunc, info))
        if term or trunc:
            out.append(env.reset()[0].tolist())
    return out


def test_surrogate_env_is_deterministic_and_never_evaluates(tiny_surrogate, llama_tiny):
    a = _rollout(_senv(tiny_surrogate, llama_tiny.view), 5)
    b = _rollout(_senv(tiny_surrogate, llama_tiny.view), 5)
    c = _rollout(_senv(tiny_surrogate, llama_tiny.view), 6)
    assert a == b and a != c
    env = _senv(tiny_surrogate, llama_tiny.view).unwrapped
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.action_for_split(3))
    mean = tiny_surrogate.predict([("awgn", 3, float(np.clip(info["snr_db"], 0, 30)))])[0]
    assert info["log_ppl_ratio"] == pytest.approx(mean) and info["ppl"] == pytest.approx(20.0 * np.exp(mean))
    assert info["real_evaluations"] == 0 and env.real_evaluations == 0
    _, _, _, _, info = env.step(env.action_for_split(L))
    assert info["log_ppl_ratio"] == 0.0 and info["bytes_on_air"] == 0


def test_surrogate_env_rejects_mismatches(tiny_surrogate, llama_tiny):
    from splitrl.surrogate.env import SurrogateEnv

    with pytest.raises(ValueError, match="transports"):
        SurrogateEnv(tiny_surrogate, SplitPointConfig(model="llama-tiny", transport="fp16"), view=llama_tiny.view)
    with pytest.raises(ValueError, match="fitted"):
        SurrogateEnv(make_surrogate("gp", _spec()), SplitPointConfig(model="llama-tiny"), view=llama_tiny.view)
    no_clean = make_surrogate("extratrees", FeatureSpec(num_layers=L, transports=TRANSPORTS), **FAST["extratrees"])
    no_clean.fit(*_data())
    with pytest.raises(ValueError, match="ppl_clean"):
        SurrogateEnv(no_clean, SplitPointConfig(model="llama-tiny"), view=llama_tiny.view)
    assert SurrogateEnv(no_clean, SplitPointConfig(model="llama-tiny"), view=llama_tiny.view, ppl_clean=7.0).ppl_clean == 7.0
