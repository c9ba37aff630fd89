"""Recovery: circuit breakers, transient retries, failure records, the persisted context store.

The tool side lives in ``actors`` (``actors.breaker``, ``actors.retry``,
``actors.toolcontext`` and the runner); the supervisor side in
``supervisors.tree.diagnosing``; this package holds what runs above the tree:
the context store (a tool that owns the SQLite database), the failure record
type that ``tool.errors()`` returns, and the chaos driver. See docs/recovery.md.
"""

from actors.breaker import Breaker
from actors.permissions import STORE_TOOL
from supervisors.recovery.diagnostics import FailureRecord
from supervisors.tree.policy import Retry

STORE_NAME = STORE_TOOL  # (defined low, in actors.permissions: the tool side needs it too)
DB_FILE = "toolvisor.db"

__all__ = ["Breaker", "DB_FILE", "FailureRecord", "Retry", "STORE_NAME"]
