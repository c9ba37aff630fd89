"""The benchmark runner's command line: what reaches each section's own process."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import _forwarded, parse_args
from benchmarks.machine import cpu_shares, cpu_ticks

pytestmark = pytest.mark.timeout(30)


def test_no_plot_reaches_every_section_process() -> None:
    # Each section runs in a child of its own, which draws the scale and pool plots:
    # --no-plot has to travel with the other options or those PNGs are redrawn anyway.
    assert "--no-plot" in _forwarded(parse_args(["--no-plot", "--only", "scale"]))
    assert "--no-plot" not in _forwarded(parse_args(["--only", "scale"]))
    assert "--quick" in _forwarded(parse_args(["--quick", "--no-plot"]))


def test_cpu_shares_split_the_machine_time() -> None:
    before = cpu_ticks()
    sum(i * i for i in range(300_000))  # some CPU between the two readings
    after = cpu_ticks()
    if before is None or after is None:
        pytest.skip("no /proc/stat here")
    shares = cpu_shares(before, after)
    if shares is None:  # no tick went by
        return
    # (a few ticks apart: kernel threads come and go and are not counted on the same tick
    # boundaries as /proc/stat, so only the shape and the range are checked)
    assert set(shares) == {"busy", "steal", "system", "kernel_threads"}
    assert all(0.0 <= v <= 1.0 for v in shares.values())
