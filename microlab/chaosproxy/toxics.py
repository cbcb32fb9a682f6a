"""The toxics: what each one does to the bytes of one direction of a connection.

Each toxic is configured through the API (its attributes, all integers, all defaulting to 0)
and runs as a stage on every connection of its proxy (see `link.py`). Toxiproxy's README, in
short:

- latency {latency ms, jitter ms}: each chunk leaves `latency ± jitter` ms after it was read.
- bandwidth {rate KB/s, KB = 1000 bytes}: a chunk of n bytes waits n/rate ms; 0 holds data forever.
- slow_close {delay ms}: the end of the stream is passed on `delay` ms late.
- timeout {timeout ms}: drops all data; closes the connection after `timeout` ms without data
  (0: never). Removing it closes the connection too.
- reset_peer {timeout ms}: on the first data, waits `timeout` ms and closes; connections opened
  while it is installed are reset (TCP RST) rather than closed.
- slicer {average_size B, size_variation B, delay µs}: cuts chunks into smaller pieces, with a
  pause after each.
- limit_data {bytes}: passes `bytes` bytes, then closes the connection.
- noop: passes data through (undocumented, accepted by the API).

`toxicity` (0..1) is the chance that a toxic is active on a given connection.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from .gojson import Float32
from .link import Stage, pass_through

DIRECTIONS = ("upstream", "downstream")


class Toxic:
    """A toxic's settings, shared by every connection of its proxy, and its behaviour."""

    type_name: ClassVar[str]
    go_struct: ClassVar[str] = "NoopToxic"  # the Go type, which appears in error messages
    attribute_types: ClassVar[dict[str, str]] = {}  # JSON name → Go type, in JSON order
    buffer_size: ClassVar[int] = 1  # chunks its inlet can queue before backpressure
    closes_on_remove: ClassVar[bool] = False

    def __init__(self, name: str, stream: str, toxicity: Float32, attributes: dict[str, int]) -> None:
        self.name = name
        self.stream = stream  # echoed exactly as the client sent it, e.g. "UPSTREAM"
        self.direction = stream.lower()
        self.toxicity = toxicity
        self.attributes = {key: attributes.get(key, 0) for key in self.attribute_types}

    def __getitem__(self, attribute: str) -> int:
        return self.attributes[attribute]

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type_name,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }

    def new_state(self) -> Any:
        return None

    async def pipe(self, stage: Stage) -> None:
        await pass_through(stage)


class Noop(Toxic):
    type_name = "noop"


class Latency(Toxic):
    type_name = "latency"
    go_struct = "LatencyToxic"
    attribute_types = {"latency": "int64", "jitter": "int64"}
    buffer_size = 1024  # lets chunks queue up, so latency does not cap throughput

    async def pipe(self, stage: Stage) -> None:
        loop = asyncio.get_running_loop()
        while (chunk := await stage.receive()) is not None:
            delay_ms = self["latency"]
            if self["jitter"] > 0:
                delay_ms += stage.rng.randrange(-self["jitter"], self["jitter"])
            wait = chunk.read_at + delay_ms / 1000 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                chunk.read_at += wait  # so a second latency toxic adds its delay on top
            await stage.forward()
        stage.close()


class Bandwidth(Toxic):
    type_name = "bandwidth"
    go_struct = "BandwidthToxic"
    attribute_types = {"rate": "int64"}

    async def pipe(self, stage: Stage) -> None:
        loop = asyncio.get_running_loop()
        debt = 0.0  # seconds still owed for the bytes passed so far
        while (chunk := await stage.receive()) is not None:
            rate = self["rate"]
            if rate <= 0:
                await asyncio.Event().wait()  # Go never delivers at rate 0 (and crashes below 0)
            debt += len(chunk.data) / (rate * 1000)
            piece = rate * 100  # a big chunk leaves in 100 ms slices
            while len(stage.held[0].data) > piece:
                await asyncio.sleep(0.1)
                await stage.forward(piece)
                debt -= 0.1
            started = loop.time()
            await asyncio.sleep(max(debt, 0))
            debt -= loop.time() - started  # pays back timer overshoot on the next chunk
            await stage.forward()
        stage.close()


class SlowClose(Toxic):
    type_name = "slow_close"
    go_struct = "SlowCloseToxic"
    attribute_types = {"delay": "int64"}

    async def pipe(self, stage: Stage) -> None:
        while await stage.receive() is not None:
            await stage.forward()
        await asyncio.sleep(self["delay"] / 1000)
        stage.close()


class Timeout(Toxic):
    type_name = "timeout"
    go_struct = "TimeoutToxic"
    attribute_types = {"timeout": "int64"}
    closes_on_remove = True

    async def pipe(self, stage: Stage) -> None:
        idle_limit = self["timeout"] / 1000 if self["timeout"] > 0 else None
        try:
            while await stage.receive(timeout=idle_limit) is not None:
                stage.drop()
        except TimeoutError:
            pass
        stage.close()


class ResetPeer(Toxic):
    type_name = "reset_peer"
    go_struct = "ResetToxic"
    attribute_types = {"timeout": "int64"}

    async def pipe(self, stage: Stage) -> None:
        await stage.receive()
        stage.drop()
        stage.uninterruptible = True
        await asyncio.sleep(self["timeout"] / 1000)
        stage.close()


class Slicer(Toxic):
    type_name = "slicer"
    go_struct = "SlicerToxic"
    attribute_types = {"average_size": "int", "size_variation": "int", "delay": "int"}

    async def pipe(self, stage: Stage) -> None:
        while (chunk := await stage.receive()) is not None:
            for size in self.piece_sizes(len(chunk.data), stage.rng):
                await stage.forward(size)
                await asyncio.sleep(self["delay"] / 1_000_000)
        stage.close()

    def piece_sizes(self, length: int, rng: random.Random) -> list[int]:
        """Halve recursively until a piece is within `size_variation` of `average_size`."""
        average, variation = self["average_size"], self["size_variation"]
        if length - average <= variation or length <= 1:
            return [length]
        middle = length // 2
        if variation > 0:
            middle += rng.randrange(-variation, variation)
        # Go can split outside the piece here (and recurses forever at average 0); we clamp.
        middle = min(max(middle, 1), length - 1)
        return self.piece_sizes(middle, rng) + self.piece_sizes(length - middle, rng)


@dataclass
class _Sent:
    bytes: int = 0


class LimitData(Toxic):
    type_name = "limit_data"
    go_struct = "LimitDataToxic"
    attribute_types = {"bytes": "int64"}

    def new_state(self) -> _Sent:
        return _Sent()

    async def pipe(self, stage: Stage) -> None:
        sent: _Sent = stage.state
        while (chunk := await stage.receive()) is not None:
            allowed = max(self["bytes"] - sent.bytes, 0)
            if allowed == 0:
                stage.drop()
            else:
                if allowed < len(chunk.data):
                    stage.truncate(allowed)
                sent.bytes += len(stage.held[0].data)
                await stage.forward()
            if self["bytes"] - sent.bytes <= 0:
                break
        stage.close()


TOXIC_TYPES: dict[str, type[Toxic]] = {
    cls.type_name: cls
    for cls in (Latency, Bandwidth, SlowClose, Timeout, ResetPeer, Slicer, LimitData, Noop)
}
