"""A proxied TCP connection: the client's socket, the upstream socket and two links.

As in Toxiproxy, the client's connect always succeeds (the proxy is listening); the proxy then
dials the upstream, and if that fails it simply closes the client's socket, so the client reads
end-of-stream with no data. Once both sockets are open, the *upstream* link carries client →
server bytes and the *downstream* link server → client bytes, each through its own toxics.

Both sockets stay paused until their links exist, so whatever a client sends on connect waits
in the kernel while the upstream is dialled. Python 3.11.0–3.11.3 (Debian 12 ships 3.11.2) ignore
a `pause_reading()` made inside `connection_made()` (CPython gh-103607, fixed in 3.11.4): the
socket is read anyway, and bytes that arrive that early used to be dropped. So an `Endpoint`
does not rely on the pause alone, on any version: a read it did not ask for is kept (bytes and
end-of-stream, in order), the pause is made to take hold, and what was kept goes to the link
first when the link attaches, through its toxics like any other read. That costs at most one
read (64 KiB) per ignored pause, the same slack the link's own flow control allows (it pauses
the socket after a read that fills its entry). On Pythons that honour the pause, none of this
ever runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import sys
import threading
from typing import Callable

from .addresses import AddressError, parse_upstream
from .link import CHUNK_SIZE, Chunk, Link
from .metrics import RECEIVED, SENT, ProxyMetrics
from .toxics import ResetPeer, Toxic

log = logging.getLogger(__name__)


_thread_buffers = threading.local()
_WRITE_COPIES = sys.version_info < (3, 12)


def _read_buffer() -> memoryview:
    """The read buffer of this thread's event loop (see `Endpoint`)."""
    buffer = getattr(_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = _thread_buffers.buffer = memoryview(bytearray(2 * CHUNK_SIZE))
    return buffer


class Endpoint(asyncio.BufferedProtocol):
    """One socket of a proxied connection: the source of one link, the destination of the other.

    It starts paused and reads only once `attach` gives it the link to feed; the link's pause
    and resume requests count from then on. Reads land in one buffer shared by every socket of
    the event loop's thread (asyncio would allocate 256 KiB per read otherwise): a read is
    handed on before the loop reads anything else, and the link and the transport copy what they
    must keep. A buffer per socket cost 64 KiB per socket, and a soak with a few hundred
    connections opened and closed left the heap fragmented tens of MiB above its need. A read
    that comes while reading is paused (see the module docstring) is kept, never dropped.

    The same soak is why an endpoint is light (a future only while a write waits, not an
    `asyncio.Event` with its queue of waiters each) and why `release` exists: an endpoint, its
    connection and its links refer to one another, and a closed connection left in such cycles
    waits for the garbage collector's next full pass, its sockets and buffers with it.
    """

    def __init__(
        self, on_lost: Callable[[], None], on_made: Callable[[], None] | None = None
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self._on_made = on_made
        self.on_space: Callable[[], None] | None = None
        self._link: Link | None = None
        self._on_lost: Callable[[], None] | None = on_lost
        self._writing_paused = False  # the transport's buffer is full: put() waits
        self._space: asyncio.Future[None] | None = None  # what put() waits on, while it waits
        self._buffer = _read_buffer()  # made on the loop's thread, by the loop
        self._reading = False  # what we last asked of the transport
        self._early = bytearray()  # read before attach, in order
        self._early_eof = False  # end-of-stream read before attach
        self.lost = False
        self.written = 0  # bytes written to this socket (the proxy metrics' sent_bytes)

    def attach(self, link: Link) -> None:
        """Feed `link`: first what was read too early, then the socket, as the link allows."""
        self._link = link
        early, self._early = self._early, bytearray()
        if early:
            link.feed(memoryview(early))  # a fresh buffer: nothing reuses it
        if self._early_eof or self.lost:
            link.feed_eof()
        elif not link.full():
            self._set_reading(True)

    # asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio only disables Nagle on sockets it made with proto=IPPROTO_TCP; ours are
            # accepted from a listener made by hand. With Nagle on, a reply the upstream writes
            # in two parts (headers, body) waits for a delayed ACK: ~40 ms stalls.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._set_reading(False)  # ignored by Python 3.11.0-3.11.3: see buffer_updated
        if self._on_made:
            self._on_made()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self._buffer[:nbytes]
        if not self._reading:
            self._hold_reading()
        if self._link:
            self._link.feed(data)
        else:
            self._early += data  # copied: the buffer is reused by the next read

    def eof_received(self) -> bool:
        if self._link:
            self._link.feed_eof()
        else:
            self._early_eof = True  # a read before attach, like the early bytes
        return True  # keep our side open: the link closes it once the chain has drained

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake_writer()
        if self._link:
            self._link.feed_eof()
        if self._on_lost:
            self._on_lost()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._wake_writer()
        if self.on_space:
            self.on_space()

    def _wake_writer(self) -> None:
        self._writing_paused = False
        if self._space is not None and not self._space.done():
            self._space.set_result(None)
        self._space = None

    def release(self) -> None:
        """Let go of the link and the callbacks (the connection is over): see the class docstring."""
        self._link = None
        self.on_space = self._on_lost = self._on_made = None

    # Source (for the link that reads this socket; until attach, the socket stays paused)
    def pause_reading(self) -> None:
        if self._link:
            self._set_reading(False)

    def resume_reading(self) -> None:
        if self._link:
            self._set_reading(True)

    def _set_reading(self, reading: bool) -> None:
        self._reading = reading
        if self.transport and not self.lost:
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _hold_reading(self) -> None:
        """Pause a transport that read although it was paused.

        Such a transport believes it is paused, so a second `pause_reading()` would be ignored
        as well; resuming it first makes the pause take hold (on 3.11.2 too).
        """
        if self.transport and not self.lost:
            self.transport.resume_reading()
            self.transport.pause_reading()

    # Outlet (for the link that writes this socket)
    def full(self) -> bool:
        return self._writing_paused

    def push_nowait(self, chunk: Chunk) -> None:
        if self.transport and not self.transport.is_closing():
            # Python 3.11's transport copies what it cannot send at once; later ones may keep
            # the view itself, over a read buffer the next read overwrites.
            self.transport.write(chunk.data if _WRITE_COPIES else bytes(chunk.data))
            self.written += len(chunk.data)

    async def put(self, chunk: Chunk) -> None:
        while self._writing_paused:
            if self._space is None:
                self._space = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._space)  # a waiter cancelled leaves it to any other
        self.push_nowait(chunk)

    def close(self) -> None:
        if self.transport:
            self.transport.close()

    def reset_on_close(self) -> None:
        """Make closing this socket send a TCP RST (SO_LINGER with a zero timeout)."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Connection:
    """A client of one proxy, from its accept until both of its sockets are closed."""

    def __init__(
        self,
        upstream: str,
        toxics: dict[str, list[Toxic]],
        rng: random.Random,
        on_done: Callable[[Connection], None],
        metrics: ProxyMetrics | None = None,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        self.client = Endpoint(self._endpoint_lost, on_made=self._start)
        self.server = Endpoint(self._endpoint_lost)
        self.links: dict[str, Link] = {}
        self._upstream = upstream
        self._toxics = toxics  # the proxy's live chains, read when the upstream answers
        self._rng = rng
        self._on_done = on_done
        self._metrics = metrics
        self._labels = labels  # (proxy name, listen address) when the client connected
        self._dial: asyncio.Task[None] | None = None
        self._done = False

    def _start(self) -> None:
        self._dial = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            host, port = parse_upstream(self._upstream)
            await asyncio.get_running_loop().create_connection(lambda: self.server, host, port)
        except (OSError, AddressError) as error:
            log.info("Unable to open connection to upstream %s: %s", self._upstream, error)
            self.client.close()
            return
        if self.client.lost:
            self.server.close()
            return
        for direction in ("upstream", "downstream"):
            if any(isinstance(toxic, ResetPeer) for toxic in self._toxics[direction]):
                self.client.reset_on_close()
                self.server.reset_on_close()
        up = Link(self._toxics["upstream"], self.client, self.server, self._rng)
        down = Link(self._toxics["downstream"], self.server, self.client, self._rng)
        self.links = {"upstream": up, "downstream": down}
        self.client.attach(up)
        self.server.attach(down)

    def close(self) -> None:
        """Drop the connection now: held data is lost and both sides see the socket close."""
        if self._dial:
            self._dial.cancel()
        for link in self.links.values():
            link.close()
        self.client.close()
        self.server.close()

    def _endpoint_lost(self) -> None:
        client_gone = self.client.lost
        server_gone = self.server.lost or self.server.transport is None
        if client_gone and server_gone and not self._done:
            self._done = True
            for link in self.links.values():
                link.close()
            self._count_bytes()
            self._on_done(self)
            self.client.release()
            self.server.release()
            self._dial = None

    def _count_bytes(self) -> None:
        """Add this connection's bytes to the proxy metrics, once, as its links end (as in Go)."""
        if self._metrics is None or not self.links:
            return
        name, listen = self._labels
        for direction, destination in (("upstream", self.server), ("downstream", self.client)):
            labels = (direction, listen, name, self._upstream)
            self._metrics.add(RECEIVED, labels, self.links[direction].received)
            self._metrics.add(SENT, labels, destination.written)
