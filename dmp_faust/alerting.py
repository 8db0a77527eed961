"""Anomaly alerts in the running worker: judged in the statistics stage, kept, sent, counted.

The detector is pure (:mod:`dmp_faust.domain.alerts`); this module gives it
its place in ``count_campaign_stats``. Its state lives in the
``campaign_windows`` table, beside the windows, under keys of its own
(:data:`~dmp_faust.domain.alerts.ALERT_PREFIX`): written in the same batch
as the windows it judged, and restored with them. Each ``events.by_campaign`` partition
has a cursor, the next 1-minute window to judge. When a campaign item moves
the partition's stream time to the window's end plus ``DMP_ALERT_SETTLE_S``
or later, that window is judged for every campaign of the partition
*before* the item is folded: the counts a judgement reads depend only on the
partition's record order, never on where takes were cut, so a replay or a
rebuild produces the same incidents with the same ids. A campaign that
sends nothing is judged all the same (its empty windows are a drop) as long
as other campaigns move the partition's stream time on.

A take's incidents go to ``dmp.alerts`` before the table is written (as
every stage's output does). A crash before the write replays the records,
which judge the same windows with the same counts (the take's later folds
were not written either) and send the same records again: a consumer tells
the copies apart by ``alert_id`` and ``status``. After the write, the
replayed records find those windows judged.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dmp_faust.app import app, metrics, settings
from dmp_faust.bulk import Records, TableWrites
from dmp_faust.domain import alerts as al
from dmp_faust.domain.timefmt import format_timestamp
from dmp_faust.topics import alerts, campaign_events
from dmp_faust.web import active_partitions
from tables.campaign_windows import campaign_windows

log = logging.getLogger(__name__)

NEVER = -(2**63)
EXPIRY_SCAN = 1000  # incident keys looked at per judging, at most
CAPACITY_KEPT = 100  # capacity incidents a worker remembers for GET /alerts
_WARN_EVERY_S = 60.0
_last_warning = [0.0]

# The capacity incidents of this worker, newest last (not in a table: capacity is
# measured on the wall clock of one process, and goes with it).
capacity_incidents: deque[al.Incident] = deque(maxlen=CAPACITY_KEPT)


def alert_json(incident: al.Incident) -> dict[str, Any]:
    """The alert object of ``GET /alerts`` and of a ``dmp.alerts`` record."""

    def window(start: int | None) -> dict[str, str] | None:
        if start is None:
            return None
        return {"start": format_timestamp(start), "end": format_timestamp(start + al.WINDOW_MS)}

    body = {
        "alert_id": incident.alert_id,
        "campaign_id": incident.campaign_id,
        "metric": incident.metric,
        "direction": incident.direction,
        "status": incident.status,
        "opened_window": window(incident.opened_window),
        "resolved_window": window(incident.resolved_window),
        "observed": incident.observed,
        "expected": incident.expected,
        "p_value": incident.p_value,
        "severity": incident.severity,
        "model": incident.model,
    }
    if incident.worker is not None:
        body["worker"] = incident.worker
    return body


def alert_record(change: al.Change) -> tuple[bytes, bytes]:
    """(key, value) of the ``dmp.alerts`` record of an incident that opened or resolved."""
    incident = change.incident
    key = incident.campaign_id if incident.campaign_id is not None else incident.worker or ""
    return key.encode(), msgspec.json.encode(alert_json(incident))


def count(changes: list[al.Change]) -> None:
    for change in changes:
        if change.incident.status == "open":
            metrics.alerts.labels(change.incident.metric, change.incident.direction).inc()


class PartitionAlerts:
    """One take's judging of one ``events.by_campaign`` partition (see the module)."""

    def __init__(self, store: TableWrites, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.state = al.decode_partition(store.get(al.PARTITION_KEY))
        self.changes: list[al.Change] = []
        self._seen: set[str] = set()  # campaigns looked up in this take
        self.next_due = self._next_due()

    def _next_due(self) -> int:
        """The stream time from which the cursor's window is due (NEVER: no cursor yet)."""
        if self.state.cursor is None:
            return NEVER
        return self.state.cursor + al.WINDOW_MS + settings.alert_settle_ms

    def advance(self, stream_time: int, counts: al.Counts) -> None:
        """Judge every window due at ``stream_time`` (call it before folding the item that
        brought the partition there)."""
        if self.state.cursor is None:
            self.state.cursor = stream_time - stream_time % al.WINDOW_MS
        else:
            due = al.windows_due(
                self.state.cursor, stream_time, settings.alert_settle_ms, settings.retention_ms
            )
            if due:
                self._judge(due, stream_time, counts)
                self.state.cursor = due[-1] + al.WINDOW_MS
        self.store.put(al.PARTITION_KEY, al.encode(self.state))
        self.next_due = self._next_due()

    def see(self, campaign_id: str, window: int) -> None:
        """A campaign has events in ``window``: from the next judging on, it is judged."""
        if campaign_id in self._seen:
            return
        self._seen.add(campaign_id)
        key = al.campaign_key(campaign_id)
        if self.store.get(key) is not None:
            return
        if self.state.campaigns >= settings.alert_max_campaigns:
            _warn_full(self.partition)
            return
        self.store.put(key, al.encode_campaign(al.CampaignState(window, since=window))[0])
        self.state.campaigns += 1
        self.store.put(al.PARTITION_KEY, al.encode(self.state))

    def _judge(self, due: range, stream_time: int, counts: al.Counts) -> None:
        states = dict(self._campaigns())
        hours = {campaign_id: state.hours() for campaign_id, state in states.items()}
        for window in due:
            changes, retired = al.judge_window(states, window, counts, settings.alerts)
            for change in changes:
                self.store.put(al.incident_key(change.incident), al.encode(change.incident))
            al.count_open(self.state, changes)
            self.changes += changes
            for campaign_id in retired:
                del states[campaign_id]
                self.store.put(al.campaign_key(campaign_id), None)
                self.store.put(al.seasons_key(campaign_id), None)
                self.state.campaigns -= 1
        for campaign_id, state in states.items():
            raw, seasons = al.encode_campaign(state)
            self.store.put(al.campaign_key(campaign_id), raw)
            if state.hours() != hours[campaign_id]:  # an hour ended: its mean is kept
                self.store.put(al.seasons_key(campaign_id), seasons)
        self._expire(stream_time - al.KEEP_MS)

    def _campaigns(self) -> Iterator[tuple[str, al.CampaignState]]:
        """Every campaign with state: the database's, and those this take added."""
        keys = {key for key, _ in _under(self.partition, al.CAMPAIGN_PREFIX)}
        keys.update(al.campaign_key(campaign_id) for campaign_id in self._seen)
        for key in sorted(keys):
            raw = self.store.get(key)  # the take's own view
            if raw is not None:
                campaign_id = key[len(al.CAMPAIGN_PREFIX) :].decode()
                seasons = self.store.get(al.seasons_key(campaign_id))
                yield campaign_id, al.decode_campaign(raw, seasons)

    def _expire(self, before: int) -> None:
        """Delete resolved incidents that opened before ``before`` (open ones stay)."""
        for seen, (key, _) in enumerate(_under(self.partition, al.INCIDENT_PREFIX)):
            if seen >= EXPIRY_SCAN or al.incident_window(key) >= before:
                break
            raw = self.store.get(key)
            if raw is not None and al.decode_incident(raw).status == "resolved":
                self.store.put(key, None)


def _warn_full(partition: int) -> None:
    if time.monotonic() - _last_warning[0] > _WARN_EVERY_S:
        _last_warning[0] = time.monotonic()
        log.warning(
            "alerts: partition %d already watches DMP_ALERT_MAX_CAMPAIGNS=%d campaigns; new "
            "campaigns there are counted but not judged (at most one such warning a minute)",
            partition,
            settings.alert_max_campaigns,
        )


def _under(partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The keys and values under ``prefix`` in the partition's database, in key order
    (what the take in progress wrote is not there yet)."""
    db = campaign_windows.data._db_for_partition(partition)  # Faust's RocksDB store
    for key, value in db.items(from_key=prefix):
        if not key.startswith(prefix):
            break
        yield key, value


def campaign_ids(partition: int) -> list[str]:
    """The campaigns ``partition`` watches (at most ``DMP_ALERT_MAX_CAMPAIGNS``; a
    campaign quiet for long is retired), in id order."""
    size = len(al.CAMPAIGN_PREFIX)
    return [key[size:].decode() for key, _ in _under(partition, al.CAMPAIGN_PREFIX)]


def incidents(partition: int) -> Iterator[al.Incident]:
    """The incidents kept for ``partition`` (which must be restored here), oldest first."""
    for _, value in _under(partition, al.INCIDENT_PREFIX):
        yield al.decode_incident(value)


def capacity_latest() -> list[al.Incident]:
    """This worker's capacity incidents, each as it stands now (an incident that opened
    and then resolved is kept twice: its resolution replaces its opening)."""
    latest = {incident.alert_id: incident for incident in capacity_incidents}
    return list(latest.values())


def keep_capacity(change: al.Change) -> None:
    """Keep a capacity incident for ``GET /alerts`` and count it; the caller sends it."""
    capacity_incidents.append(change.incident)
    count([change])


class AlertGauges(Collector):
    """``dmp_alerts_open{metric}``: the open incidents of the partitions this worker owns."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        open_now = dict.fromkeys(al.ALERT_METRICS, 0)
        for partition in sorted(active_partitions(campaign_events)):
            raw = campaign_windows.data._db_for_partition(partition).get(al.PARTITION_KEY)
            for metric, n in al.decode_partition(raw).open.items():
                open_now[metric] = open_now.get(metric, 0) + n
        open_now["capacity"] = int(capacity_open())
        family = GaugeMetricFamily(
            "dmp_alerts_open", "Open incidents on this worker, by metric", labels=["metric"]
        )
        for metric, n in open_now.items():
            family.add_metric([metric], n)
        yield family


def capacity_open() -> bool:
    """Is this worker's capacity incident open? (the latest record says)"""
    return bool(capacity_incidents) and capacity_incidents[-1].status == "open"


def new_records() -> Records:
    return Records(app, alerts)


REGISTRY.register(AlertGauges())
