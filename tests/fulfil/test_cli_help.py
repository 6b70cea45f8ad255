"""The shape of the `fulfil` CLI: an example in every command's help, the commands in
panels, the same filter flags everywhere they make sense, --version and shell
completion. No servers needed: only --help, --version and completion are run."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import click
import pytest
import typer
from typer.testing import CliRunner

from fulfil.cli import PANELS, _register, app


def _command() -> click.Command:
    _register()
    return typer.main.get_command(app)


def _walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


COMMANDS = [path for path, _ in _walk(_command())]


def _options(path: tuple[str, ...]) -> set[str]:
    command = dict(_walk(_command()))[path]
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def _help(*path: str) -> str:
    result = CliRunner(env={"COLUMNS": "100"}).invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
    return result.stdout


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "fulfil")
def test_every_command_and_subcommand_shows_an_example(path) -> None:
    text = _help(*path)
    assert "Example: " in text, f"`fulfil {' '.join(path)} --help` has no example"
    example = text.split("Example: ", 1)[1].split("\n", 1)[0]
    assert "fulfil" in example  # a command line, not prose


def test_the_commands_are_grouped_in_panels() -> None:
    top = {path[0] for path in COMMANDS if len(path) == 1}
    placed = [name for names in PANELS.values() for name in names]
    assert sorted(placed) == sorted(top), "every command in exactly one panel"
    assert {
        "allocator",
        "projector",
        "notifier",
    } == set(PANELS["Services"])
    assert {
        "backlog",
        "order",
        "inbound",
        "aging",
        "deposits",
        "reorder",
        "promise",
        "status",
    } == set(PANELS["Read models"])
    assert {"dev", "demo"} == set(PANELS["Development"])
    text = _help()
    at = [text.index(f"─ {panel} ") for panel in PANELS]
    assert at == sorted(at), "the panels in their order"
    for panel, names in PANELS.items():
        start = text.index(f"─ {panel} ")
        body = text[start : text.index("╰", start)]
        for name in names:
            assert f"│ {name} " in body, (panel, name)


WAREHOUSE = ["backlog", "order", "aging", "inbound", "deposits", "reorder", "promise"]
SKU = ["backlog", "aging", "reorder"]  # per SKU (promise takes the SKU as its argument)
JSON = [
    "backlog", "order", "inbound", "aging", "deposits", "reorder", "promise", "status",
    "trace", "replay", "tail", "publish", "rebuild", "simulate",
    "dlq list", "dlq show", "dlq redrive", "notifications", "notifications retry",
    "topics list", "topics create", "db migrate", "clock tick", "dev up",
]  # fmt: skip


@pytest.mark.parametrize("name", WAREHOUSE)
def test_warehouse_filter_is_the_same_everywhere(name) -> None:
    assert {"--warehouse", "-w"} <= _options((name,)), name


@pytest.mark.parametrize("name", SKU)
def test_sku_filter_on_the_per_sku_views(name) -> None:
    assert "--sku" in _options((name,)), name


@pytest.mark.parametrize("name", JSON)
def test_json_wherever_a_script_may_read(name) -> None:
    assert "--json" in _options(tuple(name.split())), name


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "fulfil")
def test_every_table_command_lists_its_columns_and_takes_wide(path) -> None:
    text = _help(*path) if path else ""
    if "Columns: " in text:
        assert "--wide" in _options(path), path


def _fulfil(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_comes_from_the_package_metadata() -> None:
    done = _fulfil("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fulfil {version('fulfil')}"


def test_shell_completion_can_be_shown_and_completes_commands() -> None:
    assert {"--install-completion", "--show-completion"} <= _options(())
    shown = _fulfil("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert shown.returncode == 0, shown.stderr
    assert "_FULFIL_COMPLETE" in shown.stdout and "complete " in shown.stdout
    # What the installed script asks when the user presses Tab after `fulfil ba`.
    completed = _fulfil(_FULFIL_COMPLETE="complete_bash", COMP_WORDS="fulfil ba", COMP_CWORD="1")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["backlog"]
    options = _fulfil(
        _FULFIL_COMPLETE="complete_bash", COMP_WORDS="fulfil backlog --wa", COMP_CWORD="2"
    )
    assert options.stdout.split() == ["--warehouse"]
