import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from fulfil_platform.logs import (
    bind_event,
    bound_record,
    configure_logging,
    get_logger,
    unbind_event,
)
from schemas.registry import parse_input
from tests.builders.samples import VALID_ORDER

EMAIL = "ann.secret@shop.example"
NAME = "Annabel Secretname"


def _order() -> bytes:
    doc = orjson.loads(orjson.dumps(VALID_ORDER))
    doc["data"]["customer"] = {"customer_id": "c-9", "email": EMAIL, "name": NAME}
    return orjson.dumps(doc)


def test_no_email_name_or_customer_block_reaches_a_log_line() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    event = parse_input(_order())
    log = get_logger("test")
    bind_event(event)
    try:
        log.info("order received", customer=event.data.customer.model_dump(), order=event.data)
        log.info(f"mail to {EMAIL} queued", name=NAME, recipient=EMAIL)
        log.warning("raw payload", payload=_order().decode(), nested={"deep": [{"email": EMAIL}]})
        try:
            raise ValueError(f"smtp refused {EMAIL}")
        except ValueError:
            log.exception("send failed")
    finally:
        unbind_event()
    text = stream.getvalue()
    lines = text.strip().splitlines()
    assert len(lines) == 4
    assert EMAIL not in text
    assert "ann.secret" not in text
    for line in lines:
        record = orjson.loads(line)
        assert record.get("event_id") == "evt-1"
        assert record.get("name") in (None, "[redacted]")
        assert record.get("customer") in (None, "[redacted]")
    assert NAME not in text


def test_console_format_redacts_too() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream)
    get_logger("test").info("hello", email=EMAIL, note=f"contact {EMAIL}")
    assert EMAIL not in stream.getvalue()
    assert "hello" in stream.getvalue()


# ------------------------------------------------------------------ every line, whoever logs it

EVERY_LINE = ("event", "service", "logger", "level", "timestamp")
RECORD_FIELDS = ("event_id", "correlation_id", "causation_id", "topic", "partition", "offset")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging into a buffer for one test; the defaults come back afterwards."""
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer, service="projector", libraries="WARNING")
    try:
        yield buffer
    finally:
        configure_logging("INFO", "json", service="fulfil", libraries="WARNING")


def _lines(buffer: io.StringIO) -> list[dict]:
    docs = [orjson.loads(line) for line in buffer.getvalue().splitlines()]
    for doc in docs:
        assert all(key in doc for key in EVERY_LINE), doc
    return docs


def test_library_lines_are_json_with_the_same_fields_and_redacted(stream, capsys) -> None:
    from fulfil_platform.config import load_settings
    from fulfil_platform.faststream_broker import broker

    broker(load_settings(kafka_bootstrap_servers="127.0.0.1:1"))  # FastStream's loggers exist now
    logging.getLogger("faststream").info("FastStream app starting...")
    logging.getLogger("faststream.access.kafka").warning("consumer for %s stopped", EMAIL)
    logging.getLogger("aiokafka").error('Unable connect to "127.0.0.1:1": %s', NAME)
    logging.getLogger("aiokafka").info("below the libraries' threshold: not shown")
    try:
        raise ValueError(f"smtp refused {EMAIL}")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    docs = _lines(stream)
    assert [d["logger"] for d in docs] == [
        "faststream",
        "faststream.access.kafka",
        "aiokafka",
        "asyncio",
    ]
    assert {d["service"] for d in docs} == {"projector"}
    assert [d["level"] for d in docs] == ["info", "warning", "error", "error"]
    assert "ValueError" in docs[3]["exception"]
    text = stream.getvalue()
    assert EMAIL not in text and "ann.secret" not in text
    assert "\x1b[" not in text
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "", "nothing bypasses the handler"


def test_our_lines_name_their_logger_and_a_stage_may_name_its_service(stream) -> None:
    from fulfil_platform.logs import service_context

    get_logger("allocator.core").info("partition recovered", partition=1)
    with service_context("allocator-router"):
        get_logger("allocator.router").info("routed")
    get_logger("platform.consumer").warning("batch failed", service="allocator-core")
    get_logger("projector").debug("below the level: not shown")
    docs = _lines(stream)
    assert [(d["logger"], d["service"], d["level"]) for d in docs] == [
        ("allocator.core", "projector", "info"),
        ("allocator.router", "allocator-router", "info"),
        ("platform.consumer", "allocator-core", "warning"),
    ]


class Record:
    def __init__(self, value: bytes | None, offset: int = 7) -> None:
        self.topic, self.partition, self.offset, self.value = "orders.v1", 2, offset, value


def test_a_line_about_a_record_names_it_as_far_as_its_bytes_go(stream) -> None:
    log = get_logger("allocator.router")
    good = orjson.dumps(
        {"id": "e-1", "type": "OrderPlaced", "correlation_id": "c-1", "causation_id": "k-1"}
    )
    with bound_record(Record(good)):
        log.warning("input dead-lettered")
        logging.getLogger("faststream.access.kafka").warning("a library line meanwhile")
    for value in (b"{not json", b"[1, 2]", orjson.dumps({"id": 5, "type": "x" * 500}), None):
        with bound_record(Record(value, offset=8)):
            log.warning("input dead-lettered")
    with bound_record(Record(b"ignored"), parse_input(_order())):
        log.warning("shortfall")
    log.info("after: no record")

    docs = _lines(stream)
    for doc in docs[:-1]:
        assert all(key in doc for key in RECORD_FIELDS), doc
        assert (doc["topic"], doc["partition"]) == ("orders.v1", 2)
    assert [docs[0][k] for k in RECORD_FIELDS] == ["e-1", "c-1", "k-1", "orders.v1", 2, 7]
    assert docs[1]["event_id"] == "e-1" and docs[1]["logger"] == "faststream.access.kafka"
    assert [d["event_id"] for d in docs[2:6]] == [None, None, None, None]
    assert len(docs[4]["event_type"]) <= 200
    assert docs[6]["event_id"] == "evt-1" and docs[6]["event_type"] == "OrderPlaced"
    assert not any(key in docs[7] for key in RECORD_FIELDS)


def test_bind_event_names_the_event_and_its_record_until_unbound(stream) -> None:
    event = parse_input(_order())
    bind_event(event, Record(None, offset=3))
    try:
        get_logger("test").info("handling")
    finally:
        unbind_event()
    get_logger("test").info("after")
    first, after = _lines(stream)
    assert (first["event_id"], first["offset"], first["topic"]) == ("evt-1", 3, "orders.v1")
    assert "event_id" not in after and "offset" not in after


def test_console_format_renders_the_same_fields(stream) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", "console", stream=buffer, service="notifier")
    with bound_record(Record(orjson.dumps({"id": "e-9", "correlation_id": "c-9"}))):
        get_logger("notifier.consumer").warning("allocation event quarantined", kind="bad_json")
    logging.getLogger("aiokafka").error("Unable connect to %s", EMAIL)
    first, second = buffer.getvalue().splitlines()
    assert "allocation event quarantined" in first and "[notifier.consumer]" in first
    for field in ("event_id=e-9", "correlation_id=c-9", "offset=7", "partition=2",
                  "topic=orders.v1", "service=notifier", "warning"):  # fmt: skip
        assert field in first, (field, first)
    assert "Unable connect" in second and "[aiokafka]" in second and "error" in second
    assert EMAIL not in buffer.getvalue()
    assert first[:4].isdigit(), "starts with the timestamp"
