"""What the worker asks Kafka to create: partitions, replicas and min.insync.replicas."""

from __future__ import annotations

import pytest

from dmp_faust.app import app
from dmp_faust.provision import TopicSpec, app_topic_specs, min_insync


@pytest.mark.parametrize(("factor", "insync"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_min_insync_lets_one_broker_be_away(factor: int, insync: int) -> None:
    assert min_insync(factor) == insync
    assert factor - min_insync(factor) >= (1 if factor > 1 else 0)


def test_every_topic_and_changelog_gets_the_replication_factor() -> None:
    app.discover()
    specs = app_topic_specs(app, 8, 3)
    changelogs = [s for s in specs if s.name.endswith("-changelog")]
    assert changelogs and len(changelogs) == len(app.tables)
    for spec in specs:
        topic = spec.new_topic()
        assert (topic.num_partitions, topic.replication_factor) == (8, 3)
        assert topic.topic_configs["min.insync.replicas"] == "2"
    assert {s.new_topic().topic_configs.get("cleanup.policy") for s in changelogs} == {"compact"}


def test_a_topics_own_setting_wins_over_the_default_insync() -> None:
    spec = TopicSpec("t", 1, {"min.insync.replicas": "3"}, 3)
    assert spec.new_topic().topic_configs["min.insync.replicas"] == "3"
