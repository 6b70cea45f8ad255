"""From a notice to the stored message of one channel (the outbox renderer)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from services.notifier.adapters.outbox import Rendered
from services.notifier.domain.decide import message_id
from services.notifier.domain.model import EmailContent, Notice
from services.notifier.domain.render import render_email, render_webhook

Renderer = Callable[[Notice, str], Rendered]


@lru_cache(maxsize=256)
def _email(notice: Notice) -> EmailContent:
    # Both channels of one notice render the same text: render it once.
    return render_email(notice)


def renderer(message_id_domain: str = "fulfil") -> Renderer:
    def render(notice: Notice, channel: str) -> Rendered:
        email = _email(notice)
        mid = message_id(notice.source_id, channel, message_id_domain)
        if channel == "email":
            return Rendered(mid, notice.customer.email, email.subject, email.text, email.html, None)
        return Rendered(
            mid, None, email.subject, None, None, render_webhook(notice, email).decode()
        )

    return render
