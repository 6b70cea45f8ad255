"""What `fulfil trace` shows: the entries of one order's history and the
document `--json` prints (the text tree is drawn from the same objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fulfil.trace_summary import redact, summarize
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS

_LATEST = datetime.max.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime:
    """An ISO time with a zone; anything else sorts last."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return _LATEST
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return _LATEST


@dataclass
class Entry:
    """One record in the order's history."""

    topic: str
    partition: int
    offset: int
    type: str
    id: str | None
    causation_id: str | None
    occurred_at: str | None
    relation: str  # order | output | cause | inbound | dead_letter
    doc: dict[str, Any] | None = None  # the parsed envelope (None: not JSON)
    raw: bytes = b""
    command_offsets: list[int] = field(default_factory=list)
    output_index: int | None = None
    dead_letter: dict[str, Any] | None = None
    dead_lettered_as: str | None = None  # this record's dead letter (DLQ topic:partition:offset)

    @property
    def data(self) -> dict[str, Any]:
        data = (self.doc or {}).get("data")
        return data if isinstance(data, dict) else {}

    def sort_key(self) -> tuple[datetime, int, int, str, int, int]:
        moment = parse_time(self.occurred_at)
        command = self.command_offsets[0] if self.command_offsets else 1 << 62
        index = 0 if self.output_index is None else 1 + self.output_index
        return (moment, command, index, self.topic, self.partition, self.offset)

    def document(self, show_pii: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "type": self.type,
            "id": self.id,
            "causation_id": self.causation_id,
            "occurred_at": self.occurred_at,
            "summary": summarize(self, show_pii),
            "relation": self.relation,
            "command_offset": self.command_offsets[0] if self.command_offsets else None,
            "output_index": self.output_index,
        }
        if len(self.command_offsets) > 1:
            item["command_copies"] = self.command_offsets
        if self.dead_lettered_as is not None:
            item["dead_lettered_as"] = self.dead_lettered_as
        if self.doc is not None:
            item["data"] = self.data if show_pii else redact(self.data)
        if self.dead_letter is not None:
            item["dead_letter"] = self.dead_letter
            text = self.raw[:2_000].decode("utf-8", "replace")
            item["raw"] = text if show_pii else redact({"raw": text})["raw"]
        return item


@dataclass
class Trace:
    order_id: str
    warehouse_id: str | None
    command_partition: int | None
    inventory_partition: int | None
    entries: list[Entry]
    topics: dict[str, str]  # base name -> actual (prefixed) name
    scan_notes: list[str] = field(default_factory=list)
    # Inputs of the order but no outputs: said last, after the outbox's note.
    awaiting_outputs: bool = False
    notifications: list[dict[str, Any]] = field(default_factory=list)
    notification_note: str | None = None
    records_read: int = 0
    seconds: float = 0.0

    @property
    def found(self) -> bool:
        return bool(self.entries)

    @property
    def notes(self) -> list[str]:
        notes = list(self.scan_notes)
        if self.notification_note:
            notes.append(self.notification_note)
        if self.awaiting_outputs:
            notes.append("no allocation events yet: is the allocator running and caught up?")
        return notes

    def customer(self) -> dict[str, Any] | None:
        for entry in self.entries:
            if entry.type == "OrderPlaced" and entry.relation == "order":
                customer = entry.data.get("customer")
                return customer if isinstance(customer, dict) else None
        return None

    def document(self, show_pii: bool = False) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "warehouse_id": self.warehouse_id,
            "command_partition": self.command_partition,
            "partitions": {
                self.topics[ORDERS]: "all",
                self.topics[COMMANDS]: self.command_partition,
                self.topics[ALLOCATIONS]: self.command_partition,
                self.topics[INVENTORY]: self.inventory_partition,
            },
            "timeline": [entry.document(show_pii) for entry in self.entries],
            "notifications": self.notifications,
            "notes": self.notes,
            "scanned": {"records": self.records_read, "seconds": round(self.seconds, 3)},
        }
