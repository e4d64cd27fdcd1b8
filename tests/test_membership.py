"""Membership (swarm.protocol.membership): the view, the links wanted, PEERS, LEAVE, pruning, forgetting.

The sub-machine is built directly and fed HELLO, LinkUp and LinkDown records and decoded PEERS/LEAVE
fields by hand; the tests check the Send actions it appends (decoded), the requests it returns, and its
counters. No NodeState, no simulator.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest

from swarm import counters as C
from swarm.errors import ProtocolError
from swarm.protocol import wire
from swarm.protocol.actions import Send
from swarm.protocol.config import CoreConfig
from swarm.protocol.events import (
    FAILED,
    PEER_RETIRED,
    PRUNED,
    ClosePeer,
    DialFailed,
    Forget,
    Hello,
    LinkDown,
    LinkUp,
    PrunePeer,
    Redial,
    Remember,
)
from swarm.protocol.membership import ADMIT, DEPARTED, FULL, PEERS_READ, STALE, Admission, Membership
from swarm.topology import FullMesh, MemberView, ring
from swarm.topology.smallworld import SmallWorld

OWN_ADDRESS = ("10.0.0.1", 7000)
M_POSITION = ring.position("m")
# Forty names in clockwise order from "m": RING_ORDER[0] is m's nearest successor, RING_ORDER[-1] its
# nearest predecessor.
RING_ORDER = sorted((f"n{i}" for i in range(40)), key=lambda n: ring.clockwise(M_POSITION, ring.position(n)))
ROOM = "room for a ring neighbour"
NEITHER = "neither end wants the link"


class Fixed(FullMesh):
    """Wants exactly the given names (when reachable); retains `keep` (default: every member)."""

    def __init__(self, *names: str, keep: Iterable[str] | None = None) -> None:
        self.names = set(names)
        self.keep = None if keep is None else set(keep)

    def wanted(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        return {m.name for m in members if m.name in self.names and m.reachable}

    def retained(self, own_name: str, members: Iterable[MemberView]) -> set[str]:
        names = {m.name for m in members}
        return names if self.keep is None else names & self.keep


# ---------------------------------------------------------------------- helpers


def make(policy: Any = None, **options: Any) -> Membership:
    return Membership(CoreConfig(server_name="m", **options), epoch=1, listen_address=OWN_ADDRESS,
                      policy=Fixed() if policy is None else policy, counters=Counter(), out=[])


def ring_membership(max_peers: int, **options: Any) -> Membership:
    """Membership with the small-world policy: one ring link per side, no shortcuts."""
    policy = SmallWorld(M_POSITION, local_links=2, shortcuts=0, reserve_size=32, rng=random.Random(7))
    return make(policy, local_links=2, max_peers=max_peers, **options)


def address(name: str) -> tuple[str, int]:
    return (f"host-{name}", 7000)


def entry(name: str, epoch: int = 1, where: tuple[str, int] | None = None) -> list[Any]:
    """A PEERS entry, as decoded from the wire."""
    return [name, list(where or address(name)), epoch]


def hello(name: str, conn: int, *, epoch: int = 1, outbound: bool = False,
          where: tuple[str, int] | None = None) -> Hello:
    return Hello(conn, name, epoch, where or address(name), outbound, address(name) if outbound else None)


def up(name: str, conn: int, *, epoch: int = 1, fresh: bool = True) -> LinkUp:
    return LinkUp(name, conn, epoch, address(name), None, fresh)


def down(name: str, conn: int, cause: str = FAILED, since: float = 0.0) -> LinkDown:
    return LinkDown(name, conn, address(name), "test", cause, since)


def admit_and_link(m: Membership, name: str, conn: int, now: float = 0.0, *, epoch: int = 1,
                   positions: list[list[Any]] | None = None, fresh: bool = True) -> list[Any]:
    """An outbound HELLO from `name`, admitted, then its link up on `conn`: link_up's requests."""
    assert m.admit(hello(name, conn, epoch=epoch, outbound=True), now).verdict == ADMIT
    return m.link_up(up(name, conn, epoch=epoch, fresh=fresh), now, positions)


def join(m: Membership, name: str, conn: int, now: float = 0.0, *, confirm: bool = True) -> list[Any]:
    """Link `name` on `conn` (confirmed by its first PEERS unless told otherwise); clear `out`."""
    requests = admit_and_link(m, name, conn, now)
    if confirm:
        peers(m, conn, name, [], now)
    m.out.clear()
    return requests


def peers(m: Membership, conn: int, peer: str | None, entries: Any, now: float = 0.0,
          **fields: Any) -> tuple[list[Any], bool]:
    return m.on_peers(conn, peer, {"peers": entries, **fields}, now)


def sent(m: Membership) -> list[tuple[tuple[int, ...], int, dict[str, Any]]]:
    """(connections, kind, decoded fields) of every action appended so far (all must be Sends); clears out."""
    result = []
    for action in m.out:
        assert isinstance(action, Send)
        result.append((action.conns, wire.kind(action.data), wire.control_fields(action.data)))
    m.out.clear()
    return result


