"""The system facade: start/stop, loopback-only sockets, status of the root."""

from __future__ import annotations

import psutil
import pytest

from supervisors import ToolState, ToolSystem, ToolUnavailable
from supervisors.processes.procs import session_pids
from tests.helpers import tree_pids
from tests.tools import Counter

pytestmark = pytest.mark.timeout(60)


def test_every_listening_socket_is_on_loopback() -> None:
    with ToolSystem() as system:
        system.supervise("w").spawn(Counter, name="c").call("get")
        # (the admin and the rest of the actor system's session; the session's first
        # process, a launcher, has exited and been reaped)
        pids = set(tree_pids(system.tree())) | set(session_pids(system.sid))
        listening = []
        for pid in pids:
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append(conn.laddr.ip)
        assert listening and set(listening) == {"127.0.0.1"}


def test_root_status_and_use_after_shutdown() -> None:
    system = ToolSystem().start()
    try:
        root = system.root.status()
        assert root.kind == "supervisor" and root.state is ToolState.RUNNING and root.pid
        t = system.spawn(Counter, name="c")
    finally:
        system.shutdown()
    system.shutdown()  # idempotent
    with pytest.raises(ToolUnavailable, match="not running"):
        t.call("get")


def test_two_systems_side_by_side_do_not_mix() -> None:
    with ToolSystem() as a, ToolSystem() as b:
        ta = a.spawn(Counter, name="c", config={"start": 1})
        tb = b.spawn(Counter, name="c", config={"start": 100})
        assert a.transport.port != b.transport.port
        assert ta.call("add") == 2 and tb.call("add") == 101
