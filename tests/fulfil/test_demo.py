"""`fulfil demo` end to end, and its invariant check failing on a corrupted topic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import orjson
from rich.console import Console

from fulfil.demo import invariant_check
from fulfil_platform.kafka import create_topics
from schemas.registry import ALLOCATIONS, encode
from services.allocator.domain import decide, new_state
from tests.builders.streams import mixed_stream
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import publish, wait_for

# A progress line of the demo when its stdout is not a terminal (fulfil/demo_progress.py).
PROGRESS = re.compile(r"^\[ *\d+s\] published [\d,]+/[\d,]+ events; router lag [\d,]+")


def _demo_env(state: Path) -> dict[str, str]:
    env = {**os.environ, "FULFIL_STATE_DIR": str(state), "COLUMNS": "120"}
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "FULFIL_TOPIC_PREFIX",
        "FULFIL_METRICS_PORT",
    ):
        env.pop(name, None)
    return env


async def test_demo_runs_end_to_end_and_stops_everything(tmp_path, spawn) -> None:
    """`fulfil demo` with its output in a file, as in CI or `make run > log`: plain progress
    lines while it runs, the panel apart from the next section, the report, then the
    verdict and how to keep exploring; nothing it started is left running."""
    env = _demo_env(tmp_path)
    # 3 000 events: the simulated day opens with purchasing and SKU policies, and the
    # first 1 500 may hold too few backorders for a single email (the demo does not
    # confirm orders that ship at once).
    demo = spawn("demo", ["demo", "--events", "3000", "--seed", "3"], env)

    async def progress_while_running() -> str | None:
        text = demo.stdout.read_text(errors="replace")
        if any(PROGRESS.match(line) for line in text.splitlines()):
            return text
        assert demo.running(), "the demo ended without a progress line:\n" + demo.output()[-3000:]
        return None

    early = await wait_for(
        progress_while_running, timeout=300, interval=0.2, what="a progress line of the demo"
    )
    assert "verdict" not in early and "invariants" not in early  # shown while it ran
    assert await demo.wait_exit(timeout=600) == 0, demo.output()[-3000:]
    lines = demo.stdout.read_text().splitlines()
    out = "\n".join(lines)
    assert "\x1b[" not in out  # no terminal codes in a file
    assert len([line for line in lines if PROGRESS.match(line)]) >= 2  # the first and the last
    # The panel (drawn once, at the end) and the first section have a blank line between.
    panel = next(
        i for i, line in enumerate(lines) if line.startswith("╭") and "fulfil demo" in line
    )
    panel_end = next(i for i, line in enumerate(lines) if i > panel and line.startswith("╰"))
    assert lines[panel_end + 1] == "" and "backlog" in lines[panel_end + 2], lines[panel_end:][:3]
    for section in (
        "backlog",
        "backlog aging",
        "backordered units by days waited",  # the histogram
        "late inbound shipments",
        "customer deposits",
        "customer emails",
        "throughput",
        "invariants",
    ):
        assert section in out
    assert "OK:" in out and "Subject:" in out
    # It ends with the verdict, after throughput, then how to keep exploring.
    verdict = next(i for i, line in enumerate(lines) if line.startswith("verdict: "))
    assert lines[verdict].startswith("verdict: the invariants held")
    assert verdict > next(i for i, line in enumerate(lines) if "throughput" in line)
    assert "keep exploring" in lines[verdict + 1]
    after = "\n".join(lines[verdict + 1 :])
    assert "fulfil demo --events 3000 --seed 3 --keep-running" in after
    order = re.search(r"fulfil order (\S+)", after)
    assert order is not None and order.group(1).startswith("ord-"), after
    for command in ("fulfil backlog", f"fulfil trace {order.group(1)}", "fulfil status"):
        assert command in after
    # What it says about the emails holds once it has stopped: `fulfil dev mail` lists them.
    state = re.search(r"FULFIL_STATE_DIR=(\S+) fulfil dev mail", after)
    assert state is not None, after
    mail = fulfil("dev", "mail", "--json", env={**env, "FULFIL_STATE_DIR": state.group(1)})
    assert mail.returncode == 0, mail.stderr
    assert len(orjson.loads(mail.stdout)) >= 1
    # Its services logged one JSON object a line, each naming its service.
    for log in sorted((tmp_path / "demo" / "logs").glob("*.log")):
        for line in log.read_text().splitlines():
            doc = orjson.loads(line)
            assert {"event", "service", "logger", "level", "timestamp"} <= set(doc), line
    # Nothing it started is left: the broker and PostgreSQL of its state directory are gone.
    assert _processes_mentioning(tmp_path) == []


async def test_demo_keep_running_leaves_a_stack_the_commands_it_names_can_query(
    tmp_path, spawn
) -> None:
    """With --keep-running the demo prints the settings to export and the commands to try;
    each of them works against the stack it leaves up, until SIGTERM stops everything."""
    state = tmp_path / "state"
    demo = spawn(
        "demo", ["demo", "--events", "3000", "--seed", "3", "--keep-running"], _demo_env(state)
    )
    try:

        async def waiting() -> bool:
            assert demo.running(), demo.output()[-3000:]
            return "Press Ctrl-C to stop everything." in demo.stdout.read_text(errors="replace")

        await wait_for(waiting, timeout=300, interval=0.2, what="the demo to leave its stack up")
        out = demo.stdout.read_text()
        exports = dict(re.findall(r"^  export (\w+)=(\S*)$", out, re.MULTILINE))
        assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "FULFIL_STATE_DIR"} <= set(exports)
        env = {**_demo_env(tmp_path / "elsewhere"), **exports}
        tried = re.findall(r"^  (fulfil [^ ]+(?: [^ ]+)?)  ", out, re.MULTILINE)
        assert {"fulfil backlog", "fulfil status", "fulfil dev mail"} <= set(tried), tried
        assert any(t.startswith("fulfil order ") for t in tried), tried
        for command in tried:
            result = await asyncio.to_thread(fulfil, *command.split()[1:], env=env)
            assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
        assert await demo.terminate(timeout=180) == 0, demo.output()[-3000:]
        assert _processes_mentioning(state) == []
    finally:
        for pid in _processes_mentioning(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        from fulfil import embedded

        if (state / "demo" / "runtime" / "pgdata").exists():
            embedded.stop_postgres(state / "demo" / "runtime" / "pgdata")


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
    assert "verdict: 1 problem: the invariants did not hold" in out
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
