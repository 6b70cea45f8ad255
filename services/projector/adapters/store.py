"""PostgreSQL side of the projector: load state, write row images, offsets.

One asyncpg connection per projector. Every batch is one transaction:
check the stored offsets (row locks), load what the fold needs, write each
table with one COPY into a temp table plus one `INSERT ... ON CONFLICT`, and
store the new offsets. Identifiers are fixed in this module; every value
travels as a parameter or through COPY.

The connection's search_path selects the schema (live or the rebuild's
shadow), so the same statements serve both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from services.projector.adapters.migrate import check_schema_name
from services.projector.domain.batch import Changes, Keys, LineKey, Loaded
from services.projector.domain.events import Customer
from services.projector.domain.inbounds import InboundLineState, InboundState
from services.projector.domain.orders import LineState, OrderState

TopicPartitionKey = tuple[str, int]  # (topic, partition)


class StalePositions(Exception):
    """The stored offsets moved under us (another instance, a crash mid-commit,
    or a rebuild swapped the schema): nothing was written; re-seek from `stored`."""

    def __init__(self, stored: dict[TopicPartitionKey, int]):
        super().__init__(f"stored offsets differ for {len(stored)} partitions")
        self.stored = stored


# Temp tables live for the session and empty themselves at every commit.
_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS tmp_orders (
    order_id text, warehouse_id text, customer_id text, customer_email text,
    customer_name text, customer_locale text, status text, updated_at timestamptz,
    backordered_since timestamptz, backordered_ever boolean, last_event_type text,
    last_event_id text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_lines (
    order_id text, line_no integer, warehouse_id text, sku text, quantity integer,
    allocated integer, backordered integer, reserved integer, rejected integer,
    cancelled integer, eta date, unit_price numeric(19, 4), currency text, reason text,
    backordered_since timestamptz, updated_at timestamptz, eta_reason text,
    backorder_reason text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_placed (
    order_id text, warehouse_id text, customer_id text, customer_email text,
    customer_name text, customer_locale text, placed_at timestamptz,
    updated_at timestamptz) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_demand (
    warehouse_id text, order_id text, placed_at timestamptz, sku text, day date,
    quantity integer) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_positions (
    warehouse_id text, sku text, available bigint, reserved bigint, incoming bigint,
    next_eta date, shortfall bigint, position_at timestamptz, promise_eta date)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_inbounds (
    warehouse_id text, inbound_id text, supplier text, original_eta date, current_eta date,
    scheduled_at timestamptz, updated_at timestamptz, cancelled_at timestamptz,
    cancel_reason text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_inbound_lines (
    warehouse_id text, inbound_id text, sku text, quantity_expected bigint,
    quantity_received bigint, first_received_at timestamptz, quantity_cancelled bigint)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS tmp_receipts (
    warehouse_id text, receipt_id text, inbound_id text, sku text, quantity integer,
    received_at timestamptz) ON COMMIT DELETE ROWS;
"""

_UPSERT_ORDERS = """
INSERT INTO orders AS o (order_id, warehouse_id, customer_id, customer_email, customer_name,
    customer_locale, status, updated_at, backordered_since, backordered_ever,
    last_event_type, last_event_id)
SELECT order_id, warehouse_id, customer_id, customer_email, customer_name, customer_locale,
    status, updated_at, backordered_since, backordered_ever, last_event_type, last_event_id
FROM tmp_orders
ON CONFLICT (warehouse_id, order_id) DO UPDATE SET
    customer_id = excluded.customer_id,
    customer_email = excluded.customer_email,
    customer_name = excluded.customer_name,
    customer_locale = excluded.customer_locale,
    status = excluded.status,
    updated_at = GREATEST(o.updated_at, excluded.updated_at),
    backordered_since = excluded.backordered_since,
    backordered_ever = excluded.backordered_ever,
    last_event_type = excluded.last_event_type,
    last_event_id = excluded.last_event_id
"""

