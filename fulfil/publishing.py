"""Publishing envelopes from a JSONL file to the topics of their types."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fulfil_platform.config import Settings
from fulfil_platform.kafka import producer
from schemas.registry import ContractError, parse_event, spec_for


@dataclass
class PublishReport:
    published: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)


async def publish_file(settings: Settings, path: Path) -> PublishReport:
    report = PublishReport()
    counts: Counter[str] = Counter()
    prod = producer(settings)
    await prod.start()
    try:
        pending = []
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                raw = line.strip()
                if not raw:
                    continue
                try:
                    event = parse_event(raw)
                except ContractError as exc:
                    report.bad.append((line_no, f"{exc.kind}: {exc.reason}"))
                    continue
                spec = spec_for(event)
                topic = settings.topic(spec.topic)
                # The line is published as given: the contract is validated,
                # not rewritten, so unknown fields reach tolerant readers.
                pending.append(await prod.send(topic, raw, key=spec.key(event)))
                counts[topic] += 1
        for delivery in pending:
            await delivery
    finally:
        await prod.stop()
    report.published = sum(counts.values())
    report.by_topic = dict(counts)
    return report
