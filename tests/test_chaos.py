"""The short chaos run (issue 13): SIGKILLs under load, and everything recovers.

The long run and its figures are ``make chaos`` / ``python -m benchmarks --only chaos``.
"""

from __future__ import annotations

import pytest

from benchmarks import chaos


@pytest.mark.timeout(120)
def test_tools_recover_from_sigkills_under_load_with_no_lost_answers_or_checkpoints() -> None:
    r = chaos.run_once(12.0, kill=True)
    assert r["kills"] >= 10 and r["supervisor_kills"] >= 1
    assert r["recovery_rate"] == 1.0, r
    assert r["not_running_after"] == [], r
    assert r["callers_finished"] and r["unanswered"] == 0 and r["calls"] > 0
    assert r["wrong_values"] == 0
    assert r["checkpoints_acked"] > 0 and r["checkpoints_lost"] == 0, r["lost_examples"]
    assert r["orphans"] == 0
    # every error a caller saw is a clear one: the tool was gone (or not back in time)
    assert all("ToolUnavailable" in kind or "CallTimeout" in kind for kind in r["error_types"]), r
