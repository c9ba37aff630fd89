"""A tool that leaks memory on a timer, and is restarted when it reaches its quota.

Run from the repository root: ``python examples/leaky.py``. It spawns ``Leaky``
with ``limits={"memory_mb": 64}`` and ``on_limit="restart"``, prints the
tool's usage as it grows, and stops once the accountant has restarted it,
showing the figure in ``status().last_error`` and the events on the way
(warning at 80 %, critical at 95 %, action at 100 %). See docs/resources.md.

``examples/leaky.toml`` runs the same tool under ``toolvisor run``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from actors import ToolActor, command  # noqa: E402
from supervisors import Backoff, Policy, ToolSystem  # noqa: E402

MB = 1024 * 1024


class Leaky(ToolActor):
    """Every ``every`` seconds keeps another ``mb`` MB that it never gives back."""

    def on_init(self, config: dict[str, Any]) -> None:
        self.mb = int(config.get("mb", 2))
        self.every = float(config.get("every", 0.1))
        self.kept: list[bytearray] = []
        self.after(self.every, self.leak)

    def leak(self) -> None:
        self.kept.append(bytearray(self.mb * MB))  # zero-filled, so really resident
        self.after(self.every, self.leak)

    @command
    def leaked_mb(self) -> int:
        return len(self.kept) * self.mb


def main() -> int:
    limit = 64
    policy = Policy(max_restarts=5, period=10.0, backoff=Backoff(initial=0.1, maximum=1.0))
    with ToolSystem(policy=policy, sample_every=0.1, log_level="ERROR") as system:
        leaky = system.spawn(Leaky, name="leaky", config={"mb": 2, "every": 0.1},
                             limits={"memory_mb": limit}, on_limit="restart")
        first = leaky.status()
        print(f"spawned leaky (pid {first.pid}) with limits={{'memory_mb': {limit}}}, "
              "on_limit='restart'")
        deadline = time.monotonic() + 12
        st = first
        while time.monotonic() < deadline:
            st = leaky.status()
            if st.restarts > first.restarts and st.state.value == "running":
                break
            usage = st.usage
            if usage.get("sampled_at"):  # every figure is None until the first sample
                print(f"  memory_mb {usage['memory_mb']:6.1f} of {usage['limits']['memory_mb']:g}"
                      f"  (rss_mb {usage['rss_mb']:.1f}, state {st.state.value})")
            time.sleep(0.3)
        print(f"restarted: pid {first.pid} -> {st.pid}, restarts {st.restarts}, "
              f"state {st.state.value}")
        print(f"last_error: {st.last_error}")
        print("events:")
        for event in system.events():
            if event["path"] == "leaky":
                print(f"  {event['event']}: {event['detail']}")
    return 0 if st.restarts > first.restarts and st.pid != first.pid else 1


if __name__ == "__main__":
    sys.exit(main())
