"""Tools for the demo tree (``examples/demo.toml``): a flaky ticker, a clock and an echo.

``Flaky`` is the one to watch: it ticks on a timer and, now and then, raises
from a tick; a raise in a timer is a failure of the tool, so its supervisor
restarts it and the restart count in ``toolvisor run`` goes up.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from actors import ToolActor, command


def _number(config: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    """``config[key]`` as a float within ``[low, high]``; raise ValueError naming the key."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{key} must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


class Flaky(ToolActor):
    """Ticks every ``interval`` seconds; each tick fails with ``fail_probability``.

    Config: ``interval`` (seconds, default 0.5), ``fail_probability`` (0..1,
    default 0.1), ``seed`` (optional, for a repeatable sequence).
    """

    def on_init(self, config: dict[str, Any]) -> None:
        self.interval = _number(config, "interval", 0.5, 0.001, 3600.0)
        self.fail_probability = _number(config, "fail_probability", 0.1, 0.0, 1.0)
        seed = config.get("seed")
        self.random = random.Random(seed if seed is not None else os.getpid() ^ time.time_ns())
        self.ticks = 0
        self.after(self.interval, self.tick)

    def tick(self) -> None:
        self.ticks += 1
        if self.random.random() < self.fail_probability:
            raise RuntimeError(f"simulated failure on tick {self.ticks}")
        self.after(self.interval, self.tick)

    @command
    def ticks_so_far(self) -> int:
        """How many ticks this instance has survived (starts at 0 after a restart)."""
        return self.ticks


class Clock(ToolActor):
    """Keeps the time of its last tick; answers ``now`` and ``uptime``."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.interval = _number(config, "interval", 1.0, 0.001, 3600.0)
        self.started = time.time()
        self.last_tick = self.started
        self.after(self.interval, self.tick)

    def tick(self) -> None:
        self.last_tick = time.time()
        self.after(self.interval, self.tick)

    @command
    def now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.last_tick))

    @command
    def uptime(self) -> float:
        return round(time.time() - self.started, 3)


class Echo(ToolActor):
    """Returns what it is given; ``prefix`` from the config is put in front."""

    def on_init(self, config: dict[str, Any]) -> None:
        prefix = config.get("prefix", "")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be text, got {prefix!r}")
        self.prefix = prefix
        self.count = 0

    @command
    def echo(self, text: str) -> str:
        self.count += 1
        return f"{self.prefix}{text}"

    @command
    def echoed(self) -> int:
        return self.count
