"""The MCP tool catalog: every command of every live tool in the tree, under an MCP-safe name.

A tool ``workers/counter`` with commands ``add`` and ``get`` becomes the MCP
tools ``counter_add`` and ``counter_get``. Where two tools share a leaf name
(``workers/echo`` and ``pipeline/echo``) their names carry the whole path joined
by ``-`` (``workers-echo_echo``). Every name matches ``^[a-zA-Z0-9_-]{1,64}$``:
other characters become ``_`` and a name longer than 64 characters is cut and
given a stable suffix (8 hex digits of its SHA-256). Descriptions come from the
commands' docstrings and input schemas from their type hints (``actors.schema``);
the tool classes are loaded in this process by their ``module:Class`` name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loguru import logger

from actors.loading import load_object
from actors.schema import CommandSchema, command_schemas

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NAME = 64
HIDDEN_PREFIX = "_"  # toolvisor's own tools (the audit writer) are never offered
GONE_STATES = {"stopped", "failed"}


@dataclass(frozen=True)
class Entry:
    """One MCP tool: the supervised tool's path, the command, its schema and description."""

    name: str
    path: str
    command: str
    description: str
    input_schema: dict[str, Any]


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[a-zA-Z0-9_-]`` as ``_``, cut to 64 with a stable suffix."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", text) or "_"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}_{digest}"
    return name


def live_tools(tree: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(path, actor)`` of every tool in the tree that is not stopped or failed; a pool is
    one tool (its path, ``w/fetch``), however many instances it has."""
    seen: set[str] = set()
    for path, actor in _live(tree):
        if path not in seen:
            seen.add(path)
            yield path, actor


def _live(tree: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if tree.get("kind") == "tool":
        path = tree.get("path") or ""
        if (tree.get("actor") and str(tree.get("state")) not in GONE_STATES
                and not path.split("/")[0].startswith(HIDDEN_PREFIX)):
            if tree.get("pool"):  # an instance (w/fetch#2): calls go to the pool's least busy
                path = f"{path.rpartition('/')[0]}/{tree['pool']}".strip("/")
            yield path, str(tree["actor"])
        return
    for child in tree.get("children", []):
        yield from _live(child)


class Catalog:
    """Name -> entry for the live tools; rebuilt from ``system.tree()`` by ``update``."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._schemas: dict[str, list[CommandSchema]] = {}

    def update(self, tree: dict[str, Any]) -> bool:
        """Rebuild from a tree; True when the set of names (or what they point at) changed."""
        tools = sorted(live_tools(tree))
        leaves: dict[str, int] = {}
        for path, _ in tools:
            leaf = path.rsplit("/", 1)[-1]
            leaves[leaf] = leaves.get(leaf, 0) + 1
        entries: dict[str, Entry] = {}
        for path, actor in tools:
            leaf = path.rsplit("/", 1)[-1]
            prefix = leaf if leaves[leaf] == 1 else path.replace("/", "-")
            for cmd in self._commands(actor):
                name = safe_name(f"{prefix}_{cmd.name}")
                if name in entries:  # still a clash after cleaning: make it unique, stably
                    digest = hashlib.sha256(f"{path}:{cmd.name}".encode()).hexdigest()[:8]
                    name = safe_name(f"{name}_{digest}")
                entries[name] = Entry(name, path, cmd.name, cmd.description, cmd.input_schema)
        changed = entries != self.entries
        self.entries = entries
        return changed

    def _commands(self, actor: str) -> list[CommandSchema]:
        if actor not in self._schemas:
            try:
                self._schemas[actor] = command_schemas(load_object(actor))
            except Exception as exc:  # the tool runs, but this process cannot load its class
                logger.warning("cannot list the commands of {}: {}", actor, exc)
                self._schemas[actor] = []
        return self._schemas[actor]

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def __len__(self) -> int:
        return len(self.entries)
