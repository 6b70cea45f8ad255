"""`fulfil replay`: re-fold the command log in-process and, with --verify,
compare every regenerated output with what is on `allocations.v1`.

Nothing is written to the broker. Both logs are read as streams, side by
side per partition: the core writes a partition's outputs in command order,
so the n-th regenerated output must be the n-th record on the output partition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from fulfil_platform import kafka
from fulfil_platform.config import Settings
from fulfil_platform.topic_reader import read_partition
from schemas.allocation_headers import position_of
from schemas.registry import ALLOCATIONS, COMMANDS
from services.allocator.domain import new_state
from services.allocator.service_layer.partition import PartitionFold, Snapshot


@dataclass
class Divergence:
    partition: int
    command_offset: int
    output_index: int
    output_offset: int | None
    expected: bytes | None
    actual: bytes | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "command_offset": self.command_offset,
            "output_index": self.output_index,
            "output_offset": self.output_offset,
            "problem": self.problem,
            "expected": self.expected.decode("utf-8", "replace")
            if self.expected is not None
            else None,
            "actual": self.actual.decode("utf-8", "replace") if self.actual is not None else None,
        }


@dataclass
class PartitionReport:
    partition: int
    commands: int = 0
    outputs: int = 0
    verified: int = 0
    divergence: Divergence | None = None


@dataclass
class ReplayReport:
    partitions: list[PartitionReport] = field(default_factory=list)

    @property
    def divergence(self) -> Divergence | None:
        return next((p.divergence for p in self.partitions if p.divergence), None)


class _Stream:
    """One partition read forward in large fetches; `next()` hands out one record."""

    def __init__(self, consumer: Any, tp: TopicPartition):
        self.chunks = read_partition(consumer, tp, 0, timeout_ms=100, max_records=50_000)
        self.buffer: deque[Any] = deque()

    async def chunk(self) -> list[Any]:
        """The next fetched records, [] at the end of the log."""
        return await anext(self.chunks, [])

    async def next(self) -> Any | None:
        if not self.buffer:
            self.buffer.extend(await self.chunk())
        return self.buffer.popleft() if self.buffer else None


@dataclass
class _Run:
    """What the partitions of one replay share: the readers, the progress count."""

    settings: Settings
    commands_reader: Any
    outputs_reader: Any
    from_offset: int
    verify: bool
    progress: Callable[[int, int], None] | None
    ends: dict[int, int] = field(default_factory=dict)
    done: int = 0

    def report(self) -> None:
        if self.progress:
            self.progress(self.done, max(sum(self.ends.values()), self.done))


async def replay(
    settings: Settings,
    *,
    partitions: list[int] | None = None,
    from_offset: int = 0,
    verify: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Fold each command partition from offset 0; compare outputs of commands >= from_offset."""
    report = ReplayReport()
    wanted = partitions if partitions is not None else list(range(settings.fulfil_partitions))
    # Large fetches: a replay reads whole partitions, round trips dominate otherwise.
    big = {
        "max_partition_fetch_bytes": 32 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "fetch_max_wait_ms": 5,
    }
    commands_reader = kafka.consumer(settings, group_id=None, **big)
    outputs_reader = kafka.consumer(settings, group_id=None, **big)
    await commands_reader.start()
    await outputs_reader.start()
    try:
        # Log ends come from fetch high watermarks as the partitions are read
        # (Tansu's ListOffsets is unreliable); the progress total grows with them.
        run = _Run(settings, commands_reader, outputs_reader, from_offset, verify, progress)
        for p in wanted:
            report.partitions.append(await _replay_partition(run, p))
    finally:
        await commands_reader.stop()
        await outputs_reader.stop()
    return report


async def _replay_partition(run: _Run, p: int) -> PartitionReport:
    part = PartitionReport(p)
    settings = run.settings
    state = new_state(
        grace_days=settings.fulfil_overdue_grace_days, consent_rule=settings.consent_rule
    )
    fold = PartitionFold(p, Snapshot(state))
    outputs = (
        _Stream(run.outputs_reader, TopicPartition(run.settings.topic(ALLOCATIONS), p))
        if run.verify
        else None
    )
    commands_tp = TopicPartition(run.settings.topic(COMMANDS), p)
    commands = _Stream(run.commands_reader, commands_tp)
    while part.divergence is None and (chunk := await commands.chunk()):
        run.ends[p] = run.commands_reader.highwater(commands_tp) or 0
        for command in chunk:
            emissions, _ = fold.apply(command.offset, command.value)
            part.commands += 1
            part.outputs += len(emissions)
            run.done += 1
            if outputs is not None:
                part.divergence = await _compare(part, command, emissions, outputs, run.from_offset)
            if part.divergence:
                break
        run.report()
    if outputs is not None and part.divergence is None:
        part.divergence = _extra(p, await outputs.next())
    run.report()
    return part


async def _compare(
    part: PartitionReport, command: Any, emissions: list[Any], outputs: _Stream, from_offset: int
) -> Divergence | None:
    """The n-th regenerated output against the n-th record of the output partition."""
    p = part.partition
    for emission in emissions:
        # Most outputs are already fetched: skip the coroutine for those.
        actual = outputs.buffer.popleft() if outputs.buffer else await outputs.next()
        if command.offset < from_offset:
            continue
        if actual is None:
            return Divergence(
                p,
                command.offset,
                emission.index,
                None,
                emission.value,
                None,
                "output missing from allocations",
            )
        if actual.value != emission.value or position_of(actual.headers) != (
            command.offset,
            emission.index,
        ):
            return Divergence(
                p,
                command.offset,
                emission.index,
                actual.offset,
                emission.value,
                actual.value,
                "output differs from the re-folded one",
            )
        part.verified += 1
    return None


def _extra(p: int, extra: Any | None) -> Divergence | None:
    """An output left over once every command was folded."""
    if extra is None:
        return None
    position = position_of(extra.headers) or (-1, -1)
    return Divergence(
        p,
        position[0],
        position[1],
        extra.offset,
        None,
        extra.value,
        "output on allocations that the command log does not produce",
    )
