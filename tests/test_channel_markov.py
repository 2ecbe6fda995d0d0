"""Finite-state Markov channel: validation, stationary law, and fitting from a trace."""
from __future__ import annotations

import numpy as np
import pytest

from splitrl.channel.markov import (
    MarkovChannel,
    MarkovChannelConfig,
    fit_from_trace,
    quantize,
    stationary_distribution,
    transition_counts,
)

EDGES = (-5.0, 5.0, 15.0, 25.0)
P = (
    (0.80, 0.15, 0.05),
    (0.10, 0.70, 0.20),
    (0.05, 0.25, 0.70),
)


def _chain(seed=0, **kw):
    cfg = MarkovChannelConfig(bin_edges_db=kw.pop("edges", EDGES), transition=kw.pop("p", P), **kw)
    return MarkovChannel(cfg, np.random.default_rng(seed))


def test_stationary_distribution_two_state_closed_form():
    a, b = 0.1, 0.3  # P = [[1-a, a], [b, 1-b]] -> pi = (b, a) / (a + b)
    pi = stationary_distribution([[1 - a, a], [b, 1 - b]])
    np.testing.assert_allclose(pi, [b / (a + b), a / (a + b)], atol=1e-12)


def test_stationary_distribution_is_invariant():
    pi = stationary_distribution(P)
    assert pi.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(pi @ np.asarray(P), pi, atol=1e-12)
    assert np.all(pi > 0)


# A 100k-slot chain visits each state >= 25k times, so each estimated transition probability has
# sd <= sqrt(0.25 / 25k) = 0.0032; 0.016 is 5 sigma.
N = 100_000


def test_fit_recovers_known_matrix_and_stationary_law():
    ch = _chain(seed=3)
    x = ch.sample(N)
    np.testing.assert_array_equal(np.unique(x), ch.config.state_values_db)  # midpoints 0, 10, 20
    fit = fit_from_trace(x, EDGES, smoothing=0.0)
    np.testing.assert_allclose(fit.transition_matrix, np.asarray(P), atol=0.016)
    np.testing.assert_allclose(fit.state_snr_db, (0.0, 10.0, 20.0))
    occupancy = np.bincount(quantize(x, EDGES), minlength=3) / N
    # occupancy of a positively correlated chain converges slower; 0.015 is still > 4 sigma here
    np.testing.assert_allclose(occupancy, ch.stationary, atol=0.015)


def test_fit_smoothing_exact_counts_and_in_bin_means():
    x = [1.0, 2.0, 12.0, 3.0]  # states 0, 0, 1, 0 with edges (0, 10, 20)
    np.testing.assert_array_equal(transition_counts(quantize(x, (0, 10, 20)), 2), [[1, 1], [1, 0]])
    fit = fit_from_trace(x, (0.0, 10.0, 20.0), smoothing=1.0)
    np.testing.assert_allclose(fit.transition_matrix, [[2 / 4, 2 / 4], [2 / 3, 1 / 3]])
    np.testing.assert_allclose(fit.state_snr_db, (2.0, 12.0))
    ml = fit_from_trace(x, (0.0, 10.0, 20.0), smoothing=0.0)
    np.testing.assert_allclose(ml.transition_matrix, [[0.5, 0.5], [1.0, 0.0]])


def test_fit_empty_state_gets_uniform_row_and_midpoint():
    fit = fit_from_trace([1.0, 2.0, 1.5], (0.0, 10.0, 20.0, 30.0), smoothing=0.0)
    np.testing.assert_allclose(fit.transition_matrix[1], [1 / 3] * 3)
    np.testing.assert_allclose(fit.transition_matrix[0], [1.0, 0.0, 0.0])
    assert fit.state_snr_db[1:] == (15.0, 25.0)


def test_out_of_range_values_fall_in_outer_bins():
    np.testing.assert_array_equal(quantize([-100, -5, 4.99, 5, 24.9, 25, 100], EDGES), [0, 0, 0, 1, 2, 2, 2])


def test_fixed_initial_state_and_custom_state_values():
    ch = _chain(initial_state=2, state_snr_db=(-1.0, 7.0, 30.0))
    assert ch.step().snr_db == 30.0
    assert ch.state in (0, 1, 2)
    x = ch.sample(1000)
    assert set(np.unique(x)) <= {-1.0, 7.0, 30.0}


def test_zero_probability_transitions_never_happen():
    p = ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))  # deterministic cycle 0 -> 1 -> 2 -> 0
    ch = _chain(p=p, initial_state=0)
    s = ch.sample_states(30)
    np.testing.assert_array_equal(s, np.arange(30) % 3)


def test_determinism_and_step_sample_equivalence():
    a = _chain(seed=1).sample(300)
    np.testing.assert_array_equal(a, _chain(seed=1).sample(300))
    assert not np.array_equal(a, _chain(seed=2).sample(300))
    ch = _chain(seed=1)
    stepped = [ch.step().snr_db for _ in range(100)] + list(ch.sample(200))
    np.testing.assert_array_equal(stepped, a)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"p": ((0.5, 0.5, 0.0), (0.3, 0.3, 0.3), (0.0, 0.0, 1.0))}, r"transition\[1\].*sums to 0\.9"),
        ({"p": ((1.2, -0.2, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))}, r"transition = .*entries in \[0, 1\]"),
        ({"p": ((1.0, 0.0), (0.0, 1.0))}, r"transition = .*3x3"),
        ({"edges": (0.0, 10.0, 10.0, 20.0)}, r"bin_edges_db = .*strictly increasing"),
        ({"edges": (0.0,)}, r"bin_edges_db"),
        ({"state_snr_db": (1.0, 2.0)}, r"state_snr_db"),
        ({"initial_state": 3}, r"initial_state = 3"),
    ],
)
def test_validation_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _chain(**kw)


def test_fit_argument_errors():
    with pytest.raises(ValueError, match="NaN"):
        fit_from_trace([1.0, float("nan"), 2.0], EDGES)
    with pytest.raises(ValueError, match="smoothing"):
        fit_from_trace([1.0, 2.0], EDGES, smoothing=-1.0)
    with pytest.raises(ValueError, match="bin_edges"):
        fit_from_trace([1.0, 2.0], (3.0, 1.0))
