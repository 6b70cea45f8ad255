"""Dead-letter writing: a dead letter is the original bytes plus headers that say why and where from.

Every service that dead-letters a record attaches `dead_letter_headers(...)`;
the operator tool that lists, shows and redrives them (fulfil/dlq_tool.py)
reads the same header names back.
"""

from __future__ import annotations

import base64
from typing import Any

# `<dlq topic>.redriven` records which dead letters were re-published, so a redrive happens once.
REDRIVEN_SUFFIX = ".redriven"
H_REASON = "fulfil-dlq-reason"
H_KIND = "fulfil-dlq-kind"
H_TOPIC = "fulfil-dlq-source-topic"
H_PARTITION = "fulfil-dlq-source-partition"
H_OFFSET = "fulfil-dlq-source-offset"
H_STAGE = "fulfil-dlq-stage"
# A source header whose value is not UTF-8 is kept as `fulfil-dlq-b64.<name>`: base64 of
# its bytes. Every header of a dead letter is then text, so any reader (FastStream's
# parser decodes them all) can open it; a redrive leaves it out, like every fulfil-dlq-*.
H_B64_PREFIX = "fulfil-dlq-b64."

MAX_REASON_BYTES = 2_000

# Behind the router's `<topic>.dlq`, the projector and the notifier quarantine what they
# cannot apply to `<consumer group>.dlq` (before the topic prefix). The services name
# them from their group ids; tests/fulfil/test_quarantine_cli.py keeps the two in step.
QUARANTINE_TOPICS = ("fulfil-projector.dlq", "fulfil-notifier.dlq")


def dead_letter_headers(
    *,
    reason: str,
    kind: str,
    topic: str,
    partition: int,
    offset: int,
    stage: str,
    original: Any = (),
) -> list[tuple[str, bytes]]:
    # Cut at a character boundary: a split multi-byte character would not be UTF-8.
    reason_bytes = (
        reason.encode("utf-8", "replace")[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode()
    )
    ours = [
        (H_REASON, reason_bytes),
        (H_KIND, kind.encode()),
        (H_TOPIC, topic.encode()),
        (H_PARTITION, str(partition).encode()),
        (H_OFFSET, str(offset).encode()),
        (H_STAGE, stage.encode()),
    ]
    # Keep the producer's own headers, so a redrive can restore them.
    return ours + [
        _text_header(k, v)
        for k, v in original or ()
        if not k.startswith("fulfil-dlq-") and v is not None
    ]


def _text_header(name: str, value: bytes) -> tuple[str, bytes]:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return H_B64_PREFIX + name, base64.b64encode(value)
    return name, value
