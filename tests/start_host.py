"""A host process for the start-up signal tests: starts a ToolSystem and waits.

Its environment carries TOOLVISOR_TEST_MARK (set by the test at exec), which every
process it forks shows in /proc/<pid>/environ: the test finds leftovers by it.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import time

from supervisors import ToolSystem


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # (the test asks where it hangs)
    print("starting", flush=True)
    with ToolSystem():
        print("started", flush=True)
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)


if __name__ == "__main__":
    main()
