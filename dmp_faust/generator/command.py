"""The shell of ``dmp-faust generate`` around the pure :class:`~dmp_faust.generator.mix.EventMix`.

:func:`main` parses the options (:mod:`.options`), waits for the topic,
produces with aiokafka at ``--rate``, shows progress on stderr and stops
cleanly on SIGINT/SIGTERM: a first signal flushes and prints the summary, a
second one gives up on the flush. The pacing (:func:`timeline`, :func:`due`)
and the progress display take their clocks and streams as arguments, so they
are tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, TextIO

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.generator.mix import EventMix
from dmp_faust.generator.options import DEFAULT_RATE, Options, parse_args
from dmp_faust.settings import MINUTE_MS, Settings, SettingsError

TICK_S: Final = 0.02  # rate-limited sending wakes up this often and sends what is due
FAST_BATCH: Final = 2_000  # events per wake-up at --rate 0 (and the most per tick)
FLUSH_TIMEOUT_S: Final = 60.0


def timeline(start_ms: int | None, rate: float, wall_ms: Callable[[], int]) -> Callable[[int], int]:
    """Event time of the i-th event: the wall clock, or ``start_ms`` plus i steps."""
    if start_ms is None:
        return lambda _: wall_ms()
    step_ms = 1000 / (rate or DEFAULT_RATE)
    return lambda i: start_ms + int(i * step_ms)


def due(
    rate: float, elapsed_s: float, queued: int, backfill_ms: int = 0, speed: float = 1.0
) -> int:
    """How many events to send now to keep to ``rate`` (at most one batch).

    With ``backfill_ms`` of history, event time starts that long ago and runs
    ``speed`` times faster than the clock until it has caught up with it.
    """
    if rate == 0:
        return FAST_BATCH
    reached_ms = min(elapsed_s * 1000 * speed, backfill_ms + elapsed_s * 1000)
    return max(0, min(FAST_BATCH, int(reached_ms * rate / 1000) + 1 - queued))


def progress_line(sent: int, rate: float, elapsed_s: float, doing: str = "generate: sent") -> str:
    minutes, seconds = divmod(int(elapsed_s), 60)
    clock = f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    return f"{doing} {sent:,}  {rate:,.0f} ev/s  elapsed {clock}"


class Progress:
    """Progress on stderr: one ``\\r`` line twice a second on a terminal, else a
    line every 5 s; nothing when quiet. ev/s is measured over the last second."""

    def __init__(self, stream: TextIO, quiet: bool, doing: str = "generate: sent") -> None:
        self._stream = stream
        self._doing = doing
        self._tty = stream.isatty()
        self._interval = None if quiet else 0.5 if self._tty else 5.0
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])
        self._next = self._interval or 0.0
        self._shown = False

    def update(self, elapsed_s: float, sent: int) -> None:
        samples = self._samples
        samples.append((elapsed_s, sent))
        while len(samples) > 2 and elapsed_s - samples[1][0] >= 1.0:
            samples.popleft()
        if self._interval is None or elapsed_s < self._next:
            return
        self._next = elapsed_s + self._interval
        then, sent_then = samples[0]
        rate = (sent - sent_then) / (elapsed_s - then) if elapsed_s > then else 0.0
        line = progress_line(sent, rate, elapsed_s, self._doing)
        self._stream.write(f"\r{line:<64}" if self._tty else f"{line}\n")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown and self._tty:
            self._stream.write("\n")


class Delivery:
    """Counts the producer's acknowledgements; keeps the first error."""

    def __init__(self) -> None:
        self.acked = 0
        self.error: BaseException | None = None

    def done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.error = self.error or asyncio.CancelledError("delivery cancelled")
        elif future.exception() is not None:
            self.error = self.error or future.exception()
        else:
            self.acked += 1


