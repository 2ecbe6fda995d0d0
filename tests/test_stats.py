"""splitrl.stats: the one interval estimator of every result file."""
import numpy as np
import pytest
from scipy import stats as sps

from splitrl.errors import UsageError
from splitrl.stats import block_bootstrap_ci, t_interval

pytestmark = pytest.mark.timeout(60)


def test_t_interval_matches_scipy():
    x = np.array([1.0, 2.5, 0.5, 4.0, 3.0])
    t = t_interval(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert t["n"] == 5 and t["mean"] == pytest.approx(x.mean())
    assert (t["lo"], t["hi"]) == pytest.approx((lo, hi), rel=1e-12)


def test_t_interval_single_value_is_the_point():
    assert t_interval([2.0]) == {"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": 1}


@pytest.mark.parametrize("bad", [dict(values=[]), dict(values=[1.0, 2.0], level=1.0)])
def test_t_interval_rejects_bad_input(bad):
    with pytest.raises(UsageError):
        t_interval(**bad)


@pytest.mark.parametrize("overlapping", [True, False])
def test_block_bootstrap_is_seeded_and_covers_the_mean(overlapping):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 48)) + 0.3
    data = x if overlapping else x.ravel()
    a = block_bootstrap_ci(data, 8, 400, np.random.default_rng(7), overlapping=overlapping)
    b = block_bootstrap_ci(data, 8, 400, np.random.default_rng(7), overlapping=overlapping)
    assert a == b
    assert a[0] < x.mean() < a[1]
    assert a[1] - a[0] < 1.0  # ~4 standard errors of 288 unit-variance values, not the data's range


def test_block_bootstrap_wider_for_correlated_series():
    """Resampling blocks keeps within-block correlation: a series made of repeated blocks has a
    wider interval with blocks of its correlation length than with blocks of one."""
    rng = np.random.default_rng(1)
    x = np.repeat(rng.normal(size=(4, 12)), 8, axis=1)  # [4, 96], runs of 8 equal values
    narrow = block_bootstrap_ci(x, 1, 400, np.random.default_rng(0), overlapping=True)
    wide = block_bootstrap_ci(x, 8, 400, np.random.default_rng(0), overlapping=True)
    assert wide[1] - wide[0] > 1.5 * (narrow[1] - narrow[0])


@pytest.mark.parametrize("kw", [dict(x=np.zeros(10), block=4, overlapping=False),
                                dict(x=np.zeros((2, 3)), block=4, overlapping=True),
                                dict(x=np.zeros((2, 8)), block=0, overlapping=True)])
def test_block_bootstrap_rejects_bad_shapes(kw):
    with pytest.raises(UsageError):
        block_bootstrap_ci(reps=10, rng=np.random.default_rng(0), **kw)
