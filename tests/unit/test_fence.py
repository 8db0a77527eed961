"""The fence: proof of membership from timed heartbeats, on a stand-in coordinator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dmp_faust import fence as fence_module
from dmp_faust.fence import Fence, Fenced

SESSION_S = 6.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Coordinator:
    """Enough of aiokafka's GroupCoordinator: a generation, a heartbeat, a join."""

    def __init__(self, generation: int = 5) -> None:
        self.generation = generation
        self.member = True  # False: the broker dropped this member (a pause too long)
        self.heartbeats = 0
        self.resets = 0
        self._closing: asyncio.Future[None] = asyncio.Future(loop=asyncio.new_event_loop())

    async def _do_heartbeat(self) -> bool:
        self.heartbeats += 1
        if not self.member:
            self.generation = -1  # aiokafka resets it on UnknownMemberId
        return self.member

    async def _on_join_complete(self, generation: int, *args: Any) -> None:
        self.generation = generation

    def reset_generation(self) -> None:
        self.generation = -1
        self.resets += 1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(fence_module, "now_s", clock)
    monkeypatch.setattr(fence_module, "POLL_S", 0.001)
    return clock


def watched(coordinator: Coordinator) -> Fence:
    fence = Fence(lambda: coordinator, SESSION_S)
    fence.generation()  # first use wraps the coordinator's methods
    return fence


async def heartbeat_later(coordinator: Coordinator, clock: Clock, after_s: float) -> None:
    """The consumer thread's next heartbeat, ``after_s`` later."""
    await asyncio.sleep(0.01)
    clock.now += after_s
    await coordinator._do_heartbeat()


def test_a_recent_answered_heartbeat_lets_the_take_write(clock: Clock) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    asyncio.run(coordinator._do_heartbeat())
    clock.now += SESSION_S / 2 - 0.1
    asyncio.run(fence.check(5))


def test_after_a_pause_the_take_waits_for_the_next_heartbeat_and_goes_on_if_answered(
    clock: Clock,
) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    asyncio.run(coordinator._do_heartbeat())
    clock.now += 4.0  # stopped for 4 s: maybe dropped, maybe not

    async def run() -> None:
        await asyncio.gather(fence.check(5), heartbeat_later(coordinator, clock, 0.01))

    asyncio.run(run())
    assert coordinator.heartbeats == 2


def test_a_worker_dropped_during_its_pause_is_fenced_by_the_refused_heartbeat(
    clock: Clock,
) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    asyncio.run(coordinator._do_heartbeat())
    clock.now += 2 * SESSION_S  # SIGSTOP for twice the session timeout
    coordinator.member = False

    async def run() -> None:
        await asyncio.gather(fence.check(5), heartbeat_later(coordinator, clock, 0.01))

    with pytest.raises(Fenced, match="left generation 5"):
        asyncio.run(run())


def test_no_answer_within_a_session_timeout_fences(clock: Clock) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    asyncio.run(coordinator._do_heartbeat())
    clock.now += SESSION_S / 2

    async def run() -> None:
        async def time_passes() -> None:
            while True:
                await asyncio.sleep(0.001)
                clock.now += 0.5

        ticking = asyncio.ensure_future(time_passes())
        try:
            await fence.check(5)
        finally:
            ticking.cancel()

    with pytest.raises(Fenced, match="no heartbeat answered"):
        asyncio.run(run())


@pytest.mark.parametrize("now_in", [6, -1], ids=["rejoined", "reset"])
def test_a_take_of_another_generation_is_fenced_at_once(clock: Clock, now_in: int) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    asyncio.run(coordinator._do_heartbeat())
    coordinator.generation = now_in
    with pytest.raises(Fenced):
        asyncio.run(fence.check(5))


def test_a_take_started_outside_any_generation_is_fenced(clock: Clock) -> None:
    coordinator = Coordinator(generation=-1)
    with pytest.raises(Fenced, match="not a member"):
        asyncio.run(watched(coordinator).check(-1))


def test_joining_a_generation_counts_as_an_answer(clock: Clock) -> None:
    coordinator = Coordinator(generation=-1)
    fence = watched(coordinator)
    asyncio.run(coordinator._on_join_complete(7, "member", "protocol", b""))
    assert fence.generation() == 7
    asyncio.run(fence.check(7))
    assert coordinator.heartbeats == 0


def test_a_reset_generation_means_dropped_and_is_reported_once(clock: Clock) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    assert fence.take_dropped() is False  # an ordinary member, an ordinary rebalance
    coordinator.reset_generation()  # the coordinator no longer knew this member
    assert coordinator.resets == 1 and coordinator.generation == -1  # the wrapped one ran
    assert fence.take_dropped() is True
    assert fence.take_dropped() is False


def test_leaving_the_group_on_close_is_no_drop(clock: Clock) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    coordinator._closing.set_result(None)
    coordinator.reset_generation()
    assert coordinator.resets == 1
    assert fence.take_dropped() is False


def test_holds_answers_at_once_whether_the_generation_is_still_current(clock: Clock) -> None:
    coordinator = Coordinator()
    fence = watched(coordinator)
    assert fence.holds(5) and not fence.holds(4)
    coordinator.generation = -1
    assert not fence.holds(5) and not fence.holds(-1)
