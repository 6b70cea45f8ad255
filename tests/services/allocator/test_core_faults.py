"""Faults of issue 12 against the allocator core, on the real broker.

Each test names the defect it covers (#n of issue 12). Commands go straight to
`allocator.commands.v1` (the router is tested elsewhere), so "committed offset
== log end on every command partition" means everything is folded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from fulfil import log_audit
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.consumer import EXIT_REFUSED, Refused
from fulfil_platform.metrics import SNAPSHOTS_SKIPPED, Health
from schemas.registry import ALLOCATIONS, COMMANDS, ContractError, parse_input, parse_output
from services.allocator.entrypoints.app import run_allocator
from services.allocator.entrypoints.core import CORE_GROUP, AllocatorCore
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import (
    TopicWatcher,
    committed_offsets,
    expected_and_actual,
    fold_command_log,
    publish,
    read_topic,
    wait_for,
)
from tests.services.allocator.test_takeover import Core, core_committed, owners


async def _caught_up(settings: Settings) -> bool:
    async with TopicWatcher(settings, COMMANDS) as watcher:
        ends = await watcher.ends()
    return await committed_offsets(settings, settings.topic(CORE_GROUP), COMMANDS) == ends


@contextlib.asynccontextmanager
async def _core(settings: Settings, health: Health | None = None):
    """`fulfil allocator --stage core` in this process; stopped gracefully on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_allocator(settings, "core", stop, health))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)


async def _run_until_caught_up(
    settings: Settings, health: Health | None = None, timeout: float = 90
) -> None:
    async with _core(settings, health) as task:

        async def done() -> bool:
            if task.done():
                raise AssertionError(f"core stopped: {task.exception()!r}")
            return await _caught_up(settings)

        await wait_for(done, timeout=timeout, what="the core to fold every command")


def _assert_exact(expected: dict[int, list[bytes]], actual: dict[int, list[bytes]]) -> None:
    ids = Counter(orjson.loads(v)["id"] for vs in actual.values() for v in vs)
    duplicated = [i for i, n in ids.items() if n > 1]
    missing = {orjson.loads(v)["id"] for vs in expected.values() for v in vs} - set(ids)
    assert not missing, f"{len(missing)} outputs lost, e.g. {sorted(missing)[:3]}"
    assert not duplicated, f"{len(duplicated)} output ids written twice, e.g. {duplicated[:3]}"
    assert actual == expected  # byte for byte, in order, per partition


async def _assert_repeats_identical_and_applied_once_exact(settings: Settings) -> None:
    """What an evicted-but-alive core may leave (README, "Guarantees"): repeated output ids,
    each byte for byte the owner's event. What a consumer applying each id once sees must be
    exactly a clean fold of the command log, invariants included."""
    commands = await read_topic(settings, COMMANDS)
    expected = fold_command_log(commands)
    first: dict[str, bytes] = {}
    applied: dict[int, list[bytes]] = {}
    for partition, records in (await read_topic(settings, ALLOCATIONS)).items():
        applied[partition] = []
        for record in records:
            event_id = orjson.loads(record.value)["id"]
            if event_id in first:
                assert first[event_id] == record.value, (
                    f"output {event_id} written twice with different bytes"
                )
                continue
            first[event_id] = record.value
            applied[partition].append(record.value)
    inputs = []
    for records in commands.values():
        for record in records:
            with contextlib.suppress(ContractError):
                inputs.append(parse_input(record.value))
    report = log_audit.check(
        inputs, [parse_output(v) for values in applied.values() for v in values]
    )
    assert report.ok, f"{len(report.problems)} invariant violations, e.g. {report.problems[:5]}"
    assert applied == {p: expected.get(p, []) for p in applied}  # in order, per partition


def _snapshots(settings: Settings) -> list[Path]:
    return sorted((settings.fulfil_state_dir / "allocator").glob("*.snapshot"))


@pytest.fixture
def core_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"fulfil_snapshot_every": 300})


# ---------------------------------------------------------------- #5


