"""The README's walk-through, run command by command, each output compared with the README.

Everything comes from README.md, between `<!-- walk-through: start` and
`<!-- walk-through: end -->`: a ```sh block holds commands that run without their
output shown, a ```console block holds `$ command` lines, each followed by what it
prints, compared exactly (trailing spaces aside). The commands run as a shell would
run them, with a fresh environment of their own (a state directory under the test's
tmp path, `COLUMNS=80`, no Kafka/PostgreSQL/SMTP settings inherited): `fulfil ...`
in the repository root (`&` keeps it running in the background until the end),
`export NAME=VALUE ...`, `eval "$(fulfil dev env)"` and `kill %N ...` (SIGTERM to
those background jobs, which must stop gracefully: exit 0). Anything else fails the
test, so the README cannot drift into commands nobody runs.

Before each compared command the test waits (polling, with a deadline) until the
background services have caught up: the router and the allocator core with their
inputs, the projector and the notifier with allocations.v1, and no email still
pending. A person typing the commands gets the same, a moment later.

Every line the background services logged must be one JSON object with the fields
the README's "Logs" promises.

`fulfil dev mail` prints the time each email was sent: that column (and the
`Date:` of one message) is the only wall-clock value, and is masked on both sides.

FULFIL_UPDATE_README=1 (`make readme`) writes the outputs of this run into the
README instead of comparing: after a change to what a command prints, run it and
review the diff.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition

from fulfil import dev_mail, embedded
from fulfil_platform import kafka
from fulfil_platform.config import Settings, load_settings
from schemas.registry import ALLOCATIONS, COMMANDS, INVENTORY, ORDERS
from services.allocator.entrypoints.core import CORE_GROUP
from services.allocator.entrypoints.router import ROUTER_GROUP
from services.notifier.adapters import queries as notifier_queries
from services.projector.adapters import queries as projector_queries
from tests.kafka_helpers import committed_offsets, wait_for

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- walk-through: start"
END = "<!-- walk-through: end"
UPDATE = os.environ.get("FULFIL_UPDATE_README") == "1"
COMMAND_TIMEOUT = 300.0
QUIET_TIMEOUT = 120.0
# What a fresh shell would not have: settings of the test session or of the caller.
INHERITED_PREFIXES = ("KAFKA_", "FULFIL_", "SMTP_", "WEBHOOK_")
INHERITED_NAMES = ("DATABASE_URL", "COLUMNS", "LINES")
# What every log line carries, and a line about a record besides (README "Logs").
EVERY_LINE = ("event", "service", "logger", "level", "timestamp")
RECORD_FIELDS = ("event_id", "correlation_id", "causation_id", "topic", "partition", "offset")
# The send time of an email (`fulfil dev mail`): the one wall-clock value of the walk.
VARYING = {("dev", "mail"): re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")}


@dataclass
class Step:
    command: str
    line: int  # index of the command's line in the README
    compared: bool  # a `$ command` of a ```console block
    expected: list[str] = field(default_factory=list)
    end: int = 0  # index after the last expected line


def parse(lines: list[str]) -> list[Step]:
    """The commands of the walk-through, in order, with the outputs the README shows."""
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(START))
        end = next(i for i, line in enumerate(lines) if line.startswith(END))
    except StopIteration:
        raise AssertionError(f"README.md has no {START} ... {END} -->") from None
    steps: list[Step] = []
    fence: str | None = None
    for index in range(start + 1, end):
        line = lines[index]
        if line.startswith("```"):
            if fence is None:
                fence = line[3:].strip()
                assert fence in ("sh", "console"), f"README.md:{index + 1}: ```{fence} block"
            else:
                fence = None
            continue
        if fence == "sh" and line.strip():
            steps.append(Step(line.strip(), index, compared=False))
        elif fence == "console":
            if line.startswith("$ "):
                steps.append(Step(line[2:].strip(), index, compared=True, end=index + 1))
            else:
                assert steps and steps[-1].compared, f"README.md:{index + 1}: output of no command"
                steps[-1].expected.append(line)
                steps[-1].end = index + 1
    assert fence is None, "a fenced block of the walk-through is not closed"
    return steps


def normalised(lines: list[str], words: list[str]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    for prefix, pattern in VARYING.items():
        if tuple(words[1 : 1 + len(prefix)]) == prefix:
            out = [pattern.sub("<sent>", line) for line in out]
    return out


class Walk:
    """Runs the steps as a shell would, in an environment of its own."""

    def __init__(self, tmp: Path, state: Path) -> None:
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(INHERITED_PREFIXES) and k not in INHERITED_NAMES
        }
        self.env |= {"FULFIL_STATE_DIR": str(state), "COLUMNS": "80", "LC_ALL": "C.UTF-8"}
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.background: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, step: Step) -> list[str] | None:
        """Run one step; returns its output lines for a compared step."""
        words = shlex.split(step.command, comments=True)
        where = f"README.md:{step.line + 1}: {step.command}"
        if words and words[0] == "export":
            for word in words[1:]:
                name, _, value = word.partition("=")
                self.env[name] = value
            return None
        if words == ["eval", "$(fulfil dev env)"]:
            for line in self.fulfil(["dev", "env"], where).splitlines():
                exported = shlex.split(line)
                assert exported[0] == "export", line
                name, _, value = exported[1].partition("=")
                self.env[name] = value
            return None
        if words and words[0] == "kill" and all(re.fullmatch(r"%[1-9]", w) for w in words[1:]):
            self.kill([int(w[1:]) for w in words[1:]], where)
            return None
        assert words and words[0] == "fulfil", f"{where}: the walk-through test cannot run this"
        if words[-1] == "&":
            self.start(words[1:-1], where)
            return None
        if step.compared and self.background:
            self.wait_until_quiet(where)
        output = self.fulfil(words[1:], where)
        return output.splitlines() if step.compared else None

    def fulfil(self, args: list[str], where: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "fulfil", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert done.returncode == 0, (
            f"{where}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            + self.service_logs()
        )
        return done.stdout

    def start(self, args: list[str], where: str) -> None:
        log = (self.logs / f"{'-'.join(args)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "fulfil", *args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.background.append((where, process))

    def kill(self, jobs: list[int], where: str) -> None:
        """`kill %N ...`: SIGTERM to those background jobs; each must stop gracefully (exit 0)."""
        chosen = [self.background[job - 1] for job in jobs]
        for _, process in chosen:
            process.send_signal(signal.SIGTERM)
        for name, process in chosen:
            try:
                code = process.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{where}: {name} did not stop") from None
            assert code == 0, f"{where}: {name} exited {code}" + self.service_logs()

    def settings(self) -> Settings:
        return load_settings(
            kafka_bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"],
            database_url=self.env["DATABASE_URL"],
            kafka_enable_idempotence=False,
        )

    def wait_until_quiet(self, where: str) -> None:
        for name, process in self.background:
            assert process.poll() is None, f"{name} exited ({process.returncode})" + (
                self.service_logs()
            )
        settings = self.settings()
        asyncio.run(
            wait_for(
                lambda: caught_up(settings),
                timeout=QUIET_TIMEOUT,
                what=f"the services to catch up before {where}",
            )
        )

    def service_logs(self) -> str:
        return "".join(
            f"\n--- {path.name}\n" + path.read_text(errors="replace")[-2000:]
            for path in sorted(self.logs.glob("*.log"))
        )

    def log_problems(self) -> list[str]:
        """Lines of the background services' logs that are not one JSON object with the
        fields every line carries (README "Logs"); a line about a record names it whole."""
        problems = []
        for path in sorted(self.logs.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict):
                    problems.append(f"{path.name}: not a JSON object: {line[:300]}")
                    continue
                wanted = EVERY_LINE + (RECORD_FIELDS if "offset" in doc else ())
                missing = [key for key in wanted if key not in doc]
                if missing:
                    problems.append(f"{path.name}: no {missing}: {line[:300]}")
        return problems

    def stop(self) -> None:
        """SIGTERM every background service (a graceful stop), SIGKILL what outlives 60 s."""
        for _, process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in self.background:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def caught_up(settings: Settings) -> bool:
    """Every input routed and folded, every output projected and notified, no email pending."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        ends = {}
        for base in (ORDERS, INVENTORY, COMMANDS, ALLOCATIONS):
            topic = settings.topic(base)
            tps = [TopicPartition(topic, p) for p in range(settings.fulfil_partitions)]
            ends[base] = {
                tp.partition: end for tp, end in (await kafka.log_ends(consumer, tps)).items()
            }
    finally:
        await consumer.stop()
    for group, base in ((ROUTER_GROUP, ORDERS), (ROUTER_GROUP, INVENTORY), (CORE_GROUP, COMMANDS)):
        if await committed_offsets(settings, settings.topic(group), base) != ends[base]:
            return False
    conn = await asyncpg.connect(settings.require_database())
    try:
        projected = await projector_queries.live_offsets(conn)
        notified = await notifier_queries.stored_offsets(conn)
        pending = await notifier_queries.pending_count(conn)
    except asyncpg.UndefinedTableError:
        return False  # a service has not migrated yet
    finally:
        await conn.close()
    for base in (ALLOCATIONS, ORDERS, INVENTORY):
        topic = settings.topic(base)
        if any(projected.get((topic, p), 0) != end for p, end in ends[base].items()):
            return False
    allocations = settings.topic(ALLOCATIONS)
    if any(notified.get((allocations, p), 0) != e for p, e in ends[ALLOCATIONS].items()):
        return False
    return pending == 0


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    # The state (PostgreSQL's data) outside pytest's tmp tree, as in tests/conftest.py:
    # the server runs as another user when root, and a pytest session starting beside
    # this one makes /tmp/pytest-of-<user> private again.
    state = Path(tempfile.mkdtemp(prefix="fulfil-walk-"))
    walk = Walk(tmp_path, state)
    state_dir = embedded.dev_state_dir(state)

    def stop_everything() -> None:
        try:
            walk.stop()
        finally:
            try:
                dev_mail.sink_down(state_dir)
                embedded.dev_down(state_dir)
            finally:
                shutil.rmtree(state, ignore_errors=True)

    stop = embedded.stop_at_exit(stop_everything)
    try:
        yield walk
    finally:
        stop()


