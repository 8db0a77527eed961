"""Tail probabilities of counts, in plain Python, for the anomaly alerts.

A window's count is judged against a model of what was expected: Poisson
(arrivals of independent visitors), negative binomial (the same, with the
overdispersion real traffic has) or binomial (clicks given impressions).
Each test here is *randomised*: the probability of the observed count
itself is split by a number ``u`` in [0, 1), so that under the model the
lower-tail p-value is uniform on [0, 1) and a threshold ``a`` is crossed in
exactly a share ``a`` of windows, at any rate, however few events a window
holds. (A plain test of a discrete count is conservative by a factor that
swings with the mean: at a mean of 1 a nominal 0.1 % is really 0.008 %.)
The alerts take ``u`` from a hash of the window's identity
(:func:`uniform_of`), so a replay judges every window as before.

The functions follow the regularised incomplete gamma and beta functions
(series and continued fractions, as in any numerical library), each
computing the smaller tail directly so that p-values of 1e-12 keep their
digits; ``tests/unit/test_stats.py`` checks them against scipy.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final, NamedTuple

_EPS: Final = 1e-15
_TINY: Final = 1e-300
_MAX_ITER: Final = 10_000


class Tails(NamedTuple):
    """``below`` = P(X < k) + u·P(X = k) and ``above`` = P(X > k) + (1 - u)·P(X = k).

    They add up to 1; under the model each is uniform on [0, 1).
    """

    below: float
    above: float

    @property
    def two_sided(self) -> float:
        return min(1.0, 2.0 * min(self.below, self.above))


def uniform_of(*parts: str | int) -> float:
    """A number in [0, 1) fixed by ``parts``: the same for the same window, always."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def gamma_tails(a: float, x: float) -> tuple[float, float]:
    """(P(a, x), Q(a, x)): the regularised lower and upper incomplete gamma functions."""
    if x <= 0.0:
        return 0.0, 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        # the series for P
        term = total = 1.0 / a
        n = a
        for _ in range(_MAX_ITER):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        lower = total * math.exp(log_front)
        return lower, 1.0 - lower
    # the continued fraction for Q (modified Lentz)
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        b += 2.0
        d, c, delta = _lentz(d, c, -i * (i - a), b)
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    upper = math.exp(log_front) * h
    return 1.0 - upper, upper


def beta_tails(a: float, b: float, x: float) -> tuple[float, float]:
    """(I_x(a, b), 1 - I_x(a, b)): the regularised incomplete beta function and its complement."""
    if x <= 0.0:
        return 0.0, 1.0
    if x >= 1.0:
        return 1.0, 0.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        direct = math.exp(log_front) * _beta_fraction(a, b, x) / a
        return direct, 1.0 - direct
    mirrored = math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b
    return 1.0 - mirrored, mirrored


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        d, c, even = _lentz(d, c, m * (b - m) * x / ((qam + m2) * (a + m2)), 1.0)
        h *= even
        d, c, odd = _lentz(d, c, -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)), 1.0)
        h *= odd
        if abs(odd - 1.0) < _EPS:
            break
    return h


def _lentz(d: float, c: float, a_n: float, b_n: float) -> tuple[float, float, float]:
    """One step of the modified Lentz method through the term ``a_n / (b_n + ...)`` of a
    continued fraction: the next ``d`` and ``c``, and the factor the value changes by."""
    d = a_n * d + b_n
    d = _TINY if abs(d) < _TINY else d
    c = b_n + a_n / c
    c = _TINY if abs(c) < _TINY else c
    d = 1.0 / d
    return d, c, d * c


def _split(less: float, more: float, point: float, u: float) -> Tails:
    """Tails from P(X < k), P(X > k) and P(X = k)."""
    return Tails(less + u * point, more + (1.0 - u) * point)


def poisson_tails(k: int, mean: float, u: float) -> Tails:
    """Randomised tails of ``k`` events where a Poisson count of ``mean`` was expected."""
    if mean <= 0.0:
        return Tails(0.0, 1.0) if k == 0 else Tails(1.0, 0.0)
    less = gamma_tails(k, mean)[1] if k > 0 else 0.0  # P(X ≤ k-1) = Q(k, μ)
    more = gamma_tails(k + 1.0, mean)[0]  # P(X > k) = P(k+1, μ)
    point = math.exp(k * math.log(mean) - mean - math.lgamma(k + 1.0))
    return _split(less, more, point, u)


def negative_binomial_tails(k: int, mean: float, dispersion: float, u: float) -> Tails:
    """Randomised tails of ``k`` under a negative binomial of ``mean`` and variance
    ``dispersion x mean`` (``dispersion`` > 1; at 1 it is the Poisson)."""
    if dispersion <= 1.0 + 1e-9 or mean <= 0.0:
        return poisson_tails(k, mean, u)
    size = mean / (dispersion - 1.0)  # r, with variance μ + μ²/r = μ·dispersion
    p = size / (size + mean)
    less = beta_tails(size, k, p)[0] if k > 0 else 0.0  # P(X ≤ k-1) = I_p(r, k)
    more = beta_tails(k + 1.0, size, 1.0 - p)[0]  # P(X > k) = I_{1-p}(k+1, r)
    point = math.exp(
        math.lgamma(k + size)
        - math.lgamma(size)
        - math.lgamma(k + 1.0)
        + size * math.log(p)
        + k * math.log1p(-p)
    )
    return _split(less, more, point, u)


def binomial_tails(k: int, n: int, p: float, u: float) -> Tails:
    """Randomised tails of ``k`` successes in ``n`` trials of probability ``p``."""
    if n <= 0 or p <= 0.0:
        return Tails(0.0, 1.0) if k <= 0 else Tails(1.0, 0.0)
    if p >= 1.0:
        return Tails(0.0, 1.0) if k >= n else Tails(1.0, 0.0)
    k = min(max(k, 0), n)
    less = beta_tails(n - k + 1.0, k, 1.0 - p)[0] if k > 0 else 0.0  # P(X ≤ k-1)
    more = beta_tails(k + 1.0, n - k, p)[0] if k < n else 0.0  # P(X > k)
    point = math.exp(
        math.lgamma(n + 1.0)
        - math.lgamma(k + 1.0)
        - math.lgamma(n - k + 1.0)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    return _split(less, more, point, u)


def wilson_interval(
    successes: int, trials: int, z: float = 1.959963984540054
) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    share = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
