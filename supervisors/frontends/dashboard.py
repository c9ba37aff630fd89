"""The web dashboard: a live page, a JSON API, server-sent events and ``/metrics``.

``Dashboard(system, "127.0.0.1:8750")`` (or ``toolvisor run CONFIG --dashboard
HOST:PORT``, or ``[system] dashboard``) runs an aiohttp server on a thread of its
own with its own event loop. That loop is the single owner of the metrics
aggregator and the alerts: it polls the system (events every ``poll_every``, the
tree with usage every second or at once after an event), drains the tools'
command timings, evaluates the alert rules and pushes what changed to every open
``GET /api/stream``. Reading needs no token when bound to loopback; every action
needs ``Authorization: Bearer <token>`` of a principal whose role allows it,
checked and audited through ``system.as_principal``.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from aiohttp import ClientSession, ClientTimeout, web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST

from actors.errors import InvalidTransition, PermissionDenied, ToolError
from actors.timings import TIMINGS_COMMAND
from supervisors.monitoring import Alert, Alerts, AlertSink, Metrics, parse_alerts
from supervisors.monitoring.alerts import log_alert

STATIC = Path(__file__).with_name("static")
ACTIONS = ("pause", "resume", "restart", "stop")
EVENTS_KEPT = 2000
TREE_EVERY = 1.0            # seconds between full tree + usage refreshes when nothing happens
TIMINGS_EVERY = 1.0         # seconds between drains of the tools' command timings
METRICS_FRESH = 1.0         # seconds a rendered /metrics text is served again
CLIENT_QUEUE = 256          # messages queued per stream client before it is dropped
NODE_KEYS = ("name", "path", "kind", "state", "pid", "restarts", "last_error", "since", "busy",
             "breaker", "instances", "restart", "security_level", "actor", "generation")


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port); ValueError naming the value otherwise."""
    host, sep, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"dashboard address {address!r} is invalid: give HOST:PORT, e.g. 127.0.0.1:8750")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def started_at(pid: int | None, known: dict[int, float]) -> float | None:
    """When process ``pid`` started (cached in ``known``); None if it is gone."""
    if not pid:
        return None
    if pid not in known:
        try:
            known[pid] = psutil.Process(pid).create_time()
        except psutil.Error:
            return None
    return known[pid]


def slim(node: dict[str, Any], now: float, known: dict[int, float] | None = None) -> dict[str, Any]:
    """A tree node with what the page shows (usage cut to a few figures, uptime added).

    ``uptime`` is the age of the instance's process (``known`` caches start times by pid).
    """
    known = {} if known is None else known
    out = {k: node[k] for k in NODE_KEYS if k in node}
    if node.get("kind") == "tool":
        out.setdefault("busy", None)      # (what it is busy with, once the tree reports it)
        out.setdefault("breaker", None)   # (its circuit breaker's state, once breakers exist)
    usage = node.get("usage") or {}
    out["memory_mb"] = usage.get("memory_mb")
    out["cpu_percent"] = usage.get("cpu_percent")
    for figure in ("busy_fraction", "call_rate", "queue"):  # (the accountant's work history)
        out[figure] = usage.get(figure)
    running = node.get("state") in ("running", "paused")
    began = started_at(node.get("pid"), known) if running else None
    out["uptime"] = round(max(0.0, now - began), 1) if began else None
    if "children" in node:
        out["children"] = [slim(c, now, known) for c in node["children"]]
    return out


def tools_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if node.get("kind") == "tool" else []
    for child in node.get("children", []):
        found += tools_of(child)
    return found


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


