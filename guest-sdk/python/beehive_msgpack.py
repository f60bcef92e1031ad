"""MessagePack for Beehive bodies, with no dependency to bundle.

    packb(value) -> bytes      unpackb(data) -> value

Python <-> MessagePack: None <-> nil, bool <-> bool, int <-> int (the smallest encoding,
up to 64 bits), float <-> float 64 (float 32 decodes to float), str <-> str, bytes <->
bin, list/tuple -> array -> list, dict <-> map (any hashable key; keys in order),
Ext <-> ext (e.g. code -1, the timestamp BeeORM writes for a Go time.Time).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Tuple

__all__ = ["Ext", "MessagePackError", "packb", "unpackb"]


class MessagePackError(ValueError):
    """Bytes that are not one MessagePack value, or a value that cannot be encoded."""


class Ext:
    """A MessagePack extension value: a type code (-128..127) and its bytes."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        if not -128 <= code <= 127:
            raise MessagePackError(f"ext code {code} outside -128..127")
        self.code = code
        self.data = bytes(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ext) and (self.code, self.data) == (other.code, other.data)

    def __hash__(self) -> int:
        return hash((self.code, self.data))

    def __repr__(self) -> str:
        return f"Ext({self.code}, {self.data!r})"


# --- decoding ---

_FIXED = {
    0xCA: struct.Struct(">f"), 0xCB: struct.Struct(">d"),
    0xCC: struct.Struct(">B"), 0xCD: struct.Struct(">H"),
    0xCE: struct.Struct(">I"), 0xCF: struct.Struct(">Q"),
    0xD0: struct.Struct(">b"), 0xD1: struct.Struct(">h"),
    0xD2: struct.Struct(">i"), 0xD3: struct.Struct(">q"),
}
_LENGTH = {
    0xD9: (struct.Struct(">B"), "str"), 0xDA: (struct.Struct(">H"), "str"),
    0xDB: (struct.Struct(">I"), "str"),
    0xC4: (struct.Struct(">B"), "bin"), 0xC5: (struct.Struct(">H"), "bin"),
    0xC6: (struct.Struct(">I"), "bin"),
    0xDC: (struct.Struct(">H"), "array"), 0xDD: (struct.Struct(">I"), "array"),
    0xDE: (struct.Struct(">H"), "map"), 0xDF: (struct.Struct(">I"), "map"),
    0xC7: (struct.Struct(">B"), "ext"), 0xC8: (struct.Struct(">H"), "ext"),
    0xC9: (struct.Struct(">I"), "ext"),
}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_MAX_DEPTH = 200


def unpackb(data: bytes) -> Any:
    """The one MessagePack value `data` holds; MessagePackError when it is not exactly one."""
    data = bytes(data)
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise MessagePackError(f"{len(data) - end} trailing bytes after the MessagePack value")
    return value


def _need(b: bytes, i: int, n: int) -> None:
    if i + n > len(b):
        raise MessagePackError(f"truncated MessagePack at byte {i}")


def _decode(b: bytes, i: int, depth: int) -> Tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise MessagePackError("MessagePack nested too deeply")
    _need(b, i, 1)
    t = b[i]
    i += 1
    if t <= 0x7F:
        return t, i
    if t >= 0xE0:
        return t - 0x100, i
    if 0x80 <= t <= 0x8F:
        return _map(b, i, t & 0x0F, depth)
    if 0x90 <= t <= 0x9F:
        return _array(b, i, t & 0x0F, depth)
    if 0xA0 <= t <= 0xBF:
        return _str(b, i, t & 0x1F)
    if t == 0xC0:
        return None, i
    if t == 0xC2:
        return False, i
    if t == 0xC3:
        return True, i
    fixed = _FIXED.get(t)
    if fixed is not None:
        _need(b, i, fixed.size)
        return fixed.unpack_from(b, i)[0], i + fixed.size
    if t in _FIXEXT:
        n = _FIXEXT[t]
        _need(b, i, 1 + n)
        return Ext(struct.unpack_from(">b", b, i)[0], b[i + 1:i + 1 + n]), i + 1 + n
    length = _LENGTH.get(t)
    if length is None:
        raise MessagePackError(f"unsupported MessagePack type 0x{t:02x} at byte {i - 1}")
    fmt, kind = length
    _need(b, i, fmt.size)
    n = fmt.unpack_from(b, i)[0]
    i += fmt.size
    if kind == "str":
        return _str(b, i, n)
    if kind == "bin":
        _need(b, i, n)
        return b[i:i + n], i + n
    if kind == "array":
        return _array(b, i, n, depth)
    if kind == "map":
        return _map(b, i, n, depth)
    _need(b, i, 1 + n)
    return Ext(struct.unpack_from(">b", b, i)[0], b[i + 1:i + 1 + n]), i + 1 + n


