"""What `fulfil demo` shows once the stream is handled: the operator queries, a few
customer emails, throughput, the invariant check and its verdict, and how to keep
exploring (the stack `--keep-running` leaves up, the commands to try)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel

from fulfil import dev_mail
from fulfil.log_audit import InvariantReport

if TYPE_CHECKING:
    from fulfil.demo_progress import Progress


def show_state(
    console: Console,
    env: dict[str, str],
    last_at: datetime | None,
    mail: dev_mail.MaildirHandler,
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
    console.rule(f"[bold]customer emails[/bold] ({mail.count:,} sent; all in {mail.maildir})")
    _emails(mail.maildir, console)


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


def show_throughput(
    console: Console, progress: Progress, mail: dev_mail.MaildirHandler, elapsed: float
) -> None:
    console.rule("[bold]throughput[/bold]")
    console.print(
        f"{progress.published:,} events published, {progress.outputs:,} allocation events, "
        f"{progress.dead_letters:,} dead letters, {mail.count:,} emails; everything handled in {elapsed:.1f}s "
        f"({progress.published / elapsed:,.0f} events/s end to end, publishing included)"
    )


def show_verdict(console: Console, report: InvariantReport) -> None:
    """The run's verdict, in one line."""
    if report.ok:
        console.print(
            f"[bold green]verdict: the invariants held[/bold green] ({report.lines_checked:,} "
            f"order lines, {report.skus_checked:,} SKUs, {report.outputs:,} outputs)"
        )
    else:
        count = len(report.problems)
        console.print(
            f"[bold red]verdict: {count} problem{'' if count == 1 else 's'}[/bold red]: "
            "the invariants did not hold (listed above; exit code 1)"
        )


# What to run against the stack, and what it shows.
_COMMANDS = (
    ("fulfil backlog", "what waits for stock, per SKU"),
    ("fulfil order {order}", "one order, line by line"),
    ("fulfil trace {order}", "its history across every topic"),
    ("fulfil status", "consumer lag, dead letters, the notifier's outbox"),
    ("fulfil dev mail", "the customer emails (`fulfil dev mail N` shows one)"),
)


def show_next_steps(
    console: Console, env: dict[str, str], rerun: str | None, order_id: str | None
) -> None:
    """How to keep exploring: the settings that reach the stack left running, or (`rerun`:
    the command that runs the demo again and leaves it running) how to leave it running;
    then the commands to try."""
    console.rule("[bold]keep exploring[/bold]")

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    if rerun is not None:
        say(
            f"Everything the demo started has stopped. `{rerun}` runs it again (the same "
            "orders) and leaves the stack up until Ctrl-C, with the settings to export in "
            "another shell, to try:"
        )
    else:
        say("The stack keeps running. In another shell:")
        for name in (
            "KAFKA_BOOTSTRAP_SERVERS",
            "DATABASE_URL",
            "KAFKA_ENABLE_IDEMPOTENCE",  # the embedded broker cannot do it
            "FULFIL_TOPIC_PREFIX",
            "FULFIL_PARTITIONS",
            "FULFIL_STATE_DIR",
        ):
            say(f"  export {name}={env[name]}")
        say("then try:")
    order = order_id or "ORDER_ID"
    width = max(len(command.format(order=order)) for command, _ in _COMMANDS)
    for command, what in _COMMANDS:
        say(f"  {command.format(order=order):<{width}}  {what}")
    if rerun is not None:
        state = env["FULFIL_STATE_DIR"]
        say(
            f"The emails of this run stay until the next demo: FULFIL_STATE_DIR={state} fulfil dev mail"
        )


async def keep_stack_running(console: Console) -> None:
    """Wait for Ctrl-C (or SIGTERM), with the stack up (see show_next_steps)."""
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


def _emails(maildir: Path, console: Console, wanted: int = 3) -> None:
    """Show a few customer emails as the customer reads them: a variety of kinds."""
    seen: Counter[str] = Counter()
    shown = 0
    for mail in dev_mail.messages(maildir):
        kind = mail.subject.split(" ")[0]
        if seen[kind] or "confirm" in mail.subject.lower():
            continue
        seen[kind] += 1
        text = dev_mail.text_of(dev_mail.parse(mail.path))
        console.print(
            Panel(
                text.strip(),
                title=f"Subject: {mail.subject}",
                subtitle=f"To: {mail.to}",
                border_style="green",
            )
        )
        shown += 1
        if shown == wanted:
            return
