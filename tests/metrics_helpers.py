"""Scraping a service's /metrics, /healthz and /readyz in tests."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import urllib.error
import urllib.request


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def aget(port: int, path: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(get, port, path)


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of metric `name` whose labels include `labels`."""
    values = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(match.group(2)))
    return values


async def scrape(port: int) -> str | None:
    """The /metrics text, or None while nothing listens yet."""
    try:
        status, body = await aget(port, "/metrics")
    except OSError:
        return None
    return body.decode() if status == 200 else None


async def stop_gracefully(process: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM a service and wait for its exit code; SIGKILL it if it does not stop."""
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(process.wait, timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
