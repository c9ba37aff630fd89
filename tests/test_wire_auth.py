"""No code from strangers: a pickle sent to any toolvisor port is dropped unread and logged.

Real sockets and processes: the payloads go to every listening TCP port of
every process of a running system (and the host's own), from this process and
from a process of another user (uid 65534).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import wire_auth
from examples.counter import Counter
from supervisors import ToolSystem
from tests.helpers import session_members, wait_until


class Marker:
    """Unpickling this creates a file: the proof that a process ran a stranger's code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: D105
        return (open, (self.path, "w"))


def frame(payload: bytes) -> bytes:
    return b"%d>" % len(payload) + payload


def payloads(marker: str) -> list[bytes]:
    evil = pickle.dumps((Marker(marker), "hello"))
    return [
        frame(evil),                                  # a bare pickle, as Thespian would send it
        frame(b"\0" * 32 + evil),                     # a pickle behind a made-up MAC
        os.urandom(300),                              # noise
        b"99999999999>" + os.urandom(64),             # a header announcing ~100 GB
        b"abc>" + evil,                               # a malformed header
    ]


def listening_ports(system: ToolSystem) -> list[int]:
    procs = session_members(system.sid) + [psutil.Process()]
    ports = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    ports.add(c.laddr.port)
        except psutil.Error:
            pass
    return sorted(ports)


def send_all(ports: list[int], data: list[bytes]) -> None:
    for port in ports:
        for blob in data:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(blob)
                    s.settimeout(0.5)
                    try:
                        s.recv(100)
                    except OSError:
                        pass
            except OSError:
                pass


SENDER = r"""
import socket, sys
ports = [int(p) for p in sys.argv[1].split(",")]
blobs = [bytes.fromhex(h) for h in sys.argv[2].split(",")]
for port in ports:
    for blob in blobs:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(blob)
            s.settimeout(0.5)
            try:
                s.recv(100)
            except OSError:
                pass
            s.close()
        except OSError:
            pass
print("sent")
"""


def test_frames_round_trip_and_forgeries_fail() -> None:
    data = wire_auth.dumps({"a": 1})
    assert wire_auth.loads(data) == {"a": 1}
    raw = pickle.dumps({"a": 1})
    for bad in (raw, b"\0" * 32 + raw, data[:-1], data[:31], b"", bytes([data[0] ^ 1]) + data[1:]):
        with pytest.raises(wire_auth.Unauthenticated):
            wire_auth.loads(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_loads_never_unpickles_what_it_did_not_seal(blob: bytes) -> None:
    with pytest.raises(wire_auth.Unauthenticated):
        wire_auth.loads(blob)


@pytest.mark.timeout(120)
def test_pickles_to_every_port_run_nothing(tmp_path, capfd) -> None:
    marker = str(tmp_path / "pwned")
    with ToolSystem() as system:
        workers = system.supervise("workers")
        counter = workers.spawn(Counter, name="counter", config={"start": 1})
        assert counter.call("add", k=1) == 2
        system.tree()  # the host's own endpoint is up too
        ports = listening_ports(system)
        assert len(ports) >= 6  # admin, logger, root, accountant, supervisor, tool, host
        data = payloads(marker)
        send_all(ports, data)
        # ... and from a process of another user (needs root to become uid 65534)
        other_user = os.getuid() == 0 and os.path.exists("/usr/bin/python3")
        if other_user:
            hexes = ",".join(b.hex() for b in data)
            out = subprocess.run(
                ["/usr/bin/python3", "-I", "-c", SENDER, ",".join(map(str, ports)), hexes],
                preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)),
                capture_output=True, text=True, timeout=60, cwd="/")
            assert out.stdout.strip() == "sent", out.stderr
        assert not os.path.exists(marker)
        # the system keeps working
        assert set(listening_ports(system)) >= set(ports), "a process stopped listening"
        assert counter.call("add", k=1) == 3
        assert workers.spawn(Counter, name="after").call("add") == 1
        counter.restart()
        assert counter.call("add") == 2
        assert all(c["state"] == "running" for c in system.tree()["children"][0]["children"])

        def logged() -> bool:
            err = capfd.readouterr().err
            logged.text += err  # type: ignore[attr-defined]
            return "dropped an unauthenticated Thespian message" in logged.text  # type: ignore

        logged.text = ""  # type: ignore[attr-defined]
        wait_until(logged, 10, what="the drop to be logged")
        text = logged.text  # type: ignore[attr-defined]
        assert "(uid 65534)" in text or not other_user
        # logged once per peer, not once per frame
        assert text.count("dropped an unauthenticated") < len(ports) * len(data)
    assert not os.path.exists(marker)


@pytest.mark.timeout(120)
def test_udp_base_drops_unsealed_datagrams(tmp_path) -> None:
    marker = str(tmp_path / "pwned-udp")
    with ToolSystem(base="multiprocUDPBase") as system:
        counter = system.spawn(Counter, name="counter")
        assert counter.call("add", k=1) == 1
        ports = set()
        for p in session_members(system.sid) + [psutil.Process()]:
            for c in p.net_connections(kind="udp"):
                ports.add(c.laddr.port)
        evil = pickle.dumps((Marker(marker), "hello"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for port in ports:
                for blob in (evil, b"\0" * 32 + evil, os.urandom(100)):
                    s.sendto(blob, ("127.0.0.1", port))
        assert counter.call("add", k=1) == 2
        assert not os.path.exists(marker)


def test_children_do_not_hold_their_parents_listening_sockets() -> None:
    with ToolSystem() as system:
        system.supervise("w").spawn(Counter, name="c")
        owners: dict[tuple[str, int], set[int]] = {}
        for p in session_members(system.sid) + [psutil.Process()]:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    owners.setdefault((c.laddr.ip, c.laddr.port), set()).add(p.pid)
        shared = {addr: pids for addr, pids in owners.items() if len(pids) > 1}
        assert not shared, f"listening sockets held by several processes: {shared}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x"]))


def test_a_same_user_process_without_the_key_cannot_call_a_tool(capfd) -> None:
    import time

    from actors.codec import encode
    from actors.frames import pack_frame
    from actors.messages import Call

    with ToolSystem(call_path="socket") as system:
        counter = system.spawn(Counter, name="c")
        assert counter.call("get") == 0
        address = system._routes["c"].socket
        call = pack_frame(encode(Call(1, "add", {"k": 100}, time.time() + 30)))
        for sent in (call * 3, b"\0" * 32 + call, os.urandom(32) + call):  # no key, or a made-up one
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(address)
                s.sendall(sent)
                s.settimeout(5)
                assert s.recv(100) == b""  # closed without an answer
        assert counter.call("get") == 0  # nothing ran
        wait_until(lambda: "did not present this system's key" in capfd.readouterr().err, 10,
                   what="the refusal to be logged")
