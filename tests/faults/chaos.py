"""The fault-injection run: real services, real faults, checked against an oracle.

`python -m tests.faults.chaos` (`make chaos`) runs it at full size and prints
one line; `tests/faults/test_chaos.py` runs a smaller draw of every fault kind.

What runs: `python -m fulfil allocator` (router + core), `projector` and
`notifier` as subprocesses, every Kafka connection through `FaultProxy` to a
broker of the run's own, a PostgreSQL of the run's own (so restarting it
disturbs nobody else) and an aiosmtpd sink on 127.0.0.1. The workload and
the oracle are in `workload.py` (its docstring explains why folding the
inputs is exact despite the router's interleaving).

Faults are drawn with a seeded RNG (the seed is printed) and injected at
random points while the current phase is being routed; after each fault the
harness heals what it broke (resume the proxy, SIGCONT, restart a killed
service), like an orchestrator would, and restarts any service that exited
by itself (counted, and reported when the run fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from fulfil import embedded, embedded_postgresql, log_audit
from fulfil_platform import kafka
from fulfil_platform.config import Settings, load_settings
from schemas.registry import (
    ALLOCATIONS,
    COMMANDS,
    INVENTORY,
    ORDER_OUTPUT_TYPES,
    ORDERS,
    parse_output,
)
from services.allocator.entrypoints.core import CORE_GROUP
from services.allocator.entrypoints.router import ROUTER_GROUP
from services.projector.service_layer.projector import LIVE_SCHEMA
from tests.builders.environment import settings_as_env
from tests.faults.proxy import PRODUCE, ProxiedBroker, broker_behind_proxy
from tests.faults.workload import (
    POISON_KINDS,
    Oracle,
    Phase,
    Record,
    bad_header,
    line_figures,
    phases,
    poison,
)
from tests.kafka_helpers import TopicWatcher, committed_offsets, read_topic
from tests.services.notifier.conftest import SmtpServer

SERVICES = ("allocator", "projector", "notifier")
FAULT_KINDS = (
    "cut", "stall", "lost_response", "sigstop", "sigkill", "pg_restart", "unwritable_state",
    "corrupt_snapshot", "truncated_snapshot", "planted_snapshot", "poison", "bad_header",
)  # fmt: skip
SESSION_TIMEOUT_MS = 2_000
REQUEST_TIMEOUT_MS = 3_000
CATCH_UP_SECONDS = float(os.environ.get("CHAOS_CATCH_UP_SECONDS", 300))
PHASE_SECONDS = float(os.environ.get("CHAOS_PHASE_SECONDS", 240))


class ChaosFailure(AssertionError):
    pass


@dataclass
class Summary:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)  # kind:service for process faults
    outputs_expected: int = 0
    outputs_lost: int = 0
    duplicated_ids: int = 0
    read_model_equal: bool = False
    read_model_problems: list[str] = field(default_factory=list)
    messages_ok: bool = False
    message_problems: list[str] = field(default_factory=list)
    invariant_problems: list[str] = field(default_factory=list)
    planted_code_ran: bool = False
    unexpected_exits: Counter[str] = field(default_factory=Counter)
    exit_tails: dict[str, str] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    reminders: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.outputs_lost == 0
            and self.duplicated_ids == 0
            and self.read_model_equal
            and self.messages_ok
            and not self.invariant_problems
            and not self.planted_code_ran
        )

    def line(self) -> str:
        total = sum(self.faults.values())
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        return (
            f"faults {total} ({kinds}), outputs lost {self.outputs_lost}, "
            f"duplicated ids {self.duplicated_ids}, "
            f"read model {'==' if self.read_model_equal else '!='} oracle, "
            f"messages per event per channel {'== 1' if self.messages_ok else '!= 1'}"
        )

    def details(self) -> str:
        parts = [f"seed {self.seed}; targets {dict(self.targets)}; reminder rows {self.reminders}"]
        if self.lost_examples:
            parts.append(f"lost e.g. {self.lost_examples}")
        if self.read_model_problems:
            parts.append(f"read model: {self.read_model_problems[:5]}")
        if self.message_problems:
            parts.append(f"messages: {self.message_problems[:5]}")
        if self.invariant_problems:
            parts.append(f"invariants: {self.invariant_problems[:5]}")
        if self.planted_code_ran:
            parts.append("a planted pickle snapshot ran code in the allocator")
        if self.unexpected_exits:
            parts.append(f"services exited by themselves: {dict(self.unexpected_exits)}")
            parts.extend(f"--- {name}:\n{tail}" for name, tail in self.exit_tails.items())
        return "\n".join(parts)


# ---------------------------------------------------------------- helpers


async def poll(
    condition: Callable[[], Awaitable[Any]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.3,
    tick: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """Poll until truthy; Kafka and PostgreSQL errors (a fault in force) count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if tick is not None:
            await tick()
        try:
            last = await asyncio.wait_for(condition(), timeout=max(5.0, interval))
        except (
            KafkaError,
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            TimeoutError,
        ) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(interval)  # poll interval
    raise ChaosFailure(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"[:3000])


async def publish_records(settings: Settings, records: list[Record]) -> None:
    producer = kafka.producer(settings, request_timeout_ms=REQUEST_TIMEOUT_MS)
    await producer.start()
    try:
        pending = [
            await producer.send(
                settings.topic(r.topic), r.value, key=r.key, headers=r.headers or None
            )
            for r in records
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def topic_ends(settings: Settings, base: str) -> dict[int, int]:
    async with TopicWatcher(settings, base) as watcher:
        return await watcher.ends()


# ---------------------------------------------------------------- services


class Services:
    """The three services as subprocesses, started, killed, paused and resumed by PID."""

    def __init__(self, env: dict[str, str], logs: Path, summary: Summary):
        self.env = env
        self.logs = logs
        self.summary = summary
        self.processes: dict[str, subprocess.Popen] = {}
        self.stopped: set[str] = set()

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str) -> None:
        with self._log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "fulfil", name],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def start_all(self) -> None:
        for name in SERVICES:
            self.start(name)

    def tail(self, name: str, chars: int = 2500) -> str:
        try:
            return self._log(name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal(self, name: str, signum: int) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signum)

    def kill(self, name: str) -> None:
        self.cont(name)
        self.signal(name, signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP)
        self.stopped.add(name)

    def cont(self, name: str) -> None:
        if name in self.stopped:
            self.signal(name, signal.SIGCONT)
            self.stopped.discard(name)

    async def supervise(self) -> None:
        """Restart what exited by itself, as an orchestrator would; count it."""
        for name, process in list(self.processes.items()):
            code = process.poll()
            if code == 2:
                raise ChaosFailure(f"{name} refused its configuration: {self.tail(name, 500)}")
            if code is not None:
                self.summary.unexpected_exits[f"{name} exit {code}"] += 1
                self.summary.exit_tails[name] = self.tail(name)
                self.start(name)

    def terminate_all(self, timeout: float = 60) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name in self.processes:
            self.cont(name)
            self.signal(name, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                process.wait()


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    handle: embedded.PostgresHandle

    @property
    def url(self) -> str:
        return self.handle.url

    def restart_immediate(self) -> None:
        """`pg_ctl restart -m immediate`: every backend dies, open transactions roll back at recovery."""
        options = f"-h {embedded.LOOPBACK} -p {self.handle.port} -k ''"
        embedded_postgresql._pg_command(  # noqa: SLF001 - the wheel's pg_ctl as the server's user
            "pg_ctl",
            [
                "-w",
                "-t",
                "60",
                "-m",
                "immediate",
                "-l",
                str(self.handle.log_path),
                "-o",
                options,
                "restart",
            ],
            self.handle.data_dir,
            timeout=65,
        )
        pid = embedded.postmaster_pid(self.handle.data_dir)
        assert pid is not None, "PostgreSQL did not come back after restart"
        self.handle = embedded.PostgresHandle(
            pid, self.handle.port, self.handle.data_dir, self.handle.log_path
        )


@contextlib.contextmanager
def private_postgres() -> Any:
    root = Path(tempfile.mkdtemp(prefix="fulfil-chaos-pg-"))
    server = embedded.start_postgres(root / "pgdata")
    postgres = Postgres(server)
    stop = embedded.stop_at_exit(
        lambda: (
            embedded.stop_postgres(postgres.handle.data_dir),
            shutil.rmtree(root, ignore_errors=True),
        )
    )
    try:
        yield postgres
    finally:
        stop()


# ---------------------------------------------------------------- the run


class _Plant:
    """Unpickling this creates `marker`: proof that a snapshot file ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@dataclass
class Chaos:
    settings: Settings
    proxied: ProxiedBroker
    postgres: Postgres
    smtp: SmtpServer
    services: Services
    rng: random.Random
    summary: Summary
    workdir: Path
    published: list[Record] = field(default_factory=list)
    current: Phase | None = None
    serial: int = 0
    behind: str = ""

    @property
    def state_dir(self) -> Path:
        return self.settings.fulfil_state_dir / "allocator"

    @property
    def marker(self) -> Path:
        return self.workdir / "planted-snapshot-ran"

    # -------------------------------------------------------------- faults

    async def inject(self, kind: str) -> None:
        self.summary.faults[kind] += 1
        await getattr(self, f"_fault_{kind}")()
        await self.services.supervise()

    async def _fault_cut(self) -> None:
        self.proxied.proxy.cut()

    async def _fault_stall(self) -> None:
        proxy = self.proxied.proxy
        ended = proxy.ended()
        proxy.stall()
        try:
            # Until a client gave up on a request (past its request timeout it drops the
            # connection), so the stall is a real outage for someone, not a hiccup.
            async def a_client_gave_up() -> bool:
                return proxy.ended() > ended

            with contextlib.suppress(ChaosFailure):
                await poll(
                    a_client_gave_up,
                    timeout=(REQUEST_TIMEOUT_MS + SESSION_TIMEOUT_MS) / 1000 * 3,
                    interval=0.1,
                    what="a client to give up on the stalled broker",
                )
        finally:
            proxy.resume()

    async def _fault_lost_response(self) -> None:
        self.proxied.proxy.drop_responses(PRODUCE, 1)

        async def used() -> bool:
            return self.proxied.proxy.pending_drops(PRODUCE) == 0

        # The next produce of anyone (router, core, this harness) loses its answer; if nobody
        # produces for a while the drop stays armed and lands on the next one.
        with contextlib.suppress(ChaosFailure):
            await poll(used, timeout=10, interval=0.1, what="a produce to lose")

    def _target(self, kind: str) -> str:
        name = SERVICES[self.rng.randrange(len(SERVICES))]
        self.summary.targets[f"{kind}:{name}"] += 1
        return name

    async def _fault_sigstop(self) -> None:
        name = self._target("sigstop")
        self.services.stop(name)
        try:
            await asyncio.sleep(SESSION_TIMEOUT_MS / 1000 * 2 + self.rng.uniform(0.5, 2.0))
        finally:
            self.services.cont(name)

    async def _fault_sigkill(self) -> None:
        name = self._target("sigkill")
        self.services.restart(name)

    async def _fault_pg_restart(self) -> None:
        # Aim at an open transaction of the projector or notifier (briefly; any moment will do).
        async def in_transaction() -> bool:
            conn = await asyncpg.connect(self.postgres.url)
            try:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE xact_start IS NOT NULL "
                        "AND pid <> pg_backend_pid() AND datname IS NOT NULL"
                    )
                )
            finally:
                await conn.close()

        with contextlib.suppress(ChaosFailure):
            hit = await poll(in_transaction, timeout=3, interval=0.01, what="an open transaction")
            self.summary.targets["pg_restart:mid_transaction"] += bool(hit)
        await asyncio.to_thread(self.postgres.restart_immediate)

    async def _fault_unwritable_state(self) -> None:
        """The allocator's state directory becomes a regular file (root ignores chmod), across a
        restart and some work; then the old directory comes back."""
        aside = self.workdir / f"state-aside-{uuid.uuid4().hex[:6]}"
        self.services.kill("allocator")
        if self.state_dir.exists():
            shutil.move(self.state_dir, aside)
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        self.state_dir.write_bytes(b"not a directory\n")
        before = await self._core_committed()
        self.services.start("allocator")

        async def worked() -> bool:
            return await self._core_committed() > before

        # Some commands folded while no snapshot can be written (none if no work is pending).
        with contextlib.suppress(ChaosFailure):
            await poll(worked, timeout=20, interval=0.2, what="the allocator to fold commands")
        self.services.kill("allocator")
        self.state_dir.unlink()
        if aside.exists():
            shutil.move(aside, self.state_dir)
        self.services.start("allocator")

    async def _core_committed(self) -> int:
        offsets = await committed_offsets(self.settings, self.settings.topic(CORE_GROUP), COMMANDS)
        return sum(offsets.values())

    def _snapshots(self) -> list[Path]:
        if not self.state_dir.is_dir():
            return []
        return [p for p in self.state_dir.iterdir() if p.is_file()]

    async def _with_snapshots(self, damage: Callable[[Path], None]) -> None:
        self.services.kill("allocator")
        files = self._snapshots()
        if not files:  # none yet: plant one where the current format would look
            self.state_dir.mkdir(parents=True, exist_ok=True)
            files = [
                self.state_dir / f"{self.settings.topic(COMMANDS)}-{p}.snapshot"
                for p in range(self.settings.fulfil_partitions)
            ]
            for path in files:
                path.write_bytes(b"")
        for path in files:
            damage(path)
        self.services.start("allocator")

    async def _fault_corrupt_snapshot(self) -> None:
        def corrupt(path: Path) -> None:
            data = bytearray(path.read_bytes() or b"\x80\x05garbage")
            for _ in range(max(1, len(data) // 50)):
                data[self.rng.randrange(len(data))] ^= 0xFF
            path.write_bytes(bytes(data))

        await self._with_snapshots(corrupt)

    async def _fault_truncated_snapshot(self) -> None:
        def truncate(path: Path) -> None:
            data = path.read_bytes()
            path.write_bytes(data[: self.rng.randrange(max(1, len(data)))])

        await self._with_snapshots(truncate)

    async def _fault_planted_snapshot(self) -> None:
        payload = pickle.dumps(_Plant(self.marker))
        await self._with_snapshots(lambda path: path.write_bytes(payload))

    def _template(self) -> Record:
        assert self.current is not None
        return self.current.records[self.rng.randrange(len(self.current.records))]

    async def _publish_extra(self, record: Record) -> None:
        assert self.current is not None
        self.current.records.append(record)  # the oracle folds it at its place in the phase
        await self._publish([record])

    async def _fault_poison(self) -> None:
        self.serial += 1
        kind = POISON_KINDS[self.rng.randrange(len(POISON_KINDS))]
        self.summary.targets[f"poison:{kind}"] += 1
        await self._publish_extra(poison(kind, self._template(), self.serial))

    async def _fault_bad_header(self) -> None:
        await self._publish_extra(bad_header(self._template()))

    # -------------------------------------------------------------- workload

    async def _publish(self, records: list[Record]) -> None:
        async def sent() -> bool:
            await publish_records(self.settings, records)
            return True

        await poll(sent, timeout=120, interval=0.5, what="a publish to go through")
        self.published.extend(records)

    async def _router_past(self, topic: str) -> bool:
        ends = await topic_ends(self.settings, topic)
        committed = await committed_offsets(self.settings, self.settings.topic(ROUTER_GROUP), topic)
        return all(committed.get(p, 0) >= end for p, end in ends.items())

    async def run_phase(self, phase: Phase, faults: list[str]) -> None:
        self.current = phase
        await self._publish(list(phase.records))
        for kind in faults:
            await asyncio.sleep(self.rng.uniform(0.0, 1.0))  # a random fault point inside the phase
            await self.inject(kind)

        async def routed() -> bool:
            return await self._router_past(phase.topic)

        await poll(
            routed,
            timeout=PHASE_SECONDS,
            interval=0.3,
            tick=self.services.supervise,
            what=f"the router to commit past the {phase.topic} phase",
        )

    async def caught_up(self) -> bool:
        s = self.settings
        for base, group in (
            (ORDERS, ROUTER_GROUP),
            (INVENTORY, ROUTER_GROUP),
            (COMMANDS, CORE_GROUP),
        ):
            ends = await topic_ends(s, base)
            committed = await committed_offsets(s, s.topic(group), base)
            if any(committed.get(p, 0) < end for p, end in ends.items()):
                self.behind = f"{group} on {base}: committed {committed}, ends {ends}"
                return False
        conn = await asyncpg.connect(self.postgres.url)
        try:
            alloc_ends = await topic_ends(s, ALLOCATIONS)
            for table, topics in (
                (f"{LIVE_SCHEMA}.projector_offsets", (ALLOCATIONS, ORDERS, INVENTORY)),
                ("notifier_offsets", (ALLOCATIONS,)),
            ):
                stored = {
                    (r[0], r[1]): r[2]
                    for r in await conn.fetch(f"SELECT topic, partition, next_offset FROM {table}")  # noqa: S608 - constant
                }
                for base in topics:
                    ends = alloc_ends if base == ALLOCATIONS else await topic_ends(s, base)
                    if any(
                        stored.get((s.topic(base), p), 0) < end for p, end in ends.items() if end
                    ):
                        self.behind = f"{table} on {base}: stored {stored}, ends {ends}"
                        return False
            pending = await conn.fetchval(
                "SELECT count(*) FROM notifier_outbox WHERE status = 'pending'"
            )
            self.behind = f"{pending} outbox rows pending"
            return pending == 0
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
            self.behind = str(exc)
            return False
        finally:
            await conn.close()

    # -------------------------------------------------------------- checks

    async def check(self, oracle: Oracle) -> None:
        summary = self.summary
        records = await read_topic(self.settings, ALLOCATIONS)
        outputs = [parse_output(r.value) for rs in records.values() for r in rs]
        ids = Counter(o.id for o in outputs)
        expected = oracle.output_ids
        summary.outputs_expected = len(expected)
        lost = expected - set(ids)
        summary.outputs_lost = len(lost)
        summary.lost_examples = sorted(lost)[:3]
        summary.duplicated_ids = sum(1 for n in ids.values() if n > 1)
        unexpected = set(ids) - expected
        if unexpected:
            summary.invariant_problems.append(
                f"{len(unexpected)} outputs the oracle does not have, e.g. {sorted(unexpected)[:3]}"
            )
        unique = list({o.id: o for o in outputs}.values())
        report = log_audit.check(oracle.inputs, unique)
        summary.invariant_problems.extend(report.problems)
        summary.planted_code_ran = self.marker.exists()
        await self._check_read_model(oracle)
        await self._check_messages(oracle)

    async def _check_read_model(self, oracle: Oracle) -> None:
        lines, backlog = line_figures(oracle.outputs)
        conn = await asyncpg.connect(self.postgres.url)
        try:
            rows = await conn.fetch(
                "SELECT warehouse_id, order_id, line_no, quantity, allocated, backordered, rejected, "  # noqa: S608 - constant
                f"cancelled FROM {LIVE_SCHEMA}.order_lines"
            )
            sku_rows = await conn.fetch(
                f"SELECT warehouse_id, sku, backordered_units FROM {LIVE_SCHEMA}.sku_backlog "  # noqa: S608 - constant
                "WHERE backordered_units > 0"
            )
        finally:
            await conn.close()
        actual_lines = {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
        actual_backlog = {(r[0], r[1]): r[2] for r in sku_rows}
        problems = self.summary.read_model_problems
        for name, want, got in (
            ("order line", lines, actual_lines),
            ("sku backlog", backlog, actual_backlog),
        ):
            missing = set(want) - set(got)
            extra = set(got) - set(want)
            wrong = [k for k in set(want) & set(got) if want[k] != got[k]]
            if missing:
                problems.append(
                    f"{len(missing)} {name} rows missing, e.g. {sorted(missing, key=str)[:2]}"
                )
            if extra:
                problems.append(
                    f"{len(extra)} {name} rows not in the oracle, e.g. {sorted(extra, key=str)[:2]}"
                )
            if wrong:
                k = sorted(wrong, key=str)[0]
                problems.append(
                    f"{len(wrong)} {name} rows differ, e.g. {k}: {got[k]} != oracle {want[k]}"
                )
        self.summary.read_model_equal = not problems

    async def _check_messages(self, oracle: Oracle) -> None:
        from services.notifier.domain.decide import KIND_BY_EVENT
        from services.notifier.domain.model import REMINDER_EVENT_TYPE

        conn = await asyncpg.connect(self.postgres.url)
        try:
            rows = await conn.fetch(
                "SELECT event_id, channel, status, event_type, warehouse_id, order_id FROM notifier_outbox"
            )
        finally:
            await conn.close()
        problems = self.summary.message_problems
        per_event: dict[tuple[str, str], list[str]] = defaultdict(list)
        # Reminders come from the read model and the wall clock (the workload's orders are
        # weeks old), so the oracle cannot list them; they must at least be for orders it
        # backordered. Every other row must be for an allocation event the oracle has.
        backordered = {
            (o.data.warehouse_id, o.data.order_id)
            for o in oracle.outputs
            if o.type in ORDER_OUTPUT_TYPES and any(x.backordered for x in o.data.lines)
        }
        reminders = [r for r in rows if r["event_type"] == REMINDER_EVENT_TYPE]
        strays = {(r["warehouse_id"], r["order_id"]) for r in reminders} - backordered
        if strays:
            problems.append(
                f"{len(strays)} orders reminded that the oracle never backordered, e.g. {sorted(strays)[:2]}"
            )
        self.summary.reminders = len(reminders)
        for r in rows:
            per_event[(r["event_id"], r["channel"])].append(r["status"])
        doubled = [k for k, v in per_event.items() if len(v) > 1]
        if doubled:
            problems.append(
                f"{len(doubled)} (event, channel) with more than one outbox row, e.g. {doubled[:2]}"
            )
        statuses = Counter(s for v in per_event.values() for s in v)
        if set(statuses) - {"sent", "superseded", "dropped", "skipped"}:
            problems.append(f"outbox statuses {dict(statuses)}")
        # An order refused as invalid has no customer to write to: no row.
        noticed = {
            o.id
            for o in oracle.outputs
            if o.type in KIND_BY_EVENT
            and not (o.type == "OrderRejected" and o.data.reason == "invalid")
        }
        reminder_ids = {r["event_id"] for r in reminders}
        emailed = {e for (e, c) in per_event if c == "email" and e not in reminder_ids}
        if noticed - emailed:
            problems.append(
                f"{len(noticed - emailed)} allocation events without an email row, e.g. {sorted(noticed - emailed)[:2]}"
            )
        if emailed - oracle.output_ids:
            problems.append(
                f"{len(emailed - oracle.output_ids)} email rows for events the oracle lacks"
            )
        mails: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        for mail in self.smtp.mails:
            mails[mail.message_id].add((mail.subject, mail.text, mail.to))
        sent = {
            f"<{e}.email@fulfil>" for (e, c), v in per_event.items() if c == "email" and "sent" in v
        }
        if sent - set(mails):
            problems.append(f"{len(sent - set(mails))} sent rows never reached the SMTP server")
        if set(mails) - sent:
            problems.append(f"{len(set(mails) - sent)} mails without a sent outbox row")
        differing = [m for m, copies in mails.items() if len(copies) > 1]
        if differing:
            problems.append(f"{len(differing)} Message-IDs sent with different content")
        self.summary.messages_ok = not problems


def draw_faults(rng: random.Random, count: int, kinds: tuple[str, ...] = FAULT_KINDS) -> list[str]:
    """`count` faults, every kind at least once when count allows, the rest at random."""
    drawn = list(kinds[:count]) + [
        kinds[rng.randrange(len(kinds))] for _ in range(max(0, count - len(kinds)))
    ]
    rng.shuffle(drawn)
    return drawn


@contextlib.asynccontextmanager
async def environment(workdir: Path) -> AsyncIterator[tuple[ProxiedBroker, Postgres, SmtpServer]]:
    smtp = SmtpServer()
    smtp.start()
    try:
        with private_postgres() as postgres, broker_behind_proxy() as proxied:
            yield proxied, postgres, smtp
    finally:
        smtp.stop()


async def run(
    faults: int,
    seed: int,
    events: int,
    chunks: int,
    workdir: Path,
    kinds: tuple[str, ...] = FAULT_KINDS,
) -> Summary:
    """One chaos run; returns the summary (raises ChaosFailure only when the run could not finish)."""
    rng = random.Random(seed)
    summary = Summary(seed)
    async with environment(workdir) as (proxied, pg, smtp):
        settings = load_settings(
            kafka_bootstrap_servers=proxied.bootstrap,
            kafka_enable_idempotence=False,
            database_url=pg.url,
            fulfil_topic_prefix=f"c{uuid.uuid4().hex[:6]}.",
            fulfil_partitions=3,
            fulfil_clock_tick_seconds=0,
            kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
            kafka_heartbeat_interval_ms=300,
            kafka_request_timeout_ms=REQUEST_TIMEOUT_MS,
            fulfil_state_dir=workdir / "state",
        )
        env = settings_as_env(settings)
        env.update(
            {
                "FULFIL_LOG_LEVEL": "WARNING",
                "FULFIL_SNAPSHOT_EVERY": "150",
                "FULFIL_SNAPSHOT_SECONDS": "2",
                "SMTP_URL": smtp.url,
                "SMTP_FROM": "orders@shop.example",
                "SMTP_TIMEOUT_SECONDS": "2",
                "WEBHOOK_TIMEOUT_SECONDS": "2",
                "FULFIL_NOTIFIER_ETA_HOLD_SECONDS": "0",
                "FULFIL_NOTIFIER_POLL_SECONDS": "0.2",
                "FULFIL_NOTIFIER_BACKOFF_INITIAL_SECONDS": "0.2",
                "FULFIL_NOTIFIER_BACKOFF_MAX_SECONDS": "1",
                "FULFIL_NOTIFIER_LEASE_SECONDS": "10",
                "FULFIL_NOTIFIER_REMINDER_CHECK_SECONDS": "86400",
            }
        )
        env.pop("WEBHOOK_URL", None)
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        await kafka.create_topics(settings)
        services = Services(env, workdir / "logs", summary)
        chaos = Chaos(settings, proxied, pg, smtp, services, rng, summary, workdir)
        plan = phases(events, chunks, seed)
        drawn = draw_faults(rng, faults, kinds)
        per_phase: list[list[str]] = [[] for _ in plan]
        for kind in drawn:
            per_phase[rng.randrange(len(plan))].append(kind)
        services.start_all()
        try:
            for phase, kinds in zip(plan, per_phase, strict=True):
                await chaos.run_phase(phase, kinds)
            try:
                await poll(
                    chaos.caught_up,
                    timeout=CATCH_UP_SECONDS,
                    interval=1.0,
                    tick=services.supervise,
                    what="every service to catch up",
                )
            except ChaosFailure as exc:
                raise ChaosFailure(f"{exc}; behind: {chaos.behind}") from None
            codes = services.terminate_all()
            for name, code in codes.items():
                if code != 0:
                    summary.unexpected_exits[f"{name} stop exit {code}"] += 1
                    summary.exit_tails[name] = services.tail(name)
        except ChaosFailure as exc:
            summary.exit_tails.update({name: services.tail(name) for name in SERVICES})
            raise ChaosFailure(f"{exc}\n{summary.line()}\n{summary.details()}") from None
        finally:
            services.kill_all()
        oracle = Oracle()
        for phase in plan:
            oracle.fold(phase.records)
        await chaos.check(oracle)
    return summary


def main() -> int:
    faults = int(os.environ.get("CHAOS_FAULTS", 120))
    seed = int(os.environ.get("CHAOS_SEED", random.SystemRandom().randrange(1_000_000)))
    events = int(os.environ.get("CHAOS_EVENTS", 6_000))
    chunks = int(os.environ.get("CHAOS_CHUNKS", max(10, faults // 4)))
    kinds = tuple(k for k in os.environ.get("CHAOS_KINDS", ",".join(FAULT_KINDS)).split(",") if k)
    if unknown := set(kinds) - set(FAULT_KINDS):
        print(
            f"chaos: unknown fault kinds {sorted(unknown)}; known: {','.join(FAULT_KINDS)}",
            file=sys.stderr,
        )
        return 2
    print(
        f"chaos: seed {seed} (CHAOS_SEED={seed} repeats this run), {faults} faults, {events} events",
        file=sys.stderr,
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="fulfil-chaos-"))
    try:
        summary = asyncio.run(run(faults, seed, events, chunks, workdir, kinds))
    except ChaosFailure as exc:
        print(f"chaos: FAILED (seed {seed}): {exc}", file=sys.stderr)
        print(f"chaos run did not finish (seed {seed}); logs kept in {workdir}")
        return 1
    print(summary.line())
    if not summary.ok or summary.unexpected_exits:
        print(summary.details(), file=sys.stderr)
        print(f"chaos: logs kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
