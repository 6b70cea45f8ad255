"""Two allocator cores in one consumer group: SIGKILL one mid-batch, the other takes over.

What this shows (README, "Scaling: partitions, keys and instances"):

1. A first core owns all six command partitions and folds a warm-up slice
   (snapshots in its state directory).
2. A second core joins: a live rebalance hands it half the partitions. With a
   directory of its own it has no snapshot of them, so it folds them from
   offset 0 and suppresses every output the first core already wrote.
3. Both process the next slice: committed offsets advance on both halves.
4. The second core is SIGKILLed inside a batch - seen milliseconds before the
   kill with outputs acknowledged by the broker for commands whose offsets it
   had not committed - while commands keep arriving. After the session
   timeout the group evicts it and the survivor recovers the dead member's
   partitions: from its own older snapshot of them (taken when they were
   revoked in step 2) or, with one shared directory, from the latest snapshot
   there (the dead member's, or the first core's if the dead member wrote
   none); it re-folds from there and suppresses what is already on the
   output partition.
5. Publishing goes on during the takeover. Once every command partition is
   committed up to its log end, `allocations.v1` must equal a clean fold of
   the command log, per partition: nothing lost, no output id twice, same order.

Commands are published straight to `allocator.commands.v1`, keyed by
`warehouse_id` with the producer's default partitioner - what the router
does. The router is stateless and tested elsewhere (test_crash.py runs it);
leaving it out keeps the core's group the only moving part and makes the
finish line exact: a command is on the log the moment `publish` returns, so
"committed == log end on every command partition" means everything is folded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from schemas.allocation_headers import position_of
from schemas.registry import ALLOCATIONS, COMMANDS, encode
from services.allocator.entrypoints.core import CORE_GROUP
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import (
    TopicWatcher,
    committed_offsets,
    expected_and_actual,
    publish,
    wait_for,
)

PARTITIONS = 6
# WH1..WH24 hash (murmur2, the default partitioner, as in the router) to all six
# partitions, unevenly: 1 to 11 warehouses each. Checked in the test.
WAREHOUSES = 24
SEED = int(os.environ.get("TAKEOVER_SEED", 11))
WARMUP, BOTH, AT_KILL, AFTER_KILL = 3_000, 2_000, 20_000, 4_000
FEED_CHUNK = 2_500


def partition_of(event: Any) -> int:
    partitions = list(range(PARTITIONS))
    return DefaultPartitioner()(event.data.warehouse_id.encode(), partitions, partitions)


class Core:
    """One `fulfil allocator --stage core` process; its stderr goes to a file."""

    def __init__(self, name: str, env: dict[str, str], state_dir: Path, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"core-{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fulfil", "allocator", "--stage", "core"],
                env={**env, "FULFIL_STATE_DIR": str(state_dir)},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def recoveries(self) -> list[dict[str, Any]]:
        """The core's "partition recovered" log lines: one per assigned partition per rebalance."""
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # aiokafka's own (stdlib) warnings are plain text
            if isinstance(line, dict) and line.get("event") == "partition recovered":
                lines.append(line)
        return lines

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def owners(cores: list[Core]) -> dict[int, Core]:
    """Who owns each partition now: the core that recovered it last.

    A new owner recovers a partition only after the previous owner revoked it
    (the rebalance completes once every member has rejoined or been evicted),
    so the latest recovery names the owner. The log timestamps come from one
    host clock and only order events here.
    """
    latest: dict[int, tuple[str, Core]] = {}
    for core in cores:
        for line in core.recoveries():
            partition, at = line["partition"], line["timestamp"]
            if partition not in latest or at > latest[partition][0]:
                latest[partition] = (at, core)
    return {partition: core for partition, (_, core) in latest.items()}


