"""One batch of Kafka records → one PostgreSQL transaction (exactly once).

Shared by the live projector and the rebuild: decode the records, then in a
single transaction lock and check the stored offsets, load the state the
batch touches, fold it (pure), write every table set-based and store the new
offsets. Either all of it commits or none of it does, so a crash at any
point neither loses nor double-counts a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fulfil_platform.logs import bound_record, get_logger
from schemas.allocation_headers import Position, position_of
from schemas.registry import ALLOCATIONS
from services.projector.adapters.decode import Skip, decoder_for
from services.projector.adapters.store import Store, TopicPartitionKey
from services.projector.domain.batch import fold_batch, keys_of
from services.projector.domain.events import Event
from services.projector.service_layer.resilience import is_poison

log = get_logger("projector")


# The allocator's (command offset, output index) of an allocations.v1 record.
Item = tuple[int, Event | None, Position | None]


@dataclass(slots=True)
class Decoded:
    """A batch's records, decoded once and kept across retries."""

    # Per partition: (offset, event or None, allocator position or None), in offset order.
    records: dict[TopicPartitionKey, list[Item]] = field(default_factory=dict)
    skipped: int = 0
    # The Kafka records themselves: a record that cannot be stored is dead-lettered as it came.
    sources: list[Any] = field(default_factory=list)

    def source(self, tp: TopicPartitionKey, offset: int) -> Any:
        for record in self.sources:
            if record.offset == offset and record.partition == tp[1] and record.topic == tp[0]:
                return record
        raise LookupError(f"{tp[0]}:{tp[1]}@{offset} is not in this batch")


def decode_batch(records: Iterable[Any], prefix: str, max_bytes: int) -> Decoded:
    decoded = Decoded()
    _decode_into(decoded, records, len(prefix), max_bytes)
    return decoded


# Records decoded between two yields to the event loop: small enough that a
# PostgreSQL reply to the batch in flight waits at most a fraction of a millisecond.
DECODE_CHUNK = 128


async def decode_batch_interleaved(
    records: Sequence[Any], prefix: str, max_bytes: int, chunk: int = DECODE_CHUNK
) -> Decoded:
    """decode_batch in small chunks, yielding to the event loop between them, so the
    decoding of the next batch fills the time the batch in flight waits for
    PostgreSQL (one thread: a single synchronous block would overlap only one
    round trip of the transaction)."""
    decoded = Decoded()
    cut = len(prefix)
    for start in range(0, len(records), chunk):
        _decode_into(decoded, records[start : start + chunk], cut, max_bytes)
        await asyncio.sleep(0)
    return decoded


def _decode_into(decoded: Decoded, records: Iterable[Any], cut: int, max_bytes: int) -> None:
    by_partition = decoded.records
    records = list(records)
    decoded.sources.extend(records)
    topic: str | None = None
    partition = -1
    items: list[Item] = []
    decoder: Any = None
    positioned = False
    for record in records:
        if record.partition != partition or record.topic != topic:
            # Records come grouped by partition: look up the list and the decoder once per run.
            topic, partition = record.topic, record.partition
            items = by_partition.setdefault((topic, partition), [])
            decoder = decoder_for(topic[cut:], max_bytes)
            positioned = topic[cut:] == ALLOCATIONS
        try:
            event = decoder(record.value)
        except Skip as exc:
            # Offsets and the reason only: the payload may hold customer data.
            with bound_record(record):
                log.warning("record skipped", kind=exc.kind, reason=exc.reason)
            decoded.skipped += 1
            event = None
        position = position_of(getattr(record, "headers", None)) if positioned else None
        items.append((record.offset, event, position))


@dataclass(frozen=True, slots=True)
class Applied:
    records: int
    events: int
    offsets: dict[TopicPartitionKey, int]
    # Allocation outputs skipped as already applied (a resent batch).
    duplicates: int = 0


