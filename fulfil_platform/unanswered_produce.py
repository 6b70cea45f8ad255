"""A producer that never resends a batch the broker may already have written.

Without the idempotent producer (the embedded broker cannot do it), aiokafka
resends a batch whose request went out but got no answer (connection closed,
request timed out). If the broker had applied it, every record is on the log
twice. For the allocator core that is avoidable: it can always find out what
landed by reading its output partition's tail. So its producer fails such a
batch instead, the flush raises, and the core rebuilds the partition from its
snapshot and the tail, writing only what is missing.

Errors the broker *answered* with (not leader, not enough replicas, …) mean it
did not write the batch: those are still retried as usual.

This reaches into aiokafka's sender (`aiokafka.producer.sender`), which has no
retries setting; `tests/services/allocator/test_lost_response.py` fails if an
aiokafka upgrade changes what is patched here.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError
from aiokafka.producer.sender import SendProduceReqHandler

# Outcomes the client cannot know: the request may have been applied.
UNKNOWN_OUTCOME = (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError)


class _FailUnanswered(SendProduceReqHandler):  # type: ignore[misc]
    def _can_retry(self, error: Any, batch: Any) -> bool:
        if isinstance(error, UNKNOWN_OUTCOME):
            return False
        return bool(super()._can_retry(error, batch))


def fail_unanswered_produces(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """Make `producer` fail, not resend, a batch whose produce request got no answer."""
    sender = producer._sender

    async def send_produce_req(node_id: int, batches: dict[Any, Any]) -> None:
        # Mirrors Sender._send_produce_req with the handler swapped.
        handler = _FailUnanswered(sender, batches)
        await handler.do(node_id)
        sender._in_flight.remove(node_id)
        for tp in batches:
            sender._muted_partitions.remove(tp)

    sender._send_produce_req = send_produce_req
    return producer
