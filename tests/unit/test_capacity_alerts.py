"""A worker's capacity incidents as GET /alerts and the dashboard list them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmp_faust import alerting
from dmp_faust.domain.alerts import Incident


def incident(alert_id: str, status: str) -> Incident:
    return Incident(
        alert_id=alert_id,
        campaign_id=None,
        metric="capacity",
        direction="spike",
        status=status,
        opened_window=0,
        resolved_window=60_000 if status == "resolved" else None,
        observed=0.9,
        expected=0.8,
        p_value=None,
        severity="warning",
        model={},
        worker="http://w1",
    )


@pytest.fixture(autouse=True)
def kept() -> Iterator[None]:
    saved = list(alerting.capacity_incidents)
    alerting.capacity_incidents.clear()
    yield
    alerting.capacity_incidents.clear()
    alerting.capacity_incidents.extend(saved)


def test_a_resolved_incident_is_listed_once_as_resolved() -> None:
    alerting.capacity_incidents.extend(
        [incident("a", "open"), incident("b", "open"), incident("a", "resolved")]
    )
    latest = {i.alert_id: i.status for i in alerting.capacity_latest()}
    assert latest == {"a": "resolved", "b": "open"}
    assert len(alerting.capacity_latest()) == 2