class BatchWindow:
    """Sees a core inside a batch: on one of its partitions, outputs are on the
    broker for commands whose offsets the core has not committed yet."""

    def __init__(self, settings: Settings, partitions: list[int]):
        self.settings = settings
        self.partitions = partitions
        self.last: dict[int, int] = {}  # partition -> command offset of the last output seen

    async def __aenter__(self) -> BatchWindow:
        self.outputs = kafka.consumer(self.settings, group_id=None)
        await self.outputs.start()
        self.outputs.assign(
            [TopicPartition(self.settings.topic(ALLOCATIONS), p) for p in self.partitions]
        )
        # assign, not subscribe: reading the group's offsets must not join the group
        self.offsets = kafka.consumer(self.settings, group_id=self.settings.topic(CORE_GROUP))
        self.commands = [TopicPartition(self.settings.topic(COMMANDS), p) for p in self.partitions]
        self.offsets.assign(self.commands)
        await self.offsets.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.outputs.stop()
        await self.offsets.stop()

    async def open(self) -> dict[int, tuple[int, int]] | None:
        """{partition: (committed offset, command offset of its last output)} where the
        output is past the commit, or None. Outputs are read before offsets and a core
        commits only after its outputs are acknowledged, so a hit is never stale."""
        for _ in range(20):
            batch = await self.outputs.getmany(timeout_ms=5, max_records=50_000)
            for tp, records in batch.items():
                for record in records:
                    if (position := position_of(record.headers)) is not None:
                        self.last[tp.partition] = position[0]
            if not batch:
                break
        inside = {}
        for tp in self.commands:
            committed = await self.offsets.committed(tp) or 0
            if self.last.get(tp.partition, -1) >= committed:
                inside[tp.partition] = (committed, self.last[tp.partition])
        return inside or None


async def feed(settings: Settings, events: list[Any], stop: asyncio.Event) -> int:
    """Publish `events` in acknowledged chunks until `stop` is set; returns how many went out.

    Whole record batches per partition (what the router does), far faster than one
    send per record: a core consuming the partitions falls behind and folds full batches.
    """
    producer = kafka.producer(settings)
    await producer.start()
    topic = settings.topic(COMMANDS)
    sent = 0
    try:
        while sent < len(events) and not stop.is_set():
            chunk = events[sent : sent + FEED_CHUNK]
            sender = kafka.BatchSender(producer)
            for event in chunk:
                await sender.add(topic, encode(event), key=event.data.warehouse_id.encode())
            await sender.flush()
            sent += len(chunk)
        return sent
    finally:
        await producer.stop()


async def command_ends(settings: Settings) -> dict[int, int]:
    async with TopicWatcher(settings, COMMANDS) as watcher:
        return await watcher.ends()


async def core_committed(settings: Settings) -> dict[int, int]:
    return await committed_offsets(settings, settings.topic(CORE_GROUP), COMMANDS)


