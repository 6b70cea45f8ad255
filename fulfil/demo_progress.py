"""`fulfil demo`'s progress while it runs: what each stage has handled, and how it is shown.

On a terminal, a panel redrawn in place (rich's Live). Anywhere else (CI, a pipe,
`make run > log`) Live would print nothing until the end, so a plain line is printed
every `PLAIN_EVERY` seconds instead, and the final panel once. Either way a blank line
follows the panel, so the next section does not stick to it."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

PLAIN_EVERY = 3.0  # seconds between two progress lines when stdout is not a terminal


@dataclass
class Progress:
    total: int = 0  # events the demo will publish
    published: int = 0
    invalid: int = 0
    commands: int = 0
    outputs: int = 0
    dead_letters: int = 0
    projected: int = 0
    notified: int = 0
    emails: int = 0
    unsent: int = 0
    router_lag: int = 0
    core_lag: int = 0
    started: float = field(default_factory=time.monotonic)
    caught_up_at: float | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def table(self, procs: dict[str, subprocess.Popen[bytes]]) -> Panel:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right")
        table.add_column()
        rows = [
            ("published", f"{self.published:,} events ({self.invalid:,} invalid on purpose)"),
            (
                "router",
                f"{self.commands:,} commands, {self.dead_letters:,} dead letters (lag {self.router_lag:,})",
            ),
            ("allocator core", f"{self.outputs:,} allocation events (lag {self.core_lag:,})"),
            (
                "projector",
                f"{self.projected:,} / {self.outputs:,} allocation events in PostgreSQL (lag {self.outputs - self.projected:,})",
            ),
            (
                "notifier",
                f"{self.notified:,} / {self.outputs:,} events read, {self.emails:,} emails sent, {max(self.unsent, 0):,} queued",
            ),
            ("services", services(procs)),
            ("elapsed", f"{self.elapsed():,.1f}s"),
        ]
        for name, value in rows:
            table.add_row(f"[bold]{name}[/bold]", value)
        return Panel(table, title="fulfil demo", border_style="cyan")

    def line(self, procs: dict[str, subprocess.Popen[bytes]]) -> str:
        """The same figures in one plain line, for logs."""
        published = f"{self.published:,}" + (f"/{self.total:,}" if self.total else "")
        down = [n for n, p in procs.items() if p.poll() is not None]
        return (
            f"[{self.elapsed():5.0f}s] published {published} events; "
            f"router lag {self.router_lag:,}, {self.dead_letters:,} dead letters; "
            f"core lag {self.core_lag:,}, {self.outputs:,} allocation events; "
            f"projector lag {max(self.outputs - self.projected, 0):,}; "
            f"notifier lag {max(self.outputs - self.notified, 0):,}, "
            f"{self.emails:,} emails sent, {max(self.unsent, 0):,} queued"
            + (f"; EXITED: {services({n: procs[n] for n in down})}" if down else "")
        )


def services(procs: dict[str, subprocess.Popen[bytes]]) -> str:
    return ", ".join(
        f"{n} {'up' if p.poll() is None else f'EXITED {p.returncode}'}" for n, p in procs.items()
    )


class ProgressDisplay:
    """The live panel on a terminal; elsewhere a plain line every `every` seconds (the
    first at once), then the final panel. Call `update()` as often as convenient."""

    def __init__(
        self,
        console: Console,
        progress: Progress,
        procs: dict[str, subprocess.Popen[bytes]],
        every: float = PLAIN_EVERY,
    ) -> None:
        self.console = console
        self.progress = progress
        self.procs = procs
        self.every = every
        self.printed_at: float | None = None
        self.live = (
            Live(progress.table(procs), console=console, refresh_per_second=4, transient=False)
            if console.is_terminal
            else None
        )

    def __enter__(self) -> ProgressDisplay:
        if self.live is not None:
            self.live.start()
        else:
            self.update()
        return self

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self.progress.table(self.procs))
            return
        now = time.monotonic()
        if self.printed_at is None or now - self.printed_at >= self.every:
            self.printed_at = now
            self._say(self.progress.line(self.procs))

    def _say(self, line: str) -> None:
        # One line however long: a log line wrapped at the console's width is two lines.
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.update(self.progress.table(self.procs))
            self.live.stop()
        elif kind is None:
            self._say(self.progress.line(self.procs))
            self.console.print(self.progress.table(self.procs))
        self.console.print()  # the next section's rule does not stick to the panel
