"""The Kafka headers of an allocations.v1 record: which command produced it.

Part of the contract (DESIGN.md §3: "Kafka headers name the command partition
and offset"). The allocator's core writes them on every output; the core's
recovery, the projector and the operator tools read them back. An output is
identified by its position: (command offset, output index).
"""

from __future__ import annotations

from typing import Any

from schemas.contract import Envelope

H_COMMAND_PARTITION = "fulfil-command-partition"
H_COMMAND_OFFSET = "fulfil-command-offset"
H_OUTPUT_INDEX = "fulfil-output-index"

Position = tuple[int, int]  # (command offset, output index)


def output_headers(
    partition: int, offset: int, index: int, event: Envelope
) -> list[tuple[str, bytes]]:
    return [
        (H_COMMAND_PARTITION, str(partition).encode()),
        (H_COMMAND_OFFSET, str(offset).encode()),
        (H_OUTPUT_INDEX, str(index).encode()),
        ("fulfil-event-type", event.type.encode()),
    ]


def position_of(headers: Any) -> Position | None:
    # Called for every output record by recovery and replay: no dict per record.
    offset = index = None
    for key, value in headers or ():
        if key == H_COMMAND_OFFSET:
            offset = value
        elif key == H_OUTPUT_INDEX:
            index = value
    if offset is None or index is None:
        return None
    try:
        return int(offset), int(index)
    except ValueError:
        return None
