"""The benchmark runner: what reaches each section's own process, and its records of the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from benchmarks.__main__ import _forwarded, parse_args
from benchmarks.machine import cpu_shares, cpu_ticks
from benchmarks.speedprobe import SpeedTrace

pytestmark = pytest.mark.timeout(30)


def test_no_plot_reaches_every_section_process() -> None:
    # Each section runs in a child of its own, which draws the scale and pool plots:
    # --no-plot has to travel with the other options or those PNGs are redrawn anyway.
    assert "--no-plot" in _forwarded(parse_args(["--no-plot", "--only", "scale"]))
    assert "--no-plot" not in _forwarded(parse_args(["--only", "scale"]))
    assert "--quick" in _forwarded(parse_args(["--quick", "--no-plot"]))


def test_a_section_process_imports_only_its_own_section() -> None:
    # A section's process forks the trees it measures: every module it imported is in
    # every tool and supervisor (aiohttp and prometheus_client, which only the monitoring
    # and MCP sections need, made each 0.15-0.3 MiB larger in the scale section).
    code = ("import sys, benchmarks.__main__ as m; m._section('scale'); "
            "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] in "
            "('aiohttp', 'prometheus_client', 'benchmarks'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=25,
                          check=True)
    loaded = done.stdout.split()
    assert "benchmarks.scale" in loaded
    assert not [n for n in loaded if n.startswith(("aiohttp", "prometheus_client"))], loaded
    assert "benchmarks.monitoring" not in loaded and "benchmarks.mcp" not in loaded


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


def test_the_speed_trace_samples_the_cpu_and_leaves_no_process() -> None:
    with SpeedTrace(every=0.02) as trace:
        start = time.time()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _lines(trace.path) < 5:
            time.sleep(0.05)
        end = time.time()
    assert len(trace.samples) >= 5, "the probe process wrote no samples"
    assert all(ms > 0 for _, ms in trace.samples)
    median = trace.median_between(start, end)
    assert median is not None and median > 0
    assert trace.median_between(end + 60, end + 61) is None  # nothing measured then
    assert not psutil.Process().children(), "the probe process outlived its trace"


def _lines(path: str) -> int:
    try:
        with open(path) as f:
            return len(f.readlines())
    except FileNotFoundError:  # the probe process has not started writing yet
        return 0


def test_fresh_memory_refuses_a_size_it_cannot_use(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.fresh_memory import main

    assert main(["x"]) == 2
    assert "GiB='x' is not a whole number" in capsys.readouterr().err
    assert main(["0"]) == 2
    assert "GiB=0 is too small" in capsys.readouterr().err


def test_the_machine_record_says_whether_the_vm_hands_memory_back() -> None:
    from benchmarks.machine import describe, page_reporting

    state = page_reporting()
    recorded = describe()["free_page_reporting"]
    assert (recorded is None) == (state is None)
    if state is not None:
        assert {k: v for k, v in recorded.items() if k != "reported_gib"} == \
            {k: v for k, v in state.items() if k != "reported_gib"}  # (the count moves)
        assert set(state) == {"active", "order", "min_free_ms", "max_waiting_mib", "reported_gib"}
        assert isinstance(state["active"], bool) and state["order"] >= 0
        assert state["reported_gib"] >= 0


def test_the_table_names_the_vm_that_hands_memory_back() -> None:
    from benchmarks.report import _handed_back_rows, table

    meta = {"quick": False, "machine": {"nproc": 2, "python": "3.11", "thespian": "4.0.1",
                                        "free_page_reporting": {"active": True, "order": 9,
                                                                "min_free_ms": 0}}}
    text = table({"meta": meta, "scale": {"error": "not run"}})
    assert "hands free memory back to its host" in text and "2^9 pages" in text
    meta["machine"]["free_page_reporting"]["active"] = False
    assert "hands free memory back" not in table({"meta": meta, "scale": {"error": "not run"}})
    assert _handed_back_rows({"handed_back_gib": None}) == []
    assert _handed_back_rows({"handed_back_gib": [0.0, 1.5]})[0][1] == "0 1.5"


@pytest.mark.timeout(120)
def test_each_scale_tree_runs_in_a_fresh_host_of_its_own(capfd: pytest.CaptureFixture[str]) -> None:
    # The root inherits its host's memory: a host that ran trees before gave it 0.25-0.45
    # MiB more, so each tree gets a new Python process (benchmarks.scale.in_fresh_host).
    from benchmarks import scale

    first = scale.in_fresh_host(3, 2, 1, 10, "WARNING")
    second = scale.in_fresh_host(2, 2, 1, 10, "WARNING")
    assert (first["tools"], first["supervisors"], second["tools"]) == (3, 2, 2)
    assert len({first["host_pid"], second["host_pid"], os.getpid()}) == 3
    assert first["root_supervisor"]["uss_mib"] > 0
    with pytest.raises(RuntimeError, match=r"tree of 0 tools \(2 per supervisor\) failed"):
        scale.in_fresh_host(0, 2, 1, 10, "WARNING")  # (one_size refuses it)
    assert "ValueError: a tree needs at least one tool" in capfd.readouterr().err
