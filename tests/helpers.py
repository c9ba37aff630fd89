"""Polling with deadlines (never bare sleeps) and process checks for the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from supervisors.processes.procs import pid_alive, session_pids


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, every: float = 0.01,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def wait_dead(*pids: int, timeout: float = 10.0) -> None:
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, what=f"pids {pids} to end")


def session_members(sid: int) -> list[psutil.Process]:
    out = []
    for pid in session_pids(sid):
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return out


def tree_pids(node: dict[str, Any]) -> list[int]:
    pids = [node["pid"]] if node.get("pid") else []
    for child in node.get("children", []):
        pids += tree_pids(child)
    return pids


def find(node: dict[str, Any], path: str) -> dict[str, Any]:
    if node.get("path") == path:
        return node
    for child in node.get("children", []):
        try:
            return find(child, path)
        except KeyError:
            pass
    raise KeyError(path)
