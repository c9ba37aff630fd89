"""Tools for the security tests (importable by tool processes)."""

from __future__ import annotations

import functools
import multiprocessing.util
import os
import socket
import subprocess
import sys
import threading

from actors import ToolActor, command


class EnvProbe(ToolActor):
    """Reports what its process sees: environment, working directory, umask."""

    @command
    def env(self) -> dict:
        return dict(os.environ)

    @command
    def cwd(self) -> str:
        return os.getcwd()

    @command
    def umask(self) -> int:
        old = os.umask(0)
        os.umask(old)
        return old

    @command
    def fail(self) -> None:
        raise ValueError("asked to fail")


class Reacher(ToolActor):
    """Reaches outside its process as told: sockets, programs, forks (actors.reach)."""

    @command
    def connect(self, host: str, port: int) -> str:
        with socket.create_connection((host, port), timeout=5):
            return "connected"

    @command
    def connect_errno(self, host: str, port: int) -> int | None:
        """What a library that copes with a refused socket sees: an OSError's errno."""
        try:
            with socket.create_connection((host, port), timeout=5):
                return None
        except OSError as exc:
            return exc.errno

    @command
    def connect_in_thread(self, host: str, port: int) -> str:
        out: list[str] = []

        def reach() -> None:
            try:
                out.append(self.connect(host, port))
            except Exception as exc:
                out.append(type(exc).__name__)

        t = threading.Thread(target=reach)
        t.start()
        t.join(10)
        return out[0]

    @command
    def bind(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @command
    def unix(self, path: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            return "connected"

    @command
    def run(self, argv: list[str]) -> int:
        return subprocess.run(argv, check=False).returncode

    @command
    def system(self, line: str) -> int:
        return os.system(line)

    @command
    def fork(self) -> int:
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    @command
    def spawn_python(self) -> int:
        """What multiprocessing's spawn start method does: no audit event of its own."""
        pid = multiprocessing.util.spawnv_passfds(sys.executable, [sys.executable, "-c", "pass"], [])
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    @command
    def ping(self) -> str:
        return "pong"

    @command
    def call(self, path: str) -> str:
        return self.tool(path).call("ping")

    @command
    def later(self, argv: list[str]) -> bool:
        """A timer that is a standard-library function: still this tool's code."""
        self.after(0, functools.partial(subprocess.run, argv, check=False))
        return True

    @command
    def listen_unbound(self) -> int:
        """listen() on a socket never bound: the kernel picks a port on every interface."""
        with socket.socket() as s:
            s.listen()
            return s.getsockname()[1]

    @command
    def run_with_path(self, argv: list[str], path: str) -> int:
        return subprocess.run(argv, env={"PATH": path}, check=False).returncode

    @command
    def ask_into_system(self, path: str) -> bool:
        """An ask whose on_reply is a library function: the tool's code when it runs."""
        self.tool(path).ask("ping", on_reply=os.system, timeout=5)
        return True

    @command
    def bind_any(self) -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]
