"""The `fulfil` console script: one entry point for every service and tool."""

from __future__ import annotations

import inspect
import os
import signal
import sys
from typing import Annotated, NoReturn

import typer

from fulfil.failures import EXIT_FAILED, EXIT_USAGE, explain
from fulfil_platform.config import ConfigError

app = typer.Typer(
    name="fulfil",
    help=(
        "Backorder-aware order fulfilment over Kafka.\n\n"
        "Every command has --help with an example; --json wherever a script may read.\n\n"
        'Example: eval "$(fulfil dev env)" && fulfil status'
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (README: "Shell completion")
    pretty_exceptions_enable=False,
)

# `fulfil --help` groups the commands in these panels, in this order (tests/fulfil/test_cli_help.py
# checks that every command has one).
PANELS: dict[str, tuple[str, ...]] = {
    "Services": ("allocator", "projector", "notifier"),
    "Read models": (
        "status", "backlog", "order", "inbound", "promise", "aging", "deposits", "reorder",
    ),
    "Operator tools": (
        "trace", "tail", "replay", "dlq", "publish", "rebuild", "db", "clock",
        "notifications", "topics", "simulate",
    ),
    "Development": ("demo", "dev"),
}  # fmt: skip
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}
_PLACE = {name: i for i, name in enumerate(n for names in PANELS.values() for n in names)}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fulfil")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fulfil {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version (from the installed package) and exit.",
        ),
    ] = False,
) -> None:
    pass


def _register() -> None:
    # Sub-apps live beside the code they drive; importing here keeps `--help` fast
    # enough and the module graph acyclic.
    from fulfil import cli_dev, cli_ops, cli_sim, cli_status, cli_tools
    from services.allocator.entrypoints import clock_cli
    from services.notifier.entrypoints import cli as notifier_cli
    from services.projector.entrypoints import cli as projector_cli

    if app.registered_commands:  # once per process (tests call main() more than once)
        return
    app.add_typer(cli_dev.dev_app, name="dev")
    for module in (
        cli_tools, cli_ops, cli_sim, cli_status, notifier_cli, projector_cli, clock_cli,
    ):  # fmt: skip
        module.register(app)
    _arrange_panels()
    _reflow_help(app)


def _reflow(text: str | None) -> str | None:
    """Help paragraphs as flowing text: typer's rich help keeps a docstring's single line
    breaks, which a narrow terminal then breaks again mid-line. A paragraph starting
    with \\b keeps its lines (click's convention)."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Reflow the help of every command and group below `typer_app` (see `_reflow`)."""
    for command in typer_app.registered_commands:
        command.help = _reflow(command.help or inspect.getdoc(command.callback))
    if isinstance(typer_app.info.help, str):
        typer_app.info.help = _reflow(typer_app.info.help)
    elif typer_app.registered_callback is not None:
        callback = typer_app.registered_callback
        callback.help = _reflow(callback.help or inspect.getdoc(callback.callback))
    for group in typer_app.registered_groups:
        if isinstance(group.help, str):
            group.help = _reflow(group.help)
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def _arrange_panels() -> None:
    """Put every top-level command in its help panel, panels and commands in PANELS' order."""
    for command in app.registered_commands:
        command.rich_help_panel = _PANEL_OF.get(command.name or "")
    for group in app.registered_groups:
        group.rich_help_panel = _PANEL_OF.get(group.name or "")
    last = len(_PLACE)
    app.registered_commands.sort(key=lambda info: _PLACE.get(info.name or "", last))
    app.registered_groups.sort(key=lambda info: _PLACE.get(info.name or "", last))


SERVICES = frozenset({"allocator", "projector", "notifier"})
# Commands that run until stopped: SIGTERM before their own handler is in place is a graceful stop.
LONG_RUNNING = SERVICES | {"demo"}
_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def _configure_logging(command: str | None) -> None:
    """Every line a command logs is JSON (or FULFIL_LOG_FORMAT=console) from the start; an
    invalid level or format is reported by the command's own settings (exit 2)."""
    from fulfil_platform.logs import configure_logging

    level = os.environ.get("FULFIL_LOG_LEVEL", "INFO").upper()
    fmt = os.environ.get("FULFIL_LOG_FORMAT", "json")
    configure_logging(
        level if level in _LEVELS else "INFO",
        fmt if fmt in ("json", "console") else "json",
        service=command if command in SERVICES else "fulfil",
        # A one-shot tool reports its own failure in one line: no library chatter around it.
        libraries="WARNING" if command in SERVICES else "CRITICAL",
    )


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"fulfil: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Exit codes (README "Exit codes"): 0 ok (a SIGTERM/SIGINT stop of a service or the
    demo included), 2 usage or configuration error, 1 anything else, 3 a refusal."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else None
    if command in LONG_RUNNING:
        # Until the command's loop takes over SIGTERM, a stop request finds nothing
        # processed yet: exit 0 as a graceful stop would, not die by the signal.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _configure_logging(command)
    _register()
    try:
        app(args=args, prog_name="fulfil", standalone_mode=True)
    except ConfigError as exc:
        _fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # an operator gets one line; FULFIL_DEBUG=1 shows the traceback
        if os.environ.get("FULFIL_DEBUG", "") not in ("", "0"):
            raise
        # A refusal that names its remedy (fulfil_platform.consumer.Refused) has its own code.
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int):
            _fail(code, str(exc))
        known = explain(exc, os.environ)
        if known is not None:
            _fail(known.code, known.message)
        detail = str(exc).strip().splitlines()
        _fail(
            EXIT_FAILED,
            f"error: {type(exc).__name__}: {detail[0] if detail else ''} "
            "(FULFIL_DEBUG=1 shows the traceback)",
        )
