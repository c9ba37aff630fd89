"""What this machine charges to touch memory it has not touched lately, GiB by GiB.

On the development VM, the first ~6 GiB of fresh pages fault in at about 2.5 us a page
and the next ones at 10-15 us (4-6 x): the host backs only so much of the guest's memory
at a time and pays for the rest when it is first written (the guest reports freed pages
back to it: virtio-balloon free page reporting). A tree of 1,000 tools uses about as
much, so its last spawns, whose copy-on-write faults land in that memory, can take twice
as long (docs/scaling.md, "Not done yet"). Usage::

    python -m benchmarks.fresh_memory [GiB]     # default 8; takes about 5 s a GiB

It maps ``GiB`` GiB of anonymous memory, writes one byte to each 4 KiB page, and prints
the cost per page for each GiB, then frees it all.
"""

from __future__ import annotations

import json
import mmap
import sys
import time

GIB = 1 << 30
PAGE = 4096


def touch_cost(gib: int) -> list[float]:
    """Microseconds per first write to a page, for each successive GiB of a fresh mapping."""
    m = mmap.mmap(-1, gib * GIB)
    out = []
    try:
        for g in range(gib):
            t0 = time.perf_counter()
            for off in range(g * GIB, (g + 1) * GIB, PAGE):
                m[off] = 1
            out.append(round((time.perf_counter() - t0) / (GIB // PAGE) * 1e6, 2))
    finally:
        m.close()
    return out


def main(argv: list[str]) -> int:
    try:
        gib = int(argv[0]) if argv else 8
    except ValueError:
        print(f"GiB={argv[0]!r} is not a whole number of GiB, e.g. 8", file=sys.stderr)
        return 2
    if gib < 1:
        print(f"GiB={gib} is too small: give at least 1", file=sys.stderr)
        return 2
    print(json.dumps({"us_per_page_by_gib": touch_cost(gib)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
