"""Slow-timescale model assignment: stochastic SCA reaches the convex SAA optimum and brute force."""
from __future__ import annotations

import numpy as np
import pytest

from splitrl.aircomp.assign import AssignmentProblem, DeviceSpec, assign, default_problem
from splitrl.errors import UsageError


def _interior_problem(antennas: int = 1) -> AssignmentProblem:
    # Max power never binds (10 W): the optimum is interior, every unit moved changes the objective.
    devs = (
        DeviceSpec(flops_per_s=4e10, joules_per_flop=2e-10, memory_bytes=6e8, energy_per_token_j=0.024, max_power_w=10, gain_db=-6),
        DeviceSpec(flops_per_s=1.5e10, joules_per_flop=1e-10, memory_bytes=6e8, energy_per_token_j=0.022, max_power_w=10),
        DeviceSpec(flops_per_s=2e10, joules_per_flop=1.5e-10, memory_bytes=6e8, energy_per_token_j=0.022, max_power_w=10, gain_db=-2),
    )
    return AssignmentProblem(devices=devs, units=10, antennas=antennas)


def test_sca_reaches_saa_convex_and_brute_force_single_antenna():
    prob = _interior_problem()
    ch = prob.sample_channels(1500, seed=1)
    saa = assign(prob, "saa_convex", eval_channels=ch)
    sca = assign(prob, "stochastic_sca", eval_channels=ch, seed=3, iterations=300, batch=16)
    bf = assign(prob, "brute_force", eval_channels=ch)
    # The SAA relaxation is the global optimum of the continuous problem on these samples.
    assert saa.relaxed_objective_db <= sca.relaxed_objective_db + 1e-6
    assert sca.relaxed_objective_db - saa.relaxed_objective_db < 0.05   # dB
    assert sca.objective_db == pytest.approx(bf.objective_db, abs=0.05)
    assert bf.objective_db <= saa.objective_db + 1e-12
    for base in ("equal", "proportional"):
        assert bf.objective_db <= assign(prob, base, eval_channels=ch).objective_db
    assert prob.feasible(np.array(sca.units)) and sum(bf.units) == prob.units


def test_sca_matches_brute_force_multi_antenna_and_beats_equal():
    prob = default_problem(antennas=4)
    ch = prob.sample_channels(150, seed=2)
    sca = assign(prob, "stochastic_sca", eval_channels=ch, seed=0, iterations=150, batch=8)
    bf = assign(prob, "brute_force", eval_channels=ch)
    eq = assign(prob, "equal", eval_channels=ch)
    assert sca.objective_db == pytest.approx(bf.objective_db, abs=0.05)
    assert eq.objective_db - bf.objective_db > 1.0  # equal loads the energy-poor far device


def test_assignment_is_seeded():
    prob = _interior_problem()
    a = assign(prob, "stochastic_sca", seed=5, iterations=60, eval_samples=200)
    b = assign(prob, "stochastic_sca", seed=5, iterations=60, eval_samples=200)
    assert a.to_dict() == b.to_dict()


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError):
        DeviceSpec(flops_per_s=-1, joules_per_flop=1e-10, memory_bytes=1e8, energy_per_token_j=0.01)
    with pytest.raises(UsageError):
        AssignmentProblem(devices=default_problem().devices, units=2)  # fewer units than devices
    with pytest.raises(UsageError):
        assign(default_problem(), "greedy")
