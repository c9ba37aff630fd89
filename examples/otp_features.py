"""OTP features: count(), a significant child with auto_shutdown, and brutal_kill.

Run from the repository root: ``python examples/otp_features.py``.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from examples.counter import Counter  # noqa: E402
from examples.faults_tools import Job  # noqa: E402
from supervisors import Policy, ToolSystem  # noqa: E402


def main() -> int:
    with ToolSystem(log_level="ERROR") as system:
        # A job supervisor: it stops itself, normally, once its significant child is done.
        job = system.supervise("job", Policy(auto_shutdown="any_significant"), restart="transient")
        main_step = job.spawn(Job, name="main", restart="transient", significant=True)
        job.spawn(Counter, name="helper", shutdown_timeout="brutal_kill")  # killed at once
        print("count:", job.count())
        print("finish ->", main_step.call("finish"))
        deadline = time.monotonic() + 10
        while job.status().state.value != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        print("job supervisor:", job.status().state.value, "restarts", job.status().restarts)
        print("count of root:", system.root.count())
    return 0


if __name__ == "__main__":
    sys.exit(main())
