"""The context store: one tool that owns the system's SQLite database.

It runs as an ordinary supervised tool (``_store``, directly under the root),
so tools reach it with a tool-to-tool call and the host with a handle; no
other process writes the database. The database is in WAL mode with
``synchronous=FULL``: a ``put`` is answered only after its transaction is
committed and the WAL is fsynced, so an acknowledged checkpoint survives a
SIGKILL of any process (and a power cut) right after the acknowledgement.
(NORMAL would survive a process kill too, since the WAL is in the page cache,
but not a power cut; the cost of FULL is one fsync per checkpoint.)

Tables: ``contexts`` (one row per path: "" is the system, "w" a supervisor,
"w/k" a tool; the value is a msgpack map; optional expiry), ``snapshots``
(copies of every context under a label) and ``failures`` (the failure
records, bounded per tool). A file that cannot be opened (corrupted, locked)
does not stop the store: it answers every request with ``StoreUnavailable``
naming the file and the problem, tools start without restored state, and it
tries the file again every ``REOPEN_EVERY`` seconds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from actors import ToolActor, command
from actors.codec import pack_value, unpack_value
from actors.errors import ToolError

#: The store runs at security level "low" with these hard limits (the level's ceilings).
STORE_LIMITS = {"open_files": 1024, "cpu_seconds": 86400, "memory_mb": 2048}
REOPEN_EVERY = 5.0
SWEEP_EVERY = 1.0
FAILURES_KEPT = 100
FLUSH_EVERY = 0.5         # failure records are written in one transaction per flush
PENDING_MAX = 5000        # failure records waiting for a flush; beyond, the oldest are dropped
LOCK_WAIT = 0.5   # seconds to wait for a lock held by someone else

SCHEMA = """
create table if not exists contexts (path text primary key, data blob not null,
                                     updated real not null, expires real);
create table if not exists snapshots (label text not null, path text not null, data blob not null,
                                      expires real, taken real not null, primary key (label, path));
create table if not exists failures (id integer primary key autoincrement, tool text not null,
                                     time real not null, record blob not null);
