"""Stage health: a crash loop makes a stage failing (and /health 503), one crash does not."""

from __future__ import annotations

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from dmp_faust.stages import StageCrashes, stage_of, unhealthy

STAGES = ["build_profiles", "deduplicate_events"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_no_crash_every_stage_ok(clock: Clock) -> None:
    report = StageCrashes(clock).report(STAGES)
    assert report == {
        "build_profiles": {"status": "ok", "error": None, "crashes": 0},
        "deduplicate_events": {"status": "ok", "error": None, "crashes": 0},
    }
    assert unhealthy(report) is None


def test_one_crash_is_shown_but_is_no_loop(clock: Clock) -> None:
    crashes = StageCrashes(clock, window_s=60, threshold=2)
    crashes.record("build_profiles", MessageSizeTooLargeError())
    report = crashes.report(STAGES)
    assert report["build_profiles"] == {
        "status": "ok",
        "error": "MessageSizeTooLargeError",
        "crashes": 1,
    }
    assert unhealthy(report) is None


def test_crashes_within_the_window_make_the_stage_failing_then_ok_again(clock: Clock) -> None:
    crashes = StageCrashes(clock, window_s=60, threshold=2)
    for _ in range(5):
        crashes.record("build_profiles", MessageSizeTooLargeError())
        clock.now += 1
    report = crashes.report(STAGES)
    assert report["build_profiles"] == {
        "status": "failing",
        "error": "MessageSizeTooLargeError",
        "crashes": 5,
    }
    assert report["deduplicate_events"]["status"] == "ok"
    reason = unhealthy(report)
    assert reason is not None and "build_profiles (MessageSizeTooLargeError)" in reason
    clock.now = 1003 + 60  # a minute after the last two crashes but one
    assert crashes.failing("build_profiles")
    clock.now += 1  # then the last two are no longer within a minute: the loop is over
    assert not crashes.failing("build_profiles")
    assert crashes.report(STAGES)["build_profiles"]["crashes"] == 5


def test_crashes_further_apart_than_the_window_are_no_loop(clock: Clock) -> None:
    crashes = StageCrashes(clock, window_s=60, threshold=2)
    for _ in range(4):
        crashes.record("build_profiles", RuntimeError())
        assert not crashes.failing("build_profiles")
        clock.now += 61


def test_a_fatal_crash_is_failing_for_good(clock: Clock) -> None:
    crashes = StageCrashes(clock)
    crashes.record("validate_events", KeyError("user-42"), fatal=True)
    clock.now += 10**6
    report = crashes.report([])
    assert report == {"validate_events": {"status": "failing", "error": "KeyError", "crashes": 1}}


def test_only_the_exception_type_is_shown_never_its_message(clock: Clock) -> None:
    crashes = StageCrashes(clock)
    crashes.record("build_profiles", ValueError("profile anon-secret-1 is broken"))
    assert "anon-secret-1" not in str(crashes.report(STAGES))


@pytest.mark.parametrize(
    ("agent", "stage"),
    [
        ("agents.profiles.build_profiles", "build_profiles"),
        ("agents.deduplicate.deduplicate_events", "deduplicate_events"),
        ("plain", "plain"),
    ],
)
def test_stage_of(agent: str, stage: str) -> None:
    assert stage_of(agent) == stage
