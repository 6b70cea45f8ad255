"""`fulfil demo` (what `make run` runs): the whole system on a simulated store.

Starts the embedded broker and PostgreSQL, a local SMTP sink that keeps each
email in a Maildir (`fulfil dev mail` lists it), and the allocator, projector and notifier as separate
processes; publishes a simulated day of traffic, shows live progress, then
prints what the system decided and checks the invariants from the topics.
Everything it started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import TopicPartition
from aiosmtpd.controller import Controller
from rich.console import Console

from fulfil import embedded
from fulfil.demo_progress import Progress, ProgressDisplay
from fulfil.demo_report import (
    keep_stack_running,
    show_invariants,
    show_next_steps,
    show_state,
    show_throughput,
    show_verdict,
)
from fulfil.dev_mail import MaildirHandler, maildir_of
from fulfil.log_audit import InvariantReport, check
from fulfil_platform import kafka
from fulfil_platform.config import Settings, load_settings
from schemas.contract import ClockTicked
from schemas.registry import (
    ALLOCATIONS,
    COMMANDS,
    DLQ_SUFFIX,
    INVENTORY,
    ORDERS,
    ContractError,
    parse_input,
    parse_output,
)
from services.notifier.adapters import queries as notifier_queries
from services.projector.adapters import queries as projector_queries

T = TypeVar("T")
SERVICES = ("allocator", "projector", "notifier")
CHUNK = 250  # events published before waiting for the router
OBSERVE_SECONDS = 0.5  # refresh of the per-service counters and lags


async def _ends(settings: Settings, consumer: Any, base: str) -> dict[int, int]:
    tps = [TopicPartition(settings.topic(base), p) for p in range(settings.fulfil_partitions)]
    return {tp.partition: end for tp, end in (await kafka.log_ends(consumer, tps)).items()}


async def _read(
    database_url: str | None, query: Callable[[asyncpg.Connection], Awaitable[T]], missing: T
) -> T:
    """One read query of a service's own query module; `missing` while PostgreSQL or the table is not there."""
    if database_url is None:
        return missing
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError):
        return missing
    try:
        return await query(conn)
    except asyncpg.PostgresError:  # the service has not migrated yet
        return missing
    finally:
        await conn.close()


async def _committed(settings: Settings, group: str, base: str) -> int:
    consumer = kafka.consumer(settings, group_id=group)
    tps = [TopicPartition(settings.topic(base), p) for p in range(settings.fulfil_partitions)]
    consumer.assign(tps)
    await consumer.start()
    try:
        return sum([(await consumer.committed(tp)) or 0 for tp in tps])
    finally:
        await consumer.stop()


async def _observe(settings: Settings, progress: Progress, mail: MaildirHandler) -> bool:
    """Refresh the counters; True once every service has handled everything."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        inputs = sum((await _ends(settings, consumer, ORDERS)).values()) + sum(
            (await _ends(settings, consumer, INVENTORY)).values()
        )
        progress.commands = sum((await _ends(settings, consumer, COMMANDS)).values())
        progress.outputs = sum((await _ends(settings, consumer, ALLOCATIONS)).values())
        progress.dead_letters = sum(
            (await _ends(settings, consumer, ORDERS + DLQ_SUFFIX)).values()
        ) + sum((await _ends(settings, consumer, INVENTORY + DLQ_SUFFIX)).values())
    finally:
        await consumer.stop()
    allocations = settings.topic(ALLOCATIONS)
    nothing: dict[tuple[str, int], int] = {}
    projector = await _read(settings.database_url, projector_queries.live_offsets, nothing)
    notifier = await _read(settings.database_url, notifier_queries.stored_offsets, nothing)
    progress.projected = sum(v for (t, _), v in projector.items() if t == allocations)
    progress.notified = sum(v for (t, _), v in notifier.items() if t == allocations)
    progress.emails = mail.count
    progress.unsent = await _read(settings.database_url, notifier_queries.pending_count, -1)
    routed = await _committed(
        settings, settings.topic("fulfil-allocator-router"), ORDERS
    ) + await _committed(settings, settings.topic("fulfil-allocator-router"), INVENTORY)
    core = await _committed(settings, settings.topic("fulfil-allocator-core"), COMMANDS)
    progress.router_lag = max(inputs - routed, 0)
    progress.core_lag = max(progress.commands - core, 0)
    return (
        progress.published > 0
        and routed >= inputs >= progress.published
        and core >= progress.commands
        and progress.projected >= progress.outputs
        and progress.notified >= progress.outputs
        and progress.unsent == 0
    )


def _start(name: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "fulfil", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs.values():
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _read_all(settings: Settings, base: str) -> list[Any]:
    consumer = kafka.consumer(settings, group_id=None, max_partition_fetch_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        found = await kafka.read_ranges(
            consumer,
            {TopicPartition(settings.topic(base), p): 0 for p in range(settings.fulfil_partitions)},
        )
        return [r for tp in sorted(found, key=lambda t: t.partition) for r in found[tp]]
    finally:
        await consumer.stop()


async def invariant_check(settings: Settings) -> InvariantReport:
    inputs = []
    for base in (ORDERS, INVENTORY):
        for record in await _read_all(settings, base):
            with suppress(ContractError):
                inputs.append(parse_input(record.value))
    outputs = [parse_output(r.value) for r in await _read_all(settings, ALLOCATIONS)]
    return check(inputs, outputs)


async def run_demo(events: int, seed: int, keep_running: bool, console: Console) -> int:
    """The demo; SIGTERM at any moment stops everything it started and returns 0 (a
    graceful stop, like a service's), whatever stage it was in."""
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        if not terminated:  # one cancellation: the clean-up itself must not be cut short
            terminated = True
            task.cancel()

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        pass
    try:
        return await _run_demo(events, seed, keep_running, console)
    except asyncio.CancelledError:
        if not terminated:
            raise
        task.uncancel()
        console.print("fulfil demo: stopped (SIGTERM); everything it started was stopped")
        return 0
    finally:
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)


