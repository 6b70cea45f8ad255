"""The allocator core: folds `allocator.commands.v1` into `allocations.v1`.

Batches are read with getmany, folded in log order per partition, produced
without awaiting each send, flushed once, and only then are offsets
committed and snapshots taken. Recovery (see service_layer.partition) makes
a crash at any point invisible on the output topic.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from fulfil import kafka
from fulfil.config import Settings
from fulfil.dlq import dead_letter_headers
from fulfil.logs import get_logger
from fulfil.metrics import Progress, watch_lag
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX
from services.allocator.adapters.snapshot_store import SnapshotStore
from services.allocator.domain import new_state
from services.allocator.service_layer.partition import (
    NOTHING_WRITTEN,
    PartitionFold,
    Snapshot,
    output_headers,
    position_of,
)

log = get_logger("allocator.core")

CORE_GROUP = "fulfil-allocator-core"


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, core: AllocatorCore):
        self.core = core

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.core.release(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.core.recover(list(assigned))


class AllocatorCore:
    def __init__(
        self,
        settings: Settings,
        *,
        max_records: int = 5_000,
        progress: Progress | None = None,
    ):
        self.settings = settings
        self.progress = progress or Progress("allocator-core", settings.fulfil_ready_stall_seconds)
        self.consumer: Any = None
        self.commands = settings.topic(COMMANDS)
        self.allocations = settings.topic(ALLOCATIONS)
        self.max_records = max_records
        self.snapshot_every = settings.fulfil_snapshot_every
        self.snapshot_seconds = settings.fulfil_snapshot_seconds
        self.store = SnapshotStore(settings.fulfil_state_dir / "allocator", self.commands)
        self.folds: dict[int, PartitionFold] = {}
        self.reseeked: set[int] = set()
        self.tail_end: dict[int, int] = {}
        self.last_snapshot_at: dict[int, float] = {}
        self.lock = asyncio.Lock()
        self.processed = 0
        self.emitted = 0
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = kafka.consumer(self.settings, group_id=self.settings.topic(CORE_GROUP))
        self.tail_reader = kafka.consumer(self.settings, group_id=None)
        self.producer = kafka.producer(self.settings)
        await self.producer.start()
        await self.tail_reader.start()
        self.consumer.subscribe([self.commands], listener=_Rebalance(self))
        await self.consumer.start()
        lag_stop = asyncio.Event()
        lag_watcher = asyncio.create_task(watch_lag(self.progress, lambda: self.consumer, lag_stop), name="core-lag")
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if batches:
                    with self.progress.batch():
                        async with self.lock:
                            await self._process(batches)
                self.ready.set()
                await self._maybe_snapshot()
        finally:
            lag_stop.set()
            await lag_watcher
            async with self.lock:
                self._snapshot_all()
            await self.consumer.stop()  # leaves the group, so a successor takes over at once
            await self.tail_reader.stop()
            await self.producer.stop()

    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        sender = kafka.BatchSender(self.producer)
        commits: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            fold = self.folds.get(tp.partition)
            if fold is None:  # revoked while the batch was in flight
                continue
            expected = fold.applied_offset + 1
            if records[0].offset > expected and tp.partition not in self.reseeked:
                # The seek done on assignment can lose a race with aiokafka's own
                # reset to the committed offset: folding from there would skip
                # commands. Seek again and drop this batch for the partition.
                self.reseeked.add(tp.partition)
                self.consumer.seek(tp, expected)
                log.info("re-seeking command partition", partition=tp.partition, expected=expected, got=records[0].offset)
                continue
            if records[0].offset > expected:  # retention removed the start of the log
                log.warning("gap in command log", partition=tp.partition, expected=expected, got=records[0].offset)
            before = fold.applied_offset
            for record in records:
                emissions, error = fold.apply(record.offset, record.value)
                if error is not None:
                    self.progress.dead_lettered(self.commands + DLQ_SUFFIX, error.kind)
                    log.warning("command dead-lettered", reason=error.reason, partition=tp.partition, offset=record.offset)
                    await sender.add(
                        self.commands + DLQ_SUFFIX,
                        record.value,
                        key=record.key,
                        headers=dead_letter_headers(
                            reason=error.reason, kind=error.kind, topic=tp.topic, partition=tp.partition,
                            offset=record.offset, stage="allocator-core", original=record.headers,
                        ),
                    )
                for emission in emissions:
                    event = emission.event
                    if event.type == "StockPositionChanged" and event.data.shortfall:
                        # DESIGN §4: a shortfall is reported on the topic and to operators (a
                        # count was wrong or stock was lost after it had been promised).
                        log.warning(
                            "stock shortfall", warehouse_id=event.data.warehouse_id, sku=event.data.sku,
                            shortfall=event.data.shortfall, available=event.data.available,
                            causation_id=event.causation_id,
                        )
                    await sender.add(
                        self.allocations,
                        emission.value,
                        key=emission.key,
                        partition=tp.partition,
                        headers=output_headers(tp.partition, emission.command_offset, emission.index, emission.event),
                    )
                    self.emitted += 1
            commits[tp] = fold.applied_offset + 1
            # Records re-delivered after a seek count once.
            self.processed += fold.applied_offset - before
            self.progress.consumed(tp.topic, fold.applied_offset - before)
        # One flush per batch: nothing is committed or snapshotted before every output is acknowledged.
        ends = await sender.flush()
        for topic, count in sender.records_per_topic.items():
            self.progress.produced(topic, count)
        for (topic, partition), end in ends.items():
            fold = self.folds.get(partition)
            if topic == self.allocations and fold is not None:
                fold.snapshot.output_offset = max(fold.snapshot.output_offset, end)
        if commits:
            await self.consumer.commit(commits)

    async def _maybe_snapshot(self) -> None:
        now = time.monotonic()
        async with self.lock:
            for partition, fold in self.folds.items():
                due = fold.commands_since_snapshot >= self.snapshot_every or (
                    fold.commands_since_snapshot
                    and now - self.last_snapshot_at.get(partition, 0.0) >= self.snapshot_seconds
                )
                if due:
                    self._snapshot(partition, fold)

    def _snapshot(self, partition: int, fold: PartitionFold) -> None:
        # While outputs of already-written commands are being suppressed, the
        # output offset is not yet known to be past them: snapshot later.
        if fold.applied_offset < fold.written_upto[0]:
            return
        fold.snapshot.output_offset = max(fold.snapshot.output_offset, self.tail_end.get(partition, 0))
        self.store.save(partition, fold.snapshot)
        fold.commands_since_snapshot = 0
        self.last_snapshot_at[partition] = time.monotonic()

    def _snapshot_all(self) -> None:
        for partition, fold in self.folds.items():
            if fold.commands_since_snapshot:
                self._snapshot(partition, fold)

    async def release(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            for tp in revoked:
                fold = self.folds.pop(tp.partition, None)
                if fold is not None and fold.commands_since_snapshot:
                    self._snapshot(tp.partition, fold)

    async def recover(self, assigned: list[TopicPartition]) -> None:
        async with self.lock:
            mine = [tp for tp in assigned if tp.topic == self.commands]
            snapshots = {tp.partition: self.store.load(tp.partition) or Snapshot(new_state()) for tp in mine}
            # A loaded state is millions of long-lived objects: keep the cyclic
            # GC from re-scanning them on every collection.
            gc.freeze()
            tails = await self._output_tails({p: s.output_offset for p, s in snapshots.items()})
            for tp in mine:
                snapshot = snapshots[tp.partition]
                written, end = tails[tp.partition]
                self.folds[tp.partition] = PartitionFold(tp.partition, snapshot, written)
                self.reseeked.discard(tp.partition)
                self.tail_end[tp.partition] = end
                self.last_snapshot_at[tp.partition] = time.monotonic()
                self.consumer.seek(tp, snapshot.applied_offset + 1)
                log.info(
                    "partition recovered",
                    partition=tp.partition,
                    snapshot_offset=snapshot.applied_offset,
                    written_upto=list(written),
                    output_tail=end - snapshot.output_offset,
                )

    async def _output_tails(self, starts: dict[int, int]) -> dict[int, tuple[tuple[int, int], int]]:
        """Per partition: the last (command offset, output index) already on our
        output partition, and the offset after the last record there."""
        if not starts:
            return {}
        tails = await kafka.read_ranges(
            self.tail_reader, {TopicPartition(self.allocations, p): start for p, start in starts.items()}
        )
        result = {}
        for tp, records in tails.items():
            written = NOTHING_WRITTEN
            for record in records:
                position = position_of(record.headers)
                if position is not None and position > written:
                    written = position
            result[tp.partition] = (written, records[-1].offset + 1 if records else starts[tp.partition])
        return result


def describe(broker: Any, settings: Settings) -> None:
    """Documentation only (`make asyncapi`): the core drives aiokafka itself (offsets, snapshots),
    so FastStream cannot see it; this declares its topics on a broker that is never started."""
    from schemas.asyncapi import DeadLetter, events_on, receives

    receives(
        broker,
        settings.topic(COMMANDS),
        title="allocator-core",
        description="Fold each command partition in log order with decide(state, command); offsets "
        "are committed only after the outputs are acknowledged.",
        payload=events_on(COMMANDS),
    )
    broker.publisher(
        settings.topic(ALLOCATIONS),
        title=f"allocator-core:{ALLOCATIONS}",
        description="Decisions and stock positions, keyed by data.warehouse_id, on the command's "
        "partition; ids are uuid5 of the input id, causation_id is the input's id; headers name "
        "the command partition, offset and output index.",
        schema=events_on(ALLOCATIONS),
    )
    broker.publisher(
        settings.topic(COMMANDS) + DLQ_SUFFIX,
        title=f"allocator-core:{COMMANDS}{DLQ_SUFFIX}",
        description="Commands the core could not decode, with their original key.",
        schema=DeadLetter,
    )
