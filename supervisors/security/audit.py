"""The tamper-evident audit log: hash-chained JSON lines, one writer, verify and tail.

Each line is one JSON object that starts with the hash of the line before it
and ends with its own hash::

    {"prev":"<64 hex>","seq":7,"ts":1764630000.123,"principal":"alice","level":"standard",
     "operation":"call","resource":"tool:workers/counter","result":"ok","context":{...},"hash":"<64 hex>"}

``hash`` is the SHA-256 (hex) of the line's bytes up to (not including)
``,"hash":"``; ``prev`` of the first line ever is 64 zeros; ``seq`` counts from 1.
Changing any byte of a line breaks its hash; inserting or removing a line
breaks the next line's ``prev`` (and the ``seq`` run). When the file grows
past ``max_bytes`` it is renamed ``PATH.1`` (older ones shift to ``.2`` ...,
``keep`` are kept) and a new ``PATH`` continues the same chain.

Only ``AuditChain`` writes, and only one of it runs per log: inside the
``AuditWriter`` tool (one process, its own mailbox; no locks). A line is
flushed to the OS before the writer answers, and the host waits for that
answer before it returns the answer of the operation being recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from actors import ToolActor, command
from actors.permissions import audit_entry

GENESIS = "0" * 64
HASH_TAIL = len(',"hash":"') + 64 + len('"}')
FIELDS = ("ts", "principal", "level", "operation", "resource", "result", "context")


def make_line(prev: str, seq: int, entry: dict[str, Any]) -> tuple[str, str]:
    """The line for ``entry`` after a line whose hash is ``prev``; returns (line, its hash)."""
    body = {"prev": prev, "seq": seq}
    for key in FIELDS:
        body[key] = entry.get(key)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True, default=str)[:-1]
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f'{text},"hash":"{digest}"}}', digest


def files_of(path: str) -> list[str]:
    """The log's files, oldest first: PATH.N ... PATH.1, PATH (every PATH.<number> that exists)."""
    folder, base = os.path.split(os.path.abspath(path))
    numbers = []
    try:
        for name in os.listdir(folder or "."):
            if name.startswith(base + ".") and name[len(base) + 1:].isdigit():
                numbers.append(int(name[len(base) + 1:]))
    except FileNotFoundError:
        pass
    rotated = [f"{path}.{n}" for n in sorted(numbers, reverse=True)]
    return [*rotated, *([path] if os.path.exists(path) else [])]


def _missing_file(path: str, files: list[str]) -> str | None:
    numbers = sorted(int(f.rsplit(".", 1)[1]) for f in files if f != path)
    for want, got in enumerate(numbers, 1):
        if want != got:
            return f"{path}.{want}"
    return None


