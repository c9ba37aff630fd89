"""Jobs: multi-step supervisor work written as generators, run one at a time.

A job (start a child, stop a group, restart after a failure) yields a ``Wait``
and is resumed by the matching event: an ``Ack`` with its ``ref``, the child's
exit, or the wait's timeout. Jobs never overlap, so a supervisor never handles
two starts or stops at once, and nothing ever blocks the actor. (Pause and
resume are not jobs: the supervisor waits for their answer on the side.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisors.tree.children import Child

EXITED = object()         # a Wait ended because the child's process ended
TIMEOUT = object()        # a Wait ended because its time ran out

Job = Generator["Wait", Any, Any]


@dataclass
class Wait:
    """What a job waits for: an Ack (``ref``) or a child's exit, each with a timeout."""

    kind: str                 # "ack" | "exit"
    child: Child | None = None
    ref: int | None = None
    timeout: float | None = None
    token: int = 0


class JobQueue:
    """Runs queued jobs in order; routes acks, exits and timeouts to the waiting one.

    ``done(cid, reply_to, value=..., error=...)`` is told how each job ended,
    ``arm(delay, token)`` sets a timer that comes back as ``timed_out(token)``,
    ``token()`` makes a fresh number.
    """

    def __init__(self, done: Callable[..., None], arm: Callable[[float, int], None],
                 token: Callable[[], int]) -> None:
        self.done = done
        self.arm = arm
        self.token = token
        self.queue: deque[tuple[Job, int | None, Any]] = deque()
        self.current: tuple[Job, int | None, Any] | None = None
        self.wait: Wait | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    @property
    def queued(self) -> int:
        return len(self.queue)

    def add(self, job: Job, cid: int | None = None, reply_to: Any = None) -> None:
        self.queue.append((job, cid, reply_to))
        if self.current is None and self.wait is None:
            self._run()

    def acked(self, msg: Any) -> bool:
        w = self.wait
        if w is not None and w.kind == "ack" and w.ref == msg.ref:
            self._resume(msg)
            return True
        return False

    def exited(self, child: Child) -> bool:
        w = self.wait
        if w is not None and w.child is child and w.kind in ("ack", "exit"):
            self._resume(EXITED)
            return True
        return False

    def waiting_exit(self, child: Child) -> bool:
        """Is a job waiting for this child's start answer or its exit (an expected end)?"""
        w = self.wait
        return w is not None and w.child is child and w.kind in ("ack", "exit")

    def timed_out(self, token: int) -> None:
        if self.wait is not None and self.wait.token == token:
            self._resume(TIMEOUT)

    def drop(self) -> list[tuple[int | None, Any]]:
        """Close the running and queued jobs; return their (cid, reply_to) to answer."""
        pending = ([self.current] if self.current else []) + list(self.queue)
        self.queue.clear()
        self.current = None
        self.wait = None
        for job, _, _ in pending:
            job.close()
        return [(cid, reply_to) for _, cid, reply_to in pending]

    def _resume(self, value: Any) -> None:
        self.wait = None
        self._run(value)

    def _run(self, value: Any = None) -> None:
        while True:
            if self.current is None:
                if not self.queue:
                    return
                self.current = self.queue.popleft()
                value = None
            job, cid, reply_to = self.current
            try:
                w = job.send(value)
            except StopIteration as finished:
                self.current = None
                self.done(cid, reply_to, value=finished.value)
                continue
            except Exception as exc:
                self.current = None
                self.done(cid, reply_to, error=exc)
                continue
            w.token = self.token()
            self.wait = w
            if w.timeout is not None:
                self.arm(w.timeout, w.token)
            return