class Dashboard:
    """The dashboard server for one running ``ToolSystem``; use as a context manager."""

    def __init__(self, system: Any, address: str = "127.0.0.1:8750", *, rules: Any = None,
                 sinks: Any = None, poll_every: float = 0.2) -> None:
        self.system = system
        self.host, self.port = parse_address(address)
        if rules is None and sinks is None:
            rules, sinks = parse_alerts(*system.alert_tables)
        self.sinks: list[AlertSink] = list(sinks or [])
        self._plugin_sinks: dict[str, Any] = {}
        self.poll_every = poll_every
        self.open_reads = is_loopback(self.host)
        # owned by the server's loop thread from start() on:
        self.metrics = Metrics()
        self.alerts = Alerts(rules or [])
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self.tree: dict[str, Any] | None = None
        self.clients: set[asyncio.Queue[tuple[str, str] | None]] = set()
        self._events_since = 0.0
        self._tree_at = 0.0
        self._timings_at = 0.0
        self._dirty = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._http: ClientSession | None = None
        self._rendered: tuple[float, bytes] = (0.0, b"")
        self._started: dict[int, float] = {}  # pid -> its process's start time (for uptime)
        self._missed_at = 0.0                  # when an unknown tool last made us read the tree

    # ------------------------------------------------------------------ lifetime
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> Dashboard:
        if self._thread is not None:
            return self
        self.system.call_log = collections.deque(maxlen=100_000)
        self._thread = threading.Thread(target=self._main, name="toolvisor-dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the dashboard did not start on {self.host}:{self.port} within {timeout:g}s")
        if self._failure is not None:
            self._thread.join(5)
            self._thread = None
            self.system.call_log = None
            raise RuntimeError(f"the dashboard cannot listen on {self.host}:{self.port}: {self._failure}")
        logger.info("dashboard on {}", self.url)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None
        self.system.call_log = None

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # (reported to start(), or logged once running)
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                logger.error("the dashboard stopped: {}", exc)
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = self._app()
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._http = ClientSession(timeout=ClientTimeout(total=5))
        self._ready.set()
        poller = asyncio.create_task(self._poll_forever())
        try:
            await self._stop.wait()
        finally:
            poller.cancel()
            for queue in list(self.clients):
                queue.put_nowait(None)
            await self._http.close()
            await runner.cleanup()
            await self._close_tool_connections()
            await asyncio.get_running_loop().shutdown_default_executor()

    async def _close_tool_connections(self) -> None:
        """End this loop's connections to the tools (the timings drains) before the loop closes."""
        state = self.system.aio._loops.pop(asyncio.get_running_loop(), None)
        for opening in (state.conns.values() if state is not None else ()):
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                conn = opening.result()
                conn.close()
                await asyncio.gather(conn.task, return_exceptions=True)
            else:
                opening.cancel()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/tree", self._api_tree)
        app.router.add_get("/api/alerts", self._api_alerts)
        app.router.add_get("/api/events", self._api_events)
        app.router.add_get("/api/stream", self._api_stream)
        app.router.add_get("/api/tools/{path:.+}", self._api_tool)
        app.router.add_post("/api/tools/{path:.+}", self._api_action)
        app.router.add_post("/api/alerts/{id}/ack", self._api_ack)
        return app

    # ------------------------------------------------------------------ polling (the owner's loop)
    async def _poll_forever(self) -> None:
        while True:
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a slow or restarting root: try again next round
                logger.debug("dashboard poll: {}", exc)
            await asyncio.sleep(self.poll_every)

    async def _poll_once(self) -> None:
        system = self.system
        if not system.running:
            return
        now = time.time()
        events = await asyncio.to_thread(system.events, self._events_since, 5.0)
        fresh = [e for e in events if float(e.get("time", 0)) > self._events_since]
        if fresh:
            self._events_since = max(float(e["time"]) for e in fresh)
            for event in fresh:
                self._add_event(event)
            self._dirty = True
        self._drain_calls()
        if self._dirty or now - self._tree_at >= TREE_EVERY:
            await self.refresh_tree(point=now - self._tree_at >= TREE_EVERY * 0.9)
        if now - self._timings_at >= TIMINGS_EVERY:
            self._timings_at = now
            await self._drain_timings()
            for alert in self.alerts.evaluate(self.metrics):
                await self._announce(alert)

    async def refresh_tree(self, point: bool = True) -> dict[str, Any]:
        raw = await asyncio.to_thread(self.system.tree, 10.0)
        now = time.time()
        self._dirty = False
        if point:
            self._tree_at = now
        if len(self._started) > 10_000:
            self._started.clear()
        tree = slim(raw, now, self._started)
        changed = tree != self.tree
        self.tree = tree
        self.metrics.observe_tree(tools_of(tree), now, point=point)
        if changed or point:
            self._broadcast("tree", tree)
        if point:
            self._broadcast("sample", {p: list(h)[-1] for p, h in self.metrics.history.items() if h})
        return tree

    def _drain_calls(self) -> None:
        log = self.system.call_log
        if log is None:
            return
        for _ in range(len(log)):
            try:
                path, command, seconds, ok = log.popleft()
            except IndexError:
                break
            self.metrics.observe_call(path, command, seconds, ok)

    async def _drain_timings(self) -> None:
        if self.tree is None:
            return
        paths = [n["path"] for n in tools_of(self.tree) if n.get("state") in ("running", "paused")]
        gate = asyncio.Semaphore(32)

        async def one(path: str) -> None:
            async with gate:
                try:
                    batch = await self.system._acall_once(path, TIMINGS_COMMAND, {}, 2.0)
                except Exception:  # restarting, stopping: its figures come next round
                    return
                if isinstance(batch, dict):
                    self.metrics.observe_timings(path, batch)

        await asyncio.gather(*(one(p) for p in paths))

    def _add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.metrics.observe_event(event)
        self._broadcast("event", event)

    async def _announce(self, alert: Alert) -> None:
        self._add_event({"time": time.time(), "path": alert.tool, "event": f"alert {alert.state}",
                         "detail": f"{alert.rule}: {alert.metric} = {alert.value} ({alert.op} "
                                   f"{alert.threshold:g}), {alert.severity}", "state": None})
        self._broadcast("alerts", [a.to_dict() for a in self.alerts.all()])
        payload = alert.to_dict()
        for sink in self.sinks:
            if sink.kind == "log":
                log_alert(alert)
            elif sink.kind == "webhook":
                if self._http is not None:
                    asyncio.create_task(self._post(sink.url or "", payload))
            else:  # a plugin sink (toolvisor.sinks): one that raises is logged, never fatal
                try:
                    self._plugin_sinks.setdefault(sink.kind, sink.plugin())(payload)
                except Exception as exc:
                    logger.warning("alert sink {!r} failed: {}: {}", sink.kind, type(exc).__name__, exc)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        assert self._http is not None
        try:
            async with self._http.post(url, json=payload) as resp:
                if resp.status >= 400:
                    logger.warning("alert webhook {} answered {}", url, resp.status)
        except Exception as exc:
            logger.warning("alert webhook {} failed: {}", url, exc)

    # ------------------------------------------------------------------ the stream
    def _broadcast(self, kind: str, data: Any) -> None:
        if not self.clients:
            return
        text = json.dumps(data, default=str, separators=(",", ":"))
        for queue in list(self.clients):
            try:
                queue.put_nowait((kind, text))
            except asyncio.QueueFull:  # a client that does not read: drop it
                self.clients.discard(queue)
                queue._queue.clear()  # type: ignore[attr-defined]
                queue.put_nowait(None)

    async def _api_stream(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._read_check(request)) is not None:
            return denied
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(CLIENT_QUEUE)
        tree = self.tree if self.tree is not None else await self.refresh_tree(point=False)
        first = [("tree", tree), ("alerts", [a.to_dict() for a in self.alerts.all()]),
                 ("history", {p: list(h) for p, h in self.metrics.history.items()})]
        self.clients.add(queue)
        try:
            for kind, data in first:
                await resp.write(_sse(kind, json.dumps(data, default=str, separators=(",", ":"))))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if item is None:
                    break
                await resp.write(_sse(*item))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(queue)
        return resp

    # ------------------------------------------------------------------ reading
    async def _read_check(self, request: web.Request) -> web.Response | None:
        """None when reading is allowed; bound beyond loopback, reading needs a token too."""
        if self.open_reads:
            return None
        found = await self._principal(request, "read", "system")
        if isinstance(found, web.Response):
            return found
        view = found
        if not self.system.security.allowed(view.principal.name, "read", "system"):
            return _error(403, f"principal {view.principal.name!r} may not read the system")
        return None

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _metrics(self, request: web.Request) -> web.Response:
        if (denied := await self._read_check(request)) is not None:
            return denied
        made, body = self._rendered
        if time.monotonic() - made > METRICS_FRESH:  # (a scrape costs ~1 ms per series and tool)
            self._drain_calls()
            body = self.metrics.render()
            self._rendered = (time.monotonic(), body)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _api_tree(self, request: web.Request) -> web.Response:
        if (denied := await self._read_check(request)) is not None:
            return denied
        tree = self.tree if self.tree is not None else await self.refresh_tree(point=False)
        return web.json_response(tree)

    async def _api_alerts(self, request: web.Request) -> web.Response:
        if (denied := await self._read_check(request)) is not None:
            return denied
        return web.json_response([a.to_dict() for a in self.alerts.all()])

    async def _api_events(self, request: web.Request) -> web.Response:
        if (denied := await self._read_check(request)) is not None:
            return denied
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return _error(400, f"since = {request.query.get('since')!r} is invalid: give a unix time")
        return web.json_response([e for e in self.events if float(e.get("time", 0)) > since])

    async def _find_tool(self, path: str) -> dict[str, Any] | None:
        """The tool's node; on a miss the tree is read again (at most every 0.5 s: a stream of
        requests for unknown tools costs no more than the poll)."""
        for attempt in range(2):
            if attempt and time.monotonic() - self._missed_at < 0.5:
                return None
            if attempt:
                self._missed_at = time.monotonic()
            tree = self.tree if (self.tree is not None and attempt == 0) else await self.refresh_tree(False)
            node = next((n for n in tools_of(tree) if n["path"] == path), None)
            if node is not None:
                return node
        return None

    async def _api_tool(self, request: web.Request) -> web.Response:
        if (denied := await self._read_check(request)) is not None:
            return denied
        path = request.match_info["path"].strip("/")
        node = await self._find_tool(path)
        if node is None:
            return _error(404, f"no tool {path!r} in the tree; GET /api/tree lists them")
        detail = dict(node)
        detail["commands"] = self.metrics.commands_of(path)
        detail["history"] = list(self.metrics.history.get(path, []))
        detail["error_rate"] = self.metrics.figure("toolvisor_error_rate", path)
        detail["throughput_per_second"] = self.metrics.figure("toolvisor_throughput_per_second", path)
        detail["events"] = [e for e in self.events if e.get("path") == path][-50:]
        detail["alerts"] = [a.to_dict() for a in self.alerts.all() if a.tool == path]
        return web.json_response(detail)

    # ------------------------------------------------------------------ acting
    async def _principal(self, request: web.Request, action: str, resource: str) -> Any:
        """The checked view of the principal whose token came, or the 401/403 answer (audited)."""
        security = self.system.security
        header = request.headers.get("Authorization", "")
        operation = f"dashboard {action}"
        if not header.startswith("Bearer ") or not header[7:].strip():
            await asyncio.to_thread(security.audit, None, operation, resource, "denied",
                                    reason="no token", remote=request.remote)
            return web.json_response(
                {"error": f"{action} on {resource} needs 'Authorization: Bearer <token>' of a principal"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="toolvisor"'})
        token = header[7:].strip()
        name = next((p.name for p in list(security.principals.values())
                     if p.token is not None and hmac.compare_digest(p.token.encode(), token.encode())),
                    None)
        if name is None:
            await asyncio.to_thread(security.audit, None, operation, resource, "denied",
                                    reason="wrong token", remote=request.remote)
            return _error(403, f"{action} on {resource}: the token matches no principal")
        return self.system.as_principal(name, token)

    async def _api_action(self, request: web.Request) -> web.Response:
        path, _, action = request.match_info["path"].strip("/").rpartition("/")
        if action not in ACTIONS:
            return _error(404, f"no action {action!r}: POST /api/tools/<supervisor>/<tool>/"
                               f"{{{','.join(ACTIONS)}}}")
        view = await self._principal(request, action, f"tool:{path}")
        if isinstance(view, web.Response):
            return view
        if await self._find_tool(path) is None:
            return _error(404, f"no tool {path!r} in the tree; GET /api/tree lists them")

        def act() -> Any:
            return getattr(view.tool(path), action)()

        try:
            await asyncio.to_thread(act)
        except PermissionDenied as exc:
            return _error(403, str(exc))
        except InvalidTransition as exc:
            return _error(409, str(exc))
        except ToolError as exc:
            return _error(502, f"{action} of {path} failed: {exc}")
        tree = await self.refresh_tree(point=False)
        node = next((n for n in tools_of(tree) if n["path"] == path), None)
        return web.json_response({"ok": True, "action": action, "tool": node})

    async def _api_ack(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not valid JSON ({exc}); send an object like "
                               '{"note": "looking into it"} or nothing')
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object, e.g. {\"note\": \"looking into it\"}")
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            return _error(400, f"note = {note!r} is invalid: give text")
        try:
            alert_id = int(request.match_info["id"])
        except ValueError:
            return _error(404, f"no alert {request.match_info['id']!r}: ids are numbers")
        resource = f"alert:{alert_id}"
        view = await self._principal(request, "ack", resource)
        if isinstance(view, web.Response):
            return view
        if self.alerts.get(alert_id) is None:
            return _error(404, f"no alert {alert_id}; GET /api/alerts lists them")
        try:
            await asyncio.to_thread(view._run, "ack", resource, "ack", lambda: None, note=note)
        except PermissionDenied as exc:
            return _error(403, str(exc))
        alert = self.alerts.acknowledge(alert_id, view.principal.name, note)
        self._add_event({"time": time.time(), "path": alert.tool, "event": "alert acknowledged",
                         "detail": f"{alert.rule} by {alert.acknowledged_by}", "state": None})
        self._broadcast("alerts", [a.to_dict() for a in self.alerts.all()])
        return web.json_response(alert.to_dict())


def _sse(kind: str, text: str) -> bytes:
    return f"event: {kind}\ndata: {text}\n\n".encode()