async def test_unreadable_snapshot_is_discarded_and_the_partition_rebuilt(
    core_settings: Settings,
) -> None:
    """#5: an unreadable snapshot (here an unsupported pickle protocol, a ValueError the old
    store let escape from the rebalance listener) must not make a zombie: the partition is
    rebuilt from the log and its outputs are exactly those of a clean run."""
    settings = core_settings
    await kafka.create_topics(settings)
    stream = mixed_stream(1_500, seed=5)
    await publish(settings, stream[:1_000], topic=COMMANDS)
    await _run_until_caught_up(settings)
    snapshots = _snapshots(settings)
    assert snapshots, "the graceful stop writes snapshots"
    for path in snapshots:
        path.write_bytes(b"\x80\x09" + os.urandom(64))
    await publish(settings, stream[1_000:], topic=COMMANDS)
    await _run_until_caught_up(settings, timeout=60)
    _assert_exact(*await expected_and_actual(settings))


# ---------------------------------------------------------------- #13


async def test_unwritable_state_directory_only_skips_snapshots(core_settings: Settings) -> None:
    """#13: snapshots are an optimisation; a state directory that cannot be written (full,
    read-only, or here: a file in its place) is a warning and a metric, not a crash."""
    settings = core_settings
    await kafka.create_topics(settings)
    stream = mixed_stream(2_000, seed=13)
    state = settings.fulfil_state_dir / "allocator"
    skipped_before = sum(
        SNAPSHOTS_SKIPPED.labels("allocator-core", name)._value.get()
        for name in ("FileExistsError", "NotADirectoryError", "SnapshotWriteError", "OSError")
    )
    health = Health()
    async with _core(settings, health) as task:
        await wait_for(
            lambda: _ready(health), timeout=60, what="the core to recover its partitions"
        )
        state.mkdir(parents=True, exist_ok=True)
        for path in state.iterdir():
            path.unlink()
        state.rmdir()
        state.write_bytes(b"not a directory")  # every snapshot write fails from now on
        await publish(settings, stream, topic=COMMANDS)

        async def done() -> bool:
            if task.done():
                raise AssertionError(f"core stopped: {task.exception()!r}")
            return await _caught_up(settings)

        await wait_for(done, timeout=90, what="the core to fold every command")
    assert not task.exception()
    skipped = sum(
        SNAPSHOTS_SKIPPED.labels("allocator-core", name)._value.get()
        for name in ("FileExistsError", "NotADirectoryError", "SnapshotWriteError", "OSError")
    )
    assert skipped > skipped_before
    _assert_exact(*await expected_and_actual(settings))


async def _ready(health: Health) -> bool:
    ok, _ = health.readiness()
    return ok


# ---------------------------------------------------------------- #12


class _Probe:
    """Weakly referenceable, held only through a cycle with a partition's state."""

    state: Any = None


async def test_revoked_partition_states_can_be_collected(core_settings: Settings) -> None:
    """#12: recovery freezes the loaded states (gc.freeze) so the cyclic GC skips them;
    a state revoked afterwards must still be collectable, not frozen for ever."""
    settings = core_settings
    await kafka.create_topics(settings)
    await publish(settings, mixed_stream(600, seed=12), topic=COMMANDS)
    await _run_until_caught_up(settings)
    core = AllocatorCore(settings)
    core.tail_reader = kafka.consumer(settings, group_id=None)
    await core.tail_reader.start()
    try:
        tp = TopicPartition(settings.topic(COMMANDS), 0)
        await core.recover([tp])
        probe = _Probe()
        state = core.folds[0].snapshot.state
        state.skus[("probe", "probe")] = probe  # a cycle state <-> probe, as real states have
        probe.state = state
        alive = weakref.ref(probe)
        del probe, state
        await core.recover(
            [TopicPartition(settings.topic(COMMANDS), 1)]
        )  # another recovery freezes again
        await core.release([tp])
        gc.collect()
        assert alive() is None, "a revoked partition's state stays frozen in memory"
    finally:
        gc.unfreeze()
        await core.tail_reader.stop()


# ---------------------------------------------------------------- #4


