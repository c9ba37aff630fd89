"""Tools for the security tests (importable by tool processes)."""

from __future__ import annotations

import os

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
