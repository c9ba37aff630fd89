"""Length-prefixed frames for stream sockets: 4-byte big-endian length, then the payload."""

from __future__ import annotations

import struct

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # bytes; larger frames are refused


class FrameError(Exception):
    """The byte stream cannot be framed (a length over the limit)."""


def pack_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise FrameError(f"a {len(payload)}-byte frame is over the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Collects bytes and returns whole frames' payloads as they complete."""

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self.max_size = max_size
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames = []
        buf = self.buf
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > self.max_size:
                raise FrameError(f"a frame announced {size} bytes, over the {self.max_size}-byte limit")
            end = pos + 4 + size
            if end > n:
                break
            frames.append(bytes(buf[pos + 4:end]))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self.buf)