async def _run_demo(events: int, seed: int, keep_running: bool, console: Console) -> int:
    from fulfil.simulation import simulate_records

    base = load_settings()
    root = _fresh_state_dir(base)
    console.print(
        f"starting the embedded broker and PostgreSQL (state in {root}) …", soft_wrap=True
    )
    runtime = embedded.Runtime.start(root / "runtime")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    # A Maildir where `fulfil dev mail` looks with FULFIL_STATE_DIR=root.
    mail = MaildirHandler(maildir_of(embedded.dev_state_dir(root)))
    smtp_port = embedded.free_port()
    sink = Controller(mail, hostname="127.0.0.1", port=smtp_port)
    sink.start()
    try:
        settings = _demo_settings(runtime, root, smtp_port)
        env = _demo_env(runtime, settings, root)
        await kafka.create_topics(settings)
        for name in SERVICES:
            procs[name] = _start(name, env, root / "logs")
        records = simulate_records(events=events, seed=seed)
        progress = Progress(total=sum(1 for topic, _, _ in records if topic != COMMANDS))
        ticks = len(records) - progress.total
        console.print(
            f"started {', '.join(SERVICES)} (logs in {root / 'logs'}); publishing "
            f"{progress.total:,} simulated events"
            + (f" and {ticks:,} clock tick{'' if ticks == 1 else 's'}" if ticks else "")
            + f" (seed {seed}) …",
            soft_wrap=True,
        )
        with ProgressDisplay(console, progress, procs) as display:
            last_at = await _publish(settings, records, progress, display, mail)
            if not await _until_handled(settings, progress, display, mail):
                failed = [n for n, p in procs.items() if p.poll() is not None]
                console.print(
                    f"[red]service exited early: {', '.join(failed)}; logs in {root / 'logs'}[/red]"
                )
                return 1
        elapsed = progress.elapsed()

        show_state(console, env, last_at, mail, root)
        show_throughput(console, progress, mail, elapsed)
        console.rule("[bold]invariants[/bold] (recomputed from the topics)")
        report = await invariant_check(settings)
        show_invariants(console, report)
        show_verdict(console, report)
        order_id = await _example_order(settings)
        rerun = f"fulfil demo --events {events} --seed {seed} --keep-running"
        show_next_steps(console, env, None if keep_running else rerun, order_id)
        if keep_running:
            await keep_stack_running(console)
        return 0 if report.ok else 1
    finally:
        _stop(procs)
        sink.stop()
        runtime.stop()


async def _example_order(settings: Settings) -> str | None:
    """A backordered order of the run (the largest deposit), for the commands to try."""
    from services.projector.adapters.store import connect
    from services.projector.service_layer.projector import LIVE_SCHEMA

    if settings.database_url is None:
        return None
    try:
        conn = await connect(settings.database_url, LIVE_SCHEMA, timeout=10)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        orders = (await projector_queries.deposits(conn, limit=1))["orders"]
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    return str(orders[0]["order_id"]) if orders else None


async def _publish(
    settings: Settings,
    records: list[tuple[str, bytes, bytes]],
    progress: Progress,
    display: ProgressDisplay,
    mail: MaildirHandler,
) -> datetime | None:
    """`_publish_paced` with its own producer and command-log watcher."""
    producer = kafka.producer(settings)
    await producer.start()
    watcher = kafka.consumer(settings, group_id=None)
    try:
        await watcher.start()
        return await _publish_paced(settings, records, producer, watcher, progress, display, mail)
    finally:
        await producer.stop()
        await watcher.stop()