def leave_frame(name: str, epoch: int = 1, where: list[Any] | None = None) -> tuple[dict[str, Any], bytes]:
    fields: dict[str, Any] = {"name": name, "epoch": epoch}
    if where is not None:
        fields["address"] = where
    return fields, wire.encode_control(wire.KIND_LEAVE, fields)


def receive_leave(m: Membership, conn: int, name: str, now: float = 0.0, **options: Any) -> list[Any]:
    fields, frame = leave_frame(name, **options)
    return m.on_leave(conn, fields, frame, now)


def wanted_now(m: Membership, now: float) -> list[tuple[str, int]]:
    return m.dial_plan(now, isolated=False)[0]


# ---------------------------------------------------------------------- admit


def test_a_hello_from_an_unknown_node_creates_a_member_and_counts_it_joined() -> None:
    m = make()
    assert m.admit(hello("a", 1), 0.0) == Admission(ADMIT)
    assert m.known_members == {"a": address("a")}
    assert m.epoch_of("a") == 1
    assert m.linked_peers == {}  # admitted, not linked: links reports the link
    assert m.counters == Counter({C.MEMBERS_JOINED: 1})
    assert m.out == []


def test_a_second_hello_with_the_same_epoch_updates_the_address_and_is_not_a_new_member() -> None:
    m = make()
    m.admit(hello("a", 1), 0.0)
    assert m.admit(hello("a", 2, where=("10.9.9.9", 7001)), 1.0) == Admission(ADMIT)
    assert m.known_members == {"a": ("10.9.9.9", 7001)}
    assert m.counters[C.MEMBERS_JOINED] == 1


def test_a_hello_with_a_newer_epoch_replaces_the_record_and_drops_the_old_link() -> None:
    m = make()
    join(m, "a", 1)
    assert m.admit(hello("a", 2, epoch=2, where=("10.9.9.9", 7001)), 1.0) == Admission(ADMIT)
    assert m.epoch_of("a") == 2
    assert m.known_members == {"a": ("10.9.9.9", 7001)}
    assert m.linked_peers == {}
    assert m.confirmed_links == 0
    assert m.counters[C.MEMBERS_JOINED] == 2
    assert m.link_down(down("a", 1)) == []  # the old process's link is not the new record's


def test_a_hello_with_an_older_epoch_is_stale_and_changes_nothing() -> None:
    m = make()
    m.admit(hello("a", 1, epoch=2), 0.0)
    admission = m.admit(hello("a", 2, epoch=1, where=("10.9.9.9", 7001)), 1.0)
    assert admission.verdict == STALE
    assert admission.reason == ("name conflict: 'a' is held by a newer process at host-a:7000 (epoch 2; "
                                "this one's is 1)")
    assert admission.holder == address("a")
    assert admission.requests == ()
    assert m.epoch_of("a") == 2
    assert m.known_members == {"a": address("a")}
    assert m.counters[C.MEMBERS_JOINED] == 1


def test_a_hello_makes_a_member_that_failed_twice_reachable_again() -> None:
    m = make(Fixed("a"))
    m.admit(hello("a", 1), 0.0)
    m.dial_failed(DialFailed(address("a"), "a"), 1.0)
    m.dial_failed(DialFailed(address("a"), "a"), 2.0)
    assert m.failed_addresses() == [address("a")]
    assert wanted_now(m, 3.0) == []
    m.admit(hello("a", 2), 3.0)
    assert m.failed_addresses() == []
    assert wanted_now(m, 3.0) == [address("a")]


def test_a_hello_brings_back_a_member_that_had_left() -> None:
    m = make()
    join(m, "b", 1)
    m.admit(hello("a", 2), 0.0)
    receive_leave(m, 1, "a")
    assert "a" not in m.known_members
    m.admit(hello("a", 3), 1.0)
    assert m.known_members["a"] == address("a")


def full_ring_membership() -> tuple[Membership, list[str], str]:
    """At maxPeers 10 with RING_ORDER[1..4] and [6..11] linked; the joiner RING_ORDER[5] sits between."""
    m = ring_membership(max_peers=10)
    linked = RING_ORDER[1:5] + RING_ORDER[6:12]
    for conn, name in enumerate(linked, start=1):
        join(m, name, conn, float(conn))
    return m, linked, RING_ORDER[5]


def test_at_max_peers_an_inbound_joiner_that_would_not_be_a_ring_neighbour_is_refused_with_8_hints() -> None:
    m, linked, joiner = full_ring_membership()
    admission = m.admit(hello(joiner, 50), 20.0)
    assert admission.verdict == FULL
    assert admission.reason == "m is at maxPeers (10)"
    assert admission.requests == ()
    at = ring.position(joiner)
    nearest = sorted(linked, key=lambda name: (ring.ring_distance(ring.position(name), at), name))[:8]
    assert list(admission.hints) == [entry(name) for name in nearest]
    assert m.counters[C.REFUSED_FULL] == 1
    assert m.counters[C.LINKS_PRUNED] == 0
    assert set(m.linked_peers) == set(linked)
    assert m.out == []


