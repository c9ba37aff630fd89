"""Tools used by the recovery tests (module level, so tool processes can import them)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from actors import ToolActor, command


class Flaky(ToolActor):
    """Fails on demand; counts how often each command ran in this instance."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.ran: dict[str, int] = {}

    def _count(self, name: str) -> int:
        self.ran[name] = self.ran.get(name, 0) + 1
        return self.ran[name]

    @command
    def ok(self) -> str:
        self._count("ok")
        return "ok"

    @command
    def fail(self, message: str = "boom") -> None:
        self._count("fail")
        raise ValueError(message)

    @command(idempotent=True)
    def lookup(self, fail_times: int = 2) -> int:
        """Idempotent: raises ConnectionError the first ``fail_times`` times it runs."""
        n = self._count("lookup")
        if n <= fail_times:
            raise ConnectionError(f"flaky network (attempt {n})")
        return n

    @command
    def charge(self, fail_times: int = 1) -> int:
        """Not idempotent: must never be retried."""
        n = self._count("charge")
        if n <= fail_times:
            raise ConnectionError(f"flaky network (attempt {n})")
        return n

    @command(idempotent=True)
    def die_in_lookup(self, mark: str, deaths: int = 1) -> int:
        """Idempotent: its process dies in the first ``deaths`` runs (counted in the file
        ``mark``, which outlives the process); then it returns how many runs there were."""
        runs = _bump(mark)
        if runs <= deaths:
            os.kill(os.getpid(), signal.SIGKILL)
        return runs

    @command
    def die_in_charge(self, mark: str) -> int:
        """Not idempotent: its process dies in the first run. Must never run twice."""
        runs = _bump(mark)
        if runs <= 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return runs

    @command
    def ran_count(self, name: str) -> int:
        return self.ran.get(name, 0)

    @command
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @command
    def pid(self) -> int:
        return os.getpid()

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def _bump(mark: str) -> int:
    try:
        with open(mark) as f:
            runs = int(f.read() or 0) + 1
    except FileNotFoundError:
        runs = 1
    with open(mark, "w") as f:
        f.write(str(runs))
    return runs


class Relay(ToolActor):
    """Calls another tool and reports what it got back."""

    @command
    def relay(self, path: str, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return {"ok": True, "value": self.tool(path).call(cmd, timeout=5.0, **(args or {}))}
        except Exception as exc:
            return {"ok": False, "class": type(exc).__name__, "type": getattr(exc, "type", ""),
                    "message": str(exc)}


class Keeper(ToolActor):
    """Keeps values in its context and checkpoints them."""

    @command
    def put(self, key: str, value: Any, expires_in: float | None = None) -> str:
        self.context[key] = value
        self.checkpoint(expires_in=expires_in)
        return key

    @command
    def put_unsaved(self, key: str, value: Any) -> None:
        self.context[key] = value

    @command
    def put_object(self) -> None:
        self.context["bad"] = object()
        self.checkpoint()

    @command
    def get(self, key: str, default: Any = None) -> Any:
        return self.context.get(key, default)

    @command
    def own(self) -> dict[str, Any]:
        return dict(self.context.own)

    @command
    def restored(self) -> Any:
        return self.context.restored

    @command
    def pid(self) -> int:
        return os.getpid()


class InitOnce(ToolActor):
    """Its first start works; a restart fails in on_init when the marker file exists."""

    def on_init(self, config: dict[str, Any]) -> None:
        marker = config["marker"]
        if os.path.exists(marker):
            raise RuntimeError("cannot reach the license server")
        with open(marker, "w") as f:
            f.write("x")

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
