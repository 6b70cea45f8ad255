"""`fulfil notifier` configuration errors: one line on stderr, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_OURS = ("KAFKA_", "DATABASE_URL", "SMTP_", "WEBHOOK_", "FULFIL_")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    return subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KAFKA_BOOTSTRAP_SERVERS is not set"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "DATABASE_URL is not set"),
        (
            {
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
            },
            "no notification channel is configured",
        ),
        (
            {"WEBHOOK_URL": "https://hooks.example/x"},
            "WEBHOOK_SECRET is required when WEBHOOK_URL is set",
        ),
        (
            {"FULFIL_CANCEL_URL_TEMPLATE": "https://shop.example/cancel"},
            "invalid FULFIL_CANCEL_URL_TEMPLATE",
        ),
        ({"SMTP_USERNAME": "u"}, "SMTP_PASSWORD is required"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(env, message) -> None:
    result = _run("notifier", **env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_notifications_needs_a_database() -> None:
    result = _run("notifications", "--failed", "--json")
    assert result.returncode == 2 and "DATABASE_URL is not set" in result.stderr


def test_retry_of_ids_that_are_not_failed_messages_says_so(test_database) -> None:
    """Issue 17: `notifications retry 42` (no such id) re-queued nothing and said nothing
    about it; it names the ids it could not re-queue and exits 1."""
    result = _run("notifications", "retry", "42", "43", DATABASE_URL=test_database)
    assert result.returncode == 1, result.stderr
    assert "42" in result.stderr and "43" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_the_listing_names_the_alert_of_a_back_in_stock_message(test_database) -> None:
    """A back-in-stock message is about a stock alert, not an order: the listing says which."""
    from datetime import UTC, datetime

    import asyncpg
    import orjson

    from services.notifier.adapters.migrate import apply_migrations
    from services.notifier.adapters.outbox import OutboxStore
    from services.notifier.domain.decide import Policy, notice_for
    from services.notifier.domain.plan import Row
    from services.notifier.service_layer.messages import renderer
    from tests.builders import allocations as b

    await apply_migrations(test_database)
    policy = Policy(channels=("email",), cancel_url_template="https://s.example/{order_id}")
    notice = notice_for(b.stock_alert_triggered("alert-9", b.customer(9)), policy)
    assert notice is not None
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    pool = await asyncpg.create_pool(test_database, min_size=1, max_size=1)
    try:
        row = Row(channel="email", notice=notice, due=now)
        assert await OutboxStore(pool).insert([(row, renderer()(notice, "email"))], now) == 1
    finally:
        await pool.close()
    result = _run("notifications", DATABASE_URL=test_database)
    assert result.returncode == 0, result.stderr
    assert "back_in_stock" in result.stdout and "alert alert-9" in result.stdout
    assert "@" not in result.stdout  # no recipient
    listed = _run("notifications", "--json", DATABASE_URL=test_database)
    (message,) = orjson.loads(listed.stdout)["messages"]
    assert message["order_id"] is None and message["alert_id"] == "alert-9"