def main(argv: list[str]) -> int:
    try:
        options = parse_args(argv, Settings.from_env())
    except SettingsError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    if options.start_ms is not None and options.start_ms > _wall_ms() + 5 * MINUTE_MS:
        print(
            "generate: --start-ms is in the future; those events would be refused", file=sys.stderr
        )
        return 2
    try:
        return asyncio.run(_run(options))
    except KeyboardInterrupt:  # where the loop cannot take signals
        return 130


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _run(options: Options) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    producer = AIOKafkaProducer(
        bootstrap_servers=options.bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=256 * 1024,
        client_id="dmp-faust-generate",
        partitioner=_partition,
        **options.kafka_auth,
    )
    stop_timeout_s = FLUSH_TIMEOUT_S
    try:
        await producer.start()
        found = await _wait_for_topic(producer, options.topic, options.wait_topic_s, stop)
        if not (found or stop.is_set()):
            _say(
                f"generate: topic {options.topic} does not exist after "
                f"{options.wait_topic_s:g} s: start a worker (it creates its topics), "
                "create the topic, or wait longer with --wait-topic"
            )
            return 1
        return await _produce(producer, options, stop)
    except (KafkaError, TimeoutError) as exc:
        _say(f"generate: Kafka at {options.bootstrap}: {exc!r}")
        return 1
    except asyncio.CancelledError:  # a second Ctrl-C
        _say("generate: interrupted again, stopping without waiting for the flush")
        stop_timeout_s = 1.0
        return 130
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(producer.stop(), stop_timeout_s)


def _partition(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioning (murmur2 of the key), memoised: simulated users
    repeat their keys, and the pure-Python murmur2 is the producer's largest cost."""
    if key is None:
        return DefaultPartitioner()(key, all_partitions, available)  # type: ignore[no-any-return]
    return all_partitions[_partition_index(key, len(all_partitions))]


@functools.lru_cache(maxsize=65_536)
def _partition_index(key: bytes, partitions: int) -> int:
    return DefaultPartitioner()(key, range(partitions), [])  # type: ignore[no-any-return]


def _stop_on_signals(stop: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM stops sending (then flush); a second one cancels the run."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)


async def _wait_for_topic(
    producer: AIOKafkaProducer, topic: str, timeout_s: float, stop: asyncio.Event
) -> bool:
    """Whether ``topic`` exists. Asks for the metadata of all topics: asking for this
    one alone would make a broker with auto-creation create it with its defaults."""
    deadline = time.monotonic() + timeout_s
    announced = False
    while not stop.is_set():
        if topic in (await producer.client.fetch_all_metadata()).topics():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not announced:
            _say(f"generate: waiting for topic {topic} (start a worker)")
            announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(1.0, remaining))
    return False


async def _produce(producer: AIOKafkaProducer, options: Options, stop: asyncio.Event) -> int:
    if not options.quiet:
        rate = f"{options.rate:g} ev/s" if options.rate else "as fast as possible"
        _say(
            f"generate: {rate} to {options.topic} at {options.bootstrap} "
            f"(seed {options.seed}; Ctrl-C to stop)"
        )
    if options.config.silent_campaign is not None:
        _say(
            f"generate: labelled anomaly: cmp-{options.config.silent_campaign:03d} sends "
            f"nothing from {format_timestamp(options.config.silent_from_ms)} to "
            f"{format_timestamp(options.config.silent_to_ms)} (event time)"
        )
    mix = EventMix(random.Random(options.seed), options.config, _wall_ms())
    event_time = timeline(options.start_ms, options.rate, _wall_ms)
    delivery, progress = Delivery(), Progress(sys.stderr, options.quiet)
    started = time.monotonic()

    async def send(i: int) -> None:
        item = mix.next(event_time(i))
        future = await producer.send(options.topic, item.value, key=item.key)
        future.add_done_callback(delivery.done)

    try:
        await _pump(send, options, stop, delivery, progress)
        await asyncio.wait_for(producer.flush(), FLUSH_TIMEOUT_S)
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    if delivery.error is not None:
        _say(f"generate: delivery failed after {delivery.acked} events: {delivery.error!r}")
        return 1
    _say(
        f"generate: sent {delivery.acked} events in {elapsed:.1f} s "
        f"({delivery.acked / elapsed:.0f} ev/s)"
    )
    return 0


async def _pump(
    send: Callable[[int], Awaitable[None]],
    options: Options,
    stop: asyncio.Event,
    delivery: Delivery,
    progress: Progress,
) -> None:
    """Send what is due, then sleep a tick (only yield when behind or at --rate 0)."""
    started, queued, count = time.monotonic(), 0, options.count
    while not stop.is_set() and delivery.error is None and (count == 0 or queued < count):
        elapsed = time.monotonic() - started
        batch = due(options.rate, elapsed, queued, options.backfill_ms, options.backfill_speed)
        for i in range(queued, queued + (min(batch, count - queued) if count else batch)):
            await send(i)
            queued += 1
        progress.update(elapsed, delivery.acked)
        await asyncio.sleep(TICK_S if options.rate and batch < FAST_BATCH else 0)
