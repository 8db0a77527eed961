"""The options of ``dmp-faust generate``: its argument parser and the checks of its values."""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from dmp_faust.domain.timefmt import parse_timestamp
from dmp_faust.generator.mix import MixConfig
from dmp_faust.settings import MINUTE_MS, Settings

DEFAULT_RATE: Final = 200.0
ANOMALY_CAMPAIGN: Final = 2  # cmp-002 goes silent at --anomaly-at


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Options:
    rate: float
    count: int
    config: MixConfig
    seed: int
    bootstrap: str
    topic: str
    start_ms: int | None
    wait_topic_s: float
    quiet: bool
    backfill_ms: int = 0
    backfill_speed: float = 30.0
    # aiokafka's security arguments (Settings.kafka_auth); out of repr: may hold a password.
    kafka_auth: dict[str, Any] = field(default_factory=dict, repr=False)


def parse_args(argv: list[str], settings: Settings) -> Options:
    args = _parser(settings).parse_args(argv)
    if args.backfill_minutes and (args.start_ms is not None or not args.rate):
        _parser(settings).error("--backfill-minutes needs a --rate and no --start-ms")
    if args.anomaly_at is not None and args.campaigns < 2:
        _parser(settings).error("--anomaly-at needs at least 2 --campaigns")
    start_ms = args.start_ms
    if args.backfill_minutes:
        start_ms = wall_ms() - args.backfill_minutes * MINUTE_MS
    silent_from = None if args.anomaly_at is None else (start_ms or wall_ms())
    config = MixConfig(
        args.campaigns,
        args.users,
        args.invalid_share,
        args.duplicate_share,
        args.bot_share,
        silent_campaign=None if silent_from is None else ANOMALY_CAMPAIGN,
        silent_from_ms=0 if silent_from is None else silent_from + args.anomaly_at * MINUTE_MS,
        silent_to_ms=0
        if silent_from is None
        else silent_from + (args.anomaly_at + args.anomaly_minutes) * MINUTE_MS,
    )
    if config.invalid_share + config.duplicate_share + config.bot_share > 1:
        _parser(settings).error("--invalid-share + --duplicate-share + --bot-share exceed 1")
    seed = random.SystemRandom().getrandbits(32) if args.seed is None else args.seed
    return Options(
        rate=args.rate,
        count=args.count,
        config=config,
        seed=seed,
        bootstrap=args.bootstrap,
        topic=args.topic,
        start_ms=start_ms,
        wait_topic_s=args.wait_topic,
        quiet=args.quiet,
        backfill_ms=args.backfill_minutes * MINUTE_MS,
        backfill_speed=args.backfill_speed,
        kafka_auth=settings.kafka_auth(),
    )


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmp-faust generate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Produce synthetic behavioural events onto the raw topic.",
    )
    add = parser.add_argument
    add(
        "--rate",
        type=_at_least(float, 0),
        default=DEFAULT_RATE,
        metavar="EV_PER_S",
        help="events per second; 0 = as fast as possible",
    )
    add("--count", type=_at_least(int, 0), default=0, help="events to send; 0 = until Ctrl-C")
    add("--campaigns", type=_at_least(int, 1), default=20, help="campaigns cmp-001, ...")
    add("--users", type=_at_least(int, 1), default=5000, help="simulated users")
    add(
        "--seed",
        type=int,
        help="random seed (the same seed gives the same events, and so "
        "the same event_ids: a re-run is de-duplicated); default a random one",
    )
    add("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap servers")
    add("--topic", default=settings.topic("events.raw"), help="target topic")
    add("--invalid-share", type=_share, default=0.01, help="share of invalid events")
    add("--duplicate-share", type=_share, default=0.01, help="share of re-sent events")
    add("--bot-share", type=_share, default=0.02, help="share of crawler events")
    add(
        "--start-ms",
        type=_time_ms,
        metavar="TIME",
        help="event time of the first event, epoch ms or RFC 3339; default now, and events "
        "follow the wall clock; with it, events are 1000/rate ms apart (5 ms at --rate 0)",
    )
    add(
        "--wait-topic",
        type=_at_least(float, 0),
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the topic to exist (the worker creates it)",
    )
    add(
        "--backfill-minutes",
        type=_at_least(int, 0),
        default=0,
        metavar="MINUTES",
        help="first send this much history (event time starting that long ago, "
        "--backfill-speed times faster than the clock), then go on live at --rate",
    )
    add(
        "--backfill-speed",
        type=_at_least(float, 1),
        default=30.0,
        metavar="TIMES",
        help="how much faster than the clock the history goes out",
    )
    add(
        "--anomaly-at",
        type=_at_least(int, 0),
        metavar="MINUTE",
        help="a labelled anomaly: cmp-002 sends nothing from this minute of event time "
        "(counted from the first event) for --anomaly-minutes",
    )
    add("--anomaly-minutes", type=_at_least(int, 1), default=8, metavar="MINUTES")
    add("--quiet", action="store_true", help="no progress display")
    return parser


def _at_least(kind: Callable[[str], float], minimum: float) -> Callable[[str], Any]:
    def convert(text: str) -> float:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _time_ms(text: str) -> int:
    try:
        return parse_timestamp(int(text) if text.lstrip("-").isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