def test_a_refused_joiner_is_given_every_link_as_a_hint_when_there_are_fewer_than_8() -> None:
    m = ring_membership(max_peers=3)
    for conn, index in enumerate((2, 5, 8), start=1):
        join(m, RING_ORDER[index], conn)
    admission = m.admit(hello(RING_ORDER[4], 9), 1.0)
    assert admission.verdict == FULL
    assert sorted(name for name, _, _ in admission.hints) == sorted(RING_ORDER[i] for i in (2, 5, 8))


def test_at_max_peers_an_outbound_joiner_is_never_refused() -> None:
    m, linked, joiner = full_ring_membership()
    assert m.admit(hello(joiner, 50, outbound=True), 20.0) == Admission(ADMIT)
    assert m.counters[C.REFUSED_FULL] == 0
    assert m.counters[C.LINKS_PRUNED] == 0


def test_at_max_peers_a_hello_from_a_peer_already_linked_is_admitted() -> None:
    m, linked, _ = full_ring_membership()
    assert m.admit(hello(linked[3], 50), 20.0) == Admission(ADMIT)
    assert m.counters[C.REFUSED_FULL] == 0


def admit_ring_neighbour(confirmed: Iterable[int], not_wanting: Iterable[int] = ()) -> tuple[Membership,
                                                                                             Admission]:
    """At maxPeers 4 with RING_ORDER[2], [4], [6], [8] linked in that order (only [2] and [8] are wanted,
    [4] is the oldest spare), RING_ORDER[0], m's nearest successor, says HELLO inbound."""
    m = ring_membership(max_peers=4)
    conns = {}
    for conn, index in enumerate((2, 4, 6, 8), start=1):
        join(m, RING_ORDER[index], conn, float(conn), confirm=False)
        conns[index] = conn
    for index in confirmed:
        peers(m, conns[index], RING_ORDER[index], [], 5.0)
    for index in not_wanting:
        peers(m, conns[index], RING_ORDER[index], [], 5.0, want=False)
    m.out.clear()
    return m, m.admit(hello(RING_ORDER[0], 9), 6.0)


def assert_made_room_by_pruning(m: Membership, admission: Admission, index: int) -> None:
    assert admission == Admission(ADMIT, (PrunePeer(RING_ORDER[index], ROOM),))
    assert RING_ORDER[index] not in m.linked_peers
    assert len(m.linked_peers) == 3
    assert m.counters[C.LINKS_PRUNED] == 1
    assert m.counters[C.REFUSED_FULL] == 0


def test_a_ring_neighbour_at_max_peers_is_admitted_and_an_unconfirmed_unwanted_link_is_pruned_first() -> None:
    # [4] is older but confirmed; [2] is unconfirmed but wanted.
    m, admission = admit_ring_neighbour(confirmed=(4, 8))
    assert_made_room_by_pruning(m, admission, 6)


def test_making_room_prefers_a_link_the_peer_does_not_want_either_to_an_older_one() -> None:
    m, admission = admit_ring_neighbour(confirmed=(2, 4, 6, 8), not_wanting=(6,))
    assert_made_room_by_pruning(m, admission, 6)


def test_making_room_otherwise_prunes_the_oldest_link_not_wanted() -> None:
    m, admission = admit_ring_neighbour(confirmed=(2, 4, 6, 8))
    assert_made_room_by_pruning(m, admission, 4)


def test_a_ring_neighbour_is_admitted_at_max_peers_even_when_no_link_can_be_spared() -> None:
    m = make(Fixed("a", "b"), max_peers=2)  # four ring links: with three members, all are ring neighbours
    join(m, "a", 1)
    join(m, "b", 2)
    assert m.admit(hello("c", 3), 1.0) == Admission(ADMIT)
    assert m.counters[C.LINKS_PRUNED] == 0
    assert set(m.linked_peers) == {"a", "b"}


# ---------------------------------------------------------------------- link_up


def test_a_new_link_sends_the_peer_peers_want_and_seen_and_announces_it_to_the_others_in_one_frame() -> None:
    m = make(Fixed("c"))
    join(m, "a", 1)
    join(m, "b", 2)
    positions = [[b"\x02n3" + bytes(8), 41]]
    assert admit_and_link(m, "c", 3, 1.0, positions=positions) == []
    assert sent(m) == [
        ((3,), wire.KIND_PEERS, {"peers": [entry("a"), entry("b")], "want": True, "seen": positions}),
        ((1, 2), wire.KIND_PEERS, {"peers": [entry("c")]}),
    ]
    assert m.counters[C.LINKS_MADE] == 3
    assert m.linked_peers == {"a": address("a"), "b": address("b"), "c": address("c")}


def test_the_first_link_is_announced_to_nobody_and_says_want_false_when_not_wanted() -> None:
    m = make(Fixed())
    admit_and_link(m, "a", 1, positions=[])
    assert sent(m) == [((1,), wire.KIND_PEERS, {"peers": [], "want": False, "seen": []})]
    assert m.counters[C.LINKS_MADE] == 1


