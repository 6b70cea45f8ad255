"""Operator tools on a large simulated log (issue 7): `fulfil replay --verify`
and `fulfil trace ORDER_ID` as an operator runs them, against the live allocator.

On a fresh embedded broker, under its own topic prefix:

1. `fulfil.simulation.publish.publish_simulated` (what `fulfil simulate --publish`
   runs) writes a realistic input log of BENCH_LOG_EVENTS messages (default 1 M; 0
   skips this step) to orders.v1 and inventory.v1 (about 0.5 % of them invalid,
   dead-lettered by the router), and its clock ticks to every command partition;
2. router + core run in this process until the core has folded every routed
   command: live input events/s, from the first record routed;
3. `python -m fulfil replay --verify --json` runs as a subprocess (exit 0 and
   `verified` required): wall time and commands/s, divided by the live rate;
4. `python -m fulfil trace ORDER_ID --json` runs as a subprocess for an order
   with a BackorderEtaChanged (else the order with the most outputs), picked
   from allocations.v1: wall time, without and with `--warehouse`. No
   DATABASE_URL: trace then skips the notifier's outbox and says so in a note.

Wall times include the subprocess's interpreter start and imports (~1 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import TopicPartition

from bench.allocator import _settings, running_allocator
from fulfil import embedded
from fulfil.simulation import generate
from fulfil.simulation.publish import publish_simulated
from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.logs import configure_logging
from schemas.registry import ALLOCATIONS, COMMANDS
from tests.builders.environment import settings_as_env

EVENTS = int(os.environ.get("BENCH_LOG_EVENTS", 1_000_000))
SEED = 7
STALL_SECONDS = 120.0  # no progress for this long: the live run failed
SUBPROCESS_TIMEOUT = 3_600.0
_ORDER_ID = re.compile(rb'"order_id":"([^"\\]+)"')


async def _live(settings: Settings, total: int, ticks: int) -> dict[str, float]:
    """Router + core until every input is routed or dead-lettered and every command (the
    routed inputs and the `ticks` written on the command log) folded."""
    async with running_allocator(settings) as (stats, core, task):
        first = None
        last_progress, progress_at = -1, time.perf_counter()
        while stats.routed + stats.dead_lettered < total or core.processed < stats.routed + ticks:
            if task.done():
                task.result()
                raise RuntimeError("the allocator core stopped before it caught up")
            now = time.perf_counter()
            done = stats.routed + stats.dead_lettered + core.processed
            if first is None and done:
                first = now
            if done != last_progress:
                last_progress, progress_at = done, now
            elif now - progress_at > STALL_SECONDS:
                raise RuntimeError(
                    f"no progress for {STALL_SECONDS:.0f}s: routed {stats.routed:,}, dead-lettered "
                    f"{stats.dead_lettered:,}, folded {core.processed:,} of {total:,} inputs"
                )
            await asyncio.sleep(0.005)  # poll interval
        elapsed = time.perf_counter() - (first or time.perf_counter())
    return {
        "seconds": elapsed,
        "events_per_s": total / elapsed,
        "commands": stats.routed,
        "dead_lettered": stats.dead_lettered,
        "outputs": core.emitted,
    }


async def _pick_order(settings: Settings) -> tuple[str, str]:
    """An order with a BackorderEtaChanged on allocations.v1 (the first found), else the
    order with the most outputs: (order_id, why)."""
    consumer = kafka.consumer(settings, group_id=None, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    counts: Counter[bytes] = Counter()
    try:
        topic = settings.topic(ALLOCATIONS)
        tps = [TopicPartition(topic, p) for p in range(settings.fulfil_partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        pending = set(tps)
        give_up = time.perf_counter() + 30
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=10_000)
            for records in batches.values():
                for record in records:
                    value = record.value or b""
                    if b'"BackorderEtaChanged"' in value:
                        doc = orjson.loads(value)
                        if doc.get("type") == "BackorderEtaChanged":
                            return doc["data"]["order_id"], "has a BackorderEtaChanged"
                    found = _ORDER_ID.search(value)
                    if found:
                        counts[found.group(1)] += 1
            if batches:
                give_up = time.perf_counter() + 30
            for tp in list(pending):
                highwater = consumer.highwater(tp)  # not end_offsets: see notes/tansu.md
                if (
                    highwater is not None
                    and not batches.get(tp)
                    and await consumer.position(tp) >= highwater
                ):
                    pending.discard(tp)
            if pending and time.perf_counter() > give_up:
                raise TimeoutError(f"no fetch response for {sorted(map(str, pending))}")
    finally:
        await consumer.stop()
    if not counts:
        raise RuntimeError("no order on allocations.v1")
    order, outputs = counts.most_common(1)[0]
    return order.decode(), f"most outputs ({outputs})"


def _run(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """`python -m fulfil ARGS` as an operator runs it: (wall seconds, its JSON output). Exit 0 required."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"fulfil {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-2_000:]}"
        )
    return elapsed, json.loads(result.stdout)


