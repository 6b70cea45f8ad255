"""Read queries over the notifier's own tables, for operator tools (`fulfil trace`, `fulfil demo`,
`fulfil status`).

Tools ask here instead of running SQL on the notifier's tables: the columns
they may see are chosen by the notifier, and never include the rendered
message or the recipient.
"""

from __future__ import annotations

from typing import Any

import asyncpg

_ORDER_NOTIFICATIONS = """
SELECT event_id, channel, kind, event_type, status, attempts, created_at, sent_at,
       next_attempt_at, superseded_by, last_error, note
FROM notifier_outbox
WHERE warehouse_id = $1 AND order_id = $2
ORDER BY created_at, id
"""
_STORED_OFFSETS = "SELECT topic, partition, next_offset FROM notifier_offsets"
_PENDING = "SELECT count(*) FROM notifier_outbox WHERE status = 'pending'"
_STORED_POSITIONS = "SELECT topic, partition, next_offset, updated_at FROM notifier_offsets"
_OUTBOX_COUNTS = """
SELECT channel, status, count(*) AS n, max(sent_at) AS last_sent_at
FROM notifier_outbox GROUP BY channel, status ORDER BY channel, status
"""


async def order_notifications(
    conn: asyncpg.Connection, warehouse_id: str, order_id: str
) -> list[dict[str, Any]] | None:
    """The outbox rows of one order, oldest first, without message or recipient;
    None when the outbox does not exist yet (the notifier never ran here)."""
    if await conn.fetchval("SELECT to_regclass('notifier_outbox')") is None:
        return None
    return [dict(row) for row in await conn.fetch(_ORDER_NOTIFICATIONS, warehouse_id, order_id)]


async def stored_offsets(conn: asyncpg.Connection) -> dict[tuple[str, int], int]:
    """How far the notifier has handled each (topic, partition): its next offset.
    Raises asyncpg's UndefinedTableError before the notifier has migrated."""
    return {(r[0], r[1]): r[2] for r in await conn.fetch(_STORED_OFFSETS)}


async def pending_count(conn: asyncpg.Connection) -> int:
    """Outbox messages still pending (not yet sent). Raises before the notifier has migrated."""
    return int(await conn.fetchval(_PENDING))


async def stored_positions(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every (topic, partition) the notifier reads: its next offset and when a batch last
    stored it. Raises asyncpg's UndefinedTableError before the notifier has migrated."""
    return [dict(r) for r in await conn.fetch(_STORED_POSITIONS)]


async def outbox_counts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Outbox messages per (channel, status), with the last time one was sent. Raises
    asyncpg's UndefinedTableError before the notifier has migrated."""
    return [dict(r) for r in await conn.fetch(_OUTBOX_COUNTS)]
