"""schemas/asyncapi.json: current, structurally valid AsyncAPI 3.0, and complete."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from jsonschema import Draft7Validator

from fulfil import asyncapi
from schemas.registry import (
    ALLOCATIONS,
    COMMAND_TYPES,
    COMMANDS,
    DLQ_SUFFIX,
    INVENTORY,
    ORDERS,
    OUTPUT_TYPES,
    REGISTRY,
    base_topics,
)
from services.notifier.entrypoints.app import NOTIFIER_GROUP

# Consumers that quarantine what they cannot apply name the topic after their group.
GROUP_DEAD_LETTERS = (NOTIFIER_GROUP + DLQ_SUFFIX,)


@pytest.fixture(scope="module")
def fresh() -> bytes:
    return asyncapi.render()


@pytest.fixture(scope="module")
def document(fresh: bytes) -> dict[str, Any]:
    return json.loads(fresh)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are expected: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        key = unquote(part).replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _message_names(document: dict[str, Any], channel: dict[str, Any]) -> set[str]:
    return {_resolve(document, ref["$ref"])["name"] for ref in channel["messages"].values()}


def test_committed_document_is_current(fresh: bytes) -> None:
    assert asyncapi.ASYNCAPI.read_bytes() == fresh, (
        "run `make asyncapi`: schemas/asyncapi.json is stale"
    )


def test_generation_is_deterministic_and_ignores_the_environment(
    fresh: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFIL_TOPIC_PREFIX", "staging-")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.internal:9093")
    monkeypatch.setenv("FULFIL_MAX_MESSAGE_BYTES", "2048")
    assert asyncapi.render() == fresh
    text = fresh.decode()
    for leak in (
        " object at 0x",
        str(Path(asyncapi.__file__).resolve().parents[1]),
        "<function",
        "<locals>",
    ):
        assert leak not in text, f"{leak!r} leaked into the document"


def test_generation_connects_nowhere(fresh: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the documentation broker must not connect")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert asyncapi.render() == fresh


def test_structure_is_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    for ref in _refs(document):
        _resolve(document, ref)  # every reference resolves
    for name, channel in document["channels"].items():
        assert channel["address"], name
        assert channel["messages"], f"channel {name} carries no message"
        for ref in channel["messages"].values():
            assert ref["$ref"].startswith("#/components/messages/"), ref
    for name, operation in document["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/"), name
        _resolve(document, channel_ref)
        assert operation["messages"], f"operation {name} names no message"
        for ref in operation["messages"]:
            # An operation's messages are a subset of its channel's.
            assert ref["$ref"].startswith(channel_ref + "/messages/"), (name, ref)
            _resolve(document, ref["$ref"])


def test_payload_schemas_are_valid(document: dict[str, Any]) -> None:
    for name, message in document["components"]["messages"].items():
        assert message["name"] == name
        assert message["payload"]["$ref"].startswith("#/components/schemas/"), name
    for name, schema in document["components"]["schemas"].items():
        # AsyncAPI 3.0's default schema format is a superset of JSON Schema draft 07.
        Draft7Validator.check_schema(schema)
        assert schema.get("title") == name, name


def test_every_event_type_is_a_message_with_its_payload_schema(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    assert set(REGISTRY) <= set(messages), (
        f"missing messages: {sorted(set(REGISTRY) - set(messages))}"
    )
    assert set(REGISTRY) == COMMAND_TYPES | OUTPUT_TYPES
    for name, spec in REGISTRY.items():
        payload = _resolve(document, messages[name]["payload"]["$ref"])
        assert payload["type"] == "object", name
        assert payload["properties"]["type"]["const"] == name
        assert set(spec.model.model_fields) == set(payload["properties"]), name
        assert {"id", "type", "occurred_at", "source", "data"} <= set(payload["required"]), name
        data = _resolve(document, payload["properties"]["data"]["$ref"])
        assert data["type"] == "object" and data["properties"], name


def test_every_topic_has_its_channels_and_events(document: dict[str, Any]) -> None:
    by_address: dict[str, list[dict[str, Any]]] = {}
    for channel in document["channels"].values():
        by_address.setdefault(channel["address"], []).append(channel)
    # Unprefixed: the shared topics, the .dlq topics included, and the consumers' own
    # quarantine topics, named after their groups.
    assert set(base_topics()) | set(GROUP_DEAD_LETTERS) <= set(by_address)
    assert {a for a in by_address if a not in base_topics()} <= {
        a for a in by_address if a.endswith(DLQ_SUFFIX)
    }
    assert ALLOCATIONS + DLQ_SUFFIX not in by_address, "nobody dead-letters to allocations.v1.dlq"
    expected = {
        ORDERS: {n for n, s in REGISTRY.items() if s.topic == ORDERS},
        INVENTORY: {n for n, s in REGISTRY.items() if s.topic == INVENTORY},
        COMMANDS: set(COMMAND_TYPES),
        ALLOCATIONS: set(OUTPUT_TYPES),
    }
    assert expected[ORDERS] == {
        "OrderPlaced",
        "OrderCancelled",
        "OrderLinesCancelled",
        "OrderPolicyChanged",
        "BackorderConsentGiven",
        "StockAlertRequested",
        "StockAlertCancelled",
    }
    for topic, channels in by_address.items():
        wanted = {"DeadLetter"} if topic.endswith(DLQ_SUFFIX) else expected[topic]
        for channel in channels:
            assert _message_names(document, channel) == wanted, topic


def test_every_topic_has_producers_and_consumers(document: dict[str, Any]) -> None:
    actions: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        address = _resolve(document, operation["channel"]["$ref"])["address"]
        actions.setdefault(address, set()).add(operation["action"])
    for topic in (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS):
        assert actions.get(topic) == {"send", "receive"}, topic
    for topic in {a for a in actions if a.endswith(DLQ_SUFFIX)} | set(GROUP_DEAD_LETTERS):
        assert actions.get(topic) == {"send"}, topic


def test_the_notifier_documents_its_own_dead_letter_topic(document: dict[str, Any]) -> None:
    sent = {
        (name.split(":")[0], _resolve(document, op["channel"]["$ref"])["address"])
        for name, op in document["operations"].items()
        if op["action"] == "send"
    }
    assert ("notifier", NOTIFIER_GROUP + DLQ_SUFFIX) in sent


def test_the_faststream_apps_are_in_the_document(document: dict[str, Any]) -> None:
    # The router's real FastStream app and every service's describe(): titles name the operations.
    received = {
        (name.split(":")[0], _resolve(document, op["channel"]["$ref"])["address"])
        for name, op in document["operations"].items()
        if op["action"] == "receive"
    }
    assert {
        ("allocator-router", ORDERS),
        ("allocator-router", INVENTORY),
        ("allocator-core", COMMANDS),
        ("notifier", ALLOCATIONS),
        ("projector", ALLOCATIONS),
        ("projector", ORDERS),
        ("projector", INVENTORY),
    } <= received
