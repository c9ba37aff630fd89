"""A host process for the orphan tests: starts a tree, prints its pids, then waits."""

from __future__ import annotations

import json
import sys
import time

from actors.sandbox import tools_tmp_root
from supervisors import ToolSystem
from tests.helpers import tree_pids
from tests.tools import Counter


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "wait"
    with ToolSystem() as system:
        w = system.supervise("w")
        w.spawn(Counter, name="a")
        w.supervise("inner").spawn(Counter, name="b")
        pids = tree_pids(system.tree())
        print(json.dumps({"pids": pids, "sid": system.sid, "runtime_dir": system.runtime_dir,
                          "tools_tmp": tools_tmp_root(system.runtime_dir)}),
              flush=True)
        if mode == "raise":
            raise RuntimeError("the host code failed")
        time.sleep(120)


if __name__ == "__main__":
    main()