async def bench_oplog() -> list[tuple[str, dict[str, float]]]:
    if EVENTS <= 0:
        return []
    step_started = time.perf_counter()
    saved_logging = structlog.get_config()
    configure_logging("ERROR")  # ~0.5 % of the inputs are invalid: one warning line each otherwise
    root = Path(tempfile.mkdtemp(prefix="fulfil-bench-oplog-"))
    broker = embedded.start_broker(root / "tansu")
    try:
        settings = _settings(broker.bootstrap, "oplog.", root / "state")
        started = time.perf_counter()
        records = list(generate(events=EVENTS, seed=SEED))
        simulate_s = time.perf_counter() - started
        await kafka.create_topics(settings)
        started = time.perf_counter()
        # Inputs to orders.v1 / inventory.v1; each ClockTicked on every command partition.
        written = await publish_simulated(settings, records)
        publish_s = time.perf_counter() - started
        ticks = written.get(settings.topic(COMMANDS), 0)
        total = sum(written.values()) - ticks  # inputs, for the router
        del records

        live = await _live(settings, total, ticks)
        order_id, why = await _pick_order(settings)

        env = {**settings_as_env(settings), "FULFIL_LOG_LEVEL": "WARNING"}
        env.pop("DATABASE_URL", None)  # trace's outbox part is optional: it leaves a note
        replay_s, replay = _run(["replay", "--verify", "--json"], env)
        if not replay["verified"] or replay["commands"] != live["commands"] + ticks:
            raise RuntimeError(
                f"replay --verify: {replay['commands']:,} commands, verified={replay['verified']}, "
                f"live routed {live['commands']:,} and {ticks:,} ticks; "
                f"divergence: {replay['divergence']}"
            )
        trace_s, trace = _run(["trace", order_id, "--json"], env)
        if not trace["timeline"]:
            raise RuntimeError(f"fulfil trace {order_id}: empty timeline")
        warehouse = trace["warehouse_id"]
        trace_wh_s, trace_wh = _run(["trace", order_id, "--warehouse", warehouse, "--json"], env)
        if len(trace_wh["timeline"]) != len(trace["timeline"]):
            raise RuntimeError(
                f"fulfil trace {order_id} --warehouse {warehouse}: {len(trace_wh['timeline'])} records, "
                f"{len(trace['timeline'])} without --warehouse"
            )
        command_partitions = sum(1 for p in replay["partitions"] if p["commands"])
    finally:
        embedded.stop_broker(broker)
        shutil.rmtree(root, ignore_errors=True)
        structlog.configure(**saved_logging)
    kinds = Counter(entry["type"] for entry in trace["timeline"])
    replay_rate = replay["commands"] / replay_s
    return [
        (
            f"fulfil replay --verify (subprocess) / live allocator, {total:,}-event simulated log "
            f"(seed {SEED}, {replay['commands']:,} commands on {command_partitions} partitions, goal >= 1)",
            {
                "log_events": total,
                "simulate_s": simulate_s,
                "publish_s": publish_s,
                "live_allocator_s": live["seconds"],
                "live_allocator_events_per_s": live["events_per_s"],
                "live_outputs": live["outputs"],
                "replay_verify_s": replay_s,
                "replay_reported_s": replay["seconds"],
                "replay_commands_per_s": replay_rate,
                "replay_compared_outputs": replay["compared"],
                "ratio": replay_rate / live["events_per_s"],
            },
        ),
        (
            f"fulfil trace ORDER_ID --json (subprocess) on the same log: {order_id} ({why}; "
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            + ")",
            {
                "trace_s": trace_s,
                "trace_records": len(trace["timeline"]),
                "trace_scanned_records": trace["scanned"]["records"],
                "trace_with_warehouse_s": trace_wh_s,
                "trace_with_warehouse_scanned_records": trace_wh["scanned"]["records"],
                "step_total_s": time.perf_counter() - step_started,
            },
        ),
    ]
