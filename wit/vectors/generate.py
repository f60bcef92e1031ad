#!/usr/bin/env python3
"""Writes the batch test vectors of wit/vectors/ (see README.md there).

Deterministic: no randomness, no clock, no dependency beyond the Python standard library;
running it twice writes the same bytes. Run it after changing a vector, and commit the
output:

    python3 wit/vectors/generate.py            # writes wit/vectors/*.bin|json, invalid/*
    python3 wit/vectors/generate.py --check    # exit 1 when a committed file differs

The encoder below follows `type batch` in wit/beehive.wit and the host's encoder
(host/src/runtime/batch.rs, `encode_batch`) byte for byte:

    batch  = count:u32, event x count
    event  = deliveries:u32, id:str, stream:str, body, meta-count:u32,
             (key:str, value:str) x meta-count
    body   = 0:u8 (metadata only) | 1:u8, len:u32, MessagePack bytes
    str    = len:u32, UTF-8 bytes

Every valid vector is a batch the host can produce: IDs are `ms-seq` as Redis writes them,
and every event has a body or metadata.
"""

import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


# --- MessagePack (the smallest encoding of each value, as rmp-serde and BeeORM write it) ---

class Ext:
    """A MessagePack extension value."""

    def __init__(self, code: int, data: bytes):
        self.code = code
        self.data = data


class Map:
    """A map with keys in the given order (any key type)."""

    def __init__(self, pairs):
        self.pairs = list(pairs)


def mp(v) -> bytes:
    out = bytearray()
    _mp(v, out)
    return bytes(out)


def _mp(v, out: bytearray) -> None:
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        if 0 <= v <= 0x7F:
            out.append(v)
        elif -32 <= v < 0:
            out.append(v & 0xFF)
        elif 0 <= v <= 0xFF:
            out += bytes([0xCC, v])
        elif 0 <= v <= 0xFFFF:
            out.append(0xCD)
            out += struct.pack(">H", v)
        elif 0 <= v <= 0xFFFFFFFF:
            out.append(0xCE)
            out += struct.pack(">I", v)
        elif 0 <= v < 1 << 64:
            out.append(0xCF)
            out += struct.pack(">Q", v)
        elif -0x80 <= v:
            out += bytes([0xD0, v & 0xFF])
        elif -0x8000 <= v:
            out.append(0xD1)
            out += struct.pack(">h", v)
        elif -0x80000000 <= v:
            out.append(0xD2)
            out += struct.pack(">i", v)
        else:
            out.append(0xD3)
            out += struct.pack(">q", v)
    elif isinstance(v, float):
        out.append(0xCB)
        out += struct.pack(">d", v)
    elif isinstance(v, str):
        data = v.encode("utf-8")
        n = len(data)
        if n <= 31:
            out.append(0xA0 | n)
        elif n <= 0xFF:
            out += bytes([0xD9, n])
        elif n <= 0xFFFF:
            out.append(0xDA)
            out += struct.pack(">H", n)
        else:
            out.append(0xDB)
            out += struct.pack(">I", n)
        out += data
    elif isinstance(v, bytes):
        n = len(v)
        if n <= 0xFF:
            out += bytes([0xC4, n])
        elif n <= 0xFFFF:
            out.append(0xC5)
            out += struct.pack(">H", n)
        else:
            out.append(0xC6)
            out += struct.pack(">I", n)
        out += v
    elif isinstance(v, list):
        n = len(v)
        if n <= 15:
            out.append(0x90 | n)
        elif n <= 0xFFFF:
            out.append(0xDC)
            out += struct.pack(">H", n)
        else:
            out.append(0xDD)
            out += struct.pack(">I", n)
        for item in v:
            _mp(item, out)
    elif isinstance(v, (dict, Map)):
        pairs = list(v.items()) if isinstance(v, dict) else v.pairs
        n = len(pairs)
        if n <= 15:
            out.append(0x80 | n)
        elif n <= 0xFFFF:
            out.append(0xDE)
            out += struct.pack(">H", n)
        else:
            out.append(0xDF)
            out += struct.pack(">I", n)
        for key, item in pairs:
            _mp(key, out)
            _mp(item, out)
    elif isinstance(v, Ext):
        n = len(v.data)
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if n in fixed:
            out.append(fixed[n])
        elif n <= 0xFF:
            out += bytes([0xC7, n])
        elif n <= 0xFFFF:
            out.append(0xC8)
            out += struct.pack(">H", n)
        else:
            out.append(0xC9)
            out += struct.pack(">I", n)
        out += struct.pack(">b", v.code)
        out += v.data
    else:
        raise TypeError(f"cannot encode {type(v).__name__}")


def timestamp(seconds: int, nanos: int = 0) -> Ext:
    """MessagePack's timestamp extension (-1), as Go's msgpack writes a time.Time."""
    if nanos == 0 and 0 <= seconds < 1 << 32:
        return Ext(-1, struct.pack(">I", seconds))
    if 0 <= seconds < 1 << 34:
        return Ext(-1, struct.pack(">Q", (nanos << 34) | seconds))
    return Ext(-1, struct.pack(">Iq", nanos, seconds))


