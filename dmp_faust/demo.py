"""``dmp-faust demo`` (what ``make demo`` runs): the whole stack on one machine.

Starts the local Kafka broker, one worker and the synthetic event generator,
prints the URLs to open (the dashboard first), and on Ctrl-C, SIGTERM or
SIGHUP stops the generator, then the worker, then the broker.
``DMP_DEMO_RATE`` sets the generator's events per second (default 50).

So that alerts have a history to learn from, the generator first sends
:data:`BACKFILL_MINUTES` of past traffic, 30 times faster than the clock,
then goes on live. It injects a labelled anomaly: campaign ``cmp-002`` sends
nothing from minute :data:`ANOMALY_AT` of that history for 8 minutes, which
``GET /alerts`` shows as an impressions drop about three minutes after the
start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from dmp_faust import kafka_local
from dmp_faust.settings import Settings

HEALTH_TIMEOUT_S = 120
BACKFILL_MINUTES = 70  # more than the detector's warm-up (60 windows), plus the settle delay
ANOMALY_AT = 66  # minute of the history at which cmp-002 goes silent
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    settings = Settings.from_env()
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[-1])
    kafka_dir = settings.data_dir / "kafka"
    rate = os.environ.get("DMP_DEMO_RATE", "50")
    if not rate.replace(".", "", 1).isdigit() or float(rate) <= 0:
        raise SystemExit(f"demo: DMP_DEMO_RATE={rate!r}: events a second, above 0")
    children: list[subprocess.Popen[bytes]] = []
    for stop_on in STOP_SIGNALS:  # as Ctrl-C: kill, a closed terminal, a service manager
        signal.signal(stop_on, _interrupt)
    try:
        print(f"demo: starting Kafka on port {port} (data in {kafka_dir}) ...", flush=True)
        broker = kafka_local.start(port, kafka_dir)
        env = {**_plaintext(os.environ), "DMP_KAFKA_BOOTSTRAP": broker.bootstrap}
        worker = _spawn(["worker"], env, settings.data_dir / "demo-worker.log")
        children.append(worker)
        base = f"http://localhost:{settings.web_port}"
        _wait_healthy(base, worker)
        history = ["--backfill-minutes", str(BACKFILL_MINUTES), "--anomaly-at", str(ANOMALY_AT)]
        children.append(_spawn(["generate", "--rate", rate, *history, *argv], env, None))
        _print_urls(base, settings.data_dir)
        _wait_for_interrupt(children)
    except KeyboardInterrupt:
        pass
    finally:
        for stop_on in (signal.SIGINT, *STOP_SIGNALS):  # a second one must not cut this short
            signal.signal(stop_on, signal.SIG_IGN)
        print("\ndemo: stopping generator, worker and Kafka ...", flush=True)
        for child in reversed(children):
            _stop(child)
        kafka_local.stop(kafka_dir)
        print("demo: stopped.")
    return 0


def _plaintext(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the Kafka security settings: the demo's local broker is PLAINTEXT."""
    prefixes = ("DMP_KAFKA_SECURITY_", "DMP_KAFKA_SASL_", "DMP_KAFKA_SSL_")
    return {name: value for name, value in env.items() if not name.startswith(prefixes)}


def _spawn(args: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else None
    return subprocess.Popen(
        [sys.executable, "-m", "dmp_faust.cli", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )


def _wait_healthy(base: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"demo: the worker exited with {worker.returncode}; see its log")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(base + "/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"demo: the worker was not healthy after {HEALTH_TIMEOUT_S} s")


def _print_urls(base: str, data_dir: Path) -> None:
    print(
        f"""
demo: running. Open:
  {base}/                             the live dashboard
  {base}/campaigns/cmp-001/stats     campaign statistics, last hour of stream time
  {base}/campaigns/cmp-002/stats?from=<RFC 3339>&to=<RFC 3339>
  {base}/alerts                       anomaly alerts (the labelled anomaly: cmp-002 goes
                                      silent for 8 minutes, shown in about 3 minutes)
  {base}/metrics                      Prometheus metrics
  {base}/health                       worker health
worker log: {data_dir / "demo-worker.log"}
Press Ctrl-C (or send SIGTERM or SIGHUP) to stop everything.
""",
        flush=True,
    )


def _wait_for_interrupt(children: list[subprocess.Popen[bytes]]) -> None:
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    raise SystemExit("demo: a child process exited; stopping")


def _stop(child: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
