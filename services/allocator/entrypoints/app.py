"""`fulfil allocator`: router and core in one process, or one stage alone."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from aiokafka.errors import KafkaError

from fulfil_platform.config import Settings
from fulfil_platform.consumer import stop_on_signals
from fulfil_platform.kafka import create_topics
from fulfil_platform.logs import get_logger, service_context
from fulfil_platform.metrics import Health, Progress, serving
from fulfil_platform.startup import wait_for_kafka
from services.allocator.entrypoints.core import AllocatorCore
from services.allocator.entrypoints.router import build_router
from services.allocator.service_layer.clock import run_clock

log = get_logger("allocator")

Stage = Literal["all", "router", "core"]


async def run_allocator(
    settings: Settings,
    stage: Stage = "all",
    stop: asyncio.Event | None = None,
    health: Health | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`): finish the batch, commit, snapshot, return."""
    stop = stop or asyncio.Event()
    health = health or Health()
    # One stage alone: every line names it; both: each stage's tasks name theirs (below).
    with service_context("allocator" if stage == "all" else f"allocator-{stage}"):
        log.info("allocator configuration", stage=stage, settings=settings.loggable())
        async with serving(health, settings.fulfil_metrics_host, settings.fulfil_metrics_port):
            await _run(settings, stage, stop, health)


async def _run(settings: Settings, stage: Stage, stop: asyncio.Event, health: Health) -> None:
    with stop_on_signals(stop):
        await _run_stages(settings, stage, stop, health)


async def _run_stages(
    settings: Settings, stage: Stage, stop: asyncio.Event, health: Health
) -> None:
    stall = settings.fulfil_ready_stall_seconds
    if not await wait_for_kafka(settings, stop):
        return  # stopped before the broker answered
    # Topics must exist with FULFIL_PARTITIONS partitions before anyone
    # subscribes or produces: auto-created ones get another partition count.
    try:
        await create_topics(settings)
    except KafkaError as exc:  # e.g. no admin rights in production: topics are managed elsewhere
        log.warning("could not ensure topics", error=str(exc))
    router_app = None
    if stage in ("all", "router"):
        router_app, _ = build_router(
            settings, progress=health.add(Progress("allocator-router", stall))
        )
        try:
            with service_context("allocator-router"):  # its consumer tasks start here
                await router_app.start()
        except BaseException:
            await router_app.stop()  # close what started (its producer) before failing
            raise
    core_task = None
    clock_task = None
    if stage in ("all", "core"):
        with service_context("allocator-core"):  # the task keeps the binding
            core_task = asyncio.create_task(
                AllocatorCore(settings, progress=health.add(Progress("allocator-core", stall))).run(
                    stop
                ),
                name="allocator-core",
            )
        # Today reaches the core only through its log: tick it on a wall-clock schedule.
        clock_task = asyncio.create_task(run_clock(settings, stop), name="allocator-clock")
    log.info("allocator started", stage=stage)
    try:
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if core_task is not None:
            waiters.append(core_task)
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if clock_task is not None:
            for failure in await asyncio.gather(clock_task, return_exceptions=True):
                if isinstance(failure, Exception):
                    log.warning("allocator clock stopped", error=type(failure).__name__)
        if core_task is not None:
            await core_task  # re-raises a core failure after a clean shutdown attempt
    finally:
        if router_app is not None:
            await router_app.stop()
        log.info("allocator stopped", stage=stage)
