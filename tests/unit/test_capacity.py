"""The M/M/1 view of a worker: rates from sampled counters, and the figures they predict."""

from __future__ import annotations

import pytest

from dmp_faust.domain.capacity import CapacityMeter, mm1


def test_mm1_figures() -> None:
    queue = mm1(800.0, 1000.0)
    assert queue.utilisation == pytest.approx(0.8)
    assert queue.expected_sojourn_s == pytest.approx(1 / 200)
    saturated = mm1(1200.0, 1000.0)
    assert saturated.utilisation == pytest.approx(1.2)
    assert saturated.expected_sojourn_s is None  # no steady state
    assert mm1(5.0, None).utilisation is None


def test_steady_counters_give_their_rates() -> None:
    """3,000 events a second arrive and are served in 0.6 s of CPU a second: mu is
    5,000 events a busy second, rho 0.6, W 1 / 2,000 s."""
    meter = CapacityMeter(half_life_s=10)
    for second in range(60):
        capacity = meter.sample(second, 3_000 * second, 3_000 * second, 0.6 * second)
    assert capacity.arrival_rate == pytest.approx(3_000)
    assert capacity.service_rate == pytest.approx(5_000)
    assert capacity.utilisation == pytest.approx(0.6)
    assert capacity.expected_sojourn_s == pytest.approx(1 / 2_000)
    assert capacity.as_dict()["utilisation"] == pytest.approx(0.6)


def test_the_rates_follow_a_change_with_the_half_life() -> None:
    meter = CapacityMeter(half_life_s=10)
    arrived = 0.0
    for second in range(1, 200):
        arrived += 1_000 if second <= 100 else 3_000
        capacity = meter.sample(second, arrived, arrived, second * 0.5)
        if second == 110:  # one half-life after the change: half way there
            assert capacity.arrival_rate == pytest.approx(2_000, rel=0.05)
    assert capacity.arrival_rate == pytest.approx(3_000, rel=0.01)


def test_nothing_measured_until_busy_and_a_restart_starts_again() -> None:
    meter = CapacityMeter()
    assert meter.sample(0, 0, 0, 0).service_rate is None  # one sample: no interval yet
    idle = meter.sample(1, 0, 0, 0)
    assert (idle.arrival_rate, idle.service_rate, idle.utilisation) == (0.0, None, None)
    meter.sample(2, 100, 100, 0.1)
    restarted = meter.sample(3, 5, 5, 0.01)  # the counters went back
    assert restarted.arrival_rate == 0.0 and restarted.service_rate is None
    assert meter.sample(4, 105, 105, 0.11).arrival_rate == pytest.approx(100)
    with pytest.raises(ValueError):
        CapacityMeter(half_life_s=0)
