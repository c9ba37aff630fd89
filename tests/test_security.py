"""Security without processes: permissions, roles, principals, isolation, reputation, the audit chain."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.errors import PermissionDenied, SpecError
from actors.permissions import Permission, SecurityContext, check_security, check_tool_call
from supervisors.security import Security, UnknownPrincipal
from supervisors.security.audit import GENESIS, AuditChain, entry, files_of, make_line, tail, verify
from supervisors.security.reputation import Reputation
from supervisors.tree.config import ConfigError, parse_config


# ----------------------------------------------------------------------------- permissions
def test_permission_strings_parse_with_wildcards() -> None:
    p = Permission.parse("tool:workers/*:call")
    assert (p.resource, p.action) == ("tool:workers/*", "call")
    assert p.allows("call", "tool:workers/counter")
    assert p.allows("call", "tool:workers/a/b")
    assert not p.allows("stop", "tool:workers/counter")
    assert not p.allows("call", "tool:other/counter")
    assert Permission.parse("*:read").allows("read", "system")
    assert Permission.parse("tool:x:*").allows("stop", "tool:x")
    assert str(Permission.parse("tool:x:call")) == "tool:x:call"


@pytest.mark.parametrize("bad", ["", "call", ":call", "tool:x:", "tool:x:fly", "tool x:call",
                                 None, 42, "tool:x:CALL", "tool:ü:call"])
def test_malformed_permissions_are_refused_by_name(bad: object) -> None:
    with pytest.raises(SpecError, match="malformed"):
        Permission.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_permission_parse_only_raises_spec_error(text: str) -> None:
    try:
        p = Permission.parse(text)
    except SpecError:
        return
    assert str(p) == text


# ----------------------------------------------------------------------------- roles
def test_templates_are_there_and_nest() -> None:
    sec = Security()
    for name in ("viewer", "operator", "maintainer", "admin"):
        sec.add_principal(name + "-user", roles=[name])
    assert sec.allowed("viewer-user", "read", "tool:a")
    assert not sec.allowed("viewer-user", "call", "tool:a")
    assert sec.allowed("operator-user", "call", "tool:a") and sec.allowed("operator-user", "read", "x")
    assert sec.allowed("operator-user", "resume", "tool:a")
    assert not sec.allowed("operator-user", "stop", "tool:a")
    for action in ("spawn", "stop", "start", "restart", "policy", "call", "read"):
        assert sec.allowed("maintainer-user", action, "tool:a")
    assert not sec.allowed("maintainer-user", "admin", "system")
    assert sec.allowed("admin-user", "admin", "system")


def test_inheritance_and_cycles() -> None:
    sec = Security()
    sec.add_role("a", permissions=["tool:a:call"])
    sec.add_role("b", permissions=["tool:b:call"], parents=["a"])
    sec.add_role("c", parents=["b"])
    sec.add_principal("p", roles=["c"])
    assert sec.allowed("p", "call", "tool:a") and sec.allowed("p", "call", "tool:b")
    with pytest.raises(SpecError, match="cycle.*a -> c -> b -> a|cycle"):
        sec.add_role("a", permissions=["tool:a:call"], parents=["c"])
    assert sec.roles["a"].parents == ()  # nothing changed
    with pytest.raises(SpecError, match="cycle"):
        sec.add_role("self", parents=["self"])
    with pytest.raises(SpecError, match="unknown parent role 'nope'"):
        sec.add_role("d", parents=["nope"])


def test_principals_roles_and_tokens() -> None:
    sec = Security()
    with pytest.raises(SpecError, match="unknown role 'ghost'"):
        sec.add_principal("alice", roles=["ghost"])
    sec.add_principal("alice", roles=["viewer"], token="s3cret-token")
    with pytest.raises(UnknownPrincipal, match="unknown principal 'bob'"):
        sec.principal("bob")
    with pytest.raises(PermissionDenied, match="token is missing or wrong"):
        sec.principal("alice", "wrong-token")
    with pytest.raises(PermissionDenied, match="token"):
        sec.principal("alice")
    assert sec.principal("alice", "s3cret-token").name == "alice"
    with pytest.raises(PermissionDenied) as err:
        sec.check("alice", "stop", "tool:w/x")
    assert err.value.principal == "alice"
    assert err.value.permission == "tool:w/x:stop"
    assert err.value.resource == "tool:w/x"
    assert "alice" in str(err.value) and "tool:w/x:stop" in str(err.value)
    with pytest.raises(UnknownPrincipal):
        sec.check("nobody", "read", "system")


def test_cache_is_invalidated_when_roles_change() -> None:
    sec = Security()
    sec.add_role("r", permissions=["tool:a:call"])
    sec.add_principal("p", roles=["r"])
    assert not sec.allowed("p", "call", "tool:b")
    sec.add_role("r", permissions=["tool:a:call", "tool:b:call"])
    assert sec.allowed("p", "call", "tool:b")
    sec.add_role("r", permissions=[])
    assert not sec.allowed("p", "call", "tool:a")


def test_deep_hierarchy_is_flattened() -> None:
    sec = Security()
    for i in range(100):
        parents = [f"r{i - 1}"] if i % 5 else []
        sec.add_role(f"r{i}", permissions=[f"tool:t{i}/*:call"], parents=parents)
    sec.add_principal("p", roles=[f"r{i}" for i in range(4, 100, 5)])
    assert sec.allowed("p", "call", "tool:t0/x") and sec.allowed("p", "call", "tool:t99/x")
    assert len(sec.permissions_of("p")) == 100


def test_roles_and_principals_from_toml() -> None:
    cfg = parse_config("""
