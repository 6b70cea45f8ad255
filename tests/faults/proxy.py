"""A loopback TCP proxy between Kafka clients and the broker that injects faults.

The broker behind it advertises the proxy's address (see `broker_behind_proxy`),
so every connection a client opens after bootstrap passes through here too.
The proxy understands just enough of the Kafka framing (4-byte size, then the
request header `api_key, api_version, correlation_id`; responses start with
`correlation_id`) to drop one chosen response *after* the broker applied the
request: the client sees a dead connection and cannot know whether its
produce landed, which is the fault that makes a non-idempotent producer
write twice.

It runs its own event loop on a thread, so a test can inject faults into
services running as subprocesses or in the test's own loop alike. Every
public method is thread-safe and returns once the fault is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fulfil import embedded

LOOPBACK = "127.0.0.1"
PRODUCE = 0  # Kafka api_key of a Produce request
FETCH = 1
OFFSET_COMMIT = 8


@dataclass(eq=False)  # identity hash: kept in a set of open connections
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    dropping: set[int] = field(default_factory=set)  # correlation ids whose response is lost

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            # abort, not close: a cut connection must not flush what is buffered
            with contextlib.suppress(Exception):
                transport.abort()


class FaultProxy:
    """`start()`, then point clients (or a broker's advertised listener) at `port`."""

    def __init__(self, upstream_port: int, *, port: int | None = None):
        self.upstream_port = upstream_port
        self.port = port or embedded.free_port()
        self.faults: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._drop_next: Counter[int] = Counter()  # api_key -> responses still to drop
        self._ended = 0  # connections that ended, by either side or by a fault

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    # ------------------------------------------------------------------ control

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self) -> int:
        """Abort every open connection (both sides); returns how many were cut."""
        self.faults["cut"] += 1
        return self._call(self._cut())

    def stall(self) -> None:
        """Stop forwarding bytes in both directions; connections stay open (a paused broker)."""
        self.faults["stall"] += 1
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again after `stall()`; also accept connections again after `refuse()`."""
        self._refusing = False
        self._call(self._set_flowing(True))

    def refuse(self) -> None:
        """New connections are closed at once and open ones cut: the broker is unreachable."""
        self.faults["refuse"] += 1
        self._refusing = True
        self._call(self._cut())

    def drop_responses(self, api_key: int = PRODUCE, count: int = 1) -> None:
        """The next `count` responses to requests of `api_key` are swallowed after the broker
        applied the request, and their connection is cut."""
        self.faults["drop_response"] += count
        self._call(self._arm(api_key, count))

    def pending_drops(self, api_key: int = PRODUCE) -> int:
        return self._call(self._pending(api_key))

    def connections(self) -> int:
        return self._call(self._count())

    def ended(self) -> int:
        """Connections ended so far: during a stall, a rise means a client gave up waiting."""
        return self._ended

    # ------------------------------------------------------------------ loop side

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, LOOPBACK, self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()

    async def _cut(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._connections.clear()
        return len(connections)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _arm(self, api_key: int, count: int) -> None:
        self._drop_next[api_key] += count

    async def _pending(self, api_key: int) -> int:
        return self._drop_next[api_key]

    async def _count(self) -> int:
        return len(self._connections)

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self._refusing:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                LOOPBACK, self.upstream_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        connection = _Connection(client_writer, upstream_writer)
        self._connections.add(connection)
        try:
            await asyncio.gather(
                self._requests(connection, client_reader),
                self._responses(connection, upstream_reader),
            )
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            connection.close()
            self._connections.discard(connection)
            self._ended += 1

    async def _frame(self, reader: asyncio.StreamReader) -> bytes:
        size = await reader.readexactly(4)
        (length,) = struct.unpack(">i", size)
        return size + await reader.readexactly(length)

    async def _requests(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        while True:
            frame = await self._frame(reader)
            await self._flowing.wait()
            if len(frame) >= 12:
                api_key, _version, correlation_id = struct.unpack(">hhi", frame[4:12])
                if self._drop_next[api_key] > 0:
                    self._drop_next[api_key] -= 1
                    connection.dropping.add(correlation_id)
            connection.upstream.write(frame)
            await connection.upstream.drain()

    async def _responses(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        while True:
            frame = await self._frame(reader)
            await self._flowing.wait()
            if len(frame) >= 8 and connection.dropping:
                (correlation_id,) = struct.unpack(">i", frame[4:8])
                if correlation_id in connection.dropping:
                    # The broker has applied the request; its answer never arrives.
                    connection.close()
                    return
            connection.client.write(frame)
            await connection.client.drain()


@dataclass
class ProxiedBroker:
    proxy: FaultProxy
    broker: embedded.BrokerHandle
    state_dir: Path

    @property
    def bootstrap(self) -> str:
        return self.proxy.address

    def restart_broker(self) -> None:
        """Kill the broker and start a fresh one behind the same proxy: everything it held
        (topics, records, committed offsets) is lost, as after broker data loss."""
        self.proxy.faults["broker_restart"] += 1
        embedded.stop_broker(self.broker)
        self.proxy.cut()
        self.broker = embedded.start_broker(
            self.state_dir, port=self.broker.port, advertised_port=self.proxy.port
        )


@contextlib.contextmanager
def broker_behind_proxy() -> Iterator[ProxiedBroker]:
    """A memory-only Tansu of its own whose advertised listener is a `FaultProxy`."""
    state_dir = Path(tempfile.mkdtemp(prefix="fulfil-tansu-proxied-"))
    broker_port = embedded.free_port()
    proxy = FaultProxy(broker_port).start()
    proxied: ProxiedBroker | None = None
    try:
        broker = embedded.start_broker(state_dir, port=broker_port, advertised_port=proxy.port)
        proxied = ProxiedBroker(proxy, broker, state_dir)
        yield proxied
    finally:
        if proxied is not None:
            embedded.stop_broker(proxied.broker)
        proxy.close()
        shutil.rmtree(state_dir, ignore_errors=True)
