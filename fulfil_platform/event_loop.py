"""The event loop of a service process: a graceful stop on SIGTERM/SIGINT, and noticing
when the loop itself stalled."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (graceful stop) while inside; no-op outside the main thread."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


class StallWatch:
    """Notices when the event loop did not run for `threshold` seconds (SIGSTOP, GC, a long
    synchronous step): heartbeats did not go out either, so the group may have moved on."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.last_tick = time.monotonic()
        self.last_stall = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        tick = min(0.1, self.threshold / 4)
        while not stop.is_set():
            self.observe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)

    def observe(self) -> None:
        now = time.monotonic()
        if now - self.last_tick > self.threshold:
            self.last_stall = now
        self.last_tick = now

    def stalled_since(self, since: float) -> bool:
        """A stall ended after `since`, or the loop is stalled right now (this very step)."""
        return self.last_stall >= since or time.monotonic() - self.last_tick > self.threshold
