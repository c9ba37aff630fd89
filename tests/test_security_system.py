"""Security on a running system: checked views, the audit log, tool contexts, reputation, sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.codec import decode
from actors.errors import MalformedMessage
from actors.frames import FrameError, FrameReader
from examples.counter import Counter
from supervisors import Backoff, PermissionDenied, Policy, ToolSystem
from supervisors.security import UnknownPrincipal, verify
from tests.helpers import find, session_members, wait_until
from tests.security_tools import EnvProbe

FAST = Policy(max_restarts=20, period=5.0, backoff=Backoff.none())


def lines(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(x) for x in f]


@pytest.fixture
def secured(tmp_path):
    log = str(tmp_path / "audit" / "audit.log")
    with ToolSystem(policy=FAST, audit_log=log) as system:
        system.security.add_role("counter-user", permissions=[
            "tool:workers/*:call", "tool:workers/*:read", "supervisor:workers:read"])
        system.security.add_principal("alice", roles=["counter-user"])
        system.security.add_principal("ops", roles=["maintainer"], token="ops-token-123")
        system.security.add_principal("root", roles=["admin"])
        workers = system.supervise("workers", policy=FAST)
        workers.spawn(Counter, name="counter", config={"start": 1})
        yield system, log


def test_unknown_principal_and_wrong_token(secured) -> None:
    system, log = secured
    with pytest.raises(UnknownPrincipal, match="unknown principal 'mallory'"):
        system.as_principal("mallory")
    with pytest.raises(PermissionDenied, match="token is missing or wrong"):
        system.as_principal("ops", token="nope")
    assert system.as_principal("ops", token="ops-token-123").principal.name == "ops"


def test_refusals_name_everything_change_nothing_and_are_audited(secured) -> None:
    system, log = secured
    alice = system.as_principal("alice")
    counter = alice.tool("workers/counter")
    assert counter.call("add", k=2) == 3
    before = system.tool("workers/counter").status()
    for op, action in ((counter.stop, "stop"), (counter.pause, "pause"), (counter.restart, "restart")):
        with pytest.raises(PermissionDenied) as err:
            op()
        assert err.value.principal == "alice"
        assert err.value.permission == f"tool:workers/counter:{action}"
        assert err.value.resource == "tool:workers/counter"
        # the line is there as soon as the refusal is raised
        last = lines(log)[-1]
        assert (last["principal"], last["operation"], last["resource"], last["result"]) == \
            ("alice", action, "tool:workers/counter", "denied")
    with pytest.raises(PermissionDenied, match="tool:workers/extra:spawn"):
        alice.supervisor("workers").spawn(Counter, name="extra")
    with pytest.raises(PermissionDenied, match="supervisor:workers:policy"):
        alice.supervisor("workers").set_policy(Policy(max_restarts=1))
    with pytest.raises(PermissionDenied, match="tool:other:read"):
        alice.tool("other")
    after = system.tool("workers/counter").status()
    assert (after.state, after.pid, after.restarts) == (before.state, before.pid, before.restarts)
    assert [c.name for c in system.supervisor("workers").children()] == ["counter"]
    assert system.supervisor("workers").status().state.value == "running"
    workers = next(c for c in system.tree()["children"] if c["name"] == "workers")
    assert workers["policy"]["max_restarts"] == FAST.max_restarts
    assert verify(log).ok


def test_allowed_operations_run_and_are_audited_before_returning(secured) -> None:
    system, log = secured
    ops = system.as_principal("ops", token="ops-token-123")
    t = ops.supervisor("workers").spawn(EnvProbe, name="probe", security={"audit": "all"})
    assert lines(log)[-1]["operation"] == "spawn" and lines(log)[-1]["result"] == "ok"
    t.call("cwd")
    assert lines(log)[-1]["operation"] == "call" and lines(log)[-1]["context"]["command"] == "cwd"
    with pytest.raises(Exception, match="asked to fail"):
        t.call("fail")
    assert lines(log)[-1]["result"] == "error: ValueError"
    t.pause()
    assert lines(log)[-1]["operation"] == "pause"
    t.resume()
    t.restart()
    assert lines(log)[-1]["operation"] == "restart"
    ops.supervisor("workers").set_policy(Policy(max_restarts=7))
    assert lines(log)[-1]["operation"] == "set_policy"
    assert ops.tool("workers/counter").call("add") == 2  # audit 'denials': no line for this one
    assert lines(log)[-1]["operation"] == "set_policy"
    t.stop()
    assert lines(log)[-1]["operation"] == "stop"
    # reads are checked but only refusals are written
    assert ops.status("workers/probe").state.value == "stopped"
    v = verify(log)
    assert v.ok, str(v)


def test_the_tree_shows_only_what_the_principal_may_read(secured) -> None:
    system, log = secured
    system.supervise("secret").spawn(Counter, name="vault")
    tree = system.as_principal("alice").tree()
    assert [c["path"] for c in tree["children"]] == ["workers"]
    assert [c["path"] for c in tree["children"][0]["children"]] == ["workers/counter"]
    root_tree = system.as_principal("root").tree()
    assert {c["path"] for c in root_tree["children"]} == {"workers", "secret"}  # not _audit


def test_the_audit_writer_is_out_of_reach(secured) -> None:
    system, log = secured
    admin = system.as_principal("root")
    with pytest.raises(PermissionDenied, match="audit writer"):
        admin.tool("_audit").call("append", entries=[{"principal": "forged"}])
    with pytest.raises(PermissionDenied):
        admin.tool("_audit").stop()
    assert verify(log).ok
    assert all(e["principal"] != "forged" for e in lines(log))


def test_cli_audit_verify_and_tail(secured) -> None:
    system, log = secured
    alice = system.as_principal("alice")
    with pytest.raises(PermissionDenied):
        alice.tool("workers/counter").stop()
    run = [sys.executable, "-m", "supervisors", "audit"]
    ok = subprocess.run([*run, "verify", log], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    tail = subprocess.run([*run, "tail", log, "-n", "1"], capture_output=True, text=True, timeout=60)
    assert tail.returncode == 0 and "alice" in tail.stdout and "denied" in tail.stdout
    text = open(log).read().splitlines()
    text[0] = text[0].replace('"ops"', '"eve"').replace('"root"', '"eve"').replace('"system"', '"eve"')
    text[0] = text[0].replace('"ts":', '"ts":1', 1)
    with open(log, "w") as f:
        f.write("\n".join(text) + "\n")
    bad = subprocess.run([*run, "verify", log], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "line 1" in bad.stderr, bad.stderr
    missing = subprocess.run([*run, "verify", log + ".nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2


def test_tool_security_context_env_workdir_umask(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOST_SECRET", "do-not-leak")
    work = tmp_path / "work"
    work.mkdir()
    with ToolSystem() as system:
        t = system.spawn(EnvProbe, name="probe",
                         security={"env": {"MODE": "sandboxed"}, "workdir": str(work), "umask": 0o027})
        env = t.call("env")
        assert env["MODE"] == "sandboxed"
        assert "HOST_SECRET" not in env
        assert set(env) <= {"MODE", "PATH", "HOME", "LANG", "TMPDIR"}
        assert t.call("cwd") == str(work)
        assert t.call("umask") == 0o027
        plain = system.spawn(EnvProbe, name="plain")
        assert plain.call("env")["HOST_SECRET"] == "do-not-leak"  # without env: untouched
        with pytest.raises(Exception, match="security.env"):
            system.spawn(EnvProbe, name="bad", security={"env": {"A": 1}})
        with pytest.raises(Exception, match="security.workdir.*cannot be used"):
            system.spawn(EnvProbe, name="lost", security={"workdir": str(tmp_path / "missing")})


@pytest.mark.timeout(120)
def test_reputation_falls_with_crashes_restricts_and_is_audited(tmp_path) -> None:
    log = str(tmp_path / "audit.log")
    with ToolSystem(policy=FAST, audit_log=log) as system:
        t = system.spawn(Counter, name="flaky")
        assert t.status().reputation == 100.0
        for _ in range(6):
            pid = t.status().pid
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: (s := t.status()).pid not in (None, pid)
                       and s.state.value == "running", 20, what="a restart")
        system.security.refresh(force=True)
        status = t.status()
        assert status.reputation is not None and status.reputation <= 45.0
        node = find(system.tree(), "flaky")
        assert node["restricted"] is True and node["reputation"] <= 45.0
        assert system.security.restricted("flaky")
        entries = [e for e in lines(log) if e["operation"] == "reputation"]
        assert entries and entries[-1]["result"] == "restricted" and entries[-1]["resource"] == "tool:flaky"


def test_every_socket_is_on_loopback_or_unix(secured) -> None:
    system, log = secured
    system.as_principal("alice").tool("workers/counter").call("add")
    procs = session_members(system.sid) + [psutil.Process()]
    seen = 0
    for p in procs:
        for c in p.net_connections(kind="all"):
            seen += 1
            if c.family == socket.AF_UNIX:
                continue
            assert c.laddr and c.laddr.ip == "127.0.0.1", f"pid {p.pid} ({p.name()}) has {c}"
            if c.raddr:
                assert c.raddr.ip == "127.0.0.1", f"pid {p.pid} talks to {c.raddr}"
    assert seen >= 7


def test_bad_messages_on_the_thespian_call_path_answer_malformed(secured) -> None:
    from actors.codec import pack_value

    system, log = secured
    route = system._route("workers/counter", 1e12)
    ep = system.transport._endpoint()
    for blob in (b"\xc1\xc1not msgpack", pack_value({"wrong": "shape"}), pack_value([999, 1, 2]),
                 pack_value([]), b""):
        reply = ep.ask(route.address, blob, 5)
        assert reply is not None
        msg = decode(reply)
        assert msg.ok is False and msg.error["code"] == "malformed"
    assert system.tool("workers/counter").call("add") == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_the_message_decoder(blob: bytes) -> None:
    try:
        decode(blob)
    except MalformedMessage:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_the_frame_reader(chunks: list[bytes]) -> None:
    reader = FrameReader(max_size=1024)
    try:
        for chunk in chunks:
            for payload in reader.feed(chunk):
                assert len(payload) <= 1024
    except FrameError:
        pass


CLI_CONFIG = """
[system]
audit_log = "{log}"

