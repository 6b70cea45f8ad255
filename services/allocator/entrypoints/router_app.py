"""The router as a FastStream app of its own, for FastStream's command line:

    faststream run --factory services.allocator.entrypoints.router_app:create_app

Settings come from the environment, as for `fulfil allocator --stage router`
(the same router: validate inputs, re-key them onto the command log); logs
are JSON lines, FULFIL_METRICS_PORT serves /metrics, /healthz and /readyz.
Start-up waits for the broker (each failed attempt is logged); SIGTERM or
SIGINT stops it gracefully (FastStream's own handlers): the batch in hand is
routed and committed, the process exits 0. A configuration error is one line
and exit 2, as with `fulfil`.

The core, the projector and the notifier are not FastStream apps: they run on
the platform's consumer runtime (their positions live in snapshots or in
PostgreSQL), so `fulfil allocator --stage core`, `fulfil projector` and
`fulfil notifier` start them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from aiokafka.errors import KafkaError
from faststream import FastStream

from fulfil_platform.config import ConfigError, load_settings
from fulfil_platform.kafka import create_topics
from fulfil_platform.logs import configure_logging, get_logger
from fulfil_platform.metrics import Health, Progress, serving
from fulfil_platform.startup import wait_for_kafka
from services.allocator.entrypoints.router import build_router

log = get_logger("allocator.router")

SERVICE = "allocator-router"


def create_app() -> FastStream:
    """The router app, configured from the environment (FastStream calls this factory)."""
    try:
        settings = load_settings()
        settings.require_kafka()
    except ConfigError as exc:
        print(f"fulfil: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.fulfil_log_level, settings.fulfil_log_format, service=SERVICE)
    health = Health()
    progress = health.add(Progress(SERVICE, settings.fulfil_ready_stall_seconds))
    resources = contextlib.AsyncExitStack()
    stopped = asyncio.Event()  # never set: FastStream cancels start-up on SIGTERM

    async def prepare() -> None:
        log.info("router configuration", settings=settings.loggable())
        await resources.enter_async_context(
            serving(health, settings.fulfil_metrics_host, settings.fulfil_metrics_port)
        )
        await wait_for_kafka(settings, stopped)
        try:  # topics need FULFIL_PARTITIONS partitions before anyone subscribes
            await create_topics(settings)
        except KafkaError as exc:  # e.g. no admin rights: topics are managed elsewhere
            log.warning("could not ensure topics", error=str(exc))

    async def release() -> None:
        await resources.aclose()

    app, _ = build_router(
        settings, progress=progress, on_startup=[prepare], after_shutdown=[release]
    )
    return app