@pytest.mark.parametrize("state_dirs", ["per-pod", "shared"])
async def test_survivor_takes_over_a_killed_cores_partitions_exactly_once(
    settings: Settings, env_for_subprocess, tmp_path: Path, state_dirs: str
) -> None:
    settings = settings.model_copy(update={"fulfil_partitions": PARTITIONS})
    await kafka.create_topics(settings)
    stream = mixed_stream(
        WARMUP + BOTH + AT_KILL + AFTER_KILL,
        seed=SEED,
        warehouses=WAREHOUSES,
        skus_per_warehouse=30,
    )
    assert {partition_of(e) for e in stream} == set(range(PARTITIONS)), (
        "every partition must get work"
    )
    warmup, both, at_kill, after_kill = (
        stream[:WARMUP],
        stream[WARMUP : WARMUP + BOTH],
        stream[WARMUP + BOTH : WARMUP + BOTH + AT_KILL],
        stream[WARMUP + BOTH + AT_KILL :],
    )
    env = {
        **env_for_subprocess(settings),
        "FULFIL_LOG_LEVEL": "INFO",  # "partition recovered" lines tell who owns what
        "FULFIL_LOG_FORMAT": "json",
        # Snapshot often: takeovers start from snapshots behind the log end.
        "FULFIL_SNAPSHOT_EVERY": "500",
    }
    if state_dirs == "per-pod":  # two pods, a volume each
        dirs = [tmp_path / "state-a", tmp_path / "state-b"]
    else:  # one volume mounted by both
        dirs = [tmp_path / "state", tmp_path / "state"]
    cores: list[Core] = []
    victim: Core | None = None

    async def caught_up() -> bool:
        """Every command partition's committed offset (core group) equals its log end."""
        for core in cores:
            assert core is victim or core.alive(), f"core {core.name} exited:\n{core.tail()}"
        return await core_committed(settings) == await command_ends(settings)

    try:
        # 1. One core alone owns every partition.
        await publish(settings, warmup, topic=COMMANDS)
        a = Core("a", env, dirs[0], tmp_path)
        cores.append(a)
        await wait_for(caught_up, timeout=60, what="core a to fold the warm-up")
        assert set(owners(cores)) == set(range(PARTITIONS)) and set(owners(cores).values()) == {a}

        # 2. A second core joins: the group splits the partitions between them.
        # b commits at most every few seconds (its positions are snapshots + output tail):
        # while it folds the kill slice, its outputs stay ahead of its committed offsets
        # for seconds, not the millisecond between an acknowledged flush and its commit.
        b = Core("b", {**env, "FULFIL_COMMIT_INTERVAL_MS": "4000"}, dirs[1], tmp_path)
        cores.append(b)

        async def split() -> dict[int, Core] | None:
            assert a.alive() and b.alive(), f"a:\n{a.tail()}\nb:\n{b.tail()}"
            now = owners(cores)
            return (
                now if set(now) == set(range(PARTITIONS)) and set(now.values()) == {a, b} else None
            )

        split_owners = await wait_for(split, timeout=60, what="the group to split the partitions")
        mine_a = sorted(p for p, core in split_owners.items() if core is a)
        mine_b = sorted(p for p, core in split_owners.items() if core is b)

        # 3. Both process: committed offsets advance on both halves.
        before = await core_committed(settings)
        await publish(settings, both, topic=COMMANDS)
        await wait_for(caught_up, timeout=60, what="both cores to fold the second slice")
        after = await core_committed(settings)
        assert owners(cores) == split_owners, "no rebalance expected while both run"
        for half in (mine_a, mine_b):
            assert all(after[p] > before[p] for p in half), (half, before, after)

        # 4. Kill core b inside a batch. Its partitions' share of the slice goes first, as
        #    fast as the producer can: b falls behind and folds full batches (partitions are
        #    independent logs, so publishing a's share later changes no partition's order).
        victim = b
        to_b = [e for e in at_kill if partition_of(e) in mine_b]
        to_a = [e for e in at_kill if partition_of(e) not in mine_b]
        stop_feeding = asyncio.Event()
        feeding = asyncio.create_task(feed(settings, to_b, stop_feeding))
        try:
            async with BatchWindow(settings, mine_b) as window:

                async def b_inside_a_batch() -> dict[int, tuple[int, int]] | None:
                    assert b.alive(), b.tail()
                    return await window.open()

                inside = await wait_for(
                    b_inside_a_batch, timeout=60, interval=0.005, what="core b inside a batch"
                )
                b.process.send_signal(
                    signal.SIGKILL
                )  # at once: b commits when its batch is acknowledged
            b.process.wait(timeout=30)
            # Nobody owns b's partitions until the group evicts b, a session timeout later.
            committed_at_kill = await core_committed(settings)
        finally:
            stop_feeding.set()
            fed = await feeding

        # 5. Keep publishing during the takeover: some before the survivor owns b's
        #    partitions, the rest once it has recovered them.
        await publish(settings, to_b[fed:] + to_a, topic=COMMANDS)

        async def a_took_over() -> bool:
            assert a.alive(), a.tail()
            return all(owners(cores).get(p) is a for p in range(PARTITIONS))

        await wait_for(
            a_took_over, timeout=60, interval=0.1, what="core a to recover core b's partitions"
        )
        await publish(settings, after_kill, topic=COMMANDS)
        await wait_for(
            caught_up, timeout=90, interval=0.5, what="core a to catch up on every partition"
        )
        final = await core_committed(settings)

        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(timeout=60) == 0, f"graceful stop must exit 0:\n{a.tail()}"
    finally:
        for core in cores:
            core.stop()

    # The survivor recovered each of the dead core's partitions after b had them (owners() is
    # "latest recovery wins", and a_took_over saw a own them all) and moved their offsets on.
    takeover = {line["partition"]: line for line in a.recoveries() if line["partition"] in mine_b}
    assert all(final[p] > committed_at_kill[p] for p in mine_b), (mine_b, committed_at_kill, final)
    print(
        f"\n[{state_dirs}] a={mine_a} b={mine_b}; b inside a batch (committed, last output's command): {inside}; "
        f"committed at kill: {committed_at_kill}; survivor's takeover (snapshot offset, written_upto): "
        f"{ {p: (takeover[p]['snapshot_offset'], takeover[p]['written_upto']) for p in mine_b} }"
    )

    expected, actual = await expected_and_actual(settings)
    ids = Counter(orjson.loads(value)["id"] for values in actual.values() for value in values)
    duplicated = [i for i, n in ids.items() if n > 1]
    missing = {orjson.loads(v)["id"] for vs in expected.values() for v in vs} - set(ids)
    assert not duplicated, f"{len(duplicated)} output ids written twice, e.g. {duplicated[:3]}"
    assert not missing, f"{len(missing)} output ids missing, e.g. {sorted(missing)[:3]}"
    assert actual == expected  # byte for byte, in order, per partition
    assert all(expected[p] for p in range(PARTITIONS)), "every partition must have outputs"
