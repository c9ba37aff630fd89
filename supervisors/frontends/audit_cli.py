"""``toolvisor audit verify PATH`` and ``toolvisor audit tail PATH``: read an audit log.

``verify`` exits 0 when the chain is intact (rotated files included) and 1 naming
the first line that was altered, inserted or removed (2 if there is no log).
``tail`` prints the last entries, oldest first (``--json`` for the raw lines).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from supervisors.security.audit import format_entry, tail, verify


def add_audit_command(subs: Any) -> None:
    audit = subs.add_parser("audit", help="verify or show an audit log",
                            description="Verify the hash chain of an audit log, or show its end.")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = actions.add_parser("verify", help="check the hash chain; exit 0 if intact, 1 if not")
    v.add_argument("path", metavar="PATH", help="the audit log ([system] audit_log)")
    v.set_defaults(handler=cmd_verify)
    t = actions.add_parser("tail", help="show the last entries")
    t.add_argument("path", metavar="PATH")
    t.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="how many (default 20)")
    t.add_argument("--json", action="store_true", help="print the entries as JSON lines")
    t.set_defaults(handler=cmd_tail)


def cmd_verify(args: argparse.Namespace) -> int:
    verdict = verify(args.path)
    if verdict.ok:
        print(f"{args.path}: {verdict}")
        return 0
    if not verdict.files:
        print(f"toolvisor: {verdict.problem}", file=sys.stderr)
        return 2
    where = f"{verdict.file}" + (f" line {verdict.line}" if verdict.line else "")
    print(f"{args.path}: TAMPERED at {where}: {verdict.problem}", file=sys.stderr)
    return 1


def cmd_tail(args: argparse.Namespace) -> int:
    if args.lines < 1:
        print(f"toolvisor: --lines={args.lines} must be at least 1", file=sys.stderr)
        return 2
    try:
        entries = list(tail(args.path, args.lines))
    except OSError as exc:
        print(f"toolvisor: cannot read {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for e in entries:
        print(json.dumps(e) if args.json else format_entry(e))
    return 0
