"""The records a trace reads, and the timeline entries made of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fulfil.trace_model import Entry
from fulfil_platform.dead_letter_writer import (
    H_KIND,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_STAGE,
    H_TOPIC,
)
from fulfil_platform.kafka import header


class Record(Protocol):
    """What a trace needs of a record (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Rec:
    """A record built by hand (tests, tools that read logs some other way)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def parse_doc(value: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def parse_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def to_entry(record: Record, doc: dict[str, Any], relation: str) -> Entry:
    def text(name: str) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) else None

    return Entry(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        type=text("type") or "?",
        id=text("id"),
        causation_id=text("causation_id"),
        occurred_at=text("occurred_at"),
        relation=relation,
        doc=doc,
    )


def dead_letter_entry(record: Record) -> Entry:
    raw = record.value or b""
    doc = parse_doc(raw)
    entry = to_entry(record, doc or {}, "dead_letter")
    entry.doc = doc
    entry.raw = raw
    entry.dead_letter = {
        "kind": header(record.headers, H_KIND),
        "reason": header(record.headers, H_REASON),
        "source_topic": header(record.headers, H_TOPIC),
        "source_partition": parse_int(header(record.headers, H_PARTITION)),
        "source_offset": parse_int(header(record.headers, H_OFFSET)),
        "stage": header(record.headers, H_STAGE),
    }
    return entry