create index if not exists failures_tool on failures (tool, id);
"""


def ancestors(path: str) -> list[str]:
    """'a/b/c' -> ['a/b', 'a', ''] (nearest first; '' is the system)."""
    parts = path.split("/")[:-1] if path else []
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)] + ([""] if path else [])


def open_db(path: str) -> sqlite3.Connection:
    """Open (or create) the database in WAL mode with synchronous=FULL; raise if unusable."""
    db = sqlite3.connect(path, timeout=LOCK_WAIT, isolation_level=None, check_same_thread=False)
    try:
        mode = db.execute("pragma journal_mode=wal").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL mode (journal_mode={mode})")
        db.execute("pragma synchronous=full")
        db.executescript(SCHEMA)
        db.execute("select count(*) from contexts").fetchone()
    except BaseException:
        db.close()
        raise
    return db


class ContextStore(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        self.file = str(config["path"])
        self.db: sqlite3.Connection | None = None
        self.problem: str | None = None
        self.tried = 0.0
        self.pending: list[dict[str, Any]] = []
        self._open()
        self.after(SWEEP_EVERY, self._sweep)
        self.after(FLUSH_EVERY, self._flush_timer)

    def on_stop(self) -> None:
        self._flush()
        if self.db is not None:
            self.db.close()
            self.db = None

    # -- the database -------------------------------------------------------------------
    def _open(self) -> None:
        self.tried = time.monotonic()
        try:
            os.makedirs(os.path.dirname(self.file) or ".", exist_ok=True)
            self.db = open_db(self.file)
            if self.problem:
                self.log.warning("context store {} is usable again", self.file)
            self.problem = None
        except (sqlite3.Error, OSError) as exc:
            self.db = None
            hint = ("another process holds a lock on it: stop that process"
                    if "locked" in str(exc) else
                    "move the file away (or restore it from a backup) and restart the system")
            self.problem = (f"the context store {self.file} cannot be used: {exc}; tools start "
                            f"without restored state and checkpoints are refused ({hint})")
            self.log.error("{}", self.problem)

    def _db(self) -> sqlite3.Connection:
        if self.db is None and time.monotonic() - self.tried >= REOPEN_EVERY:
            self._open()
        if self.db is None:
            raise ToolError(self.problem or "the context store is not open", type="StoreUnavailable")
        return self.db

    def _sweep(self) -> None:
        try:
            if self.db is not None:
                self.db.execute("delete from contexts where expires is not null and expires <= ?",
                                (time.time(),))
        except sqlite3.Error as exc:
            self.log.warning("context store: expiry sweep failed: {}", exc)
        self.after(SWEEP_EVERY, self._sweep)

    def _read(self, db: sqlite3.Connection, path: str) -> dict[str, Any]:
        row = db.execute("select data from contexts where path = ? and (expires is null or "
                         "expires > ?)", (path, time.time())).fetchone()
        return dict(unpack_value(row[0])) if row else {}

    # -- commands -----------------------------------------------------------------------
    @command
    def health(self) -> dict[str, Any]:
        if self.db is None:
            try:
                self._db()
            except ToolError:
                pass
        return {"ok": self.db is not None, "problem": self.problem, "file": self.file}

    @command(idempotent=True)
    def load(self, path: str) -> dict[str, Any]:
        """A tool's own context and its ancestors' (nearest first)."""
        db = self._db()
        return {"own": self._read(db, path), "ancestors": [self._read(db, a) for a in ancestors(path)]}

    @command(idempotent=True)
    def get(self, path: str) -> dict[str, Any]:
        return self._read(self._db(), path)

    @command(idempotent=True)
    def put(self, path: str, values: dict[str, Any], expires_in: float | None = None) -> bool:
        """Replace the context at ``path``; answered once it is on disk."""
        db = self._db()
        now = time.time()
        db.execute("insert or replace into contexts (path, data, updated, expires) values "
                   "(?, ?, ?, ?)", (path, pack_value(dict(values)), now,
                                    now + float(expires_in) if expires_in else None))
        return True

    @command(idempotent=True)
    def merge(self, path: str, values: dict[str, Any]) -> dict[str, Any]:
        """Set some keys of the context at ``path`` (supervisors' and the system's contexts)."""
        db = self._db()
        merged = {**self._read(db, path), **values}
        db.execute("insert or replace into contexts (path, data, updated, expires) values "
                   "(?, ?, ?, null)", (path, pack_value(merged), time.time()))
        return merged

    @command(idempotent=True)
    def forget(self, path: str) -> int:
        """Remove the context of ``path`` and everything beneath it (a removed tool)."""
        db = self._db()
        cur = db.execute("delete from contexts where path = ? or path like ? escape '\\'",
                         (path, _like_prefix(path)))
        return cur.rowcount

    @command(idempotent=True)
    def snapshot(self, label: str) -> int:
        with transaction(self._db()) as db:
            db.execute("delete from snapshots where label = ?", (label,))
            db.execute("insert into snapshots (label, path, data, expires, taken) select ?, path, "
                       "data, expires, ? from contexts", (label, time.time()))
            n = db.execute("select count(*) from snapshots where label = ?", (label,)).fetchone()[0]
        return int(n)

    @command
    def snapshots(self) -> list[str]:
        rows = self._db().execute("select distinct label from snapshots order by label").fetchall()
        return [r[0] for r in rows]

    @command(idempotent=True)
    def restore_snapshot(self, label: str) -> int:
        db = self._db()
        if not db.execute("select 1 from snapshots where label = ?", (label,)).fetchone():
            raise ToolError(f"no snapshot named {label!r}; snapshots: "
                            f"{', '.join(self.snapshots()) or 'none'}", type="NoSuchSnapshot")
        with transaction(db):
            db.execute("delete from contexts")
            db.execute("insert into contexts (path, data, updated, expires) select path, data, ?, "
                       "expires from snapshots where label = ?", (time.time(), label))
            n = db.execute("select count(*) from contexts").fetchone()[0]
        return int(n)

    @command
    def record_failure(self, record: dict[str, Any]) -> None:
        """Keep a failure record; records are written in batches (diagnostics, not state:
        one fsync per flush instead of one per record)."""
        self.pending.append(record)
        if len(self.pending) > PENDING_MAX:
            del self.pending[: len(self.pending) - PENDING_MAX]

    def _flush_timer(self) -> None:
        self._flush()
        self.after(FLUSH_EVERY, self._flush_timer)

    def _flush(self) -> None:
        db = self.db
        if not self.pending or db is None:
            return
        batch, self.pending = self.pending, []
        try:
            with transaction(db):
                tools = set()
                for record in batch:
                    tool = str(record.get("tool", ""))
                    tools.add(tool)
                    db.execute("insert into failures (tool, time, record) values (?, ?, ?)",
                               (tool, float(record.get("time") or time.time()), pack_value(record)))
                for tool in tools:
                    db.execute("delete from failures where tool = ? and id <= (select id from "
                               "failures where tool = ? order by id desc limit 1 offset ?)",
                               (tool, tool, FAILURES_KEPT))
        except (sqlite3.Error, TypeError, ValueError) as exc:
            self.log.warning("context store: {} failure records not written: {}", len(batch), exc)

    @command
    def errors(self, tool: str) -> list[dict[str, Any]]:
        db = self._db()
        self._flush()
        return read_failures(db, tool)


def read_failures(db: sqlite3.Connection, tool: str) -> list[dict[str, Any]]:
    rows = db.execute("select record from failures where tool = ? order by id", (tool,)).fetchall()
    return [dict(unpack_value(r[0])) for r in rows]


def _like_prefix(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}/%"


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``begin immediate`` ... ``commit``; a rollback on any error (which then propagates)."""
    db.execute("begin immediate")
    try:
        yield db
    except BaseException:
        try:
            db.execute("rollback")
        except sqlite3.Error:
            pass
        raise
    db.execute("commit")
