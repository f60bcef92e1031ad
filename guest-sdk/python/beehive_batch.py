"""Decodes the event batch Beehive passes to `handle-events` (WIT `type batch`).

Python handlers built with `scripts/build-python` can `import beehive_batch` (the script adds
this folder to componentize-py's path; elsewhere, copy this file next to your app.py):

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

import struct
from typing import List, Optional, Tuple

_U32 = struct.Struct("<I")


class Event:
    """One stream entry of a batch."""

    __slots__ = ("id", "stream", "body", "meta", "deliveries")

    def __init__(self, id: str, stream: str, body: Optional[bytes],
                 meta: List[Tuple[str, str]], deliveries: int):
        self.id = id                  # the entry ID, e.g. "1700000000000-0"
        self.stream = stream          # the stream it was read from
        self.body = body              # MessagePack bytes, None for metadata only
        self.meta = meta              # [(key, value)], in publish order
        self.deliveries = deliveries  # 1 on the first delivery

    def tag(self, key: str) -> str:
        """The value of metadata `key`, "" when missing."""
        for k, v in self.meta:
            if k == key:
                return v
        return ""

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