_UPSERT_LINES = """
INSERT INTO order_lines AS l (order_id, line_no, warehouse_id, sku, quantity, allocated,
    backordered, reserved, rejected, cancelled, eta, unit_price, currency, reason,
    backordered_since, updated_at, eta_reason, backorder_reason)
SELECT * FROM tmp_lines
ON CONFLICT (warehouse_id, order_id, line_no) DO UPDATE SET
    sku = excluded.sku,
    quantity = excluded.quantity,
    allocated = excluded.allocated,
    backordered = excluded.backordered,
    reserved = excluded.reserved,
    rejected = excluded.rejected,
    cancelled = excluded.cancelled,
    eta = excluded.eta,
    unit_price = excluded.unit_price,
    currency = excluded.currency,
    reason = excluded.reason,
    backordered_since = excluded.backordered_since,
    updated_at = excluded.updated_at,
    eta_reason = excluded.eta_reason,
    backorder_reason = excluded.backorder_reason
"""

# OrderPlaced and allocation events may arrive in either order (different
# topics): each writes only its own columns, and shared ones merge commutatively.
_UPSERT_PLACED = """
INSERT INTO orders AS o (order_id, warehouse_id, customer_id, customer_email, customer_name,
    customer_locale, placed_at, updated_at)
SELECT * FROM tmp_placed
ON CONFLICT (warehouse_id, order_id) DO UPDATE SET
    placed_at = LEAST(o.placed_at, excluded.placed_at),
    customer_id = COALESCE(o.customer_id, excluded.customer_id),
    customer_email = COALESCE(o.customer_email, excluded.customer_email),
    customer_name = COALESCE(o.customer_name, excluded.customer_name),
    customer_locale = COALESCE(o.customer_locale, excluded.customer_locale),
    updated_at = GREATEST(o.updated_at, excluded.updated_at)
"""

# Demand counts an order once: only orders new to demand_orders add units.
_ADD_DEMAND = """
WITH new_orders AS (
    INSERT INTO demand_orders (warehouse_id, order_id, placed_at)
    SELECT DISTINCT warehouse_id, order_id, placed_at FROM tmp_demand
    ON CONFLICT DO NOTHING
    RETURNING warehouse_id, order_id
)
INSERT INTO daily_demand AS d (warehouse_id, sku, day, units)
SELECT t.warehouse_id, t.sku, t.day, sum(t.quantity)
FROM tmp_demand t JOIN new_orders n USING (warehouse_id, order_id)
GROUP BY t.warehouse_id, t.sku, t.day
ON CONFLICT (warehouse_id, sku, day) DO UPDATE SET units = d.units + excluded.units
"""

_UPSERT_POSITIONS = """
INSERT INTO sku_backlog AS b (warehouse_id, sku, available, reserved, incoming, next_eta,
    shortfall, position_at, promise_eta)
SELECT * FROM tmp_positions
ON CONFLICT (warehouse_id, sku) DO UPDATE SET
    available = excluded.available,
    reserved = excluded.reserved,
    incoming = excluded.incoming,
    next_eta = excluded.next_eta,
    shortfall = excluded.shortfall,
    position_at = excluded.position_at,
    promise_eta = excluded.promise_eta
"""

# Backlog columns are recomputed from the open lines of the SKUs the batch
# touched (a partial index keeps this to the few open lines per SKU).
_RECOMPUTE_BACKLOG = """
INSERT INTO sku_backlog AS b (warehouse_id, sku, backordered_units, open_orders,
    oldest_backorder_at)
SELECT k.warehouse_id, k.sku, COALESCE(sum(l.backordered), 0), count(DISTINCT l.order_id),
    min(l.backordered_since)
FROM unnest($1::text[], $2::text[]) AS k (warehouse_id, sku)
LEFT JOIN order_lines l
    ON l.warehouse_id = k.warehouse_id AND l.sku = k.sku AND l.backordered > 0
GROUP BY k.warehouse_id, k.sku
ON CONFLICT (warehouse_id, sku) DO UPDATE SET
    backordered_units = excluded.backordered_units,
    open_orders = excluded.open_orders,
    oldest_backorder_at = excluded.oldest_backorder_at
"""

