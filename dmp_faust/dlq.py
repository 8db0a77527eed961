"""``dmp-faust dlq replay``: dead letters back into the raw topic, once their cause is fixed.

Reads ``dmp.events.dlq`` from its beginning to the end it had when the
command started (as a plain consumer, in no group, so no worker's offsets
move), decides on each record (:mod:`dmp_faust.domain.replay`), sends those
that pass today's validation to the raw topic with their original key and
the header ``dmp-source: replay`` (the intake counts them as
``dmp_events_received_total{source="replay"}``), and prints what it did by
reason. Replaying a range twice counts nothing twice: the copies meet the
de-duplication by event id.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from dmp_faust.clock import wall_ms
from dmp_faust.domain.query import BadParameter, parse_time_param
from dmp_faust.domain.replay import Report, Selection, decide
from dmp_faust.generator.command import Progress
from dmp_faust.settings import Settings, SettingsError
from dmp_faust.topics import ORIGIN_HEADER

REPLAY_HEADERS = [(ORIGIN_HEADER, b"replay")]
FETCH_RECORDS = 1000


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        selection = Selection(
            tuple(args.reason or ()),
            _time(args.since, "since"),
            _time(args.until, "until"),
        )
    except (SettingsError, ValueError) as exc:
        parser.error(str(exc))
    try:
        report = asyncio.run(_replay(settings, selection, args.dry_run, args.quiet))
    except (KafkaError, OSError) as exc:
        print(f"dlq replay: Kafka at {settings.kafka_bootstrap}: {exc!r}", file=sys.stderr)
        return 1
    if report is None:
        print(f"dlq replay: no topic {settings.topic('events.dlq')}", file=sys.stderr)
        return 1
    print("\n".join(report.lines(args.dry_run)))
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"dlq replay: read {report.read}, selected "
        f"{report.total('replay') + report.total('refused')}, {verb} {report.total('replay')}, "
        f"still refused {report.total('refused')}, unreadable {report.total('unreadable')}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmp-faust dlq",
        description="Replay dead letters whose events pass today's validation.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="dead letters back into the raw topic")
    replay.add_argument(
        "--reason", action="append", help="only dead letters refused for this (repeatable)"
    )
    replay.add_argument("--since", metavar="TIME", help="refused at or after (RFC 3339 or ms)")
    replay.add_argument("--until", metavar="TIME", help="refused before (RFC 3339 or ms)")
    replay.add_argument("--dry-run", action="store_true", help="decide and report; send nothing")
    replay.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def _time(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_time_param(f"--{name}", text)
    except BadParameter as exc:
        raise ValueError(str(exc)) from None


async def _replay(
    settings: Settings, selection: Selection, dry_run: bool, quiet: bool
) -> Report | None:
    auth = settings.kafka_auth()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        # from the start: with aiokafka's default ("latest") a seek to the beginning did
        # not take, and nothing was read
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,
        **auth,
    )
    producer = None if dry_run else AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, **auth
    )  # fmt: skip
    await consumer.start()
    try:
        if producer is not None:
            await producer.start()
        dlq = settings.topic("events.dlq")
        # All topics' metadata (asking for this one alone could make a broker create it)
        partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(dlq)
        if not partitions:
            return None
        tps = [TopicPartition(dlq, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        report = Report()
        await _read(consumer, producer, settings, selection, ends, report, quiet)
        if producer is not None:
            await producer.flush()
        return report
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()


async def _read(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer | None, settings: Settings,
    selection: Selection, ends: dict[Any, int], report: Report, quiet: bool,
) -> None:  # fmt: skip
    raw_topic = settings.topic("events.raw")
    progress = Progress(sys.stderr, quiet, "dlq replay: read")
    started = time.monotonic()
    waiting = {tp for tp, end in ends.items() if end > 0}
    try:
        while waiting:
            fetched = await consumer.getmany(*waiting, timeout_ms=1000, max_records=FETCH_RECORDS)
            now_ms = wall_ms()
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    decision = decide(
                        record.value,
                        selection,
                        now_ms,
                        settings.max_event_bytes,
                        settings.future_tolerance_ms,
                    )
                    report.add(decision)
                    if decision.action == "replay" and producer is not None:
                        await producer.send(
                            raw_topic, decision.raw, key=record.key, headers=REPLAY_HEADERS
                        )
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)
            progress.update(time.monotonic() - started, report.read)
    finally:
        progress.close()
