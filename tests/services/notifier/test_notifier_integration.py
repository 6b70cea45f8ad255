"""The notifier end to end: real broker, PostgreSQL, SMTP server and HTTP receiver."""

from __future__ import annotations

from datetime import date

from fulfil_platform import kafka
from tests.builders import allocations as b
from tests.kafka_helpers import publish, wait_for
from tests.services.notifier.conftest import FakeClock, notifier_settings_for
from tests.services.notifier.helpers import (
    assert_no_pii,
    log_ends,
    outbox,
    running_notifier,
    stored_offsets,
)

SCRIPT_NAME = "<script>alert(1)</script> Mallory"


async def test_every_event_type_becomes_the_expected_message_on_both_channels(
    notifier_settings, smtp_server, webhook_receiver, captured_logs
) -> None:
    settings = notifier_settings
    await kafka.create_topics(settings)
    en = b.customer(1, name=SCRIPT_NAME)
    de = b.customer(2, locale="de-DE", name="Jürgen Weiß")
    events = {
        "confirmed": b.order_allocated("ord-1", en),
        "partial": b.partially_shipped("ord-2", en),
        "backordered": b.backordered("ord-3", en),
        "shipped": b.backorder_allocated(
            "ord-2",
            en,
            lines=[b.line(1, "SKU-1", 5, shipped=2, allocated=4, backordered=1, eta=None)],
        ),
        "eta": b.eta_changed("ord-2", en),
        "rejected": b.order_rejected("ord-4", en),
        "cancelled": b.cancellation_processed("ord-5", en),
        "german": b.partially_shipped("ord-6", de),
        "position": b.stock_position(),
    }
    await publish(settings, events.values())
    order_events = [e for k, e in events.items() if k != "position"]

    async def all_sent():
        rows = await outbox(settings, status="sent")
        return len(rows) == 2 * len(order_events) and rows

    async with running_notifier(settings):
        rows = await wait_for(all_sent, timeout=60, what="every message sent on both channels")
        await wait_for(
            lambda: _true(len(webhook_receiver.received()) >= len(order_events)), timeout=10
        )
    assert {(r["event_id"], r["channel"]) for r in rows} == {
        (e.id, c) for e in order_events for c in ("email", "webhook")
    }

    mails = {m.message_id: m for m in smtp_server.mails}
    hooks = {h.idempotency_key: h for h in webhook_receiver.received()}
    for key, event in events.items():
        if key == "position":
            assert f"<{event.id}.email@fulfil>" not in mails and event.id not in hooks
            continue
        mail = mails[f"<{event.id}.email@fulfil>"]
        hook = hooks[event.id]
        assert mail.to == str(event.data.customer.email)
        assert hook.verified, "the receiver checks the HMAC signature"
        doc = hook.json
        assert doc["notification_id"] == event.id and doc["order_id"] == event.data.order_id
        assert doc["subject"] == mail.subject and doc["text"] == mail.text.replace("\r\n", "\n")
        for text in (mail.subject, mail.text, mail.html, doc["text"]):
            assert event.id not in text and event.causation_id not in text
            shipment = getattr(event.data, "shipment_id", None)
            assert shipment is None or shipment not in text

    def mail(key):
        return mails[f"<{events[key].id}.email@fulfil>"]

    assert mail("confirmed").subject == "Your order ord-1 is on its way"
    assert "expected to ship on 14 April 2026" in mail("partial").text
    assert "https://shop.example/orders/ord-2/cancel" in mail("partial").text
    assert "2 × SKU-9: no date yet" in mail("backordered").text
    assert "We will write to you again by 9 March 2026 at the latest" in mail("backordered").text
    assert 'href="https://shop.example/orders/ord-3/cancel"' in mail("backordered").html
    assert mail("shipped").subject == "More of your order ord-2 is on its way"
    assert "1 × SKU-1: no date yet" in mail("shipped").text
    assert (
        "now expected to ship on 21 April 2026 (we last told you 14 April 2026)" in mail("eta").text
    )
    assert "no longer available (discontinued)" in mail("rejected").text
    assert "(EUR 59.70)" in mail("cancelled").text
    assert "/cancel" not in mail("cancelled").text and "/cancel" not in mail("confirmed").text
    # The name is escaped in HTML, and plain text stays plain text.
    for key in ("partial", "backordered", "eta"):
        assert "<script>" not in mail(key).html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Mallory" in mail(key).html
    assert mail("partial").text.startswith(f"Hello {SCRIPT_NAME},")
    german = mail("german")
    assert german.subject == "Ein Teil Ihrer Bestellung ord-6 ist unterwegs"
    assert german.text.startswith("Hallo Jürgen Weiß,")
    assert "voraussichtlicher Versand am 14. April 2026" in german.text
    assert hooks[events["german"].id].json["language"] == "de"

    assert_no_pii(captured_logs.getvalue(), "Mallory", "Jürgen", "Customer Number")