_UPSERT_INBOUNDS = """
INSERT INTO inbounds AS i (warehouse_id, inbound_id, supplier, original_eta, current_eta,
    scheduled_at, updated_at, cancelled_at, cancel_reason)
SELECT * FROM tmp_inbounds
ON CONFLICT (warehouse_id, inbound_id) DO UPDATE SET
    supplier = excluded.supplier,
    original_eta = excluded.original_eta,
    current_eta = excluded.current_eta,
    scheduled_at = excluded.scheduled_at,
    updated_at = excluded.updated_at,
    cancelled_at = excluded.cancelled_at,
    cancel_reason = excluded.cancel_reason
"""

_UPSERT_INBOUND_LINES = """
INSERT INTO inbound_lines AS l (warehouse_id, inbound_id, sku, quantity_expected,
    quantity_received, first_received_at, quantity_cancelled)
SELECT * FROM tmp_inbound_lines
ON CONFLICT (warehouse_id, inbound_id, sku) DO UPDATE SET
    quantity_expected = excluded.quantity_expected,
    quantity_received = excluded.quantity_received,
    first_received_at = excluded.first_received_at,
    quantity_cancelled = excluded.quantity_cancelled
"""

_INSERT_RECEIPTS = "INSERT INTO inbound_receipts SELECT * FROM tmp_receipts ON CONFLICT DO NOTHING"
_INSERT_INBOUND_EVENTS = (
    "INSERT INTO inbound_events (event_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
)

_LOCK_OFFSETS = """
SELECT o.topic, o.partition, o.next_offset, o.applied_command_offset, o.applied_output_index
FROM projector_offsets o
JOIN unnest($1::text[], $2::integer[]) AS k (topic, partition) USING (topic, partition)
ORDER BY o.topic, o.partition
FOR UPDATE OF o
"""

# A NULL position leaves the stored one (partitions whose records carry none).
_SAVE_OFFSETS = """
INSERT INTO projector_offsets AS o (topic, partition, next_offset, updated_at,
    applied_command_offset, applied_output_index)
SELECT topic, partition, next_offset, now(), command_offset, output_index
FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::bigint[], $5::integer[])
    AS k (topic, partition, next_offset, command_offset, output_index)
ON CONFLICT (topic, partition) DO UPDATE SET
    next_offset = excluded.next_offset, updated_at = excluded.updated_at,
    applied_command_offset = COALESCE(excluded.applied_command_offset, o.applied_command_offset),
    applied_output_index = COALESCE(excluded.applied_output_index, o.applied_output_index)
"""


_LINE_COLUMNS = (
    "order_id", "line_no", "warehouse_id", "sku", "quantity", "allocated", "backordered",
    "reserved", "rejected", "cancelled", "eta", "unit_price", "currency", "reason",
    "backordered_since", "updated_at", "eta_reason", "backorder_reason",
)  # fmt: skip


def _unzip(pairs: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in pairs:
        for i in range(width):
            columns[i].append(row[i])
    return columns


async def connect(
    database_url: str, schema: str, *, durable: bool = True, **options: Any
) -> asyncpg.Connection:
    """A connection whose unqualified names resolve in `schema`.

    `durable=False` (the projector's writer) turns off synchronous commit: a
    PostgreSQL crash may then lose the last few hundred milliseconds of commits,
    but rows and offsets are lost together, and the projector's offset check
    re-applies them from Kafka — the same exactly-once result for ~one WAL
    flush less per batch.
    """
    settings = {"search_path": check_schema_name(schema), "application_name": "fulfil-projector"}
    if not durable:
        settings["synchronous_commit"] = "off"
    return await asyncpg.connect(database_url, server_settings=settings, **options)


async def schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'orders'",
        schema,
    )
    return found is not None


