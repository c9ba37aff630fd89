"""Every complete Python code block of README.md and docs/*.md runs (issue 9).

Convention (see docs/getting-started.md, "Code samples"): a ```python block is a
complete program unless the line before its fence is ``<!-- fragment -->``. A
block whose first line is ``# name.py`` is also saved under that name, so later
blocks of the same page can import it. Each block runs in a fresh process, in a
scratch directory, with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
NAMED = re.compile(r"^# (\w+\.py)\b")
FRAGMENT = "<!-- fragment -->"


def blocks(page: Path) -> list[tuple[int, str, bool]]:
    """(line, code, is_fragment) of each python block on the page."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((text[:m.start()].count("\n") + 1, m.group(1), before == FRAGMENT))
    return out


CASES = [pytest.param(page, line, id=f"{page.relative_to(ROOT)}:{line}")
         for page in PAGES for line, _, fragment in blocks(page) if not fragment]


def test_the_convention_finds_blocks() -> None:
    assert len(CASES) >= 10
    assert any(fragment for page in PAGES for _, _, fragment in blocks(page))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("page", "line"), CASES)
def test_the_code_block_runs(tmp_path: Path, page: Path, line: int) -> None:
    code = ""
    for at, body, _ in blocks(page):  # earlier named blocks are modules the later ones import
        named = NAMED.match(body)
        if named and at < line:
            (tmp_path / named.group(1)).write_text(body, encoding="utf-8")
        if at == line:
            code = body
    script = tmp_path / (NAMED.match(code).group(1) if NAMED.match(code) else "block.py")
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, f"{page.name}:{line} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"


def test_the_license_is_declared_once_as_an_spdx_expression() -> None:
    import configparser
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # a string: a table makes setuptools warn
    assert "setuptools>=77" in project["build-system"]["requires"]
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "license" not in cfg["metadata"]  # would be overwritten, with a warning
