"""One direction of a proxied connection: source socket → toxic stages → destination socket.

A link with no toxics writes every read straight to the destination (the fast path: no task,
no queue, no copy). Each toxic adds a *stage*: an asyncio task that takes chunks from its inlet
channel, applies the toxic and hands them to its outlet (the next stage's inlet, or the
destination socket). This mirrors Toxiproxy's Go design, so toxics can hold data (latency,
bandwidth), cut it (slicer), drop it (timeout) or end the stream (limit_data, reset_peer).

Toxics change while connections are open. `add`, `update` and `remove` briefly stop the stages
involved, rewire them and start them again. A stopped stage keeps what it was holding in
`held`; a restarted stage hands that on first, without applying its toxic again. That is how a
removed latency toxic releases its data at once while no byte is lost or reordered.

Ends of stream travel through the chain as a sticky close of each channel (`get` then returns
None), like a closed Go channel. Closing the destination makes the other link of the connection
read end-of-stream too, so either side ending closes the whole connection (no half-close).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol

CHUNK_SIZE = 32 * 1024  # Go's io.Copy buffer: toxics see data in pieces of at most this size


@dataclass(slots=True)
class Chunk:
    data: bytes | memoryview
    read_at: float  # loop time when it was read; latency is measured from here


class Toxic(Protocol):
    """What a link needs of a toxic (toxics.py defines them; it imports this module, so this one
    names the shape instead of importing it back)."""

    name: str
    toxicity: float
    buffer_size: int       # chunks its inlet can queue before backpressure
    closes_on_remove: bool

    def new_state(self) -> Any: ...

    async def pipe(self, stage: Stage) -> None: ...


class Outlet(Protocol):
    """Where a stage (or the link's reader) hands chunks: a Channel or a destination socket."""

    on_space: Callable[[], None] | None

    def full(self) -> bool: ...

    def push_nowait(self, chunk: Chunk) -> None: ...

    async def put(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


class Channel:
    """A FIFO of chunks between two stages, bounded like a Go channel.

    `put` waits while `capacity` chunks are queued; `push_nowait` never waits (the reader uses it
    and pauses the socket instead). `close` is sticky: once drained, `get` returns None forever.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.closed = False
        self.on_space: Callable[[], None] | None = None
        self._items: deque[Chunk] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def push_nowait(self, chunk: Chunk) -> None:
        if not self.closed:
            self._items.append(chunk)
            self._readable.set()

    async def put(self, chunk: Chunk) -> None:
        while self.full():
            self._writable.clear()
            await self._writable.wait()
        self.push_nowait(chunk)

    async def get(self) -> Chunk | None:
        while not self._items:
            if self.closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        chunk = self._items.popleft()
        if not self.full():
            self._writable.set()
            if self.on_space:
                self.on_space()
        return chunk

    def take_all(self) -> list[Chunk]:
        items = list(self._items)
        self._items.clear()
        self._writable.set()
        return items

    def close(self) -> None:
        self.closed = True
        self._readable.set()


class Stage:
    """One toxic at work on one link. Toxics drive it with receive/forward/drop/close."""

    def __init__(self, toxic: Toxic, inlet: Channel, outlet: Outlet, rng: random.Random) -> None:
        self.toxic = toxic
        self.inlet = inlet
        self.outlet = outlet
        self.rng = rng
        self.state = toxic.new_state()  # per connection, kept across updates (limit_data)
        self.held: deque[Chunk] = deque()  # taken from the inlet, not yet handed on
        self.closed = False
        self.uninterruptible = False  # set by reset_peer: Go cannot interrupt its final wait
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.held:
            await self.forward()
        # Toxicity is drawn each time the stage starts: per connection, and again on updates.
        if self.rng.random() < self.toxic.toxicity:
            await self.toxic.pipe(self)
        else:
            await pass_through(self)

    async def stop(self) -> None:
        """Interrupt the toxic; whatever it holds stays in `held`."""
        if self._task is None:
            return
        if not self.uninterruptible:
            self._task.cancel()
        await asyncio.wait([self._task])

    def cancel(self) -> None:
        if self._task:
            self._task.cancel()

    async def receive(self, timeout: float | None = None) -> Chunk | None:
        """The next chunk (now held), or None at end of stream. Raises TimeoutError."""
        async with asyncio.timeout(timeout):
            chunk = await self.inlet.get()
        if chunk is not None:
            self.held.append(chunk)
        return chunk

    async def forward(self, size: int | None = None) -> None:
        """Hand on the oldest held chunk, or only its first `size` bytes."""
        chunk = self.held[0]
        if size is None or size >= len(chunk.data):
            await self.outlet.put(chunk)
            self.held.popleft()
        else:
            await self.outlet.put(Chunk(chunk.data[:size], chunk.read_at))
            self.held[0] = Chunk(chunk.data[size:], chunk.read_at)

    def truncate(self, size: int) -> None:
        chunk = self.held[0]
        self.held[0] = Chunk(chunk.data[:size], chunk.read_at)

    def drop(self) -> None:
        self.held.clear()

    def close(self) -> None:
        """End the stream for everything after this stage."""
        self.closed = True
        self.outlet.close()


async def pass_through(stage: Stage) -> None:
    """What a stage does when its toxic is not active on this connection (and `noop`)."""
    while await stage.receive() is not None:
        await stage.forward()
    stage.close()


class Source(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Link:
    """The bytes of one direction of one connection, through that direction's toxics."""

    def __init__(
        self, toxics: list[Toxic], source: Source, destination: Outlet, rng: random.Random
    ) -> None:
        self._source = source
        self._destination = destination
        self._rng = rng
        self._entry: Outlet = destination
        self._ended = False
        self.received = 0  # bytes read from the source (the proxy metrics' received_bytes)
        destination.on_space = source.resume_reading
        self.stages: list[Stage] = []
        for toxic in toxics:
            self._append(toxic).start()

    def feed(self, data: memoryview) -> None:
        """Data read from the source socket, in a buffer that is reused after this call."""
        self.received += len(data)
        if not self.stages:
            self._destination.push_nowait(Chunk(data, 0.0))  # written (or copied) at once
        else:
            now = asyncio.get_running_loop().time()
            for start in range(0, len(data), CHUNK_SIZE):
                self._entry.push_nowait(Chunk(bytes(data[start : start + CHUNK_SIZE]), now))
        if self._entry.full():
            self._source.pause_reading()

    def full(self) -> bool:
        """True while the source should stay paused: the link's entry cannot take more yet."""
        return self._entry.full()

    def feed_eof(self) -> None:
        if not self._ended:
            self._ended = True
            self._entry.close()

    def close(self) -> None:
        """Stop every stage at once, dropping what they hold (the sockets are being closed)."""
        for stage in self.stages:
            stage.cancel()

    def _set_entry(self, entry: Outlet) -> None:
        self._entry.on_space = None
        self._entry = entry
        entry.on_space = self._source.resume_reading
        if entry.full():
            self._source.pause_reading()
        else:
            self._source.resume_reading()

    def _append(self, toxic: Toxic) -> Stage:
        stage = Stage(toxic, Channel(toxic.buffer_size), self._destination, self._rng)
        if self.stages:
            self.stages[-1].outlet = stage.inlet
        else:
            self._set_entry(stage.inlet)
        self.stages.append(stage)
        return stage

    def _stage_for(self, toxic: Toxic) -> Stage | None:
        return next((stage for stage in self.stages if stage.toxic is toxic), None)

    async def add(self, toxic: Toxic) -> None:
        """Append `toxic` to the chain of this live link."""
        last = self.stages[-1] if self.stages else None
        if last:
            await last.stop()
        stage = self._append(toxic)
        if last is None:
            stage.start()
        elif last.closed:
            stage.closed = True  # the stream already ended; nothing will reach the new stage
        else:
            # What the last stage was holding skips the new toxic, as in Go.
            stage.held, last.held = last.held, deque()
            stage.start()
            last.start()

    async def update(self, toxic: Toxic) -> None:
        """Restart the stage of `toxic` so it picks up new settings (and draws toxicity again)."""
        stage = self._stage_for(toxic)
        if stage and not stage.closed:
            await stage.stop()
            if not stage.closed:
                stage.start()

    async def remove(self, toxic: Toxic) -> None:
        """Take `toxic` out of the chain, passing on at once whatever it holds."""
        stage = self._stage_for(toxic)
        if stage is None:
            return
        index = self.stages.index(stage)
        before = self.stages[index - 1] if index else None
        await stage.stop()
        if before:
            await before.stop()
        del self.stages[index]
        if toxic.closes_on_remove:
            stage.close()  # timeout: removing it ends the connection (Go's Cleanup)
        elif not stage.closed:
            for chunk in (*stage.held, *stage.inlet.take_all()):
                stage.outlet.push_nowait(chunk)
            if stage.inlet.closed:
                stage.outlet.close()
        if before:
            before.outlet = stage.outlet
            if not before.closed:
                before.start()
        else:
            self._set_entry(stage.outlet)
