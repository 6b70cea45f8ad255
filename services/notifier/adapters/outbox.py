"""The outbox in PostgreSQL: rows per (event, channel), consumer offsets, the senders' queue.

Every statement takes its values as parameters. Times come from the caller's
clock (not the database's `now()`), so tests can drive time.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.notifier.domain.model import Notice
from services.notifier.domain.plan import Key, OrderKey, Row

STATUSES = ("pending", "sent", "failed", "superseded")
BACKLOG_STATUSES = ("pending", "failed")


@dataclass(frozen=True)
class Rendered:
    """What a row sends, exactly as stored (re-sent byte for byte after a crash)."""

    message_id: str
    recipient: str | None
    subject: str | None
    body_text: str | None
    body_html: str | None
    body_json: str | None


# A planned row and the message it sends.
Stored = tuple[Row, Rendered]


@dataclass(frozen=True)
class Quarantined:
    """A consumed record the notifier cannot apply, bound for its dead-letter topic.

    `reason` names types and fields, never values (it goes to headers and logs)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    kind: str
    reason: str


class _Rollback(Exception):
    """Ends a trial transaction: nothing it wrote is kept."""


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    channel: str
    kind: str
    event_type: str
    order_id: str | None  # None: a back-in-stock message (about an alert, not an order)
    message_id: str
    recipient: str | None
    subject: str | None
    body_text: str | None
    body_html: str | None
    body_json: str | None
    attempts: int
    created_at: datetime


_INSERT = """
INSERT INTO notifier_outbox (
    event_id, channel, kind, event_type, warehouse_id, order_id, message_id, recipient,
    subject, body_text, body_html, body_json, facts, status, attempts, next_attempt_at,
    superseded_by, note, source_topic, source_partition, source_offset, created_at, updated_at,
    alert_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, 0, $15,
        $16, $17, $18, $19, $20, $21, $21, $22)
ON CONFLICT (event_id, channel) DO NOTHING
"""

_UPDATE_HELD = """
UPDATE notifier_outbox
SET subject = $2, body_text = $3, body_html = $4, body_json = $5, facts = $6::jsonb,
    status = $7, superseded_by = $8, note = $9, updated_at = $10
WHERE id = $1 AND status = 'pending' AND attempts = 0
"""

_SAVE_OFFSET = """
INSERT INTO notifier_offsets (topic, partition, next_offset, updated_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = GREATEST(notifier_offsets.next_offset, EXCLUDED.next_offset),
    updated_at = EXCLUDED.updated_at
"""


_RECORD_DEAD_LETTER = """
INSERT INTO notifier_dead_letters (
    source_topic, source_partition, source_offset, record_key, record_value,
    header_names, header_values, kind, reason, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING
"""


class OutboxTransaction:
    """The consumer's side of one open transaction: it loads what planning a batch needs
    and writes what was planned and rendered, the dead letters and the offsets; so rows
    and offsets are kept together or not at all. It stores; it decides nothing."""

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record]):
        self.conn = conn

    async def load(
        self, event_ids: Sequence[str], order_keys: Collection[tuple[str, str]]
    ) -> tuple[set[Key], dict[OrderKey, list[Row]]]:
        """The (event_id, channel) keys already in the outbox among `event_ids`, and the
        held ETA notices (pending, never attempted) of the (warehouse_id, order_id) orders,
        oldest first per (warehouse, order, channel)."""
        existing: set[Key] = set()
        if event_ids:
            for r in await self.conn.fetch(
                "SELECT event_id, channel FROM notifier_outbox WHERE event_id = ANY($1::text[])",
                list(event_ids),
            ):
                existing.add((r["event_id"], r["channel"]))
        held: dict[OrderKey, list[Row]] = {}
        if not order_keys:
            return existing, held
        warehouses, orders = zip(*sorted(order_keys), strict=True)
        # FOR UPDATE: a sender claiming one of these rows waits for us (or
        # skips it), so a notice is never folded while it is being sent.
        for r in await self.conn.fetch(
            """
            SELECT o.id, o.channel, o.warehouse_id, o.order_id, o.facts, o.next_attempt_at
            FROM notifier_outbox o
            JOIN unnest($1::text[], $2::text[]) AS k(warehouse_id, order_id)
              ON o.warehouse_id = k.warehouse_id AND o.order_id = k.order_id
            WHERE o.status = 'pending' AND o.kind = 'eta_changed' AND o.attempts = 0
            ORDER BY o.id
            FOR UPDATE OF o
            """,
            list(warehouses),
            list(orders),
        ):
            notice = Notice.from_json(r["facts"])
            row = Row(channel=r["channel"], notice=notice, due=r["next_attempt_at"], row_id=r["id"])
            held.setdefault((r["warehouse_id"], r["order_id"], row.channel), []).append(row)
        return existing, held

    async def write(
        self, inserts: Sequence[Stored], updates: Sequence[Stored], now: datetime
    ) -> None:
        """New rows (a key already in the outbox is left as it is) and the held rows
        (locked by `load`) whose notice or status changed."""
        if inserts:
            await self.conn.executemany(
                _INSERT, [_insert_args(row, content, now) for row, content in inserts]
            )
        if updates:
            await self.conn.executemany(
                _UPDATE_HELD, [_update_args(row, content, now) for row, content in updates]
            )

    async def write_dead_letters(self, dead_letters: Sequence[Quarantined], now: datetime) -> None:
        if not dead_letters:
            return
        await self.conn.executemany(
            _RECORD_DEAD_LETTER,
            [
                (
                    d.topic,
                    d.partition,
                    d.offset,
                    d.key,
                    d.value,
                    [k.replace("\x00", "") for k, _ in d.headers],
                    [v for _, v in d.headers],
                    d.kind,
                    d.reason.replace("\x00", ""),
                    now,
                )
                for d in dead_letters
            ],
        )

    async def save_offsets(self, offsets: dict[tuple[str, int], int], now: datetime) -> None:
        """The next offset to read per (topic, partition); never moves backwards."""
        if offsets:
            await self.conn.executemany(
                _SAVE_OFFSET,
                [(topic, partition, offset, now) for (topic, partition), offset in offsets.items()],
            )


