"""Recovery in one run: a checkpoint that survives SIGKILL, a retried lookup, a breaker that opens.

Run from the repository root: ``python examples/recovery.py [DATA_DIR]`` (default: a
temporary directory). See docs/recovery.md.
"""

import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from actors import ToolActor, command  # noqa: E402
from supervisors import Backoff, Breaker, Policy, Retry, ToolError, ToolSystem  # noqa: E402


class Ledger(ToolActor):
    """Counts orders in its context; its network lookup fails twice before it answers."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.tries = 0

    @command
    def record(self, n: int) -> int:
        self.context["orders"] = self.context.get("orders", 0) + n
        self.checkpoint()  # returns once it is on disk
        return self.context["orders"]

    @command
    def orders(self) -> int:
        return self.context.get("orders", 0)

    @command
    def region(self) -> str:
        return self.context["region"]  # not its own key: the system's

    @command(idempotent=True)
    def lookup(self) -> str:
        self.tries += 1
        if self.tries <= 2:
            raise ConnectionError(f"upstream reset the connection (try {self.tries})")
        return f"found after {self.tries} tries"

    @command
    def broken(self) -> None:
        raise RuntimeError("the upstream is down")

    @command
    def pid(self) -> int:
        return os.getpid()


def main(data_dir: str) -> int:
    policy = Policy(backoff=Backoff.none(), breaker=Breaker(threshold=4, open_for=5.0),
                    transient=("ConnectionError",), retry=Retry(attempts=3, initial=0.02))
    with ToolSystem(data_dir=data_dir, log_level="ERROR") as system:
        system.set_context(region="eu-west")
        ledger = system.supervise("shop", policy).spawn(Ledger, name="ledger")
        print("region from the system's context:", ledger.call("region"))
        ledger.call("record", n=2)
        print("orders after a checkpoint:", ledger.call("record", n=3))
        pid = ledger.call("pid")
        os.kill(pid, signal.SIGKILL)
        print(f"SIGKILL to pid {pid}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = ledger.status()
            if st.restarts == 1 and st.state.value == "running":
                break
            time.sleep(0.02)
        print("orders on the new instance:", ledger.call("orders"))
        print("lookup:", ledger.call("lookup"))
        # failures so far: the SIGKILL and two transient lookups; the 4th opens the breaker
        for _ in range(2):
            try:
                ledger.call("broken")
            except ToolError as exc:
                print("broken:", exc.type)
        for rec in ledger.errors():
            print("record:", rec.kind, rec.error_type, "->", rec.action)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory(prefix="toolvisor-example-") as tmp:
        sys.exit(main(tmp))
