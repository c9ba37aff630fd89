"""A tool that reports what its process inherited from the fork (tests/test_sharing.py)."""

from __future__ import annotations

import gc
import sys
from typing import Any

from actors import ToolActor, command


class ForkProbe(ToolActor):
    @command
    def gc_state(self) -> dict[str, Any]:
        runner = sys.modules["actors.runner"].ToolRunner
        # gc.get_objects() leaves out the permanent generation: what gc.freeze() set aside.
        own = not any(o is runner for o in gc.get_objects())
        return {"frozen": gc.get_freeze_count(), "enabled": gc.isenabled(),
                "runner_frozen": own}
