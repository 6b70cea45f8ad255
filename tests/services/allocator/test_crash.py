"""Kill -9 the allocator at random points; allocations.v1 must equal a clean run's output."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter

import orjson

from fulfil_platform import kafka
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS
from services.allocator.entrypoints.core import CORE_GROUP
from services.allocator.entrypoints.router import ROUTER_GROUP
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import (
    TopicWatcher,
    committed_offsets,
    expected_and_actual,
    publish,
    wait_for,
)

EVENTS = int(os.environ.get("CRASH_EVENTS", 20_000))
KILLS = int(os.environ.get("CRASH_KILLS", 10))
SEED = int(os.environ.get("CRASH_SEED", 7))


def _first_difference(left: list[bytes], right: list[bytes]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b), None)


async def _caught_up(settings) -> bool:
    """Router and core have committed everything there is to read."""
    for base, group in ((ORDERS, ROUTER_GROUP), (INVENTORY, ROUTER_GROUP), (COMMANDS, CORE_GROUP)):
        group = settings.topic(group)
        async with TopicWatcher(settings, base) as watcher:
            ends = await watcher.ends()
        if await committed_offsets(settings, group, base) != ends:
            return False
    return True


def _start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fulfil", "allocator"],
        # Snapshot often, so that kills land before, during and after snapshots.
        env={**env, "FULFIL_LOG_LEVEL": "WARNING", "FULFIL_SNAPSHOT_EVERY": "1500"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    settings, env_for_subprocess
) -> None:
    rng = random.Random(SEED)
    await kafka.create_topics(settings)
    stream = mixed_stream(EVENTS, seed=SEED)
    # Each run gets a fresh slice of the stream on top of what is left, so that
    # kills land in the middle of work rather than on an idle allocator.
    slices = [stream[i :: KILLS + 1] for i in range(KILLS + 1)]
    slices = [
        stream[sum(map(len, slices[:i])) : sum(map(len, slices[: i + 1]))] for i in range(KILLS + 1)
    ]
    env = env_for_subprocess(settings)
    kills = 0
    busy_kills = 0
    process = None
    try:
        async with TopicWatcher(settings, ALLOCATIONS) as outputs:
            while kills < KILLS:
                await publish(settings, slices[kills])
                process = _start(env)
                # Kill points: after a random number of new outputs, from right after the
                # restart (mid-recovery) to deep into a batch.
                before = await outputs.total()

                async def producing_or_exited(before=before, process=process):
                    return (
                        process.poll() is not None
                        or await outputs.total() > before
                        or await _caught_up(settings)
                    )

                if rng.random() < 0.2:
                    # A kill during start-up: group join, snapshot load, output-tail read.
                    await asyncio.sleep(
                        rng.uniform(0.5, 3.0)
                    )  # a random kill point, not a wait for a condition
                else:
                    await wait_for(
                        producing_or_exited,
                        timeout=120,
                        interval=0.01,
                        what=f"outputs before kill {kills + 1}",
                    )
                    await asyncio.sleep(
                        rng.uniform(0.0, 0.25)
                    )  # a random kill point inside the work
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                kills += 1
                busy_kills += not await _caught_up(settings)

            await publish(settings, slices[-1])
            process = _start(env)

            async def caught_up():
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read().decode()[-2000:])
                return await _caught_up(settings)

            await wait_for(
                caught_up, timeout=300, interval=1.0, what="the last allocator to catch up"
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, "graceful stop must exit 0"
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    expected, actual = await expected_and_actual(settings)
    ids = Counter(orjson.loads(value)["id"] for values in actual.values() for value in values)
    duplicated = [i for i, n in ids.items() if n > 1]
    missing = {orjson.loads(v)["id"] for vs in expected.values() for v in vs} - set(ids)
    assert kills >= KILLS
    assert busy_kills >= KILLS // 3, f"only {busy_kills} of {kills} kills hit a busy allocator"
    divergence = {
        p: (
            len(expected[p]),
            len(actual.get(p, [])),
            _first_difference(expected[p], actual.get(p, [])),
        )
        for p in expected
    }
    assert not duplicated, f"{len(duplicated)} output ids written twice, e.g. {duplicated[:3]}"
    assert not missing, (
        f"{len(missing)} output ids missing, e.g. {sorted(missing)[:3]}; (expected, actual, first divergence) per partition: {divergence}"
    )
    assert actual == expected  # byte for byte, in order, per partition
    assert sum(len(v) for v in expected.values()) > EVENTS // 2
