"""One consumer runtime for every service: poll, recover, handle, commit, stop.

A service supplies a position port and a batch handler
(`fulfil_platform.consumer_ports`, which says how each service implements them)
and imports what it runs on from here: the runtime, those ports, `stop_on_signals`
(`fulfil_platform.event_loop`) and `is_transient`/`wait_out`
(`fulfil_platform.transient`).

What the runtime guarantees, in one place:

- **Poll loop** with `getmany`; a partition is paused from assignment until
  it is recovered, then sought to the offset `recover` returned and resumed.
  Records before the expected offset are dropped (a late prefetch); a batch
  starting after it is re-sought once (a lost race with aiokafka's own reset
  to the committed offset), after that the gap is logged (retention).
- **Recovery never escapes into aiokafka.** It runs in the poll loop, not in
  the rebalance listener: an error is caught and logged, the partitions stay
  paused and *not recovered* (`/readyz` fails with the reason), and recovery
  is retried with capped exponential backoff. Nothing is consumed for a
  partition that is not recovered, so there is no zombie that consumes,
  emits nothing and says ready. `Refused` from `recover` is the exception:
  the runtime stops and the process exits with `Refused.exit_code` and the
  one-line message (e.g. a log that no longer matches the saved state).
- **Failure semantics**: one classifier, `is_transient`. A batch whose
  handler raises is never committed: its partitions are discarded, paused
  and recovered again (so the batch is read again). Transient errors are
  retried for ever (not ready meanwhile); unexpected ones up to
  `max_unexpected_failures` in a row, then the runtime raises (exit 1).
- **Fencing**: a member that stalled (SIGSTOP, a long GC pause) may have
  been evicted without knowing. A watchdog notices event-loop stalls; when
  one happened since the batch was fetched, `batch.fence()` makes a round
  trip to the group coordinator (a commit of the batch's start offsets, which
  the broker refuses from a stale generation) and raises `Fenced` when this
  member lost the partitions. Revokes wait for the batch in flight (a lock).
- **Commit** to Kafka after the handler succeeded (`commit_offsets=True`):
  the positions for services whose positions live in Kafka, a courtesy for
  lag tooling for the others. A failed commit is logged, not retried.
  `commit_interval` (seconds) spaces commits out: offsets wait until the
  interval passed (checked after every poll, idle ones too) and are flushed
  before a revoke and at stop. Only for services whose positions live
  elsewhere: a crash loses the uncommitted ones.
- **Graceful stop** (`stop` set, e.g. by `stop_on_signals` on SIGTERM or
  SIGINT): the batch in hand finishes, every held partition is released,
  the consumer leaves its group (a successor takes over at once); the
  caller returns normally and the process exits 0.
- **Lag and health** through `fulfil_platform.metrics.Progress` (lag watcher, batch
  timing, not-ready reasons).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.consumer_ports import (
    EXIT_REFUSED,
    Batch,
    Fenced,
    Handler,
    Positions,
    Refused,
)
from fulfil_platform.event_loop import StallWatch, stop_on_signals
from fulfil_platform.logs import get_logger
from fulfil_platform.metrics import Progress, watch_lag
from fulfil_platform.transient import is_transient, wait_out

__all__ = [
    "EXIT_REFUSED",
    "Batch",
    "ConsumerRuntime",
    "Fenced",
    "Handler",
    "Positions",
    "Refused",
    "is_transient",
    "stop_on_signals",
    "wait_out",
]

log = get_logger("platform.consumer")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, runtime: ConsumerRuntime):
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runtime._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.runtime._assigned(list(assigned))


class ConsumerRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        topics: list[str],
        group_id: str,
        positions: Positions,
        handler: Handler,
        progress: Progress,
        max_records: int = 5_000,
        commit_offsets: bool = True,
        idle: Callable[[], Awaitable[None]] | None = None,
        consumer_options: dict[str, Any] | None = None,
        max_unexpected_failures: int = 5,
        backoff_max: float = 10.0,
        poll_ms: int = 200,
        commit_interval: float = 0.0,
    ):
        self.settings = settings
        self.name = name
        self.topics = topics
        self.group_id = group_id
        self.positions = positions
        self.handler = handler
        self.progress = progress
        self.max_records = max_records
        self.commit_offsets = commit_offsets
        self.idle = idle
        self.consumer_options = consumer_options or {}
        self.max_unexpected_failures = max_unexpected_failures
        self.backoff_max = backoff_max
        self.poll_ms = poll_ms
        self.commit_interval = commit_interval
        self.uncommitted: dict[TopicPartition, int] = {}
        self.committed_at = float("-inf")
        self.consumer: Any = None
        # Held by a batch, a recovery, a revoke and `idle`: a partition changes hands only
        # between batches.
        self.lock = asyncio.Lock()
        self.expected: dict[TopicPartition, int] = {}  # recovered partitions: next offset to handle
        self.unrecovered: dict[
            TopicPartition, float
        ] = {}  # assigned, not recovered: retry at (monotonic)
        self.reseeked: set[TopicPartition] = set()
        self.failures = 0  # consecutive failed recoveries or batches (backoff)
        self.unexpected = 0  # consecutive non-transient failures
        self.last_error: str | None = None
        self.watch = StallWatch(max(0.2, settings.kafka_session_timeout_ms / 1000 / 3))
        self.poll_started = time.monotonic()
        self.ready = asyncio.Event()  # set after the first poll: joined, recovering or consuming
        self.batches = 0
        self.fenced = 0

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = kafka.consumer(
            self.settings, group_id=self.group_id, **self.consumer_options
        )
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()
        helpers_stop = asyncio.Event()
        helpers = [
            asyncio.create_task(
                watch_lag(self.progress, lambda: self.consumer, helpers_stop),
                name=f"{self.name}-lag",
            ),
            asyncio.create_task(self.watch.run(helpers_stop), name=f"{self.name}-stall-watch"),
        ]
        try:
            while not stop.is_set():
                await self._recover_due()
                self.poll_started = time.monotonic()
                fetched = await self.consumer.getmany(
                    timeout_ms=self.poll_ms, max_records=self.max_records
                )
                batch = self._admit(fetched)
                if batch:
                    async with self.lock:
                        await self._handle(batch)
                if self.uncommitted:
                    async with self.lock:
                        await self._commit()
                self._report()
                self.ready.set()
                if self.idle is not None:
                    async with self.lock:
                        await self.idle()
        finally:
            helpers_stop.set()
            await asyncio.gather(*helpers, return_exceptions=True)
            async with self.lock:
                await self._commit(force=True)
                held = list(self.expected)
                self.expected.clear()
                if held:
                    try:
                        await self.positions.release(held)
                    except Exception as exc:  # noqa: BLE001 - stopping anyway; the next owner recovers
                        log.warning(
                            "release at stop failed",
                            service=self.name,
                            error=type(exc).__name__,
                            detail=str(exc)[:200],
                        )
            await self.consumer.stop()  # leaves the group, so a successor takes over at once

    # ------------------------------------------------------------------ rebalance

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        mine = [tp for tp in assigned if tp.topic in self.topics]
        if not mine:
            return
        # Nothing is fetched for a partition until it is recovered and sought.
        self.consumer.pause(*mine)
        for tp in mine:
            self.unrecovered[tp] = 0.0
        self._report()

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes first
            await self._commit(force=True)  # still a member of this generation
            held = [tp for tp in revoked if tp in self.expected]
            for tp in revoked:
                self.expected.pop(tp, None)
                self.unrecovered.pop(tp, None)
                self.reseeked.discard(tp)
            if held:
                try:
                    await self.positions.release(held)
                except Exception as exc:  # noqa: BLE001 - never into aiokafka; the next owner recovers
                    log.warning(
                        "release failed",
                        service=self.name,
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                    )

    # ------------------------------------------------------------------ recovery

    async def _recover_due(self) -> None:
        due = self._due()
        if not due:
            return
        async with self.lock:
            due = [tp for tp in due if tp in self.unrecovered]  # a revoke may have run meanwhile
            if not due:
                return
            try:
                offsets = await self.positions.recover(due)
            except Refused:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: not recovered, retried
                self._recovery_failed(due, exc)
                return
            for tp in due:
                offset = offsets[tp]
                self.consumer.seek(tp, offset)
                self.expected[tp] = offset
                self.reseeked.discard(tp)
                del self.unrecovered[tp]
            self.consumer.resume(*due)
            self._succeeded()

    def _due(self) -> list[TopicPartition]:
        """The assigned partitions whose recovery is due, in order; forgets unassigned ones."""
        if not self.unrecovered:
            return []
        assigned = self.consumer.assignment()
        for tp in [tp for tp in self.unrecovered if tp not in assigned]:
            del self.unrecovered[tp]
        now = time.monotonic()
        return sorted(
            (tp for tp, at in self.unrecovered.items() if at <= now),
            key=lambda tp: (tp.topic, tp.partition),
        )

    def _recovery_failed(self, due: list[TopicPartition], exc: Exception) -> None:
        """Schedule the retry; raise `exc` once too many unexpected failures came in a row."""
        delay = self._failed(exc, "recover")
        for tp in due:
            self.unrecovered[tp] = time.monotonic() + delay
        log.warning(
            "partition recovery failed; retrying",
            service=self.name,
            partitions=[f"{tp.topic}:{tp.partition}" for tp in due],
            error=type(exc).__name__,
            detail=str(exc)[:200],
            retry_in_s=round(delay, 2),
        )
        self._report()
        if not is_transient(exc) and self.unexpected >= self.max_unexpected_failures:
            raise exc

    def _failed(self, exc: BaseException, what: str) -> float:
        self.failures += 1
        if not is_transient(exc):
            self.unexpected += 1
        self.last_error = f"{what}: {type(exc).__name__}"
        delay: float = min(self.backoff_max, 0.2 * 2.0 ** min(self.failures - 1, 10))
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security

    def _succeeded(self) -> None:
        self.failures = 0
        self.unexpected = 0
        self.last_error = None

    def _report(self) -> None:
        if self.unrecovered:
            parts = ",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in self.unrecovered))
            why = f" (last error: {self.last_error})" if self.last_error else ""
            self.progress.set_unhealthy(f"partitions not recovered: {parts}{why}")
        else:
            self.progress.set_unhealthy(None)

    # ------------------------------------------------------------------ batches

    def _admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Per partition, the records that continue exactly where it stands."""
        batch = {}
        for tp, records in fetched.items():
            expected = self.expected.get(tp)
            if expected is None or not records:
                continue  # not recovered (yet): fetched again after its seek
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            if records[0].offset > expected:
                if tp not in self.reseeked:
                    self.reseeked.add(tp)
                    self.consumer.seek(tp, expected)
                    log.info(
                        "re-seeking partition",
                        service=self.name,
                        topic=tp.topic,
                        partition=tp.partition,
                        expected=expected,
                        got=records[0].offset,
                    )
                    continue
                log.warning(
                    "gap in log",
                    service=self.name,
                    topic=tp.topic,
                    partition=tp.partition,
                    expected=expected,
                    got=records[0].offset,
                )
            batch[tp] = records
        return batch

    async def _handle(self, records: dict[TopicPartition, list[Any]]) -> None:
        records = {
            tp: got for tp, got in records.items() if tp in self.expected
        }  # revoked since the poll
        if not records:
            return
        tps = list(records)
        since = self.poll_started
        try:
            with self.progress.batch():
                done = await self.handler(Batch(records, lambda: self._fence(tps, since)))
        except Fenced as exc:
            self.fenced += 1
            log.warning(
                "partitions lost during a batch; its results are dropped",
                service=self.name,
                partitions=[f"{tp.topic}:{tp.partition}" for tp in tps],
                detail=str(exc)[:200],
            )
            await self._discard(tps, self._failed(exc, "fenced"))
            return
        except Exception as exc:
            await self._batch_failed(tps, exc)
            return
        self._batch_done(records, done)

    async def _batch_failed(self, tps: list[TopicPartition], exc: Exception) -> None:
        """Read the batch again later; raise `exc` once too many unexpected failures came in a row."""
        delay = self._failed(exc, "batch")
        transient = is_transient(exc)
        (log.warning if transient else log.error)(
            "batch failed; nothing committed, it is read again",
            service=self.name,
            partitions=[f"{tp.topic}:{tp.partition}" for tp in tps],
            error=type(exc).__name__,
            detail=str(exc)[:200],
            retry_in_s=round(delay, 2),
        )
        await self._discard(tps, delay)
        if not transient and self.unexpected >= self.max_unexpected_failures:
            raise exc

    def _batch_done(
        self,
        records: dict[TopicPartition, list[Any]],
        done: Mapping[TopicPartition, int] | None,
    ) -> None:
        nexts = (
            dict(done)
            if done is not None
            else {tp: got[-1].offset + 1 for tp, got in records.items()}
        )
        for tp, offset in nexts.items():
            if tp in self.expected:
                self.expected[tp] = offset
        self.batches += 1
        self._succeeded()
        if self.commit_offsets:
            self.uncommitted.update(nexts)

    async def _commit(self, *, force: bool = False) -> None:
        if not self.uncommitted:
            return
        if not force and time.monotonic() - self.committed_at < self.commit_interval:
            return
        offsets = {tp: offset for tp, offset in self.uncommitted.items() if tp in self.expected}
        self.uncommitted.clear()
        self.committed_at = time.monotonic()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (KafkaError, OSError) as exc:
            # The batch's effects are complete; the group has moved on (rebalance) or
            # the broker is away. The next owner starts from its own positions.
            log.warning("offset commit failed", service=self.name, error=type(exc).__name__)

    async def _discard(self, tps: list[TopicPartition], delay: float) -> None:
        held = [tp for tp in tps if tp in self.expected]
        for tp in held:
            del self.expected[tp]
        try:
            await self.positions.discard(held)
        except Exception as exc:  # noqa: BLE001 - recovery starts from scratch anyway
            log.warning("discard failed", service=self.name, error=type(exc).__name__)
        assigned = self.consumer.assignment()
        paused = [tp for tp in held if tp in assigned]
        if paused:
            self.consumer.pause(*paused)
        retry_at = time.monotonic() + delay
        for tp in paused:
            self.unrecovered[tp] = retry_at
        self._report()

    async def recover_again(self, partitions: list[TopicPartition] | None = None) -> None:
        """Forget the held partitions' state (all of them when None) and recover them again,
        as after a failed batch: for a service that learns outside a batch that its positions
        may be stale (its database restarted and may have lost recent commits). Call it with
        the lock held, i.e. from the handler or `idle`."""
        held = (
            list(self.expected)
            if partitions is None
            else [tp for tp in partitions if tp in self.expected]
        )
        if held:
            await self._discard(held, 0.0)

    async def _fence(self, tps: list[TopicPartition], since: float) -> None:
        if any(tp not in self.expected for tp in tps):
            raise Fenced("revoked")
        if not self.watch.stalled_since(since):
            return
        # The loop stalled after this batch was fetched: heartbeats stopped too, and the
        # group may have given the partitions to someone else. Ask the coordinator: it
        # refuses a commit from a stale generation or an evicted member.
        log.info("event loop stalled during a batch; checking group membership", service=self.name)
        try:
            await self.consumer.commit({tp: self.expected[tp] for tp in tps})
        except (CommitFailedError, IllegalStateError) as exc:
            raise Fenced(type(exc).__name__) from exc
        if any(tp not in self.consumer.assignment() for tp in tps):
            raise Fenced("no longer assigned")
