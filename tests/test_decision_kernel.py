"""The compiled known-cost reward (`splitrl.decision.kernel_numba`) equals its numpy reference
(`splitrl.decision.kernel`) bit for bit on random packed inputs."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from splitrl.decision.kernel import base_rewards
from splitrl.decision.kernel_numba import base_rewards_into


@st.composite
def packed_inputs(draw):
    L = draw(st.integers(1, 8))
    chunks = draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    static = rng.uniform(0.0, 0.5, (7 + 4 * chunks, L + 1))
    static[4] = rng.uniform(0.0, 0.6, L + 1)  # own edge utilisation
    static[5] = rng.uniform(0.0, 1.0, L + 1)  # privacy recovery
    static[6] = (rng.uniform(size=L + 1) < 0.7).astype(float)  # cut inside the model
    link = rng.uniform(0.0, 2.0, (4 + chunks, L + 1))
    if draw(st.booleans()):
        link[0, rng.integers(L + 1)] = np.inf  # a dead link: the request times out
    steps = rng.integers(1, 8, chunks).astype(float)
    N = float(draw(st.integers(1, 64)))
    consts = np.array([rng.uniform(0, 2), rng.uniform(0.1, 3), rng.uniform(0, 2), rng.uniform(0.01, 1),
                       rng.uniform(0, 2), rng.uniform(0.5, 5), rng.uniform(0.01, 1), rng.uniform(0, 2), N, N - 1,
                       max(N - 1, 1), 0.95, draw(st.integers(0, 2)), float(draw(st.booleans())),
                       float(draw(st.booleans())), chunks])
    load = draw(st.none() | st.floats(0.0, 1.0))
    edge = draw(st.none() | st.floats(0.0, 0.99))
    battery = draw(st.none() | st.floats(0.0, 1.0))
    return static, steps, consts, link, load, edge, battery


@settings(max_examples=200, deadline=None)
@given(packed_inputs())
def test_compiled_base_rewards_equal_the_numpy_reference(inputs):
    static, steps, consts, link, load, edge, battery = inputs
    out = np.empty(static.shape[1])
    base_rewards_into(out, static, steps, consts, link, 0.0 if load is None else load, load is not None,
                      0.0 if edge is None else edge, edge is not None, 1.0 if battery is None else battery,
                      battery is not None)
    ref = base_rewards(static, steps, consts, link, load=load, edge_load=edge, battery=battery)
    assert ref.shape == out.shape
    np.testing.assert_array_equal(out, ref)
