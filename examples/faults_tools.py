"""Tools for the fault examples: one that can hang, one that finishes a job and leaves."""

from __future__ import annotations

import os
import time

from actors import ToolActor, command


class Worker(ToolActor):
    @command
    def spin(self) -> None:
        """Never returns: a command stuck in a loop (the watchdog's business)."""
        while True:
            time.sleep(0.1)

    @command
    def pid(self) -> int:
        return os.getpid()


class Job(ToolActor):
    """Does one piece of work, then ends itself normally (``self.exit()``)."""

    @command
    def finish(self) -> str:
        self.exit()
        return "done"