def test_a_link_moved_to_a_new_connection_sends_no_seen_and_is_not_counted_as_made() -> None:
    m = make(Fixed("a"))
    join(m, "a", 1)
    join(m, "b", 2)
    assert m.link_up(up("a", 5, fresh=False), 1.0, [[b"k", 1]]) == []
    assert sent(m) == [
        ((5,), wire.KIND_PEERS, {"peers": [entry("b")], "want": True}),
        ((2,), wire.KIND_PEERS, {"peers": [entry("a")]}),
    ]
    assert m.counters[C.LINKS_MADE] == 2
    assert m.confirmed_links == 1  # the new connection is not confirmed until its first PEERS
    assert m.link_down(down("a", 1)) == []  # the old connection is no longer the link


def test_a_link_past_max_peers_prunes_an_unwanted_link_at_once_and_the_peers_frames_leave_it_out() -> None:
    m = make(Fixed("a"), max_peers=2)
    join(m, "a", 1)
    join(m, "b", 2)
    assert admit_and_link(m, "c", 3, 1.0) == [PrunePeer("b", ROOM)]
    assert m.linked_peers == {"a": address("a"), "c": address("c")}
    assert m.counters[C.LINKS_PRUNED] == 1
    assert sent(m) == [
        ((3,), wire.KIND_PEERS, {"peers": [entry("a")], "want": False}),
        ((1,), wire.KIND_PEERS, {"peers": [entry("c")]}),
    ]
    # The pruned member is unlinked here already: the LinkDown that follows changes nothing.
    assert m.link_down(down("b", 2, PRUNED)) == []
    assert m.link_down(down("b", 2, FAILED)) == []
    assert m.failed_addresses() == []


def test_a_link_past_max_peers_never_prunes_the_link_just_made() -> None:
    m = make(Fixed("a", "b"), max_peers=2)
    join(m, "a", 1)
    join(m, "b", 2)
    assert admit_and_link(m, "c", 3, 1.0) == []
    assert set(m.linked_peers) == {"a", "b", "c"}
    assert m.counters[C.LINKS_PRUNED] == 0


# ---------------------------------------------------------------------- link_down, dial_failed


def test_a_failed_link_is_redialled_and_counts_one_failure() -> None:
    m = make(Fixed("a"))
    join(m, "a", 1)
    assert m.link_down(down("a", 1, FAILED)) == [Redial(address("a"))]
    assert m.linked_peers == {}
    assert m.failed_addresses() == []  # one failure: still reachable
    assert wanted_now(m, 1.0) == [address("a")]


def test_two_failures_in_a_row_make_a_member_unreachable() -> None:
    m = make(Fixed("a"))
    join(m, "a", 1)
    m.link_down(down("a", 1, FAILED))
    m.dial_failed(DialFailed(address("a"), None), 1.0)  # found by its address
    assert m.failed_addresses() == [address("a")]
    assert wanted_now(m, 2.0) == []


def test_a_handshake_between_two_lost_links_starts_the_count_again() -> None:
    m = make(Fixed("a"))
    join(m, "a", 1)
    m.link_down(down("a", 1, FAILED))
    join(m, "a", 2)
    assert m.link_down(down("a", 2, FAILED)) == [Redial(address("a"))]
    assert m.failed_addresses() == []
    assert wanted_now(m, 1.0) == [address("a")]


def test_a_link_the_peer_retired_is_redialled_without_a_failure() -> None:
    m = make(Fixed("a"))
    join(m, "a", 1)
    assert m.link_down(down("a", 1, PEER_RETIRED)) == [Redial(address("a"))]
    m.link_up(up("a", 2, fresh=False), 1.0, None)
    assert m.link_down(down("a", 2, PEER_RETIRED)) == [Redial(address("a"))]
    assert m.failed_addresses() == []
    assert wanted_now(m, 2.0) == [address("a")]


def test_a_pruned_link_that_goes_down_is_not_redialled() -> None:
    m = make()
    join(m, "a", 1)
    assert m.link_down(down("a", 1, PRUNED)) == []
    assert m.linked_peers == {}


def test_a_lost_link_to_a_member_that_left_is_not_redialled_nor_counted_as_a_failure() -> None:
    m = make()
    join(m, "a", 1)
    join(m, "b", 2)
    receive_leave(m, 1, "a")
    assert m.link_down(down("a", 1, FAILED)) == []
    assert m.linked_peers == {"b": address("b")}
    assert m.forget_unreachable(1.0) == []  # no failure: its address is not remembered


def test_a_link_a_member_that_left_retired_is_not_redialled() -> None:
    m = make()
    join(m, "a", 1)
    receive_leave(m, 1, "a")
    assert m.link_down(down("a", 1, PEER_RETIRED)) == []


