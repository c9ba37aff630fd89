"""An actor's timers: one heap, one Thespian wakeup armed for the earliest (actors/timers.py)."""

from __future__ import annotations

import time

from actors.timers import Timers


def test_only_a_timer_due_before_every_armed_one_arms_a_wakeup() -> None:
    t = Timers()
    assert t.add(10.0, "late") is not None      # nothing armed yet
    assert t.add(20.0, "later") is None          # the 10 s wakeup rings first
    early = t.add(0.0, "now")
    assert early is not None and early <= 0.01  # due before the armed one: arm another
    assert len(t) == 3


def test_a_wakeup_gives_what_is_due_in_order_and_arms_the_next() -> None:
    t = Timers()
    t.add(0.02, "b")
    t.add(0.01, "a")
    t.add(30.0, "c")
    deadline = time.monotonic() + 5
    due: list[str] = []
    while len(due) < 2 and time.monotonic() < deadline:
        got, arm = t.rang()
        due += got
        time.sleep(0.005)
    assert due == ["a", "b"]
    assert len(t) == 1


def test_a_wakeup_that_rings_early_arms_again() -> None:
    t = Timers()
    t.add(5.0, "x")
    due, arm = t.rang()          # as if Thespian's clock rang before ours
    assert due == [] and arm is not None and 4.0 < arm <= 5.0
    assert t.add(6.0, "y") is None  # that new wakeup covers later timers
