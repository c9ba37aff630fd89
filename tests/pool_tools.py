"""Tools for the pool tests (module level, so tool processes can import them)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from actors import ToolActor, command


class Worker(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        self.calls = 0

    @command
    def work(self, seconds: float = 0.0) -> int:
        """Sleep (as a tool waiting on I/O does) and say which instance served it."""
        self.calls += 1
        time.sleep(seconds)
        return os.getpid()

    @command
    def spin(self, seconds: float = 0.0) -> int:
        """Burn CPU for ``seconds``."""
        end = time.process_time() + seconds
        x = 0
        while time.process_time() < end:
            x += 1
        return os.getpid()

    @command
    def served(self) -> int:
        return self.calls

    @command
    def fail(self) -> None:
        raise ValueError("worker failed")

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
