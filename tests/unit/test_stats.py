"""The alerts' tail probabilities against scipy, and the randomised tests' calibration."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from scipy import special, stats

from dmp_faust.domain.stats import (
    Tails,
    beta_tails,
    binomial_tails,
    gamma_tails,
    negative_binomial_tails,
    poisson_tails,
    uniform_of,
    wilson_interval,
)


def close(ours: float, theirs: float, rel: float = 1e-9) -> bool:
    """Equal to ``rel`` relative error, or both below what a double holds apart from 0."""
    return ours == pytest.approx(theirs, rel=rel, abs=1e-290)


@pytest.mark.parametrize("a", [0.5, 1.0, 3.0, 11.0, 150.0, 2_500.0, 40_001.0])
@pytest.mark.parametrize("ratio", [0.01, 0.3, 0.9, 1.0, 1.1, 2.0, 6.0])
def test_incomplete_gamma_matches_scipy_in_both_tails(a: float, ratio: float) -> None:
    x = a * ratio
    lower, upper = gamma_tails(a, x)
    assert close(lower, special.gammainc(a, x))
    assert close(upper, special.gammaincc(a, x))


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (1.0, 7.0), (30.0, 2.0), (400.0, 900.0)])
@pytest.mark.parametrize("x", [1e-6, 0.05, 0.3, 0.5, 0.7, 0.999])
def test_incomplete_beta_matches_scipy_in_both_tails(a: float, b: float, x: float) -> None:
    value, complement = beta_tails(a, b, x)
    assert close(value, special.betainc(a, b, x))
    assert close(complement, special.betaincc(a, b, x))


@pytest.mark.parametrize(
    ("k", "mean"),
    [(0, 0.2), (0, 25.0), (3, 1.0), (9, 1.0), (20, 20.0), (60, 20.0), (0, 700.0), (850, 1000.0),
     (1_200, 1000.0), (5, 60.0)],
)  # fmt: skip
def test_poisson_tails_match_scipy_at_both_ends_of_the_split(k: int, mean: float) -> None:
    # u = 0: the observed count goes wholly to the upper tail; u = 1: to the lower
    assert close(poisson_tails(k, mean, 0.0).below, stats.poisson.cdf(k - 1, mean))
    assert close(poisson_tails(k, mean, 0.0).above, stats.poisson.sf(k - 1, mean))
    assert close(poisson_tails(k, mean, 1.0).below, stats.poisson.cdf(k, mean))
    assert close(poisson_tails(k, mean, 1.0).above, stats.poisson.sf(k, mean))


@pytest.mark.parametrize(
    ("k", "mean", "dispersion"),
    [(0, 20.0, 3.0), (4, 20.0, 3.0), (60, 20.0, 3.0), (200, 20.0, 3.0), (1, 0.5, 2.0),
     (3_000, 1000.0, 1.5), (700, 1000.0, 1.5)],
)  # fmt: skip
def test_negative_binomial_tails_match_scipy(k: int, mean: float, dispersion: float) -> None:
    size = mean / (dispersion - 1)
    p = size / (size + mean)
    model = stats.nbinom(size, p)
    assert model.mean() == pytest.approx(mean)
    assert model.var() == pytest.approx(mean * dispersion)
    assert close(negative_binomial_tails(k, mean, dispersion, 0.0).below, model.cdf(k - 1))
    assert close(negative_binomial_tails(k, mean, dispersion, 0.0).above, model.sf(k - 1))
    assert close(negative_binomial_tails(k, mean, dispersion, 1.0).above, model.sf(k))


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 100, 0.02), (2, 100, 0.02), (15, 100, 0.02), (50, 100, 0.5), (100, 100, 0.9),
     (1, 5_000, 0.01), (120, 5_000, 0.01)],
)  # fmt: skip
def test_binomial_tails_match_scipy(k: int, n: int, p: float) -> None:
    assert close(binomial_tails(k, n, p, 0.0).below, stats.binom.cdf(k - 1, n, p))
    assert close(binomial_tails(k, n, p, 0.0).above, stats.binom.sf(k - 1, n, p))
    assert close(binomial_tails(k, n, p, 1.0).below, stats.binom.cdf(k, n, p))


def test_the_tails_add_up_to_one_and_the_two_sided_value_doubles_the_smaller() -> None:
    tails = poisson_tails(31, 20.0, 0.4)
    assert tails.below + tails.above == pytest.approx(1.0)
    assert tails.two_sided == pytest.approx(2 * tails.above)
    assert Tails(0.7, 0.3).two_sided == pytest.approx(0.6)
    assert Tails(0.5, 0.5).two_sided == 1.0


@pytest.mark.parametrize(
    ("model", "tails"),
    [
        pytest.param(stats.poisson(0.3), lambda k, u: poisson_tails(k, 0.3, u), id="poisson-0.3"),
        pytest.param(stats.poisson(4.0), lambda k, u: poisson_tails(k, 4.0, u), id="poisson-4"),
        pytest.param(stats.nbinom(2.0, 0.2), lambda k, u: negative_binomial_tails(k, 8.0, 5.0, u),
                     id="nb-8-x5"),
        pytest.param(stats.binom(30, 0.05), lambda k, u: binomial_tails(k, 30, 0.05, u),
                     id="binomial-30"),
    ],
)  # fmt: skip
def test_randomised_p_values_are_uniform_under_the_model(
    model: Any, tails: Callable[[int, float], Tails]
) -> None:
    """What makes a threshold mean the same at every rate: a plain discrete test at a mean
    of 0.3 could never reach 1 %, this one crosses it in 1 % of windows."""
    rng = random.Random(7)
    values = [tails(int(k), rng.random()).below for k in model.rvs(20_000, random_state=11)]
    assert stats.kstest(values, "uniform").pvalue > 0.001
    share = sum(v < 0.01 for v in values) / len(values)
    assert 0.007 < share < 0.013


def test_uniform_of_is_fixed_by_its_parts_and_spread() -> None:
    assert uniform_of("c1", "clicks", 60_000) == uniform_of("c1", "clicks", 60_000)
    assert uniform_of("c1", "clicks", 60_000) != uniform_of("c1", "clicks", 120_000)
    values = [uniform_of("c", "impressions", minute * 60_000) for minute in range(5_000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert stats.kstest(values, "uniform").pvalue > 0.001


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [(0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)), (10, 10, (0.7225, 1.0)),
     (1, 1000, (0.000177, 0.005637))],
)  # fmt: skip
def test_wilson_interval_known_values(
    successes: int, trials: int, expected: tuple[float, float]
) -> None:
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
