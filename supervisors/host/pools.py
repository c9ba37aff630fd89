"""Pools in the host: the pool handle, least-busy routing, scale() and the autoscaler.

A pool ``w/fetch`` is a set of ordinary tool children ``w/fetch#1`` .. ``#N`` of
supervisor ``w`` (``supervisors.tree.pools``). The host routes each call to the
running instance with the fewest calls in flight from this host (ties take turns);
paused ones only when none runs. An instance found not serving as the call goes out
(restarting, stopped, removed: ``NotServing``, the call was not sent) is passed over
for another; only when every instance refused does the call wait for one, as a call
to a single tool waits for its restart. In-flight counts are deques (append and pop
are atomic), so handles stay safe to share between threads without a lock; ``scale()``
calls on one pool take turns (a lock per pool).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from actors import routes
from actors.busy import marker_path, read_marker
from actors.errors import NotFound, NotServing, SpecError, ToolError
from actors.state import ToolState
from supervisors.host.handles import ToolHandle, ToolStatus, _split
from supervisors.tree.pools import (
    SEP,
    Autoscale,
    Decision,
    Sample,
    check_room,
    check_size,
    decide,
    instance_name,
    instance_spec,
    is_quiet,
    split_instance,
)

if TYPE_CHECKING:
    from supervisors.host.system import ToolSystem

MEMBERS_FRESH = 0.5  # seconds a listing of a pool's instances is reused
#: An autoscaler has the accountant read its instances' counters again when their last
#: reading is older than this (seconds, at most a quarter of its interval): its samples
#: are then at most this stale, whatever the accountant's sweep cadence.
REFRESH = 0.1


@dataclass(frozen=True)
class PoolStatus:
    """A pool: its overall state and each instance's ``ToolStatus``."""

    name: str
    path: str
    state: ToolState
    replicas: int
    instances: list[ToolStatus]
    in_flight: int = 0
    autoscale: dict[str, Any] | None = None
    kind: str = "pool"
    pid: int | None = None
    restarts: int = 0
    last_error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)


def _chunk_errors(exc: BaseException, first: int, size: int, total: int) -> list[BaseException]:
    """One error per call of a chunk of ``call_many`` that failed as a whole, each saying
    which calls went where (the calls of other chunks may have run)."""
    if not isinstance(exc, ToolError):
        return [exc] * size
    last = first + size - 1
    calls = f"calls {first}-{last}" if size > 1 else f"call {first}"
    out: list[BaseException] = []
    for i in range(first, first + size):
        message = (f"call {i} of the {total} (counting from 0): {calls} went to "
                   f"{exc.tool or 'one instance'} as one batch, which failed as a whole: "
                   f"{exc.message}")
        item = type(exc).__new__(type(exc), message)  # (its class and details, a message of its own)
        item.__dict__.update(exc.__dict__)
        item.message = message
        out.append(item)
    return out


