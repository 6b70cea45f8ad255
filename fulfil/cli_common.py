"""What the `fulfil` sub-commands share: the `--json` option and the usage error.

Below the CLI shell (fulfil/cli.py), which registers the sub-apps: a sub-app
imports this, never the shell, so the two never import each other.
"""

from __future__ import annotations

from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def fail_usage(message: str) -> typer.Exit:
    typer.echo(f"fulfil: {message}", err=True)
    return typer.Exit(2)