def test_the_readme_walk_through(walk: Walk) -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    steps = parse(lines)
    assert sum(s.compared for s in steps) >= 5, "the walk-through shows no outputs"
    mismatches = []
    for step in steps:
        output = walk.run(step)
        if output is None:
            continue
        words = shlex.split(step.command)
        if UPDATE:
            step.expected = output
        elif normalised(output, words) != normalised(step.expected, words):
            diff = difflib.unified_diff(
                normalised(step.expected, words),
                normalised(output, words),
                "README.md",
                "actual",
                lineterm="",
            )
            mismatches.append(f"README.md:{step.line + 1}: $ {step.command}\n" + "\n".join(diff))
    assert not walk.log_problems(), "\n".join(walk.log_problems()[:20])
    if UPDATE:
        for step in reversed([s for s in steps if s.compared]):
            lines[step.line + 1 : step.end] = [line.rstrip() for line in step.expected]
        README.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    assert not mismatches, (
        "the README's walk-through prints something else now (after an intended change: "
        "`make readme`, then review the diff):\n\n" + "\n\n".join(mismatches)
    )


def test_the_parser_reads_commands_and_outputs() -> None:
    text = [
        "before",
        f"{START} -->",
        "```sh",
        "fulfil dev up   # a comment",
        "```",
        "```console",
        "$ fulfil backlog",
        "row 1",
        "",
        "row 2",
        "$ fulfil order o-1",
        "```",
        f"{END} -->",
        "```console",
        "$ not part of it",
        "```",
    ]
    steps = parse(text)
    assert [(s.command, s.compared, s.expected) for s in steps] == [
        ("fulfil dev up   # a comment", False, []),
        ("fulfil backlog", True, ["row 1", "", "row 2"]),
        ("fulfil order o-1", True, []),
    ]
    assert (steps[1].line, steps[1].end, steps[2].end) == (6, 10, 11)
    assert normalised(["a  ", "", ""], ["fulfil", "x"]) == ["a"]
    assert normalised(["1  2026-12-06 05:06:24  x"], ["fulfil", "dev", "mail"]) == ["1  <sent>  x"]
