"""The `fulfil` console script: one entry point for every service and tool."""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

import typer

from fulfil.failures import EXIT_FAILED, EXIT_USAGE, explain
from fulfil_platform.config import ConfigError

app = typer.Typer(
    name="fulfil",
    help="Backorder-aware order fulfilment over Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Sub-apps live beside the code they drive; importing here keeps `--help` fast
    # enough and the module graph acyclic.
    from fulfil import cli_dev, cli_ops, cli_sim, cli_tools
    from services.allocator.entrypoints import clock_cli
    from services.notifier.entrypoints import cli as notifier_cli
    from services.projector.entrypoints import cli as projector_cli

    app.add_typer(cli_dev.dev_app, name="dev")
    for module in (cli_tools, cli_ops, cli_sim, notifier_cli, projector_cli, clock_cli):
        module.register(app)


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
