"""A tool's net and exec permissions, enforced in its own process (actors.reach)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from actors.permissions import SecurityContext
from actors.reach import ActionDenied, Origins, Reach
from supervisors import Backoff, PermissionDenied, Policy, ToolSystem
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)
FAST = Policy(max_restarts=20, period=5.0, backoff=Backoff.none())
REACHER = "tests.security_tools:Reacher"
TRUE = os.path.normpath(shutil.which("true") or "/bin/true")


def reach(*permissions: str) -> Reach:
    return Reach("w/t", SecurityContext.from_spec({"permissions": list(permissions)}))


# -- the rules, in this process ------------------------------------------------------------
def test_net_rules_match_address_and_port() -> None:
    r = reach("net:10.0.0.*:443:net", "net:127.0.0.1:*:net", "net:192.0.2.9:net")
    r.check_net("10.0.0.7", 443)
    r.check_net("127.0.0.1", 9)
    r.check_net("192.0.2.9", 5432)                       # no port: any port
    r.check_net("::ffff:127.0.0.1", 9)                   # IPv4-mapped IPv6 is that IPv4 address
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


def test_ipv6_rules_are_canonical_and_take_a_port_in_brackets() -> None:
    reach("net:[::1]:8080:net").check_net("0:0::1", 8080)
    with pytest.raises(ActionDenied):
        reach("net:[::1]:8080:net").check_net("::1", 8081)
    reach("net:[::1]:net").check_net("::1", 8081)        # no port: any port
    reach("net:[2001:db8::1]:443:net").check_net("2001:DB8::1", 443)
    with pytest.raises(ActionDenied) as info:            # a refusal names the rule to add
        reach().check_net("2001:db8::1", 443)
    assert info.value.permission == "net:[2001:db8::1]:443:net"
    reach(info.value.permission).check_net("2001:db8::1", 443)
    reach("net:[fd00::*]:net").check_net("fd00::1:dead:beef", 22)
    with pytest.raises(ActionDenied):                    # the port is not part of the address
        reach("net:[fd00::1]:*:net").check_net("fd00::1:dead:beef", 22)


def test_a_wildcard_matches_addresses_never_names() -> None:
    r = reach("net:10.0.*:net", "net:127.*:net")
    with pytest.raises(ActionDenied, match="10.0.evil.example"):
        r.check_net("10.0.evil.example", 443)
    with pytest.raises(ActionDenied):
        r.check_net("127.0.0.1.nip.io", 9)


def test_a_host_name_in_a_rule_allows_the_addresses_it_resolves_to() -> None:
    r = reach("net:localhost:8080:net")
    r.check_net("127.0.0.1", 8080)
    r.check_net("localhost", 8080)
    with pytest.raises(ActionDenied):
        r.check_net("127.0.0.1", 8081)
    with pytest.raises(ActionDenied):
        r.check_net("192.0.2.1", 8080)
    reach("net:localhost:net").check_net("127.0.0.1", 1)  # no port: any port
    # a name no rule names is refused, whatever it resolves to (it could resolve differently
    # for the connect than for the check)
    with pytest.raises(ActionDenied, match="net:localhost:80:net"):
        reach("net:127.0.0.1:80:net", "net:[::1]:net").check_net("localhost", 80)
    reach("net:*:80:net").check_net("localhost", 80)


def test_unix_sockets_and_programs(tmp_path) -> None:
    r = reach("net:unix:/run/app/*:net", "exec:true:exec", "exec:/usr/bin/e*:exec")
    r.check_unix("/run/app/sock")
    r.check_unix(bytearray(b"/run/app/sock"))
    link = tmp_path / "app-link"          # a symbolic link is followed to the real socket
    os.symlink("/var/run/docker.sock", link)
    with pytest.raises(ActionDenied, match="docker.sock"):
        reach(f"net:unix:{tmp_path}/*:net").check_unix(str(link))
    docker = os.path.realpath("/var/run/docker.sock")
    with pytest.raises(ActionDenied, match=f"Unix socket {docker}"):
        r.check_unix("/var/run/docker.sock")
    with pytest.raises(ActionDenied, match=f"Unix socket {docker}"):
        r.check_unix("/run/app/../../var/run/docker.sock")  # normalised first
    with pytest.raises(ActionDenied):
        reach("net:*:net").check_unix("/var/run/docker.sock")  # IP rules are not Unix rules
    r.check_exec("true")              # as written, found on PATH
    r.check_exec(shutil.which("true"))  # the very file PATH finds by that name
    r.check_exec("env")               # its full path on PATH (/usr/bin/env)
    with pytest.raises(ActionDenied, match="/tmp/x/true"):
        r.check_exec("/tmp/x/true")   # another file of that name
    with pytest.raises(ActionDenied, match="/tmp/evil"):
        r.check_exec("/usr/bin/../../tmp/evil")
    sh = os.path.normpath(shutil.which("sh"))
    with pytest.raises(ActionDenied, match=rf"start the program '{sh}'.*'exec:{sh}:exec'; add it, "
                       r"'exec:sh:exec' \(the sh on PATH\) or a wider pattern"):
        r.check_exec("sh")
    fake = tmp_path / "true"  # another file called true
    shutil.copy(shutil.which("true"), fake)
    with pytest.raises(ActionDenied, match=str(fake)):
        r.check_exec("./true", cwd=str(tmp_path))       # a path, made absolute
    with pytest.raises(ActionDenied, match=str(fake)):
        r.check_exec("true", path=f"{tmp_path}:/nowhere")  # PATH as the program is started with
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
    """A real TCP server on loopback: the kernel completes a connect into its backlog."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        yield srv.getsockname()[1]


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
                ("run", {"argv": ["true"]}, f"exec:{TRUE}:exec"),
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
        wait_until(lambda: {("net", f"net:127.0.0.1:{server}"), ("exec", f"exec:{TRUE}"),
                            ("exec", "exec:fork")} <= {
            (e["operation"], e["resource"]) for e in audit_lines(log)
            if e["principal"] == "tool:w/boxed" and e["result"] == "denied"},
            what="the refusals in the audit log")
        wait_until(lambda: any(e.get("event") == "denied" and e["path"] == "w/boxed"
                               and "exec:fork:exec" in e["detail"] for e in system.events()),
                   what="the refusal as an event")
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


