"""Judging a partition's campaigns as its stream time moves on, the capacity watch,
and the stored formats (the pure parts of dmp_faust.alerting)."""

from __future__ import annotations

import pytest

from dmp_faust.domain.alerts import (
    ALERT_PREFIX,
    KEEP_MS,
    WINDOW_MS,
    AlertSettings,
    CampaignState,
    CapacityWatch,
    Change,
    Incident,
    PartitionState,
    campaign_key,
    count_open,
    decode_campaign,
    decode_incident,
    decode_partition,
    encode,
    encode_campaign,
    incident_key,
    incident_window,
    judge_window,
    overlaps,
    windows_due,
)

T0 = 1_614_556_800_000  # 2021-03-01 00:00 UTC
SETTINGS = AlertSettings(warmup_windows=10)


def test_a_window_is_due_once_its_end_plus_the_settle_delay_is_reached() -> None:
    settle = 2 * WINDOW_MS
    assert list(windows_due(T0, T0 + 3 * WINDOW_MS - 1, settle, KEEP_MS)) == []
    assert list(windows_due(T0, T0 + 3 * WINDOW_MS, settle, KEEP_MS)) == [T0]
    assert list(windows_due(T0, T0 + 5 * WINDOW_MS + 7, settle, KEEP_MS)) == [
        T0,
        T0 + WINDOW_MS,
        T0 + 2 * WINDOW_MS,
    ]
    assert list(windows_due(None, T0 + 10 * WINDOW_MS, settle, KEEP_MS)) == []


def test_windows_gone_from_the_tables_are_passed_over() -> None:
    retention = 10 * WINDOW_MS
    due = windows_due(T0, T0 + 100 * WINDOW_MS, 0, retention)
    # windows ending at or before stream time - retention are expired
    assert due[0] == T0 + 90 * WINDOW_MS
    assert windows_due(T0, T0 + 100 * WINDOW_MS + 1, 0, retention)[0] == T0 + 90 * WINDOW_MS
    assert due[-1] == T0 + 99 * WINDOW_MS


def counts_of(table: dict[tuple[str, int], int]):  # type: ignore[no-untyped-def]
    def counts(campaign: str, window: int) -> dict[str, int]:
        return {"impressions": table.get((campaign, window), 0), "clicks": 0, "conversions": 0}

    return counts


def test_every_campaign_is_judged_silent_ones_included_in_campaign_order() -> None:
    states = {"b": CampaignState(active=T0), "a": CampaignState(active=T0)}
    table = {(c, T0 + i * WINDOW_MS): 30 for c in "ab" for i in range(20)}
    partition = PartitionState()
    for i in range(20):
        changes, retired = judge_window(states, T0 + i * WINDOW_MS, counts_of(table), SETTINGS)
        assert changes == [] and retired == []
    # "a" goes silent, "b" spikes: both open, in campaign order
    for i in range(20, 22):
        table[("b", T0 + i * WINDOW_MS)] = 120
    changes: list = []
    for i in range(20, 22):
        found, _ = judge_window(states, T0 + i * WINDOW_MS, counts_of(table), SETTINGS)
        changes += found
    assert [(c.incident.campaign_id, c.incident.direction) for c in changes] == [
        ("a", "drop"),
        ("b", "spike"),
    ]
    count_open(partition, changes)
    assert partition.open == {"impressions": 2}
    assert states["b"].active == T0 + 21 * WINDOW_MS
    assert states["a"].active == T0 + 19 * WINDOW_MS


def test_a_campaign_silent_for_the_keep_time_with_nothing_open_is_retired() -> None:
    states = {"gone": CampaignState(active=T0)}
    keep = 30 * WINDOW_MS
    retired_at = None
    for i in range(1, 40):
        _, retired = judge_window(states, T0 + i * WINDOW_MS, counts_of({}), SETTINGS, keep)
        if retired:
            retired_at = i
            break
    assert retired_at == 30


def test_a_campaign_with_an_open_incident_is_kept() -> None:
    state = CampaignState(active=T0)
    table = {("c", T0 + i * WINDOW_MS): 50 for i in range(20)}
    states = {"c": state}
    for i in range(22):
        judge_window(states, T0 + i * WINDOW_MS, counts_of(table), SETTINGS, 5 * WINDOW_MS)
    assert state.open_incidents()  # silent since window 20: a drop
    _, retired = judge_window(states, T0 + 22 * WINDOW_MS, counts_of(table), SETTINGS, 1)
    assert retired == []


def test_a_campaign_is_judged_from_the_window_it_was_first_seen_in() -> None:
    late = CampaignState(active=T0 + 5 * WINDOW_MS, since=T0 + 5 * WINDOW_MS)
    states = {"late": late}
    for i in range(8):
        judge_window(states, T0 + i * WINDOW_MS, counts_of({}), SETTINGS)
    assert late.detectors["impressions"].seen == 3  # windows 5, 6 and 7


