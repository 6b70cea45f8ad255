"""Metrics, liveness and readiness: unit checks, then against a real broker and a real process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from fulfil import embedded
from fulfil_platform import kafka
from fulfil_platform.config import ConfigError
from fulfil_platform.metrics import Health, MetricsServer, Progress, serving
from schemas.registry import COMMANDS, INVENTORY, ORDERS
from services.allocator.entrypoints.core import AllocatorCore
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import publish, wait_for
from tests.metrics_helpers import aget, samples, stop_gracefully


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ units


def test_ready_needs_a_connection_then_fails_only_when_lagging_without_progress() -> None:
    clock = FakeClock()
    progress = Progress("unit-a", stall_seconds=10, clock=clock)
    assert progress.ready() == (False, "not connected to the broker")
    progress.record_lag({})
    assert progress.ready() == (True, None)
    clock.now += 100
    progress.record_lag({})  # the watcher's next look: idle and caught up is still ready
    assert progress.ready()[0]

    progress.record_lag({TopicPartition("t", 0): 5})
    assert progress.ready()[0], "lag alone is not a stall"
    clock.now += 11
    ok, reason = progress.ready()
    assert not ok and "5 records behind" in reason
    with progress.batch():
        pass
    assert progress.ready()[0], "a handled batch is progress"
    progress.set_unhealthy("apply batch: ConnectionRefusedError")
    assert progress.ready() == (False, "apply batch: ConnectionRefusedError")


def test_alive_fails_when_the_event_loop_stops_ticking() -> None:
    clock = FakeClock()
    health = Health(clock=clock)
    assert health.alive()[0]
    clock.now += 61
    assert not health.alive()[0]


async def test_endpoints_answer_on_their_paths() -> None:
    health = Health()
    progress = health.add(Progress("unit-b", stall_seconds=10))
    async with MetricsServer(health, "127.0.0.1", 0) as server:
        assert (await aget(server.port, "/healthz"))[0] == 200
        status, body = await aget(server.port, "/readyz")
        assert (
            status == 503
            and orjson.loads(body)["components"]["unit-b"]["reason"]
            == "not connected to the broker"
        )
        progress.record_lag({})
        assert (await aget(server.port, "/readyz"))[0] == 200
        progress.dead_lettered("orders.v1.dlq", "bad_json")
        status, text = await aget(server.port, "/metrics")
        assert status == 200
        assert samples(
            text.decode(), "fulfil_dead_letters_total", service="unit-b", reason="bad_json"
        ) == [1.0]
        assert samples(text.decode(), "fulfil_ready", service="unit-b") == [1.0]
        # The exposition parses as Prometheus text, with our families typed as declared.
        families = {f.name: f.type for f in text_string_to_metric_families(text.decode())}
        assert families["fulfil_events_consumed"] == "counter"
        assert families["fulfil_batch_duration_seconds"] == "histogram"
        assert families["fulfil_consumer_lag"] == "gauge"
        assert (await aget(server.port, "/nope"))[0] == 404


async def test_a_taken_port_is_a_configuration_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(ConfigError, match="FULFIL_METRICS_PORT"):
            async with serving(Health(), "127.0.0.1", sock.getsockname()[1]):
                pass


# ------------------------------------------------------------------ real broker


async def test_readyz_flips_when_the_core_is_paused_and_back_when_resumed(settings) -> None:
    settings = settings.model_copy(update={"fulfil_ready_stall_seconds": 1.0})
    await kafka.create_topics(settings)
    stream = mixed_stream(600, seed=3)
    await publish(settings, stream[:300], topic=COMMANDS)
    health = Health()
    core = AllocatorCore(settings, progress=health.add(Progress("allocator-core", 1.0)))
    stop = asyncio.Event()
    async with MetricsServer(health, "127.0.0.1", 0) as server:
        task = asyncio.create_task(core.run(stop))
        try:

            async def ready() -> bool:
                return (await aget(server.port, "/readyz"))[0] == 200 and core.processed >= 300

            await wait_for(ready, timeout=60, what="core ready and caught up")
            text = (await aget(server.port, "/metrics"))[1].decode()
            commands, allocations = settings.topic(COMMANDS), settings.topic("allocations.v1")
            assert (
                sum(
                    samples(
                        text,
                        "fulfil_events_consumed_total",
                        service="allocator-core",
                        topic=commands,
                    )
                )
                == 300
            )
            assert (
                sum(
                    samples(
                        text,
                        "fulfil_events_produced_total",
                        service="allocator-core",
                        topic=allocations,
                    )
                )
                > 0
            )
            assert (
                sum(samples(text, "fulfil_batch_duration_seconds_count", service="allocator-core"))
                > 0
            )
            assert samples(text, "fulfil_consumer_lag", service="allocator-core"), (
                "lag reported per partition"
            )

            core.consumer.pause(*core.consumer.assignment())  # a stuck consumer, artificially
            await publish(settings, stream[300:], topic=COMMANDS)

            async def stalled() -> bytes | None:
                status, body = await aget(server.port, "/readyz")
                return body if status == 503 else None

            body = await wait_for(stalled, timeout=30, what="/readyz failing while paused")
            assert "no progress" in orjson.loads(body)["components"]["allocator-core"]["reason"]
            text = (await aget(server.port, "/metrics"))[1].decode()
            assert sum(samples(text, "fulfil_consumer_lag", service="allocator-core")) > 0
            assert samples(text, "fulfil_ready", service="allocator-core") == [0.0]
            assert (await aget(server.port, "/healthz"))[0] == 200, "stuck is not dead"

            core.consumer.resume(*core.consumer.assignment())

            async def recovered() -> bool:
                return (await aget(server.port, "/readyz"))[0] == 200 and core.processed >= 600

            await wait_for(recovered, timeout=60, what="/readyz passing again after resume")
            text = (await aget(server.port, "/metrics"))[1].decode()
            assert (
                sum(
                    samples(
                        text,
                        "fulfil_events_consumed_total",
                        service="allocator-core",
                        topic=commands,
                    )
                )
                == 600
            )
        finally:
            stop.set()
            await task


async def test_a_running_allocator_serves_counters_lag_and_dead_letters(
    settings, env_for_subprocess
) -> None:
    await kafka.create_topics(settings)
    port = embedded.free_port()
    env = {
        **env_for_subprocess(settings),
        "FULFIL_METRICS_PORT": str(port),
        "FULFIL_METRICS_HOST": "127.0.0.1",
        "FULFIL_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "fulfil", "allocator"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await publish(settings, mixed_stream(400, seed=5))
        await publish(settings, [b"{not json", b'{"type": "Nope"}'], topic=ORDERS)

        async def scraped() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"allocator exited: {process.stderr.read().decode()[-2000:]}")
            try:
                status, body = await aget(port, "/metrics")
            except OSError:
                return None  # not listening yet
            text = body.decode()
            routed = sum(samples(text, "fulfil_events_produced_total", service="allocator-router"))
            allocated = sum(samples(text, "fulfil_events_produced_total", service="allocator-core"))
            return text if status == 200 and routed >= 400 and allocated > 0 else None

        text = await wait_for(scraped, timeout=90, what="router and core counters on /metrics")
        consumed = sum(
            samples(
                text,
                "fulfil_events_consumed_total",
                service="allocator-router",
                topic=settings.topic(ORDERS),
            )
        )
        consumed += sum(
            samples(
                text,
                "fulfil_events_consumed_total",
                service="allocator-router",
                topic=settings.topic(INVENTORY),
            )
        )
        assert consumed == 402
        dlq = settings.topic(ORDERS) + ".dlq"
        assert samples(
            text,
            "fulfil_dead_letters_total",
            service="allocator-router",
            topic=dlq,
            reason="bad_json",
        ) == [1.0]
        assert samples(
            text,
            "fulfil_dead_letters_total",
            service="allocator-router",
            topic=dlq,
            reason="unknown_type",
        ) == [1.0]
        for service in ("allocator-router", "allocator-core"):
            assert samples(text, "fulfil_consumer_lag", service=service), f"{service} reports lag"
            assert samples(text, "fulfil_last_progress_timestamp_seconds", service=service)[0] > 0
        assert (await aget(port, "/healthz"))[0] == 200

        async def ready() -> bool:
            return (await aget(port, "/readyz"))[0] == 200

        await wait_for(ready, timeout=60, what="/readyz")
    finally:
        code = await stop_gracefully(process)
    assert code == 0
