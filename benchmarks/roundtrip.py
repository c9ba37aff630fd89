"""Call round trip, side by side: raw Pipe, bare Thespian ask, toolvisor slow and fast path, pykka, Ray.

All peers run at the same time and are sampled in interleaved blocks (each
round visits every peer, starting with a different one), so background noise
and CPU frequency changes hit them alike. Peers:

- ``pipe``: 32 bytes over a ``multiprocessing`` Pipe to a forked echo child.
- ``bare_ask``: ``ActorSystem.ask`` to a trivial Thespian ``Echo`` actor on the
  fast-path system's own actor system (same base, same admin, same host).
- ``slow_path``: ``tool.call("get")`` on a second ``ToolSystem(call_path="thespian")``.
- ``fast_path``: ``tool.call("get")`` on ``ToolSystem(call_path="socket")`` (the default).
- ``pykka``, ``ray``: only when importable (see ``benchmarks.peers``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from thespian.actors import ActorExitRequest, ActorSystem

from benchmarks import peers as outside
from benchmarks.echo import Echo, pipe_echo
from benchmarks.stats import ratio, summarize_ms
from supervisors import Policy, ToolSystem

PAYLOAD = b"x" * 32
TOOL = "examples.counter:Counter"
TIMEOUT_S = 10.0
TARGETS = {"fast_p50_over_pipe_p50_max": 3.0, "fast_p99_over_pipe_p99_max": 5.0,
           "slow_over_bare_ask_max": 1.5}


@dataclass(frozen=True)
class RoundTripSettings:
    samples: int = 3000
    warmup: int = 200
    block: int = 50


def _timed_block(fn: Callable[[], Any], n: int, out: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)


def interleave(peers: dict[str, Callable[[], Any]], settings: RoundTripSettings) -> dict[str, list[float]]:
    """Warm every peer up, then sample them in rotating blocks; seconds per call."""
    for fn in peers.values():
        for _ in range(settings.warmup):
            fn()
    names = list(peers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds = max(1, -(-settings.samples // settings.block))
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            n = min(settings.block, settings.samples - len(samples[name]))
            _timed_block(peers[name], n, samples[name])
    return samples


@contextlib.contextmanager
def pipe_child() -> Iterator[Callable[[], bytes]]:
    """A child process echoing over a multiprocessing Pipe; yields one round trip."""
    # fork: no resource-tracker helper process, and nothing to re-import in the child
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=pipe_echo, args=(there,), name="bench-pipe-echo", daemon=True)
    proc.start()
    there.close()

    def round_trip() -> bytes:
        here.send_bytes(PAYLOAD)
        return here.recv_bytes()

    try:
        yield round_trip
    finally:
        with contextlib.suppress(OSError):
            here.send_bytes(b"")
        here.close()
        proc.join(2.0)
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)


@contextlib.contextmanager
def echo_actor(system: ToolSystem) -> Iterator[tuple[Callable[[], Any], str]]:
    """A bare Echo actor on the system's own actor system (or, failing that, on a new one)."""
    asys = getattr(getattr(system, "transport", None), "_asys", None)
    own = None
    if asys is None:
        from supervisors.host.transport import free_port

        os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")
        own = asys = ActorSystem("multiprocTCPBase", {"Admin Port": free_port()},
                                 transientUnique=True)
        where = "a separate ActorSystem('multiprocTCPBase', transientUnique=True) on 127.0.0.1"
    else:
        where = "the fast-path ToolSystem's own multiprocTCPBase actor system"
    try:
        echo = asys.createActor(Echo)

        def ask() -> Any:
            reply = asys.ask(echo, PAYLOAD, TIMEOUT_S)
            if reply is None:
                raise RuntimeError("the echo actor did not answer")
            return reply

        try:
            yield ask, f"Echo actor created on {where}, asked with ActorSystem.ask from the host"
        finally:
            asys.tell(echo, ActorExitRequest())
    finally:
        if own is not None:
            own.shutdown()


def _optional(stack: contextlib.ExitStack, peers: dict[str, Callable[[], Any]],
              notes: dict[str, str], name: str, factory: Callable[[], Any]) -> None:
    try:
        peers[name], notes[name] = stack.enter_context(factory())
    except outside.Unavailable as exc:
        notes[name] = f"skipped: {exc}"


def _ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    return {k: ratio(a[f"{k}_ms"], b[f"{k}_ms"]) for k in ("p50", "mean", "p99")}


def run(settings: RoundTripSettings, log_level: str | None = None) -> dict[str, Any]:
    """Measure the round trips and return figures in ms plus the ratios."""
    notes: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        pipe = stack.enter_context(pipe_child())
        fast_sys = stack.enter_context(ToolSystem(policy=Policy(), log_level=log_level,
                                                  call_path="socket"))
        fast = fast_sys.supervise("bench").spawn(TOOL, name="counter")
        bare_ask, notes["bare_ask"] = stack.enter_context(echo_actor(fast_sys))
        slow_sys = stack.enter_context(ToolSystem(policy=Policy(), log_level=log_level,
                                                  call_path="thespian"))
        slow = slow_sys.supervise("bench").spawn(TOOL, name="counter")
        notes["fast_path"] = f"tool.call('get'), ToolSystem(call_path={fast_sys.call_path!r})"
        notes["slow_path"] = f"tool.call('get'), ToolSystem(call_path={slow_sys.call_path!r})"
        peers: dict[str, Callable[[], Any]] = {
            "pipe": pipe, "bare_ask": bare_ask,
            "slow_path": lambda: slow.call("get", timeout=TIMEOUT_S),
            "fast_path": lambda: fast.call("get", timeout=TIMEOUT_S),
        }
        _optional(stack, peers, notes, "pykka", outside.pykka_actor)
        _optional(stack, peers, notes, "ray", outside.ray_actor)
        raw = interleave(peers, settings)
    figures = {name: summarize_ms(values) for name, values in raw.items()}
    fast_f, slow_f, bare, pipe_f = (figures[k] for k in ("fast_path", "slow_path", "bare_ask", "pipe"))
    return {
        "settings": {"samples": settings.samples, "warmup": settings.warmup,
                     "block": settings.block, "payload_bytes": len(PAYLOAD), "tool": TOOL},
        "peers": notes,
        **figures,
        "ratio_fast_over_pipe": {**_ratios(fast_f, pipe_f),
                                 "p99_over_pipe_p50": ratio(fast_f["p99_ms"], pipe_f["p50_ms"])},
        "ratio_slow_over_bare_ask": _ratios(slow_f, bare),
        "ratio_fast_over_bare_ask": _ratios(fast_f, bare),
        "target": dict(TARGETS),
    }
