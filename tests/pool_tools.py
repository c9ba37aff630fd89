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
    def note(self, path: str, token: str, seconds: float = 0.0) -> int:
        """Append ``token`` to the file ``path`` (one line), then sleep: a call with an
        effect, to count how many times each call ran."""
        with open(path, "a") as f:
            f.write(token + "\n")
        time.sleep(seconds)
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


class Flaky(Worker):
    """A worker whose start is refused while the file named in its config exists."""

    def on_init(self, config: dict[str, Any]) -> None:
        if os.path.exists(config["refuse_if"]):
            raise RuntimeError("init refused: the flag file is there")
        super().on_init(config)


class Caller(ToolActor):
    """Calls a pool from inside a tool (the tool-to-tool path)."""

    @command
    def spread(self, path: str, n: int) -> list[int]:
        """Call ``work`` on ``path`` ``n`` times, one after another; the pids that served."""
        ref = self.tool(path)
        return [ref.call("work") for _ in range(n)]

    @command
    def loop(self, path: str, seconds: float) -> dict[str, Any]:
        """Call ``work`` on ``path`` for ``seconds``: how many calls ran and the errors."""
        ref = self.tool(path)
        end = time.monotonic() + seconds
        done, errors = 0, []
        while time.monotonic() < end:
            try:
                ref.call("work", seconds=0.005, timeout=10)
                done += 1
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(f"{type(exc).__name__}: {exc}")
        return {"done": done, "errors": errors[:5], "failed": len(errors)}

    @command
    def notes(self, path: str, file: str, prefix: str, seconds: float) -> dict[str, Any]:
        """Call ``note`` on ``path`` for ``seconds``, a fresh token each time: the tokens
        of the calls that succeeded, and the errors."""
        ref = self.tool(path)
        end = time.monotonic() + seconds
        ok, errors, i = [], [], 0
        while time.monotonic() < end:
            token = f"{prefix}{i}"
            i += 1
            try:
                ref.call("note", path=file, token=token, seconds=0.003, timeout=10)
                ok.append(token)
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(f"{token}: {type(exc).__name__}: {exc}")
        return {"ok": ok, "errors": errors[:5], "failed": len(errors)}

    @command
    def ask_note(self, path: str, file: str, token: str, seconds: float) -> None:
        """Ask ``path`` to ``note`` (the answer comes back later, to ``asked``)."""
        self.tool(path).ask("note", on_reply=self._answered, path=file, token=token,
                            seconds=seconds)

    def _answered(self, result: Any) -> None:
        self.answers = [*getattr(self, "answers", []), result if not isinstance(result, Exception)
                        else f"{type(result).__name__}: {result}"]

    @command
    def asked(self) -> list[Any]:
        """The answers to ``ask_note`` so far."""
        return list(getattr(self, "answers", []))

    @command
    def work_when(self, path: str, flag: str) -> int:
        """Wait (reading nothing meanwhile) until the file ``flag`` exists, 20 s at most,
        then call ``work`` on ``path``."""
        give_up = time.monotonic() + 20
        while not os.path.exists(flag) and time.monotonic() < give_up:
            time.sleep(0.01)
        return self.tool(path).call("work", timeout=10)

    @command
    def call_one(self, path: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call ``command`` on ``path`` once: ``{"ok": result}`` or ``{"error": text}``."""
        try:
            return {"ok": self.tool(path).call(command, timeout=30, **args)}
        except Exception as exc:  # noqa: BLE001 - reported to the test
            return {"error": f"{type(exc).__name__}: {exc}"}
