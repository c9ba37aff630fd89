"""actors.addresses: every pickled copy of an actor's TCP address is one object per process."""

from __future__ import annotations

import copy
import gc
import pickle

import pytest
from thespian.actors import ActorAddress
from thespian.system.transport.IPBase import RoutedTCPv4ActorAddress, TCPv4ActorAddress

import actors.shell as shell
from actors import addresses


def test_pickled_copies_of_an_address_are_one_object_equal_to_the_original() -> None:
    addresses.install()
    a = TCPv4ActorAddress("127.0.0.1", 40_001)
    str(a)  # (Thespian caches its str() on it; never pickled)
    b, c = (pickle.loads(pickle.dumps(ActorAddress(a))) for _ in range(2))
    assert b.addressDetails is c.addressDetails and b.addressDetails is not a
    assert b == c and b.addressDetails == a and hash(b.addressDetails) == hash(a)
    assert vars(b.addressDetails) == {k: v for k, v in vars(a).items() if k != "_str_form"}
    assert str(b.addressDetails) == str(a)
    # a msgpack address (shell's codec ext) is the same object too
    assert shell._unpack_address(shell._pack_address(b)).addressDetails is b.addressDetails
    held = b.addressDetails
    del b, c
    gc.collect()
    assert addresses.known("127.0.0.1", 40_001) is held
    del held
    gc.collect()
    assert addresses.known("127.0.0.1", 40_001) is None  # nobody holds it: gone from the table
    fresh = shell._unpack_address(shell._pack_address(ActorAddress(a)))
    assert fresh.addressDetails == a  # (made afresh when this process holds none)


def test_addresses_thespian_pickles_otherwise_are_left_as_they_were() -> None:
    addresses.install()
    a = TCPv4ActorAddress("127.0.0.1", 40_002)
    a.extra = 1
    b = pickle.loads(pickle.dumps(a))
    assert b is not pickle.loads(pickle.dumps(a)) and vars(b) == vars(a)
    r = RoutedTCPv4ActorAddress("127.0.0.1", 40_003, TCPv4ActorAddress("127.0.0.1", 40_004),
                                TCPv4ActorAddress("127.0.0.1", 40_005), True)
    s = pickle.loads(pickle.dumps(r))
    assert type(s) is RoutedTCPv4ActorAddress and vars(s).keys() == vars(r).keys()


def test_managed_addresses_compare_and_pickle_as_thespians_did() -> None:
    from thespian.system.addressManager import ActorAddressManager, CannotPickleAddress

    addresses.install()
    me = ActorAddress(TCPv4ActorAddress("127.0.0.1", 40_010))
    am = ActorAddressManager(None, me)
    local = am.createLocalAddress()
    with pytest.raises(CannotPickleAddress):  # (no real address for it yet)
        pickle.dumps(local)
    real = ActorAddress(TCPv4ActorAddress("127.0.0.1", 40_011))
    real._toolvisor_port = 40_011  # (actors.exits keeps it on the address)
    am.associateUseableAddress(me, 0, real)
    assert "eqOverride" not in vars(real) and "__getstate__" not in vars(local)  # no bound methods
    assert local == real and real == local and local != me and real != me
    for sent in (pickle.loads(pickle.dumps(local)), pickle.loads(pickle.dumps(real)),
                 copy.copy(real)):
        assert type(sent) is ActorAddress and vars(sent) == {"_aaddr": real.addressDetails,
                                                             "_toolvisor_port": 40_011}
        assert sent == real and real == sent and local == sent
