"""Calls: results, errors with remote tracebacks, bad requests, timeouts, threads."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from actors.codec import encode
from actors.messages import Call
from supervisors import (
    BadArguments,
    CallTimeout,
    ToolError,
    ToolSystem,
    ToolUnavailable,
    UnknownCommand,
)
from supervisors.processes.procs import pid_alive
from tests.helpers import wait_dead
from tests.tools import Counter

pytestmark = pytest.mark.timeout(60)


def test_call_returns_value_and_keeps_state(system: ToolSystem) -> None:
    t = system.supervise("w").spawn(Counter, name="c", config={"start": 1})
    assert t.call("add", k=2) == 3
    assert t.call("add") == 4
    assert t.call("get") == 4


def test_each_tool_is_its_own_process(system: ToolSystem) -> None:
    w = system.supervise("w")
    a, b = w.spawn(Counter, name="a"), w.spawn(Counter, name="b")
    pa, pb = a.call("pid"), b.call("pid")
    assert pa != pb and pa != os.getpid()
    assert a.status().pid == pa and b.status().pid == pb


def test_exception_in_command_gives_tool_error_with_remote_traceback(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(ToolError) as info:
        t.call("fail", message="disk full")
    err = info.value
    assert err.type == "ValueError"
    assert err.message == "disk full"
    assert "raise ValueError(message)" in (err.remote_traceback or "")
    assert err.tool == "c"
    assert t.call("add") == 1  # a plain command error is not fatal


def test_unknown_command_names_the_available_ones(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(UnknownCommand, match="no command 'nope'.*add.*get"):
        t.call("nope")


def test_wrong_arguments_are_rejected_with_the_signature(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(BadArguments, match=r"takes \(k=1\)"):
        t.call("add", kk=1)
    with pytest.raises(BadArguments):
        t.call("slow")
    assert t.call("add", k=5) == 5


def test_unsendable_result_is_a_clear_error(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(ToolError, match="cannot be sent") as info:
        t.call("unsendable")
    assert info.value.type == "UnsendableResult"


def test_call_timeout_then_late_reply_is_not_mistaken(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(CallTimeout):
        t.call("slow", seconds=0.5, timeout=0.1)
    # the late reply to 'slow' arrives while we wait for this one: it must be ignored
    assert t.call("add", k=7) == 7


def test_tool_that_dies_during_a_call_answers_at_once(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    with pytest.raises(ToolUnavailable, match="may or may not have run"):
        t.call("crash", timeout=20)
    assert t.call("get", timeout=10) == 0  # restarted instance serves


def test_calling_a_stopped_tool_is_unavailable(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    t.stop()
    with pytest.raises(ToolUnavailable, match="stopped"):
        t.call("get", timeout=5)


def test_calling_an_unknown_path_is_not_found(system: ToolSystem) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        system.tool("nobody").call("get", timeout=5)


def test_handles_are_safe_from_many_threads(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = [t.call("add", k=1) for _ in range(50)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors
    seen = sorted(v for vals in results.values() for v in vals)
    assert seen == list(range(1, 201))  # every call answered once, no answer crossed threads
    for vals in results.values():
        assert vals == sorted(vals)


def test_call_many_keeps_order_and_per_item_errors(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    out = t.call_many([("add", {"k": 1}), ("fail", {}), ("nope", {}), ("add", {"k": 2})])
    assert out[0] == 1 and out[3] == 3
    assert isinstance(out[1], ToolError) and out[1].type == "ValueError"
    assert isinstance(out[2], UnknownCommand)


def test_acall_from_asyncio(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")

    async def main() -> list[int]:
        return list(await asyncio.gather(*(t.acall("add", k=1) for _ in range(10))))

    assert sorted(asyncio.run(main())) == list(range(1, 11))


def test_malformed_messages_get_an_error_and_the_tool_keeps_serving(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c")
    t.call("get")
    route = system._routes["c"]
    ep = system.transport._endpoint()
    for junk in (b"\xc1\xff garbage", b"\x93\x63\x01\x02", "not bytes", encode(Call(5, "get", {}, 0))[:3]):
        reply = ep.ask(route.address, junk, 5)
        assert reply is not None
    assert t.call("add", k=3) == 3


def test_fatal_error_from_policy_restarts_the_tool(system: ToolSystem) -> None:
    from supervisors import Backoff, Policy

    w = system.supervise("w", policy=Policy(backoff=Backoff.none(), fatal_errors=("MemoryError",)))
    t = w.spawn(Counter, name="c")
    pid = t.call("pid")
    with pytest.raises(ToolError, match="pretend"):
        t.call("memory")
    wait_dead(pid)
    assert t.call("pid", timeout=10) != pid
    assert t.status().restarts == 1
    assert "MemoryError" in (t.status().last_error or "")


def test_kill_then_call_is_held_until_the_restart(system: ToolSystem) -> None:
    t = system.spawn(Counter, name="c", config={"start": 5})
    pid = t.call("pid")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    assert not pid_alive(pid)
    assert t.call("get", timeout=10) == 5  # delivered to the new instance, not lost
    assert t.call("pid") != pid


def test_oversized_calls_and_results_are_clear_errors(system: ToolSystem) -> None:
    from actors.frames import MAX_FRAME

    t = system.spawn(Counter, name="c")
    with pytest.raises(ToolError, match="too large to send") as info:
        t.call("add", k=1, pad=b"x" * (MAX_FRAME + 1))
    assert info.value.type == "CallTooLarge"
    with pytest.raises(ToolError, match="over the .*-byte message limit") as info:
        t.call("blob", size=MAX_FRAME + 1, timeout=20)
    assert info.value.type == "ResultTooLarge"
    assert t.call("add", k=1) == 1  # nothing ran for the refused call; the tool is fine
