"""The exit codes and messages the README promises ("Exit codes"), one test per row of its table.

0 ok, 2 usage or configuration error, 1 anything else; a server that cannot be
reached is named, never an exception class or a traceback (FULFIL_DEBUG=1 shows
it); SIGTERM at any moment is a graceful exit 0. The processes are real and so are
the signals; exits are polled with a deadline.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import typer

from fulfil import embedded
from fulfil_platform import kafka
from fulfil_platform.logs import configure_logging
from schemas.registry import ALLOCATIONS
from tests.builders.allocations import customer, order_allocated
from tests.fulfil.helpers import fulfil
from tests.kafka_helpers import publish, wait_for
from tests.processes import REPO, Service

EVERY_LINE = ("event", "service", "logger", "level", "timestamp")


def _one_line(stderr: str, *, named: bool = True) -> str:
    """The operator's message: exactly one line, no traceback and (unless the error is an
    unexpected one) no exception class."""
    assert stderr.count("\n") == 1, stderr
    assert "Traceback (most recent call last)" not in stderr, stderr
    if named:
        assert "Error:" not in stderr and "Errno" not in stderr, stderr
    return stderr.strip()


def _unreachable() -> str:
    return f"127.0.0.1:{embedded.free_port()}"  # a loopback port nothing listens on


def _all_json(service: Service) -> list[dict]:
    docs = []
    for stream, line in service.lines():
        doc = orjson.loads(line)  # every line of a service is one JSON object
        assert all(key in doc for key in EVERY_LINE), (stream, line)
        docs.append(doc)
    return docs


async def _logged(service: Service, predicate, what: str, timeout: float = 120) -> None:
    async def seen() -> bool:
        assert service.running(), f"{service.name} exited: {service.output()[-3000:]}"
        return any(predicate(doc) for _, line in service.lines() for doc in [_doc(line)] if doc)

    await wait_for(seen, timeout=timeout, interval=0.2, what=what)


def _doc(line: str) -> dict | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


# ------------------------------------------------------------------ 0: ok


def test_a_command_that_did_its_job_exits_0(settings, env_for_subprocess) -> None:
    result = fulfil("topics", "create", env=env_for_subprocess(settings))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# ------------------------------------------------------------------ 2: usage and configuration


@pytest.mark.parametrize(
    ("name", "value"),
    [("FULFIL_PARTITIONS", "lots"), ("DATABASE_URL", "mysql://db.example/fulfil")],
)
def test_an_invalid_setting_exits_2_naming_it(settings, env_for_subprocess, name, value) -> None:
    result = fulfil("backlog", env={**env_for_subprocess(settings), name: value})
    assert result.returncode == 2, result.stderr
    assert _one_line(result.stderr).startswith(f"fulfil: invalid {name}: ")


def test_a_missing_setting_exits_2_naming_it(settings, env_for_subprocess) -> None:
    env = env_for_subprocess(settings)
    env.pop("DATABASE_URL")
    result = fulfil("projector", env=env)
    assert result.returncode == 2, result.stderr
    assert _one_line(result.stderr).startswith("fulfil: DATABASE_URL is not set")


def test_a_database_the_server_does_not_have_exits_2_naming_the_setting(
    settings, env_for_subprocess
) -> None:
    url = embedded.with_database(settings.database_url, "no_such_database")
    result = fulfil("backlog", env={**env_for_subprocess(settings), "DATABASE_URL": url})
    assert result.returncode == 2, result.stderr
    message = _one_line(result.stderr)
    assert message.startswith("fulfil: invalid DATABASE_URL: PostgreSQL at ")
    assert '"no_such_database" does not exist' in message


@pytest.mark.parametrize(
    "args",
    [("dlq", "show", "garbage"), ("dlq", "redrive", "garbage"), ("allocator", "--sideways")],
)
def test_a_usage_error_exits_2(settings, env_for_subprocess, args) -> None:
    result = fulfil(*args, env=env_for_subprocess(settings))
    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ 1: anything else


@pytest.mark.parametrize("args", [("topics", "create"), ("dlq", "list"), ("publish", "-")])
def test_a_broker_that_cannot_be_reached_is_named_exit_1(
    settings, env_for_subprocess, args, tmp_path
) -> None:
    where = _unreachable()
    if args[-1] == "-":
        (tmp_path / "empty.jsonl").write_text("")
        args = (*args[:-1], str(tmp_path / "empty.jsonl"))
    env = {**env_for_subprocess(settings), "KAFKA_BOOTSTRAP_SERVERS": where}
    result = fulfil(*args, env=env)
    assert result.returncode == 1, result.stderr
    assert _one_line(result.stderr).startswith(f"fulfil: Kafka at {where} is not reachable")
    assert "KafkaConnectionError" not in result.stderr


@pytest.mark.parametrize("args", [("backlog",), ("db", "migrate"), ("notifications",)])
def test_a_postgresql_that_cannot_be_reached_is_named_exit_1(
    settings, env_for_subprocess, args
) -> None:
    where = _unreachable()
    env = {**env_for_subprocess(settings), "DATABASE_URL": f"postgresql://postgres@{where}/db"}
    result = fulfil(*args, env=env)
    assert result.returncode == 1, result.stderr
    assert _one_line(result.stderr).startswith(f"fulfil: PostgreSQL at {where} is not reachable")
    assert "ConnectionRefusedError" not in result.stderr


def test_fulfil_debug_shows_the_traceback(settings, env_for_subprocess) -> None:
    env = {
        **env_for_subprocess(settings),
        "KAFKA_BOOTSTRAP_SERVERS": _unreachable(),
        "FULFIL_DEBUG": "1",
    }
    result = fulfil("topics", "create", env=env)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "KafkaConnectionError" in result.stderr


async def test_something_asked_for_that_is_not_there_exits_1(settings, env_for_subprocess) -> None:
    await kafka.create_topics(settings)
    ref = f"{settings.topic('orders.v1.dlq')}:0:99"
    result = fulfil("dlq", "show", ref, env=env_for_subprocess(settings))
    assert result.returncode == 1, result.stderr
    assert _one_line(result.stderr) == f"fulfil: no dead letter {ref}"


@pytest.fixture
def shell(monkeypatch) -> Iterator[typer.Typer]:
    """`fulfil` with commands of the test's own (main() as the console script runs it)."""
    from fulfil import cli

    commands = typer.Typer()
    monkeypatch.setattr(cli, "app", commands)
    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.delenv("FULFIL_DEBUG", raising=False)
    try:
        yield commands
    finally:  # main() configured logging for a one-shot tool: back to the tests' defaults
        configure_logging("INFO", "json", service="fulfil", libraries="WARNING")


