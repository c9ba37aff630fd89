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
