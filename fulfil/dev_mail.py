"""The SMTP sink of `fulfil dev up --smtp`: every message the notifier sends, kept as a file.

`fulfil dev up --smtp` starts `python -m fulfil.dev_mail` in the background: an
aiosmtpd server on 127.0.0.1 (a free port) that accepts any message and stores
it in the Maildir `FULFIL_STATE_DIR/dev/mail` as `new/<number>.<pid>.fulfil-dev`
(written to `tmp/`, then renamed, so a reader never sees half a message; a mail
reader opens the folder as it is: `mutt -f .fulfil/dev/mail`). Numbers count up
from 1 in the order the messages arrived. `fulfil dev env` exports
`SMTP_URL=smtp://127.0.0.1:<port>` for the notifier, `fulfil dev mail` lists the
messages and shows one, `fulfil dev down` stops the sink (the messages stay until
the next fresh `fulfil dev up --smtp`).

Part of the dev harness (the `embedded` extra: aiosmtpd, psutil); nothing in the
services imports it. The sink logs no addresses: aiosmtpd's session log, which
would, is kept to errors.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from fulfil.embedded import LOOPBACK, EmbeddedError, PortInUse, free_port, wait_until

MAIL_DIR = "mail"
SINK_FILE = "smtp.json"
SINK_LOG = "smtp.log"
SUFFIX = ".fulfil-dev"


# --------------------------------------------------------------------------- the sink


class MaildirHandler:
    """aiosmtpd handler: each message's bytes into the Maildir, numbered in arrival order."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.count = max((_number(p) for p in _files(maildir)), default=0)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        data = data.replace(b"\r\n", b"\n")  # Maildir files use the local line ending
        with self.lock:
            self.count += 1
            name = f"{self.count:06d}.{os.getpid()}{SUFFIX}"
        tmp = self.maildir / "tmp" / name
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.maildir / "new" / name)
        return "250 Message accepted for delivery"


def serve(maildir: Path, port: int) -> None:
    """Run the sink in the foreground until SIGTERM or SIGINT."""
    from aiosmtpd.controller import Controller

    # aiosmtpd logs every command line (MAIL FROM, RCPT TO: addresses) at INFO.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller = Controller(MaildirHandler(maildir), hostname=LOOPBACK, port=port)
    controller.start()
    try:
        stop.wait()
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fulfil.dev_mail", description=__doc__)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.maildir, args.port)


# --------------------------------------------------------------------------- the process


@dataclass(frozen=True)
class SinkHandle:
    pid: int
    port: int
    maildir: Path

    @property
    def url(self) -> str:
        return f"smtp://{LOOPBACK}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port, "url": self.url, "maildir": str(self.maildir)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SinkHandle:
        return cls(pid=int(data["pid"]), port=int(data["port"]), maildir=Path(data["maildir"]))


def maildir_of(state_dir: Path) -> Path:
    return state_dir / MAIL_DIR


