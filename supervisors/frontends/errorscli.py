"""``toolvisor errors NAME``: a tool's failure records, read from the system's data directory.

The records are the ones ``tool.errors()`` returns; the context store keeps a
copy of each (the last 100 per tool) in ``<data dir>/toolvisor.db``, so this
works while the system runs and after it is gone. The database is opened
read-only; the store stays its only writer.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any

from supervisors.recovery import DB_FILE
from supervisors.recovery.diagnostics import FailureRecord
from supervisors.recovery.store import read_failures


def add_errors_command(subs: Any) -> None:
    cmd = subs.add_parser("errors", help="show a tool's failure records",
                          description="Show the failure records of the tool at PATH (oldest "
                                      "first): what failed, when, and what the supervisor did.")
    cmd.add_argument("path", metavar="PATH", help="the tool's path, such as workers/counter")
    cmd.add_argument("--data-dir", default=None, metavar="DIR",
                     help="the system's data directory (default: $TOOLVISOR_DATA_DIR or "
                          "./.toolvisor)")
    cmd.add_argument("--traceback", action="store_true", help="print each remote traceback too")
    cmd.set_defaults(handler=cmd_errors)


def cmd_errors(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or os.environ.get("TOOLVISOR_DATA_DIR") or ".toolvisor"
    db_path = os.path.join(data_dir, DB_FILE)
    if not os.path.exists(db_path):
        print(f"toolvisor errors: no database at {db_path}; give the system's --data-dir",
              file=sys.stderr)
        return 1
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
        try:
            records = [FailureRecord.from_dict(r) for r in read_failures(db, args.path)]
        finally:
            db.close()
    except sqlite3.Error as exc:
        print(f"toolvisor errors: cannot read {db_path}: {exc}", file=sys.stderr)
        return 1
    if not records:
        print(f"{args.path}: no failures recorded")
        return 0
    print(f"{args.path}: {len(records)} failure(s), oldest first")
    for r in records:
        print(r.line())
        if args.traceback and r.traceback:
            print("    " + r.traceback.rstrip().replace("\n", "\n    "))
    return 0
