"""``toolvisor mcp CONFIG``: the supervised tools as an MCP server (stdio, or streamable HTTP).

Built on the official ``mcp`` SDK's low-level ``Server`` (``pip install toolvisor[mcp]``).
``tools/list`` offers every command of every live tool (``mcp_catalog``); ``tools/call``
checks the arguments against the command's schema, then calls through the principal's
checked view (``system.as_principal``), so RBAC and the audit log apply. A tool error,
a crash, an open breaker, a paused or restarting tool come back as ``isError`` results
that say what happened; the supervisor recovers meanwhile. A poller rebuilds the catalog
every ``poll`` seconds and sends ``notifications/tools/list_changed`` when it changed.

Over stdio the protocol has the process's real stdout to itself: ``protect_stdio`` moves
it to a private descriptor and points fd 1 at stderr (and fd 0 at /dev/null) before the
actor system starts, so nothing that toolvisor, Thespian or a tool prints reaches it.
Over HTTP every request carries ``Authorization: Bearer <token>`` of a configured principal.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from loguru import logger
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server

from actors.errors import CallTimeout, PermissionDenied, ToolError, ToolUnavailable
from actors.schema import check_arguments
from supervisors.frontends.mcp_catalog import Catalog, Entry
from supervisors.security.permissions import tool_resource
from supervisors.security.view import PrincipalTool

DEFAULT_POLL = 1.0
DEFAULT_CALL_TIMEOUT = 30.0


@dataclass
class ProtocolPipes:
    """The real stdin and stdout, kept for the protocol after ``protect_stdio``."""

    stdin_fd: int
    stdout_fd: int


def protect_stdio() -> ProtocolPipes:
    """Keep fds 0 and 1 for the protocol; from now on fd 1 is stderr and fd 0 is /dev/null."""
    pipes = ProtocolPipes(os.dup(0), os.dup(1))
    sys.stdout.flush()
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    return pipes


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result)
    except (TypeError, ValueError):
        return repr(result)


def error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def explain(entry: Entry, exc: Exception) -> str:
    """What an MCP client (often a model) should read when a call failed."""
    where = f"{entry.name} (tool {entry.path!r}, command {entry.command!r})"
    if isinstance(exc, PermissionDenied):
        return f"{where} was refused: {exc}"
    if isinstance(exc, ToolUnavailable):
        return (f"{where} is unavailable right now: {exc}. Its supervisor restarts it when it can; "
                "try again in a moment.")
    if isinstance(exc, ToolError):
        return f"{where} failed: {exc.type}: {exc}"
    return f"{where} failed: {type(exc).__name__}: {exc}"


class McpFront:
    """The MCP door of one running ``ToolSystem``."""

    def __init__(self, system: Any, principal: str | None = None, token: str | None = None, *,
                 http: bool = False, poll: float = DEFAULT_POLL,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.system = system
        self.http = http
        self.poll = poll
        self.call_timeout = call_timeout
        self.view = system.as_principal(principal, token) if principal else None
        self.catalog = Catalog()
        self.catalog.update(system.tree())
        #: the connections of clients that listed tools: they get list_changed (weak: a
        #: finished HTTP session's connection goes with it)
        self.listeners: weakref.WeakSet[Any] = weakref.WeakSet()
        self.server: Server[Any] = Server(
            "toolvisor", version="0.1.0",
            instructions="Supervised tools: every command of every running tool is an MCP tool.",
            on_list_tools=self._list_tools, on_call_tool=self._call_tool)

    # ------------------------------------------------------------------ who is calling
    def principal_for_token(self, token: str | None) -> str | None:
        """The configured principal whose token this is (constant-time comparisons)."""
        if not token:
            return None
        found = None
        for p in list(self.system.security.principals.values()):
            if p.token is not None and hmac.compare_digest(p.token.encode(), token.encode()):
                found = p.name
        return found

    def _caller(self, ctx: Any) -> Any:
        """The view to call through: the bearer token's principal over HTTP, else the configured one."""
        if not self.http:
            return self.view
        request = getattr(ctx, "request", None)
        header = request.headers.get("authorization", "") if request is not None else ""
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        name = self.principal_for_token(token)
        if name is None:
            raise PermissionDenied("no valid bearer token: send 'Authorization: Bearer <token>' "
                                   "with the token of a configured [[principal]]")
        return self.system.as_principal(name, token)

    def _visible(self, view: Any, entry: Entry) -> bool:
        if view is None:
            return True
        return bool(self.system.security.allowed(view.principal.name, "call", tool_resource(entry.path)))

    # ------------------------------------------------------------------ handlers
    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        self.listeners.add(getattr(ctx.session, "_connection", None) or ctx.session)
        try:
            view = self._caller(ctx)
        except PermissionDenied:
            return types.ListToolsResult(tools=[])
        tools = [types.Tool(name=e.name, description=e.description, input_schema=e.input_schema)
                 for e in self.catalog.entries.values() if self._visible(view, e)]
        return types.ListToolsResult(tools=tools)

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name = params.name
        entry = self.catalog.get(name)
        if entry is None:
            await self.refresh()  # it may have come up since the last poll
            entry = self.catalog.get(name)
        if entry is None:
            shown = ", ".join(sorted(self.catalog.entries)[:20])
            return error_result(f"unknown tool {name!r}: there is no such tool (tools/list shows "
                                f"{len(self.catalog)}: {shown})")
        args = params.arguments or {}
        problems = check_arguments(entry.input_schema, args)
        if problems:
            return error_result(f"invalid arguments for {name}: {'; '.join(problems)}")
        try:
            view = self._caller(ctx)
        except PermissionDenied as exc:
            return error_result(f"{name} was refused: {exc}")
        try:
            if view is None:  # the operator's own rights: the asyncio call path, no thread hop
                result = await self.system.tool(entry.path).acall(entry.command, timeout=self.call_timeout,
                                                                  **args)
            else:
                result = await anyio.to_thread.run_sync(self._call, view, entry, args)
        except CallTimeout as exc:
            state = await anyio.to_thread.run_sync(self._state, entry.path)
            why = explain(entry, exc)
            if state == "paused":
                why = (f"{entry.name} (tool {entry.path!r}) is paused: the call was held for "
                       f"{self.call_timeout:g} s and did not run; held calls run when it is resumed")
            return error_result(why)
        except Exception as exc:
            return error_result(explain(entry, exc))
        return types.CallToolResult(content=[types.TextContent(type="text", text=_text(result))])

    def _state(self, path: str) -> str | None:
        try:
            return str(self.system.tool(path).status(timeout=5.0).state.value)
        except Exception:
            return None

    def _call(self, view: Any, entry: Entry, args: dict[str, Any]) -> Any:
        if view is None:
            return self.system.tool(entry.path).call(entry.command, timeout=self.call_timeout, **args)
        return PrincipalTool(view, entry.path).call(entry.command, timeout=self.call_timeout, **args)

    # ------------------------------------------------------------------ tools come and go
    async def refresh(self) -> bool:
        try:
            tree = await anyio.to_thread.run_sync(self.system.tree)
        except ToolError as exc:
            logger.warning("cannot read the tree: {}", exc)
            return False
        return self.catalog.update(tree)

    async def watch(self) -> None:
        """Poll the tree; on a change, tell every session that listed tools."""
        while True:
            await anyio.sleep(self.poll)
            if await self.refresh():
                logger.info("MCP tool list changed: {} tools", len(self.catalog))
                for listener in list(self.listeners):
                    try:
                        await listener.send_tool_list_changed()
                    except Exception as exc:  # that client is gone
                        logger.debug("list_changed not delivered: {}", exc)
                        self.listeners.discard(listener)

    # ------------------------------------------------------------------ transports
    async def serve_stdio(self, pipes: ProtocolPipes) -> None:
        stdin, stdout = await protocol_streams(pipes)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch)
            async with stdio_server(stdin, stdout) as (read, write):
                await self.server.run(read, write, self.server.create_initialization_options(
                    NotificationOptions(tools_changed=True)))
            tg.cancel_scope.cancel()  # stdin closed: the client is gone

    def http_app(self, host: str) -> Any:
        app = self.server.streamable_http_app(streamable_http_path="/mcp", host=host)
        return BearerGate(app, self)

    async def serve_http(self, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(self.http_app(host), host=host, port=port, log_level="warning",
                                lifespan="on", access_log=False)
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch)
            await server.serve()
            tg.cancel_scope.cancel()


