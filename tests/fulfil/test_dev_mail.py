"""`fulfil dev up --smtp`, `fulfil dev env` and `fulfil dev mail`, as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import psutil
import pytest

from fulfil import dev_mail, embedded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev_env() -> Iterator[dict[str, str]]:
    """Environment for `fulfil dev` with its own state dir; stops what it started afterwards."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SMTP_URL")
    }
    # Outside pytest's tmp tree (see tests/test_readme_walkthrough.py, `walk`).
    state = Path(tempfile.mkdtemp(prefix="fulfil-devmail-"))
    env["FULFIL_STATE_DIR"] = str(state)
    state_dir = embedded.dev_state_dir(state)

    def stop() -> None:
        try:
            dev_mail.sink_down(state_dir)
            embedded.dev_down(state_dir)
        finally:
            shutil.rmtree(state, ignore_errors=True)

    stopper = embedded.stop_at_exit(stop)
    try:
        yield env
    finally:
        stopper()


def fulfil(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "fulfil", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def exported(env: dict[str, str]) -> dict[str, str]:
    lines = fulfil(env, "dev", "env").stdout.splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def send(port: int, to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "orders@shop.example"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Nov 2026 08:00:00 +0000"
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.send_message(message)


def is_gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_the_sink_keeps_every_message_and_dev_mail_shows_them(dev_env: dict[str, str]) -> None:
    up = json.loads(fulfil(dev_env, "dev", "up", "--smtp", "--json").stdout)
    sink = up["smtp"]
    assert sink["started"] is True and sink["url"] == f"smtp://127.0.0.1:{sink['port']}"
    assert exported(dev_env)["SMTP_URL"] == sink["url"]

    assert fulfil(dev_env, "dev", "mail").stdout.startswith("no messages yet")
    send(sink["port"], "first@example.org", "Your order o-1 is on backorder", "Hello,\nwait.")
    send(sink["port"], "second@example.org", "Ihre Bestellung o-2 ist unterwegs", "Grüße")

    listed = json.loads(fulfil(dev_env, "dev", "mail", "--json").stdout)
    assert [(m["number"], m["to"], m["subject"]) for m in listed] == [
        (1, "first@example.org", "Your order o-1 is on backorder"),
        (2, "second@example.org", "Ihre Bestellung o-2 ist unterwegs"),
    ]
    assert listed[0]["date"] == "2026-11-02T08:00:00+00:00"
    table = fulfil(dev_env, "dev", "mail").stdout.splitlines()
    assert table[0].split() == ["#", "date", "(UTC)", "to", "subject"]
    assert table[2].split() == [
        "2", "2026-11-02", "08:00:00", "second@example.org", "Ihre", "Bestellung", "o-2", "ist",
        "unterwegs",
    ]  # fmt: skip
    shown = fulfil(dev_env, "dev", "mail", "2").stdout
    assert "To:      second@example.org" in shown and shown.rstrip().endswith("Grüße")
    one = json.loads(fulfil(dev_env, "dev", "mail", "1", "--json").stdout)
    assert one["text"] == "Hello,\nwait.\n" and one["html"] is None
    missing = fulfil(dev_env, "dev", "mail", "3", check=False)
    assert missing.returncode == 1 and "no message 3" in missing.stderr

    # Files in a Maildir: any mail reader opens them.
    maildir = Path(sink["maildir"])
    assert sorted(p.name.split(".")[0] for p in (maildir / "new").iterdir()) == ["000001", "000002"]
    assert not list((maildir / "tmp").iterdir())
    # No addresses in the sink's own log.
    log = Path(up["state_dir"]) / dev_mail.SINK_LOG
    assert "example.org" not in log.read_text()

    again = json.loads(fulfil(dev_env, "dev", "up", "--smtp", "--json").stdout)
    assert again["smtp"]["started"] is False and again["smtp"]["pid"] == sink["pid"]

    down = fulfil(dev_env, "dev", "down").stdout
    assert f"stopped the SMTP sink (pid {sink['pid']})" in down
    assert is_gone(sink["pid"])
    # The mail outlives the sink, until the next fresh start.
    assert len(json.loads(fulfil(dev_env, "dev", "mail", "--json").stdout)) == 2


def test_without_smtp_env_exports_no_smtp_url_and_a_dead_sink_is_replaced(
    dev_env: dict[str, str],
) -> None:
    fulfil(dev_env, "dev", "up")
    assert "SMTP_URL" not in exported(dev_env)
    first = json.loads(fulfil(dev_env, "dev", "up", "--smtp", "--json").stdout)["smtp"]
    assert first["started"] is True  # added to the running runtime
    os.kill(first["pid"], signal.SIGKILL)
    embedded.wait_until(lambda: is_gone(first["pid"]), timeout=10, what="killed sink")
    assert "SMTP_URL" not in exported(dev_env)

    second = json.loads(fulfil(dev_env, "dev", "up", "--smtp", "--json").stdout)["smtp"]
    assert second["started"] is True and second["pid"] != first["pid"]
    assert exported(dev_env)["SMTP_URL"] == second["url"]
    fulfil(dev_env, "dev", "down")
    assert is_gone(second["pid"])
