"""Spawn a supervised tool from code, call it, kill its process and watch it come back.

Run from the repository root: ``python examples/spawn_from_code.py``.
"""

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from examples.counter import Counter  # noqa: E402
from supervisors import Backoff, Policy, ToolSystem  # noqa: E402


def main() -> int:
    policy = Policy(strategy="one_for_one", max_restarts=3, period=5.0,
                    backoff=Backoff(initial=0.05, maximum=1.0))
    with ToolSystem(log_level="WARNING") as system:
        workers = system.supervise("workers", policy=policy)
        counter = workers.spawn(Counter, name="counter", config={"start": 1})
        print("add(k=2) ->", counter.call("add", k=2))
        before = counter.status()
        print(f"status: {before.state.value}, pid {before.pid}, restarts {before.restarts}")
        print("tree:", [(c["path"], c["state"]) for c in system.tree()["children"][0]["children"]])
        os.kill(before.pid, signal.SIGKILL)
        print(f"sent SIGKILL to pid {before.pid}")
        deadline = time.monotonic() + 10  # the supervisor notices and starts a new process
        while ((after := counter.status()).restarts == before.restarts
               or after.state.value != "running") and time.monotonic() < deadline:
            time.sleep(0.02)
        print(f"restarted: {after.state.value}, pid {after.pid}, restarts {after.restarts}")
        print("get() on the new instance ->", counter.call("get"))
    return 0 if after.restarts == before.restarts + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