def test_a_link_down_for_a_connection_that_is_not_the_members_link_is_ignored() -> None:
    m = make()
    join(m, "a", 1)
    assert m.link_down(down("a", 7, FAILED)) == []
    assert m.link_down(down("zz", 1, FAILED)) == []
    assert m.linked_peers == {"a": address("a")}
    assert m.confirmed_links == 1


def test_a_failed_dial_does_not_count_against_a_linked_member() -> None:
    m = make()
    join(m, "a", 1)
    m.dial_failed(DialFailed(address("a"), "a"), 1.0)
    m.dial_failed(DialFailed(address("a"), "a"), 2.0)
    assert m.link_down(down("a", 1, FAILED)) == [Redial(address("a"))]
    assert m.failed_addresses() == []


# ---------------------------------------------------------------------- on_peers


def test_want_from_the_current_link_is_recorded_and_from_another_connection_ignored() -> None:
    m = make(Fixed())
    join(m, "a", 1)
    peers(m, 9, "a", [], 0.5, want=False)  # not the link
    peers(m, 1, "a", [], 0.5, want=0)  # not a bool
    assert m.prune(10.0) == []
    peers(m, 1, "a", [], 0.5, want=False)
    assert m.prune(10.0) == [PrunePeer("a", NEITHER)]


def test_the_first_peers_on_the_link_confirms_it() -> None:
    m = make()
    join(m, "a", 1, confirm=False)
    assert m.confirmed_links == 0
    peers(m, 9, "a", [])
    peers(m, 1, None, [])
    assert m.confirmed_links == 0
    peers(m, 1, "a", [])
    assert m.confirmed_links == 1


def test_new_members_in_peers_are_learned_and_are_news_and_a_repeated_list_is_not() -> None:
    m = make()
    join(m, "a", 1)
    assert peers(m, 1, "a", [entry("b"), entry("c", 5)]) == ([], True)
    assert m.known_members == {"a": address("a"), "b": address("b"), "c": address("c")}
    assert m.epoch_of("c") == 5
    assert m.counters[C.MEMBERS_LEARNED] == 2
    assert m.linked_peers == {"a": address("a")}
    assert peers(m, 1, "a", [entry("b"), entry("c", 5), entry("a")]) == ([], False)
    assert m.counters[C.MEMBERS_LEARNED] == 2
    assert m.out == []


def test_a_linked_member_listed_with_a_higher_epoch_is_closed_redialled_and_updated() -> None:
    m = make()
    join(m, "a", 1)
    join(m, "b", 2)
    requests, changed = peers(m, 2, "b", [entry("a", 2, ("10.9.9.9", 7001))], 3.0)
    assert requests == [Redial(address("a")), ClosePeer("a", "peer restarted with a new epoch")]
    assert changed is True
    assert m.epoch_of("a") == 2
    assert m.known_members["a"] == ("10.9.9.9", 7001)
    assert m.linked_peers == {"b": address("b")}
    assert m.counters[C.MEMBERS_LEARNED] == 0
    assert m.link_down(down("a", 1, FAILED)) == []  # the closed link's LinkDown finds it unlinked


def test_an_unlinked_member_listed_with_a_higher_epoch_is_updated_and_reachable_again() -> None:
    m = make(Fixed("a"))
    join(m, "b", 1)
    peers(m, 1, "b", [entry("a")])
    m.dial_failed(DialFailed(address("a"), "a"), 1.0)
    m.dial_failed(DialFailed(address("a"), "a"), 2.0)
    assert wanted_now(m, 2.0) == []
    assert peers(m, 1, "b", [entry("a", 2)], 3.0) == ([], True)
    assert m.epoch_of("a") == 2
    assert m.failed_addresses() == []
    assert wanted_now(m, 3.0) == [address("a")]


def test_an_entry_with_an_older_epoch_is_ignored() -> None:
    m = make()
    join(m, "a", 1)
    peers(m, 1, "a", [entry("b", 5)])
    assert peers(m, 1, "a", [entry("b", 4, ("10.9.9.9", 7001))]) == ([], False)
    assert m.epoch_of("b") == 5
    assert m.known_members["b"] == address("b")


@pytest.mark.parametrize("fields", [{}, {"peers": "b"}, {"peers": {"b": 1}}, {"peers": None}],
                         ids=["missing", "a string", "a map", "nil"])
def test_a_peers_frame_without_a_list_of_peers_is_a_protocol_error(fields: dict[str, Any]) -> None:
    m = make()
    join(m, "a", 1)
    with pytest.raises(ProtocolError, match="PEERS without a list of peers"):
        m.on_peers(1, "a", fields, 0.0)


@pytest.mark.parametrize("bad", [
    "b", ["b"], ["b", ["h", 7000]], ["b", ["h", 7000], 1, 2], [1, ["h", 7000], 1], ["b", "h:7000", 1],
    ["b", ["h"], 1], ["b", ["h", 7000, 1], 1], ["b", [1, 7000], 1], ["b", ["h", "7000"], 1],
    ["b", ["h", 7000], "1"], ["b", ["h", 7000], 1.0],
])
def test_a_malformed_peers_entry_is_a_protocol_error(bad: Any) -> None:
    m = make()
    join(m, "a", 1)
    with pytest.raises(ProtocolError, match="PEERS entry malformed"):
        peers(m, 1, "a", [bad])


