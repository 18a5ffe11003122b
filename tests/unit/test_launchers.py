"""Launcher configuration that needs no running service."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.embedded.kafka import ensure_kafka_libs, new_cluster_id, server_properties
from streamapp.embedded.postgres import find_postgres_bindir
from streamapp.errors import ConfigurationError
from streamapp.factory import broker_urls


def test_server_properties_are_loopback_single_node_and_test_friendly(tmp_path: Path) -> None:
    props = server_properties(tmp_path, 19092, 19093)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["node.id"] == "1"
    assert props["offsets.topic.num.partitions"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path)


def test_broker_urls_accept_a_comma_list() -> None:
    assert broker_urls("a:1, b:2") == ["kafka://a:1", "kafka://b:2"]
    with pytest.raises(ConfigurationError):
        broker_urls(" , ")


def test_missing_pom_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Kafka pom not found"):
        ensure_kafka_libs(tmp_path, tmp_path / "nope.xml")


def test_postgres_bindir_must_hold_the_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="initdb, postgres"):
        find_postgres_bindir(tmp_path)


def test_cluster_ids_never_look_like_an_option() -> None:
    # One id in 64 would start with '-' if drawn naively; 5000 draws miss that with odds of about e^-78.
    ids = [new_cluster_id() for _ in range(5000)]
    assert all(len(cid) == 22 and not cid.startswith("-") for cid in ids)
    assert len(set(ids)) == len(ids)