def test_a_library_function_run_as_a_timer_is_still_the_tools_code(tmp_path) -> None:
    """The runtime runs the timer, but the function is the tool's: refused, reported, and
    (as any exception escaping a timer) a failure of the tool."""
    made = tmp_path / "made"
    with ToolSystem(policy=FAST) as system:
        t = system.supervise("w", policy=FAST).spawn(REACHER, name="t", security={})
        assert t.call("later", argv=["touch", str(made)]) is True
        wait_until(lambda: any(e.get("event") == "denied" and "exec:touch:exec" in e["detail"]
                               for e in system.events()), what="the timer's refusal")
        wait_until(lambda: t.status().restarts >= 1 and t.status().state.value == "running", 20,
                   what="the restart after the failed timer")
        assert not made.exists()


def test_listen_on_a_socket_never_bound_is_a_bind_to_every_interface() -> None:
    with ToolSystem(policy=FAST) as system:
        w = system.supervise("w", policy=FAST)
        with pytest.raises(PermissionDenied, match="net:0.0.0.0:0:net"):
            w.spawn(REACHER, name="boxed", security={}).call("listen_unbound")
        assert w.spawn(REACHER, name="free").call("listen_unbound") > 0
        assert w.spawn(REACHER, name="ok", security={"permissions": ["net:0.0.0.0:net"]}) \
            .call("listen_unbound") > 0


def test_the_hook_copes_with_what_odd_callers_hand_it() -> None:
    """Events from built-ins called straight from C, programs given as a descriptor."""
    from actors.reach import Guard, _caller

    assert _caller(10_000) is None
    g = Guard(reach("exec:*:exec"), lambda exc: None)
    try:
        with open(shutil.which("true"), "rb") as f:
            g._exec("os.exec", (f.fileno(), ["true"], {}))  # execve(fd, ...): its file
            with pytest.raises(ActionDenied, match="true"):
                g.reach = reach()
                g._exec("os.exec", (f.fileno(), [], {}))
    finally:
        os.close(g.bell_r)
        os.close(g.bell_w)