def _fresh_state_dir(base: Settings) -> Path:
    """The demo's state directory, emptied (stopping a PostgreSQL a previous run left)."""
    root = (base.fulfil_state_dir / "demo").resolve()
    if root.exists():
        leftover = root / "runtime"
        if (leftover / "pgdata").exists():
            embedded.stop_postgres(leftover / "pgdata")
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    return root


def _demo_settings(runtime: embedded.Runtime, root: Path, smtp_port: int) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=runtime.broker.bootstrap,
        database_url=runtime.postgres.url,
        fulfil_topic_prefix="demo.",
        fulfil_partitions=3,
        # The scenario's dates are fixed: the wall clock would make them overdue.
        fulfil_clock_tick_seconds=0,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
        kafka_enable_idempotence=False,  # Tansu has no idempotent producer
        fulfil_state_dir=root,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
    )


def _demo_env(runtime: embedded.Runtime, settings: Settings, root: Path) -> dict[str, str]:
    """The environment of the demo's services and of the `fulfil` queries it runs."""
    env = {
        **os.environ,
        **runtime.env(),
        "FULFIL_TOPIC_PREFIX": settings.fulfil_topic_prefix,
        "FULFIL_PARTITIONS": str(settings.fulfil_partitions),
        "FULFIL_STATE_DIR": str(root),
        "SMTP_URL": settings.smtp_url or "",
        "SMTP_FROM": "orders@shop.example",
        "FULFIL_LOG_FORMAT": "json",
        "FULFIL_LOG_LEVEL": "INFO",
        # Short ETA hold so folded messages leave within the demo.
        "FULFIL_NOTIFIER_ETA_HOLD_SECONDS": "2",
        "FULFIL_CANCEL_URL_TEMPLATE": "https://shop.example/orders/{order_id}/cancel",
        # Most orders ship at once; their confirmations would dominate the run
        # without showing anything about backorders.
        "FULFIL_NOTIFIER_ORDER_CONFIRMATION": "false",
    }
    env.pop("WEBHOOK_URL", None)
    # Three services in one demo would all try to bind one metrics port.
    env.pop("FULFIL_METRICS_PORT", None)
    return env


async def _publish_paced(
    settings: Settings,
    records: list[tuple[str, bytes, bytes]],
    producer: Any,
    watcher: Any,
    progress: Progress,
    display: ProgressDisplay,
    mail: MaildirHandler,
) -> datetime | None:
    """Publish the simulated records, letting the router catch up chunk by chunk; returns
    the simulated clock at the end (the latest occurred_at of a valid input)."""
    from services.allocator.service_layer.clock import write_ticks

    sender = kafka.BatchSender(producer)
    commands = [
        TopicPartition(settings.topic(COMMANDS), p) for p in range(settings.fulfil_partitions)
    ]
    valid = 0
    observed_at = time.monotonic()
    last_at = None  # the simulated clock: "late" is judged at the end of the simulated day
    for topic, key, value in records:
        if topic == COMMANDS:
            # A ClockTicked: today for the allocator core, on every command
            # partition, once what came before it is routed.
            await sender.flush()
            while sum((await kafka.log_ends(watcher, commands)).values()) < valid:
                await asyncio.sleep(0.02)  # poll interval
            # Not counted as published: ticks are commands, not inputs on orders/inventory.
            valid += await write_ticks(
                settings, ClockTicked.model_validate_json(value).data.now, producer
            )
            continue
        await sender.add(settings.topic(topic), value, key=key)
        progress.published += 1
        try:
            event = parse_input(value)
        except ContractError:
            progress.invalid += 1
        else:
            valid += 1
            last_at = event.occurred_at if last_at is None else max(last_at, event.occurred_at)
        if progress.published % CHUNK == 0:
            await sender.flush()
            # orders.v1 and inventory.v1 have no order between them: let the
            # router catch up chunk by chunk, so the store's day unfolds in
            # (nearly) the order it was simulated.
            while sum((await kafka.log_ends(watcher, commands)).values()) < valid:
                display.update()
                await asyncio.sleep(0.02)  # poll interval
            if time.monotonic() - observed_at >= OBSERVE_SECONDS:
                # Downstream services work while we publish: show them live too.
                await _observe(settings, progress, mail)
                observed_at = time.monotonic()
            display.update()
    await sender.flush()
    return last_at


async def _until_handled(
    settings: Settings, progress: Progress, display: ProgressDisplay, mail: MaildirHandler
) -> bool:
    """Watch until everything published is handled; False if a service exited early."""
    done = False
    while not done:
        done = await _observe(settings, progress, mail)
        display.update()
        if any(p.poll() is not None for p in display.procs.values()):
            return False
        if not done:
            await asyncio.sleep(OBSERVE_SECONDS)  # refresh interval of the live view
    return True