MAX_LINE = 64 * 2**20  # a longer stdin line is dropped (and read as garbage, which is skipped)


class PipeLines:
    """stdin as an async iterator of text lines, read by the event loop (no thread per line)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # over MAX_LINE: asyncio dropped what it had of it
                logger.warning("dropped a stdin line longer than {} bytes", MAX_LINE)
                continue
            if not line:
                raise StopAsyncIteration
            return line.decode("utf-8", errors="replace")


class PipeWriter:
    """stdout for ``stdio_server``: ``write`` buffers, ``flush`` waits until the pipe took it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self.writer.drain()


async def protocol_streams(pipes: ProtocolPipes) -> tuple[Any, Any]:
    """The protocol's stdin and stdout on the event loop; files in threads when they are not pipes."""
    loop = asyncio.get_running_loop()
    stdin_file = os.fdopen(pipes.stdin_fd, "rb", buffering=0)
    stdout_file = os.fdopen(pipes.stdout_fd, "wb", buffering=0)
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin_file)
        stdin: Any = PipeLines(reader)
    except (ValueError, OSError):  # a regular file or a terminal: read it in a thread
        stdin = anyio.wrap_file(io.TextIOWrapper(stdin_file, encoding="utf-8", errors="replace"))
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout_file)
        stdout: Any = PipeWriter(asyncio.StreamWriter(transport, protocol, None, loop))
    except (ValueError, OSError):
        stdout = anyio.wrap_file(io.TextIOWrapper(stdout_file, encoding="utf-8"))
    return stdin, stdout


class BearerGate:
    """ASGI middleware: a request to /mcp without a known principal's bearer token is 401 and audited."""

    def __init__(self, app: Any, front: McpFront) -> None:
        self.app = app
        self.front = front

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if self.front.principal_for_token(token) is None:
            who = "(bad token)" if token else "(no token)"
            await anyio.to_thread.run_sync(
                lambda: self.front.system.security.audit(who, "mcp", "system", "denied",
                                                         None, door="mcp-http"))
            body = json.dumps({"error": "unauthorized", "error_description":
                               "send 'Authorization: Bearer <token>' with the token of a configured "
                               "[[principal]]"}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="toolvisor"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
