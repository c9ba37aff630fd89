"""A tool's context: its own keys over its ancestors' (supervisors, then the system).

``self.context`` in a tool is a ``ToolContext``: reading a key looks in the
tool's own keys first, then in its supervisor's, up to the system's; writing
and deleting touch only the tool's own keys. ``self.checkpoint()`` sends the
tool's own keys to the context store (``supervisors/recovery/store.py``), and
the next instance of the tool (after a crash, a kill, a restart or a restart of
the whole system with the same data directory) starts from them.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from actors.codec import pack_value
from actors.errors import CheckpointError


class ToolContext(MutableMapping[str, Any]):
    def __init__(self, own: dict[str, Any] | None = None,
                 ancestors: list[dict[str, Any]] | None = None, restored: bool | None = None,
                 problem: str | None = None) -> None:
        self.own: dict[str, Any] = dict(own or {})
        self.ancestors: list[dict[str, Any]] = [dict(a) for a in ancestors or []]  # nearest first
        #: True: started from a checkpoint (or a store that had none); False: the store could
        #: not be read (``problem`` says why); None: no store in this system.
        self.restored = restored
        self.problem = problem

    def __getitem__(self, key: str) -> Any:
        if key in self.own:
            return self.own[key]
        for layer in self.ancestors:
            if key in layer:
                return layer[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"context keys are strings, not {type(key).__name__} ({key!r})")
        self.own[key] = value

    def __delitem__(self, key: str) -> None:
        del self.own[key]  # an ancestor's key is not the tool's to delete

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for layer in (self.own, *self.ancestors):
            for key in layer:
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"ToolContext(own={self.own!r}, ancestors={self.ancestors!r})"

    def packed(self) -> dict[str, Any]:
        """The own keys, checked key by key: a value that cannot be stored is refused here."""
        for key, value in self.own.items():
            try:
                pack_value(value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise CheckpointError(
                    f"context key {key!r} holds a value of type {type(value).__name__}, which cannot be "
                    f"checkpointed ({exc}); store plain data (numbers, text, bytes, lists, maps)",
                    type="CheckpointError")
        return dict(self.own)
