"""DESIGN §5: SQL only with parameters. ruff's S608 flags SQL built from strings
(f-strings, %, +, .format); this runs it over the whole tree in `make test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"


def _s608(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(RUFF),
            "check",
            "--no-cache",
            "--select",
            "S608",
            "--output-format",
            "concise",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_sql_is_built_from_strings() -> None:
    result = _s608("fulfil", "fulfil_platform", "services", "schemas", "tests")
    assert result.returncode == 0, result.stdout


def test_the_check_catches_sql_built_with_an_f_string(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "async def find(conn, order_id):\n"
        "    return await conn.fetch(f\"SELECT * FROM orders WHERE order_id = '{order_id}'\")\n"
    )
    result = _s608(bad)
    assert result.returncode == 1 and "S608" in result.stdout
