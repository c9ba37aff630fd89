"""A pool of workers: one name, four processes, calls to the least busy one; then scale it.

Run from the repository root: ``python examples/pool_worker.py``. The ``Fetcher``
tool stands in for anything that waits on I/O (it sleeps); the benchmarks use it
too (``python -m benchmarks --only pool``).
"""

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from actors import ToolActor, command  # noqa: E402
from supervisors import ToolSystem  # noqa: E402


class Fetcher(ToolActor):
    """Waits ``seconds`` (as a tool waiting on the network does) or burns CPU for them."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.served = 0

    @command
    def fetch(self, seconds: float = 0.01) -> int:
        self.served += 1
        time.sleep(seconds)
        return os.getpid()

    @command
    def crunch(self, seconds: float = 0.01) -> int:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
        return os.getpid()


def main() -> int:
    with ToolSystem(log_level="WARNING") as system:
        workers = system.supervise("w")
        pool = workers.spawn(Fetcher, name="fetch", replicas=4)
        st = pool.status()
        print(f"pool {st.path}: {st.replicas} instances, {st.state.value}:",
              ", ".join(f"{i.name} pid {i.pid}" for i in st.instances))
        pids: list[int] = []
        threads = [threading.Thread(target=lambda: pids.append(pool.call("fetch", seconds=0.5)))
                   for _ in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"4 calls of 0.5 s in {time.perf_counter() - t0:.2f} s on {len(set(pids))} instances")
        batch = pool.call_many([("fetch", {"seconds": 0.1})] * 8)
        print(f"a batch of 8 ran on {len(set(batch))} instances, results in order")
        print("one instance:", system.tool("w/fetch#2").call("fetch", seconds=0) == st.instances[1].pid)
        st = pool.scale(2)
        print(f"scaled to {st.replicas}:", ", ".join(i.name for i in st.instances))
        deadline = time.monotonic() + 5  # events travel up the tree to the root: give it a moment
        while not (scaled := [e["detail"] for e in system.events() if e["event"] == "scaled"]) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        print("events:", scaled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
