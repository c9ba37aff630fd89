"""A tool held to its net and exec permissions: one web server it may reach, no programs.

Run from the repository root: ``python examples/reach.py``. It starts a small HTTP
server on loopback, gives the ``web`` tool ``net:127.0.0.1:PORT:net`` only, and shows
what gets through, what is refused (with the permission that would allow it) and the
audit lines the refusals left.
"""

import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so tool processes find 'examples'

from actors import ToolActor, command  # noqa: E402
from supervisors import PermissionDenied, ToolSystem  # noqa: E402
from supervisors.security import tail  # noqa: E402


class Web(ToolActor):
    """Fetches pages and, if asked, runs programs: what it may do is its context's call."""

    @command
    def get(self, url: str) -> str:
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                return page.read().decode()
        except urllib.error.URLError as exc:  # a refusal arrives as a library's error would
            return f"refused: {exc.reason}"

    @command
    def run(self, argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the allowed server")

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    server = HTTPServer(("127.0.0.1", 0), Hello)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = str(Path(tempfile.mkdtemp()) / "audit.log")
    try:
        with ToolSystem(audit_log=log, log_level="WARNING") as system:
            web = system.spawn("examples.reach:Web", name="web",
                               security={"permissions": [f"net:127.0.0.1:{port}:net"]})
            print("allowed:", web.call("get", url=f"http://127.0.0.1:{port}/"))
            print("other port:", web.call("get", url=f"http://127.0.0.1:{port + 1}/"))
            try:
                web.call("run", argv=["ls", "/"])
            except PermissionDenied as exc:
                print("run ls:", exc.message)
            print("still:", web.status().state.value)
            deadline = time.monotonic() + 10  # the refusals reach the audit writer on their own
            while time.monotonic() < deadline and len(list(tail(log, 10))) < 2:
                time.sleep(0.05)
    finally:
        server.shutdown()
    for entry in tail(log, 10):
        print(f"audit: {entry['principal']} {entry['operation']} {entry['resource']} -> {entry['result']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
