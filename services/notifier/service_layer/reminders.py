"""Weekly reminders for orders still waiting, driven from the projector's read model.

Every FULFIL_NOTIFIER_REMINDER_CHECK_SECONDS the scheduler reads the orders
with backordered lines and, for each, computes how many reminder periods have
passed since it went on backorder. Period k ≥ 1 gets one reminder whose id is
uuid5(order, k): inserting it twice is a no-op, so restarts, several notifier
processes or a missed tick never send a period twice, and a notifier that was
down for weeks sends one reminder (the current period's), not a backlog.
An order that shipped or was cancelled has no backordered line left in the
read model, so it gets no reminder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import asyncpg

from fulfil_platform.logs import get_logger
from services.notifier.adapters.outbox import OutboxStore
from services.notifier.adapters.read_model import ReadModel
from services.notifier.domain.decide import Policy, reminder_notice
from services.notifier.domain.plan import Row
from services.notifier.service_layer.clock import Clock
from services.notifier.service_layer.messages import Renderer

log = get_logger("notifier.reminders")


class ReminderScheduler:
    def __init__(
        self,
        read_model: ReadModel,
        store: OutboxStore,
        policy: Policy,
        render: Renderer,
        clock: Clock,
        *,
        wakers: Iterable[asyncio.Event] = (),
    ):
        self.read_model = read_model
        self.store = store
        self.policy = policy
        self.render = render
        self.clock = clock
        self.wakers = list(wakers)

    async def tick(self) -> int:
        """Queue the reminders due now; returns how many rows were added."""
        if self.policy.reminder_days <= 0 or not self.policy.channels:
            return 0
        now = self.clock.now()
        notices = []
        for order, lines in await self.read_model.backordered_orders():
            notice = reminder_notice(order, lines, now, self.policy)
            if notice is not None:
                notices.append(notice)
        keys = [(n.source_id, c) for n in notices for c in self.policy.channels]
        missing = set(await self.store.missing(keys))
        rows = [
            (Row(channel=c, notice=n, due=now), self.render(n, c))
            for n in notices
            for c in self.policy.channels
            if (n.source_id, c) in missing
        ]
        added = await self.store.insert(rows, now)
        if added:
            log.info("reminders queued", rows=added)
            for waker in self.wakers:
                waker.set()
        return added

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        warned = False
        while not stop.is_set():
            try:
                await self.tick()
                warned = False
            except asyncpg.UndefinedTableError:
                if not warned:  # the projector has not created its tables yet
                    log.warning("read model not found; reminders wait for the projector")
                    warned = True
            except Exception as exc:  # noqa: BLE001 - reminders must not stop the notifier
                log.warning("reminder check failed", error=type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
