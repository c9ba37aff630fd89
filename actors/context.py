"""What an actor's behaviour may ask of the process it runs in.

Behaviours (the tool runner, the supervisor) see only this protocol; the
Thespian shell in ``actors.shell`` implements it. That keeps the actor
framework behind one seam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Context(Protocol):
    pid: int
    my_address: Any

    def send(self, to: Any, msg: Any) -> None:
        """Send a message (or its encoded bytes) to an address or socket peer; never blocks."""

    def after(self, delay: float, payload: Any) -> None:
        """Deliver ``payload`` to ``wakeup`` after ``delay`` seconds."""

    def spawn(self, kind: str) -> Any:
        """Start a child actor process of ``kind`` (``"tool"`` or ``"supervisor"``)."""

    def exit(self) -> None:
        """End this actor after the current message."""

    def open_door(self, max_callers: int = ..., label: str | None = None,
                  on_shut: Callable[[bool], None] | None = None) -> str | None:
        """Also serve calls on a local socket (the fast path), at most ``max_callers``
        connected at once; its address, or None. ``on_shut(replies_out)`` is told as the
        door closes for good, before it hangs up on its callers."""

    def watch_process(self, pid: int) -> bool:
        """Call the behaviour's ``process_ended(pid)`` once ``pid`` ends (a pidfd in our
        loop); False if this process cannot watch it (then poll ``pid`` instead)."""

    def replies_out(self) -> bool:
        """Has every reply queued on the door left this process?"""


class Behaviour(Protocol):
    def receive(self, msg: Any, sender: Any) -> None: ...
    def wakeup(self, payload: Any) -> None: ...
    def child_exited(self, address: Any) -> None: ...
    def system_exit(self) -> None: ...
    def process_ended(self, pid: int) -> None: ...