async def _true(value):
    return value


async def test_smtp_outage_delays_email_only_and_loses_nothing(
    notifier_settings, smtp_server, webhook_receiver, captured_logs
) -> None:
    settings = notifier_settings
    await kafka.create_topics(settings)
    smtp_server.stop()  # the mail server is down before the first message
    events = [
        b.backordered(
            f"ord-{n}",
            b.customer(n),
            lines=[b.line(1, "SKU-9", 2, backordered=2, eta=date(2026, 5, n % 28 + 1))],
        )
        for n in range(40)
    ]
    await publish(settings, events)
    async with running_notifier(settings) as task:
        # Consumption and the webhook go on while email cannot be delivered.
        ends = await log_ends(settings)
        await wait_for(
            lambda: _caught_up(settings, ends),
            timeout=60,
            what="consumer caught up during the outage",
        )
        await wait_for(
            lambda: _true(len({h.idempotency_key for h in webhook_receiver.received()}) == 40),
            timeout=60,
            what="webhooks during the SMTP outage",
        )

        async def emails_retrying():
            rows = await outbox(settings, channel="email")
            return (
                len(rows) == 40
                and all(r["status"] == "pending" for r in rows)
                and all(r["attempts"] >= 2 and r["last_error"] for r in rows)
            )

        await wait_for(emails_retrying, timeout=60, what="email rows retried with backoff")
        assert all(r["status"] == "sent" for r in await outbox(settings, channel="webhook"))
        # More events during the outage are consumed too: the lag stays bounded.
        more = [b.backordered(f"late-{n}", b.customer(100 + n)) for n in range(10)]
        await publish(settings, more)
        ends = await log_ends(settings)
        await wait_for(
            lambda: _caught_up(settings, ends),
            timeout=60,
            what="consumer caught up with later events",
        )
        smtp_server.start()

        async def all_sent():
            rows = await outbox(settings)
            return len(rows) == 100 and all(r["status"] == "sent" for r in rows)

        await wait_for(
            all_sent, timeout=60, what="every email delivered after the server came back"
        )
        assert not task.done()
    received = {m.message_id for m in smtp_server.mails}
    assert received == {f"<{e.id}.email@fulfil>" for e in events + more}
    assert "SMTP unavailable" in captured_logs.getvalue()
    assert_no_pii(captured_logs.getvalue(), "Customer Number")


async def _caught_up(settings, ends) -> bool:
    stored = await stored_offsets(settings)
    return all(stored.get(p, 0) >= end for p, end in ends.items())