[[role]]
name = "w-reader"
permissions = ["tool:workers/*:read", "supervisor:workers:read"]

[[principal]]
name = "alice"
roles = ["w-reader"]

[[principal]]
name = "ops"
roles = ["maintainer"]
token = "ops-token-123"

[[supervisor]]
name = "workers"
[[supervisor.tool]]
name = "counter"
actor = "examples.counter:Counter"

[[supervisor]]
name = "secret"
[[supervisor.tool]]
name = "vault"
actor = "examples.counter:Counter"
"""


@pytest.mark.timeout(120)
def test_cli_run_as_a_principal_shows_only_what_it_may_read(tmp_path) -> None:
    from tests.test_cli import run_cli

    config = tmp_path / "tree.toml"
    config.write_text(CLI_CONFIG.format(log=tmp_path / "audit.log"))
    shown = run_cli("run", str(config), "--as", "alice", "--duration", "1.5", "--interval", "0.5")
    assert shown.returncode == 0, shown.stderr
    assert "workers/counter" in shown.stdout
    assert "secret/vault" not in shown.stdout and "_audit" not in shown.stdout
    unknown = run_cli("run", str(config), "--as", "mallory", "--duration", "1")
    assert unknown.returncode == 2 and "unknown principal 'mallory'" in unknown.stderr
    no_token = run_cli("run", str(config), "--as", "ops", "--duration", "1")
    assert no_token.returncode == 2 and "token" in no_token.stderr


def test_a_refused_tool_to_tool_call_is_audited_and_costs_reputation(secured) -> None:
    from actors.permissions import SecurityContext, check_tool_call

    system, log = secured
    caller_ctx = SecurityContext.from_spec(None, "low")
    with pytest.raises(PermissionDenied) as err:
        check_tool_call("workers/counter", caller_ctx, "vault", "high")
    system.security.tool_denied("workers/counter", "vault", str(err.value))
    last = lines(log)[-1]
    assert (last["principal"], last["resource"], last["result"]) == ("tool:workers/counter",
                                                                     "tool:vault", "denied")
    assert system.tool("workers/counter").status().reputation == 95.0


def test_audit_off_writes_nothing_for_that_tool(secured) -> None:
    system, log = secured
    system.supervisor("workers").spawn(Counter, name="quiet", security={"audit": "off"})
    before = len(lines(log))
    viewer = system.security.add_principal("v", roles=["viewer"])
    with pytest.raises(PermissionDenied):
        system.as_principal(viewer.name).tool("workers/quiet").call("add")
    assert len(lines(log)) == before
    with pytest.raises(PermissionDenied):  # other tools keep the default: refusals are written
        system.as_principal("v").tool("workers/counter").call("add")
    assert lines(log)[-1]["result"] == "denied"


def test_denied_events_count_against_reputation() -> None:
    from supervisors.security.reputation import Reputation

    r = Reputation()
    r.observe([{"time": 10.0, "path": "a", "event": "denied", "detail": "tool:vault"}])
    assert r.score("a", now=10.0) == 95.0


def test_an_allowed_operation_that_fails_is_written_with_its_error(secured) -> None:
    from supervisors import SpecError

    system, log = secured
    ops = system.as_principal("ops", token="ops-token-123")
    with pytest.raises(SpecError, match="restart"):
        ops.supervisor("workers").spawn(Counter, name="bad", restart="sometimes")
    last = lines(log)[-1]
    assert (last["operation"], last["resource"], last["result"]) == ("spawn", "tool:workers/bad",
                                                                     "error: SpecError")


@pytest.mark.timeout(60)
def test_tool_to_tool_calls_keep_to_their_level_unless_permitted(tmp_path) -> None:
    """A low-level tool calling a high-level one is refused in its own process, audited, and
    counted against its reputation; a permission in its context lets the call through."""
    log = str(tmp_path / "audit.log")
    relay = "tests.messaging_tools:Relay"
    with ToolSystem(policy=FAST, audit_log=log) as system:
        w = system.supervise("workers", policy=FAST)
        w.spawn(relay, name="vault", security_level="high")
        low = w.spawn(relay, name="low", security_level="low")
        allowed = w.spawn(relay, name="allowed", security_level="low",
                          security={"permissions": ["tool:workers/vault:call"]})
        peer = w.spawn(relay, name="peer", security_level="low")
        err = low.call("call_error", path="workers/vault", cmd="get")
        assert err["type"] == "PermissionDenied"
        assert "workers/low" in err["message"] and "tool:workers/vault:call" in err["message"]
        assert low.call("call", path="workers/peer", cmd="get") == "workers/peer"   # same level
        assert allowed.call("call", path="workers/vault", cmd="get") == "workers/vault"
        assert peer.call("get") == "workers/peer"
        wait_until(lambda: any(e["result"] == "denied" and e["resource"] == "tool:workers/vault"
                               and e["principal"] == "tool:workers/low" for e in lines(log)),
                   what="the denial in the audit log")
        wait_until(lambda: low.status().reputation is not None and low.status().reputation < 100,
                   what="the denial to cost reputation")
        assert allowed.status().reputation == 100.0


@pytest.mark.timeout(90)
def test_a_tool_restricted_by_its_reputation_may_call_no_other_tool(tmp_path) -> None:
    """The host marks a tool whose score fell below the threshold, without anyone asking for
    a status; the tool's own process then refuses its calls to other tools."""
    relay = "tests.messaging_tools:Relay"
    with ToolSystem(policy=FAST, audit_log=str(tmp_path / "audit.log")) as system:
        w = system.supervise("w", policy=FAST)
        flaky = w.spawn(relay, name="flaky")
        w.spawn(relay, name="peer")
        assert flaky.call("call", path="w/peer", cmd="get") == "w/peer"
        for _ in range(6):
            pid = flaky.status().pid
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: (s := flaky.status()).pid not in (None, pid)
                       and s.state.value == "running", 20, what="a restart")
        err = wait_until(lambda: (e := flaky.call("call_error", path="w/peer", cmd="get"))["type"]
                         == "PermissionDenied" and e, 10, every=0.1, what="the restriction to apply")
        assert "reputation" in err["message"]
        assert system.tool("w/peer").call("call", path="w/flaky", cmd="get") == "w/flaky"  # others may


