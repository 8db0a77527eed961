"""``python -m bench.provision``: create the app's topics and changelogs, then exit.

The ``DMP_*`` variables name the broker, prefix and partitions; the app reads
them when imported, which is why :func:`bench.load.provision` runs this in a
child process of its own.
"""

from __future__ import annotations

import sys


def main() -> int:
    from dmp_faust.app import app, settings
    from dmp_faust.provision import app_topic_specs, ensure_topics

    app.discover()  # registers the tables, so their changelogs are known
    ensure_topics(
        settings.kafka_bootstrap,
        app_topic_specs(app, settings.partitions, settings.replication_factor),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