[system]
audit_log = "/tmp/x/audit.log"

[[role]]
name = "counter-user"
permissions = ["tool:workers/*:call"]
parents = ["viewer"]

[[principal]]
name = "alice"
roles = ["counter-user"]
token = "alice-token"

[[supervisor]]
name = "workers"

[[supervisor.tool]]
name = "counter"
actor = "examples.counter:Counter"
security = { permissions = ["tool:db/*:call"], audit = "all", env = { MODE = "test" }, umask = 63 }
""")
    assert cfg.system_options["audit_log"] == "/tmp/x/audit.log"
    sec = Security()
    sec.load(cfg.roles, cfg.principals)
    assert sec.allowed("alice", "call", "tool:workers/counter")
    assert sec.allowed("alice", "read", "tool:anything")
    tool = cfg.supervisors[0]["children"][0]
    assert tool["security"]["audit"] == "all" and tool["security"]["env"] == {"MODE": "test"}


@pytest.mark.parametrize("toml, match", [
    ('[[supervisor]]\nname="w"\n[[supervisor.tool]]\nname="c"\nactor="examples.counter:Counter"\n'
     'security={audit="loud"}', "security.audit='loud'"),
    ('[[supervisor]]\nname="w"\n[[supervisor.tool]]\nname="c"\nactor="examples.counter:Counter"\n'
     'security={permissions=["nope"]}', "malformed"),
    ('[[supervisor]]\nname="w"\n[[supervisor.tool]]\nname="c"\nactor="examples.counter:Counter"\n'
     'security={umask="077"}', "security.umask"),
    ('[[supervisor]]\nname="w"\n[[supervisor.tool]]\nname="c"\nactor="examples.counter:Counter"\n'
     'security={workdir="rel/dir"}', "security.workdir"),
    ('[system]\naudit_log = 5', "system.audit_log"),
    ('role = 5', "'role' must be an array of tables"),
])
def test_bad_security_config_is_refused(toml: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(toml)


def test_bad_roles_in_a_config_file_name_the_file(tmp_path) -> None:
    from supervisors import ToolSystem

    path = tmp_path / "tree.toml"
    path.write_text('[[role]]\nname = "a"\nparents = ["b"]\n')
    with pytest.raises(ConfigError, match="tree.toml.*unknown parent role 'b'"):
        ToolSystem.from_config(path)
    path.write_text('[[role]]\nname = "a"\n[[role]]\nname = "b"\nparents = ["a"]\n'
                    '[[role]]\nname = "a"\nparents = ["b"]\n')
    with pytest.raises(ConfigError, match="cycle"):
        ToolSystem.from_config(path)
    path.write_text('[[principal]]\nname = "x"\nroles = ["ghost"]\n')
    with pytest.raises(ConfigError, match="unknown role 'ghost'"):
        ToolSystem.from_config(path)
    path.write_text('[[principal]]\nname = "x"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="unknown field 'colour'"):
        ToolSystem.from_config(path)


# ----------------------------------------------------------------------------- tool isolation
def test_level_isolation_for_tool_to_tool_calls() -> None:
    standard = SecurityContext.from_spec(None, "standard")
    check_tool_call("a", standard, "b", "standard")
    check_tool_call("a", standard, "b", "low")
    with pytest.raises(PermissionDenied, match="standard-level.*high-level") as err:
        check_tool_call("a", standard, "vault", "high")
    assert err.value.permission == "tool:vault:call"
    allowed = SecurityContext.from_spec({"permissions": ["tool:vault:call"]}, "standard")
    check_tool_call("a", allowed, "vault", "high")
    with pytest.raises(PermissionDenied, match="reputation"):
        check_tool_call("a", allowed, "b", "low", restricted=True)
    with pytest.raises(PermissionDenied):
        check_tool_call("a", standard, "b", "galactic")


def test_security_table_checks() -> None:
    assert check_security(None) == {}
    assert check_security({"audit": "all"})["audit"] == "all"
    for bad in ({"colour": 1}, {"env": {"A": 1}}, {"env": {"A=B": "x"}}, {"umask": True},
                {"umask": 0o1000}, {"permissions": "tool:x:call"}, "all"):
        with pytest.raises(SpecError):
            check_security(bad)


# ----------------------------------------------------------------------------- reputation
def test_reputation_formula_recovers_with_time() -> None:
    r = Reputation(half_life=100.0, threshold=50.0)
    assert r.score("t", now=0) == 100.0
    for _ in range(6):
        r.record("t", "crash", at=0.0)
    assert r.score("t", now=0) == 40.0
    assert r.restricted("t", now=0)
    assert r.changes(now=0) == [("t", True, 40.0)]
    assert r.score("t", now=100) == 70.0  # half of the 60 points lost is back
    assert not r.restricted("t", now=100)
    assert r.changes(now=100) == [("t", False, 70.0)]
    r.observe([{"time": 5.0, "path": "u", "event": "failed"}, {"time": 5.0, "path": "u", "event": "failed"},
               {"time": 6.0, "path": "u", "event": "started"}])
    assert r.score("u", now=5.0) == 90.0  # counted once; 'started' is no incident
    with pytest.raises(ValueError):
        r.record("t", "sneeze")


# ----------------------------------------------------------------------------- the audit chain
def _chain(path: str, n: int, **kw: int) -> None:
    c = AuditChain(path, **kw)
    for i in range(n):
        c.append([entry(f"p{i}", "call", f"tool:w/{i}", "ok", "standard", i=i)])
    c.close()


def test_audit_chain_verifies_and_continues_after_reopen(tmp_path) -> None:
    log = str(tmp_path / "audit.log")
    _chain(log, 5)
    _chain(log, 5)
    v = verify(log)
    assert v.ok and v.lines == 10, str(v)
    lines = open(log).read().splitlines()
    first = json.loads(lines[0])
    assert first["prev"] == GENESIS and first["seq"] == 1
    assert set(first) == {"prev", "seq", "ts", "principal", "level", "operation", "resource", "result",
                          "context", "hash"}
    assert [e["seq"] for e in tail(log, 3)] == [8, 9, 10]
    assert oct(os.stat(log).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("tamper, line, words", [
    ("alter", 4, "altered"), ("insert", 4, "inserted"), ("remove", 4, "removed"),
    ("truncate", 10, "truncated"), ("swap", 3, "removed"),
])
def test_audit_verify_names_the_first_bad_line(tmp_path, tamper: str, line: int, words: str) -> None:
    log = str(tmp_path / "audit.log")
    _chain(log, 10)
    lines = open(log).read().splitlines()
    if tamper == "alter":
        lines[3] = lines[3].replace('"p3"', '"px"')
    elif tamper == "insert":
        forged, _ = make_line(json.loads(lines[2])["hash"], 4, entry("mallory", "stop", "tool:x", "ok"))
        lines.insert(3, forged)
    elif tamper == "remove":
        del lines[3]
    elif tamper == "truncate":
        lines[9] = lines[9][:50]
    elif tamper == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    open(log, "w").write("\n".join(lines) + "\n")
    v = verify(log)
    assert not v.ok and v.line == line, str(v)
    assert words in v.problem


def test_audit_rotation_keeps_the_chain(tmp_path) -> None:
    log = str(tmp_path / "audit.log")
    _chain(log, 40, max_bytes=3000)
    assert len(files_of(log)) > 2
    v = verify(log)
    assert v.ok and v.lines == 40, str(v)
    # removing a whole middle file is caught
    os.unlink(log + ".2")
    v = verify(log)
    assert not v.ok and "audit.log.2 is missing" in v.problem


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_fuzz_audit_verify_never_crashes(tmp_path_factory, blobs: list[bytes]) -> None:
    log = str(tmp_path_factory.mktemp("fuzz") / "a.log")
    _chain(log, 2)
    with open(log, "ab") as f:
        for b in blobs:
            f.write(b.replace(b"\n", b"") + b"\n")
    v = verify(log)
    assert v.ok == (not blobs)


def test_a_change_deep_in_the_hierarchy_reaches_the_principal_and_no_one_else() -> None:
    sec = Security()
    sec.add_role("base", permissions=["tool:a:call"])
    sec.add_role("mid", parents=["base"])
    sec.add_role("top", parents=["mid"])
    sec.add_role("other", permissions=["tool:o:call"])
    sec.add_principal("p", roles=["top"])
    sec.add_principal("q", roles=["other"])
    assert sec.allowed("p", "call", "tool:a") and not sec.allowed("p", "call", "tool:b")
    assert sec.allowed("q", "call", "tool:o")
    sec.add_role("base", permissions=["tool:b:call"])
    assert sec.allowed("p", "call", "tool:b") and not sec.allowed("p", "call", "tool:a")
    assert sec.decided("q", "call", "tool:o") is True  # q holds nothing that changed: cache kept


@pytest.mark.timeout(30)
def test_the_security_benchmarks_host_lane_runs() -> None:
    """benchmarks --only security measures the check against a stub system; the stub must
    keep up with what a checked call touches (it lacked the pools once, and the section broke)."""
    from supervisors.security.bench import check_lane

    assert check_lane(200)["checked_call_added_us"] < 1000
