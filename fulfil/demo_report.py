"""What `fulfil demo` shows once the stream is handled: the operator queries, a few
customer emails, the invariant check's verdict, throughput, and how to use the stack it
leaves running."""

from __future__ import annotations

import asyncio
import email
import email.policy
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel

from fulfil.log_audit import InvariantReport

if TYPE_CHECKING:
    from fulfil.demo import MailSink, Progress


def show_state(
    console: Console,
    env: dict[str, str],
    last_at: datetime | None,
    mail: MailSink,
    root: Path,
) -> None:
    """The backlog and its aging, the late inbounds, the deposits and a few customer emails."""
    console.rule("[bold]backlog[/bold] (fulfil backlog)")
    _query(console, env, "backlog")
    if last_at is not None:  # the simulated day's end, not the wall clock
        shown = last_at.isoformat(timespec="minutes")  # with its zone: the tables say UTC
        as_of = last_at.isoformat()
        console.rule(f"[bold]backlog aging[/bold] (fulfil aging --as-of {shown})")
        _query(console, env, "aging", "--as-of", as_of)
        console.rule(f"[bold]late inbound shipments[/bold] (fulfil inbound --late --as-of {shown})")
        _query(console, env, "inbound", "--late", "--as-of", as_of)
    console.rule("[bold]customer deposits[/bold] (fulfil deposits --limit 5)")
    _query(console, env, "deposits", "--limit", "5")
    console.rule(f"[bold]customer emails[/bold] ({mail.count:,} sent; all in {root / 'mail'})")
    _emails(root / "mail", console)


def show_invariants(console: Console, report: InvariantReport) -> None:
    if report.ok:
        console.print(
            f"[green]OK[/green]: {report.lines_checked:,} order lines satisfy allocated + backordered + rejected + "
            f"cancelled == ordered; {report.skus_checked:,} SKUs released no more than received; "
            f"{report.outputs:,} outputs, no id twice"
        )
    else:
        console.print(f"[red]{len(report.problems)} invariant violations[/red]")
        for problem in report.problems[:20]:
            console.print(f"  {problem}", markup=False)


def show_throughput(console: Console, progress: Progress, mail: MailSink, elapsed: float) -> None:
    console.rule("[bold]throughput[/bold]")
    console.print(
        f"{progress.published:,} events published, {progress.outputs:,} allocation events, "
        f"{progress.dead_letters:,} dead letters, {mail.count:,} emails; everything handled in {elapsed:.1f}s "
        f"({progress.published / elapsed:,.0f} events/s end to end, publishing included)"
    )


async def keep_stack_running(console: Console, env: dict[str, str]) -> None:
    """Tell how to reach the running stack, then wait for Ctrl-C (or SIGTERM)."""
    console.rule("[bold]the stack keeps running[/bold]")
    console.print("In another shell:")
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "FULFIL_TOPIC_PREFIX",
        "FULFIL_PARTITIONS",
    ):
        console.print(f"  export {name}={env[name]}", markup=False, highlight=False)
    console.print(
        "  fulfil backlog; fulfil order <ORDER_ID>; fulfil trace <ORDER_ID>; fulfil tail allocations.v1"
    )
    console.print("Press Ctrl-C to stop everything.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _query(console: Console, env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env={**env, "COLUMNS": str(console.width)},
        capture_output=True,
        text=True,
    )
    console.print(result.stdout.rstrip(), markup=False, highlight=False)
    if result.returncode != 0:
        console.print(
            f"[red]`fulfil {' '.join(args)}` failed:[/red] {result.stderr.strip()[-300:]}"
        )


def _emails(directory: Path, console: Console, wanted: int = 3) -> None:
    """Show a few customer emails as the customer reads them: a variety of kinds."""
    seen: Counter[str] = Counter()
    shown = 0
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        subject = str(message["Subject"])
        kind = subject.split(" ")[0]
        if seen[kind] or "confirm" in subject.lower():
            continue
        seen[kind] += 1
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        console.print(
            Panel(
                text.strip(),
                title=f"Subject: {subject}",
                subtitle=f"To: {message['To']}",
                border_style="green",
            )
        )
        shown += 1
        if shown == wanted:
            return
