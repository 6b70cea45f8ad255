"""`fulfil dev up|down|env`: the embedded broker + PostgreSQL as background processes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from fulfil import embedded
from fulfil_platform.config import load_settings

dev_app = typer.Typer(
    help=(
        "Run a local Kafka-compatible broker (Tansu, memory only) and PostgreSQL in the "
        'background, for development and demos.\n\nExample: fulfil dev up && eval "$(fulfil dev env)"'
    ),
    no_args_is_help=True,
)


def _state_dir() -> Path:
    return embedded.dev_state_dir(load_settings().fulfil_state_dir)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"fulfil dev: {message}", err=True)
    return typer.Exit(1)


@dev_app.command()
def up(
    as_json: bool = typer.Option(
        False, "--json", help="Print the endpoints and process ids as one JSON object."
    ),
) -> None:
    """Start the broker and PostgreSQL (does nothing if they already run and answer).

    State (PIDs, ports, logs, PostgreSQL data) lives under FULFIL_STATE_DIR/dev. A fresh start discards old PostgreSQL data, because the broker kept nothing either.

    Example: fulfil dev up --json
    """
    state_dir = _state_dir()
    try:
        runtime, started = embedded.dev_up(state_dir)
    except (embedded.EmbeddedError, OSError) as exc:
        raise _fail(f"could not start the dev runtime: {exc}") from None
    if as_json:
        typer.echo(
            json.dumps(runtime.to_json() | {"started": started, "state_dir": str(state_dir)})
        )
        return
    verb = "started" if started else "already running:"
    typer.echo(
        f"{verb} Tansu on {runtime.broker.bootstrap} (pid {runtime.broker.pid}), "
        f"PostgreSQL on 127.0.0.1:{runtime.postgres.port} (pid {runtime.postgres.pid})"
    )
    typer.echo('use it with: eval "$(fulfil dev env)"')


@dev_app.command()
def down() -> None:
    """Stop the broker and PostgreSQL started by `fulfil dev up` and discard their data.

    Example: fulfil dev down
    """
    state_dir = _state_dir()
    try:
        stopped = embedded.dev_down(state_dir)
    except (embedded.EmbeddedError, OSError) as exc:
        raise _fail(f"could not stop the dev runtime: {exc}") from None
    if stopped is None:
        typer.echo("nothing to stop: the dev runtime is not running")
    else:
        typer.echo(
            f"stopped Tansu (pid {stopped.broker.pid}) and PostgreSQL (pid {stopped.postgres.pid})"
        )


@dev_app.command()
def env() -> None:
    """Print `export` lines for the running dev runtime: eval "$(fulfil dev env)".

    Besides KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL it shortens the consumer group timeouts, because Tansu holds each group join for half the session timeout.

    Example: eval "$(fulfil dev env)"
    """
    try:
        runtime = embedded.dev_status(_state_dir())
    except (embedded.EmbeddedError, OSError) as exc:
        raise _fail(f"could not check the dev runtime: {exc}") from None
    if runtime is None:
        raise _fail("the dev runtime is not running (start it with `fulfil dev up`)")
    for name, value in runtime.env().items():
        typer.echo(f"export {name}={shlex.quote(value)}")
