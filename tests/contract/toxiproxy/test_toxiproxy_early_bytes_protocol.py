"""Reads the proxy did not ask for, at the protocol level, on any Python (CPython gh-103607).

On Python 3.11.0–3.11.3 a `pause_reading()` made inside `connection_made()` is ignored: the
loop starts reading the socket anyway, so bytes a client sends on connect reach the proxy
before the upstream is dialled. `Python3112Transport` reproduces that transport's flow control
exactly (a `paused` flag, and a reader that is switched on after `connection_made` returns,
whatever the protocol asked), with the kernel's receive buffer as `inbox`. The tests drive the
real `Connection`, `Endpoint` and `Link` with it and check that no byte is lost or reordered,
and that the pause still takes hold, so a client cannot push unbounded data during the dial.
The same scenario through a real Python 3.11.2 process is in `test_toxiproxy_early_bytes.py`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from microlab.chaosproxy.connection import Connection, Endpoint
from microlab.chaosproxy.gojson import Float32
from microlab.chaosproxy.link import CHUNK_SIZE, Chunk, Link
from microlab.chaosproxy.toxics import Latency, Noop, Slicer, Toxic

ONE_READ = 2 * CHUNK_SIZE  # the endpoint's read buffer: what one read can hand over


class Python3112Transport(asyncio.Transport):
    """A socket transport with the reading rules of asyncio on Python 3.11.0–3.11.3.

    `open()` is what the loop does on accept or connect: it calls `connection_made`, then
    turns the reader on even if the protocol paused inside it (the bug). Afterwards
    `pause_reading`/`resume_reading` act only when the `paused` flag changes, as there. Bytes
    from the peer wait in `inbox` (the kernel) and are read, one buffer per loop turn, only
    while the reader is on; so is an end of stream, again each time the reader comes back on.
    """

    def __init__(self, protocol: asyncio.BufferedProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.paused = False
        self.reader_on = False
        self.closing = False
        self.inbox = bytearray()
        self.at_eof = False  # the peer has ended its stream (sticky, as in the kernel)
        self.delivered = 0  # bytes handed to the protocol so far
        self.written = bytearray()
        self._pump_scheduled = False

    # The loop's side
    def open(self) -> None:
        self.protocol.connection_made(self)
        self.reader_on = True  # gh-103607: _add_reader runs after connection_made, paused or not
        self._schedule_pump()

    def arrive(self, data: bytes, eof: bool = False) -> None:
        """The peer sends `data` (then ends its stream, with `eof`)."""
        self.inbox += data
        self.at_eof = self.at_eof or eof
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self.reader_on or self.closing:
            return
        if self.inbox:
            buffer = self.protocol.get_buffer(-1)
            size = min(len(buffer), len(self.inbox))
            buffer[:size] = self.inbox[:size]
            del self.inbox[:size]
            self.delivered += size
            self.protocol.buffer_updated(size)
            self._schedule_pump()
        elif self.at_eof:
            if self.protocol.eof_received():
                self.reader_on = False  # asyncio removes the reader but leaves `paused` alone
            else:
                self.close()

    # The protocol's side
    def is_reading(self) -> bool:
        return not self.paused and not self.closing

    def pause_reading(self) -> None:
        if self.closing or self.paused:
            return
        self.paused = True
        self.reader_on = False

    def resume_reading(self) -> None:
        if self.closing or not self.paused:
            return
        self.paused = False
        self.reader_on = True
        self._schedule_pump()

    def write(self, data: Any) -> None:
        if not self.closing:
            self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no real socket: the endpoint skips TCP_NODELAY


def payload_of(size: int) -> bytes:
    """Bytes whose order is visible: a running counter, so a lost or swapped piece shows."""
    return b"".join(n.to_bytes(4, "big") for n in range(size // 4 + 1))[:size]


def toxic(cls: type[Toxic], stream: str, **attributes: int) -> Toxic:
    return cls(f"{cls.type_name}_{stream}", stream, Float32(1.0), attributes)


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def first_read(client: Python3112Transport, connection: Connection) -> None:
    """Run the loop turn by turn up to the first read, and check the dial had not finished."""
    for _ in range(100):
        if client.delivered:
            break
        await asyncio.sleep(0)
    assert client.delivered and not connection.links, "no read came before the upstream answered"


async def echo_upstream() -> tuple[asyncio.Server, list[bytes], asyncio.Event]:
    """A loopback echo server on this loop: (server, what it read in total, set at its EOF)."""
    received = [b""]
    ended = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received[0] += data
            writer.write(data)
            await writer.drain()
        ended.set()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(echo, "127.0.0.1", 0), received, ended


async def tear_down(connection: Connection, server: asyncio.Server, ended: asyncio.Event) -> None:
    connection.close()
    async with asyncio.timeout(5):
        await ended.wait()  # the upstream has seen the proxy hang up
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)  # the closed transports' connection_lost callbacks


CHAINS = {
    "no toxics": {"upstream": [], "downstream": []},
    "latency upstream": {"upstream": [toxic(Latency, "upstream", latency=5)], "downstream": []},
    "noop up, slicer down": {
        "upstream": [toxic(Noop, "upstream")],
        "downstream": [toxic(Slicer, "downstream", average_size=1000, size_variation=100)],
    },
}


@pytest.mark.parametrize("chain", CHAINS.values(), ids=CHAINS.keys())
@pytest.mark.parametrize("size", [1, 4096, 3 * CHUNK_SIZE + 7, 300_000])
def test_bytes_sent_on_connect_are_relayed_when_the_pause_is_ignored(chain, size) -> None:
    payload = payload_of(size)

    async def scenario() -> None:
        server, received, ended = await echo_upstream()
        port = server.sockets[0].getsockname()[1]
        connection = Connection(f"127.0.0.1:{port}", chain, random.Random(1), lambda _: None)
        client = Python3112Transport(connection.client)
        client.open()  # connection_made: the dial to the upstream starts
        client.arrive(payload)  # sent on connect
        await first_read(client, connection)
        try:
            await wait_until(lambda: len(client.written) >= size)
        except TimeoutError:
            pass
        finally:
            await tear_down(connection, server, ended)
        assert received[0] == payload, f"upstream got {len(received[0])} of {size} bytes"
        assert bytes(client.written) == payload, f"client got {len(client.written)} of {size}"

    asyncio.run(scenario())


def test_bytes_and_close_sent_before_the_upstream_answers_both_arrive() -> None:
    """A client that sends a request and hangs up at once: the upstream still gets all of it."""
    payload = payload_of(10_000)

    async def scenario() -> None:
        server, received, ended = await echo_upstream()
        port = server.sockets[0].getsockname()[1]
        connection = Connection(f"127.0.0.1:{port}", CHAINS["no toxics"], random.Random(1),
                                lambda _: None)
        client = Python3112Transport(connection.client)
        client.open()
        client.arrive(payload, eof=True)
        await first_read(client, connection)
        try:
            async with asyncio.timeout(5):
                await ended.wait()
        except TimeoutError:
            pass
        reached = ended.is_set()
        await tear_down(connection, server, ended)
        assert reached, "the client's end of stream never reached the upstream"
        assert received[0] == payload

    asyncio.run(scenario())


def two_endpoints() -> tuple[Endpoint, Python3112Transport, Endpoint, Python3112Transport]:
    """A source socket (opened with the 3.11.2 bug) and a destination socket, not yet linked."""
    source, destination = Endpoint(lambda: None), Endpoint(lambda: None)
    source_transport, destination_transport = (
        Python3112Transport(source), Python3112Transport(destination))
    source_transport.open()
    destination_transport.open()
    return source, source_transport, destination, destination_transport


def test_an_ignored_pause_takes_hold_after_one_read_and_nothing_is_lost() -> None:
    payload = payload_of(1_000_000)

    async def scenario() -> None:
        source, source_transport, destination, destination_transport = two_endpoints()
        source_transport.arrive(payload)
        await asyncio.sleep(0.05)  # many loop turns: an unpaused socket would be read dry
        # Backpressure: one read got in before the pause could hold, the rest waits in the kernel.
        assert source_transport.delivered <= ONE_READ
        assert not source_transport.reader_on
        source.attach(Link([], source, destination, random.Random(1)))
        await wait_until(lambda: len(destination_transport.written) >= len(payload))
        assert bytes(destination_transport.written) == payload

    asyncio.run(scenario())


def test_early_bytes_wait_while_the_link_is_full() -> None:
    """Attached to a full destination, the early read is handed over but reading stays paused."""
    payload = payload_of(200_000)

    async def scenario() -> None:
        source, source_transport, destination, destination_transport = two_endpoints()
        source_transport.arrive(payload)
        await asyncio.sleep(0.02)
        early = source_transport.delivered
        destination.pause_writing()  # the destination socket's write buffer is over its limit
        source.attach(Link([], source, destination, random.Random(1)))
        await asyncio.sleep(0.02)
        assert bytes(destination_transport.written) == payload[:early]  # kept, in order
        assert not source_transport.reader_on  # and no more read while the link is full
        destination.resume_writing()
        await wait_until(lambda: len(destination_transport.written) >= len(payload))
        assert bytes(destination_transport.written) == payload

    asyncio.run(scenario())


def test_a_write_to_a_full_socket_waits_and_a_cancelled_wait_leaves_no_trace() -> None:
    """A toxic's stage writing to a socket whose buffer is full waits for `resume_writing`; a
    wait cancelled on the way (its stage stopped to change a toxic) does not hold up the next."""

    async def scenario() -> None:
        _, _, destination, destination_transport = two_endpoints()
        destination.pause_writing()
        assert destination.full()
        stopped = asyncio.ensure_future(destination.put(Chunk(b"dropped", 0.0)))
        await asyncio.sleep(0.01)
        assert not stopped.done() and not destination_transport.written
        stopped.cancel()
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(destination.put(Chunk(b"kept", 0.0)))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        destination.resume_writing()
        await asyncio.wait_for(waiting, 1)
        assert not destination.full() and bytes(destination_transport.written) == b"kept"

    asyncio.run(scenario())
