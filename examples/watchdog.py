"""The watchdog: a tool hung in a command is killed, named and replaced.

Run from the repository root: ``python examples/watchdog.py``.
"""

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from examples.faults_tools import Worker  # noqa: E402
from supervisors import Backoff, Policy, ToolSystem, ToolUnavailable  # noqa: E402


def main() -> int:
    with ToolSystem(log_level="ERROR") as system:
        sup = system.supervise("w", Policy(max_restarts=3, period=30.0, backoff=Backoff.none()))
        worker = sup.spawn(Worker, name="worker", hang_timeout=1.0)  # default 120 s; None = off
        first = worker.call("pid")
        print("hang_timeout:", worker.status().hang_timeout)

        def stuck() -> None:
            try:
                worker.call("spin", timeout=30)
            except ToolUnavailable as exc:
                print("the caller got:", exc)

        caller = threading.Thread(target=stuck)
        caller.start()
        time.sleep(0.3)
        busy = worker.status().busy
        print(f"busy: command {busy['command']!r} for {time.time() - busy['since']:.1f} s")
        caller.join(30)
        deadline = time.monotonic() + 10
        while (worker.status().restarts < 1 or worker.status().state.value != "running") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        st = worker.status()
        print(f"after: {st.state.value}, restarts {st.restarts}, new pid: {worker.call('pid') != first}")
        print("last_error:", st.last_error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