def _core_process(env: dict[str, str], state_dir: Path) -> Any:
    """`fulfil allocator --stage core` with its stderr in a file (a full pipe would block it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir.parent / f"{state_dir.name}-core.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fulfil", "allocator", "--stage", "core"],
            env={
                **env,
                "FULFIL_STATE_DIR": str(state_dir),
                "FULFIL_LOG_LEVEL": os.environ.get("CORE_FAULTS_LOG_LEVEL", "WARNING"),
            },
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    return process


def _stderr(process: Any) -> str:
    return process.log_path.read_text(errors="replace")


async def _exit_of(process: subprocess.Popen, timeout: float) -> int | None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        return await asyncio.to_thread(process.wait, timeout)
    return None


async def test_snapshot_of_another_log_is_refused_with_its_remedy(
    core_settings: Settings, env_for_subprocess, tmp_path: Path
) -> None:
    """#4: a topic re-created (or a broker that lost its log) holds fewer commands than the
    snapshot has folded: trusting the snapshot would skip new commands silently. The core
    exits with EXIT_REFUSED and one line naming the file to delete."""
    old = core_settings
    await kafka.create_topics(old)
    await publish(old, mixed_stream(900, seed=4), topic=COMMANDS)
    await _run_until_caught_up(old)
    # The "re-created topic": same state directory, a fresh log with fewer commands.
    new = old.model_copy(update={"fulfil_topic_prefix": old.fulfil_topic_prefix.rstrip(".") + "n."})
    for path in _snapshots(old):
        path.rename(path.with_name(path.name.replace(old.topic(COMMANDS), new.topic(COMMANDS))))
    await kafka.create_topics(new)
    await publish(new, mixed_stream(60, seed=40), topic=COMMANDS)
    process = _core_process(env_for_subprocess(new), new.fulfil_state_dir)
    try:
        code = await _exit_of(process, 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = _stderr(process)
    assert code == EXIT_REFUSED, f"exit {code}: {stderr[-2000:]}"
    message = [line for line in stderr.splitlines() if line.startswith("fulfil: ")]
    assert (
        len(message) == 1
        and "does not match the command log" in message[0]
        and "Delete " in message[0]
    ), stderr[-2000:]


async def test_snapshot_from_a_broker_that_lost_its_data_is_refused(
    proxied_settings: Settings, proxied_broker, tmp_path
) -> None:
    """#4: the broker restarted with its memory lost and received more commands than before:
    the log end alone would not notice, the cluster id and the command digest do."""
    settings = proxied_settings.model_copy(update={"fulfil_snapshot_every": 300})
    await kafka.create_topics(settings)
    await publish(settings, mixed_stream(600, seed=41), topic=COMMANDS)
    await _run_until_caught_up(settings)
    assert _snapshots(settings)
    await asyncio.to_thread(proxied_broker.restart_broker)
    await kafka.create_topics(settings)
    await publish(settings, mixed_stream(1_500, seed=42), topic=COMMANDS)
    with pytest.raises(Refused, match="does not match the command log"):
        await asyncio.wait_for(run_allocator(settings, "core", asyncio.Event()), 60)


async def test_same_offsets_different_commands_are_refused(core_settings: Settings) -> None:
    """#4: a log with as many commands as before but other ones (a re-created topic refilled)."""
    old = core_settings
    await kafka.create_topics(old)
    await publish(old, mixed_stream(600, seed=43), topic=COMMANDS)
    await _run_until_caught_up(old)
    new = old.model_copy(update={"fulfil_topic_prefix": old.fulfil_topic_prefix.rstrip(".") + "m."})
    for path in _snapshots(old):
        path.rename(path.with_name(path.name.replace(old.topic(COMMANDS), new.topic(COMMANDS))))
    await kafka.create_topics(new)
    await publish(new, mixed_stream(3_000, seed=44), topic=COMMANDS)
    with pytest.raises(Refused, match="is not the one it was taken after"):
        await asyncio.wait_for(run_allocator(new, "core", asyncio.Event()), 60)


# ---------------------------------------------------------------- #1