# --- the batch layout ---

def event(id, stream, body=None, meta=(), deliveries=1) -> dict:
    return {"id": id, "stream": stream, "deliveries": deliveries, "body": body,
            "meta": [list(pair) for pair in meta]}


def encode(events) -> bytes:
    out = bytearray()
    out += struct.pack("<I", len(events))
    for e in events:
        out += struct.pack("<I", e["deliveries"])
        _str(out, e["id"])
        _str(out, e["stream"])
        if e["body"] is None:
            out.append(0)
        else:
            out.append(1)
            out += struct.pack("<I", len(e["body"]))
            out += e["body"]
        out += struct.pack("<I", len(e["meta"]))
        for key, value in e["meta"]:
            _str(out, key)
            _str(out, value)
    return bytes(out)


def _str(out: bytearray, s: str) -> None:
    data = s.encode("utf-8")
    out += struct.pack("<I", len(data))
    out += data


def to_json(events) -> str:
    """One event per line, keys in a fixed order, non-ASCII written as is."""
    lines = []
    for e in events:
        obj = {
            "id": e["id"],
            "stream": e["stream"],
            "deliveries": e["deliveries"],
            "body": None if e["body"] is None else e["body"].hex(),
            "meta": e["meta"],
        }
        lines.append("  " + json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")))
    if not lines:
        return '{"events": []}\n'
    return '{"events": [\n' + ",\n".join(lines) + "\n]}\n"


# --- a deterministic pseudo-random sequence (xorshift32) for the bulk vectors ---

class Sequence:
    def __init__(self, seed: int):
        self.state = seed

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n: int) -> int:
        return self.next() % n


# --- the vectors ---

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