@pytest.mark.timeout(90)
def test_a_restricted_tool_still_checkpoints_and_gets_its_context_back(tmp_path) -> None:
    """Restriction refuses calls to other tools, not to toolvisor's own context store."""
    from actors.permissions import is_restricted

    with ToolSystem(policy=FAST, audit_log=str(tmp_path / "audit.log"), data_dir=str(tmp_path / "data")) \
            as system:
        keeper = system.supervise("w", policy=FAST).spawn("tests.recovery_tools:Keeper", name="keeper")
        assert keeper.call("put", key="n", value=1) == "n"
        for _ in range(6):
            pid = keeper.call("pid")
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: (s := keeper.status()).pid not in (None, pid)
                       and s.state.value == "running", 20, what="a restart")
        wait_until(lambda: is_restricted(system.runtime_dir, "w/keeper"), 10, what="the restriction")
        assert keeper.call("restored") is True and keeper.call("get", key="n") == 1
        assert keeper.call("put", key="n", value=2) == "n"   # the checkpoint goes through
        assert system.tree()["system"] and all(c["name"] in ("_audit", "_store")
                                               for c in system.tree()["system"])


def test_a_user_child_whose_name_starts_with_an_underscore_is_listed(system) -> None:
    system.supervise("_internal")
    assert [c["name"] for c in system.tree()["children"]] == ["_internal"]
    assert [c.name for c in system.root.children()] == ["_internal"]