async def test_wrong_webhook_secret_fails_verification_then_retry_delivers(
    settings, test_database, smtp_server, webhook_receiver, env_for_subprocess, captured_logs
) -> None:
    import asyncio
    import subprocess
    import sys

    import orjson

    notifier = notifier_settings_for(
        settings,
        test_database,
        webhook_url=webhook_receiver.url,
        webhook_secret="not-the-receivers-secret",
        fulfil_notifier_email=False,
        smtp_url=smtp_server.url,
    )
    await kafka.create_topics(notifier)
    event = b.backordered("ord-w", b.customer())
    await publish(notifier, [event])

    async def cli(*args: str) -> dict:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fulfil",
            "notifications",
            *args,
            "--json",
            env=env_for_subprocess(notifier),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-2000:]
        return orjson.loads(out)

    async with running_notifier(notifier):

        async def failed():
            return await outbox(notifier, status="failed")

        (row,) = await wait_for(failed, timeout=60, what="the webhook row to fail")
        assert (
            row["channel"] == "webhook" and row["attempts"] == 1
        )  # 401 is final: no pointless retries
        assert row["last_error"] == "webhook answered HTTP 401"
        (hook,) = webhook_receiver.received()
        assert not hook.verified and hook.idempotency_key == event.id
        assert await outbox(notifier, channel="email") == []  # email switched off

        listed = await cli("--failed")
        assert [m["id"] for m in listed["messages"]] == [row["id"]]
        assert listed["counts"] == {"webhook": {"failed": 1}}
        assert "customer" not in orjson.dumps(listed).decode().lower().replace("customer_", "")

        webhook_receiver.secret = "not-the-receivers-secret"  # the receiver rotates to our key
        assert await cli("retry") == {"requeued": 1}

        async def sent():
            return await outbox(notifier, status="sent")

        await wait_for(sent, timeout=30, what="the re-queued webhook to be delivered")
    hooks = webhook_receiver.received()
    assert [h.verified for h in hooks] == [False, True]
    assert (
        hooks[0].body == hooks[1].body
        and hooks[0].idempotency_key == hooks[1].idempotency_key == event.id
    )
    assert (await cli("--failed"))["messages"] == []
    assert_no_pii(captured_logs.getvalue(), "Customer Number")


async def test_eta_changes_within_the_hold_window_become_one_message(
    settings, test_database, smtp_server, webhook_receiver, captured_logs
) -> None:
    clock = FakeClock()
    notifier = notifier_settings_for(
        settings,
        test_database,
        smtp_url=smtp_server.url,
        fulfil_notifier_webhook=False,
        fulfil_notifier_eta_hold_seconds=300,
    )
    await kafka.create_topics(notifier)
    cust = b.customer(3)
    first = b.eta_changed(
        "ord-e",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 21), previous_eta=date(2026, 4, 14))
        ],
    )
    second = b.eta_changed(
        "ord-e",
        cust,
        lines=[
            b.line(1, "A", 3, backordered=3, eta=date(2026, 4, 28), previous_eta=date(2026, 4, 21))
        ],
    )
    other = b.eta_changed(
        "ord-f",
        cust,
        lines=[
            b.line(1, "A", 1, backordered=1, eta=date(2026, 4, 28), previous_eta=date(2026, 4, 21))
        ],
    )
    gone = b.cancellation_processed("ord-f", cust, lines=[b.line(1, "A", 1, cancelled=1)])
    async with running_notifier(notifier, clock=clock):
        await publish(notifier, [first])
        await wait_for(lambda: outbox(notifier), timeout=30, what="the first ETA notice")
        clock.advance(seconds=120)
        await publish(notifier, [second, other, gone])

        async def folded():
            rows = await outbox(notifier)
            return len(rows) == 4 and rows

        rows = await wait_for(folded, timeout=30, what="the burst folded")
        status = {r["event_id"]: r["status"] for r in rows}
        assert (status[first.id], status[second.id], status[other.id]) == (
            "superseded",
            "pending",
            "superseded",
        )
        assert status[gone.id] in ("pending", "sent")  # not held: goes out at once
        assert [m.message_id for m in smtp_server.mails] in ([], [f"<{gone.id}.email@fulfil>"])
        clock.advance(seconds=181)  # the first notice's window ends: 300 s after it arrived

        async def delivered():
            return len(smtp_server.mails) == 2 and smtp_server.mails

        mails = await wait_for(delivered, timeout=30, what="one ETA message and the cancellation")
    by_id = {m.message_id: m for m in mails}
    assert set(by_id) == {f"<{second.id}.email@fulfil>", f"<{gone.id}.email@fulfil>"}
    text = by_id[f"<{second.id}.email@fulfil>"].text
    assert "now expected to ship on 28 April 2026 (we last told you 14 April 2026)" in text
    assert "21 April" not in text  # the intermediate date was never told, so it is not mentioned
    assert_no_pii(captured_logs.getvalue(), "Customer Number")


