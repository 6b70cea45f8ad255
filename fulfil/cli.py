"""The `fulfil` console script: one entry point for every service and tool."""

from __future__ import annotations

import os
import signal
import sys

import typer

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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in SERVICES:
        # Until a service's loop takes over SIGTERM, a stop request finds nothing
        # processed yet: exit 0 as a graceful stop would, not die by the signal.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _register()
    try:
        app(args=argv, prog_name="fulfil", standalone_mode=True)
    except ConfigError as exc:
        typer.echo(f"fulfil: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # an operator gets one line; FULFIL_DEBUG=1 shows the traceback
        if os.environ.get("FULFIL_DEBUG"):
            raise
        code = getattr(exc, "exit_code", None)
        if isinstance(
            code, int
        ):  # a refusal that names its remedy (fulfil_platform.consumer.Refused)
            typer.echo(f"fulfil: {exc}", err=True)
            sys.exit(code)
        typer.echo(f"fulfil: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