async def test_failed_flush_never_advances_a_snapshot_or_commit(
    proxied_settings: Settings, proxied_broker
) -> None:
    """#1: the broker stalls past the producer's request timeout in the middle of the work
    (KafkaTimeoutError on flush). The batch's folds must be dropped and rebuilt, so that
    in the end every output is on the topic exactly once, in order. A core that dies of
    it is restarted, as an orchestrator would."""
    settings = proxied_settings.model_copy(
        update={"fulfil_snapshot_every": 200, "kafka_request_timeout_ms": 2_000}
    )
    await kafka.create_topics(settings)
    stream = mixed_stream(4_000, seed=1)
    await publish(settings, stream[:500], topic=COMMANDS)
    health = Health()
    progress_seen = 0
    async with TopicWatcher(settings, "allocations.v1") as outputs:
        stop = asyncio.Event()
        task = asyncio.create_task(run_allocator(settings, "core", stop, health))
        try:
            await wait_for(outputs.total, timeout=60, what="first outputs")
            feeding = asyncio.create_task(publish(settings, stream[500:], topic=COMMANDS))
            await wait_for(feeding_done(feeding), timeout=60, what="commands published")
            progress_seen = await outputs.total()
            proxied_broker.proxy.stall()

            async def flush_failed() -> bool:
                # The failed produce bites when the runtime discards the batch's partitions
                # (not ready until recovered, which needs the broker back) or the core dies.
                return task.done() or not health.readiness()[0]

            await wait_for(
                flush_failed, timeout=60, interval=0.05, what="the stalled produce to fail"
            )
            proxied_broker.proxy.resume()
            restarts = 0

            async def done() -> bool:
                nonlocal task, restarts
                if task.done():  # the old core dies of the failed flush: restart it
                    restarts += 1
                    task = asyncio.create_task(run_allocator(settings, "core", stop, Health()))
                return await _caught_up(settings)

            await wait_for(done, timeout=120, interval=0.5, what="the core to fold every command")
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 60)
    assert progress_seen > 0
    _assert_exact(*await expected_and_actual(settings))


def feeding_done(task: asyncio.Task[Any]):
    async def check() -> bool:
        return task.done()

    return check


# ---------------------------------------------------------------- #9


async def test_a_core_stopped_past_its_session_writes_nothing_the_new_owner_does_not(
    core_settings: Settings, env_for_subprocess, tmp_path: Path
) -> None:
    """#9: core b is SIGSTOPped mid-work for longer than the session timeout; core a takes its
    partitions; then b is SIGCONTed while work continues. The output topic must equal a
    clean fold: no output twice, none lost, none out of order."""
    settings = core_settings.model_copy(
        update={"fulfil_partitions": 6, "fulfil_snapshot_every": 500}
    )
    await kafka.create_topics(settings)
    env = {**env_for_subprocess(settings), "FULFIL_SNAPSHOT_EVERY": "500"}
    stream = mixed_stream(30_000, seed=9, warehouses=24, skus_per_warehouse=30)
    await publish(settings, stream[:2_000], topic=COMMANDS)
    # INFO: the "partition recovered" lines tell who owns which partition (owners()).
    env = {**env, "FULFIL_LOG_LEVEL": "INFO", "FULFIL_LOG_FORMAT": "json"}
    cores: list[Core] = []
    try:
        a = Core("a", env, tmp_path / "a", tmp_path)
        cores.append(a)
        await wait_for(lambda: _caught_up(settings), timeout=60, what="core a to catch up")
        b = Core("b", env, tmp_path / "b", tmp_path)
        cores.append(b)

        async def split() -> list[int] | None:
            assert a.alive() and b.alive(), f"a:\n{a.tail()}\nb:\n{b.tail()}"
            now = owners(cores)
            mine_b = [p for p, core in now.items() if core is b]
            return mine_b if len(now) == 6 and mine_b and len(mine_b) < 6 else None

        mine_b = await wait_for(split, timeout=60, what="the group to split the partitions")
        before = await core_committed(settings)
        feeding = asyncio.create_task(publish(settings, stream[2_000:], topic=COMMANDS))

        async def b_working() -> bool:
            now = await core_committed(settings)
            return any(now.get(p, 0) > before.get(p, 0) for p in mine_b)

        await wait_for(b_working, timeout=60, interval=0.02, what="core b to fold new commands")
        b.process.send_signal(signal.SIGSTOP)

        async def a_took_over() -> bool:
            assert a.alive(), a.tail()
            return all(owners(cores).get(p) is a for p in range(6))

        await wait_for(a_took_over, timeout=60, what="core a to take over b's partitions")
        b.process.send_signal(signal.SIGCONT)
        await feeding

        async def done() -> bool:
            assert a.alive(), a.tail()
            return await _caught_up(settings)

        await wait_for(done, timeout=180, interval=0.5, what="the cores to fold every command")
        for core in cores:
            core.process.send_signal(signal.SIGTERM)
        for core in cores:
            assert await _exit_of(core.process, 60) == 0, core.tail()
    finally:
        for core in cores:
            core.stop()
    await _assert_repeats_identical_and_applied_once_exact(settings)
