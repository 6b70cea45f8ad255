"""The one bounded topic reader: partitions from start offsets to their log end.

Public aiokafka API only (assign / seek / getmany / highwater / position), on
a consumer without a group. The end of a partition is the high watermark of
the fetch responses, never ListOffsets: Tansu answers ListOffsets(latest)
with the base offset of the last batch + 1 after batched produce (see
notes/tansu.md), so `end_offsets()` can stop a reader short of the log end.
A partition whose end is not known yet (no fetch answered for it) is fetched
until it is, up to `deadline_s` without progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

Chunk = dict[TopicPartition, list[Any]]


async def read_chunks(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    *,
    ends: Mapping[TopicPartition, int] | None = None,
    follow: bool = False,
    timeout_ms: int = 200,
    max_records: int = 10_000,
    deadline_s: float = 30.0,
) -> AsyncIterator[Chunk]:
    """Yield the records of `starts`' partitions, in offset order per partition,
    as fetched (one dict per non-empty fetch), until every partition reached
    its log end (or its offset in `ends`, exclusive).

    `follow`: never stop at the log end; wait for new records (no deadline).
    A start before the log start reads from the log start (the consumer's
    `auto_offset_reset` decides; `kafka.consumer` sets "earliest").
    """
    consumer.assign(list(starts))
    for tp, start in starts.items():
        consumer.seek(tp, start)
    limits = dict(ends or {})
    pending = {tp for tp in starts if not _reached(limits.get(tp), start=starts[tp])}
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while pending or follow:
        batch = await consumer.getmany(
            *(pending or starts), timeout_ms=timeout_ms, max_records=max_records
        )
        chunk = _cut(batch, limits)
        if batch:
            give_up = loop.time() + deadline_s
        if chunk:
            yield chunk
        pending = {tp for tp in pending if not await _at_end(consumer, tp, limits.get(tp))}
        if pending and not follow and loop.time() > give_up:
            raise TimeoutError(
                f"no fetch response for {sorted(map(str, pending))} in {deadline_s}s"
            )


async def read_all(
    consumer: AIOKafkaConsumer, starts: Mapping[TopicPartition, int], **options: Any
) -> dict[TopicPartition, list[Any]]:
    """Every record of each partition from its start to the log end, in memory."""
    records: dict[TopicPartition, list[Any]] = {tp: [] for tp in starts}
    async for chunk in read_chunks(consumer, starts, **options):
        for tp, got in chunk.items():
            records[tp].extend(got)
    return records


async def read_partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int = 0, **options: Any
) -> AsyncIterator[list[Any]]:
    """One partition's records from `start` to its log end, a fetch at a time."""
    async for chunk in read_chunks(consumer, {tp: start}, **options):
        yield chunk[tp]


def _reached(end: int | None, *, start: int) -> bool:
    return end is not None and start >= end


def _cut(batch: Chunk, limits: Mapping[TopicPartition, int]) -> Chunk:
    """The fetched records below each partition's limit; empty lists dropped."""
    out: Chunk = {}
    for tp, records in batch.items():
        end = limits.get(tp)
        kept = records if end is None else [r for r in records if r.offset < end]
        if kept:
            out[tp] = kept
    return out


async def _at_end(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int | None) -> bool:
    position = await consumer.position(tp)
    if end is not None and position >= end:
        return True
    highwater = consumer.highwater(tp)
    return highwater is not None and position >= highwater
