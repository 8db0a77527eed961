"""The wall clock, read in one place (the domain core takes ``now`` as a parameter)."""

from __future__ import annotations

import time


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
