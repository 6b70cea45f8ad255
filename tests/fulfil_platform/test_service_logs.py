"""A real run: the allocator, projector and notifier as processes against the real broker and
PostgreSQL; every line they write, on stdout and stderr, is one JSON object an operator can
search by service, logger, level and time, and a line about a record names the record."""

from __future__ import annotations

from typing import Any

import orjson

from fulfil_platform import kafka
from schemas.registry import ALLOCATIONS, ORDERS
from tests.builders.inputs import Events
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import publish, wait_for
from tests.processes import Service
from tests.services.notifier.conftest import SmtpServer, notifier_settings_for

EVERY_LINE = ("event", "service", "logger", "level", "timestamp")
RECORD_FIELDS = ("event_id", "correlation_id", "causation_id", "topic", "partition", "offset")
SERVICES = {
    "allocator": {"allocator", "allocator-router", "allocator-core"},
    "projector": {"projector"},
    "notifier": {"notifier"},
}
SECRET_NAME = "Annabel Secretname"
SECRET_EMAIL = "annabel.secret@customer.example"


def parsed(service: Service) -> list[dict[str, Any]]:
    """Every line of the service's output as a dict; fails on the first that is not one."""
    docs = []
    for stream, line in service.lines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(
                f"{service.name} {stream}: not a JSON object: {line[:500]}"
            ) from None
        assert isinstance(doc, dict), f"{service.name} {stream}: {line[:500]}"
        missing = [key for key in EVERY_LINE if key not in doc]
        assert not missing, f"{service.name} {stream}: no {missing} in {line[:500]}"
        assert doc["service"] in SERVICES[service.name], line[:500]
        if "offset" in doc:  # a line about a record names it whole
            absent = [key for key in RECORD_FIELDS if key not in doc]
            assert not absent, (
                f"{service.name} {stream}: record line without {absent}: {line[:500]}"
            )
        docs.append(doc)
    return docs


def lines_with(service: Service, event: str) -> list[dict[str, Any]]:
    found = []
    for _, line in service.lines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # parsed() reports it
        if isinstance(doc, dict) and doc.get("event") == event:
            found.append(doc)
    return found


def _poison_inputs() -> list[bytes]:
    bad_schema = {
        "id": "bad-order-1",
        "type": "OrderPlaced",
        "version": 1,
        "correlation_id": "corr-bad-1",
        "causation_id": "cause-bad-1",
        "data": {"customer": {"email": SECRET_EMAIL, "name": SECRET_NAME}},
    }
    unknown = {"id": "bad-order-2", "type": "OrderTeleported", "correlation_id": "corr-bad-2"}
    return [b"{not json", orjson.dumps(bad_schema), orjson.dumps(unknown)]


def _poison_outputs() -> list[bytes]:
    unknown = {
        "id": "bad-out-1",
        "type": "OrderTeleported",
        "version": 1,
        "correlation_id": "corr-out-1",
        "causation_id": "cause-out-1",
        "data": {"email": SECRET_EMAIL},
    }
    return [b"not an event at all", orjson.dumps(unknown)]


async def test_every_line_of_a_real_run_is_one_json_object_with_the_searchable_fields(
    settings, test_database, env_for_subprocess, spawn
) -> None:
    smtp = SmtpServer()
    smtp.start()
    try:
        await _run(settings, test_database, env_for_subprocess, spawn, smtp)
    finally:
        smtp.stop()


async def _run(settings, test_database, env_for_subprocess, spawn, smtp) -> None:
    notifier = notifier_settings_for(
        settings, test_database, smtp_url=smtp.url, webhook_url=None, fulfil_log_level="DEBUG"
    )
    await kafka.create_topics(notifier)
    ev = Events(prefix="logs")
    named = ev.order_placed(
        "ord-named",
        customer={"customer_id": "c-n", "email": SECRET_EMAIL, "name": SECRET_NAME, "locale": "en"},
    )
    inputs = [*mixed_stream(300, seed=17), named]
    await publish(notifier, inputs)
    await publish(notifier, _poison_inputs(), topic=ORDERS)
    # On the output topic before the core starts: it reads past records without its headers.
    await publish(notifier, _poison_outputs(), topic=ALLOCATIONS)
    env = env_for_subprocess(notifier)
    services = {name: spawn(name, [name], env) for name in SERVICES}

    async def handled() -> bool:
        for service in services.values():
            assert service.running(), f"{service.name} exited: {service.output()[-3000:]}"
        return (
            len(lines_with(services["allocator"], "input dead-lettered")) == 3
            and len(lines_with(services["projector"], "record skipped")) >= 2
            and len(lines_with(services["notifier"], "allocation event quarantined")) == 2
            and len(smtp.mails) > 0
        )

    await wait_for(handled, timeout=180, interval=0.5, what="every service to handle its records")
    for service in services.values():
        assert await service.terminate() == 0, service.output()[-3000:]

    docs = {name: parsed(service) for name, service in services.items()}
    text = "".join(service.output() for service in services.values())
    for secret in (SECRET_EMAIL, SECRET_NAME, "@shop.example", "Unclosed"):
        assert secret not in text, secret
    assert "\x1b[" not in text, "no terminal colour codes"

    dead = {d["event_id"]: d for d in lines_with(services["allocator"], "input dead-lettered")}
    assert set(dead) == {None, "bad-order-1", "bad-order-2"}
    assert dead["bad-order-1"]["correlation_id"] == "corr-bad-1"
    assert dead["bad-order-1"]["causation_id"] == "cause-bad-1"
    assert dead["bad-order-1"]["event_type"] == "OrderPlaced"
    assert {d["topic"] for d in dead.values()} == {notifier.topic(ORDERS)}
    assert {d["service"] for d in dead.values()} == {"allocator-router"}
    assert len({(d["partition"], d["offset"]) for d in dead.values()}) == 3
    services_seen = {d["service"] for d in docs["allocator"]}
    assert {"allocator", "allocator-router", "allocator-core"} <= services_seen
    # FastStream's own lines (consumer assignment, shutdown) arrive as JSON too.
    assert any(d["logger"].startswith("faststream") for d in docs["allocator"])

    for service, event in (
        ("projector", "record skipped"),
        ("notifier", "allocation event quarantined"),
    ):
        found = {d["event_id"]: d for d in lines_with(services[service], event)}
        assert "bad-out-1" in found and None in found, (service, found)
        line = found["bad-out-1"]
        assert (line["correlation_id"], line["causation_id"]) == ("corr-out-1", "cause-out-1")
        assert line["topic"] == notifier.topic(ALLOCATIONS)
    for name, lines in docs.items():
        assert any(d["level"] == "info" for d in lines), name
