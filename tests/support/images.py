"""Tiny image helpers for the simulators (stdlib only)."""

from __future__ import annotations

import struct
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(width: int = 64, height: int = 64, seed: int = 0, text: str | None = None) -> bytes:
    """A valid RGB PNG with a seed-dependent colour gradient (different seeds -> different bytes);
    `text` goes into a tEXt chunk (keyword "Comment"; read it back with png_text)."""
    r0, g0, b0 = (seed * 67) % 256, (seed * 131 + 85) % 256, (seed * 29 + 170) % 256
    # Built a channel at a time (the simulators serve one per generation: per pixel it cost 2 ms each).
    reds = bytes((r0 + x * 255 // max(width - 1, 1)) % 256 for x in range(width))
    blues = bytes((b0 + k * 4) % 256 for k in range(width + height))
    rows = []
    for y in range(height):
        row = bytearray(1 + 3 * width)  # filter type 0, then RGB
        row[1::3] = reds
        row[2::3] = bytes([(g0 + y * 255 // max(height - 1, 1)) % 256]) * width
        row[3::3] = blues[y:y + width]
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    extra = _chunk(b"tEXt", b"Comment\x00" + text.encode("latin-1")) if text else b""
    return (PNG_MAGIC + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + _chunk(b"IEND", b""))


def png_text(data: bytes) -> str | None:
    """The text of a PNG's "Comment" tEXt chunk (make_png's `text`), else None."""
    i = len(PNG_MAGIC)
    while data.startswith(PNG_MAGIC) and i + 8 <= len(data):
        length, kind = struct.unpack(">I", data[i:i + 4])[0], data[i + 4:i + 8]
        if kind == b"tEXt":
            key, _, value = data[i + 8:i + 8 + length].partition(b"\x00")
            if key == b"Comment":
                return value.decode("latin-1")
        i += 12 + length
    return None


def make_jpeg_like(size: int, seed: int = 0) -> bytes:
    """Bytes that start like a JPEG (what a type check reads) padded to `size` bytes: for size limits."""
    head = b"\xff\xd8\xff\xe0" + bytes([seed % 256]) * 16
    return (head + b"\x00" * max(size - len(head), 0))[:max(size, len(head))]


def make_webp(seed: int = 0) -> bytes:
    """A RIFF/WEBP container header with a little payload (sniffed as image/webp)."""
    payload = b"VP8 " + struct.pack("<I", 10) + bytes([seed % 256]) * 10
    return b"RIFF" + struct.pack("<I", 4 + len(payload)) + b"WEBP" + payload


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or baseline/progressive JPEG, else None."""
    if data.startswith(PNG_MAGIC) and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def is_image(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) or data.startswith(b"\xff\xd8\xff")


def image_type(data: bytes) -> str | None:
    """The MIME type of JPEG, PNG or WebP bytes, else None."""
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None
