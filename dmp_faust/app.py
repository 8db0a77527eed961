"""The Faust application: one object, configured from :class:`Settings`.

Agents (``agents/``), tables (``tables/``) and web views
(``dmp_faust.views``) register themselves on ``app`` when they are imported;
``autodiscover`` imports them when a worker starts.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web.base import BlueprintManager
from prometheus_client import REGISTRY, disable_created_metrics

from dmp_faust.domain.batches import RECORD_MAX_BYTES
from dmp_faust.domain.segments import load_rules
from dmp_faust.fence import Fence, faust_coordinator, wipe_if_dropped
from dmp_faust.metrics import Metrics
from dmp_faust.responses import json_errors
from dmp_faust.settings import Settings
from dmp_faust.stages import crashes, stage_of
from dmp_faust.store import SCHEME as STORE_SCHEME
from dmp_faust.store import install_changelog_queue

log = logging.getLogger(__name__)

settings = Settings.from_env()

# RocksDB options of every table partition (each is a database of its own, 8 per
# table by default). Faust's defaults give each one a 2 GiB block cache and up to
# 3 x 64 MiB of memtables: 56 databases could then ask for over 100 GiB. With
# these, a database holds at most 2 x 4 MiB of memtables and 8 MiB of cached
# blocks; only the big tables (seen_events, profiles, campaign_windows) fill them.
TABLE_OPTIONS = {
    "write_buffer_size": 4 * 2**20,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 2**20,
    "target_file_size_base": 16 * 2**20,
}
segment_rules = load_rules(settings.segments_file)  # RuleError: the worker refuses to start


class App(faust.App):
    """Faust's app, which also records each agent crash for ``/health`` (:mod:`dmp_faust.stages`).

    ``_on_agent_error`` is the hook Faust gives every agent it creates (as its
    ``on_error``), called with the exception before the supervisor restarts it.
    """

    async def _on_agent_error(self, agent: Any, exc: BaseException) -> None:
        crashes.record(stage_of(agent.name), exc)
        await super()._on_agent_error(agent, exc)

    async def _on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        # Before Faust's tables read the changelog offsets they recover from: a worker
        # the group dropped (stopped past the session timeout) empties its databases,
        # which may hold writes it made after its partitions had moved (fence.py).
        emptied = wipe_if_dropped(self, fence)
        if emptied:
            log.warning(
                "dropped from the group while stopped: emptied %d table partitions, to be "
                "rebuilt from their changelogs (%s)",
                len(emptied),
                ", ".join(emptied),
            )
        await super()._on_partitions_assigned(assigned, generation_id)


app = App(
    settings.app_id,
    broker=settings.broker_url,
    broker_credentials=settings.faust_credentials(),  # DMP_KAFKA_SECURITY_PROTOCOL & co.
    logging_config=settings.logging_config(),  # no record bytes or SASL secrets in the log
    # Faust's RocksDB store, which skips changelog records a worker wrote after it had
    # lost their partition (dmp_faust/store.py).
    store=f"{STORE_SCHEME}://",
    datadir=str(settings.data_dir),
    web_host=settings.web_host,
    web_port=settings.web_port,
    canonical_url=f"http://{settings.web_host}:{settings.web_port}",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    # Not Faust's transactions, whatever DMP_PROCESSING_GUARANTEE says: in faust-streaming
    # 0.15 they cover neither sends nor table changelogs (Topic.send passes no
    # transactional id), and a worker killed mid-transaction stops at the next rebalance
    # with a ConsistencyError (tests/chaos found it). Exactness comes from positions kept
    # in the table values instead; see docs/RELIABILITY.md.
    processing_guarantee="at_least_once",
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    # A killed worker's partitions move on after this long (Faust's default is 60 s).
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=max(1, settings.session_timeout_s // 3),
    # Let sends gather for a few ms: one produce request carries many records.
    producer_linger=0.005,
    # aiokafka queues one record batch per partition at a time: a take's output sent as
    # Faust's default 16 KiB batches went out one round trip per batch (over a second
    # for a take of 64 records). A batch holds up to one internal record's bound.
    producer_max_batch_size=RECORD_MAX_BYTES,
    autodiscover=["agents", "tables", "dmp_faust.views"],
    origin="dmp_faust",
    web_application_options={"middlewares": [json_errors]},
    # None of Faust's own web pages: /table/ reads any table key (personal data, no
    # token), /router/ lists the cluster, / and /stats/ and /graph/ show internals.
    # Routing is ours (dmp_faust/web.py). Set here, so no APP_WEB_* variable can turn
    # them back on.
    web_tables_enabled=False,
    web_router_enabled=False,
    web_stats_enabled=False,
    web_graph_enabled=False,
    web_metrics_enabled=False,
)
# With its statistics off, Faust mounts a "production index" at / that no setting
# turns off; and a later Faust may add pages of its own. So no Faust blueprint is
# applied at all: every route a worker serves is one of ours (an @app.page), which
# tests/integration/test_security.py checks against its list of routes.
app.web.blueprints = BlueprintManager()
# Recovery takes no changelog record fetched before the latest rebalance (store.py).
install_changelog_queue(app)

metrics = Metrics.create(REGISTRY)
if not settings.metrics_created:  # a *_created series per counter doubles /metrics for little
    disable_created_metrics()
# Checked by every stage before it writes: a worker dropped from the group (paused past
# the session timeout) writes nothing when it wakes; see dmp_faust/fence.py.
fence = Fence(faust_coordinator(app), settings.session_timeout_s)
setup_prometheus_sensors(app, pattern="/metrics", registry=REGISTRY, name_prefix="faust")
