"""A tool's net and exec permissions, enforced in its own process (actors.reach)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from actors.permissions import SecurityContext
from actors.reach import ActionDenied, Origins, Reach
from supervisors import Backoff, PermissionDenied, Policy, ToolSystem
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)
FAST = Policy(max_restarts=20, period=5.0, backoff=Backoff.none())
REACHER = "tests.security_tools:Reacher"


def reach(*permissions: str) -> Reach:
    return Reach("w/t", SecurityContext.from_spec({"permissions": list(permissions)}))


# -- the rules, in this process ------------------------------------------------------------
def test_net_rules_match_address_and_port() -> None:
    r = reach("net:10.0.0.*:443:net", "net:127.0.0.1:*:net")
    r.check_net("10.0.0.7", 443)
    r.check_net("127.0.0.1", 9)
    with pytest.raises(ActionDenied) as info:
        r.check_net("10.0.0.7", 80)
    exc = info.value
    assert isinstance(exc, PermissionDenied) and isinstance(exc, PermissionError)
    assert exc.errno == 13 and exc.permission == "net:10.0.0.7:80:net"
    assert "'w/t' may not connect to or bind 10.0.0.7 port 80" in str(exc)
    assert "security.permissions" in str(exc)
    with pytest.raises(ActionDenied):
        reach().check_net("127.0.0.1", 9)
    reach("net:*:net").check_net("::1", 8080)
    reach("*:*").check_net("192.0.2.1", 1)
    reach("net:::1:8080:net").check_net("::1", 8080)


def test_a_host_name_in_a_rule_allows_the_addresses_it_resolves_to() -> None:
    r = reach("net:localhost:8080:net")
    r.check_net("127.0.0.1", 8080)
    with pytest.raises(ActionDenied):
        r.check_net("127.0.0.1", 8081)
    with pytest.raises(ActionDenied):
        r.check_net("192.0.2.1", 8080)
    reach("net:localhost:net").check_net("127.0.0.1", 1)  # no port: any port


def test_unix_sockets_and_programs() -> None:
    r = reach("net:unix:/run/app/*:net", "exec:true:exec", "exec:/usr/bin/e*:exec")
    r.check_unix("/run/app/sock")
    with pytest.raises(ActionDenied, match="Unix socket /var/run/docker.sock"):
        r.check_unix("/var/run/docker.sock")
    r.check_exec("true")              # as written
    r.check_exec("/bin/true")         # its file name
    r.check_exec("env")               # its full path on PATH (/usr/bin/env)
    with pytest.raises(ActionDenied, match=r"start the program 'sh'.*'exec:sh:exec'"):
        r.check_exec("sh")
    with pytest.raises(ActionDenied, match="fork itself"):
        r.check_exec("fork")
    reach("exec:fork:exec").check_exec("fork")


def test_whose_code_is_asking() -> None:
    o = Origins()
    assert o.kind(socket.__file__) == "stdlib"
    assert o.kind("<frozen importlib._bootstrap>") == "stdlib"
    assert o.kind(os.path.join(os.path.dirname(json.__file__), "..", "site-packages", "x.py")) == "tool"
    import thespian.actors

    import actors.peers
    assert o.kind(actors.peers.__file__) == "runtime"
    assert o.kind(thespian.actors.__file__) == "runtime"
    assert o.kind(__file__) == "tool"
    assert o.kind("<string>") == "tool"
    assert o.tool_is_asking(sys._getframe())  # this test is nobody's runtime


# -- on a running system ---------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[int]:
    """A real TCP server on loopback that accepts whatever comes."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    srv.close()


def audit_lines(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(x) for x in f]


def test_a_tool_without_a_security_context_reaches_as_before(server: int) -> None:
    with ToolSystem(policy=FAST) as system:
        t = system.supervise("w", policy=FAST).spawn(REACHER, name="free")
        assert t.call("connect", host="127.0.0.1", port=server) == "connected"
        assert t.call("run", argv=["true"]) == 0
        assert t.call("fork") == 7