@pytest.mark.parametrize("ignored", [
    entry("m"), entry("m", 7), ["b", ["h", 0], 1], ["b", ["h", 65536], 1], ["b", ["h", -1], 1],
], ids=["ourselves", "ourselves at another epoch", "port 0", "port 65536", "negative port"])
def test_entries_for_ourselves_or_with_a_bad_port_are_ignored(ignored: list[Any]) -> None:
    m = make()
    join(m, "a", 1)
    assert peers(m, 1, "a", [ignored]) == ([], False)
    assert set(m.known_members) == {"a"}
    assert m.counters[C.MEMBERS_LEARNED] == 0


def test_entries_with_the_extreme_valid_ports_are_learned() -> None:
    m = make()
    join(m, "a", 1)
    assert peers(m, 1, "a", [["b", ["h", 1], 1], ["c", ["h", 65535], 1]]) == ([], True)
    assert m.known_members["b"] == ("h", 1)
    assert m.known_members["c"] == ("h", 65535)


def test_an_entry_for_a_member_that_left_is_ignored_but_its_next_epoch_is_learned() -> None:
    m = make()
    join(m, "a", 1)
    receive_leave(m, 1, "z", epoch=3)  # a leaver this node never knew
    assert peers(m, 1, "a", [entry("z", 3)]) == ([], False)
    assert "z" not in m.known_members
    assert peers(m, 1, "a", [entry("z", 4)]) == ([], True)
    assert m.epoch_of("z") == 4


def test_only_the_first_1024_entries_of_a_peers_list_are_read() -> None:
    m = make()
    join(m, "a", 1)
    entries = [entry(f"p{i}") for i in range(PEERS_READ)] + [["malformed"], entry("late")]
    assert peers(m, 1, "a", entries) == ([], True)
    assert m.counters[C.MEMBERS_LEARNED] == PEERS_READ
    assert "late" not in m.known_members


# ---------------------------------------------------------------------- PEERS sent each round


def test_each_gossip_round_sends_every_linked_peer_its_other_links_and_want_without_seen() -> None:
    m = make(Fixed("a"))
    join(m, "a", 1)
    join(m, "b", 2)
    peers(m, 1, "a", [entry("c")])  # learned, not linked: not passed on
    m.send_peers(1.0)
    assert sent(m) == [
        ((1,), wire.KIND_PEERS, {"peers": [entry("b")], "want": True}),
        ((2,), wire.KIND_PEERS, {"peers": [entry("a")], "want": False}),
    ]


def test_link_kind_says_shortcut_local_or_inbound_and_link_details_list_the_links_by_name() -> None:
    policy = Fixed("a")
    policy.shortcuts = {"s"}  # type: ignore[attr-defined]
    m = make(policy)
    for conn, name in enumerate(("x", "s", "a"), start=1):
        join(m, name, conn)
    assert [m.link_kind(name) for name in ("a", "s", "x")] == ["local", "shortcut", "inbound"]
    assert m.link_details() == [
        {"name": name, "address": list(address(name)), "kind": kind, "position": ring.position(name)}
        for name, kind in (("a", "local"), ("s", "shortcut"), ("x", "inbound"))]


# ---------------------------------------------------------------------- turned_away


def test_a_peer_that_turned_us_away_is_not_reachable_until_the_refusal_window_ends() -> None:
    m = make(Fixed("a"), gossip_interval=1.0)
    join(m, "b", 1)
    peers(m, 1, "b", [entry("a")])
    assert wanted_now(m, 10.0) == [address("a")]
    assert m.turned_away("a", [entry("c")], 10.0) == []
    assert wanted_now(m, 16.99) == []  # 10 + 5 x 1.0 + 2
    assert wanted_now(m, 17.0) == [address("a")]
    assert m.failed_addresses() == []  # turned away politely: not a failure


def test_the_hints_of_a_refusal_are_learned_even_from_an_unknown_peer() -> None:
    m = make()
    assert m.turned_away(None, [entry("c"), entry("d")], 1.0) == []
    assert set(m.known_members) == {"c", "d"}
    assert m.counters[C.MEMBERS_LEARNED] == 2


def test_a_refusal_whose_hints_name_a_restarted_linked_member_closes_its_link() -> None:
    m = make()
    join(m, "a", 1)
    assert m.turned_away("b", [entry("a", 2)], 1.0) == [Redial(address("a")),
                                                       ClosePeer("a", "peer restarted with a new epoch")]


@pytest.mark.parametrize("hints", [None, "c", [["c"]]], ids=["nil", "a string", "a malformed entry"])
def test_malformed_hints_are_a_protocol_error(hints: Any) -> None:
    m = make()
    with pytest.raises(ProtocolError):
        m.turned_away("a", hints, 1.0)


# ---------------------------------------------------------------------- LEAVE


