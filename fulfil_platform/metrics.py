"""Prometheus metrics, liveness and readiness for every service.

Each consuming component (allocator router, allocator core, projector,
notifier) owns a `Progress`: it counts what it consumed and produced, times
its batches, and a lag watcher measures consumer lag per partition. A
process serves them on FULFIL_METRICS_PORT:

- `/metrics`: the Prometheus exposition;
- `/healthz`: alive: the event loop answered recently (a thread serves HTTP,
  so a wedged loop must be detected, not assumed);
- `/readyz`: connected and making progress: fails when the broker cannot be
  asked for offsets, when a component reports itself unhealthy (e.g. the
  projector while PostgreSQL is down), or when a component has lag and has
  not made progress for FULFIL_READY_STALL_SECONDS. The last case is the
  stuck-consumer failure mode that otherwise goes unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from fulfil_platform.config import ConfigError
from fulfil_platform.logs import get_logger

log = get_logger("metrics")

EVENTS_CONSUMED = Counter(
    "fulfil_events_consumed", "Records consumed, per service and topic.", ["service", "topic"]
)
EVENTS_PRODUCED = Counter(
    "fulfil_events_produced", "Records produced, per service and topic.", ["service", "topic"]
)
DEAD_LETTERS = Counter(
    "fulfil_dead_letters",
    "Records sent to a dead-letter topic, per reason kind (bad_json, unknown_type, schema_violation, ...).",
    ["service", "topic", "reason"],
)
BATCH_SECONDS = Histogram(
    "fulfil_batch_duration_seconds",
    "Time to handle one consumed batch, from fetch to commit.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CONSUMER_LAG = Gauge(
    "fulfil_consumer_lag",
    "Records behind the log end, per assigned partition (the end from fetch high watermarks and ListOffsets).",
    ["service", "topic", "partition"],
)
LAST_PROGRESS = Gauge(
    "fulfil_last_progress_timestamp_seconds",
    "Unix time of the last handled batch or of the last time the consumer was caught up.",
    ["service"],
)
READY = Gauge("fulfil_ready", "1 when the component is ready (see /readyz), else 0.", ["service"])
SNAPSHOTS_SKIPPED = Counter(
    "fulfil_snapshots_skipped",
    "Snapshots not written (full or read-only state directory); the service runs on, restarts re-read more.",
    ["service", "error"],
)
OUTBOX = Gauge(
    "fulfil_outbox_messages",
    "Notifier outbox messages by channel and status.",
    ["channel", "status"],
)

# A thread serves HTTP; /healthz fails when the event loop has not ticked for this long.
LOOP_STALL_SECONDS = 60.0


class Progress:
    """What one consuming component reports about itself."""

    def __init__(
        self, service: str, stall_seconds: float, clock: Callable[[], float] = time.monotonic
    ):
        self.service = service
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.connected = False
        self.lag: dict[TopicPartition, int] = {}
        self.total_lag = 0
        self.last_progress = clock()
        self.unhealthy_reason: str | None = None
        LAST_PROGRESS.labels(service).set_to_current_time()

    def consumed(self, topic: str, count: int = 1) -> None:
        EVENTS_CONSUMED.labels(self.service, topic).inc(count)

    def produced(self, topic: str, count: int = 1) -> None:
        EVENTS_PRODUCED.labels(self.service, topic).inc(count)

    def dead_lettered(self, topic: str, reason: str) -> None:
        DEAD_LETTERS.labels(self.service, topic, reason).inc()

    def count_records(self, records: Iterable[Any]) -> None:
        per_topic: dict[str, int] = {}
        for record in records:
            per_topic[record.topic] = per_topic.get(record.topic, 0) + 1
        for topic, count in per_topic.items():
            self.consumed(topic, count)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Time a batch; a batch that completes is progress."""
        started = time.perf_counter()
        yield
        BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)
        self.progressed()

    def progressed(self) -> None:
        self.last_progress = self.clock()
        LAST_PROGRESS.labels(self.service).set_to_current_time()

    def set_unhealthy(self, reason: str | None) -> None:
        self.unhealthy_reason = reason

    def record_lag(self, lag: dict[TopicPartition, int]) -> None:
        for tp in set(self.lag) - set(lag):  # revoked: stop reporting it
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.service, tp.topic, str(tp.partition))
        for tp, behind in lag.items():
            CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition)).set(behind)
        self.lag = lag
        self.total_lag = sum(lag.values())
        self.connected = True
        if self.total_lag == 0:
            # Caught up counts as progress: an idle consumer that gets a new
            # record must not look stuck before its next fetch.
            self.progressed()

    def ready(self) -> tuple[bool, str | None]:
        if not self.connected:
            return False, "not connected to the broker"
        if self.unhealthy_reason:
            return False, self.unhealthy_reason
        idle = self.clock() - self.last_progress
        if self.total_lag > 0 and idle > self.stall_seconds:
            return False, f"{self.total_lag} records behind and no progress for {idle:.0f}s"
        return True, None