def test_a_tool_with_a_context_reaches_only_what_it_may(server: int, tmp_path) -> None:
    log = str(tmp_path / "audit.log")
    with ToolSystem(policy=FAST, audit_log=log) as system:
        w = system.supervise("w", policy=FAST)
        boxed = w.spawn(REACHER, name="boxed", security={})
        peer = w.spawn(REACHER, name="peer")
        for command, args, permission in [
                ("connect", {"host": "127.0.0.1", "port": server}, f"net:127.0.0.1:{server}:net"),
                ("run", {"argv": ["true"]}, "exec:true:exec"),
                ("system", {"line": "true"}, "exec:/bin/sh:exec"),
                ("fork", {}, "exec:fork:exec"),
                ("spawn_python", {}, f"exec:{sys.executable}:exec"),
                ("bind", {}, "net:127.0.0.1:0:net")]:
            with pytest.raises(PermissionDenied) as info:
                boxed.call(command, **args)
            assert permission in str(info.value) and "w/boxed" in str(info.value), command
            assert info.value.type == "ActionDenied"
        assert boxed.call("connect_errno", host="127.0.0.1", port=server) == 13  # a PermissionError
        assert boxed.call("call", path="w/peer") == "pong"   # toolvisor's own connections pass
        assert peer.call("call", path="w/boxed") == "pong"
        assert boxed.status().state.value == "running"       # a refusal is not a crash
        wait_until(lambda: {("net", f"net:127.0.0.1:{server}"), ("exec", "exec:true"),
                            ("exec", "exec:fork")} <= {
            (e["operation"], e["resource"]) for e in audit_lines(log)
            if e["principal"] == "tool:w/boxed" and e["result"] == "denied"},
            what="the refusals in the audit log")
        events = [e for e in system.events() if e.get("event") == "denied" and e["path"] == "w/boxed"]
        assert any("exec:fork:exec" in e["detail"] for e in events)
        wait_until(lambda: boxed.status().reputation < 100, what="refusals to cost reputation")


def test_permissions_let_through_what_they_name(server: int) -> None:
    with ToolSystem(policy=FAST) as system:
        t = system.supervise("w", policy=FAST).spawn(REACHER, name="t", security={"permissions": [
            f"net:localhost:{server}:net", "exec:true:exec", "exec:fork:exec"]})
        assert t.call("connect", host="127.0.0.1", port=server) == "connected"
        assert t.call("connect", host="localhost", port=server) == "connected"
        with pytest.raises(PermissionDenied, match=f"net:127.0.0.1:{server + 1}:net"):
            t.call("connect", host="127.0.0.1", port=server + 1)
        assert t.call("run", argv=["true"]) == 0
        with pytest.raises(PermissionDenied, match="exec:false:exec"):
            t.call("run", argv=["false"])
        assert t.call("fork") == 7


def test_a_refusal_in_another_thread_is_reported_too(server: int, tmp_path) -> None:
    log = str(tmp_path / "audit.log")
    with ToolSystem(policy=FAST, audit_log=log) as system:
        t = system.supervise("w", policy=FAST).spawn(REACHER, name="t", security={})
        assert t.call("connect_in_thread", host="127.0.0.1", port=server) == "ActionDenied"
        wait_until(lambda: any(e["operation"] == "net" and e["result"] == "denied"
                               for e in audit_lines(log)), what="the thread's refusal audited")


def test_unix_sockets_are_held_to_net_permissions(tmp_path) -> None:
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    try:
        with ToolSystem(policy=FAST) as system:
            w = system.supervise("w", policy=FAST)
            boxed = w.spawn(REACHER, name="boxed", security={})
            with pytest.raises(PermissionDenied, match="Unix socket"):
                boxed.call("unix", path=path)
            ok = w.spawn(REACHER, name="ok", security={"permissions": [f"net:unix:{tmp_path}/*:net"]})
            assert ok.call("unix", path=path) == "connected"
    finally:
        srv.close()
