"""`faststream docs serve schemas/asyncapi.json`, as the README documents it, serves the document."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request

from fulfil import embedded
from tests.kafka_helpers import wait_for


def _get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.read().decode() if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening yet


async def test_faststream_docs_serve_shows_the_committed_document(spawn) -> None:
    port = embedded.free_port()
    args = ["docs", "serve", "schemas/asyncapi.json", "--host", "127.0.0.1", "--port", str(port)]
    server = spawn("docs", args, dict(os.environ), module="faststream")

    async def served() -> str | None:
        assert server.running(), server.output()[-3000:]
        return await asyncio.to_thread(_get, port)

    page = await wait_for(served, timeout=60, what="the AsyncAPI page")
    assert "fulfil events" in page and "allocations.v1" in page