async def apply_batch(
    store: Store, decoded: Decoded, positions: dict[TopicPartitionKey, int]
) -> Applied | None:
    """Apply the records at or after `positions` (the next offset per partition
    this process believes is stored); None if there is nothing new.

    An allocation output at or below the last allocator position applied on its
    partition is a resent copy (a produce retried after a lost response, possibly
    behind newer outputs): its offset is consumed, its event is not applied. The
    allocator writes each allocations partition in increasing (command offset,
    output index) order, so one position per partition, stored with the offsets,
    is all it takes. Records without the position headers are applied as they come.

    Raises StalePositions (nothing written) when the stored offsets differ.
    """
    expected: dict[TopicPartitionKey, int] = {}
    new: dict[TopicPartitionKey, int] = {}
    fresh_items: dict[TopicPartitionKey, list[Item]] = {}
    count = 0
    for tp, items in decoded.records.items():
        start = positions.get(tp)
        if start is None:
            continue  # not ours (any more)
        fresh = [item for item in items if item[0] >= start]
        if not fresh:
            continue
        expected[tp] = start
        new[tp] = fresh[-1][0] + 1
        fresh_items[tp] = fresh
        count += len(fresh)
    if not new:
        return None
    # Partitions are independent logs: interleaving them keeps each one's order,
    # which is all the folds rely on (an order's or inbound's events share a partition).
    async with store.transaction():
        applied_positions = await store.lock_offsets(expected)
        events: list[Event] = []
        duplicates = 0
        moved: dict[TopicPartitionKey, Position] = {}
        for tp, fresh in fresh_items.items():
            last = applied_positions.get(tp)
            for _, event, position in fresh:
                if position is not None:
                    if last is not None and position <= last:
                        duplicates += 1
                        continue
                    last = moved[tp] = position
                if event is not None:
                    events.append(event)
        if duplicates:
            log.info("resent allocation outputs skipped", records=duplicates)
        if events:
            loaded = await store.load(keys_of(events))
            await store.write(fold_batch(loaded, events), loaded.stored_lines)
        await store.save_offsets(new, moved)
    return Applied(records=count, events=len(events), offsets=new, duplicates=duplicates)


# Called with the partition, offset and error of a record that cannot be stored;
# returns once the record is safely on the dead-letter topic.
Quarantine = Callable[[TopicPartitionKey, int, BaseException], Awaitable[None]]


async def skip_record(
    store: Store, tp: TopicPartitionKey, start: int, offset: int, position: Position | None
) -> None:
    """Store `offset` as applied without applying it (it is quarantined)."""
    async with store.transaction():
        last = (await store.lock_offsets({tp: start})).get(tp)
        moved = {tp: position} if position is not None and (last is None or position > last) else {}
        await store.save_offsets({tp: offset + 1}, moved)


async def apply_isolating(
    store: Store, decoded: Decoded, positions: dict[TopicPartitionKey, int], quarantine: Quarantine
) -> Applied | None:
    """apply_batch; when the batch holds a record PostgreSQL will never store (a
    data error, see resilience.is_poison), bisect it: the good records are applied
    in smaller transactions, each record that fails alone is handed to
    `quarantine` and then stored as applied, so a restart never meets it again.
    Any other failure (an outage) propagates, and the caller retries the rest."""
    try:
        return await apply_batch(store, decoded, positions)
    except Exception as exc:
        if not is_poison(exc):
            raise
        error: BaseException = exc
    local = dict(positions)
    flat = [
        (tp, item)
        for tp, items in decoded.records.items()
        if (start := positions.get(tp)) is not None
        for item in items
        if item[0] >= start
    ]
    totals = [0, 0, 0]  # records, events, duplicates

    async def isolate(items: list[tuple[TopicPartitionKey, Item]], failure: BaseException) -> None:
        if len(items) == 1:
            tp, (offset, _event, position) = items[0]
            await quarantine(tp, offset, failure)
            await skip_record(store, tp, local[tp], offset, position)
            local[tp] = offset + 1
            totals[0] += 1
            return
        middle = len(items) // 2
        for half in (items[:middle], items[middle:]):
            part = Decoded()
            for tp, item in half:
                part.records.setdefault(tp, []).append(item)
            try:
                applied = await apply_batch(store, part, local)
            except Exception as exc:
                if not is_poison(exc):
                    raise
                await isolate(half, exc)
                continue
            if applied is not None:
                local.update(applied.offsets)
                totals[0] += applied.records
                totals[1] += applied.events
                totals[2] += applied.duplicates

    await isolate(flat, error)
    moved = {tp: offset for tp, offset in local.items() if offset != positions.get(tp)}
    return Applied(records=totals[0], events=totals[1], offsets=moved, duplicates=totals[2])
