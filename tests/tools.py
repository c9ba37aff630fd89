"""Tools and hooks used by the tests (module level, so tool processes can import them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from actors import ToolActor, command
from supervisors import LifecycleHook


class Counter(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        self.n = config.get("start", 0)
        self.log_path = config.get("log")
        self._note(f"init {os.getpid()}")

    def on_pause(self) -> None:
        self._note("pause")

    def on_resume(self) -> None:
        self._note("resume")

    def on_stop(self) -> None:
        self._note(f"stop {self.name}")

    def _note(self, line: str) -> None:
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"{self.name} {line}\n")

    @command
    def add(self, k: int = 1) -> int:
        self.n += k
        return self.n

    @command
    def get(self) -> int:
        return self.n

    @command
    def pid(self) -> int:
        return os.getpid()

    @command
    def fail(self, message: str = "boom") -> None:
        raise ValueError(message)

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    @command
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @command
    def leave(self, error: str | None = None) -> str:
        self.exit(error)
        return "bye"

    @command
    def leave_slowly(self, linger: float, error: str | None = None) -> str:
        """Exit, with a non-daemon thread that holds the process ``linger`` seconds longer
        (the actor says goodbye first, then its process waits for the thread). The process
        also leaves its own process group, so that killing the group misses it."""
        import threading
        os.setpgid(0, os.getpgid(os.getppid()))
        threading.Thread(target=time.sleep, args=(linger,), daemon=False).start()
        self.exit(error)
        return "bye"

    @command
    def unsendable(self) -> Any:
        return object()

    @command
    def blob(self, size: int) -> bytes:
        return b"x" * size

    @command
    def memory(self) -> None:
        raise MemoryError("pretend we ran out")


class FailingInit(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        raise RuntimeError("cannot connect to the database")


class FailAfterFirst(ToolActor):
    """Starts once; every later start (a restart) fails in on_init."""

    def on_init(self, config: dict[str, Any]) -> None:
        marker = Path(config["marker"])
        if marker.exists():
            raise RuntimeError("second start refused")
        marker.write_text("started")

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class StubbornStop(ToolActor):
    """Ignores stop: on_stop never returns in time."""

    def on_stop(self) -> None:
        time.sleep(60)

    @command
    def pid(self) -> int:
        return os.getpid()


class BadPause(ToolActor):
    def on_pause(self) -> None:
        raise RuntimeError("pause is not supported")

    @command
    def pid(self) -> int:
        return os.getpid()


class Ticker(ToolActor):
    """Counts timer ticks; raises from a tick when told to."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.ticks = 0
        self.fail_at = config.get("fail_at")
        self.after(0.01, self.tick)

    def tick(self) -> None:
        self.ticks += 1
        if self.fail_at is not None and self.ticks >= self.fail_at:
            raise RuntimeError(f"tick {self.ticks} failed")
        self.after(0.01, self.tick)

    @command
    def ticks_so_far(self) -> int:
        return self.ticks