def _str(b: bytes, i: int, n: int) -> Tuple[str, int]:
    _need(b, i, n)
    try:
        return b[i:i + n].decode("utf-8"), i + n
    except UnicodeDecodeError:
        raise MessagePackError(f"a MessagePack string at byte {i} is not UTF-8") from None


def _array(b: bytes, i: int, n: int, depth: int) -> Tuple[List[Any], int]:
    # Every item takes at least one byte: refuse a count larger than what is left.
    _need(b, i, n)
    out = []
    for _ in range(n):
        v, i = _decode(b, i, depth + 1)
        out.append(v)
    return out, i


def _map(b: bytes, i: int, n: int, depth: int) -> Tuple[Dict[Any, Any], int]:
    _need(b, i, 2 * n)
    out: Dict[Any, Any] = {}
    for _ in range(n):
        k, i = _decode(b, i, depth + 1)
        v, i = _decode(b, i, depth + 1)
        try:
            out[k] = v
        except TypeError:
            raise MessagePackError(f"a map key of type {type(k).__name__} is not supported") from None
    return out, i


# --- encoding ---

def packb(value: Any) -> bytes:
    """`value` as MessagePack; MessagePackError for a type it cannot encode."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(v: Any, out: bytearray, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise MessagePackError("value nested too deeply")
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        _int(v, out)
    elif isinstance(v, float):
        out.append(0xCB)
        out += struct.pack(">d", v)
    elif isinstance(v, str):
        data = v.encode("utf-8")
        n = len(data)
        if n <= 31:
            out.append(0xA0 | n)
        else:
            _header(out, n, 0xD9, 0xDA, 0xDB)
        out += data
    elif isinstance(v, (bytes, bytearray, memoryview)):
        data = bytes(v)
        _header(out, len(data), 0xC4, 0xC5, 0xC6)
        out += data
    elif isinstance(v, (list, tuple)):
        n = len(v)
        if n <= 15:
            out.append(0x90 | n)
        else:
            _header(out, n, None, 0xDC, 0xDD)
        for item in v:
            _encode(item, out, depth + 1)
    elif isinstance(v, dict):
        n = len(v)
        if n <= 15:
            out.append(0x80 | n)
        else:
            _header(out, n, None, 0xDE, 0xDF)
        for key, item in v.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    elif isinstance(v, Ext):
        n = len(v.data)
        fix = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(n)
        if fix is not None:
            out.append(fix)
        else:
            _header(out, n, 0xC7, 0xC8, 0xC9)
        out += struct.pack(">b", v.code)
        out += v.data
    else:
        raise MessagePackError(f"cannot encode {type(v).__name__} as MessagePack")


def _header(out: bytearray, n: int, m8, m16: int, m32: int) -> None:
    if m8 is not None and n <= 0xFF:
        out += bytes([m8, n])
    elif n <= 0xFFFF:
        out.append(m16)
        out += struct.pack(">H", n)
    elif n <= 0xFFFFFFFF:
        out.append(m32)
        out += struct.pack(">I", n)
    else:
        raise MessagePackError("value too long for MessagePack")


def _int(v: int, out: bytearray) -> None:
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
    elif -0x80 <= v < 0:
        out += bytes([0xD0, v & 0xFF])
    elif -0x8000 <= v < 0:
        out.append(0xD1)
        out += struct.pack(">h", v)
    elif -0x80000000 <= v < 0:
        out.append(0xD2)
        out += struct.pack(">i", v)
    elif -(1 << 63) <= v < 0:
        out.append(0xD3)
        out += struct.pack(">q", v)
    else:
        raise MessagePackError(f"integer {v} does not fit in 64 bits")
