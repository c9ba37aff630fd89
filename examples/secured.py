"""Roles, principals, a checked view and the audit log, from a config file.

Run from the repository root: ``python examples/secured.py [AUDIT_LOG]``.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from supervisors import PermissionDenied, ToolSystem  # noqa: E402
from supervisors.security import tail, verify  # noqa: E402


def main() -> int:
    log = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "audit.log")
    config = Path(__file__).resolve().parent / "secured.toml"
    with ToolSystem.from_config(config, audit_log=log, log_level="WARNING") as system:
        alice = system.as_principal("alice")
        print("alice: add(k=2) ->", alice.tool("workers/counter").call("add", k=2))
        try:
            alice.tool("workers/counter").stop()
        except PermissionDenied as exc:
            print(f"alice: stop refused: {exc.permission} on {exc.resource}")
        ops = system.as_principal("ops", token="ops-token-change-me")
        print("ops: restart ->", ops.tool("workers/counter").restart().state.value)
    print("audit:", verify(log))
    for entry in tail(log, 10):
        print(f"  {entry['seq']}: {entry['principal']} {entry['operation']} {entry['resource']} "
              f"-> {entry['result']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