class _Pool:
    """What the host knows about one pool: its instances, calls in flight, draining ones."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.members: list[str] = []
        self.entries: list[routes.RouteEntry] = []
        self.listed = 0.0
        self.flight: dict[str, deque[int]] = {}
        self.draining: set[str] = set()
        self.turns = itertools.count()
        self.done = itertools.count()  # one step per finished call (atomic)
        self.peeks = 0                 # steps taken by calls_done() itself
        self.autoscaler: Autoscaler | None = None
        self.resizing = threading.Lock()  # one scale() at a time

    def calls_done(self) -> int:
        """Calls finished so far (only the autoscaler thread asks)."""
        value = next(self.done) - self.peeks
        self.peeks += 1
        return value

    def in_flight(self, inst: str) -> int:
        q = self.flight.get(inst)
        return len(q) if q is not None else 0


class Pools:
    """Every pool of one ToolSystem, as the host sees them."""

    def __init__(self, system: ToolSystem) -> None:
        self.system = system
        self.pools: dict[str, _Pool] = {}
        self._executor: ThreadPoolExecutor | None = None

    # -------------------------------------------------------------------- finding
    def _pool(self, path: str) -> _Pool:
        pool = self.pools.get(path)
        if pool is None:
            pool = self.pools.setdefault(path, _Pool(path))
        return pool

    def members(self, path: str, fresh: bool = False) -> list[str]:
        """Instance paths of the pool at ``path`` (empty if there is no such pool)."""
        pool = self._pool(path)
        now = time.monotonic()
        if fresh or now - pool.listed > MEMBERS_FRESH or not pool.members:
            runtime = self.system.runtime_dir
            pool.entries = routes.members(runtime, path) if runtime else []
            pool.members = [e.path for e in pool.entries]
            pool.listed = now
        return pool.members

    def stale(self, path: str) -> None:
        """One of the pool's instances changed through this host: list it again next time."""
        pool = self.pools.get(path)
        if pool is not None:
            pool.listed = 0.0

    def is_pool(self, path: str) -> bool:
        runtime = self.system.runtime_dir
        if not runtime or routes.lookup(runtime, path) is not None:
            return False
        if path in self.pools:
            return bool(self.members(path, fresh=True))
        return bool(routes.members(runtime, path))  # (no record kept for paths that are not pools)

    def check_instance(self, path: str) -> None:
        """Raise ``NotFound`` for ``w/fetch#9`` when the pool has no such instance."""
        runtime = self.system.runtime_dir
        parent, name = _split(path)
        base, sep, _ = name.rpartition(SEP)  # (also "fetch#", "fetch#-1", "fetch#abc")
        if not runtime or not sep or routes.lookup(runtime, path) is not None:
            return
        pool = f"{parent}/{base}".strip("/")
        have = [_split(e.path)[1] for e in routes.members(runtime, pool)]
        if not have and not split_instance(name):
            return  # (not a pool's name at all: the usual NotFound comes on the first call)
        raise NotFound(f"{path} does not exist: " + (
            f"pool {pool} has {len(have)} instance(s): {', '.join(have)}" if have
            else f"there is no pool {pool}"), tool=path)

    # -------------------------------------------------------------------- routing
    def pick(self, path: str, avoid: Iterable[str] = ()) -> str:
        """The instance for the next call: running (else paused), not draining, fewest
        calls in flight, not in ``avoid`` unless nothing else is left."""
        pool = self._pool(path)
        members = [m for m in self.members(path) if m not in pool.draining]
        if not members:
            members = self.members(path, fresh=True)
            members = [m for m in members if m not in pool.draining] or members
        if not members:
            raise NotFound(f"{path} has no instances: the pool was removed", tool=path)
        # Serving as of the last listing (at most MEMBERS_FRESH old), less the instances a
        # call of ours saw die since (``_gone``): no file read or system call per call.
        gone = self.system._gone
        live = [e for e in pool.entries
                if e.path in members and e.serving and e.pid != gone.get(e.path)]
        serving = [e.path for e in live if e.state == "running"] or [e.path for e in live]
        choice = [m for m in (serving or members) if m not in avoid] or serving or members
        turn = next(pool.turns)
        n = len(choice)
        best = min(range(n), key=lambda i: (pool.in_flight(choice[i]), (i - turn) % n))
        return choice[best]

    @contextmanager
    def flight(self, path: str, inst: str | None = None,
               avoid: Iterable[str] = (), calls: int = 1) -> Iterator[str]:
        """Count ``calls`` in flight on ``inst`` (None: pick one, not in ``avoid`` if
        another is left) for as long as they run (a batch's chunk counts its items).

        Picking and counting are two steps, so two threads may pick the same idle
        instance at once; the one that finds itself second while another instance
        is idle gives its place back and picks again (no lock needed)."""
        pool = self._pool(path)
        for attempt in range(3):
            chosen = inst or self.pick(path, avoid)
            q = pool.flight.get(chosen)
            if q is None:
                q = pool.flight.setdefault(chosen, deque())
            q.append(1)
            if inst is not None or attempt == 2 or len(q) == 1 or not any(
                    pool.in_flight(m) < len(q) - 1 for m in self.members(path)
                    if m != chosen and m not in pool.draining):
                break
            q.pop()
        for _ in range(calls - 1):
            q.append(1)
        try:
            yield chosen
        finally:
            for _ in range(calls):
                q.pop()
                next(pool.done)

    def call(self, path: str, command: str, args: dict[str, Any], timeout: float | None) -> Any:
        refused: list[str] = []
        while True:
            with self.flight(path, avoid=refused) as inst:
                try:
                    return self.system._call(inst, command, args, timeout,
                                             hold=inst in refused)
                except NotServing:
                    self._refused(path, inst, refused)

    async def acall(self, path: str, command: str, args: dict[str, Any], timeout: float | None) -> Any:
        refused: list[str] = []
        while True:
            with self.flight(path, avoid=refused) as inst:
                try:
                    return await self.system._acall(inst, command, args, timeout,
                                                    hold=inst in refused)
                except NotServing:
                    self._refused(path, inst, refused)

    def _refused(self, path: str, inst: str, refused: list[str]) -> None:
        """``inst`` was not serving (the call was not sent): list the pool again, and pass
        it over. Once every instance has refused, the next pick is one of them, called with
        ``hold``: it waits for that instance's restart, or raises why none serves."""
        refused.append(inst)
        self.members(path, fresh=True)

    def call_many(self, path: str, calls: list[Any], timeout: float | None) -> list[Any]:
        """Spread the batch over the least busy instances in contiguous chunks; gather in order.

        A chunk that fails as a whole (a timeout, say) gives each of its calls an error of
        its own saying which calls went where; if every chunk failed, the first chunk's
        error is raised, as for one tool."""
        if not calls:
            return []
        pool = self._pool(path)
        chosen: list[str] = []
        for _ in range(min(len(calls), max(1, len(self.members(path))))):
            inst = self.pick(path, avoid=chosen)
            if inst in chosen:
                break
            chosen.append(inst)
            pool.flight.setdefault(inst, deque()).append(1)  # so the next pick avoids it
        for inst in chosen:
            pool.flight[inst].pop()
        k = len(chosen)
        size, extra = divmod(len(calls), k)
        chunks, start = [], 0
        for i in range(k):
            end = start + size + (1 if i < extra else 0)
            chunks.append(calls[start:end])
            start = end

        def run(inst: str, chunk: list[Any]) -> list[Any] | BaseException:
            refused: list[str] = []
            while True:
                with self.flight(path, inst, refused, calls=len(chunk)):
                    try:
                        return self.system._batch(inst, chunk, timeout, hold=inst in refused)
                    except NotServing:
                        self._refused(path, inst, refused)
                    except ToolError as exc:
                        return exc
                inst = self.pick(path, avoid=refused)

        if k == 1:
            results = [run(chosen[0], chunks[0])]
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pool-batch")
            futures = [self._executor.submit(run, inst, chunk)
                       for inst, chunk in zip(chosen, chunks, strict=True)]
            results = [f.result() for f in futures]
        if all(isinstance(r, BaseException) for r in results):
            raise results[0]  # type: ignore[misc]
        out: list[Any] = []
        for chunk, r in zip(chunks, results, strict=True):
            out += _chunk_errors(r, len(out), len(chunk), len(calls)) \
                if isinstance(r, BaseException) else r
        return out

    # -------------------------------------------------------------------- size
    def scale(self, path: str, n: Any, reason: str = "", timeout: float | None = None) -> int:
        """Make the pool ``n`` instances: start ``#k+1..#n`` or drain and remove the highest.
        Calls on one pool take turns (an operator's and the autoscaler's, say)."""
        n = check_size(n, "n")
        self.check_bounds(path, n)
        pool = self._pool(path)
        with pool.resizing:
            return self._resize(path, pool, n, reason, timeout)

    def _resize(self, path: str, pool: _Pool, n: int, reason: str, timeout: float | None) -> int:
        system = self.system
        parent, name = _split(path)
        sup = system.supervisor(parent)
        listed = self._listed(parent, name)
        have = sorted((split_instance(_split(m)[1])[1], m)  # type: ignore[index]
                      for m in listed)
        if not have:
            raise NotFound(f"{path} is not a pool (no instances {name}#1.. under "
                           f"{parent or '(root)'})", tool=path)
        old = len(have)
        if n > old:
            if all(state == ToolState.STOPPED.value for state in listed.values()):
                every = {1: "its one instance", 2: "both instances"}.get(old, f"all {old} instances")
                raise ToolError(f"{path} is stopped ({every}); scale({n}) would start {n - old} "
                                f"running instance{'s' if n - old > 1 else ''} beside "
                                f"{'it' if old == 1 else 'them'}: start the pool first "
                                "(pool.start()), then scale it", tool=path)
            check_room(n - old, "n", n)
            template = system._request(parent, "child_spec", {"name": _split(have[0][1])[1]}, timeout)
            top = have[-1][0]
            for k in range(top + 1, top + 1 + n - old):
                spec = instance_spec(template, name, k)
                system._request(parent, "spawn", {"spec": spec}, timeout or
                                float(spec.get("start_timeout", 10.0)) + 5.0)
                system.security.note_spec(spec_path(parent, spec["name"]), spec)
        elif n < old:
            surplus = [m for _, m in have[n:]]
            pool.draining.update(surplus)
            deadline = time.monotonic() + (timeout or system.op_timeout)
            try:
                while any(pool.in_flight(m) for m in surplus) and time.monotonic() < deadline:
                    time.sleep(0.01)  # new calls go elsewhere; these finish first
                for m in surplus:
                    sup.remove(_split(m)[1], timeout)
            finally:
                pool.draining.difference_update(surplus)
        self.members(path, fresh=True)
        if n != old:
            detail = f"{old} -> {n}" + (f": {reason}" if reason else ": by scale()")
            try:
                system._request(parent, "note_event", {"name": name, "event": "scaled",
                                                       "detail": detail}, timeout)
            except ToolError as exc:
                logger.warning("pool {}: the scaling event was not recorded: {}", path, exc)
            logger.info("pool {} scaled {}", path, detail)
        return n

    def _listed(self, parent: str, name: str) -> dict[str, str]:
        """Instance paths and their states as the supervisor lists them (authoritative,
        unlike the directory)."""
        info = self.system._request(parent, "inspect", {}, None)
        out = {}
        for child in info["children"]:
            parts = split_instance(child["name"])
            if parts is not None and parts[0] == name:
                out[spec_path(parent, child["name"])] = child["state"]
        return out

    def status(self, path: str, timeout: float | None = None) -> PoolStatus:
        parent, name = _split(path)
        info = self.system._request(parent, "inspect", {}, timeout)
        kids = [c for c in info["children"]
                if (p := split_instance(c["name"])) is not None and p[0] == name]
        if not kids:
            raise NotFound(f"{path} is not a pool", tool=path)
        kids.sort(key=lambda c: split_instance(c["name"])[1])  # type: ignore[index]
        paths = [c["path"] for c in kids]
        try:
            usage = self.system.usage(paths, timeout)
        except ToolError:
            usage = {}
        instances = []
        for c in kids:
            found = usage.get(c["path"]) or {}
            c = {**c, "usage": found if c.get("pid") and found.get("pid") == c.get("pid") else {}}
            instances.append(ToolStatus.from_info(c))
        states = {i.state for i in instances}
        state = states.pop() if len(states) == 1 else (
            ToolState.RUNNING if ToolState.RUNNING in states else instances[0].state)
        errors = [i for i in instances if i.last_error]
        pool = self._pool(path)
        total: dict[str, Any] = {}
        for i in instances:
            for key, value in i.usage.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "pid":
                    total[key] = total.get(key, 0) + value
        busy = [i.usage["busy_fraction"] for i in instances
                if isinstance(i.usage.get("busy_fraction"), (int, float))]
        if busy:  # per instance, as target_busy is (call_rate and queue stay sums)
            total["busy_fraction"] = round(sum(busy) / len(busy), 4)
        rule = pool.autoscaler.rule.to_dict() if pool.autoscaler is not None else None
        return PoolStatus(name=name, path=path, state=state, replicas=len(instances),
                          instances=instances, in_flight=sum(pool.in_flight(p) for p in paths),
                          autoscale=rule, restarts=sum(i.restarts for i in instances),
                          last_error=max(errors, key=lambda i: i.since).last_error if errors else None,
                          usage=total)

    # -------------------------------------------------------------------- autoscaling
    def autoscale(self, path: str, rule: Autoscale) -> None:
        pool = self._pool(path)
        if pool.autoscaler is not None:
            pool.autoscaler.stop()
        pool.autoscaler = Autoscaler(self, path, rule)
        pool.autoscaler.start()

    def remove(self, path: str) -> None:
        """The pool is being removed: stop its autoscaler and forget what we knew."""
        pool = self.pools.pop(path, None)
        if pool is not None and pool.autoscaler is not None:
            pool.autoscaler.stop()

    def remove_under(self, path: str) -> None:
        """The supervisor at ``path`` is being removed: so is every pool below it."""
        for known in [p for p in self.pools if p.startswith(f"{path}/")]:
            self.remove(known)

    def check_bounds(self, path: str, n: int) -> None:
        """An autoscaled pool is sized by hand only within its own bounds (its autoscaler
        would undo anything else at its next look)."""
        pool = self.pools.get(path)
        rule = pool.autoscaler.rule if pool is not None and pool.autoscaler is not None else None
        if rule is not None and not rule.min <= n <= rule.max:
            raise SpecError.invalid("n", n, f"is outside this autoscaled pool's bounds "
                                    f"replicas.min = {rule.min} .. replicas.max = {rule.max} "
                                    f"(its autoscaler would undo it); pick a size in them")

    def close(self) -> None:
        for pool in list(self.pools.values()):
            if pool.autoscaler is not None:
                pool.autoscaler.stop()
                pool.autoscaler = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.pools.clear()


