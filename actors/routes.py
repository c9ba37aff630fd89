"""The route directory: where the tool at a path is serving now, for tools that call tools.

Each supervisor writes one small file per child under ``<runtime dir>/routes/``
(kind, state, pid, socket, security level, the settings for rerunning an idempotent
call it dies in) whenever that child's state changes,
and removes it when the child is removed. So every entry has exactly one writer,
its supervisor; writes are atomic (write a temporary file, then rename), so a
reader sees the old entry or the new one, never half of one. Tools read entries
when they first call a path and again after a failure (a stale entry names a
pid that is gone: the tool is restarting).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

ROUTES = "routes"


def _file(runtime_dir: str, path: str) -> str:
    return os.path.join(runtime_dir, ROUTES, quote(path, safe="") or "%root")


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One child as its supervisor last described it."""

    path: str
    kind: str                  # "tool" | "supervisor"
    state: str                 # a ToolState value
    pid: int | None
    socket: str | None         # the tool's fast-path socket, if it has one
    level: str = "standard"    # its security level
    generation: int = 0
    retry: dict[str, Any] | None = None  # rerun an idempotent call it dies in (actors.retry)

    @property
    def serving(self) -> bool:
        return self.state in ("running", "paused") and bool(self.pid)


def publish(runtime_dir: str, entry: RouteEntry) -> None:
    """Write (or replace) the entry for ``entry.path``; only its supervisor calls this."""
    target = _file(runtime_dir, entry.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"path": entry.path, "kind": entry.kind, "state": entry.state, "pid": entry.pid,
                   "socket": entry.socket, "level": entry.level,
                   "generation": entry.generation, "retry": entry.retry}, f)
    os.replace(tmp, target)


def withdraw(runtime_dir: str, path: str) -> None:
    """The child at ``path`` is gone from its supervisor (removed)."""
    try:
        os.unlink(_file(runtime_dir, path))
    except FileNotFoundError:
        pass


def lookup(runtime_dir: str, path: str) -> RouteEntry | None:
    """The entry for ``path``, or None if no supervisor has a child there."""
    try:
        with open(_file(runtime_dir, path)) as f:
            data: dict[str, Any] = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None
    return RouteEntry(str(data["path"]), str(data["kind"]), str(data["state"]), data.get("pid"),
                      data.get("socket"), str(data.get("level") or "standard"),
                      int(data.get("generation") or 0),
                      data.get("retry") if isinstance(data.get("retry"), dict) else None)


def members(runtime_dir: str, pool: str) -> list[RouteEntry]:
    """The entries of the pool at ``pool`` (its instances ``pool#1``, ``pool#2``, ...), in order.

    A pool has no entry of its own: its instances are ordinary children named
    ``<name>#<k>`` (see ``supervisors.tree.pools``)."""
    prefix = quote(f"{pool}#", safe="")
    try:
        names = os.listdir(os.path.join(runtime_dir, ROUTES))
    except OSError:
        return []
    found: list[tuple[int, RouteEntry]] = []
    for file in names:
        if not file.startswith(prefix) or not file[len(prefix):].isdigit():
            continue
        entry = lookup(runtime_dir, f"{pool}#{file[len(prefix):]}")
        if entry is not None:
            found.append((int(file[len(prefix):]), entry))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]
