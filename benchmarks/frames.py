"""Bytes on the wire: toolvisor's msgpack frames vs pickle of the same content.

A message is encoded by ``actors.codec.encode`` as a positional msgpack array
``[tag, field, ...]``; the fast path adds a 4-byte length prefix. It is compared
with ``pickle.dumps`` (highest protocol) of the same content twice: as a plain
dict with the field names as keys (what a generic pickled message carries), and
as the message dataclass itself (what Thespian would pickle if we sent objects).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import asdict
from typing import Any

from actors.codec import encode
from actors.frames import HEADER
from actors.messages import Batch, BatchReply, Call, Reply
from benchmarks.stats import ratio


def samples() -> dict[str, Any]:
    """Typical messages: a small call and its reply, and a 100-call batch and its reply.

    Every item is a distinct object, so pickle cannot shorten repeats into references.
    """
    deadline = time.time() + 30.0
    return {
        "call": Call(12345, "add", {"k": 1}, deadline),
        "reply": Reply(12345, True, 42),
        "error_reply": Reply(12346, False, None, {"type": "ValueError", "message": "boom",
                                                  "code": "error", "traceback": None}),
        "batch_100": Batch(12347, [["add", {"k": i}] for i in range(1, 101)], deadline),
        "batch_reply_100": BatchReply(12347, [[True, i, None] for i in range(1, 101)]),
    }


def measure(name: str, msg: Any) -> dict[str, Any]:
    packed = len(encode(msg))
    as_dict = len(pickle.dumps(asdict(msg), protocol=pickle.HIGHEST_PROTOCOL))
    as_object = len(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
    return {"message": name, "msgpack_bytes": packed, "frame_bytes": packed + HEADER.size,
            "pickle_dict_bytes": as_dict, "pickle_dataclass_bytes": as_object,
            "ratio_frame_over_pickle_dict": ratio(packed + HEADER.size, as_dict),
            "ratio_frame_over_pickle_dataclass": ratio(packed + HEADER.size, as_object)}


def run() -> dict[str, Any]:
    return {"pickle_protocol": pickle.HIGHEST_PROTOCOL,
            "messages": [measure(name, msg) for name, msg in samples().items()]}