class RecordingHook(LifecycleHook):
    """Appends one line per hook call to a file (hooks run in supervisor processes)."""

    def __init__(self, path: str, tag: str = "hook") -> None:
        self.path = path
        self.tag = tag

    def _w(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{self.tag} {line}\n")

    def pre_start(self, tool: str) -> None:
        self._w(f"pre_start {tool}")

    def post_start(self, tool: str) -> None:
        self._w(f"post_start {tool}")

    def pre_stop(self, tool: str) -> None:
        self._w(f"pre_stop {tool}")

    def post_stop(self, tool: str) -> None:
        self._w(f"post_stop {tool}")

    def on_error(self, tool: str, error: Exception) -> None:
        self._w(f"on_error {tool} {type(error).__name__} {error}")


class ExplodingHook(LifecycleHook):
    def pre_start(self, tool: str) -> None:
        raise RuntimeError("hook bug")

    def post_start(self, tool: str) -> None:
        raise RuntimeError("hook bug")

    def on_error(self, tool: str, error: Exception) -> None:
        raise RuntimeError("hook bug")


class Hog(ToolActor):
    """Uses resources on request: memory, files, CPU, child processes."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.kept: list[Any] = []
        self.burning = False

    @command
    def leak(self, mb: int) -> int:
        for _ in range(mb):
            self.kept.append(bytearray(1024 * 1024))  # touched: really resident
        return len(self.kept)

    @command
    def leak_files(self, n: int) -> int:
        for _ in range(n):
            self.kept.append(open(os.devnull))  # noqa: SIM115 - leaking is the point
        return n

    @command
    def sleepers(self, n: int) -> list[int]:
        import subprocess

        procs = [subprocess.Popen(["sleep", "1000"]) for _ in range(n)]
        self.kept.extend(procs)
        return [p.pid for p in procs]

    @command
    def hungry_child(self, mb: int) -> int:
        """Start a child process that holds ``mb`` MiB."""
        import subprocess
        import sys

        code = f"x = bytearray({mb} * 1024 * 1024); import time; time.sleep(1000)"
        proc = subprocess.Popen([sys.executable, "-c", code])
        self.kept.append(proc)
        return proc.pid

    @command
    def burn(self) -> None:
        """Keep a core busy in 50 ms slices (the tool stays responsive between them)."""
        self.burning = True
        self.after(0, self._slice)

    def _slice(self) -> None:
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            pass
        if self.burning:
            self.after(0, self._slice)

    @command
    def tmp(self, write: bool = True) -> str:
        if write:
            with open(os.path.join(self.tmpdir, "scratch.txt"), "w") as f:
                f.write("data")
        return self.tmpdir

    @command
    def pid(self) -> int:
        return os.getpid()

    @command
    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class SlowFailAfterFirst(ToolActor):
    """Starts once; every later start sleeps (config "sleep", default 2 s) and then raises
    in on_init: with no backoff, a restart loop (OTP's hanging_restart_loop)."""

    def on_init(self, config: dict[str, Any]) -> None:
        marker = Path(config["marker"])
        if marker.exists():
            time.sleep(float(config.get("sleep", 2.0)))
            raise RuntimeError("slow init failed")
        marker.write_text("started")

    @command
    def pid(self) -> int:
        return os.getpid()


class Appender(ToolActor):
    """Appends lines to a file; can end its own process abruptly."""

    @command
    def append(self, path: str, line: str) -> str:
        with open(path, "a") as f:
            f.write(line + "\n")
        return line

    @command
    def die(self) -> None:
        os._exit(3)

    @command
    def blob(self, mb: float) -> bytes:
        return b"x" * int(mb * 1024 * 1024)

    @command
    def die_after(self, seconds: float) -> None:
        """Busy for ``seconds`` (calls queue up behind it), then end the process."""
        time.sleep(seconds)
        os._exit(3)

    @command
    def pid(self) -> int:
        return os.getpid()

    @command
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @command
    def spin(self) -> None:
        while True:
            time.sleep(0.2)


class SlowStop(ToolActor):
    """on_stop takes config "stop_s" seconds, then writes "stopped" to config "log"."""

    def on_stop(self) -> None:
        time.sleep(float(self.config.get("stop_s", 6.0)))
        with open(self.config["log"], "a") as f:
            f.write("stopped\n")

    @command
    def pid(self) -> int:
        return os.getpid()


class HangingPause(ToolActor):
    """on_pause never returns."""

    def on_pause(self) -> None:
        while True:
            time.sleep(0.1)

    @command
    def pid(self) -> int:
        return os.getpid()


class HotCode(ToolActor):
    """Tells what the host's hot-code relocation left in this process (actors/hotcode.py)."""

    @command
    def relocated(self) -> dict[str, Any]:
        from actors import hotcode
        from actors.runner import ToolRunner

        start = ToolRunner._on_start.__code__
        return {"in_use": hotcode.in_use(),
                "runs_a_copy": any(start is not code and start == code
                                   for code in hotcode._originals)}
