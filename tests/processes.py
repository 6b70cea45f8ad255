"""Services run as real processes in tests: start, read their output, stop with SIGTERM.

The `spawn` fixture (tests/conftest.py) starts processes and kills, at the end
of the test, the ones still running (by the PID it started, whatever the test's
outcome). Output goes to files, so a chatty process never blocks on a full
pipe; `lines()` reads both streams.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.kafka_helpers import wait_for

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    exit_code: int | None = field(default=None)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def lines(self) -> list[tuple[str, str]]:
        """(stream, line) for every non-empty line written so far, stdout first."""
        return [
            (path.name, line)
            for path in (self.stdout, self.stderr)
            for line in path.read_text(errors="replace").splitlines()
            if line.strip()
        ]

    def running(self) -> bool:
        return self.process.poll() is None

    async def wait_exit(self, timeout: float = 120.0) -> int:
        """The exit code, polled with a deadline (fails the test when it does not come)."""

        async def exited() -> bool:
            return self.process.poll() is not None

        await wait_for(exited, timeout=timeout, interval=0.1, what=f"{self.name} to exit")
        self.exit_code = self.process.returncode
        return self.exit_code

    async def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM, then the exit code (a graceful stop is 0)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)


class Spawner:
    def __init__(self, directory: Path):
        self.directory = directory
        self.started: list[Service] = []

    def __call__(
        self, name: str, args: list[str], env: dict[str, str], *, module: str = "fulfil"
    ) -> Service:
        """`python -m <module> ARGS` from the repository root, output in files named after `name`."""
        stdout = self.directory / f"{name}.stdout"
        stderr = self.directory / f"{name}.stderr"
        with stdout.open("ab") as out, stderr.open("ab") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        service = Service(name, process, stdout, stderr)
        self.started.append(service)
        return service

    def kill_leftovers(self) -> None:
        for service in self.started:
            if service.process.poll() is None:
                service.process.kill()
            service.process.wait()


def spawner(directory: Path) -> Iterator[Spawner]:
    spawn = Spawner(directory)
    try:
        yield spawn
    finally:
        spawn.kill_leftovers()
