"""The live dashboard (``GET /``) in a real headless Chromium, on a real worker.

Debian's ``/usr/bin/chromium`` (``make system`` installs it) driven by
Playwright for Python; no browser is downloaded. The page must load nothing
but the worker's own URLs, log no error, show the same figures as the JSON
views (``/campaigns/{id}/stats``, ``/metrics``, ``/segments``, ``/alerts``),
draw a chart per campaign and refresh itself. A full-page screenshot goes to
``tests/artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.integration.events import GOOGLEBOT, MINUTE, encode, event
from tests.integration.support import (
    PROJECT,
    Worker,
    call,
    metrics,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT / "tests" / "artifacts"
SCREENSHOT = ARTIFACTS / "dashboard.png"
VIEWPORT = {"width": 1920, "height": 1080}  # a wall screen
# A campaign id is user data: the page must show it as text, never as markup.
HOSTILE = "<img src=x onerror=alert(1)>&amp;\"'"


# --- the browser ----------------------------------------------------------------------


def require_chromium() -> None:
    """Fail (not skip): without the browser the dashboard is not tested at all."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard test drives Debian's headless Chromium. "
            "Install it with `make system` (apt-get install chromium).",
            pytrace=False,
        )


def launch(playwright: Any) -> Browser:
    require_chromium()
    # --no-sandbox: the tests run as root in a container, where Chromium's sandbox cannot start.
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Watch:
    """What the page did that it should not: errors logged or thrown, foreign requests."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@contextmanager
def dashboard(worker: Worker) -> Iterator[tuple[Page, Watch]]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            watch = Watch()
            page.on(
                "console",
                lambda m: watch.errors.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda exc: watch.errors.append(f"pageerror: {exc}"))
            page.on(
                "request",
                lambda r: (
                    watch.foreign.append(r.url) if origin(r.url) != origin(worker.url) else None
                ),
            )
            yield page, watch
        finally:
            browser.close()


def figures(page: Page) -> dict[tuple[str, str | None], str]:
    """Every ``data-field`` of the page: ``{(field, qualifier): data-value}``, the qualifier
    being the campaign, segment, reason, source or stage the figure is about."""
    found = page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-field]')).map((e) => [
            e.dataset.field,
            e.dataset.campaign ?? e.dataset.segment ?? e.dataset.reason ??
                e.dataset.source ?? e.dataset.stage ?? null,
            e.dataset.value ?? null,
        ])"""
    )
    return {(name, key): value for name, key, value in found}


