"""An exit notice costs what changed (issue 10): the same answers as Thespian's scans.

``actors.exits`` replaces two passes Thespian makes over every child on each exit
notice; ``supervisors.tree.children.LiveIndex`` replaces the supervisor's own. These
tests hold them to the answers of the code they replace, on real Thespian addresses
(resolved, placeholders, unresolved placeholders, port 0) and real Child records.
"""

from __future__ import annotations

import pytest
from thespian.actors import ActorAddress
from thespian.system.addressManager import ActorAddressManager
from thespian.system.multiprocCommon import MultiProcReplicator
from thespian.system.systemCommon import systemCommonBase
from thespian.system.transport.IPBase import TCPv4ActorAddress

from actors import exits
from supervisors.tree.children import Child, LiveIndex

pytestmark = pytest.mark.timeout(30)


def _tcp(port: int) -> ActorAddress:
    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port))


def _addresses() -> tuple[list[ActorAddress], list[ActorAddress]]:
    """Children as an actor holds them: real addresses, and placeholders for them."""
    me = _tcp(41000)
    manager = ActorAddressManager(None, me)
    real = [_tcp(41001 + i) for i in range(5)]
    for r in real:
        manager.importAddr(r)  # (what Thespian does to an address it is given)
    placeholders = [manager.createLocalAddress() for _ in range(6)]
    for i, r in enumerate(real):
        manager.associateUseableAddress(me, i, r)  # placeholders[5] stays unresolved
    return real, placeholders


def test_the_list_of_children_loses_exactly_what_thespian_would_remove() -> None:
    real, placeholders = _addresses()
    zero = _tcp(0)
    children = real + placeholders + [zero]
    exits.port_of(real[0])  # one port kept on its address already, the others found now
    notices = real + placeholders + [zero, _tcp(41003), _tcp(41999)]  # (a copy; a stranger)
    for gone in notices:
        expected = [c for c in children if c != gone]
        got = exits.without(children, gone)
        assert [id(c) for c in got] == [id(c) for c in expected], f"notice for {gone}"
    # it, its placeholder, and the port-0 address (Thespian's comparison takes 0 for any port)
    assert len(exits.without(children, _tcp(41003))) == len(children) - 3


def test_a_port_is_kept_on_a_real_address_but_never_on_a_placeholder() -> None:
    real, placeholders = _addresses()
    assert exits.port_of(real[1]) == 41002
    assert real[1]._toolvisor_port == 41002
    assert exits.port_of(placeholders[1]) == 41002
    assert not hasattr(placeholders[1], "_toolvisor_port")
    assert exits.port_of(placeholders[5]) is None  # not started yet


class _Info:
    """What Thespian keeps per child process (ChildInfo), as far as _named reads it."""

    def __init__(self, placeholder: ActorAddress, real: ActorAddress | None) -> None:
        self.childAddr = placeholder
        if real is not None:
            self.childRealAddr = real


def test_the_child_a_notice_names_is_found_by_its_real_address_or_its_placeholder() -> None:
    real, placeholders = _addresses()
    procs = [_Info(placeholders[i], real[i] if i < 3 else None) for i in range(6)]
    assert exits._named(procs, real[2]) == 2
    assert exits._named(procs, _tcp(41002)) == 1  # a copy of the address, as a notice carries
    assert exits._named(procs, real[4]) == 4  # connected, but its info not told yet
    assert exits._named(procs, placeholders[3]) == 3
    assert exits._named(procs, _tcp(41998)) is None


def test_the_live_index_follows_every_change_of_pid_and_address() -> None:
    index = LiveIndex()
    a, b = Child({"name": "a"}), Child({"name": "b"})
    a.index = b.index = index
    a.address = "placeholder-a"  # started, no pid yet
    assert list(index.starting.values()) == [a]
    a.pid, a.address = 100, "addr-a"
    assert index.by_pid == {100: a} and index.by_key == {"addr-a": a} and not index.starting
    a.address, a.pid = None, None  # its process ended
    assert index.by_pid == {} and index.by_key == {}
    b.pid, b.address = 100, "addr-b"  # the pid was used again
    a.pid = 7
    a.pid = None  # (a stale record letting go of a pid must not drop the new owner)
    assert index.by_pid == {100: b}
    index.forget(b)
    assert index.by_pid == {} and index.by_key == {} and not index.starting
    b.pid = 5  # (a removed child is no longer indexed, whatever is done to it)
    assert index.by_pid == {}


def test_a_child_that_ends_after_its_pid_went_to_another_stays_found() -> None:
    index = LiveIndex()
    a, b = Child({"name": "a"}), Child({"name": "b"})
    a.index = b.index = index
    a.pid, a.address = 300, "addr-a"
    b.pid, b.address = 300, "addr-b"  # a's end not seen yet, and its pid used again
    a.address = None  # now a's end is handled: address first, then pid
    a.pid = None
    assert index.by_pid == {300: b} and index.by_key == {"addr-b": b}


class _Proc:
    def __init__(self, alive: bool) -> None:
        self.alive = alive
        self.asked = 0

    def is_alive(self) -> bool:
        self.asked += 1
        return self.alive

    def join(self, timeout: float | None = None) -> None:
        pass


class _Stats:
    def inc(self, _what: str) -> None:
        pass


class _Transport:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def deadAddress(self, _manager: object, _address: object) -> None:  # noqa: N802
        pass

    def scheduleTransmit(self, _ignored: object, intent: object) -> None:  # noqa: N802
        self.sent.append(intent)

    myAddress = None  # noqa: N815