def three_links(policy: Any = None, **options: Any) -> Membership:
    m = make(policy, **options)
    for conn, name in enumerate(("a", "b", "c"), start=1):
        join(m, name, conn)
    return m


def test_a_leave_is_forwarded_as_received_to_every_other_linked_peer_and_the_leaver_is_marked_left() -> None:
    m = three_links()
    fields, frame = leave_frame("a", where=["10.9.9.9", 7001])
    assert m.on_leave(1, fields, frame, 1.0) == [Forget((("10.9.9.9", 7001), address("a")), address("a"))]
    assert m.out == [Send((2, 3), frame)]
    assert m.counters[C.MEMBERS_LEFT] == 1
    assert "a" not in m.known_members
    assert m.linked_peers == {"a": address("a"), "b": address("b"), "c": address("c")}  # links report it


def test_a_second_copy_of_a_leave_is_not_forwarded() -> None:
    m = three_links()
    receive_leave(m, 1, "a")
    m.out.clear()
    assert receive_leave(m, 2, "a") == []
    assert m.out == []
    assert m.counters[C.MEMBERS_LEFT] == 1


def test_a_leave_without_an_address_forgets_the_members_address() -> None:
    m = three_links()
    assert receive_leave(m, 1, "b") == [Forget((address("b"),), address("b"))]


def test_a_leave_of_an_unknown_member_or_another_epoch_is_forwarded_and_forgets_only_its_address() -> None:
    m = three_links()
    assert receive_leave(m, 1, "zz", where=["10.9.9.9", 7001]) == [Forget((("10.9.9.9", 7001),), None)]
    assert receive_leave(m, 1, "b", epoch=2) == [Forget((), None)]
    assert [conns for conns, _, _ in sent(m)] == [(2, 3), (2, 3)]
    assert m.counters[C.MEMBERS_LEFT] == 0
    assert "b" in m.known_members


@pytest.mark.parametrize("fields", [{}, {"name": "a"}, {"epoch": 1}, {"name": 1, "epoch": 1},
                                    {"name": "a", "epoch": "1"}])
def test_a_leave_without_a_name_and_an_integer_epoch_is_ignored(fields: dict[str, Any]) -> None:
    m = three_links()
    assert m.on_leave(1, fields, wire.encode_control(wire.KIND_LEAVE, fields), 0.0) == []
    assert m.out == []
    assert m.counters[C.MEMBERS_LEFT] == 0


def test_only_the_last_128_leaves_are_remembered() -> None:
    m = three_links()
    for i in range(DEPARTED + 1):
        receive_leave(m, 1, f"x{i}")
    m.out.clear()
    receive_leave(m, 1, "x1")
    assert m.out == []
    receive_leave(m, 1, "x0")  # the oldest, dropped: passed on again
    assert [conns for conns, _, _ in sent(m)] == [(2, 3)]


def test_leave_sends_leave_to_every_linked_peer_and_our_own_leave_is_not_passed_on() -> None:
    m = three_links()
    m.leave(1.0)
    assert sent(m) == [((1, 2, 3), wire.KIND_LEAVE, {"name": "m", "epoch": 1, "address": list(OWN_ADDRESS)})]
    assert receive_leave(m, 2, "m", where=list(OWN_ADDRESS)) == []
    assert m.out == []


def test_leave_without_links_sends_nothing() -> None:
    m = make()
    m.leave(0.0)
    assert m.out == []


# ---------------------------------------------------------------------- prune


def test_prune_retires_a_link_neither_end_wants_once_the_grace_has_passed() -> None:
    m = make(Fixed())  # gossip_interval 0.5: a grace of 1.0
    join(m, "a", 1, 0.0)
    peers(m, 1, "a", [], 0.5, want=False)
    assert m.prune(1.0) == []
    assert m.prune(1.01) == [PrunePeer("a", NEITHER)]
    assert m.counters[C.LINKS_PRUNED] == 1
    assert m.linked_peers == {}
    assert m.link_down(down("a", 1, PRUNED)) == []
    assert m.prune(2.0) == []


@pytest.mark.parametrize(("we_want", "peer_says"), [(True, False), (False, True), (False, None)],
                         ids=["we want it", "the peer wants it", "the peer has not said"])
def test_prune_keeps_a_link_one_end_still_wants(we_want: bool, peer_says: bool | None) -> None:
    m = make(Fixed("a") if we_want else Fixed())
    join(m, "a", 1, 0.0)
    if peer_says is not None:
        peers(m, 1, "a", [], 0.5, want=peer_says)
    assert m.prune(10.0) == []
    assert m.linked_peers == {"a": address("a")}
    assert m.counters[C.LINKS_PRUNED] == 0


def test_a_peer_that_wants_the_link_again_saves_it_from_pruning() -> None:
    m = make(Fixed())
    join(m, "a", 1, 0.0)
    peers(m, 1, "a", [], 0.5, want=False)
    peers(m, 1, "a", [], 1.0, want=True)
    assert m.prune(10.0) == []


# ---------------------------------------------------------------------- the view's bound


