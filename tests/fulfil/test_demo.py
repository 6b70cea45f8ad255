"""`fulfil demo` end to end, and its invariant check failing on a corrupted topic."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from rich.console import Console

from fulfil.demo import invariant_check
from fulfil_platform.kafka import create_topics
from schemas.registry import ALLOCATIONS, encode
from services.allocator.domain import decide, new_state
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import publish


def test_demo_runs_end_to_end_and_stops_everything(tmp_path) -> None:
    env = {**os.environ, "FULFIL_STATE_DIR": str(tmp_path), "COLUMNS": "120"}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "FULFIL_TOPIC_PREFIX"):
        env.pop(name, None)
    # 3 000 events: the simulated day opens with purchasing and SKU policies, and the
    # first 1 500 may hold too few backorders for a single email (the demo does not
    # confirm orders that ship at once).
    result = subprocess.run(
        [sys.executable, "-m", "fulfil", "demo", "--events", "3000", "--seed", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for section in (
        "backlog",
        "backlog aging",
        "backordered units by days waited",  # the histogram
        "late inbound shipments",
        "customer deposits",
        "customer emails",
        "invariants",
        "throughput",
    ):
        assert section in out
    assert "OK:" in out and "Subject:" in out
    assert list((tmp_path / "demo" / "mail").glob("*.eml"))
    # Nothing it started is left: the broker and PostgreSQL of its state directory are gone.
    assert _processes_mentioning(tmp_path) == []


def _processes_mentioning(path) -> list[int]:
    """PIDs whose command line names `path` (what `pgrep -f` does, without needing procps)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if str(path) in cmdline:
            found.append(int(proc.name))
    return found


async def test_demo_exits_1_when_an_invariant_fails_and_stops_everything(
    tmp_path, monkeypatch
) -> None:
    from fulfil import demo
    from fulfil.log_audit import InvariantReport

    async def failing_check(settings):
        return InvariantReport(lines_checked=1, problems=["order o-1 line 1: 2 != ordered 1"])

    monkeypatch.setattr(demo, "invariant_check", failing_check)
    monkeypatch.setenv("FULFIL_STATE_DIR", str(tmp_path))
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "FULFIL_TOPIC_PREFIX",
        "FULFIL_METRICS_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    console = Console(record=True, width=120, force_terminal=False)
    assert await demo.run_demo(events=600, seed=5, keep_running=False, console=console) == 1
    out = console.export_text()
    assert "1 invariant violations" in out and "2 != ordered 1" in out
    # The live view names every stage with its lag.
    assert "router" in out and "allocator core" in out and "(lag " in out
    assert _processes_mentioning(tmp_path) == []


async def test_invariant_check_reads_the_topics_and_catches_a_corrupted_output(settings) -> None:
    await create_topics(settings)
    events = mixed_stream(2_500, seed=4)
    state, outputs = new_state(), []
    for event in events:
        state, produced = decide(state, event)
        outputs.extend(produced)
    await publish(settings, events)
    await publish(settings, outputs)
    assert (await invariant_check(settings)).ok

    order_output = next(o for o in outputs if o.type != "StockPositionChanged")
    doc = orjson.loads(encode(order_output))
    doc["id"] = "corrupted-copy"
    doc["data"]["lines"][0]["allocated"] += 1
    await publish(settings, [orjson.dumps(doc)], topic=ALLOCATIONS)
    report = await invariant_check(settings)
    assert not report.ok
    assert any("corrupted-copy" in p and "!= ordered" in p for p in report.problems)


async def test_sigterm_to_the_demo_stops_everything_it_started_and_exits_0(tmp_path, spawn) -> None:
    """Mid-run (its services up, the day being simulated or published), SIGTERM stops the
    demo's services, SMTP sink, broker and PostgreSQL, and the demo exits 0."""
    from tests.kafka_helpers import wait_for

    state = tmp_path / "state"
    env = {**os.environ, "FULFIL_STATE_DIR": str(state), "COLUMNS": "120"}
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "FULFIL_TOPIC_PREFIX",
        "FULFIL_METRICS_PORT",
    ):
        env.pop(name, None)
    demo = spawn("demo", ["demo", "--events", "200000", "--seed", "4"], env)
    logs = state / "demo" / "logs"
    try:

        async def services_up() -> bool:
            assert demo.running(), demo.output()[-3000:]
            started = {"allocator": "allocator started", "projector": "projector started",
                       "notifier": "notifier started"}  # fmt: skip
            return all(
                (logs / f"{name}.log").exists() and line in (logs / f"{name}.log").read_text()
                for name, line in started.items()
            )

        await wait_for(services_up, timeout=240, interval=0.5, what="the demo's services up")
        assert await demo.terminate(timeout=180) == 0, demo.output()[-3000:]
        assert "stopped (SIGTERM)" in demo.output()
        assert _processes_mentioning(state) == []
        # Its services stopped gracefully too: each logged its own stop.
        for name in ("allocator", "projector", "notifier"):
            assert f"{name} stopped" in (logs / f"{name}.log").read_text(), name
    finally:
        # Whatever the outcome: nothing the demo started outlives the test.
        for pid in _processes_mentioning(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        from fulfil import embedded

        if (state / "demo" / "runtime" / "pgdata").exists():
            embedded.stop_postgres(state / "demo" / "runtime" / "pgdata")