def _insert_args(row: Row, out: Rendered, now: datetime) -> tuple[Any, ...]:
    notice = row.notice
    topic, partition, offset = row.source if row.source else (None, None, None)
    return (
        notice.source_id, row.channel, notice.kind, notice.event_type, notice.warehouse_id,
        notice.order_id, out.message_id, out.recipient, out.subject, out.body_text,
        out.body_html, out.body_json, notice.to_json(), row.status, row.due,
        row.superseded_by, row.note, topic, partition, offset, now,
        notice.alert.alert_id if notice.alert else None,
    )  # fmt: skip


def _update_args(row: Row, out: Rendered, now: datetime) -> tuple[Any, ...]:
    return (
        row.row_id, out.subject, out.body_text, out.body_html, out.body_json,
        row.notice.to_json(), row.status, row.superseded_by, row.note, now,
    )  # fmt: skip


class OutboxStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # ------------------------------------------------------------ consumer side

    async def stored_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        rows = await self.pool.fetch(
            "SELECT partition, next_offset FROM notifier_offsets WHERE topic = $1 AND partition = ANY($2::int[])",
            topic,
            list(partitions),
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    @asynccontextmanager
    async def transaction(self, *, keep: bool = True) -> AsyncIterator[OutboxTransaction]:
        """One transaction: committed when the block ends, rolled back if it raises, and
        always rolled back when `keep` is False (a trial: would these rows go through?)."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    yield OutboxTransaction(conn)
                    if not keep:
                        raise _Rollback
            except _Rollback:
                pass

    # ------------------------------------------------------------ dead letters

    async def publish_dead_letters(
        self, publish: Callable[[Quarantined], Awaitable[None]], now: datetime, limit: int = 100
    ) -> int:
        """Hand recorded, unpublished dead letters to `publish`, then mark them; returns how many.

        The rows stay locked while they are published, so two notifier processes never
        publish the same one; a crash between publishing and the commit publishes it again
        (the source position in its headers tells the copies apart from new ones)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT source_topic, source_partition, source_offset, record_key, record_value,
                       header_names, header_values, kind, reason
                FROM notifier_dead_letters WHERE published_at IS NULL
                ORDER BY recorded_at, source_topic, source_partition, source_offset
                LIMIT $1
                FOR UPDATE SKIP LOCKED
                """,
                limit,
            )
            for r in rows:
                await publish(
                    Quarantined(
                        r["source_topic"],
                        r["source_partition"],
                        r["source_offset"],
                        r["record_key"],
                        r["record_value"],
                        tuple(zip(r["header_names"], r["header_values"], strict=True)),
                        r["kind"],
                        r["reason"],
                    )
                )
            if rows:
                await conn.executemany(
                    "UPDATE notifier_dead_letters SET published_at = $4 "
                    "WHERE source_topic = $1 AND source_partition = $2 AND source_offset = $3",
                    [
                        (r["source_topic"], r["source_partition"], r["source_offset"], now)
                        for r in rows
                    ],
                )
            return len(rows)

    # ------------------------------------------------------------ reminders

    async def missing(self, keys: Sequence[Key]) -> list[Key]:
        """The keys not in the outbox yet."""
        if not keys:
            return []
        ids, channels = zip(*keys, strict=True)
        rows = await self.pool.fetch(
            """
            SELECT k.event_id, k.channel
            FROM unnest($1::text[], $2::text[]) AS k(event_id, channel)
            WHERE NOT EXISTS (
                SELECT 1 FROM notifier_outbox o WHERE o.event_id = k.event_id AND o.channel = k.channel)
            """,
            list(ids),
            list(channels),
        )
        return [(r["event_id"], r["channel"]) for r in rows]

    async def insert(self, rows: Sequence[Stored], now: datetime) -> int:
        """Insert new rows (duplicates by key are ignored); returns how many were new."""
        if not rows:
            return 0
        new = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for row, content in rows:
                inserted = await conn.fetchval(
                    _INSERT + " RETURNING id", *_insert_args(row, content, now)
                )
                new += inserted is not None
        return new

    # ------------------------------------------------------------ sender side

    async def claim(
        self, channel: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claimed]:
        """Take up to `limit` due rows of `channel`; they are due again at `lease_until`
        if nobody marks them (a sender that died mid-send), and count one attempt."""
        rows = await self.pool.fetch(
            """
            WITH due AS (
                SELECT id FROM notifier_outbox
                WHERE channel = $1 AND status = 'pending' AND next_attempt_at <= $2
                ORDER BY next_attempt_at, id
                LIMIT $4
                FOR UPDATE SKIP LOCKED
            )
            UPDATE notifier_outbox o
            SET attempts = o.attempts + 1, next_attempt_at = $3, updated_at = $2
            FROM due WHERE o.id = due.id
            RETURNING o.id, o.event_id, o.channel, o.kind, o.event_type, o.order_id, o.message_id,
                      o.recipient, o.subject, o.body_text, o.body_html, o.body_json, o.attempts,
                      o.created_at
            """,
            channel,
            now,
            lease_until,
            limit,
        )
        return sorted((Claimed(**dict(r)) for r in rows), key=lambda c: c.id)

    async def mark_sent(self, row_id: int, now: datetime) -> None:
        await self.pool.execute(
            "UPDATE notifier_outbox SET status = 'sent', sent_at = $2, updated_at = $2, last_error = NULL "
            "WHERE id = $1 AND status = 'pending'",
            row_id,
            now,
        )

    async def mark_retry(
        self, row_id: int, now: datetime, next_attempt_at: datetime, error: str
    ) -> None:
        await self.pool.execute(
            "UPDATE notifier_outbox SET next_attempt_at = $3, last_error = $4, updated_at = $2 "
            "WHERE id = $1 AND status = 'pending'",
            row_id,
            now,
            next_attempt_at,
            error,
        )

    async def mark_failed(self, row_id: int, now: datetime, error: str) -> None:
        await self.pool.execute(
            "UPDATE notifier_outbox SET status = 'failed', last_error = $3, updated_at = $2 "
            "WHERE id = $1 AND status = 'pending'",
            row_id,
            now,
            error,
        )

    async def next_due(self, channel: str) -> datetime | None:
        due: datetime | None = await self.pool.fetchval(
            "SELECT min(next_attempt_at) FROM notifier_outbox WHERE channel = $1 AND status = 'pending'",
            channel,
        )
        return due

    # ------------------------------------------------------------ operators

    async def list(
        self, *, status: str | None = None, channel: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT id, event_id, channel, kind, event_type, order_id, alert_id, status, attempts,
                   next_attempt_at, last_error, message_id, note, created_at, updated_at, sent_at
            FROM notifier_outbox
            WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR channel = $2)
            ORDER BY id DESC
            LIMIT $3
            """,
            status,
            channel,
            limit,
        )
        return [dict(r) for r in rows]

    async def counts(self) -> dict[str, dict[str, int]]:
        rows = await self.pool.fetch(
            "SELECT channel, status, count(*) AS n FROM notifier_outbox GROUP BY channel, status"
        )
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["channel"], {})[r["status"]] = r["n"]
        return out

    async def backlog_counts(self) -> dict[tuple[str, str], int]:
        """Pending and failed rows per (channel, status): the part of the outbox that needs watching."""
        rows = await self.pool.fetch(
            "SELECT channel, status, count(*) AS n FROM notifier_outbox"
            " WHERE status = ANY($1::text[]) GROUP BY channel, status",
            list(BACKLOG_STATUSES),
        )
        return {(r["channel"], r["status"]): r["n"] for r in rows}

    async def retry_failed(
        self, now: datetime, *, ids: builtins.list[int] | None = None, channel: str | None = None
    ) -> builtins.list[int]:
        """Re-queue failed rows: due at once, with a fresh set of attempts; their ids."""
        rows = await self.pool.fetch(
            """
            UPDATE notifier_outbox
            SET status = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1
            WHERE status = 'failed'
              AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
              AND ($3::text IS NULL OR channel = $3)
            RETURNING id
            """,
            now,
            ids or None,
            channel,
        )
        return sorted(r["id"] for r in rows)
