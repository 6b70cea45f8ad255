"""The allocator core: folds `allocator.commands.v1` into `allocations.v1`.

It runs on the platform's consumer runtime (fulfil_platform.consumer): the
runtime polls, pauses, recovers, fences and commits; the core supplies its
positions (a snapshot per partition plus the output tail) and its batch
handler. A batch is folded in log order per partition, fenced, produced
without awaiting each send, and flushed once; only then do the folds count
as advanced (offsets committed, snapshots allowed). A batch whose flush
fails is dropped whole: its folds are discarded and rebuilt from the last
snapshot and the output tail, so its outputs are written exactly once later.

Recovery (see service_layer.partition) makes a crash at any point invisible
on the output topic. It also refuses to run on a command log that no longer
matches the snapshot (broker data loss, a re-created topic): exit code 3
and the remedy, rather than silently skipping new commands.

Outputs are deterministic (ids are uuid5 of the input id). Without the
idempotent producer, the core's producer does not resend a batch that got no
answer (it may have been written): the flush fails and the partition is
rebuilt from the snapshot and the output tail (fulfil_platform.unanswered_produce).
Should outputs still land elsewhere than the partition's end the core knows
(an evicted member wrote, a request was applied late), it rebuilds the
partition, so it never writes on from a wrong position; consumers of
`allocations.v1` ignore an output id they have already applied.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.consumer import Batch, ConsumerRuntime, Refused
from fulfil_platform.dead_letter_writer import dead_letter_headers
from fulfil_platform.logs import bound_record, get_logger
from fulfil_platform.metrics import SNAPSHOTS_SKIPPED, Progress
from fulfil_platform.unanswered_produce import fail_unanswered_produces
from schemas.allocation_headers import output_headers, position_of
from schemas.registry import ALLOCATIONS, COMMANDS, DLQ_SUFFIX, ContractError
from services.allocator.adapters.snapshot_store import SnapshotStore
from services.allocator.domain import new_state
from services.allocator.service_layer.partition import (
    NOTHING_WRITTEN,
    Emission,
    PartitionFold,
    Snapshot,
)

log = get_logger("allocator.core")

CORE_GROUP = "fulfil-allocator-core"

# A record to produce: topic, value, key, partition (None: by key), headers.
_Outgoing = tuple[str, bytes, bytes | None, int | None, list[tuple[str, bytes]]]

OUTPUT_RESYNCS = Counter(
    "fulfil_allocator_output_resyncs",
    "Output batches that did not land where the core expected (a resent produce, another writer); "
    "the partition is rebuilt.",
    ["partition"],
)


def record_digest(value: bytes | None) -> str:
    """A fingerprint of a command record: a snapshot names the command it was taken after."""
    return hashlib.blake2b(value or b"", digest_size=12).hexdigest()


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
        self.commands = settings.topic(COMMANDS)
        self.allocations = settings.topic(ALLOCATIONS)
        self.max_records = max_records
        self.snapshot_every = settings.fulfil_snapshot_every
        self.snapshot_seconds = settings.fulfil_snapshot_seconds
        self.store = SnapshotStore(settings.fulfil_state_dir / "allocator", self.commands)
        self.folds: dict[int, PartitionFold] = {}
        self.tail_end: dict[int, int] = {}  # next offset of our output partition, as far as we know
        self.last_snapshot_at: dict[int, float] = {}
        self.cluster_id: str | None = None
        self.frozen = False
        self.processed = 0
        self.emitted = 0
        self.runtime: ConsumerRuntime | None = None
        self.ready = asyncio.Event()

    @property
    def consumer(self) -> Any:
        return self.runtime.consumer if self.runtime is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        self.cluster_id = await kafka.cluster_id(self.settings)
        self.tail_reader = kafka.consumer(self.settings, group_id=None)
        self.producer = kafka.producer(self.settings)
        if not self.settings.kafka_enable_idempotence:
            # A resent batch would land twice; a failed one is rebuilt from the output tail.
            fail_unanswered_produces(self.producer)
        await self.producer.start()
        await self.tail_reader.start()
        self.runtime = ConsumerRuntime(
            self.settings,
            name="allocator-core",
            topics=[self.commands],
            group_id=self.settings.topic(CORE_GROUP),
            positions=self,
            handler=self.handle,
            progress=self.progress,
            max_records=self.max_records,
            idle=self.maybe_snapshot,
            commit_interval=self.settings.fulfil_commit_interval_ms / 1000,
        )
        waiter = asyncio.create_task(self._mark_ready())
        try:
            await self.runtime.run(stop)
        finally:
            waiter.cancel()
            await self.tail_reader.stop()
            await self.producer.stop()

    async def _mark_ready(self) -> None:
        assert self.runtime is not None
        await self.runtime.ready.wait()
        self.ready.set()

    # ------------------------------------------------------------------ batches

    async def handle(self, batch: Batch) -> dict[TopicPartition, int]:
        outgoing: list[_Outgoing] = []
        commits: dict[TopicPartition, int] = {}
        counted: dict[int, int] = {}
        for tp, records in batch.records.items():
            fold = self.folds[tp.partition]
            before = fold.applied_offset
            for record in records:
                emissions, error = fold.apply(record.offset, record.value)
                if error is not None:
                    outgoing.append(self._dead_letter(tp, record, error))
                outgoing.extend(self._output(tp, record, emission) for emission in emissions)
            if records[-1].offset == fold.applied_offset:
                fold.snapshot.applied_digest = record_digest(records[-1].value)
            commits[tp] = fold.applied_offset + 1
            counted[tp.partition] = fold.applied_offset - before
        # Nothing leaves the process before the fence: a member that was evicted while
        # stalled must not write what the new owner writes too.
        await batch.fence()
        sender = kafka.BatchSender(self.producer)
        for topic, value, key, partition, headers in outgoing:
            await sender.add(topic, value, key=key, partition=partition, headers=headers)
        # One flush per batch: nothing is committed or snapshotted before every output is
        # acknowledged. If it raises, the runtime discards these folds (see discard).
        await sender.flush()
        for topic, count in sender.records_per_topic.items():
            self.progress.produced(topic, count)
        resync = self._check_landing(sender.landed)
        for count in counted.values():
            self.processed += count
            self.progress.consumed(self.commands, count)
        self.emitted += sender.records_per_topic.get(self.allocations, 0)
        if resync:
            raise OutputMoved(f"outputs of partitions {sorted(resync)} did not land where expected")
        return commits

    def _dead_letter(self, tp: TopicPartition, record: Any, error: ContractError) -> _Outgoing:
        self.progress.dead_lettered(self.commands + DLQ_SUFFIX, error.kind)
        with bound_record(record):
            log.warning("command dead-lettered", reason=error.reason, kind=error.kind)
        return (
            self.commands + DLQ_SUFFIX,
            record.value,
            record.key,
            None,
            dead_letter_headers(
                reason=error.reason,
                kind=error.kind,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                stage="allocator-core",
                original=record.headers,
            ),
        )

    def _output(self, tp: TopicPartition, record: Any, emission: Emission) -> _Outgoing:
        event = emission.event
        if event.type == "StockPositionChanged" and event.data.shortfall:
            # DESIGN §4: a shortfall is reported on the topic and to operators (a
            # count was wrong or stock was lost after it had been promised).
            # About the output (its ids), read at the command's position.
            with bound_record(record, event):
                log.warning(
                    "stock shortfall",
                    warehouse_id=event.data.warehouse_id,
                    sku=event.data.sku,
                    shortfall=event.data.shortfall,
                    available=event.data.available,
                    causation_id=event.causation_id,
                )
        return (
            self.allocations,
            emission.value,
            emission.key,
            tp.partition,
            output_headers(tp.partition, emission.command_offset, emission.index, event),
        )

    def _check_landing(self, landed: list[tuple[str, int, int, int]]) -> set[int]:
        """Follow our output partitions' ends; the partitions whose batches landed elsewhere."""
        resync = set()
        for topic, partition, base, count in landed:
            if topic != self.allocations:
                continue
            fold = self.folds.get(partition)
            expected = self.tail_end.get(partition)
            if expected is not None and base != expected:
                # A lost produce response made the producer send the batch again, or
                # another member wrote: the outputs' order on the partition is no longer
                # what this fold assumed. Rebuild from the snapshot and the output tail.
                OUTPUT_RESYNCS.labels(str(partition)).inc()
                log.warning(
                    "output batch landed at an unexpected offset; rebuilding the partition",
                    partition=partition,
                    expected=expected,
                    got=base,
                )
                resync.add(partition)
            self.tail_end[partition] = max(expected or 0, base + count)
            if fold is not None:
                fold.snapshot.output_offset = max(fold.snapshot.output_offset, base + count)
        return resync

    # ------------------------------------------------------------------ snapshots

    async def maybe_snapshot(self) -> None:
        """At most one partition per loop turn, serialised and written off the event loop:
        snapshotting every partition at once is the long pause that gets a member evicted."""
        now = time.monotonic()
        due = [
            (self.last_snapshot_at.get(partition, 0.0), partition)
            for partition, fold in self.folds.items()
            if fold.commands_since_snapshot >= self.snapshot_every
            or (
                fold.commands_since_snapshot
                and now - self.last_snapshot_at.get(partition, 0.0) >= self.snapshot_seconds
            )
        ]
        if due:
            _, partition = min(due)
            await self._snapshot(partition, self.folds[partition])

    async def _snapshot(self, partition: int, fold: PartitionFold) -> None:
        # While outputs of already-written commands are being suppressed, the
        # output offset is not yet known to be past them: snapshot later.
        if fold.applied_offset < fold.written_upto[0]:
            return
        fold.snapshot.output_offset = max(
            fold.snapshot.output_offset, self.tail_end.get(partition, 0)
        )
        fold.snapshot.cluster_id = self.cluster_id
        # The fold is not touched meanwhile: the runtime's lock is held by the caller.
        try:
            await asyncio.to_thread(self.store.save, partition, fold.snapshot)
        except OSError as exc:
            # Snapshots only shorten restarts: a full or read-only disk must not stop the core.
            SNAPSHOTS_SKIPPED.labels("allocator-core", type(exc).__name__).inc()
            log.warning(
                "snapshot skipped",
                partition=partition,
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
        else:
            fold.commands_since_snapshot = 0
        self.last_snapshot_at[partition] = time.monotonic()

    # ------------------------------------------------------------------ positions

    async def release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            fold = self.folds.get(tp.partition)
            if fold is not None and fold.commands_since_snapshot:
                await self._snapshot(tp.partition, fold)
            self._forget(tp.partition)
            fold = None  # the last reference to a released state must go before the collection
        self._collect_released()

    async def discard(self, partitions: list[TopicPartition]) -> None:
        # The folds may be ahead of what reached the broker: never snapshot them.
        for tp in partitions:
            self._forget(tp.partition)
        self._collect_released()

    def _forget(self, partition: int) -> None:
        self.folds.pop(partition, None)
        self.tail_end.pop(partition, None)
        self.last_snapshot_at.pop(partition, None)

    def _collect_released(self) -> None:
        # Recovered states are frozen (see recover): thaw, so the released ones can be
        # collected, then freeze what is left again.
        if self.frozen:
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    async def recover(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        mine = [tp for tp in partitions if tp.topic == self.commands]
        snapshots: dict[int, Snapshot] = {}
        for tp in mine:
            try:
                loaded = await asyncio.to_thread(self.store.load, tp.partition)
            except Exception as exc:  # noqa: BLE001 - any unreadable snapshot: the log has it all
                log.warning(
                    "snapshot unreadable; rebuilding the partition from the command log",
                    partition=tp.partition,
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )
                loaded = None
            if loaded is None:
                loaded = Snapshot(new_state())
            # Rule parameters, not log state: the configured ones apply from here on.
            loaded.state.grace_days = self.settings.fulfil_overdue_grace_days
            loaded.state.consent_rule = self.settings.consent_rule
            snapshots[tp.partition] = loaded
        await self._check_log(snapshots)
        tails = await self._output_tails({p: s.output_offset for p, s in snapshots.items()})
        for tp in mine:
            snapshot = snapshots[tp.partition]
            written, end = tails[tp.partition]
            self.folds[tp.partition] = PartitionFold(tp.partition, snapshot, written)
            self.tail_end[tp.partition] = end
            self.last_snapshot_at[tp.partition] = time.monotonic()
            log.info(
                "partition recovered",
                partition=tp.partition,
                snapshot_offset=snapshot.applied_offset,
                written_upto=list(written),
                output_tail=end - snapshot.output_offset,
            )
        # A loaded state is millions of long-lived objects: keep the cyclic GC from
        # re-scanning them on every collection (thawed again on release).
        gc.freeze()
        self.frozen = True
        return {tp: snapshots[tp.partition].applied_offset + 1 for tp in mine}

    async def _check_log(self, snapshots: dict[int, Snapshot]) -> None:
        """Refuse a snapshot that does not belong to the log we read: after broker data loss
        or a re-created topic, trusting its offsets would silently skip new commands."""
        taken = {p: s for p, s in snapshots.items() if s.applied_offset >= 0}
        if not taken:
            return
        for partition, snapshot in taken.items():
            if snapshot.cluster_id and self.cluster_id and snapshot.cluster_id != self.cluster_id:
                self._refuse(
                    partition,
                    f"it was taken on cluster {snapshot.cluster_id!r}, the broker is cluster {self.cluster_id!r}",
                )
        tps = [TopicPartition(self.commands, p) for p in taken] + [
            TopicPartition(self.allocations, p) for p in taken
        ]
        ends = await kafka.log_ends(self.tail_reader, tps)
        for partition, snapshot in taken.items():
            await self._check_ends(partition, snapshot, ends)

    async def _check_ends(
        self, partition: int, snapshot: Snapshot, ends: dict[TopicPartition, int]
    ) -> None:
        """Refuse the partition's snapshot unless both logs reach as far as it says and the
        command it was taken after is still where it was."""
        end = ends[TopicPartition(self.commands, partition)]
        if end <= snapshot.applied_offset:
            self._refuse(
                partition,
                f"it is at command offset {snapshot.applied_offset}, the log ends at {end}",
            )
        if snapshot.applied_digest is not None:
            record = await kafka.read_at(
                self.tail_reader,
                TopicPartition(self.commands, partition),
                snapshot.applied_offset,
            )
            if record is None or record_digest(record.value) != snapshot.applied_digest:
                self._refuse(
                    partition,
                    f"the command at offset {snapshot.applied_offset} is not the one it was taken after",
                )
        out_end = ends[TopicPartition(self.allocations, partition)]
        if out_end < snapshot.output_offset:
            self._refuse(
                partition,
                f"it expects {snapshot.output_offset} outputs, the output log ends at {out_end}",
            )

    def _refuse(self, partition: int, why: str) -> None:
        path = self.store.path(partition)
        raise Refused(
            f"allocator snapshot of {self.commands} partition {partition} does not match the command log "
            f"({why}): the broker lost data or the topic was re-created. Delete {path} "
            f"(or the whole {self.store.directory}) and restart to rebuild the partition from the log."
        )

    async def _output_tails(self, starts: dict[int, int]) -> dict[int, tuple[tuple[int, int], int]]:
        """Per partition: the last (command offset, output index) already on our
        output partition, and the offset after the last record there."""
        if not starts:
            return {}
        tails = await kafka.read_ranges(
            self.tail_reader,
            {TopicPartition(self.allocations, p): start for p, start in starts.items()},
        )
        result = {}
        for tp, records in tails.items():
            written = NOTHING_WRITTEN
            for record in records:
                position = position_of(record.headers)
                if position is not None and position > written:
                    written = position
            result[tp.partition] = (
                written,
                records[-1].offset + 1 if records else starts[tp.partition],
            )
        return result


class OutputMoved(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """Our outputs landed elsewhere than the fold assumed: rebuild the partition (transient)."""

    retriable = True


def describe(broker: Any, settings: Settings) -> None:
    """Documentation only (`make asyncapi`): the core drives aiokafka itself (offsets, snapshots),
    so FastStream cannot see it; this declares its topics on a broker that is never started."""
    from fulfil_platform.asyncapi_docs import DeadLetter, events_on, receives

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
