"""After a large message an actor gives its heap's free pages back (actors.heap, issue 10)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest

from actors import codec, heap
from actors.codec import LazyList, decode, encode, pack_value
from actors.messages import Reply
from supervisors import ToolSystem
from tests.helpers import wait_until
from tests.tools import Counter

pytestmark = pytest.mark.timeout(60)
MIB = 1 << 20
glibc = pytest.mark.skipif(heap._malloc_trim is None, reason="no glibc malloc_trim here")


def test_large_messages_and_long_stretches_of_work_are_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_handled", 0)
    heap.take()
    heap.note(heap.LARGE - 1)
    assert heap.take() == 0
    heap.note(heap.LARGE)
    heap.note(10 * heap.LARGE)
    assert heap.take() == 2 and heap.take() == 0
    for _ in range(heap.BUSY - 1):
        assert not heap.handled()
    assert heap.take() == 0
    assert heap.handled()  # (a trim is due)
    assert heap.take() == 1


def test_the_codec_notes_large_messages_both_ways_and_lets_a_grown_packer_go() -> None:
    heap.take()
    small = encode(Reply(1, True, "x" * 100))
    packer = codec._local.packer
    assert decode(small).value == "x" * 100 and heap.take() == 0
    assert codec._local.packer is packer  # reused
    big = encode(Reply(2, True, "y" * heap.LARGE))
    assert heap.take() == 1 and codec._local.packer is None  # its buffer grew: not kept
    assert decode(big).value == "y" * heap.LARGE and heap.take() == 1
    pack_value(LazyList(range(20_000), lambda i: {"n": i, "pad": "z" * 8}))
    assert heap.take() >= 1


@glibc
def test_a_trim_gives_freed_heap_blocks_back() -> None:
    # 40 MB in 50 KB blocks (under glibc's mmap threshold: from the heap), each followed by
    # a small block that stays: freeing the large ones leaves holes the heap cannot shrink by
    script = textwrap.dedent("""
        import psutil
        from actors import heap
        def rss(): return psutil.Process().memory_info().rss
        blocks, pins = [], []
        for i in range(800):
            blocks.append(bytes(50_000) + bytes([i % 256]))
            pins.append(bytes(600) + bytes([i % 256]))
        full = rss()
        del blocks
        freed = rss()
        assert heap.trim()
        print(full, freed, rss())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    full, freed, trimmed = map(int, out)
    assert freed - trimmed > 30 * MIB, (full, freed, trimmed)


def _heap_kib(pid: int) -> int:
    """Private pages of the process's C heap, KiB."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                inside = parts[-1] == "[heap]"
            elif inside and parts[0] in ("Private_Dirty:", "Private_Clean:"):
                total += int(parts[1])
    return total


@glibc
@pytest.mark.parametrize("call_path", ["socket", "thespian"], indirect=True)
def test_a_tool_gives_back_what_its_large_replies_took(call_path: str) -> None:
    with ToolSystem(log_level="WARNING", data_dir=False) as system:
        tool = system.supervise("w").spawn(Counter, name="c")
        pid = tool.call("pid")
        before = _heap_kib(pid)
        for size in (900_000, 1_500_000, 700_000, 1_200_000, 300_000):
            assert len(tool.call("blob", size=size, timeout=30)) == size
        seen = [before]

        def back() -> bool:
            seen.append(_heap_kib(pid))
            return seen[-1] < before + 1024

        try:
            wait_until(back, timeout=10, every=0.1,
                       what=f"the tool's heap back under {before + 1024} KiB")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last readings (KiB): {seen[-5:]}") from None
        assert psutil.pid_exists(pid)
