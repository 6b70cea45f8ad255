"""Dead letters: the original bytes plus headers that say why and where from."""

from __future__ import annotations

from typing import Any

# `<dlq topic>.redriven` records which dead letters were re-published, so a redrive happens once.
REDRIVEN_SUFFIX = ".redriven"
H_REASON = "fulfil-dlq-reason"
H_KIND = "fulfil-dlq-kind"
H_TOPIC = "fulfil-dlq-source-topic"
H_PARTITION = "fulfil-dlq-source-partition"
H_OFFSET = "fulfil-dlq-source-offset"
H_STAGE = "fulfil-dlq-stage"

MAX_REASON_BYTES = 2_000


def dead_letter_headers(
    *, reason: str, kind: str, topic: str, partition: int, offset: int, stage: str, original: Any = ()
) -> list[tuple[str, bytes]]:
    ours = [
        (H_REASON, reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]),
        (H_KIND, kind.encode()),
        (H_TOPIC, topic.encode()),
        (H_PARTITION, str(partition).encode()),
        (H_OFFSET, str(offset).encode()),
        (H_STAGE, stage.encode()),
    ]
    # Keep the producer's own headers, so a redrive can restore them.
    return ours + [(k, v) for k, v in original or () if not k.startswith("fulfil-dlq-") and v is not None]