def vectors():
    v = {}

    v["empty"] = []

    v["no-body"] = [
        event("1700000000000-0", "stream-page-views",
              meta=[("url", "/about-us/"), ("ip", "232.12.24.11")]),
        event("1700000000000-1", "stream-page-views", meta=[("url", "/pricing/")]),
        event("1700000000001-0", "stream-page-views",
              meta=[("url", ""), ("ip", ""), ("url", "/twice/")]),
    ]

    v["empty-meta"] = [
        # The DESIGN's example: the string "a1" is stored as A2 61 31.
        event("1-0", "stream-a", body=mp("a1")),
        event("1-1", "stream-b", body=mp({"color": "red", "price": 12.34})),
        event("2-0", "stream-a", body=mp(None)),
        event("2-1", "stream-a", body=mp(0)),
    ]

    v["unicode"] = [
        event("1700000000000-0", "événements",
              body=mp({"nom": "Zoë", "ville": "Kraków", "prix": 12.5}),
              meta=[("version", "1"), ("clé", "valeur é")]),
        event("1700000000000-1", "日本語-ストリーム",
              body=mp({"名前": "蜂の巣", "絵文字": "🐝🍯", "combining": "e\u0301",
                       "rtl": "مرحبا", "zwj": "👩\u200d💻"}),
              meta=[("言語", "日本語"), ("emoji", "🐝"), ("nul", "a\u0000b"),
                    ("newline", "line 1\nline 2\ttab"), ("quote", "\"'\\")]),
        event("1700000000000-2", "emoji-🐝", meta=[("🔑", "🗝️"), ("bom", "\ufeffx"),
                                                  ("max", "\U0010ffff")]),
        # A body that is a MessagePack string with 4-byte UTF-8 sequences only.
        event("1700000000000-3", "emoji-🐝", body=mp("🐝" * 20)),
    ]

    big = bytes((i * 7 + i // 256) & 0xFF for i in range(100 * 1024))
    v["large-body"] = [
        # A 100 KiB bin body: the length needs all four bytes of the u32 little-endian.
        event("1700000000000-0", "blobs", body=mp({"name": "big.bin", "data": big}),
              meta=[("content-type", "application/octet-stream")]),
        # A 70,000-byte metadata value and a 100,000-byte string body.
        event("1700000000000-1", "blobs", body=mp("ü" * 50_000),
              meta=[("long", "x" * 70_000)]),
        # A small event after the large ones: offsets must carry on.
        event("1700000000001-0", "blobs", meta=[("after", "large")]),
    ]

    seq = Sequence(0xBEE5)
    many = []
    streams = ["orders", "payments", "stream-page-views"]
    for i in range(1000):
        ms = 1700000000000 + i // 3
        stream = streams[i % 3]
        kind = seq.below(4)
        deliveries = 1 + seq.below(3) if i % 10 == 0 else 1
        if stream == "stream-page-views" or kind == 0:
            e = event(f"{ms}-{i % 3}", stream, deliveries=deliveries,
                      meta=[("url", f"/page/{seq.below(50)}/"), ("ip", f"10.0.{i // 256}.{i % 256}")])
        elif kind == 1:
            e = event(f"{ms}-{i % 3}", stream, deliveries=deliveries,
                      body=mp({"order": i, "total": seq.below(100000) / 100}))
        else:
            e = event(f"{ms}-{i % 3}", stream, deliveries=deliveries,
                      body=mp({"order": i, "items": [seq.below(1000) for _ in range(seq.below(5))],
                               "paid": seq.below(2) == 1}),
                      meta=[("version", str(1 + seq.below(2))), ("n", str(i))])
        many.append(e)
    v["many-events"] = many

    v["redelivered"] = [
        event("1700000000000-0", "orders", body=mp({"order": 1}), deliveries=2),
        event("1700000000000-1", "orders", meta=[("retry", "yes")], deliveries=5),
        event("1700000000000-2", "orders", body=mp({"order": 3}), deliveries=1000),
        # The largest count the layout can carry: a u32, unsigned (not -1).
        event("1700000000000-3", "orders", meta=[("a", "b")], deliveries=U32_MAX),
        event("1700000000000-4", "orders", meta=[("a", "c")], deliveries=1 << 31),
    ]

    v["mixed"] = [
        # A body and metadata, BeeORM's struct shape with a version tag.
        event("1700000000000-0", "colors", body=mp({"color": "red", "price": 12.34}),
              meta=[("version", "1")]),
        event("1700000000000-1", "colors", body=mp({"name": "blue", "price_cents": 99}),
              meta=[("version", "2")], deliveries=3),
        # Metadata only.
        event("1700000000001-0", "stream-page-views",
              meta=[("url", "/about-us/"), ("ip", "232.12.24.11")]),
        # A body, no metadata; a corrupt MessagePack body is still a body to the batch.
        event("1700000000001-1", "colors", body=bytes([0xC1, 0xFF])),
        # A zero-length body (an `s` field holding ""): flag 1, length 0.
        event("1700000000002-0", "colors", body=b"", meta=[("empty", "body")]),
        # Empty metadata key and value.
        event("1700000000002-1", "stream-b", meta=[("", "")]),
        # Values a lossless JSON must keep: a time.Time (ext -1), bin, integer keys,
        # integer vs float, 64-bit extremes.
        event("1700000000003-0", "typed",
              body=mp(Map([("at", timestamp(1700000000, 123456789)), ("day", timestamp(1700000000)),
                           ("raw", b"\x00\x01\xfe\xff"), ("ints", Map([(1, "one"), (-2, "minus two")])),
                           ("float", 1.0), ("int", 1), ("u64", U64_MAX), ("i64", -(1 << 63)),
                           ("nested", [[], {}, [None, True, False]])])),
              meta=[("version", "1")], deliveries=2),
        # The largest entry ID Redis allows, and the smallest.
        event(f"{U64_MAX}-{U64_MAX}", "ids", meta=[("edge", "max")]),
        event("0-1", "ids", meta=[("edge", "min")]),
        event("1700000000004-0", "日本語", body=mp("a1"), meta=[("ключ", "значение")]),
    ]
    return v


def invalid():
    """Byte strings no decoder may accept, with a word its error must contain."""
    good = encode([event("1-0", "s", body=b"\x01", meta=[("k", "v")])])
    # good = count(4) deliveries(4) id(4+3) stream(4+1) flag(1) len(4) body(1) n(4) k(4+1) v(4+1)
    flag_at = 4 + 4 + 7 + 5
    bad_flag = bytearray(good)
    bad_flag[flag_at] = 2
    bad_utf8 = bytearray(good)
    bad_utf8[4 + 4 + 4] = 0xFF  # the first byte of the ID
    return {
        "truncated": (good[:-1], "truncated"),
        "truncated-count": (b"\x01\x00", "truncated"),
        "huge-count": (struct.pack("<I", U32_MAX), "truncated"),
        "huge-length": (struct.pack("<II", 1, 1) + struct.pack("<I", U32_MAX), "truncated"),
        "bad-body-flag": (bytes(bad_flag), "body flag"),
        "trailing-bytes": (good + b"\x00", "trailing bytes"),
        "invalid-utf8": (bytes(bad_utf8), "UTF-8"),
    }


def outputs():
    files = {}
    for name, events in vectors().items():
        files[f"{name}.bin"] = encode(events)
        files[f"{name}.json"] = to_json(events).encode("utf-8")
    for name, (data, error) in invalid().items():
        files[f"invalid/{name}.bin"] = data
        files[f"invalid/{name}.json"] = (json.dumps({"error": error}) + "\n").encode("utf-8")
    return files


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, data in sorted(outputs().items()):
        full = os.path.join(HERE, path)
        try:
            with open(full, "rb") as f:
                same = f.read() == data
        except FileNotFoundError:
            same = False
        if same:
            continue
        if check:
            stale.append(path)
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        print(f"wrote wit/vectors/{path} ({len(data)} bytes)")
    if stale:
        print("out of date (run python3 wit/vectors/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
