"""A running projector serves its counters, lag and readiness."""

from __future__ import annotations

import subprocess
import sys

from fulfil import embedded
from tests.kafka_helpers import wait_for
from tests.metrics_helpers import aget, samples, scrape, stop_gracefully
from tests.services.projector.helpers import publish_scenario, scenario, topic_ends, wait_caught_up


async def test_a_running_projector_serves_counters_lag_and_readiness(
    pg_settings, env_for_subprocess
) -> None:
    inputs, outputs = scenario(300, seed=11)
    await publish_scenario(pg_settings, inputs, outputs)
    records = sum((await topic_ends(pg_settings)).values())
    port = embedded.free_port()
    env = {
        **env_for_subprocess(pg_settings),
        "FULFIL_METRICS_PORT": str(port),
        "FULFIL_METRICS_HOST": "127.0.0.1",
        "FULFIL_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "fulfil", "projector"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def alive() -> None:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode()[-2000:])

        await wait_caught_up(pg_settings, check=alive)

        async def settled() -> str | None:
            text = await scrape(port)
            if text is None:
                return None
            consumed = sum(samples(text, "fulfil_events_consumed_total", service="projector"))
            lag = samples(text, "fulfil_consumer_lag", service="projector")
            return text if consumed == records and lag and sum(lag) == 0 else None

        text = await wait_for(settled, timeout=60, what="every record counted and no lag")
        assert sum(samples(text, "fulfil_batch_duration_seconds_count", service="projector")) > 0
        assert samples(text, "fulfil_last_progress_timestamp_seconds", service="projector")[0] > 0
        assert (await aget(port, "/healthz"))[0] == 200
        assert (await aget(port, "/readyz"))[0] == 200
    finally:
        code = await stop_gracefully(process)
    assert code == 0
