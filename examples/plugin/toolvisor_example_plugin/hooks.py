"""The plugin's lifecycle hook: writes a line to stderr when a tool starts."""

from __future__ import annotations

import sys

from supervisors import LifecycleHook


class StartLog(LifecycleHook):
    def post_start(self, tool: str) -> None:
        print(f"greeter-log: {tool} started", file=sys.stderr)
