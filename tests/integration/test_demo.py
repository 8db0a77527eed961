"""``dmp-faust demo`` stops its broker, worker and generator on SIGTERM and SIGHUP, as
on Ctrl-C, and prints the dashboard's URL first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmp_faust import kafka_local
from tests.integration.support import PROJECT, free_port, wait_until

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_the_demo_stops_everything_on_a_signal(tmp_path: Path, stop: signal.Signals) -> None:
    kafka_port, web_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DMP_")},
        "DMP_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "DMP_WEB_PORT": str(web_port),
        "DMP_DATA_DIR": str(tmp_path),
        "DMP_TOPIC_PREFIX": "demo",
        "DMP_DEMO_RATE": "20",
    }
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "dmp_faust.cli", "demo"],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(
            lambda: demo.poll() is None and "demo: running" in log.read_text(), 180, "the demo"
        )
        urls = [line.split()[0] for line in log.read_text().splitlines() if "http://" in line]
        assert urls[0] == f"http://localhost:{web_port}/", urls
        assert listening(kafka_port) and listening(web_port)
        demo.send_signal(stop)
        assert demo.wait(120) == 0, log.read_text()[-2000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            kafka_local.stop(tmp_path / "kafka")
    text = log.read_text()
    assert "demo: stopped." in text, text[-2000:]
    deadline = time.monotonic() + 10
    while (listening(kafka_port) or listening(web_port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not listening(web_port), "the worker still answers"
    assert not listening(kafka_port), "the broker still listens"
    assert kafka_local.status(tmp_path / "kafka") is None