def spec_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class Autoscaler:
    """One thread per autoscaled pool: every ``interval`` it asks the accountant for the work
    history of the pool's instances (busy fraction, call rate, queue depth per instance:
    ``ToolSystem.usage_history``), keeps ``window`` seconds of pool samples and applies
    ``supervisors.tree.pools.decide``; each change is a ``scaled`` event with its reason.

    The accountant reads every tool's counters once per sweep (``sample_every``); the
    request asks it to read the pool's instances again if their last reading is older
    than ``REFRESH`` (or a quarter of ``interval``), so a pool reacts at its own pace
    without the whole tree being swept faster. If the accountant does not answer (not
    running, restarting), the autoscaler falls back to sampling the busy markers and the
    host's own call counts (``_sample_host``), logs that it does, and goes back to the
    accountant when it answers.
    """

    def __init__(self, pools: Pools, path: str, rule: Autoscale) -> None:
        self.pools = pools
        self.path = path
        self.rule = rule
        self.history: deque[Sample] = deque(maxlen=max(8, int(rule.window / rule.interval) + 2))
        self.decisions: list[tuple[float, Decision]] = []
        self.source = "accountant"   # where the last sample came from
        self._since = 0.0            # newest accountant point seen (time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"autoscale {path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        quiet_since: float | None = None
        settle = 0
        while not self._stop.is_set():
            try:
                sample = self._sample()
            except Exception as exc:  # the system is going away, or a supervisor is busy
                logger.debug("autoscaler {}: {}", self.path, exc)
                if self._stop.wait(self.rule.interval):
                    return
                continue
            if sample is None:
                continue
            self.history.append(sample)
            if settle > 0:
                settle -= 1
                continue
            quiet_since = (quiet_since or sample.time) if is_quiet(sample, self.rule) else None
            decision = decide(list(self.history), self.rule, quiet_since)
            if decision is None or decision.size == sample.size:
                continue
            try:
                self.pools.scale(self.path, decision.size, decision.reason)
                self.decisions.append((time.time(), decision))
            except NotFound as exc:  # the pool (or its supervisor) is gone: so is its autoscaler
                logger.info("autoscaler {} ends: {}", self.path, exc)
                return
            except Exception as exc:
                logger.warning("autoscaler {}: could not scale to {}: {}", self.path,
                               decision.size, exc)
            self.history.clear()
            quiet_since = None
            settle = 2  # let the new size show in the figures before judging again

    def _members(self) -> list[str]:
        """The instances to judge by: not draining; none while the pool does not run (all
        stopped, or its supervisor down: a stopped pool is not scaled)."""
        pool = self.pools._pool(self.path)
        members = self.pools.members(self.path)  # (lists the pool: its entries are fresh)
        if not any(e.state not in ("stopped", "failed") for e in pool.entries):
            return []
        return [m for m in members if m not in pool.draining]

    def _sample(self) -> Sample | None:
        """One pool sample from the accountant's history (or the fallback); None: none yet."""
        if self.source == "accountant" and self._stop.wait(self.rule.interval):
            return None  # (the fallback's sampling takes an interval itself)
        members = self._members()
        if not members:
            return None
        system = self.pools.system
        now = time.time()
        if self._since > now + self.rule.interval:  # the wall clock stepped back: the
            self._since = now - self.rule.interval  # accountant's points are timed by it
        try:
            history = system.usage_history(members, since=self._since,
                                           refresh=min(REFRESH, self.rule.interval / 4),
                                           timeout=max(2.0, 4 * self.rule.interval))
        except ToolError as exc:
            if self.source != "host":
                logger.warning("autoscaler {}: the accountant did not answer ({}); deciding from "
                               "the busy markers and the host's own calls until it does",
                               self.path, exc)
                self.source = "host"
            return self._sample_host(members)
        if self.source != "accountant":
            logger.info("autoscaler {}: deciding from the accountant's history again", self.path)
            self.source = "accountant"
        return self._from_history(members, history)

    def _from_history(self, members: list[str], history: dict[str, Any]) -> Sample | None:
        """Busy fraction per instance and call rate, weighted by the span each new point
        covers; queue depth as each instance's newest point says."""
        busy = rate = queued = 0.0
        counted = 0
        span = 0.0
        for m in members:
            points = (history.get(m) or {}).get("points") or []
            if not points:
                continue  # not read twice yet (just started), or no reading since the last look
            total = sum(p["span"] for p in points) or 1e-9
            busy += sum(p["busy_fraction"] * p["span"] for p in points) / total
            rate += sum(p["call_rate"] * p["span"] for p in points) / total
            queued += points[-1]["queue"]
            span = max(span, total)
            counted += 1
            self._since = max(self._since, points[-1]["time"])
        if not counted:
            return None
        return Sample(time.time(), len(members), busy / counted, queued, rate, round(span, 3),
                      "accountant")

    def _sample_host(self, members: list[str]) -> Sample | None:
        """The fallback: busy markers and the host's own calls, looked at five times over
        one ``interval`` (calls from tools are seen through the busy markers alone)."""
        pools, rule = self.pools, self.rule
        runtime = pools.system.runtime_dir
        if not runtime:
            self._stop.wait(rule.interval)  # (nothing to sample: do not spin)
            return None
        pool = pools._pool(self.path)
        ticks, busy, queued = 5, 0.0, 0.0
        start_done, t0 = pool.calls_done(), time.monotonic()
        for _ in range(ticks):
            members = self._members()
            if not members:
                return None
            hits = 0
            for m in members:
                entry = routes.lookup(runtime, m)
                if entry is not None and entry.pid and read_marker(marker_path(runtime, int(entry.pid))):
                    hits += 1
                elif pool.in_flight(m):
                    hits += 1  # (on its way there, or a tool without a marker)
            busy += hits / len(members)
            queued += sum(max(0, pool.in_flight(m) - 1) for m in members)
            if self._stop.wait(rule.interval / ticks):
                return None
        done = pool.calls_done()
        span = time.monotonic() - t0
        rate = max(0, done - start_done) / max(1e-6, span)
        return Sample(time.time(), len(members), busy / ticks, queued / ticks, rate, round(span, 3),
                      "host")


