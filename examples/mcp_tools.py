"""Tools the MCP example and tests serve: typed commands, and one that can crash its process."""

from __future__ import annotations

import os
from typing import Any, Literal

from actors import ToolActor, command


class Notes(ToolActor):
    """Keeps short text notes in memory."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.notes: list[str] = []

    @command
    def add(self, text: str, tags: list[str] | None = None) -> int:
        """Add a note; returns how many notes there are."""
        self.notes.append(text if not tags else f"{text} [{', '.join(tags)}]")
        return len(self.notes)

    @command
    def search(self, word: str, limit: int = 10, order: Literal["old", "new"] = "old") -> list[str]:
        """Notes that contain a word, oldest first (order="new": newest first)."""
        found = [n for n in self.notes if word in n]
        return (found if order == "old" else found[::-1])[:limit]

    @command
    def size(self, text: str) -> int:
        """The length of a text (to try large arguments)."""
        return len(text)


class Crashy(ToolActor):
    """A tool whose process can be made to die, to watch its supervisor restart it."""

    @command
    def crash(self) -> None:
        """End this tool's process at once (its supervisor starts a new one)."""
        os._exit(3)

    @command
    def fail(self, message: str = "failed on purpose") -> None:
        """Raise an error inside the tool (the process lives on)."""
        raise RuntimeError(message)

    @command
    def ping(self) -> str:
        """Answer "pong" with this instance's pid."""
        return f"pong from {os.getpid()}"