async def partition_lag(consumer: Any) -> dict[TopicPartition, int]:
    """Lag per assigned partition of an aiokafka consumer.

    The end is the larger of ListOffsets(latest) and the fetch high watermark:
    Tansu's ListOffsets answers low after batched produce, and a paused
    partition's high watermark is stale; each covers the other's blind spot.
    """
    assigned = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
    if not assigned:
        return {}
    ends = await consumer.end_offsets(assigned)
    lag: dict[TopicPartition, int] = {}
    for tp in assigned:
        try:
            position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
        except (TimeoutError, Exception):  # noqa: BLE001 - revoked or resetting: not measurable now
            continue
        end = max(ends.get(tp) or 0, consumer.highwater(tp) or 0)
        lag[tp] = max(0, end - position)
    return lag


async def watch_lag(
    progress: Progress,
    consumer: Callable[[], Any],
    stop: asyncio.Event,
    interval: float | None = None,
) -> None:
    """Refresh `progress`'s lag until `stop`; a failed lookup marks it disconnected."""
    interval = interval if interval is not None else max(0.2, min(5.0, progress.stall_seconds / 4))
    while not stop.is_set():
        client = consumer()
        if client is not None:
            try:
                progress.record_lag(await partition_lag(client))
            except Exception as exc:  # noqa: BLE001 - any client error means "not connected"
                if progress.connected:
                    log.warning(
                        "consumer lag lookup failed",
                        service=progress.service,
                        error=type(exc).__name__,
                    )
                progress.connected = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


class Health:
    """The components of one process, their readiness, and the loop heartbeat."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.components: dict[str, Progress] = {}
        self.loop_beat = clock()

    def add(self, progress: Progress) -> Progress:
        self.components[progress.service] = progress
        return progress

    def alive(self) -> tuple[bool, str | None]:
        silent = self.clock() - self.loop_beat
        if silent > LOOP_STALL_SECONDS:
            return False, f"event loop silent for {silent:.0f}s"
        return True, None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        report: dict[str, Any] = {}
        all_ready = bool(self.components)
        for name, progress in sorted(self.components.items()):
            ok, reason = progress.ready()
            READY.labels(name).set(1 if ok else 0)
            report[name] = {"ready": ok, "reason": reason, "lag": progress.total_lag}
            all_ready = all_ready and ok
        return all_ready, report

    async def beat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.loop_beat = self.clock()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # probes every few seconds would drown the service's own logs


def _wsgi(health: Health) -> Callable[..., Any]:
    metrics = make_wsgi_app()

    def answer(start_response: Callable[..., Any], ok: bool, body: dict[str, Any]) -> list[bytes]:
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
        )
        return [orjson.dumps(body) + b"\n"]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            health.readiness()  # refresh the fulfil_ready gauge for this scrape
            page: list[bytes] = metrics(environ, start_response)
            return page
        if path == "/healthz":
            ok, reason = health.alive()
            return answer(start_response, ok, {"alive": ok, "reason": reason})
        if path == "/readyz":
            ok, report = health.readiness()
            return answer(start_response, ok, {"ready": ok, "components": report})
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


class MetricsServer:
    """/metrics, /healthz and /readyz on a background thread, plus the loop heartbeat."""

    def __init__(self, health: Health, host: str, port: int):
        self.health = health
        self.server = make_server(
            host, port, _wsgi(health), ThreadingWSGIServer, handler_class=_Quiet
        )
        self.port = self.server.server_port
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-http", daemon=True
        )
        self.stop_beat = asyncio.Event()
        self.beat_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MetricsServer:
        self.thread.start()
        self.beat_task = asyncio.create_task(
            self.health.beat(self.stop_beat), name="metrics-heartbeat"
        )
        log.info("metrics served", port=self.port, paths=["/metrics", "/healthz", "/readyz"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop_beat.set()
        if self.beat_task is not None:
            await self.beat_task
        await asyncio.to_thread(self.server.shutdown)
        self.server.server_close()


@contextlib.asynccontextmanager
async def serving(health: Health, host: str, port: int | None) -> Any:
    """Serve metrics when a port is configured; otherwise do nothing."""
    if port is None:
        yield None
        return
    try:
        server = MetricsServer(health, host, port)
    except OSError as exc:
        raise ConfigError(
            f"invalid FULFIL_METRICS_PORT / FULFIL_METRICS_HOST: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    async with server:
        yield server