class PoolHandle(ToolHandle):
    """The handle of a pool: calls go to the least busy instance; ``scale(n)`` resizes it.

    ``status()`` gives a ``PoolStatus``; ``instance(k)`` one instance's ``ToolHandle``;
    stop, start, restart, pause and resume apply to every instance.
    """

    @property
    def _pools(self) -> Pools:
        return self.system.pools

    def call(self, command: str, /, timeout: float | None = None, **args: Any) -> Any:
        return self._pools.call(self.path, command, args, timeout)

    def acall(self, command: str, /, timeout: float | None = None, **args: Any) -> Awaitable[Any]:
        return self._pools.acall(self.path, command, args, timeout)

    def call_many(self, calls: Iterable[tuple[str, dict[str, Any]]],
                  timeout: float | None = None) -> list[Any]:
        from supervisors.host.system import _batch_item

        items = list(calls)
        for i, item in enumerate(items):
            _batch_item(i, item)  # a bad item fails the whole batch at once, as for one tool
        return self._pools.call_many(self.path, items, timeout)

    def status(self, timeout: float | None = None) -> PoolStatus:  # type: ignore[override]
        return self._pools.status(self.path, timeout)

    def scale(self, n: int, timeout: float | None = None) -> PoolStatus:
        """Run ``n`` instances: new ones start now; surplus ones stop after their calls finish.
        An autoscaled pool takes only a size within its ``min`` .. ``max`` (its autoscaler
        goes on deciding from there)."""
        self._pools.scale(self.path, n, timeout=timeout)
        return self.status(timeout)

    def usage_history(self, since: float = 0.0,  # type: ignore[override]
                      timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """The work history of each instance, by instance path (``ToolSystem.usage_history``)."""
        return self.system.usage_history(self._pools.members(self.path, fresh=True), since=since,
                                         timeout=timeout)

    def instance(self, k: int) -> ToolHandle:
        """Instance ``#k`` (``NotFound`` naming the instances there are if it is not one)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise SpecError.invalid("k", k, "must be an instance number, a whole number >= 1 "
                                    "(w/fetch#2 is instance(2))")
        parent, name = _split(self.path)
        return self.system.tool(spec_path(parent, instance_name(name, k)))

    def instances(self) -> list[ToolHandle]:
        return [ToolHandle(self.system, m) for m in self._pools.members(self.path, fresh=True)]

    def _each(self, op: str, timeout: float | None) -> PoolStatus:  # type: ignore[override]
        for h in self.instances():
            getattr(ToolHandle, op)(h, timeout)
        return self.status(timeout)

    def stop(self, timeout: float | None = None) -> PoolStatus:  # type: ignore[override]
        return self._each("stop", timeout)

    def start(self, timeout: float | None = None) -> PoolStatus:  # type: ignore[override]
        return self._each("start", timeout)

    def restart(self, timeout: float | None = None) -> PoolStatus:  # type: ignore[override]
        return self._each("restart", timeout)

    def pause(self, timeout: float | None = None) -> PoolStatus:  # type: ignore[override]
        return self._each("pause", timeout)

    def resume(self, timeout: float | None = None) -> PoolStatus:  # type: ignore[override]
        return self._each("resume", timeout)

    def errors(self, timeout: float | None = None) -> list[Any]:
        out = [r for h in self.instances() for r in ToolHandle.errors(h, timeout)]
        return sorted(out, key=lambda r: r.time)


def spawn_pool(sup: Any, actor: Any, name: str, config: dict[str, Any] | None, replicas: Any,
               timeout: float | None, **options: Any) -> PoolHandle:
    """``SupervisorHandle.spawn(..., replicas=...)``: start instances ``#1..#N`` in order; if
    one fails to start, the ones started are removed and its error is raised."""
    from supervisors.tree.pools import check_replicas, expand
    from supervisors.tree.specs import tool_spec

    rule = check_replicas(replicas)
    spec = tool_spec(actor, name, config, **options)
    spec["replicas"] = rule.to_dict() if isinstance(rule, Autoscale) else rule
    system = sup.system
    started: list[str] = []
    for inst in expand(spec):
        try:
            system._request(sup.path, "spawn", {"spec": inst},
                            timeout or float(inst["start_timeout"]) + 5.0)
        except ToolError as exc:
            exc.tool = sup._child_path(inst["name"])
            for done in reversed(started):
                try:
                    sup.remove(done, timeout)
                except ToolError as gone:
                    logger.warning("pool {}: could not remove {}: {}", name, done, gone)
            raise
        started.append(inst["name"])
        system.security.note_spec(sup._child_path(inst["name"]), inst)
    path = sup._child_path(name)
    system.pools.remove(path)  # (whatever was known of an earlier pool of this path)
    system.pools.members(path, fresh=True)
    if isinstance(rule, Autoscale):
        system.pools.autoscale(path, rule)
    return PoolHandle(system, path)
