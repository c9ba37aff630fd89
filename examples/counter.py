"""A counter tool: the smallest useful ToolActor."""

from __future__ import annotations

from typing import Any

from actors import ToolActor, command


class Counter(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        start = config.get("start", 0)
        if not isinstance(start, int):
            raise ValueError(f"start must be an integer, got {start!r}")
        self.n = start

    @command
    def add(self, k: int = 1) -> int:
        self.n += k
        return self.n

    @command
    def get(self) -> int:
        return self.n
