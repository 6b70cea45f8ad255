"""One command partition's fold plus what it takes to recover it exactly once.

The core consumes a single ordered log per partition and folds it with the
pure `decide`. Outputs of command partition p go to allocations partition p,
each tagged with (command offset, output index). After a crash the fold is
rebuilt from a snapshot and the commands after it are folded again; outputs
at or before the last tag already on the output partition are suppressed, so
none is lost and none is written twice - without broker transactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.allocation_headers import Position
from schemas.contract import OutputEvent
from schemas.decode import read_command
from schemas.registry import ContractError, encode
from services.allocator.domain import decide, new_state

NOTHING_WRITTEN: Position = (-1, -1)
SNAPSHOT_FORMAT = 1  # bump when the state's shape changes: old snapshots are then ignored


@dataclass(slots=True)
class Snapshot:
    """What a restart needs: the fold's state after `applied_offset` and where
    the outputs of later commands start on the output partition (plus what
    identifies the log it was taken from)."""

    state: Any
    applied_offset: int = -1
    output_offset: int = 0
    format: int = SNAPSHOT_FORMAT
    # Which log the snapshot belongs to: the broker's cluster id and a digest of the
    # command at `applied_offset`. Recovery refuses a log that does not match them.
    cluster_id: str | None = None
    applied_digest: str | None = None


@dataclass(slots=True)
class Emission:
    command_offset: int
    index: int
    event: OutputEvent
    value: bytes
    key: bytes


@dataclass
class PartitionFold:
    partition: int
    snapshot: Snapshot = field(default_factory=lambda: Snapshot(new_state()))
    written_upto: Position = NOTHING_WRITTEN
    commands_since_snapshot: int = 0

    @property
    def applied_offset(self) -> int:
        return self.snapshot.applied_offset

    def apply(self, offset: int, raw: bytes) -> tuple[list[Emission], ContractError | None]:
        """Fold one command; returns the outputs still to be written.

        The router validated every command, so the fold trusts the log: it reads
        a command cheaply (`read_command`: decoded into the contract's struct, the
        contract's pure rules not run again) and folds the struct as it is. A
        record that does not even decode is reported, not folded: only something
        writing to the command topic directly puts one there, and it must not
        stop the partition.
        """
        if offset <= self.snapshot.applied_offset:
            return [], None
        self.snapshot.applied_offset = offset
        self.commands_since_snapshot += 1
        try:
            command = read_command(raw)
        except ContractError as exc:
            return [], exc
        self.snapshot.state, outputs = decide(self.snapshot.state, command)
        emissions = []
        for index, event in enumerate(outputs):
            if (offset, index) <= self.written_upto:
                continue  # written before a crash: the fold is deterministic, so it is this very event
            emissions.append(
                Emission(offset, index, event, encode(event), event.data.warehouse_id.encode())
            )
        return emissions, None
