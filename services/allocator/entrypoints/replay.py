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

from fulfil import kafka
from fulfil.config import Settings
from schemas.registry import ALLOCATIONS, COMMANDS
from services.allocator.service_layer.partition import PartitionFold, position_of


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


class _Chunks:
    """Reads a partition forward in large fetches; `next()` hands out one record."""

    def __init__(self, consumer: Any, tp: TopicPartition, end: int | None = None):
        self.consumer, self.tp, self.end = consumer, tp, end
        self.buffer: deque[Any] = deque()
        self.position = 0
        self.exhausted = False
        self.started = False

    async def chunk(self) -> list[Any]:
        """The next fetched records, [] at the end of the log (or of `end`)."""
        if not self.started:  # each reader follows one partition at a time: assign once
            self.consumer.assign([self.tp])
            self.consumer.seek(self.tp, self.position)
            self.started = True
        while True:
            if self.end is not None and self.position >= self.end:
                return []
            highwater = self.consumer.highwater(self.tp)
            if highwater is not None and self.position >= highwater:
                return []  # known end of log: do not wait for a fetch that brings nothing
            batch = await self.consumer.getmany(self.tp, timeout_ms=100, max_records=50_000)
            records = [r for r in batch.get(self.tp, ()) if self.end is None or r.offset < self.end]
            if records:
                self.position = records[-1].offset + 1
                return records

    async def next(self) -> Any | None:
        if not self.buffer and not self.exhausted:
            self.buffer.extend(await self.chunk())
            self.exhausted = not self.buffer
        return self.buffer.popleft() if self.buffer else None


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
    big = {"max_partition_fetch_bytes": 32 * 1024 * 1024, "fetch_max_bytes": 64 * 1024 * 1024, "fetch_max_wait_ms": 5}
    commands_reader = kafka.consumer(settings, group_id=None, **big)
    outputs_reader = kafka.consumer(settings, group_id=None, **big)
    await commands_reader.start()
    await outputs_reader.start()
    try:
        # Log ends come from fetch high watermarks as the partitions are read
        # (Tansu's ListOffsets is unreliable); the progress total grows with them.
        ends: dict[int, int] = {}
        done = 0
        for p in wanted:
            part = PartitionReport(p)
            report.partitions.append(part)
            fold = PartitionFold(p)
            outputs = (
                _Chunks(outputs_reader, TopicPartition(settings.topic(ALLOCATIONS), p))
                if verify
                else None
            )
            commands_tp = TopicPartition(settings.topic(COMMANDS), p)
            commands = _Chunks(commands_reader, commands_tp)
            while part.divergence is None and (chunk := await commands.chunk()):
                ends[p] = commands_reader.highwater(commands_tp) or 0
                for command in chunk:
                    emissions, _ = fold.apply(command.offset, command.value)
                    part.commands += 1
                    part.outputs += len(emissions)
                    done += 1
                    if outputs is None:
                        continue
                    for emission in emissions:
                        # Most outputs are already fetched: skip the coroutine for those.
                        actual = outputs.buffer.popleft() if outputs.buffer else await outputs.next()
                        if command.offset < from_offset:
                            continue
                        if actual is None:
                            part.divergence = Divergence(
                                p,
                                command.offset,
                                emission.index,
                                None,
                                emission.value,
                                None,
                                "output missing from allocations",
                            )
                            break
                        if actual.value != emission.value or position_of(actual.headers) != (
                            command.offset,
                            emission.index,
                        ):
                            part.divergence = Divergence(
                                p,
                                command.offset,
                                emission.index,
                                actual.offset,
                                emission.value,
                                actual.value,
                                "output differs from the re-folded one",
                            )
                            break
                        part.verified += 1
                    if part.divergence:
                        break
                if progress:
                    progress(done, max(sum(ends.values()), done))
            if outputs is not None and part.divergence is None:
                extra = await outputs.next()
                if extra is not None:
                    position = position_of(extra.headers) or (-1, -1)
                    part.divergence = Divergence(
                        p,
                        position[0],
                        position[1],
                        extra.offset,
                        None,
                        extra.value,
                        "output on allocations that the command log does not produce",
                    )
            if progress:
                progress(done, max(sum(ends.values()), done))
    finally:
        await commands_reader.stop()
        await outputs_reader.stop()
    return report