def test_resolving_counts_down_and_never_below_zero() -> None:
    partition = PartitionState(open={"ctr": 1})
    opened = incident("x", "open")
    resolved = incident("x", "resolved")
    count_open(partition, [Change(resolved), Change(resolved)])
    assert partition.open["ctr"] == 0
    count_open(partition, [Change(opened)])
    assert partition.open["ctr"] == 1


def incident(alert_id: str, status: str, opened: int = T0, resolved: int | None = None) -> Incident:
    return Incident(
        alert_id=alert_id,
        campaign_id="c",
        metric="ctr",
        direction="drop",
        status=status,
        opened_window=opened,
        resolved_window=resolved,
        observed=0.01,
        expected=0.1,
        p_value=1e-6,
        severity="warning",
        model={"test": "binomial"},
    )


def test_stored_formats_round_trip_and_incident_keys_sort_by_time() -> None:
    state = CampaignState(active=T0)
    for i in range(90):  # into a second hour: the means of the first are settled
        judge_window({"c": state}, T0 + i * WINDOW_MS, counts_of({("c", T0): 3}), SETTINGS)
    raw, seasons = encode_campaign(state)
    assert decode_campaign(raw, seasons) == state
    assert len(raw) < 1000 < len(seasons)  # what changes every window is small
    bare = decode_campaign(raw, None)
    assert bare.detectors["impressions"].season == []
    assert bare.detectors["impressions"].hour_mean == state.detectors["impressions"].hour_mean
    partition = PartitionState(cursor=T0, campaigns=3, open={"clicks": 1})
    assert decode_partition(encode(partition)) == partition
    assert decode_partition(None) == PartitionState()
    early, late = incident("b", "open", T0), incident("a", "open", T0 + WINDOW_MS)
    assert decode_incident(encode(early)) == early
    assert incident_key(early) < incident_key(late)
    assert incident_window(incident_key(late)) == T0 + WINDOW_MS
    # beside the windows, under keys no window's (UTF-8) key can be
    assert campaign_key("c").startswith(ALERT_PREFIX) and incident_key(early)[:1] == b"\xff"
    for key in (campaign_key("c"), incident_key(early)):
        with pytest.raises(UnicodeDecodeError):
            key.decode()


def test_an_incident_is_in_a_range_it_was_open_in() -> None:
    open_one = incident("a", "open", T0 + 10 * WINDOW_MS)
    assert overlaps(open_one, T0 + 20 * WINDOW_MS, T0 + 30 * WINDOW_MS)
    assert not overlaps(open_one, T0, T0 + 10 * WINDOW_MS)
    done = incident("a", "resolved", T0 + 10 * WINDOW_MS, T0 + 15 * WINDOW_MS)
    assert overlaps(done, T0 + 15 * WINDOW_MS, T0 + 16 * WINDOW_MS)
    assert not overlaps(done, T0 + 16 * WINDOW_MS, T0 + 30 * WINDOW_MS)


def test_capacity_opens_after_rho_stays_high_and_resolves_after_it_stays_low() -> None:
    watch = CapacityWatch("http://w1:6066", threshold=0.8, for_ms=60_000)
    figures = {"arrival_rate": 900.0, "service_rate": 1000.0}
    assert watch.sample(T0, 0.9, figures) is None
    assert watch.sample(T0 + 30_000, 0.7, figures) is None  # a dip starts again
    assert watch.sample(T0 + 40_000, 0.9, figures) is None
    assert watch.sample(T0 + 90_000, 0.95, figures) is None
    assert watch.sample(T0 + 95_000, None, figures) is None  # not measured: no change
    opened = watch.sample(T0 + 100_000, 0.95, figures)
    assert opened is not None
    alert = opened.incident
    assert (alert.metric, alert.direction, alert.status) == ("capacity", "spike", "open")
    assert alert.campaign_id is None and alert.worker == "http://w1:6066"
    assert alert.opened_window == T0  # the minute rho went above the threshold in
    assert alert.model["threshold"] == 0.8 and alert.model["service_rate"] == 1000.0
    assert alert.p_value is None
    assert watch.sample(T0 + 110_000, 0.5, figures) is None
    assert watch.sample(T0 + 169_999, 0.5, figures) is None
    resolved = watch.sample(T0 + 170_000, 0.5, figures)
    assert resolved is not None and resolved.incident.status == "resolved"
    assert resolved.incident.alert_id == alert.alert_id
    assert resolved.incident.resolved_window == T0 + WINDOW_MS
    assert watch.incident is None


@pytest.mark.parametrize("rho", [1.0, 3.0])
def test_capacity_at_or_past_saturation_is_critical(rho: float) -> None:
    watch = CapacityWatch("w", for_ms=1)
    watch.sample(T0, rho, {})
    change = watch.sample(T0 + 1, rho, {})
    assert change is not None and change.incident.severity == "critical"
