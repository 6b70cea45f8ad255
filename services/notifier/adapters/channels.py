"""What every delivery channel shares: the error it raises and how errors are summarised."""

from __future__ import annotations

import re
from typing import Protocol

from services.notifier.adapters.outbox import Claimed

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
MAX_ERROR = 300


class DeliveryError(Exception):
    """A send that did not succeed. `permanent`: retrying the same message cannot help."""

    def __init__(self, summary: str, *, permanent: bool = False):
        super().__init__(summary)
        self.summary = scrub(summary)
        self.permanent = permanent


def scrub(text: str) -> str:
    """An error text fit for the outbox and logs: servers echo recipients in their replies."""
    return _EMAIL.sub("[address]", " ".join(text.split()))[:MAX_ERROR]


class Channel(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, row: Claimed) -> None:
        """Deliver `row` or raise DeliveryError."""

    async def close(self) -> None: ...