def smtp_answers(port: int, timeout: float = 2.0) -> bool:
    """True when an SMTP server on the loopback port greets with 220."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            greeting = sock.recv(512)
            sock.sendall(b"QUIT\r\n")
    except OSError:
        return False
    return greeting.startswith(b"220")


def _process(handle: SinkHandle) -> Any | None:
    """The live sink behind `handle`, or None; a reused PID is not mistaken for it."""
    import psutil

    try:
        process = psutil.Process(handle.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process if "fulfil.dev_mail" in command and str(handle.port) in command else None


def sink_is_up(handle: SinkHandle) -> bool:
    return _process(handle) is not None and smtp_answers(handle.port)


# Popen objects of sinks started by this process, so stopping one also reaps it.
_children: dict[int, subprocess.Popen[bytes]] = {}


def start_sink(state_dir: Path, *, ready_timeout: float = 20.0) -> SinkHandle:
    """Start the sink on a free loopback port in its own session; return once it greets."""
    maildir = maildir_of(state_dir.resolve())
    for attempt in range(3):
        try:
            return _start_on(state_dir.resolve(), maildir, free_port(), ready_timeout)
        except PortInUse:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_on(state_dir: Path, maildir: Path, port: int, ready_timeout: float) -> SinkHandle:
    log_path = state_dir / SINK_LOG
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fulfil.dev_mail",
                "--maildir",
                str(maildir),
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C in the terminal that ran `fulfil dev up` must not reach it.
            start_new_session=True,
        )
    _children[child.pid] = child
    handle = SinkHandle(pid=child.pid, port=port, maildir=maildir)

    def ready() -> bool:
        if child.poll() is not None:
            tail = _log_tail(log_path, log_start)
            error = PortInUse if "address already in use" in tail.lower() else EmbeddedError
            raise error(f"the SMTP sink exited during start-up ({tail or 'no output'})")
        return smtp_answers(port)

    try:
        wait_until(ready, timeout=ready_timeout, what=f"SMTP sink on {LOOPBACK}:{port}")
    except BaseException:
        stop_sink(handle)
        raise
    return handle


def stop_sink(handle: SinkHandle, *, timeout: float = 10.0) -> bool:
    """Stop exactly that sink (by PID, SIGTERM then SIGKILL). False if it was not running."""
    child = _children.pop(handle.pid, None)
    if _process(handle) is None:
        if child is not None:
            child.poll()  # reap it
        return False
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signum)
        try:
            wait_until(
                lambda: _gone(handle, child), timeout=timeout, what="SMTP sink", interval=0.05
            )
            return True
        except EmbeddedError:
            continue
    raise EmbeddedError(f"the SMTP sink (pid {handle.pid}) survived SIGKILL")


def _gone(handle: SinkHandle, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None:
        return child.poll() is not None
    return _process(handle) is None


def _log_tail(path: Path, start: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-3:])


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".smtp-lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def _recorded(state_dir: Path) -> SinkHandle | None:
    try:
        return SinkHandle.from_json(json.loads((state_dir / SINK_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sink_status(state_dir: Path) -> SinkHandle | None:
    """The recorded sink if it is alive and greets, else None."""
    recorded = _recorded(state_dir)
    return recorded if recorded is not None and sink_is_up(recorded) else None


def sink_up(state_dir: Path, *, fresh: bool) -> tuple[SinkHandle, bool]:
    """Ensure the sink runs; returns it and whether this call started it.

    `fresh` (the broker and PostgreSQL were just started anew): the messages of the
    previous runtime go, and a sink still running from it is replaced."""
    with _exclusive(state_dir):
        running = sink_status(state_dir)
        if running is not None and not fresh:
            return running, False
        recorded = _recorded(state_dir)
        if recorded is not None:
            stop_sink(recorded)
        (state_dir / SINK_FILE).unlink(missing_ok=True)
        shutil.rmtree(maildir_of(state_dir), ignore_errors=True)
        handle = start_sink(state_dir)
        try:
            tmp = state_dir / (SINK_FILE + ".tmp")
            tmp.write_text(json.dumps(handle.to_json(), indent=2))
            os.replace(tmp, state_dir / SINK_FILE)
        except BaseException:
            stop_sink(handle)
            raise
        return handle, True


def sink_down(state_dir: Path) -> SinkHandle | None:
    """Stop the recorded sink and forget it; returns it if it was running. Mail is kept."""
    if not state_dir.exists():
        return None
    with _exclusive(state_dir):
        recorded = _recorded(state_dir)
        (state_dir / SINK_FILE).unlink(missing_ok=True)
        if recorded is None:
            return None
        return recorded if stop_sink(recorded) else None


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Mail:
    number: int
    path: Path
    sender: str
    to: str
    subject: str
    date: datetime | None
    message_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "date": self.date.isoformat() if self.date else None,
            "from": self.sender,
            "to": self.to,
            "subject": self.subject,
            "message_id": self.message_id,
            "path": str(self.path),
        }


def _files(maildir: Path) -> list[Path]:
    found = [p for sub in ("new", "cur") for p in (maildir / sub).glob(f"*{SUFFIX}*")]
    return sorted(found, key=_number)


def _number(path: Path) -> int:
    head = path.name.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _date(message: EmailMessage) -> datetime | None:
    raw = message.get("Date")
    if raw is None:
        return None
    try:
        moment = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def messages(maildir: Path) -> list[Mail]:
    """Every stored message, in arrival order."""
    found = []
    for path in _files(maildir):
        message = parse(path)
        found.append(
            Mail(
                number=_number(path),
                path=path,
                sender=str(message.get("From", "")),
                to=str(message.get("To", "")),
                subject=str(message.get("Subject", "")),
                date=_date(message),
                message_id=str(message.get("Message-ID", "")),
            )
        )
    return found


def text_of(message: EmailMessage) -> str:
    """The plain-text body (what a customer without HTML sees)."""
    body = message.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""


def html_of(message: EmailMessage) -> str | None:
    body = message.get_body(preferencelist=("html",))
    return str(body.get_content()) if body is not None else None


if __name__ == "__main__":
    main()