class _Manager:
    """As much of a Thespian actor manager as its exit bookkeeping reads."""

    def __init__(self, procs: list[_Info], children: list[ActorAddress], manager: object) -> None:
        self._child_procs = procs
        self._children = children
        self._addrManager = manager
        self._sCBStats = _Stats()
        self.transport = _Transport()


def _actor(n: int, dead: int) -> tuple[_Manager, list[_Info], list[ActorAddress], list[ActorAddress]]:
    """An actor with ``n`` started children, the one at ``dead`` no longer alive."""
    exits.install()
    real, placeholders = _addresses()
    manager = placeholders[0].addressDetails.addressManager
    infos = [_Info(placeholders[i], real[i]) for i in range(n)]
    for i, info in enumerate(infos):
        info.childProc = _Proc(alive=i != dead)
    m = _Manager(list(infos), list(real[:n]), manager)
    m._checkChildLiveness = MultiProcReplicator._checkChildLiveness
    m._childExited = lambda address: MultiProcReplicator._childExited(m, address)
    return m, infos, real, placeholders


def test_an_exit_notice_checks_only_the_child_it_names_and_none_that_was_reaped() -> None:
    m, infos, real, placeholders = _actor(5, dead=2)
    manager = m._addrManager
    notice = systemCommonBase._handleChildExited
    assert notice(m, _tcp(41003))  # (child 2, dead: Thespian's own notice)
    assert [i.childProc.asked for i in infos] == [0, 0, 1, 0, 0]
    assert m._child_procs == [infos[0], infos[1], infos[3], infos[4]]
    assert m._children == [real[0], real[1], real[3], real[4]]

    m._child_procs.remove(infos[4])  # our witness took child 4 out and sends the notice
    assert exits.reaped(m, infos[4]) is real[4]
    assert manager._managed[4] is real[4]
    assert notice(m, _tcp(41005))
    assert [i.childProc.asked for i in infos] == [0, 0, 1, 0, 0]  # nobody asked again
    assert m._children == [real[0], real[1], real[3]]
    assert manager._managed[4] is not real[4]  # Thespian's copy of its address let go
    assert exits.port_of(placeholders[4]) == 1 and placeholders[4] != real[4]

    MultiProcReplicator._childExited(m, _tcp(41777))  # names no child: one full pass
    MultiProcReplicator._childExited(m, _tcp(41778))  # and no second within SWEEP_EVERY
    assert [i.childProc.asked for i in infos] == [1, 1, 1, 1, 0]
    assert manager._managed[2] is not real[2]  # found dead by Thespian's own notice: let go too
    assert manager._managed[0] is real[0]


def test_children_thespians_sigchld_pass_finds_dead_are_let_go_of_too() -> None:
    m, infos, real, _ = _actor(3, dead=1)
    manager = m._addrManager
    assert MultiProcReplicator.childDied(m)
    assert m._child_procs == [infos[0], infos[2]] and len(m.transport.sent) == 1
    asked = [i.childProc.asked for i in infos]
    assert systemCommonBase._handleChildExited(m, m.transport.sent[0].message.childAddress)
    assert [i.childProc.asked for i in infos] == asked  # nothing looked for again
    assert m._children == [real[0], real[2]]
    assert manager._managed[1] is not real[1] and manager._managed[2] is real[2]


class _Counted:
    """A ChildInfo whose ``childNum`` counts how often it is read."""

    reads = 0

    def __init__(self, num: int) -> None:
        self._num = num

    @property
    def childNum(self) -> int:  # noqa: N802 - Thespian's name
        _Counted.reads += 1
        return self._num


class _Connected:
    def __init__(self, instance: int, sender: object) -> None:
        self.message = type("EndpointConnected", (), {"childInstance": instance})()
        self.sender = sender


def test_a_childs_first_word_finds_its_record_without_a_pass_over_the_others() -> None:
    exits.install()
    procs = [_Counted(i) for i in range(1000)]
    ready: list[tuple[int, object]] = []
    m = _Manager(procs, [], None)  # type: ignore[arg-type]
    m._pendingActorReady = lambda instance, sender: ready.append((instance, sender))  # type: ignore[attr-defined]
    _Counted.reads = 0
    assert MultiProcReplicator.h_EndpointConnected(m, _Connected(999, "real-999"))
    assert procs[999].childRealAddr == "real-999" and ready == [(999, "real-999")]
    assert _Counted.reads == 1  # the newest child: one look, not a thousand
    assert MultiProcReplicator.h_EndpointConnected(m, _Connected(3, "real-3"))
    assert procs[3].childRealAddr == "real-3" and not hasattr(procs[4], "childRealAddr")
    assert MultiProcReplicator.h_EndpointConnected(m, _Connected(5000, "stranger"))  # unknown: logged
    assert ready[-1] == (5000, "stranger")
    assert not any(getattr(p, "childRealAddr", None) == "stranger" for p in procs)


class _NoPass(list):  # type: ignore[type-arg]
    """A supervisor's children that fail a test when anything walks them."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a pass over every child")

    def __contains__(self, _item: object) -> bool:
        raise AssertionError("a search through every child")


def test_a_supervisor_finds_a_child_by_name_and_knows_its_own_without_a_pass() -> None:
    from supervisors.tree.supervisor import Supervisor

    sup = Supervisor(None)  # type: ignore[arg-type]
    kids = [sup._held(Child({"name": f"t{i:04d}"})) for i in range(1000)]
    sup.children = _NoPass(kids)
    sup.named = {c.name: c for c in kids}
    assert sup._find("t0999") is kids[999] and sup._find("t1000") is None
    assert sup._has(kids[10])
    assert not sup._has(Child({"name": "t0010"}))  # the same name, another record
    sup._drop(kids[10])
    assert sup._find("t0010") is None and not sup._has(kids[10])
    assert list.__len__(sup.children) == 999
