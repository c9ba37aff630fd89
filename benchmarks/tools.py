"""Tools the benchmarks spawn (module level, so tool processes can import them by name)."""

from __future__ import annotations

import os
from typing import Any

from actors import ToolActor, command


class Leaky(ToolActor):
    """Holds on to memory on request, to be caught by the accountant at its quota."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.kept: list[bytearray] = []

    @command
    def leak(self, mb: int) -> int:
        """Allocate and touch ``mb`` MiB (really resident), keep it; return the MiB held."""
        for _ in range(mb):
            self.kept.append(bytearray(b"\x01" * (1024 * 1024)))  # written: really resident
        return len(self.kept)

    @command
    def pid(self) -> int:
        return os.getpid()


class Stuck(ToolActor):
    """A tool that can hang in a command, and (after its first start) fail slowly in on_init."""

    def on_init(self, config: dict[str, Any]) -> None:
        import time
        from pathlib import Path

        marker = config.get("marker")
        if marker:
            if Path(marker).exists():
                time.sleep(float(config.get("sleep", 2.0)))
                raise RuntimeError("slow init failed")
            Path(marker).write_text("started")

    @command
    def spin(self) -> None:
        import time

        while True:
            time.sleep(0.1)

    @command
    def pid(self) -> int:
        return os.getpid()
