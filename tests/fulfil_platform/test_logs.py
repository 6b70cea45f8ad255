import io

import orjson

from fulfil_platform.logs import bind_event, configure_logging, get_logger, unbind_event
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
