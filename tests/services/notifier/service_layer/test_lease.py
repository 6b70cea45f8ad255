"""A claimed row stays with its sender for the worst-case send (issue 12, defect 14b).

The SMTP server answers every step slowly but within SMTP_TIMEOUT_SECONDS, so
the whole send takes longer than the configured FULFIL_NOTIFIER_LEASE_SECONDS
(which used to be the lease: it only had to exceed one timeout). A second
sender polling the outbox meanwhile must not claim the row and send it again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from services.notifier.adapters.migrate import apply_migrations
from services.notifier.adapters.outbox import OutboxStore
from services.notifier.adapters.smtp import EmailChannel
from services.notifier.domain.decide import Policy, notice_for
from services.notifier.domain.plan import Row
from services.notifier.service_layer.clock import SystemClock
from services.notifier.service_layer.messages import renderer
from services.notifier.service_layer.sender import ChannelSender
from tests.builders import allocations as b
from tests.kafka_helpers import wait_for
from tests.services.notifier.conftest import SmtpServer, _Recorder, notifier_settings_for
from tests.services.notifier.helpers import outbox

STEP_DELAY = 0.5  # per SMTP step, well inside the 1 s timeout
OLD_LEASE = 1.5  # valid before: longer than every single timeout


class _SlowRecorder(_Recorder):
    """Answers EHLO, MAIL, RCPT and DATA after STEP_DELAY each: 2 s a message."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:  # noqa: N802
        await asyncio.sleep(STEP_DELAY)  # the server is slow (its own loop, not the test's)
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:  # noqa: N802
        await asyncio.sleep(STEP_DELAY)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:  # noqa: N802
        await asyncio.sleep(STEP_DELAY)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(STEP_DELAY)
        return await super().handle_DATA(server, session, envelope)


async def test_a_send_longer_than_the_configured_lease_is_not_sent_again_by_a_second_sender(
    settings, test_database
) -> None:
    server = SmtpServer()
    server.recorder = _SlowRecorder()
    server.start()
    pool = await asyncpg.create_pool(test_database, min_size=1, max_size=4)
    try:
        notifier = notifier_settings_for(
            settings,
            test_database,
            smtp_url=server.url,
            smtp_timeout_seconds=1.0,
            webhook_timeout_seconds=1.0,
            fulfil_notifier_lease_seconds=OLD_LEASE,
        )
        await apply_migrations(test_database)
        store = OutboxStore(pool)
        clock = SystemClock()
        event = b.order_allocated("ord-slow", b.customer(1))
        notice = notice_for(event, Policy.from_settings(notifier))
        assert notice is not None
        assert (
            await store.insert(
                [
                    (
                        Row(channel="email", notice=notice, due=clock.now()),
                        renderer()(notice, "email"),
                    )
                ],
                clock.now(),
            )
            == 1
        )

        first, second = (
            ChannelSender(EmailChannel(notifier), store, notifier, clock) for _ in range(2)
        )
        started = time.monotonic()
        sending = asyncio.create_task(first.run_once())

        async def claimed() -> bool:
            return any(r["attempts"] == 1 for r in await outbox(notifier))

        await wait_for(claimed, timeout=30, interval=0.02, what="the first sender's claim")
        claimed_by_second = 0

        async def first_done() -> bool:
            # The second notifier polls the outbox all along, as it would in production.
            nonlocal claimed_by_second
            claimed_by_second += await second.run_once()
            return sending.done()

        await wait_for(first_done, timeout=60, interval=0.05, what="the first sender's slow send")
        assert await sending == 1
        assert time.monotonic() - started > OLD_LEASE, (
            "precondition: the send outlasted the configured lease"
        )
        (row,) = await outbox(notifier)
        assert row["status"] == "sent" and row["attempts"] == 1
        assert claimed_by_second == 0
        assert [m.message_id for m in server.mails] == [f"<{event.id}.email@fulfil>"], "sent once"
        assert notifier.lease_seconds >= notifier.send_deadline_seconds("email") > OLD_LEASE
    finally:
        await pool.close()
        server.stop()