def _last_line(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            back = min(size, 65536)
            while True:
                f.seek(size - back)
                lines = f.read(back).splitlines()
                if len(lines) > 1 or back == size:
                    return lines[-1].decode() if lines else None
                back = min(size, back * 4)
    except FileNotFoundError:
        return None


class AuditChain:
    """Appends entries to the chain at ``path`` (the single writer)."""

    def __init__(self, path: str, max_bytes: int = 64 * 1024 * 1024, keep: int = 20) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = int(max_bytes)
        self.keep = int(keep)
        self.prev, self.seq = GENESIS, 0
        for candidate in reversed(files_of(self.path)):
            last = _last_line(candidate)
            if last:
                try:
                    data = json.loads(last)
                    self.prev, self.seq = data["hash"], int(data["seq"])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"audit log {candidate} ends with a damaged line; run "
                                     f"'toolvisor audit verify {self.path}' and move it aside")
                break
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.file = os.fdopen(fd, "a", encoding="ascii")

    def append(self, entries: list[dict[str, Any]]) -> int:
        for entry in entries:
            self.seq += 1
            line, self.prev = make_line(self.prev, self.seq, entry)
            self.file.write(line + "\n")
        self.file.flush()
        if self.file.tell() >= self.max_bytes:
            self.rotate()
        return self.seq

    def rotate(self) -> None:
        self.file.close()
        rotated = files_of(self.path)[:-1]
        for n in range(len(rotated), 0, -1):
            if n >= self.keep:
                os.unlink(f"{self.path}.{n}")
            else:
                os.rename(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.rename(self.path, f"{self.path}.1")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.file = os.fdopen(fd, "a", encoding="ascii")

    def close(self) -> None:
        self.file.close()


class AuditWriter(ToolActor):
    """The one writer of a system's audit log, supervised like any tool."""

    def on_init(self, config: dict) -> None:
        self.chain = AuditChain(config["path"], config.get("max_bytes", 64 * 1024 * 1024),
                                config.get("keep", 20))

    @command
    def append(self, entries: list) -> int:
        return self.chain.append(entries)

    @command
    def head(self) -> dict:
        return {"seq": self.chain.seq, "hash": self.chain.prev}

    def on_stop(self) -> None:
        self.chain.close()


entry = audit_entry  # one record: ts, principal, level, operation, resource, result, context


# ----------------------------------------------------------------------------- verify and tail
@dataclass
class Verdict:
    ok: bool
    lines: int
    files: list[str]
    problem: str | None = None
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"intact: {self.lines} lines in {len(self.files)} file(s)"
        return f"{self.file}:{self.line}: {self.problem}"


def verify(path: str) -> Verdict:
    """Check the whole chain (rotated files included); name the first bad line."""
    files = files_of(path)
    if not files:
        return Verdict(False, 0, [], f"no audit log at {path}", path, None)
    gap = _missing_file(path, files)
    if gap:
        return Verdict(False, 0, files, f"rotated file {gap} is missing (lines removed)", gap, None)
    prev: str | None = None
    last_seq: int | None = None
    total = 0
    sha = hashlib.sha256
    for name in files:
        with open(name, "rb") as f:
            for n, raw in enumerate(f, 1):
                line = raw.rstrip(b"\n")
                total += 1
                if (len(line) < 80 + HASH_TAIL or not line.startswith(b'{"prev":"')
                        or line[73:81] != b'","seq":' or not line.endswith(b'"}')
                        or line[-HASH_TAIL:-HASH_TAIL + 9] != b',"hash":"'):
                    return Verdict(False, total, files, "malformed or truncated line (altered)", name, n)
                if sha(line[:-HASH_TAIL]).hexdigest().encode() != line[-66:-2]:
                    return Verdict(False, total, files, "line altered: its hash does not match its "
                                   "content", name, n)
                comma = line.find(b",", 81)
                try:
                    seq = int(line[81:comma])
                except ValueError:
                    return Verdict(False, total, files, "malformed sequence number (altered)", name, n)
                line_prev = line[9:73].decode()
                if prev is None:
                    if seq == 1 and line_prev != GENESIS:
                        return Verdict(False, total, files, "the first line does not start the chain",
                                       name, n)
                elif line_prev != prev:
                    if last_seq is not None and seq > last_seq + 1:
                        why = f"{seq - last_seq - 1} line(s) removed before this line"
                    elif last_seq is not None and seq <= last_seq:
                        first = n - (last_seq - seq + 1)  # where the run of seq numbers went wrong
                        if first >= 1:
                            return Verdict(False, total, files, "line inserted (the lines after it "
                                           "repeat its sequence numbers)", name, first)
                        why = "line inserted before this line"
                    else:
                        why = "chain broken: the previous line was altered, inserted or removed"
                    return Verdict(False, total, files, why, name, n)
                elif last_seq is not None and seq != last_seq + 1:
                    return Verdict(False, total, files, "sequence broken (line inserted or removed)",
                                   name, n)
                prev, last_seq = line[-66:-2].decode(), seq
    return Verdict(True, total, files)


def tail(path: str, n: int = 20) -> Iterator[dict[str, Any]]:
    """The last ``n`` entries of the log (across rotation), oldest first."""
    out: list[dict[str, Any]] = []
    for name in reversed(files_of(path)):
        with open(name) as f:
            lines = f.readlines()
        chunk = []
        for line in lines[-(n - len(out)):] if n > len(out) else []:
            try:
                chunk.append(json.loads(line))
            except ValueError:
                chunk.append({"damaged": line.rstrip("\n")})
        out = chunk + out
        if len(out) >= n:
            break
    yield from out[-n:]


def format_entry(e: dict[str, Any]) -> str:
    if "damaged" in e:
        return f"(damaged line) {e['damaged'][:100]}"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("ts") or 0))
    ctx = e.get("context") or {}
    extra = " ".join(f"{k}={v}" for k, v in ctx.items())
    return (f"{e.get('seq', '?'):>6} {when} {e.get('principal') or '-':<12} {e.get('operation'):<10} "
            f"{e.get('resource')} -> {e.get('result')}" + (f"  [{extra}]" if extra else ""))
