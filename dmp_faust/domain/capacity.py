"""A worker as an M/M/1 queue: its arrival rate, its service rate, and what they predict.

Events arrive at a worker at a rate lambda (events received a second) and
are served at a rate mu while it is busy (events finished per second of
busy time: the CPU time of the thread that serves them). Under the M/M/1 model (Poisson arrivals,
exponential service, one server), the utilisation is rho = lambda / mu and
the expected time an event spends in the system is W = 1 / (mu - lambda),
finite only while rho < 1. A worker's service is not exponential (it works
in micro-batches); ``bench/RESULTS.md`` puts W beside the latency measured
to show how far the model carries.

Both rates are exponentially weighted over the samples (half-life
``half_life_s``): sums of what arrived, what was served, the time passed and
the busy time, each decayed, so a rate is a ratio of two decayed sums and a
pause between samples weighs as much as the time it took.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    """What a worker's queue looks like now (None: not measured yet)."""

    arrival_rate: float  # lambda, events a second
    service_rate: float | None  # mu, events a second of busy time
    utilisation: float | None  # rho = lambda / mu
    expected_sojourn_s: float | None  # W = 1 / (mu - lambda); None at rho >= 1

    def as_dict(self) -> dict[str, float | None]:
        return {
            "arrival_rate": _round(self.arrival_rate),
            "service_rate": _round(self.service_rate),
            "utilisation": _round(self.utilisation),
            "expected_sojourn_s": _round(self.expected_sojourn_s),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def mm1(arrival_rate: float, service_rate: float | None) -> Capacity:
    """The M/M/1 figures of a queue with these rates."""
    if service_rate is None or service_rate <= 0:
        return Capacity(arrival_rate, None, None, None)
    utilisation = arrival_rate / service_rate
    sojourn = 1.0 / (service_rate - arrival_rate) if utilisation < 1 else None
    return Capacity(arrival_rate, service_rate, utilisation, sojourn)


class CapacityMeter:
    """Rates from cumulative counters sampled now and then (see the module)."""

    def __init__(self, half_life_s: float = 30.0, min_busy_s: float = 1e-3) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self.half_life_s = half_life_s
        self.min_busy_s = min_busy_s
        self._last: tuple[float, float, float, float] | None = None
        self._arrived = self._served = self._elapsed = self._busy = 0.0

    def sample(self, now_s: float, arrived: float, served: float, busy_s: float) -> Capacity:
        """Fold the counters as they stand at ``now_s`` (each only grows; a counter
        that went back, a process restarted, starts the measurement again)."""
        last, self._last = self._last, (now_s, arrived, served, busy_s)
        if last is None:
            return self.current()
        then, arrived_then, served_then, busy_then = last
        elapsed = now_s - then
        deltas = (arrived - arrived_then, served - served_then, busy_s - busy_then)
        if elapsed <= 0 or min(deltas) < 0:
            self._arrived = self._served = self._elapsed = self._busy = 0.0
            return self.current()
        decay = math.pow(0.5, elapsed / self.half_life_s)
        self._arrived = self._arrived * decay + deltas[0]
        self._served = self._served * decay + deltas[1]
        self._busy = self._busy * decay + deltas[2]
        self._elapsed = self._elapsed * decay + elapsed
        return self.current()

    def current(self) -> Capacity:
        arrival = self._arrived / self._elapsed if self._elapsed > 0 else 0.0
        service = self._served / self._busy if self._busy >= self.min_busy_s else None
        if service is not None and self._served <= 0:
            service = None  # busy with nothing served: no rate to tell
        return mm1(arrival, service)
