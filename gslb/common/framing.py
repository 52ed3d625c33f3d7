"""Length-prefixed JSON messages over a byte stream: the supervisor <-> worker framing  [pure].

Shared by both programs' worker processes (gslb/supervisor.py, regional_lb/supervisor.py). A
message is a JSON object with a string "t" (its type); on the wire it is a 4-byte big-endian
length, then that many bytes of UTF-8 JSON.

    data = encode({"t": "regions", ...})            # FramingError if over MAX_FRAME
    decoder = FrameDecoder()
    for message in decoder.feed(chunk): ...          # incremental; FramingError on a bad frame

`FrameDecoder` refuses a frame longer than `max_frame` before buffering it: a length read
from the wire never sizes an allocation. A frame that is not a JSON object with a string
"t" is a FramingError too: the channel that carried it is closed (gslb/common/channel.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

MAX_FRAME = 64 * 1024 * 1024        # a config text or a metrics reply; far above either in practice
_LEN = struct.Struct(">I")


class FramingError(ValueError):
    """a malformed frame or message on a supervisor <-> worker channel"""


def encode(message: dict[str, Any], *, max_frame: int = MAX_FRAME) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > max_frame:
        raise FramingError(f"message of {len(body)} bytes is over the {max_frame} byte frame limit")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Bytes in, messages out (incremental)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def __repr__(self) -> str:
        return f"<FrameDecoder {len(self._buf)} bytes buffered>"

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        self._buf += data
        while len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf)
            if size > self.max_frame:
                raise FramingError(f"frame of {size} bytes is over the {self.max_frame} byte limit")
            if len(self._buf) < 4 + size:
                return
            body = bytes(self._buf[4:4 + size])
            del self._buf[:4 + size]
            try:
                message = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise FramingError(f"frame is not JSON: {exc}") from None
            if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                raise FramingError("a message is a JSON object with a string \"t\"")
            yield message
