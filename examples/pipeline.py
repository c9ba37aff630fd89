"""An agent-style pipeline of three tools that talk to each other: planner -> fetcher -> parser.

- The **planner** researches a topic: it ``call``s the fetcher for the first page
  (and waits), then ``ask``s it for every linked page; those answers come back
  later as messages, one at a time, and fill its report.
- The **fetcher** "downloads" pages (from a small in-memory web, so the example
  needs no network), ``call``s the parser on each, and ``send``s a progress note
  to the planner (a send never blocks, so it cannot deadlock).
- The **parser** pulls out the title, the words and the links.

It also shows a deadlock caught: the fetcher tries to ``call`` the planner back
while the planner waits for it, and gets ``DeadlockError`` at once.

Run from the repository root: ``python examples/pipeline.py``.
"""

import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from actors import DeadlockError, ToolActor, command  # noqa: E402
from supervisors import Backoff, Policy, ToolSystem  # noqa: E402

WEB = {
    "wiki/actors": "<title>Actor model</title> Actors send messages. See wiki/erlang and wiki/otp.",
    "wiki/erlang": "<title>Erlang</title> Processes share nothing. See wiki/otp.",
    "wiki/otp": "<title>OTP</title> Supervisors restart children. See wiki/actors.",
}


class Parser(ToolActor):
    @command
    def parse(self, html: str) -> dict[str, Any]:
        title = re.search(r"<title>(.*?)</title>", html)
        text = re.sub(r"<[^>]+>", " ", html)
        return {"title": title.group(1) if title else "", "words": len(text.split()),
                "links": re.findall(r"\bwiki/[a-z]+", text)}


class Fetcher(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        self.web = dict(config.get("web") or WEB)

    @command
    def fetch(self, url: str) -> dict[str, Any]:
        if url not in self.web:
            raise LookupError(f"404: {url}")
        page = self.tool("agent/parser").call("parse", html=self.web[url])  # blocks this tool
        self.tool("agent/planner").send("note", text=f"fetched {url}")    # never blocks
        return {"url": url, **page}

    @command
    def call_back(self) -> str:
        """Call the planner while it waits for us: a cycle, refused at once."""
        try:
            self.tool("agent/planner").call("report")
        except DeadlockError as exc:
            return f"{type(exc).__name__}: {exc.message.split(':')[0]}: {' -> '.join(exc.cycle)}"
        return "no deadlock?"


class Planner(ToolActor):
    def on_init(self, config: dict[str, Any]) -> None:
        self.pages: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.waiting = 0

    @command
    def research(self, url: str) -> str:
        fetcher = self.tool("agent/fetcher")
        first = fetcher.call("fetch", url=url, timeout=5.0)  # the answer, or an error, here
        self.pages[url] = first
        for link in first["links"]:
            if link not in self.pages:
                self.waiting += 1
                fetcher.ask("fetch", on_reply=self._got, url=link)  # the answer comes later
        return first["title"]

    def _got(self, page: Any) -> None:
        """Runs in this tool's loop, like any message: no lock needed."""
        self.waiting -= 1
        if isinstance(page, Exception):
            self.notes.append(f"failed: {page}")
        else:
            self.pages[page["url"]] = page

    @command
    def note(self, text: str) -> None:
        self.notes.append(text)

    @command
    def report(self) -> dict[str, Any]:
        return {"done": self.waiting == 0, "notes": len(self.notes),
                "pages": {u: (p["title"], p["words"]) for u, p in sorted(self.pages.items())}}

    @command
    def provoke(self) -> str:
        return self.tool("agent/fetcher").call("call_back")


def main() -> int:
    policy = Policy(max_restarts=3, period=5.0, backoff=Backoff(initial=0.05, maximum=1.0))
    with ToolSystem(log_level="WARNING") as system:
        agent = system.supervise("agent", policy=policy)
        agent.spawn(Parser, name="parser")
        agent.spawn(Fetcher, name="fetcher")
        planner = agent.spawn(Planner, name="planner")
        print("research(wiki/actors) ->", planner.call("research", url="wiki/actors"))
        deadline = time.monotonic() + 10
        while (not (report := planner.call("report"))["done"] or report["notes"] < 3) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        for url, (title, words) in report["pages"].items():
            print(f"  {url}: {title!r}, {words} words")
        print(f"report: {len(report['pages'])} pages, {report['notes']} notes sent by the fetcher, "
              f"done={report['done']}")
        print("deadlock caught:", planner.call("provoke"))
    return 0 if report["done"] and len(report["pages"]) == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
