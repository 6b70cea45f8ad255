"""Consuming allocations.v1: a batch of records → outbox rows + offsets, in one transaction.

Exactly one row per (event, channel): the unique key drops re-deliveries, and
the offsets are stored with the rows, so a crash before the commit re-reads
the batch and a crash after it resumes behind it. Sending is not done here:
a slow or broken channel cannot slow consumption down. Records that break
the contract (or that no template can render) go to `allocations.v1.dlq`;
the dead letter is published before the commit, so a batch read again may
dead-letter a record twice (same bytes, same headers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from fulfil.logs import get_logger
from schemas.registry import ContractError, parse_output
from services.notifier.adapters.outbox import OutboxStore, Renderer
from services.notifier.domain.decide import KIND_BY_EVENT, Policy, notice_for
from services.notifier.domain.plan import Consumed, plan_batch
from services.notifier.service_layer.clock import Clock

log = get_logger("notifier.consumer")

DeadLetter = Callable[[Any, ContractError], Awaitable[None]]


class BatchFailed(Exception):
    """The batch could not be recorded; it will be delivered again. No message content inside."""


class BatchHandler:
    def __init__(
        self,
        store: OutboxStore,
        policy: Policy,
        render: Renderer,
        clock: Clock,
        *,
        wakers: Iterable[asyncio.Event] = (),
        dead_letter: DeadLetter | None = None,
        retry_seconds: float = 30.0,
    ):
        self.store = store
        self.policy = policy
        self.render = render
        self.clock = clock
        self.wakers = list(wakers)
        self.dead_letter = dead_letter
        self.retry_seconds = retry_seconds
        self.records = 0
        self.rows = 0

    async def handle(self, records: Iterable[Any]) -> None:
        consumed: list[Consumed] = []
        offsets: dict[tuple[str, int], int] = {}
        seen = 0
        for record in records:
            seen += 1
            key = (record.topic, record.partition)
            offsets[key] = max(offsets.get(key, 0), record.offset + 1)
            try:
                event = parse_output(record.value or b"")
            except ContractError as exc:
                # The reason names fields, never values: safe to log.
                log.warning("allocation event dead-lettered", reason=exc.reason, kind=exc.kind,
                            topic=record.topic, partition=record.partition, offset=record.offset)
                if self.dead_letter is not None:
                    await self.dead_letter(record, exc)
                continue
            problem = self._unrenderable(event)
            if problem is not None:
                # One odd event must not stall everyone behind it: dead-letter it, visibly.
                log.error("allocation event not renderable", error=problem, event_id=event.id,
                          topic=record.topic, partition=record.partition, offset=record.offset)
                if self.dead_letter is not None:
                    await self.dead_letter(record, ContractError(f"notifier could not render it: {problem}", "render_error"))
                continue
            consumed.append(Consumed(event, record.topic, record.partition, record.offset))
        relevant = [c for c in consumed if c.event.type in KIND_BY_EVENT]
        event_ids = [c.event.id for c in relevant]
        order_keys = {(c.event.data.warehouse_id, c.event.data.order_id) for c in relevant}  # type: ignore[attr-defined]

        try:
            async for attempt in AsyncRetrying(
                # Only infrastructure trouble is retried here; after that the batch
                # is handed back (nack) and read again.
                retry=retry_if_exception(_transient),
                stop=stop_after_delay(self.retry_seconds),
                wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
                reraise=True,
            ):
                with attempt:
                    now = self.clock.now()
                    plan = await self.store.record(
                        event_ids=event_ids,
                        order_keys=order_keys,
                        planner=lambda existing, held, now=now: plan_batch(
                            consumed, existing=existing, held=held, policy=self.policy, now=now
                        ),
                        render=self.render,
                        offsets=offsets,
                        now=now,
                    )
        except Exception as exc:
            log.error("batch not recorded", error=type(exc).__name__, records=seen)
            raise BatchFailed(type(exc).__name__) from None
        self.records += len(consumed)
        self.rows += len(plan.inserts)
        if any(row.status == "pending" for row in plan.inserts) or plan.updates:
            for waker in self.wakers:
                waker.set()
        log.debug("batch recorded", events=len(consumed), rows=len(plan.inserts), folded=len(plan.updates))

    def _unrenderable(self, event: Any) -> str | None:
        """Render the event's messages once up front (pure; warms the render cache)."""
        try:
            notice = notice_for(event, self.policy)
            if notice is not None:
                for channel in self.policy.channels:
                    self.render(notice, channel)
        except Exception as exc:  # noqa: BLE001 - any template or data problem
            return type(exc).__name__
        return None


def _transient(exc: BaseException) -> bool:
    """Infrastructure trouble worth retrying in place (not a bug, not bad data)."""
    return isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError, asyncpg.InterfaceError,
                            asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError,
                            asyncpg.TooManyConnectionsError, asyncpg.SerializationError,
                            asyncpg.DeadlockDetectedError))
