"""One sender per channel: works the outbox rows of its channel.

Rows are claimed in small rounds (FOR UPDATE SKIP LOCKED, so several
notifier processes can share the work), sent concurrently, then marked. A
claim pushes the row's `next_attempt_at` out by a lease longer than the
worst-case send (derived from the channel timeouts; every send is cut off at
its deadline), so a slow send is never claimed by a second sender; if this
process dies mid-send, the row becomes due again after the lease and is sent
again with the same Message-ID / webhook-id. A failed send backs off alone (capped
exponential backoff with jitter, from tenacity, stored in the row), so one
bad recipient or a channel outage never holds up other rows or the other
channel; after FULFIL_NOTIFIER_MAX_ATTEMPTS the row is `failed`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tenacity import RetryCallState, wait_exponential_jitter

from fulfil_platform.logs import get_logger
from services.notifier.adapters.channels import Channel, DeliveryError
from services.notifier.adapters.outbox import Claimed, OutboxStore
from services.notifier.config import NotifierSettings
from services.notifier.service_layer.clock import Clock

log = get_logger("notifier.sender")


class ChannelSender:
    def __init__(
        self,
        channel: Channel,
        store: OutboxStore,
        settings: NotifierSettings,
        clock: Clock,
        wake: asyncio.Event | None = None,
    ):
        self.channel = channel
        self.store = store
        self.clock = clock
        self.wake = wake or asyncio.Event()
        self.max_attempts = settings.fulfil_notifier_max_attempts
        # The lease outlasts the worst-case send (settings.lease_seconds), and the deadline
        # makes that worst case real: a send still running at it is abandoned and retried.
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.deadline = settings.send_deadline_seconds(channel.name)
        self.poll = settings.fulfil_notifier_poll_seconds
        self.concurrency = settings.fulfil_notifier_concurrency
        self.backoff = wait_exponential_jitter(
            multiplier=settings.fulfil_notifier_backoff_initial_seconds,
            max=settings.fulfil_notifier_backoff_max_seconds,
            jitter=settings.fulfil_notifier_backoff_initial_seconds,
        )
        self.sent = 0
        self.failed = 0
        self.retried = 0

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failed ones."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempts)
        return self.backoff(state)

    async def run(self, stop: asyncio.Event) -> None:
        await self.channel.start()
        log.info("sender started", channel=self.channel.name)
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    handled = await self.run_once()
                except Exception as exc:  # noqa: BLE001
                    # The database is away: keep the task alive and try again later.
                    log.warning(
                        "sender round failed", channel=self.channel.name, error=type(exc).__name__
                    )
                    handled = 0
                if not handled:
                    await self._idle(stop)
        finally:
            await self.channel.close()
            log.info(
                "sender stopped", channel=self.channel.name, sent=self.sent, failed=self.failed
            )

    async def run_once(self) -> int:
        """One round: claim due rows, send them concurrently, mark them. Returns rows handled."""
        now = self.clock.now()
        rows = await self.store.claim(self.channel.name, now, now + self.lease, self.concurrency)
        if rows:
            results = await asyncio.gather(
                *(self._deliver(row) for row in rows), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Exception):
                    # Marking failed (database away): the row is sent again after its lease.
                    log.warning(
                        "delivery not recorded",
                        channel=self.channel.name,
                        error=type(result).__name__,
                    )
        return len(rows)

    async def _deliver(self, row: Claimed) -> None:
        try:
            async with asyncio.timeout(self.deadline):
                await self.channel.send(row)
        except DeliveryError as exc:
            await self._failed(row, exc.summary, exc.permanent)
        except TimeoutError:
            await self._failed(
                row, f"send took longer than its deadline ({self.deadline:g} s)", permanent=False
            )
        except Exception as exc:  # noqa: BLE001 - a channel bug must not stop the sender
            await self._failed(row, f"unexpected {type(exc).__name__}", permanent=False)
        else:
            await self.store.mark_sent(row.id, self.clock.now())
            self.sent += 1
            log.debug(
                "message sent",
                channel=row.channel,
                event_id=row.event_id,
                kind=row.kind,
                attempt=row.attempts,
            )

    async def _failed(self, row: Claimed, summary: str, permanent: bool) -> None:
        now = self.clock.now()
        context = {
            "channel": row.channel,
            "event_id": row.event_id,
            "kind": row.kind,
            "attempt": row.attempts,
            "error": summary,
        }
        if permanent or row.attempts >= self.max_attempts:
            await self.store.mark_failed(row.id, now, summary)
            self.failed += 1
            log.error("message failed", permanent=permanent, **context)
            return
        delay = self.delay(row.attempts)
        await self.store.mark_retry(row.id, now, now + timedelta(seconds=delay), summary)
        self.retried += 1
        log.warning("message will be retried", retry_in_s=round(delay, 1), **context)

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
