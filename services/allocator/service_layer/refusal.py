"""An order the router had to refuse, told upstream when it can still tell whose it was.

DESIGN §3 promises `OrderRejected` (reason `invalid`) for an invalid order. The router
cannot write allocations.v1 (only the core does, exactly once), so it writes an internal
`InvalidOrderReceived` command beside the dead letter; the core turns it into the
rejection. Its id derives from the refused event's id (or, without a usable one, from
the record's position), so a router that re-routes after a crash writes the same
command and the core's dedup drops the copy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.contract import InvalidOrderReceived
from schemas.registry import ContractError, encode
from services.allocator.domain.ids import SOURCE, output_id


def refused_order(
    value: bytes, error: ContractError, topic: str, partition: int, offset: int
) -> tuple[bytes, bytes] | None:
    """(key, value) of the `InvalidOrderReceived` for a refused `OrderPlaced` whose
    `order_id` and `warehouse_id` can be read; None for anything else."""
    if not error.issues:
        return None  # oversize, undecodable header, bad JSON: nothing was read
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or doc.get("type") != "OrderPlaced":
        return None
    raw_id = doc.get("id")
    event_id = raw_id if isinstance(raw_id, str) and raw_id else f"{topic}:{partition}:{offset}"
    try:
        command = InvalidOrderReceived.model_validate(
            {
                "id": output_id(f"refused:{event_id}", 0),
                "type": "InvalidOrderReceived",
                "occurred_at": _occurred_at(doc.get("occurred_at")),
                "source": SOURCE,
                "correlation_id": event_id,
                "causation_id": event_id,
                "data": {
                    "order_id": data.get("order_id"),
                    "warehouse_id": data.get("warehouse_id"),
                    "event_id": event_id,
                    "errors": [{"path": p, "message": m} for p, m in error.issues],
                },
            }
        )
    except ValidationError:
        return None  # the ids themselves are unreadable (or the event id is not an id)
    return command.data.warehouse_id.encode(), encode(command)


def _occurred_at(value: Any) -> str:
    """The refused event's own time when it is readable, so the command is the same
    however often it is routed; the epoch otherwise (a time no rule reads)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                return moment.isoformat()
        except ValueError:
            pass
    return datetime(1970, 1, 1, tzinfo=UTC).isoformat()
