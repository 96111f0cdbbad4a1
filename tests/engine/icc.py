"""Build a minimal ICC v2 RGB matrix/TRC profile, so tests can embed a non-sRGB profile."""

from __future__ import annotations

import struct


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256)) + b"\0\0"


def _desc(text: str) -> bytes:
    ascii_ = text.encode() + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_
            + b"\0" * 8 + b"\0" * 3 + b"\0" * 67)


# sRGB primaries adapted to D50, as sRGB ICC profiles store them.
SRGB_RED = (0.4361, 0.2225, 0.0139)
SRGB_GREEN = (0.3851, 0.7169, 0.0971)
SRGB_BLUE = (0.1431, 0.0606, 0.7141)


def rgb_profile(red, green, blue, gamma: float = 2.2, name: str = "test") -> bytes:
    """An ICC profile whose device R, G, B have the given D50 XYZ primaries."""
    tags = [
        (b"desc", _desc(name)), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)),
        (b"rTRC", _curve(gamma)), (b"gTRC", _curve(gamma)), (b"bTRC", _curve(gamma)),
        (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table.append(signature + struct.pack(">II", offset + len(data), len(payload)))
        data += payload
    body = struct.pack(">I", len(tags)) + b"".join(table) + data
    size = 128 + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + body