async def test_attempts_run_out_then_the_row_is_failed_listed_and_retried(
    settings, test_database, smtp_server, webhook_receiver, env_for_subprocess, captured_logs
) -> None:
    import asyncio
    import subprocess
    import sys

    smtp_server.stop()
    notifier = notifier_settings_for(
        settings, test_database, smtp_url=smtp_server.url, fulfil_notifier_max_attempts=3
    )
    await kafka.create_topics(notifier)
    event = b.partially_shipped("ord-m", b.customer(9))
    await publish(notifier, [event])

    async def cli(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fulfil",
            "notifications",
            *args,
            env=env_for_subprocess(notifier),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-2000:]
        return out.decode()

    async with running_notifier(notifier):
        (row,) = await wait_for(
            lambda: outbox(notifier, status="failed"), timeout=60, what="attempts to run out"
        )
        assert row["attempts"] == 3 and row["last_error"].startswith("SMTP unavailable")
        listing = await cli("--failed", "--wide")
        assert "email: 1 failed" in listing
        (line,) = [
            x.split() for x in listing.splitlines() if x.split()[:2] == [str(row["id"]), "failed"]
        ]
        assert "ord-m" in line and "email" in line and "3" in line  # order, channel, attempts
        assert "customer9@" not in listing and "Customer Number" not in listing
        smtp_server.start()
        assert "re-queued 1 failed message(s)" in await cli("retry", "--channel", "email")
        await wait_for(
            lambda: outbox(notifier, status="sent"), timeout=30, what="the retried message"
        )
    (mail,) = smtp_server.mails
    assert mail.message_id == f"<{event.id}.email@fulfil>"
    assert_no_pii(captured_logs.getvalue(), "Customer Number")


async def test_malformed_allocation_records_go_to_the_dlq_and_the_rest_is_sent(
    notifier_settings, smtp_server, webhook_receiver
) -> None:
    import orjson

    from fulfil_platform.dead_letter_writer import H_KIND, H_REASON, H_STAGE
    from schemas.registry import ALLOCATIONS
    from services.notifier.entrypoints.app import NOTIFIER_GROUP
    from tests.kafka_helpers import read_topic

    settings = notifier_settings
    await kafka.create_topics(settings)
    good = b.backordered("ord-g", b.customer(7))
    bad_schema = orjson.dumps(
        {**orjson.loads(good.model_dump_json()), "id": "bad-1", "data": {"order_id": "x"}}
    )
    await publish(settings, [b'{"id": "broken', bad_schema], topic=ALLOCATIONS)
    await publish(settings, [good])
    async with running_notifier(settings):

        async def sent():
            return len(await outbox(settings, status="sent")) == 2

        await wait_for(sent, timeout=60, what="the good event's messages")

        async def dead_letters():
            # The notifier's own dead-letter topic, named after its consumer group.
            records = [
                r
                for rs in (await read_topic(settings, NOTIFIER_GROUP + ".dlq")).values()
                for r in rs
            ]
            return len(records) == 2 and records

        records = await wait_for(dead_letters, timeout=30, what="two dead letters")
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    assert {h[H_STAGE] for h in headers} == {"notifier"}
    assert {h[H_KIND] for h in headers} == {"bad_json", "schema_violation"}
    assert all(h[H_REASON] for h in headers)
    assert {r.value for r in records} == {b'{"id": "broken', bad_schema}