def test_a_program_is_the_file_that_would_run(tmp_path) -> None:
    """exec:true allows the true PATH finds, not a file called true on a PATH the tool passes."""
    fake = tmp_path / "true"
    shutil.copy(TRUE, fake)
    with ToolSystem(policy=FAST) as system:
        t = system.supervise("w", policy=FAST).spawn(REACHER, name="t", security={
            "permissions": ["exec:true:exec"]})
        assert t.call("run", argv=["true"]) == 0
        with pytest.raises(PermissionDenied, match=str(fake)):
            t.call("run_with_path", argv=["true"], path=str(tmp_path))
        with pytest.raises(PermissionDenied, match=str(fake)):
            t.call("run", argv=[str(fake)])


def test_an_ask_callback_with_a_timeout_is_the_tools_code() -> None:
    with ToolSystem(policy=FAST) as system:
        w = system.supervise("w", policy=FAST)
        w.spawn(REACHER, name="echo")
        t = w.spawn(REACHER, name="t", security={})
        assert t.call("ask_into_system", path="w/echo") is True
        wait_until(lambda: any(e.get("event") == "denied" and e["path"] == "w/t"
                               and "exec:/bin/sh:exec" in e["detail"] for e in system.events()),
                   what="the callback's refusal")


def test_bind_to_every_interface_written_as_an_empty_host() -> None:
    with ToolSystem(policy=FAST) as system:
        w = system.supervise("w", policy=FAST)
        assert w.spawn(REACHER, name="ok", security={"permissions": ["net:0.0.0.0:net"]}) \
            .call("bind_any") > 0
        with pytest.raises(PermissionDenied, match="net:0.0.0.0:0:net"):
            w.spawn(REACHER, name="no", security={}).call("bind_any")


def test_malformed_net_rules_are_refused_when_the_tool_is_spawned() -> None:
    from supervisors import SpecError

    with ToolSystem(policy=FAST) as system:
        w = system.supervise("w", policy=FAST)
        for rule, why in [("net:[::1]x:net", r"after \[IPV6\]"), ("net:1.2.3.4:80:90:net", "brackets"),
                          ("net:a_b@c:net", "neither"), ("net:::1:8080:net", "brackets"),
                          ("net:fd00::*:443:net", "in brackets"), ("net:x:99999:net", "port")]:
            with pytest.raises(SpecError, match=why):
                w.spawn(REACHER, name="t", security={"permissions": [rule]})


def test_a_bare_program_name_means_the_file_the_tools_first_path_finds(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "true"
    shutil.copy(TRUE, fake)
    r = reach("exec:true:exec")
    r.check_exec("true")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")  # the tool moves PATH
    with pytest.raises(ActionDenied, match=str(fake)):
        r.check_exec("true")
    if os.path.realpath("/bin") == "/usr/bin":  # a link: the same file either way
        reach("exec:/usr/bin/true:exec").check_exec("/bin/true")


def test_a_refusal_reads_as_an_os_error_to_libraries(tmp_path) -> None:
    """strerror is the message (asyncio quotes it); a finalizer the garbage collector runs
    under toolvisor's frames is still the tool's code. In a process of its own: a hook
    cannot be removed."""
    script = tmp_path / "probe.py"
    script.write_text(f"""
import asyncio, gc, subprocess, weakref
from actors import reach
from actors.permissions import SecurityContext
from actors.retry import with_retries
reach.install("t", SecurityContext.from_spec({{}}), lambda exc: None)
try:
    asyncio.run(asyncio.start_server(lambda r, w: None, "127.0.0.1", 0))
except PermissionError as exc:
    print("server:", type(exc).__name__, exc.errno, exc.strerror)
class Cycle:
    pass
c = Cycle()
c.me = c
weakref.finalize(c, subprocess.run, ["touch", {str(tmp_path / "made")!r}])
del c
with_retries(gc.collect, 0)   # a collection under toolvisor's frames
print("made:", {str(tmp_path / "made")!r} and __import__("os").path.exists({str(tmp_path / "made")!r}))
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "server: PermissionError 13 error while attempting to bind" in out.stdout, \
        out.stdout + out.stderr
    assert "tool 't' may not connect to or bind 127.0.0.1 port 0" in out.stdout
    assert "made: False" in out.stdout, out.stdout + out.stderr
