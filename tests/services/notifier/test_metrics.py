"""A running notifier serves its counters, dead letters, lag, and the outbox backlog per channel."""

from __future__ import annotations

from fulfil import embedded
from fulfil_platform import kafka
from schemas.registry import ALLOCATIONS
from services.notifier.entrypoints.app import quarantine_topic
from tests.builders import allocations as b
from tests.kafka_helpers import publish, wait_for
from tests.metrics_helpers import aget, samples, scrape
from tests.services.notifier.helpers import running_notifier


async def test_outbox_backlog_counters_and_dead_letters_on_metrics(
    notifier_settings, smtp_server
) -> None:
    port = embedded.free_port()
    settings = notifier_settings.model_copy(
        update={"fulfil_metrics_port": port, "fulfil_metrics_host": "127.0.0.1"}
    )
    await kafka.create_topics(settings)
    smtp_server.stop()  # email fails and waits in the outbox; the webhook goes out
    await publish(
        settings,
        [b.backordered("ord-m1", b.customer(1)), b.partially_shipped("ord-m2", b.customer(2))],
    )
    await publish(settings, [b'{"id": "broken'], topic=ALLOCATIONS)
    async with running_notifier(settings):

        async def email_waiting() -> str | None:
            text = await scrape(port)
            if text is None:
                return None
            waiting = sum(
                samples(text, "fulfil_outbox_messages", channel="email", status="pending")
            )
            sent_hooks = samples(
                text, "fulfil_outbox_messages", channel="webhook", status="pending"
            )
            return text if waiting == 2 and sent_hooks == [0.0] else None

        text = await wait_for(
            email_waiting, timeout=60, what="two emails pending, no webhooks pending"
        )
        topic = settings.topic(ALLOCATIONS)
        assert (
            sum(samples(text, "fulfil_events_consumed_total", service="notifier", topic=topic)) == 3
        )
        assert samples(
            text,
            "fulfil_dead_letters_total",
            service="notifier",
            topic=quarantine_topic(settings),
            reason="bad_json",
        ) == [1.0]
        assert samples(text, "fulfil_consumer_lag", service="notifier"), (
            "lag reported per partition"
        )
        assert (await aget(port, "/readyz"))[0] == 200, (
            "a failing channel does not make consumption unready"
        )

        smtp_server.start()

        async def email_drained() -> bool:
            text = await scrape(port) or ""
            return samples(text, "fulfil_outbox_messages", channel="email", status="pending") == [
                0.0
            ]

        await wait_for(
            email_drained, timeout=60, what="the email backlog drained after SMTP came back"
        )
