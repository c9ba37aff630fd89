"""``toolvisor mcp CONFIG [--http HOST:PORT] [--principal NAME]`` and ``toolvisor plugins``.

``mcp`` needs the optional ``mcp`` SDK (``pip install 'toolvisor[mcp]'``); it is imported
only when the command runs. Over stdio, stdout carries nothing but the protocol.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from loguru import logger

from actors import logs
from actors.errors import ToolError
from actors.plugins import GROUPS, installed

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host.strip("[]"), int(port)


def add_mcp_command(subs: Any) -> None:
    p = subs.add_parser("mcp", help="serve the tree a config describes as an MCP server",
                        description="Start the tree CONFIG describes and serve every command of "
                                    "every running tool as an MCP tool, over stdio (default) or "
                                    "streamable HTTP at /mcp (--http).")
    p.add_argument("config", metavar="CONFIG", help="TOML file ([[supervisor]] tables)")
    p.add_argument("--http", type=_host_port, default=None, metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio; callers "
                        "send 'Authorization: Bearer <token>' of a configured [[principal]]")
    p.add_argument("--principal", default=None, metavar="NAME",
                   help="over stdio, act as this [[principal]] of the config (its token from "
                        "$TOOLVISOR_TOKEN); without it the stdio client has the operator's rights")
    p.add_argument("--log-level", default="WARNING", metavar="LEVEL", help="log level on stderr")
    p.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="seconds between checks for tools that came or went (default: 1.0)")
    p.add_argument("--call-timeout", type=float, default=30.0, metavar="S",
                   help="seconds a tools/call may take, held calls to a paused tool included (default: 30)")
    p.set_defaults(handler=cmd_mcp)


def add_plugins_command(subs: Any) -> None:
    p = subs.add_parser("plugins", help="list the installed plugins (tools, hooks, sinks)",
                        description="List the entry points of the groups "
                                    f"{', '.join(GROUPS.values())} installed in this environment.")
    p.set_defaults(handler=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = installed()
    if not plugins:
        print("no plugins installed (entry-point groups: " + ", ".join(GROUPS.values()) + ")")
        return EXIT_OK
    width = max(len(p.name) for p in plugins)
    for p in plugins:
        print(f"{p.group:<16} {p.name:<{width}}  {p.target}  ({p.distribution or '?'})")
    return EXIT_OK


def cmd_mcp(args: argparse.Namespace) -> int:
    if args.http and args.principal:
        print("toolvisor mcp: --principal is for stdio; HTTP callers are identified by their "
              "bearer token", file=sys.stderr)
        return EXIT_CONFIG
    pipes = None
    try:
        from supervisors.frontends import mcp_server
    except ImportError as exc:
        print(f"toolvisor mcp: the MCP SDK is not installed ({exc}); pip install 'toolvisor[mcp]'",
              file=sys.stderr)
        return EXIT_CONFIG
    if not args.http:
        pipes = mcp_server.protect_stdio()  # before anything can print
    logs.setup(args.log_level.upper())
    from supervisors.frontends.cli import _load  # the same config loading as `toolvisor run`

    try:
        system = _load(args.config, args.log_level.upper(), None)
    except ValueError as exc:
        print(f"toolvisor mcp: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    token = os.environ.get("TOOLVISOR_TOKEN")
    if args.principal:
        try:
            system.security.principal(args.principal, token)
        except ToolError as exc:
            print(f"toolvisor mcp: --principal {args.principal}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.http and not any(p.token for p in system.security.principals.values()):
        print("toolvisor mcp: --http needs a [[principal]] with a token in the config (callers "
              "send it as 'Authorization: Bearer <token>')", file=sys.stderr)
        return EXIT_CONFIG
    old = signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    try:
        system.start()
        front = mcp_server.McpFront(system, args.principal, token, http=bool(args.http),
                                    poll=args.poll, call_timeout=args.call_timeout)
        logger.info("serving {} MCP tools over {}", len(front.catalog),
                    f"http://{args.http[0]}:{args.http[1]}/mcp" if args.http else "stdio")
        if args.http:
            print(f"toolvisor mcp: serving http://{args.http[0]}:{args.http[1]}/mcp", file=sys.stderr,
                  flush=True)
            anyio_run(front.serve_http(*args.http))
        else:
            anyio_run(front.serve_stdio(pipes))
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except ToolError as exc:
        print(f"toolvisor mcp: the tree did not start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        system.shutdown()
        signal.signal(signal.SIGTERM, old)


def _sigterm_handler(owner: int) -> Any:
    """SIGTERM ends the server like Ctrl-C; a forked child (Thespian's admin) gets the default."""

    def handle(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt("SIGTERM")

    return handle


def anyio_run(coro: Any) -> None:
    import anyio

    async def main() -> None:
        await coro

    anyio.run(main)
