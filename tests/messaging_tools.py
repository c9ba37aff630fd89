"""Tools that call, send to and ask other tools (module level, so tool processes import them)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from actors import ToolActor, command


class Relay(ToolActor):
    """Calls, sends and asks whatever path it is told to; keeps what comes back."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.replies: list[Any] = []
        self.seen: list[Any] = []

    @command
    def call(self, path: str, cmd: str, args: dict[str, Any] | None = None,
             within: float | None = None) -> Any:
        return self.tool(path).call(cmd, timeout=within, **(args or {}))

    @command
    def call_error(self, path: str, cmd: str, args: dict[str, Any] | None = None,
                   within: float | None = None) -> dict[str, Any]:
        """The error a call raises, as data (type, code, message, seconds)."""
        t0 = time.monotonic()
        try:
            value = self.tool(path).call(cmd, timeout=within, **(args or {}))
        except Exception as exc:
            return {"type": type(exc).__name__, "message": str(exc),
                    "seconds": time.monotonic() - t0}
        return {"type": None, "value": value, "seconds": time.monotonic() - t0}

    @command
    def slow_then_call(self, seconds: float, path: str, cmd: str) -> dict[str, Any]:
        time.sleep(seconds)
        return self.call_error(path, cmd, within=30)

    @command
    def send(self, path: str, cmd: str, n: int = 1, args: dict[str, Any] | None = None) -> int:
        ref = self.tool(path)
        for i in range(n):
            ref.send(cmd, **{**(args or {}), **({"i": i} if n > 1 else {})})
        return n

    @command
    def send_then_call(self, path: str, n: int) -> list[Any]:
        ref = self.tool(path)
        for i in range(n):
            ref.send("record", i=i)
        return ref.call("seen_items")

    @command
    def send_error(self, path: str, cmd: str, n: int = 1) -> dict[str, Any]:
        ref = self.tool(path)
        sent = 0
        try:
            for i in range(n):
                ref.send(cmd, i=i)
                sent += 1
        except Exception as exc:
            return {"type": type(exc).__name__, "message": str(exc), "sent": sent}
        return {"type": None, "sent": sent}

    @command
    def ask(self, path: str, cmd: str, n: int = 1, args: dict[str, Any] | None = None) -> int:
        ref = self.tool(path)
        for i in range(n):
            ref.ask(cmd, on_reply=self._got, **{**(args or {}), **({"i": i} if n > 1 else {})})
        return n

    @command
    def ask_within(self, path: str, cmd: str, within: Any, args: dict[str, Any] | None = None) -> str:
        """An ask with ``timeout=within``; a bad timeout comes back as text."""
        try:
            self.tool(path).ask(cmd, on_reply=self._got, timeout=within, **(args or {}))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "asked"

    def _got(self, result: Any) -> None:
        if isinstance(result, Exception):
            self.replies.append({"error": type(result).__name__, "message": str(result)})
        else:
            self.replies.append(result)

    @command
    def bad_ask(self, path: str) -> str:
        try:
            self.tool(path).ask("get", on_reply="not a function")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    @command
    def bad_args(self, path: str) -> str:
        try:
            self.tool(path).call("record", item=object())
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    @command
    def guarded_call(self, path: str, cmd: str) -> str:
        """A call under a permission check that refuses everything (then lifted again)."""
        from actors import PermissionDenied
        from actors.peers import set_permission_check

        def deny(caller: str, level: str, callee: Any) -> None:
            raise PermissionDenied(f"{caller} ({level}) may not call {callee.path} ({callee.level})")

        set_permission_check(deny)
        try:
            self.tool(path).call(cmd)
        except PermissionDenied as exc:
            return f"PermissionDenied: {exc}"
        finally:
            set_permission_check(None)
        return "allowed"

    @command
    def got(self) -> list[Any]:
        return self.replies

    @command
    def stats(self, path: str) -> dict[str, Any]:
        return self.tool(path).stats()

    @command
    def record(self, item: Any = None, i: int | None = None) -> int:
        self.seen.append(item if i is None else i)
        return len(self.seen)

    @command
    def seen_items(self) -> list[Any]:
        return self.seen

    @command
    def fail(self, i: int = 0) -> None:
        raise ValueError(f"failing on purpose ({i})")

    @command
    def get(self) -> str:
        return self.path

    @command
    def pid(self) -> int:
        return os.getpid()

    @command
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    @command
    def deadline_left(self) -> float:
        """What is left of the deadline of the call being served (seconds)."""
        return -1.0 if self.call_deadline is None else self.call_deadline - time.time()

    @command
    def later(self, path: str, cmd: str, delay: float, args: dict[str, Any] | None = None) -> bool:
        """Call ``path`` from a timer, ``delay`` seconds from now; the outcome lands in replies."""
        def go() -> None:
            try:
                self.replies.append(self.tool(path).call(cmd, **(args or {})))
            except Exception as exc:
                self.replies.append({"error": type(exc).__name__, "message": str(exc)})

        self.after(delay, go)
        return True
