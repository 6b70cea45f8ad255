"""The router started by FastStream's own command line, `faststream run --factory
services.allocator.entrypoints.router_app:create_app`, as the README documents it."""

from __future__ import annotations

import orjson

from fulfil_platform import kafka
from schemas.registry import COMMANDS, ORDERS
from tests.builders.streams import mixed_stream
from tests.kafka_helpers import publish, read_topic, wait_for

APP = "services.allocator.entrypoints.router_app:create_app"


async def test_faststream_run_starts_the_router_which_routes_and_stops_with_exit_0(
    settings, env_for_subprocess, spawn
) -> None:
    await kafka.create_topics(settings)
    inputs = mixed_stream(80, seed=8)
    await publish(settings, inputs)
    await publish(settings, [b"{not json"], topic=ORDERS)
    router = spawn(
        "router", ["run", "--factory", APP], env_for_subprocess(settings), module="faststream"
    )

    async def routed() -> bool:
        assert router.running(), router.output()[-3000:]
        commands = await read_topic(settings, COMMANDS)
        dead = await read_topic(settings, ORDERS + ".dlq")
        return sum(map(len, commands.values())) == len(inputs) and sum(map(len, dead.values())) == 1

    await wait_for(routed, timeout=120, interval=0.5, what="every input routed by the router")
    assert await router.terminate() == 0, router.output()[-3000:]
    lines = [orjson.loads(line) for _, line in router.lines()]  # every line is JSON
    assert {d["service"] for d in lines} == {"allocator-router"}
    events = [d["event"] for d in lines]
    assert "FastStream app started successfully! To exit, press CTRL+C" in events
    assert "FastStream app shut down gracefully." in events
    [dead] = [d for d in lines if d["event"] == "input dead-lettered"]
    assert (dead["topic"], dead["offset"], dead["event_id"]) == (settings.topic(ORDERS), 0, None)


async def test_a_configuration_error_is_one_line_and_exit_2(
    settings, env_for_subprocess, spawn
) -> None:
    env = {**env_for_subprocess(settings), "FULFIL_PARTITIONS": "lots"}
    router = spawn("router", ["run", "--factory", APP], env, module="faststream")
    assert await router.wait_exit(timeout=60) == 2
    assert router.stderr.read_text().startswith("fulfil: invalid FULFIL_PARTITIONS")
    assert "Traceback" not in router.output()
