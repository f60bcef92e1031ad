"""A small MessagePack codec (the subset event bodies use): nil, bool, int, float, str,
bin, array and map. Enough for Beehive bodies, with no dependency to bundle."""

import struct


def unpackb(data: bytes):
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} trailing bytes after the MessagePack value")
    return value


def _decode(b: bytes, i: int):
    if i >= len(b):
        raise ValueError("truncated MessagePack")
    t = b[i]
    i += 1
    if t <= 0x7F:
        return t, i
    if 0x80 <= t <= 0x8F:
        return _map(b, i, t & 0x0F)
    if 0x90 <= t <= 0x9F:
        return _array(b, i, t & 0x0F)
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return _str(b, i, n)
    if t >= 0xE0:
        return t - 0x100, i
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if t in simple:
        return simple[t], i
    fixed = {
        0xCA: ">f", 0xCB: ">d",
        0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
        0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
    }
    if t in fixed:
        fmt = fixed[t]
        size = struct.calcsize(fmt)
        if i + size > len(b):
            raise ValueError("truncated MessagePack")
        return struct.unpack_from(fmt, b, i)[0], i + size
    lengths = {0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
               0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
               0xDC: (">H", "array"), 0xDD: (">I", "array"),
               0xDE: (">H", "map"), 0xDF: (">I", "map")}
    if t in lengths:
        fmt, kind = lengths[t]
        size = struct.calcsize(fmt)
        if i + size > len(b):
            raise ValueError("truncated MessagePack")
        n = struct.unpack_from(fmt, b, i)[0]
        i += size
        if kind == "str":
            return _str(b, i, n)
        if kind == "bin":
            if i + n > len(b):
                raise ValueError("truncated MessagePack")
            return bytes(b[i:i + n]), i + n
        if kind == "array":
            return _array(b, i, n)
        return _map(b, i, n)
    raise ValueError(f"unsupported MessagePack type 0x{t:02x}")


def _str(b, i, n):
    if i + n > len(b):
        raise ValueError("truncated MessagePack")
    return b[i:i + n].decode("utf-8"), i + n


def _array(b, i, n):
    out = []
    for _ in range(n):
        v, i = _decode(b, i)
        out.append(v)
    return out, i


def _map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = _decode(b, i)
        v, i = _decode(b, i)
        out[k] = v
    return out, i


def packb(value) -> bytes:
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(v, out: bytearray):
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
        elif -(1 << 63) <= v < (1 << 63):
            out.append(0xD3)
            out += struct.pack(">q", v)
        else:
            out.append(0xCF)
            out += struct.pack(">Q", v)
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
    elif isinstance(v, (bytes, bytearray)):
        out.append(0xC6)
        out += struct.pack(">I", len(v))
        out += v
    elif isinstance(v, (list, tuple)):
        out.append(0xDD)
        out += struct.pack(">I", len(v))
        for item in v:
            _encode(item, out)
    elif isinstance(v, dict):
        out.append(0xDF)
        out += struct.pack(">I", len(v))
        for key, item in v.items():
            _encode(key, out)
            _encode(item, out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as MessagePack")
