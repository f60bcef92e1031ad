"""Decodes the event batch Beehive passes to `handle-events` (WIT `type batch`).

Python handlers built with `scripts/build-python` can `import beehive_batch` (the script adds
this folder to componentize-py's path; elsewhere, copy this folder's beehive_*.py next to
your app.py). `beehive_guest` builds on it with publishing, logging and outcome helpers:

    class Handler(exports.Handler):
        def handle_events(self, events: bytes) -> List[Outcome]:
            for event in beehive_batch.decode(events):
                ...  # event.id, event.stream, event.body, event.meta, event.deliveries

Layout, integers little-endian (see wit/beehive.wit):

    batch  = count:u32, event x count
    event  = deliveries:u32, id:str, stream:str, body, meta-count:u32,
             (key:str, value:str) x meta-count
    body   = 0:u8 (metadata only) | 1:u8, len:u32, MessagePack bytes
    str    = len:u32, UTF-8 bytes
"""

from __future__ import annotations

import struct
from typing import Any, List, Optional, Tuple

# Imported now, not when a body is first decoded: inside a component, modules are
# snapshotted at build time and there is no filesystem to import from later.
import beehive_msgpack

__all__ = ["BadInput", "Event", "count", "decode"]

_U32 = struct.Struct("<I")


class BadInput(ValueError):
    """The event itself is bad (no body, a body that does not decode, a missing tag):
    retrying will not help. `beehive_guest.each` dead-letters the event with the message."""


class Event:
    """One stream entry of a batch."""

    __slots__ = ("id", "stream", "body", "meta", "deliveries")

    def __init__(self, id: str, stream: str, body: Optional[bytes],
                 meta: List[Tuple[str, str]], deliveries: int) -> None:
        self.id = id                  # the entry ID, e.g. "1700000000000-0"
        self.stream = stream          # the stream it was read from
        self.body = body              # MessagePack bytes, None for metadata only
        self.meta = meta              # [(key, value)], in publish order
        self.deliveries = deliveries  # 1 on the first delivery

    def tag(self, key: str) -> str:
        """The value of metadata `key` (its first occurrence), "" when missing."""
        for k, v in self.meta:
            if k == key:
                return v
        return ""

    def try_tag(self, key: str) -> Optional[str]:
        """The value of metadata `key` (its first occurrence), None when missing."""
        for k, v in self.meta:
            if k == key:
                return v
        return None

    def require_tag(self, key: str) -> str:
        """The value of metadata `key`; BadInput when missing."""
        value = self.try_tag(key)
        if value is None:
            raise BadInput(f"the event has no {key!r} tag")
        return value

    @property
    def is_redelivery(self) -> bool:
        """Whether this entry was delivered before (and not acknowledged then)."""
        return self.deliveries > 1

    def unserialize(self) -> Any:
        """The MessagePack body as a Python value (maps as dicts); BadInput when the event
        has no body or the body does not decode."""
        if self.body is None:
            raise BadInput("the event has no body")
        try:
            return beehive_msgpack.unpackb(self.body)
        except beehive_msgpack.MessagePackError as e:
            raise BadInput(str(e)) from None

    def __repr__(self) -> str:
        return f"Event({self.stream} {self.id} meta={self.meta!r} deliveries={self.deliveries})"

def count(batch: bytes) -> int:
    """How many events the batch holds, without decoding them."""
    if len(batch) < 4:
        raise ValueError("malformed event batch: shorter than its count")
    return _U32.unpack_from(batch, 0)[0]


def decode(batch: bytes) -> List[Event]:
    """Every event of the batch; ValueError names the offset of a malformed batch."""
    unpack = _U32.unpack_from
    end = len(batch)
    at = 0

    def take(n: int) -> int:
        nonlocal at
        start = at
        at += n
        if at > end:
            raise ValueError(f"malformed event batch at byte {start}: truncated")
        return start

    def text() -> str:
        n = unpack(batch, take(4))[0]
        start = take(n)
        try:
            return batch[start:at].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"malformed event batch at byte {start}: a string is not UTF-8")

    events = []
    for _ in range(unpack(batch, take(4))[0]):
        deliveries = unpack(batch, take(4))[0]
        id = text()
        stream = text()
        flag = batch[take(1)]
        if flag == 0:
            body = None
        elif flag == 1:
            n = unpack(batch, take(4))[0]
            start = take(n)
            body = bytes(batch[start:at])
        else:
            raise ValueError(f"malformed event batch at byte {at - 1}: body flag {flag}")
        meta = [(text(), text()) for _ in range(unpack(batch, take(4))[0])]
        events.append(Event(id, stream, body, meta, deliveries))
    if at != end:
        raise ValueError(f"malformed event batch at byte {at}: trailing bytes")
    return events
