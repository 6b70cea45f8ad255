"""SIGKILL the projector mid-transaction, again and again: the tables end up as a clean run's."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from typing import Any

import asyncpg

from services.projector.service_layer.projector import LIVE_SCHEMA
from tests.kafka_helpers import wait_for
from tests.services.projector import reference
from tests.services.projector.helpers import (
    assert_tables_equal,
    drop_database,
    dump,
    failed,
    new_database,
    normalise_reference,
    publish_scenario,
    running,
    scenario,
    stored_offsets,
    topic_ends,
    wait_caught_up,
)

KILLS = 8
MID_BATCH_KILLS = 5  # kills that must land inside an open transaction (the check races the commit)
SEED = 17


def _start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fulfil", "projector", "--max-records", "150"],
        env={**env, "FULFIL_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _in_transaction(conn: asyncpg.Connection) -> bool:
    """The projector has a transaction open right now (between BEGIN and COMMIT)."""
    return bool(
        await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE application_name = 'fulfil-projector' AND datname = current_database()
                 AND xact_start IS NOT NULL"""
        )
    )


async def test_sigkill_mid_batch_loses_and_doubles_nothing(
    pg_settings, database_url, env_for_subprocess
) -> None:
    rng = random.Random(SEED)
    inputs, outputs = scenario(5_000, seed=SEED)
    await publish_scenario(pg_settings, inputs, outputs)
    total = sum((await topic_ends(pg_settings)).values())
    env = env_for_subprocess(pg_settings)
    conn = await asyncpg.connect(pg_settings.database_url)
    kills = 0
    mid_transaction = 0
    process: Any = None
    try:
        while kills < KILLS:
            process = _start(env)
            target = sum((await stored_offsets(pg_settings.database_url)).values()) + rng.randint(
                150, 700
            )

            async def kill_point(target=target, process=process) -> bool:
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read().decode()[-2000:])
                done = sum((await stored_offsets(pg_settings.database_url)).values())
                return done >= target and await _in_transaction(conn)

            await wait_for(kill_point, timeout=120, interval=0.002, what=f"kill point {kills + 1}")
            mid_transaction += await _in_transaction(conn)
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 30)
            kills += 1
            assert sum((await stored_offsets(pg_settings.database_url)).values()) < total, (
                "ran out of work"
            )

        process = _start(env)
        await wait_caught_up(pg_settings, timeout=180, check=lambda: _alive(process))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, "graceful stop must exit 0"
    finally:
        await conn.close()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
    assert mid_transaction >= MID_BATCH_KILLS, (
        f"only {mid_transaction} of {kills} kills hit an open transaction"
    )

    crashed = await dump(pg_settings.database_url)
    # The clean run: the same topics, one uninterrupted projector, another database.
    clean_url = await new_database(database_url)
    try:
        clean = pg_settings.model_copy(update={"database_url": clean_url})
        async with running(clean) as projector:
            await wait_caught_up(clean, check=lambda: failed(projector))
        assert crashed == await dump(clean_url)
    finally:
        await drop_database(database_url, clean_url)
    assert_tables_equal(crashed, normalise_reference(reference.fold(inputs, outputs)))
    assert sum((await stored_offsets(pg_settings.database_url, LIVE_SCHEMA)).values()) == total


def _alive(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        raise AssertionError(process.stderr.read().decode()[-2000:])
