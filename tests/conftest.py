"""Shared fixtures: one broker and one PostgreSQL per test session, isolated per test.

Backends, in order: servers named by KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL;
testcontainers when FULFIL_TEST_BACKEND=testcontainers (needs Docker and the
`docker` extra); otherwise the embedded runtime (fulfil/embedded.py). Tests are
isolated by a unique topic prefix and a fresh database each, never by restarts.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from fulfil import embedded
from fulfil_platform.config import Settings, load_settings
from tests.builders.environment import settings_as_env


def _backend() -> str:
    return os.environ.get("FULFIL_TEST_BACKEND", "embedded")


def _testcontainers(module: str) -> ModuleType:
    try:
        return importlib.import_module(f"testcontainers.{module}")
    except ImportError:
        pytest.fail("FULFIL_TEST_BACKEND=testcontainers needs `pip install -e '.[docker]'`")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if configured := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield configured
    elif _backend() == "testcontainers":
        with _testcontainers("kafka").KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        state_dir = Path(tempfile.mkdtemp(prefix="fulfil-tansu-"))
        broker = embedded.start_broker(state_dir)

        def stop_broker() -> None:
            embedded.stop_broker(broker)
            shutil.rmtree(state_dir, ignore_errors=True)

        stop = embedded.stop_at_exit(stop_broker)
        try:
            yield broker.bootstrap
        finally:
            stop()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if configured := os.environ.get("DATABASE_URL"):
        yield configured
    elif _backend() == "testcontainers":
        with _testcontainers("postgres").PostgresContainer("postgres:16") as postgres:
            yield postgres.get_connection_url(driver=None)
    else:
        # A fresh data dir per run: a leftover server can never be mistaken for ours.
        root = Path(tempfile.mkdtemp(prefix="fulfil-pg-"))
        server = embedded.start_postgres(root / "pgdata")

        def stop_postgres() -> None:
            embedded.stop_postgres(server)
            shutil.rmtree(root, ignore_errors=True)

        stop = embedded.stop_at_exit(stop_postgres)
        try:
            yield server.url
        finally:
            stop()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def test_database(database_url: str) -> AsyncIterator[str]:
    """A database of its own for one test, on the session's server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield embedded.with_database(database_url, name)
        # FORCE: a test that failed may still hold connections.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings(
    kafka_bootstrap: str, database_url: str, topic_prefix: str, tmp_path: Path
) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        fulfil_topic_prefix=topic_prefix,
        fulfil_partitions=3,
        fulfil_clock_tick_seconds=0,  # tests tick by hand: the wall clock would move their dates
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
        kafka_enable_idempotence=False,  # Tansu has no idempotent producer
        fulfil_state_dir=tmp_path,
    )


@pytest.fixture
def env_for_subprocess() -> Callable[[Settings], dict[str, str]]:
    """`env_for_subprocess(settings)`: the env dict for running `fulfil` as a subprocess."""
    return settings_as_env


@pytest.fixture
def proxied_broker() -> Iterator[Any]:
    """A broker of this test's own behind a fault-injecting proxy (tests/faults/proxy.py)."""
    from tests.faults.proxy import broker_behind_proxy

    with broker_behind_proxy() as proxied:
        yield proxied


@pytest.fixture
def proxied_settings(proxied_broker: Any, settings: Settings) -> Settings:
    """`settings`, with every Kafka client going through `proxied_broker`'s proxy."""
    return settings.model_copy(update={"kafka_bootstrap_servers": proxied_broker.bootstrap})


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """`spawn(name, args, env)`: a process of the test's own (tests/processes.py), killed at
    the end of the test if it is still running."""
    from tests.processes import spawner

    yield from spawner(tmp_path)