def test_an_unexpected_error_exits_1_in_one_line(shell, capsys, monkeypatch) -> None:
    from fulfil.cli import main

    @shell.command()
    def explode() -> None:
        raise RuntimeError("the disk is on fire\nand more detail below")

    @shell.command()
    def other() -> None:  # two commands: `explode` is a sub-command, as in the real CLI
        pass

    with pytest.raises(SystemExit) as exited:
        main(["explode"])
    assert exited.value.code == 1
    assert _one_line(capsys.readouterr().err, named=False) == (
        "fulfil: error: RuntimeError: the disk is on fire (FULFIL_DEBUG=1 shows the traceback)"
    )
    monkeypatch.setenv("FULFIL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="the disk is on fire"):
        main(["explode"])


def test_ctrl_c_of_a_one_shot_command_exits_130(shell) -> None:
    from fulfil.cli import main

    @shell.command()
    def wait() -> None:
        raise KeyboardInterrupt

    @shell.command()
    def other() -> None:
        pass

    with pytest.raises(SystemExit) as exited:
        main(["wait"])
    assert exited.value.code == 130


# ------------------------------------------------------------------ SIGTERM: a graceful 0


@pytest.mark.parametrize("name", ["allocator", "projector", "notifier"])
async def test_sigterm_while_waiting_for_a_broker_that_is_not_there_exits_0(
    settings, test_database, env_for_subprocess, spawn, name
) -> None:
    where = _unreachable()
    env = {
        **env_for_subprocess(settings),
        "DATABASE_URL": test_database,
        "KAFKA_BOOTSTRAP_SERVERS": where,
        "SMTP_URL": "smtp://127.0.0.1:1",
    }
    service = spawn(name, [name], env)
    await _logged(
        service,
        lambda d: d.get("level") == "warning" and "retrying" in d.get("event", ""),
        f"{name} retrying the broker",
    )
    assert await service.terminate() == 0, service.output()[-3000:]
    docs = _all_json(service)
    retries = [d for d in docs if "retrying" in d["event"]]
    assert any(where in (d["event"] + str(d.get("detail"))) for d in retries), retries
    assert "Unclosed" not in service.output()


async def test_sigterm_while_waiting_for_a_postgresql_that_is_not_there_exits_0(
    settings, env_for_subprocess, spawn
) -> None:
    env = {
        **env_for_subprocess(settings),
        "DATABASE_URL": f"postgresql://postgres@{_unreachable()}/db",
    }
    service = spawn("projector", ["projector"], env)
    await _logged(
        service, lambda d: d.get("event") == "migrations failed; retrying", "migration retries"
    )
    assert await service.terminate() == 0, service.output()[-3000:]
    _all_json(service)


@pytest.fixture
def own_postgres() -> Iterator[embedded.PostgresHandle]:
    """A PostgreSQL of this test's own: stopping it disturbs no other test."""
    root = Path(tempfile.mkdtemp(prefix="fulfil-pg-sigterm-"))
    handle = embedded.start_postgres(root / "pgdata")
    stop = embedded.stop_at_exit(
        lambda: (embedded.stop_postgres(root / "pgdata"), shutil.rmtree(root, ignore_errors=True))
    )
    try:
        yield handle
    finally:
        stop()


async def test_sigterm_while_the_projector_retries_a_lost_postgresql_exits_0(
    settings, own_postgres, env_for_subprocess, spawn
) -> None:
    settings = settings.model_copy(update={"database_url": own_postgres.url})
    await kafka.create_topics(settings)
    service = spawn("projector", ["projector"], env_for_subprocess(settings))
    await _logged(service, lambda d: d.get("event") == "partitions positioned", "positions")
    embedded.stop_postgres(own_postgres)
    outputs = [order_allocated(f"o-{n}", customer(n)) for n in range(20)]
    await publish(settings, outputs, topic=ALLOCATIONS)
    await _logged(
        service,
        lambda d: (
            d.get("event")
            in (
                "batch failed; nothing committed, it is read again",
                "partition recovery failed; retrying",
            )
        ),
        "the projector retrying PostgreSQL",
    )
    assert await service.terminate() == 0, service.output()[-3000:]
    _all_json(service)


# The lines that say a service is consuming: its partitions are assigned and positioned.
CONSUMING = {
    "allocator": ("partition recovered", "allocator started"),
    "projector": ("partitions positioned",),
    "notifier": ("partitions recovered", "notifier started"),
}


@pytest.mark.parametrize("name", sorted(CONSUMING))
async def test_sigterm_after_the_broker_went_away_exits_0(
    proxied_settings, proxied_broker, test_database, env_for_subprocess, spawn, name
) -> None:
    await kafka.create_topics(proxied_settings)
    env = {
        **env_for_subprocess(proxied_settings),
        "DATABASE_URL": test_database,
        "SMTP_URL": "smtp://127.0.0.1:1",
    }
    service = spawn(name, [name], env)
    for event in CONSUMING[name]:
        await _logged(service, lambda d, event=event: d.get("event") == event, event)
    proxied_broker.proxy.refuse()
    await _logged(
        service, lambda d: d.get("logger") == "aiokafka", "the clients noticing the broker gone"
    )
    assert await service.terminate() == 0, service.output()[-3000:]
    _all_json(service)
    assert "Unclosed" not in service.output()


# ------------------------------------------------------------------ the table itself


def test_every_row_of_the_readme_table_names_a_test_that_exists() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in table.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) >= 15
    for row in rows:
        named = re.findall(r"`([^`]+)`", row.rstrip(" |").rsplit(" | ", 1)[1])
        assert named, f"no test named in: {row}"
        for name in named:
            path, _, function = name.rpartition("::") if "::" in name else ("", "", name)
            if name.endswith(".py"):
                path, function = name, ""
            source = (REPO / (path or "tests/fulfil/test_exit_codes.py")).read_text()
            assert not function or f"def {function}(" in source, f"{name} (row: {row})"
