"""`fulfil topics create`, `fulfil publish` and configuration errors, as subprocesses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition

from fulfil_platform import kafka
from schemas.registry import COMMANDS, base_topics, encode
from services.allocator.service_layer.clock import tick
from tests.builders.samples import VALID
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import read_topic

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "store.jsonl"


def test_topics_create_twice_is_harmless(settings, env_for_subprocess) -> None:
    env = env_for_subprocess(settings)
    first = fulfil("topics", "create", "--json", env=env)
    assert first.returncode == 0, first.stderr
    created = orjson.loads(first.stdout)
    assert sorted(created["created"]) == sorted(kafka.all_topics(settings))
    assert set(created["created"]) >= {settings.topic(t) for t in base_topics()}
    assert settings.topic("orders.v1.dlq.redriven") in created["created"]
    second = fulfil("topics", "create", "--json", env=env)
    assert second.returncode == 0, second.stderr
    again = orjson.loads(second.stdout)
    assert again["created"] == []
    assert sorted(again["existing"]) == sorted(created["created"])


async def test_the_command_log_the_rebuild_sources_and_redrive_ledgers_are_kept_forever(
    settings,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    await kafka.create_topics(settings)
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        names = [
            settings.topic(t)
            for t in ("allocator.commands.v1", "orders.v1.dlq.redriven", "orders.v1.dlq",
                      "orders.v1", "inventory.v1", "allocations.v1")
        ]  # fmt: skip
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    finally:
        await admin.close()
    retention = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}.get("retention.ms")
        for answer in answers
        for resource in answer.resources
    }
    assert retention[names[0]] == "-1" and retention[names[1]] == "-1"
    assert retention[names[2]] != "-1", "dead letters keep the cluster's retention"
    # `fulfil rebuild` folds the projector's sources from offset 0 (issue 12, defect 11).
    assert [retention[n] for n in names[3:]] == ["-1", "-1", "-1"]


async def test_publish_reports_bad_lines_and_publishes_good_ones(
    settings, env_for_subprocess, tmp_path
) -> None:
    await kafka.create_topics(settings)
    order = orjson.dumps(VALID["OrderPlaced"])
    receipt = orjson.dumps(VALID["StockReceived"])
    bad_quantity = orjson.loads(order)
    bad_quantity["id"] = "evt-bad"
    bad_quantity["data"]["lines"][0]["quantity"] = -3
    lines = [
        order,
        b"{this is not json",
        receipt,
        b"",
        orjson.dumps(bad_quantity),
        orjson.dumps({**VALID["OrderPlaced"], "type": "OrderTeleported"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    result = fulfil("publish", str(path), "--json", env=env_for_subprocess(settings))

    assert result.returncode == 1
    report = orjson.loads(result.stdout)
    assert report["published"] == 2
    assert [b["line"] for b in report["bad"]] == [2, 5, 6]
    assert "bad_json" in report["bad"][0]["reason"]
    assert "data.lines.0.quantity" in report["bad"][1]["reason"]
    assert "unknown_type" in report["bad"][2]["reason"]
    assert f"{path}:5:" in result.stderr

    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        got = {}
        for base in ("orders.v1", "inventory.v1"):
            topic = settings.topic(base)
            for partition in range(settings.fulfil_partitions):
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                for record in await kafka.read_range(consumer, tp, 0):
                    got[base] = (record.key, record.value)
    finally:
        await consumer.stop()
    assert got["orders.v1"] == (b"wh-1", order)  # published unchanged, keyed by warehouse
    assert got["inventory.v1"] == (b"wh-1", receipt)


async def test_publish_refuses_allocation_events_and_publishes_nothing(
    settings, env_for_subprocess, tmp_path
) -> None:
    """allocations.v1 is the allocator's: an output type in the file is a usage error (exit 2)
    naming the owner, and no line of the file is published, not even the valid inputs."""
    await kafka.create_topics(settings)
    output = {**VALID["OrderPlaced"], "id": "evt-output", "type": "OrderAllocated"}
    path = tmp_path / "outputs.jsonl"
    path.write_bytes(orjson.dumps(VALID["OrderPlaced"]) + b"\n" + orjson.dumps(output) + b"\n")

    result = fulfil("publish", str(path), env=env_for_subprocess(settings))

    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{path}:2" in result.stderr and "OrderAllocated" in result.stderr
    assert "allocator" in result.stderr and "allocations.v1" in result.stderr
    written = await read_topic(settings, "orders.v1")
    assert sum(len(records) for records in written.values()) == 0


@pytest.mark.parametrize("ordered", [False, True], ids=["publish", "publish --ordered"])
async def test_publish_refuses_an_internal_command_naming_its_owner_and_publishes_nothing(
    settings, env_for_subprocess, tmp_path, ordered
) -> None:
    """ClockTicked is the allocator's internal command: it belongs on allocator.commands.v1,
    which only the router and the allocator's clock write. A file carrying one is refused
    whole (exit 2, one line naming the line, the topic and what to run instead), before
    anything is sent, with --ordered too; `fulfil clock tick` writes the tick."""
    await kafka.create_topics(settings)
    now = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    line = orjson.dumps(
        {
            "id": "file-tick-1",
            "type": "ClockTicked",
            "version": 1,
            "source": "sim",
            "occurred_at": now.isoformat(),
            "data": {"now": now.isoformat()},
        }
    )
    order = orjson.dumps(VALID["OrderPlaced"])
    path = tmp_path / "with-tick.jsonl"
    path.write_bytes(b"\n".join([order, line]) + b"\n")
    env = env_for_subprocess(settings)

    result = fulfil("publish", *(["--ordered"] if ordered else []), str(path), env=env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"fulfil: {path}:2: ClockTicked is the allocator's internal command "
        "(allocator.commands.v1): use `fulfil clock tick --now T`"
    )
    assert result.stdout == ""
    for base in ("orders.v1", COMMANDS):
        written = await read_topic(settings, base)
        assert sum(len(records) for records in written.values()) == 0, base

    # What to run instead writes it on every command partition.
    by_hand = fulfil("clock", "tick", "--now", now.isoformat(), env=env)
    assert by_hand.returncode == 0, by_hand.stderr
    commands = await read_topic(settings, COMMANDS)
    assert {p: [r.value for r in records] for p, records in commands.items()} == {
        p: [encode(tick(now, p))] for p in range(settings.fulfil_partitions)
    }


def test_publish_example_file(settings, env_for_subprocess) -> None:
    env = env_for_subprocess(settings)
    assert fulfil("topics", "create", env=env).returncode == 0
    result = fulfil("publish", str(EXAMPLES), env=env)
    assert result.returncode == 0, result.stderr
    assert "published 14 events" in result.stdout


def test_invalid_configuration_is_one_line_and_exit_2(settings, env_for_subprocess) -> None:
    env = env_for_subprocess(settings)
    for name, value in [
        ("FULFIL_PARTITIONS", "lots"),
        ("FULFIL_LOG_FORMAT", "xml"),
        ("KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON"),
        ("SMTP_URL", "mail.example:25"),
    ]:
        result = fulfil("topics", "create", env={**env, name: value})
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert name in result.stderr
        assert "Traceback" not in result.stderr


def test_service_without_broker_exits_2(settings, env_for_subprocess) -> None:
    env = env_for_subprocess(settings)
    env.pop("KAFKA_BOOTSTRAP_SERVERS")
    result = fulfil("allocator", env=env)
    assert result.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in result.stderr


def test_bad_cli_argument_exits_2(settings, env_for_subprocess) -> None:
    result = fulfil("allocator", "--stage", "sideways", env=env_for_subprocess(settings))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