def test_trim_view_keeps_what_the_policy_retains_and_every_linked_member() -> None:
    m = make(Fixed(keep={"b"}))
    join(m, "a", 1)
    peers(m, 1, "a", [entry("b"), entry("c"), entry("d")])
    assert len(m.known_members) == 4  # far below the bound: not trimmed yet
    m.trim_view(1.0)
    assert m.known_members == {"a": address("a"), "b": address("b")}


def test_the_view_is_trimmed_as_soon_as_it_passes_its_bound() -> None:
    m = make(Fixed(keep=()), reserve_size=0, local_links=1, max_peers=1)  # bound 0 + 4 x 1 + 1 = 5
    join(m, "a", 1)
    peers(m, 1, "a", [entry(name) for name in "bcde"])
    m.bound_view(1.0)
    assert len(m.known_members) == 5
    assert peers(m, 1, "a", [entry("f")]) == ([], True)
    assert m.known_members == {"a": address("a")}
    assert m.counters[C.MEMBERS_LEARNED] == 5


# ---------------------------------------------------------------------- forget_unreachable


def test_a_member_that_left_is_forgotten_once_unlinked_and_not_remembered_even_if_it_had_failed() -> None:
    m = make()
    join(m, "a", 1)
    join(m, "b", 2)
    m.link_down(down("a", 1, FAILED))  # one failure
    receive_leave(m, 2, "a")
    receive_leave(m, 1, "b")  # b left, but is still linked
    assert m.forget_unreachable(0.5) == []
    assert m.epoch_of("a") is None
    assert m.epoch_of("b") == 1
    assert m.counters[C.MEMBERS_FORGOTTEN] == 1


def test_a_member_nobody_vouched_for_during_forget_after_is_forgotten_without_being_remembered() -> None:
    m = make()  # forget_after 60
    join(m, "a", 1, 0.0)
    peers(m, 1, "a", [entry("c"), entry("d")], 0.0)
    peers(m, 1, "a", [entry("d")], 30.0)  # a peer linked to it right now vouches for it
    assert m.forget_unreachable(60.0) == []
    assert m.counters[C.MEMBERS_FORGOTTEN] == 0
    assert m.forget_unreachable(60.01) == []
    assert set(m.known_members) == {"a", "d"}  # a is linked: never forgotten
    assert m.forget_unreachable(90.01) == []
    assert set(m.known_members) == {"a"}
    assert m.counters[C.MEMBERS_FORGOTTEN] == 2


def test_a_member_that_failed_and_stayed_unreachable_for_forget_after_is_forgotten_and_remembered() -> None:
    m = make()
    join(m, "a", 1, 0.0)
    join(m, "b", 2, 0.0)
    m.link_down(down("a", 1, FAILED, since=5.0))  # unreachable since it was last heard
    peers(m, 2, "b", [entry("a")], 50.0)  # vouched for: only the failure can make it go
    assert m.forget_unreachable(65.0) == []
    assert m.forget_unreachable(65.01) == [Remember(address("a"))]
    assert set(m.known_members) == {"b"}
    assert m.counters[C.MEMBERS_FORGOTTEN] == 1


def test_a_member_whose_dial_failed_is_unreachable_from_that_failure() -> None:
    m = make()
    join(m, "b", 1, 0.0)
    peers(m, 1, "b", [entry("a")], 0.0)
    m.dial_failed(DialFailed(address("a"), None), 10.0)
    peers(m, 1, "b", [entry("a")], 60.0)
    assert m.forget_unreachable(70.0) == []
    assert m.forget_unreachable(70.01) == [Remember(address("a"))]


def test_members_dropped_in_one_round_count_once() -> None:
    m = make()
    join(m, "a", 1, 0.0)
    peers(m, 1, "a", [entry("c"), entry("d")], 0.0)
    m.forget_unreachable(61.0)
    assert set(m.known_members) == {"a"}
    assert m.counters[C.MEMBERS_FORGOTTEN] == 1


# ---------------------------------------------------------------------- dial_plan, addresses


def test_dial_plan_gives_wanted_members_without_a_link_and_every_known_member_only_when_isolated() -> None:
    m = make(Fixed("a", "b", "d"))
    join(m, "a", 1)
    peers(m, 1, "a", [entry("b"), entry("c"), entry("d")])
    receive_leave(m, 1, "d")
    assert m.dial_plan(1.0, isolated=False) == ([address("b")], [])
    assert m.dial_plan(1.0, isolated=True) == ([address("b")], [address("a"), address("b"), address("c")])


def test_addresses_to_remember_lists_linked_members_first_then_those_not_failed_twice() -> None:
    m = make()
    join(m, "a", 1)
    peers(m, 1, "a", [entry("b"), entry("c"), entry("d")])
    join(m, "c", 2)
    m.dial_failed(DialFailed(address("d"), "d"), 1.0)
    m.dial_failed(DialFailed(address("d"), "d"), 2.0)
    assert m.addresses_to_remember(32) == [address("a"), address("c"), address("b")]
    assert m.addresses_to_remember(2) == [address("a"), address("c")]