def css(value: str) -> str:
    """``value`` as a CSS string, for attribute selectors on user data."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def card_of(page: Page, campaign: str, testid: str = "campaign-card") -> Any:
    return page.locator(f"[data-testid={testid}][data-campaign={css(campaign)}]")


def number(text: str | None) -> float | None:
    assert text is not None
    return None if text == "null" else float(text)


# Page scripts are given as functions ("() => ..."): Playwright evaluates a bare expression
# with eval() in the page, which the dashboard's Content-Security-Policy refuses.


def refreshes(page: Page) -> int:
    return int(page.evaluate("() => document.body.dataset.refreshes"))


# --- the worker's JSON views ------------------------------------------------------------


def get(worker: Worker, path: str) -> Any:
    status, body = call("GET", worker.url + path)
    assert status == 200, (path, body)
    return body


def stats(worker: Worker, campaign: str, query: str = "") -> dict[str, Any]:
    return get(worker, f"/campaigns/{quote(campaign, safe='')}/stats{query}")


def accounting(worker: Worker) -> dict[str, Any]:
    """The outcome counters of ``/metrics``, summed (one worker here)."""
    samples = metrics(worker.url)

    def total(prefix: str) -> dict[str, int]:
        return {k: int(v) for k, v in samples.items() if k.startswith(prefix)}

    received = total("dmp_events_received_total{")
    invalid = total("dmp_events_invalid_total{")
    return {
        "received": sum(received.values()),
        "received_by_source": {k.split('"')[1]: v for k, v in received.items()},
        "invalid": sum(invalid.values()),
        "invalid_by_reason": {k.split('"')[1]: v for k, v in invalid.items()},
        "duplicate": int(samples["dmp_events_duplicate_total"]),
        "bot": int(samples["dmp_events_bot_total"]),
        "accepted": int(samples["dmp_events_accepted_total"]),
    }


def send(worker: Worker, events: list[Any]) -> Any:
    status, body = call(
        "POST",
        worker.url + "/collect",
        json.dumps({"batch": events}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 202, body
    return body


# --- the traffic --------------------------------------------------------------------------


@dataclass
class Traffic:
    campaigns: dict[str, Counter[str]]  # campaign -> impressions, clicks, conversions
    revenue: dict[str, float]
    users: dict[str, set[str]]
    clickers: set[str]
    converters: set[str]
    engaged: set[str]
    records: int  # events received, valid or not


def traffic(worker: Worker) -> Traffic:
    """Three campaigns over the last four minutes of event time, a profile with five page
    views, two duplicates, a bot, and four invalid events (two over Kafka, two over HTTP)."""
    tag = uuid.uuid4().hex[:6]
    names = [f"dash-{tag}-alpha", f"dash-{tag}-beta", f"dash-{tag}-{HOSTILE}"]
    plan = {names[0]: (30, 6, 2), names[1]: (12, 2, 1), names[2]: (5, 1, 0)}
    now = int(time.time() * 1000)
    start = now - 4 * MINUTE
    events: list[dict[str, Any]] = []
    t = Traffic({}, {}, {}, set(), set(), set(), 0)
    for c, (campaign, (impressions, clicks, conversions)) in enumerate(plan.items()):
        t.campaigns[campaign] = Counter()
        t.revenue[campaign] = 0.0
        t.users[campaign] = set()
        for i in range(impressions):
            user = f"u{c}-{tag}-{i % 9}"
            ts = start + i * (4 * MINUTE // impressions)
            events.append(event("impression", ts, user, campaign))
        for i in range(clicks):
            user = f"u{c}-{tag}-{i}"
            events.append(event("click", start + 20_000 + i * 30_000, user, campaign))
            t.clickers.add(user)
        for i in range(conversions):
            user = f"u{c}-{tag}-{i}"
            revenue = 12.5 + 10 * i
            ts = start + 50_000 + i * 40_000
            events.append(event("conversion", ts, user, campaign, revenue=revenue))
            t.converters.add(user)
            t.revenue[campaign] += revenue
    for body in events:
        t.campaigns[body["campaign_id"]][body["type"]] += 1
        t.users[body["campaign_id"]].add(body["anonymous_id"])
    reader = f"reader-{tag}"
    events += [
        event("page_view", start + i * 1000, reader, url=f"https://news.example/sports/{i}")
        for i in range(5)
    ]
    t.engaged.add(reader)
    bot = event("impression", start + 1000, f"crawler-{tag}", names[1], user_agent=GOOGLEBOT)
    duplicates = [dict(events[0]), dict(events[-1])]
    invalid_http: list[Any] = [{"type": "impression"}, {**events[1], "anonymous_id": 42}]

    half = len(events) // 2
    produce(
        worker.bootstrap,
        f"{worker.prefix}.events.raw",
        [(None, encode(e)) for e in events[:half]] + [(None, b"not json"), (None, b"[1, 2]")],
    )
    send(worker, [*events[half:], bot, *duplicates, *invalid_http])
    t.records = len(events) + 2 + 1 + len(duplicates) + len(invalid_http)
    return t


def wait_processed(worker: Worker, t: Traffic) -> None:
    for campaign, counts in t.campaigns.items():
        want = (counts["impression"], counts["click"], counts["conversion"])
        wait_until(
            lambda c=campaign, w=want: (
                tuple(
                    stats(worker, c)["totals"][k] for k in ("impressions", "clicks", "conversions")
                )
                == w
            ),
            90,
            f"the totals of {campaign!r}",
        )
    sizes = {"clickers": len(t.clickers), "converters": len(t.converters), "engaged": 1}
    wait_until(
        lambda: {s["segment"]: s["size"] for s in get(worker, "/segments")} == sizes,
        90,
        f"segment sizes {sizes}",
    )

    def balanced() -> bool:
        a = accounting(worker)
        return a["received"] == t.records and a["received"] == (
            a["invalid"] + a["duplicate"] + a["bot"] + a["accepted"]
        )

    wait_until(balanced, 60, "every event received to be judged")


# --- the checks ----------------------------------------------------------------------------------


def page_matches_views(page: Page, worker: Worker, t: Traffic) -> list[str]:
    """What differs between the page and the JSON views (empty: nothing)."""
    seen = figures(page)
    wrong: list[str] = []

    def expect(key: tuple[str, str | None], want: Any, approx: bool = False) -> None:
        got = number(seen[key]) if key in seen else "missing"
        ok = got == pytest.approx(want) if approx and want is not None else got == want
        if not ok:
            wrong.append(f"{key}: page {got!r}, views {want!r}")

    cards = page.eval_on_selector_all(
        "[data-testid=campaign-card]",
        "cards => cards.map(c => [c.dataset.campaign, c.dataset.from, c.dataset.to])",
    )
    if sorted(c[0] for c in cards) != sorted(t.campaigns):
        wrong.append(f"campaign cards {sorted(c[0] for c in cards)}, want {sorted(t.campaigns)}")
    for campaign, frm, to in cards:
        body = stats(worker, campaign, "?" + urlencode({"from": frm, "to": to}))
        totals = body["totals"]
        for name in ("impressions", "clicks", "conversions", "unique_users"):
            expect((f"campaign-{name.replace('_', '-')}", campaign), totals[name])
        expect(("campaign-revenue", campaign), totals["revenue"], approx=True)
        expect(("campaign-ctr", campaign), totals["ctr"], approx=True)

    views = accounting(worker)
    for name in ("received", "invalid", "duplicate", "bot", "accepted"):
        expect((f"accounting-{name}", None), views[name])
    for source, value in views["received_by_source"].items():
        expect(("accounting-received-by-source", source), value)
    for reason, value in views["invalid_by_reason"].items():
        expect(("invalid-reason", reason), value)
    expect(("accounting-difference", None), 0)
    expect(("cluster-accepted", None), views["accepted"])

    for segment in get(worker, "/segments"):
        expect(("segment-size", segment["segment"]), segment["size"])
    expect(("alerts-open", None), len(get(worker, "/alerts?status=open")["alerts"]))
    expect(("cluster-workers-ok", None), 1)
    expect(("cluster-workers-total", None), 1)
    expect(("campaigns-total", None), len(t.campaigns))  # a worker of this test's own
    return wrong


def test_the_dashboard_shows_the_views_and_refreshes_itself(
    module_worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    require_chromium()
    worker = module_worker
    t = traffic(worker)
    wait_processed(worker, t)
    # the views agree with what was sent before the page is compared with them
    for campaign in t.campaigns:
        totals = stats(worker, campaign)["totals"]
        assert totals["unique_users"] == len(t.users[campaign])
        assert totals["revenue"] == pytest.approx(t.revenue[campaign])
    assert accounting(worker)["bot"] == 1 and accounting(worker)["duplicate"] == 2

    with dashboard(worker) as (page, watch):
        response = page.goto(worker.url + "/")
        assert response is not None and response.status == 200
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=campaign-card]').length === 3",
            timeout=30_000,
        )
        assert page.title().startswith("dmp-faust")

        # (c) the figures are those of the JSON views (polled: the page refreshes every 5 s)
        last: list[str] = []

        def agree() -> bool:
            last[:] = page_matches_views(page, worker, t)
            return not last

        try:
            wait_until(agree, 30, "the page to show the views' figures", interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(last)) from None

        # formatted for people, exact for machines
        alpha = next(iter(t.campaigns))
        card = card_of(page, alpha)
        assert card.locator('[data-field="campaign-ctr"]').inner_text().endswith("%")
        assert card.locator('[data-field="campaign-no-alerts"]').inner_text() == "no open alerts"
        received = page.locator('[data-field="accounting-received"]').inner_text()
        assert received.replace(",", "") == str(t.records)

        # user data is text: the hostile campaign id is shown as typed, and made no element
        hostile = next(c for c in t.campaigns if HOSTILE in c)
        titles = page.eval_on_selector_all(".card-title", "ts => ts.map(t => t.textContent)")
        assert hostile in titles
        assert page.locator("img").count() == 0

        # the worker's row
        row = page.locator(f'[data-testid=worker-row][data-worker="{worker.url}"]')
        assert row.locator('[data-field="worker-status"]').inner_text() == "ok"
        partitions = get(worker, "/health")["active_partitions"]
        assert row.locator('[data-field="worker-partitions"]').get_attribute("data-value") == (
            ",".join(map(str, partitions))
        )
        assert row.locator('[data-field="worker-lag"]').count() >= 6

        # (d) a chart per campaign card, drawn
        for campaign in t.campaigns:
            chart = card_of(page, campaign, "campaign-chart")
            assert chart.get_attribute("data-points") == "60"
            canvas = chart.locator("canvas").first
            box = canvas.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 100, box
            legend = chart.locator(".u-legend").inner_text()
            assert "impressions" in legend and "clicks" in legend and "CTR" in legend

        # (e) it refreshes by itself: more traffic shows up without a reload
        page.evaluate("() => { window.__sameDocument = true; }")
        before = refreshes(page)
        impressions = t.campaigns[alpha]["impression"]
        now = int(time.time() * 1000)
        more = [event("impression", now - i * 500, f"late-{i}", alpha) for i in range(7)]
        send(worker, [*more, event("click", now, "late-0", alpha)])
        t.campaigns[alpha].update({"impression": 7, "click": 1})
        t.records += len(more) + 1
        t.clickers.add("late-0")
        cell = card.locator('[data-field="campaign-impressions"]')
        wait_until(
            lambda: cell.get_attribute("data-value") == str(impressions + 7),
            45,
            "the page to show the new impressions",
            interval=0.5,
        )
        assert page.evaluate("() => window.__sameDocument === true")  # not reloaded
        assert refreshes(page) > before
        assert cell.inner_text() == f"{impressions + 7:,}"
        wait_processed(worker, t)
        try:
            wait_until(agree, 30, "the page to agree with the views again", interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(last)) from None
        assert page.get_attribute("[data-testid=connection]", "data-state") == "live"
        assert page.locator("[data-testid=banner]").is_hidden()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        with capsys.disabled():
            print(f"\ndashboard screenshot: {SCREENSHOT}")

        # (a) no error logged or thrown; (b) nothing asked of any host but the worker
        assert watch.errors == []
        assert watch.foreign == []


def synthetic_summary(worker: Worker) -> dict[str, Any]:
    """A summary the worker cannot produce in a test's time: an open alert, a lost worker,
    counters that do not balance (yet)."""
    to = (int(time.time() * 1000) // MINUTE) * MINUTE

    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))

    minutes = [
        {
            "start": iso(to - (60 - i) * MINUTE),
            "end": iso(to - (59 - i) * MINUTE),
            "impressions": 0 if 45 <= i < 50 else 100 + i,
            "clicks": 0 if 45 <= i < 50 else 5 + i % 4,
            "ctr": None if 45 <= i < 50 else (5 + i % 4) / (100 + i),
        }
        for i in range(60)
    ]
    alert = {
        "alert_id": "916042e7ea5c938a301f",
        "campaign_id": HOSTILE,
        "metric": "impressions",
        "direction": "drop",
        "status": "open",
        "opened_window": {"start": minutes[45]["start"], "end": minutes[45]["end"]},
        "resolved_window": None,
        "observed": 0.0,
        "expected": 118.590909,
        "p_value": 4.544713663307576e-52,
        "severity": "critical",
        "model": {"test": "poisson", "history_windows": 66, "windows_in_a_row": 2},
    }
    campaign = {
        "campaign_id": HOSTILE,
        "stream_time": iso(to - 1000),
        "from": iso(to - 60 * MINUTE),
        "to": iso(to),
        "totals": {
            "impressions": 1234567,
            "clicks": 4321,
            "conversions": 12,
            "revenue": 1234.5,
            "ctr": 4321 / 1234567,
            "unique_users": 98765,
        },
        "minutes": minutes,
        "open_alerts": [alert],
    }
    quiet = {**campaign, "campaign_id": "quiet", "open_alerts": []}
    health = get(worker, "/health")
    return {
        "generated_at": iso(int(time.time() * 1000)),
        "workers": [
            {
                "url": worker.url,
                "status": "ok",
                "active_partitions": health["active_partitions"],
                "capacity": health["capacity"],
                "stage_lag": health["stage_lag"],
                "latency_s": {"count": 10, "mean": 0.5, "p50": 0.25, "p99": 2.5},
            },
            {"url": "http://lost-worker.invalid:6066", "status": "unavailable"},
        ],
        "accounting": {
            "received": 1003,
            "received_by_source": {"kafka": 1000, "http": 3, "replay": 0},
            "invalid": 10,
            "invalid_by_reason": {"missing_field": 7, "<b>reason</b>": 3},
            "duplicate": 20,
            "bot": 30,
            "accepted": 940,
        },
        "throughput": 12.5,
        "segments": [{"segment": "clickers", "size": 4321}],
        "campaigns": [campaign, quiet],
        "campaigns_total": 2,
        "alerts_open": 1,
    }


def test_alerts_a_lost_worker_and_a_failing_summary_are_shown(module_worker: Worker) -> None:
    require_chromium()
    worker = module_worker
    summary = synthetic_summary(worker)
    failing = {"now": False}

    def answer(route: Route) -> None:
        if failing["now"]:
            route.fulfill(status=503, content_type="application/json", body='{"error":"x"}')
        else:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(summary))

    with dashboard(worker) as (page, watch):
        page.route(lambda url: urlsplit(url).path == "/dashboard/summary", answer)
        page.goto(worker.url + "/")
        page.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1", timeout=30_000)
        seen = figures(page)

        card = card_of(page, HOSTILE)
        alerts = card.locator("[data-testid=campaign-alert]")
        assert alerts.count() == 1
        assert alerts.first.get_attribute("data-alert-id") == "916042e7ea5c938a301f"
        assert alerts.first.get_attribute("data-severity") == "critical"
        assert "impressions drop" in alerts.first.inner_text()
        assert card.locator('[data-field="campaign-no-alerts"]').count() == 0
        assert card.locator("[data-testid=campaign-chart]").get_attribute("data-alert-bands") == "1"
        assert card.locator(".card-title").inner_text() == HOSTILE
        assert card.locator('[data-field="campaign-impressions"]').inner_text() == "1,234,567"
        assert card.locator('[data-field="campaign-ctr"]').inner_text() == "0.35 %"
        quiet = card_of(page, "quiet")
        assert quiet.locator('[data-field="campaign-no-alerts"]').inner_text() == "no open alerts"
        assert page.locator("img").count() == 0

        assert number(seen[("alerts-open", None)]) == 1
        assert number(seen[("cluster-workers-ok", None)]) == 1
        assert number(seen[("cluster-workers-total", None)]) == 2
        assert number(seen[("accounting-difference", None)]) == 3  # 1003 - 1000
        assert "off by +3" in page.locator('[data-field="accounting-difference"]').inner_text()
        assert number(seen[("invalid-reason", "<b>reason</b>")]) == 3
        lost = page.locator(
            '[data-testid=worker-row][data-worker="http://lost-worker.invalid:6066"]'
        )
        assert lost.locator('[data-field="worker-status"]').inner_text() == "unavailable"
        assert lost.locator('[data-field="worker-utilisation"]').get_attribute("data-value") == (
            "null"
        )

        # the summary fails: the page says so and keeps the last figures
        failing["now"] = True
        page.wait_for_selector("[data-testid=connection][data-state=error]", timeout=15_000)
        banner = page.locator("[data-testid=banner]")
        assert banner.is_visible() and "HTTP 503" in banner.inner_text()
        assert card.locator('[data-field="campaign-impressions"]').inner_text() == "1,234,567"
        failing["now"] = False
        page.wait_for_selector("[data-testid=connection][data-state=live]", timeout=15_000)
        assert banner.is_hidden()

        # Chromium logs the 503 itself; nothing else may be logged
        assert [e for e in watch.errors if "status of 503" not in e] == []
        assert watch.foreign == []
