"""PostgreSQL goes away mid-stream: the projector pauses, backs off, reports
unhealthy, and resumes when it is back — nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from fulfil import embedded
from tests.kafka_helpers import publish, wait_for
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    dump,
    failed,
    normalise_reference,
    publish_scenario,
    running,
    scenario,
    stored_offsets,
    wait_caught_up,
)


@pytest.fixture
def dedicated_postgres():
    """A PostgreSQL of this test's own: stopping it must not disturb other tests."""
    root = Path(tempfile.mkdtemp(prefix="fulfil-pg-outage-"))
    handle = embedded.start_postgres(root / "pgdata")
    stop = embedded.stop_at_exit(
        lambda: (embedded.stop_postgres(root / "pgdata"), shutil.rmtree(root, ignore_errors=True))
    )
    try:
        yield handle
    finally:
        stop()


async def test_postgres_outage_pauses_and_resumes_without_loss(
    settings, dedicated_postgres, tmp_path
) -> None:
    server = dedicated_postgres
    pg_settings = settings.model_copy(update={"database_url": server.url})
    inputs, outputs = scenario(1_500, seed=23)
    half_in, half_out = len(inputs) // 2, len(outputs) // 2
    await publish_scenario(pg_settings, inputs[:half_in], outputs[:half_out])
    health = tmp_path / "health.json"

    with capture_logs() as logs:
        await _outage(
            pg_settings,
            server,
            projector_health=health,
            inputs=inputs,
            outputs=outputs,
            half_in=half_in,
            half_out=half_out,
        )
    retried = (
        "batch failed; nothing committed, it is read again",
        "partition recovery failed; retrying",
    )
    waits = [e["retry_in_s"] for e in logs if e["event"] in retried]
    # Backed off, not a tight loop: capped exponential waits (0.2 s doubling, jitter 20 %, cap 10 s).
    assert len(waits) >= 3
    assert all(0.16 <= w <= 12.0 for w in waits), waits
    assert waits[:3] == sorted(waits[:3]) and waits[2] >= 0.64, waits

    assert_tables_equal(
        await dump(server.url), normalise_reference(reference.fold(inputs, outputs))
    )


async def _outage(
    pg_settings, server, *, projector_health, inputs, outputs, half_in, half_out
) -> None:
    health = projector_health
    async with running(pg_settings, max_records=100, health_file=health) as projector:
        await wait_for(
            lambda: _progress(server.url),
            timeout=60,
            interval=0.05,
            what="the projector to apply a few batches",
        )
        await asyncio.to_thread(embedded.stop_postgres, server)
        await publish(pg_settings, inputs[half_in:])
        await publish(pg_settings, outputs[half_out:])

        async def unhealthy_for_a_while() -> bool:
            failed(projector)
            return not projector.healthy and projector.retries >= 3

        async def positions() -> dict:
            return {
                tp: await projector.consumer.position(tp) for tp in projector.consumer.assignment()
            }

        async def failing() -> bool:
            failed(projector)
            return not projector.healthy

        await wait_for(failing, timeout=60, what="the first failed attempt")
        await wait_for(unhealthy_for_a_while, timeout=60, what="several backed-off retries")
        paused_at, retries = await positions(), projector.retries

        async def retried_more() -> bool:
            failed(projector)
            return projector.retries >= retries + 2

        await wait_for(retried_more, timeout=60, what="more backed-off retries")
        # Paused: nothing is consumed while PostgreSQL is away, though records are waiting.
        assert await positions() == paused_at
        assert not projector.healthy
        assert orjson.loads(health.read_bytes())["healthy"] is False
        restarted = await asyncio.to_thread(
            embedded.start_postgres, server.data_dir, port=server.port, log_path=server.log_path
        )
        assert restarted.port == server.port
        await wait_caught_up(pg_settings, timeout=120, check=lambda: failed(projector))

        async def healthy_again() -> bool:
            failed(projector)
            return projector.healthy and orjson.loads(health.read_bytes())["healthy"] is True

        await wait_for(
            healthy_again, timeout=60, what="the projector and its health file to be healthy"
        )


async def _progress(url: str) -> bool:
    return sum((await stored_offsets(url)).values()) >= 300
