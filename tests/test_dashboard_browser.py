"""The dashboard in a real headless Chromium (Debian's package, driven by playwright).

``make test`` installs chromium with apt-get where it is missing and it can
(scripts/ensure-browser.sh); where no browser can be had, this test skips and says why.
It also takes the screenshot that docs/monitoring.md shows: it is saved as docs/dashboard.png
when that file is missing or ``TOOLVISOR_SCREENSHOT=1`` is set (so a test run leaves the
worktree clean).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from supervisors import ToolSystem
from supervisors.frontends.dashboard import Dashboard
from supervisors.monitoring import AlertRule, AlertSink
from tests.conftest import FAST

CHROMIUM = os.environ.get("TOOLVISOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-ops-token"
SHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"


def _browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/ensure-browser.sh as root (apt-get "
                    "install chromium) or set TOOLVISOR_CHROMIUM; the browser test needs a browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    return sync_playwright


@pytest.mark.timeout(150)
def test_page_shows_tree_live_restart_and_pause_with_token(tmp_path) -> None:
    sync_playwright = _browser()
    with ToolSystem(policy=FAST, sample_every=0.3, audit_log=tmp_path / "audit.log") as system:
        system.security.add_principal("ops", ["maintainer"], token=TOKEN)
        workers = system.supervise("workers", policy=FAST)
        workers.spawn("tests.tools:Counter", name="counter")
        workers.spawn("tests.tools:Counter", name="spare")
        pipeline = system.supervise("pipeline", policy=FAST)
        pipeline.spawn("tests.tools:Ticker", name="clock")
        rules = [AlertRule(name="memory-watch", metric="memory_mb", op=">", threshold=0.0,
                           severity="info", tool="pipeline/*")]
        with Dashboard(system, "127.0.0.1:0", rules=rules, sinks=[AlertSink("log")],
                       poll_every=0.1) as dash, sync_playwright() as pw:
            for _ in range(20):
                system.tool("workers/counter").call("add", k=1)
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1366, "height": 800})
                page.goto(dash.url + "/")
                # the tree
                row = page.locator('tr[data-path="workers/counter"]')
                row.wait_for(timeout=20_000)
                assert "running" in row.locator("td.state").inner_text()
                # a value changes live after a restart: the pid cell of workers/spare
                spare = page.locator('tr[data-path="workers/spare"] td.pid')
                old_pid = str(system.tool("workers/spare").status().pid)
                page.wait_for_function(
                    "(pid) => { const c = document.querySelector('tr[data-path=\"workers/spare\"] td.pid');"
                    " return c && c.textContent === pid; }", arg=old_pid, timeout=20_000)
                system.tool("workers/spare").restart()
                new_pid = str(system.tool("workers/spare").status().pid)
                assert new_pid != old_pid
                page.wait_for_function(
                    "(pid) => { const c = document.querySelector('tr[data-path=\"workers/spare\"] td.pid');"
                    " return c && c.textContent === pid; }", arg=new_pid, timeout=10_000)
                assert spare.inner_text() == new_pid
                # pause with a token: select the tool, give the token, click pause, see PAUSED
                row.click()
                page.fill("#token", TOKEN)
                page.dispatch_event("#token", "change")
                page.click('#actions button[data-action="pause"]')
                page.wait_for_function(
                    "() => { const s = document.querySelector('#detail-state-value');"
                    " return s && s.textContent === 'PAUSED'; }", timeout=15_000)
                assert system.tool("workers/counter").status().state.value == "paused"
                page.locator("#alerts li.sev-info").first.wait_for(timeout=15_000)
                page.wait_for_timeout(1500)  # a few chart points for the picture
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("TOOLVISOR_SCREENSHOT") == "1" or not SHOT.exists():
        SHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SHOT)
