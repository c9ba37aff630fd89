"""Optional outside peers for the round trip: a pykka actor (threads) and a Ray actor.

Each is a context manager that yields one round trip (a callable), or raises
``Unavailable`` with the reason (library not installed, failed to start); the
round-trip section then skips that peer and records the reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

PAYLOAD = b"x" * 32
TIMEOUT_S = 10.0


class Unavailable(Exception):
    """This peer cannot be measured here (the text says why)."""


@contextlib.contextmanager
def pykka_actor() -> Iterator[tuple[Callable[[], Any], str]]:
    """A pykka ``ThreadingActor`` echoing its message; one sample is ``ref.ask(payload)``."""
    try:
        import pykka
    except ImportError as exc:
        raise Unavailable(f"pykka is not installed ({exc}); pip install '.[bench]'")

    class Echo(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return message

    ref = Echo.start()
    try:
        def ask() -> Any:
            return ref.ask(PAYLOAD, timeout=TIMEOUT_S)

        version = getattr(pykka, "__version__", None) or _version("pykka")
        yield ask, f"pykka {version} ThreadingActor in the host process, ActorRef.ask"
    finally:
        ref.stop(block=True, timeout=TIMEOUT_S)


@contextlib.contextmanager
def ray_actor() -> Iterator[tuple[Callable[[], Any], str]]:
    """A Ray actor echoing its argument; one sample is ``ray.get(actor.echo.remote(payload))``.

    Measured only if Ray is importable; the suite never installs it.
    """
    try:
        import ray
    except ImportError as exc:
        raise Unavailable(f"ray not installed; the suite does not install it ({exc})")
    try:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    except Exception as exc:
        raise Unavailable(f"ray.init failed: {type(exc).__name__}: {exc}")
    try:
        @ray.remote
        class Echo:
            def echo(self, message: Any) -> Any:
                return message

        actor = Echo.remote()
        ray.get(actor.echo.remote(PAYLOAD), timeout=60)

        def ask() -> Any:
            return ray.get(actor.echo.remote(PAYLOAD), timeout=TIMEOUT_S)

        yield ask, f"ray {ray.__version__} actor (own process), ray.get(actor.echo.remote(...))"
    finally:
        ray.shutdown()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
