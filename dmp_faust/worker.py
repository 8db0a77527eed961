"""``dmp-faust worker``: run a Faust worker of the dmp-faust app.

Options after ``worker`` are Faust's own (``dmp-faust worker --help``); the
log level and web port default to ``DMP_LOG_LEVEL`` and ``DMP_WEB_PORT``.
"""

from __future__ import annotations

import asyncio
import sys


def run_worker(argv: list[str]) -> int:
    _use_uvloop()
    from dmp_faust.domain.segments import RuleError
    from dmp_faust.settings import SettingsError

    try:
        from dmp_faust.app import app, settings
    except RuleError as exc:
        print(f"dmp-faust worker: segment rules refused: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"dmp-faust worker: {exc}", file=sys.stderr)
        return 1
    from dmp_faust.provision import ProvisionError, app_topic_specs, ensure_topics

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not {"-h", "--help"} & set(argv):
        app.discover()  # registers the tables, so their changelogs are known
        try:
            ensure_topics(
                settings.kafka_bootstrap,
                app_topic_specs(app, settings.partitions, settings.replication_factor),
            )
        except (ProvisionError, OSError) as exc:
            print(f"dmp-faust worker: {exc}", file=sys.stderr)
            return 1
    args = ["worker", *argv]
    if not any(a.startswith(("-l", "--loglevel")) for a in argv):
        args += ["--loglevel", settings.log_level]
    if not any(a.startswith("--web-port") for a in argv):
        args += ["--web-port", str(settings.web_port)]
    sys.argv = ["dmp-faust", *args]
    app.main()
    return 0


def _use_uvloop() -> None:
    """uvloop's event loop, where installed: less overhead per callback than asyncio's."""
    try:
        import uvloop
    except ImportError:  # not on this platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
