"""Read queries over the notifier's own tables, for operator tools (`fulfil trace`).

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


async def order_notifications(conn: asyncpg.Connection, warehouse_id: str, order_id: str) -> list[dict[str, Any]] | None:
    """The outbox rows of one order, oldest first, without message or recipient;
    None when the outbox does not exist yet (the notifier never ran here)."""
    if await conn.fetchval("SELECT to_regclass('notifier_outbox')") is None:
        return None
    return [dict(row) for row in await conn.fetch(_ORDER_NOTIFICATIONS, warehouse_id, order_id)]