class Store:
    """The projector's writes and state loads on one connection."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn

    async def prepare(self) -> None:
        await self.conn.execute(_TEMP_TABLES)

    def transaction(self) -> Any:
        return self.conn.transaction()

    # ------------------------------------------------------------ offsets

    async def init_offsets(
        self, partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """Stored next offsets for `partitions`, creating rows (at 0) that are missing,
        so every later batch can lock its rows."""
        topics, parts = _unzip(sorted(partitions), 2)
        await self.conn.execute(
            """INSERT INTO projector_offsets (topic, partition, next_offset)
               SELECT topic, partition, 0 FROM unnest($1::text[], $2::integer[]) AS k (topic, partition)
               ON CONFLICT DO NOTHING""",
            topics,
            parts,
        )
        rows = await self.conn.fetch(
            """SELECT o.topic, o.partition, o.next_offset FROM projector_offsets o
               JOIN unnest($1::text[], $2::integer[]) AS k (topic, partition) USING (topic, partition)""",
            topics,
            parts,
        )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def lock_offsets(
        self, expected: dict[TopicPartitionKey, int]
    ) -> dict[TopicPartitionKey, tuple[int, int]]:
        """Row-lock the batch's offsets; raise StalePositions unless they are `expected`.
        Returns the last applied allocator position of the partitions that have one."""
        topics, parts = _unzip(sorted(expected), 2)
        rows = await self.conn.fetch(_LOCK_OFFSETS, topics, parts)
        stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        if any(stored.get(tp, 0) != offset for tp, offset in expected.items()):
            raise StalePositions(stored)
        return {
            (r["topic"], r["partition"]): (r["applied_command_offset"], r["applied_output_index"])
            for r in rows
            if r["applied_command_offset"] is not None
        }

    async def save_offsets(
        self,
        offsets: dict[TopicPartitionKey, int],
        applied: dict[TopicPartitionKey, tuple[int, int]] | None = None,
    ) -> None:
        """Next offsets, and the last allocator position applied per partition (if moved)."""
        items = sorted(offsets.items())
        applied = applied or {}
        await self.conn.execute(
            _SAVE_OFFSETS,
            [tp[0] for tp, _ in items],
            [tp[1] for tp, _ in items],
            [offset for _, offset in items],
            [applied[tp][0] if tp in applied else None for tp, _ in items],
            [applied[tp][1] if tp in applied else None for tp, _ in items],
        )

    async def offsets(self) -> dict[TopicPartitionKey, int]:
        rows = await self.conn.fetch("SELECT topic, partition, next_offset FROM projector_offsets")
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    # ------------------------------------------------------------ loads

    async def load(self, keys: Keys) -> Loaded:
        loaded = Loaded()
        conn = self.conn
        if keys.orders:
            whs, ids = _unzip(keys.orders, 2)
            for r in await conn.fetch(
                """SELECT o.warehouse_id, o.order_id, customer_id, customer_email, customer_name,
                          customer_locale, status, updated_at, backordered_since,
                          backordered_ever, last_event_type, last_event_id
                   FROM orders o
                   JOIN unnest($1::text[], $2::text[]) AS k (warehouse_id, order_id)
                     USING (warehouse_id, order_id)""",
                whs,
                ids,
            ):
                customer = (
                    Customer(
                        customer_id=r["customer_id"],
                        email=r["customer_email"],
                        name=r["customer_name"],
                        locale=r["customer_locale"],
                    )
                    if r["customer_id"] is not None
                    else None
                )
                loaded.orders[(r["warehouse_id"], r["order_id"])] = OrderState(
                    order_id=r["order_id"],
                    warehouse_id=r["warehouse_id"],
                    customer=customer,
                    status=r["status"],
                    updated_at=r["updated_at"],
                    backordered_since=r["backordered_since"],
                    backordered_ever=r["backordered_ever"],
                    last_event_type=r["last_event_type"],
                    last_event_id=r["last_event_id"],
                )
            for r in await conn.fetch(
                """SELECT l.warehouse_id, l.order_id, line_no, sku, quantity, allocated, backordered,
                          reserved, rejected, cancelled, eta, unit_price, currency, reason,
                          backordered_since, updated_at, eta_reason, backorder_reason
                   FROM order_lines l
                   JOIN unnest($1::text[], $2::text[]) AS k (warehouse_id, order_id)
                     USING (warehouse_id, order_id)""",
                whs,
                ids,
            ):
                key = (r["warehouse_id"], r["order_id"])
                order = loaded.orders.get(key)
                if order is not None:
                    order.lines[r["line_no"]] = LineState(*list(r.values())[2:])
                    loaded.stored_lines.add((*key, r["line_no"]))
        if keys.inbounds:
            whs, inbound_ids = _unzip(keys.inbounds, 2)
            for r in await conn.fetch(
                """SELECT i.warehouse_id, i.inbound_id, supplier, original_eta, current_eta,
                          scheduled_at, updated_at, cancelled_at, cancel_reason
                   FROM inbounds i
                   JOIN unnest($1::text[], $2::text[]) AS k (warehouse_id, inbound_id)
                     USING (warehouse_id, inbound_id)""",
                whs,
                inbound_ids,
            ):
                loaded.inbounds[(r["warehouse_id"], r["inbound_id"])] = InboundState(*r.values())
            for r in await conn.fetch(
                """SELECT l.warehouse_id, l.inbound_id, sku, quantity_expected,
                          quantity_received, first_received_at, quantity_cancelled
                   FROM inbound_lines l
                   JOIN unnest($1::text[], $2::text[]) AS k (warehouse_id, inbound_id)
                     USING (warehouse_id, inbound_id)""",
                whs,
                inbound_ids,
            ):
                inbound = loaded.inbounds.get((r["warehouse_id"], r["inbound_id"]))
                if inbound is not None:
                    inbound.lines[r["sku"]] = InboundLineState(*list(r.values())[2:])
        if keys.receipts:
            whs, receipt_ids = _unzip(keys.receipts, 2)
            rows = await conn.fetch(
                """SELECT r.warehouse_id, r.receipt_id FROM inbound_receipts r
                   JOIN unnest($1::text[], $2::text[]) AS k (warehouse_id, receipt_id)
                     USING (warehouse_id, receipt_id)""",
                whs,
                receipt_ids,
            )
            loaded.counted_receipts = {(r[0], r[1]) for r in rows}
        if keys.inbound_event_ids:
            rows = await conn.fetch(
                "SELECT event_id FROM inbound_events WHERE event_id = ANY($1::text[])",
                list(keys.inbound_event_ids),
            )
            loaded.seen_inbound_events = {r[0] for r in rows}
        return loaded

    # ------------------------------------------------------------ writes

    async def _copy(self, table: str, rows: list[tuple[Any, ...]]) -> bool:
        if not rows:
            return False
        await self.conn.copy_records_to_table(table, records=rows)
        return True

    async def write(self, changes: Changes, stored_lines: set[LineKey] | None = None) -> None:
        """Write the batch's row images. `stored_lines` (from `load`, same transaction)
        names the order lines that already exist: the others are copied straight
        into order_lines; without it every line goes through the upsert."""
        conn = self.conn
        if changes.orders:
            orders: list[tuple[Any, ...]] = []
            lines: list[tuple[Any, ...]] = []
            new_lines: list[tuple[Any, ...]] = []
            for o in changes.orders:
                c = o.customer
                orders.append(
                    (
                        o.order_id,
                        o.warehouse_id,
                        c.customer_id if c else None,
                        c.email if c else None,
                        c.name if c else None,
                        c.locale if c else None,
                        o.status,
                        o.updated_at,
                        o.backordered_since,
                        o.backordered_ever,
                        o.last_event_type,
                        o.last_event_id,
                    )
                )
                for ln in o.lines.values():
                    new = (
                        stored_lines is not None
                        and (o.warehouse_id, o.order_id, ln.line_no) not in stored_lines
                    )
                    (new_lines if new else lines).append(
                        (
                            o.order_id,
                            ln.line_no,
                            o.warehouse_id,
                            ln.sku,
                            ln.quantity,
                            ln.allocated,
                            ln.backordered,
                            ln.reserved,
                            ln.rejected,
                            ln.cancelled,
                            ln.eta,
                            ln.unit_price,
                            ln.currency,
                            ln.reason,
                            ln.backordered_since,
                            ln.updated_at,
                            ln.eta_reason,
                            ln.backorder_reason,
                        )
                    )
            await self._copy("tmp_orders", orders)
            await conn.execute(_UPSERT_ORDERS)
            if await self._copy("tmp_lines", lines):
                await conn.execute(_UPSERT_LINES)
            if new_lines:
                await conn.copy_records_to_table(
                    "order_lines", records=new_lines, columns=_LINE_COLUMNS
                )
        if changes.placements:
            await self._copy(
                "tmp_placed",
                [
                    (
                        p.order_id,
                        p.warehouse_id,
                        p.customer.customer_id,
                        p.customer.email,
                        p.customer.name,
                        p.customer.locale,
                        p.placed_at,
                        p.occurred_at,
                    )
                    for p in changes.placements
                ],
            )
            await conn.execute(_UPSERT_PLACED)
        if await self._copy(
            "tmp_demand",
            [
                (d.warehouse_id, d.order_id, d.placed_at, d.sku, d.day, d.quantity)
                for d in changes.demand
            ],
        ):
            await conn.execute(_ADD_DEMAND)
        if await self._copy(
            "tmp_positions",
            [
                (
                    p.warehouse_id,
                    p.sku,
                    p.available,
                    p.reserved,
                    p.incoming,
                    p.next_eta,
                    p.shortfall,
                    p.occurred_at,
                    p.promise_eta,
                )
                for p in changes.positions
            ],
        ):
            await conn.execute(_UPSERT_POSITIONS)
        if changes.backlog_skus:
            whs, skus = _unzip(changes.backlog_skus, 2)
            await conn.execute(_RECOMPUTE_BACKLOG, whs, skus)
        if changes.inbounds:
            await self._copy(
                "tmp_inbounds",
                [
                    (
                        i.warehouse_id,
                        i.inbound_id,
                        i.supplier,
                        i.original_eta,
                        i.current_eta,
                        i.scheduled_at,
                        i.updated_at,
                        i.cancelled_at,
                        i.cancel_reason,
                    )
                    for i in changes.inbounds
                ],
            )
            await conn.execute(_UPSERT_INBOUNDS)
            if await self._copy(
                "tmp_inbound_lines",
                [
                    (
                        i.warehouse_id,
                        i.inbound_id,
                        ln.sku,
                        ln.quantity_expected,
                        ln.quantity_received,
                        ln.first_received_at,
                        ln.quantity_cancelled,
                    )
                    for i in changes.inbounds
                    for ln in i.lines.values()
                ],
            ):
                await conn.execute(_UPSERT_INBOUND_LINES)
        if await self._copy(
            "tmp_receipts",
            [
                (r.warehouse_id, r.receipt_id, r.inbound_id, r.sku, r.quantity, r.received_at)
                for r in changes.receipts
            ],
        ):
            await conn.execute(_INSERT_RECEIPTS)
        if changes.inbound_event_ids:
            await conn.execute(_INSERT_INBOUND_EVENTS, changes.inbound_event_ids)
