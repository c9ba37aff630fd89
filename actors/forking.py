"""What a forked actor process does with the heap it inherited: freeze it.

Every actor is forked: the admin from the host, supervisors from the admin or
a supervisor, tools from their supervisor. A child inherits its parent's whole
heap, and a supervisor's grows with its children. Python's collector would walk
those inherited objects in the child (time that grows with the parent's size)
and, by writing to their headers, copy every page it walks (memory the child no
longer shares). ``gc.freeze()`` right after the fork puts them outside the
collector: the child collects only what it makes itself. The parent is left as
it is (its collector keeps its usual generations).
"""

from __future__ import annotations

import gc
import os

_installed = False


def freeze_inherited() -> None:
    """Freeze what this process inherited, and do the same in every child it forks."""
    global _installed
    gc.freeze()
    if not _installed:
        os.register_at_fork(after_in_child=gc.freeze)
        _installed = True
