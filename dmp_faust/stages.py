"""Stage health: each stage's crashes, recorded where they happen, read by ``GET /health``.

Faust restarts an agent that raised ("Restarting dead <Agent ...>! Last crash
reason: ..."), and the restarted agent reads again the records it had not
committed. A record that makes the stage raise therefore makes it raise
again and again, and every key of that partition waits behind it, while the
worker as a whole looks alive. So every crash is recorded here, per stage
(:meth:`StageCrashes.record`, called from the app's agent error hook and from
the intake), and ``/health`` answers 503 while a stage is *failing*: it
crashed at least ``FAILING_CRASHES`` times within the last
``FAILING_WINDOW_S`` seconds. A single crash (a broker that went away for a
moment, say) is counted and shown, but is no crash loop. A crash that
nothing restarts (the intake is a service of its own, not a Faust agent) is
*fatal*: that stage is failing from then on.

What ``/health`` shows of a crash is the exception's type only: the message
can hold the record's contents (ids are personal data), and ``/health``
needs no token. The log has the whole traceback.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

FAILING_CRASHES: Final = 2
FAILING_WINDOW_S: Final = 60.0


def stage_of(agent_name: str) -> str:
    """A stage's name from a Faust agent's (``agents.profiles.build_profiles``)."""
    return agent_name.rsplit(".", 1)[-1]


@dataclass
class _Stage:
    crashes: int = 0
    error: str | None = None
    fatal: bool = False
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=FAILING_CRASHES))


class StageCrashes:
    """Crashes per stage; the clock is a parameter, so that tests need no waiting."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = FAILING_WINDOW_S,
        threshold: int = FAILING_CRASHES,
    ) -> None:
        self.clock = clock
        self.window_s = window_s
        self.threshold = threshold
        self._stages: dict[str, _Stage] = {}

    def record(self, stage: str, error: BaseException, fatal: bool = False) -> None:
        """Count a crash of ``stage``; ``fatal``: nothing will restart it."""
        found = self._stages.setdefault(stage, _Stage(recent=deque(maxlen=self.threshold)))
        found.crashes += 1
        found.fatal = found.fatal or fatal
        found.error = type(error).__name__
        found.recent.append(self.clock())

    def failing(self, stage: str) -> bool:
        found = self._stages.get(stage)
        if found is None:
            return False
        if found.fatal:
            return True
        if len(found.recent) < self.threshold:
            return False
        return self.clock() - found.recent[0] <= self.window_s

    def report(self, stages: Iterable[str]) -> dict[str, dict[str, object]]:
        """``{stage: {"status": "ok"|"failing", "error": last crash or None, "crashes": n}}``
        for ``stages`` and every stage that crashed."""
        names = sorted(set(stages) | set(self._stages))
        return {
            name: {
                "status": "failing" if self.failing(name) else "ok",
                "error": self._stages[name].error if name in self._stages else None,
                "crashes": self._stages[name].crashes if name in self._stages else 0,
            }
            for name in names
        }


def unhealthy(report: dict[str, dict[str, object]]) -> str | None:
    """Why ``/health`` must answer 503 for this report, or None."""
    failing = [
        f"{name} ({info['error']})" for name, info in report.items() if info["status"] == "failing"
    ]
    if not failing:
        return None
    return f"stage keeps crashing: {', '.join(failing)}"


crashes: Final = StageCrashes()  # the worker's own
