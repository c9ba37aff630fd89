"""Memory of one process as psutil sees it: USS (its own pages), PSS and RSS, in MiB."""

from __future__ import annotations

from typing import Any

import psutil

MIB = 1024.0 * 1024.0


def footprint(pid: int | None) -> dict[str, Any]:
    """USS, PSS and RSS of ``pid`` in MiB (``{"error": ...}`` if it cannot be read)."""
    if not pid:
        return {"error": "no pid"}
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"pid": pid, "uss_mib": round(info.uss / MIB, 2),
                           "rss_mib": round(info.rss / MIB, 2)}
    pss = getattr(info, "pss", None)
    if pss is not None:
        out["pss_mib"] = round(pss / MIB, 2)
    return out


def forker_footprint(tool_pid: int | None, supervisor_pid: int | None) -> dict[str, Any] | None:
    """The footprint of the process that forked the tool when that is not its supervisor
    (its zygote, actors/zygote.py); None with ``TOOLVISOR_ZYGOTE=off``."""
    try:
        parent = psutil.Process(tool_pid).ppid() if tool_pid else None
    except psutil.Error:
        return None
    return footprint(parent) if parent and parent != supervisor_pid else None
