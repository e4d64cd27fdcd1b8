"""Links (swarm.protocol.links), driven by hand: the HELLO exchange and its refusals, duplicate
connections (two `Links` against each other), supersession by a new epoch, the ways a link ends, the
handshake and failure timers, keepalive PINGs, REFUSE and protocol errors. Each test feeds the
sub-machine events and checks the actions it appended to `out`, the events it returned and its counters.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from memnet import MemNet

from swarm import counters as C
from swarm.errors import ProtocolError
from swarm.protocol import events as ev
from swarm.protocol import wire
from swarm.protocol.actions import CloseConnection, ReportError, Retire, Send
from swarm.protocol.config import CoreConfig
from swarm.protocol.links import ACTIVE, CLOSING, HANDSHAKE, RETIRING, Links

ADDRESSES = {"a": ("10.0.0.1", 7001), "b": ("10.0.0.2", 7002), "c": ("10.0.0.3", 7003)}
SEED = 5


def make_links(name: str = "a", *, epoch: int = 1, seed: int = SEED, **config: Any) -> Links:
    """A `Links` for node `name` at its address in ADDRESSES (failure and handshake timeouts of 3 s)."""
    config.setdefault("failure_timeout", 3.0)
    config.setdefault("handshake_timeout", 3.0)
    return Links(CoreConfig(server_name=name, **config), epoch=epoch, listen_address=ADDRESSES[name],
                 rng=random.Random(seed), counters=Counter(), out=[])


def take(links: Links) -> list[Any]:
    """The actions appended since the last call."""
    actions = links.out.copy()
    links.out.clear()
    return actions


def hello_fields(name: str = "b", **fields: Any) -> dict[str, Any]:
    """A valid HELLO map from `name` (fields given override, None removes one)."""
    hello = {"version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": name, "epoch": 1,
             "address": list(ADDRESSES.get(name, ("10.0.0.9", 7009))), "nonce": 42}
    hello.update(fields)
    return {key: value for key, value in hello.items() if value is not None}


def opened(links: Links, conn_id: int, *, outbound: bool = True, now: float = 0.0,
           identity: str | None = None, peer: Any = "b") -> Any:
    """Open `conn_id` (outbound: dialled at `peer`'s address, b's for a name not in ADDRESSES) and drop
    its HELLO from `out`."""
    dialled = ADDRESSES.get(peer, ADDRESSES["b"]) if outbound else None
    links.open(conn_id, outbound, dialled, now, identity, leaving=False)
    take(links)
    return links.conns[conn_id]


def greeted(links: Links, conn_id: int, *, outbound: bool = True, now: float = 0.0,
            identity: str | None = None, **fields: Any) -> Any:
    """Open `conn_id` and feed it the peer's HELLO; return what `hello` returned."""
    peer = fields.get("name", "b")
    conn = opened(links, conn_id, outbound=outbound, now=now, identity=identity, peer=peer)
    return links.hello(conn, hello_fields(**fields))


def linked(links: Links, conn_id: int, *, outbound: bool = True, now: float = 0.0, **fields: Any) -> Any:
    """Make `conn_id` the link to the peer of the HELLO `fields`; return the connection record."""
    greeted(links, conn_id, outbound=outbound, now=now, **fields)
    links.establish(conn_id)
    take(links)
    return links.conns[conn_id]


def single(actions: list[Any], kind: type) -> Any:
    """The one action in `actions`, checked to be a `kind`."""
    assert len(actions) == 1, actions
    assert isinstance(actions[0], kind), actions
    return actions[0]


def assert_refused(links: Links, conn_id: int, counter: str, reason_part: str) -> None:
    """`out` holds exactly: ReportError "refused", a REFUSE on `conn_id`, then a flushing close of it."""
    report, send, close = take(links)
    assert isinstance(report, ReportError) and report.code == "refused" and reason_part in report.text
    assert isinstance(send, Send) and send.conns == (conn_id,)
    assert wire.kind(send.data) == wire.KIND_REFUSE
    assert reason_part in wire.control_fields(send.data)["reason"]
    assert close == CloseConnection(conn_id, wire.control_fields(send.data)["reason"], True)
    assert links.counters == Counter({counter: 1})
    assert links.conns[conn_id].state == CLOSING
    assert not links.linked


def assert_bye(frame: bytes) -> None:
    assert wire.kind(frame) == wire.KIND_BYE
    assert wire.control_fields(frame) == {}


# ---------------------------------------------------------------------- opening


@pytest.mark.parametrize("outbound", [True, False])
def test_a_new_connection_is_sent_hello_with_version_cluster_name_epoch_address_and_a_fresh_nonce(
        outbound: bool) -> None:
    links = make_links("a", epoch=77, cluster_name="blue")
    links.open(3, outbound, ADDRESSES["b"] if outbound else None, 1.5, None, leaving=False)
    send = single(take(links), Send)
    assert send.conns == (3,)
    assert wire.kind(send.data) == wire.KIND_HELLO
    nonce = random.Random(SEED).getrandbits(63)
    assert wire.control_fields(send.data) == {
        "version": wire.PROTOCOL_VERSION, "cluster": "blue", "name": "a", "epoch": 77,
        "address": list(ADDRESSES["a"]), "nonce": nonce}
    conn = links.conns[3]
    assert (conn.state, conn.opened_at, conn.last_received, conn.last_sent) == (HANDSHAKE, 1.5, 1.5, 1.5)
    # The dialler's nonce is the tie-breaker: ours on a connection we dialled, the peer's (unknown yet)
    # on one we accepted.
    assert conn.dialer_nonce == (nonce if outbound else 0)


def test_two_connections_get_different_nonces() -> None:
    links = make_links()
    links.open(1, True, ADDRESSES["b"], 0.0, None, leaving=False)
    links.open(2, True, ADDRESSES["b"], 0.0, None, leaving=False)
    first, second = (wire.control_fields(send.data)["nonce"] for send in take(links))
    assert first != second
    assert (links.conns[1].dialer_nonce, links.conns[2].dialer_nonce) == (first, second)


def test_a_leaving_node_closes_a_new_connection_instead_of_sending_hello() -> None:
    links = make_links()
    links.open(4, False, None, 0.0, None, leaving=True)
    assert take(links) == [CloseConnection(4, "node is leaving", False)]
    assert 4 in links.conns  # forgotten only when the driver reports it closed
    assert links.closed(4, "closed", 0.5) == [ev.Closed(4, None, False)]


def test_a_frame_marks_its_connection_heard_from_but_unknown_and_closing_ones_are_ignored() -> None:
    links = make_links()
    conn = opened(links, 1)
    assert links.receive(1, 2.0) is conn
    assert conn.last_received == 2.0
    assert links.receive(99, 2.0) is None
    links.close(conn, "bye")
    assert links.receive(1, 3.0) is None
    assert conn.last_received == 2.0


# ---------------------------------------------------------------------- HELLO checks


def test_a_hello_of_another_protocol_version_is_refused() -> None:
    links = make_links()
    assert greeted(links, 1, version=wire.PROTOCOL_VERSION + 1) is None
    assert_refused(links, 1, C.VERSION_MISMATCH,
                   f"protocol version {wire.PROTOCOL_VERSION + 1} is not supported "
                   f"(this node speaks {wire.PROTOCOL_VERSION})")


@pytest.mark.parametrize(("version", "said"), [(None, "NoneType None"), ("3", "str '3'"), (3.0, "float 3.0"),
                                               (True, "bool True")])
def test_a_hello_whose_version_is_not_an_integer_is_refused_saying_so(version: Any, said: str) -> None:
    links = make_links()
    assert greeted(links, 1, version=version) is None
    assert_refused(links, 1, C.VERSION_MISMATCH, f"HELLO version must be an integer, got {said}")


def test_a_hello_of_another_cluster_is_refused() -> None:
    links = make_links(cluster_name="blue")
    assert greeted(links, 1, outbound=False, cluster="red") is None
    assert_refused(links, 1, C.CLUSTER_MISMATCH, "cluster name 'red' differs from 'blue'")


def test_the_version_is_checked_before_the_cluster_and_both_before_the_field_types() -> None:
    links = make_links()
    assert greeted(links, 1, version=1, cluster="red", name=None) is None
    assert_refused(links, 1, C.VERSION_MISMATCH, "protocol version 1")
    assert greeted(links, 2, cluster="red", epoch="x") is None
    assert links.counters[C.CLUSTER_MISMATCH] == 1


def test_a_hello_claiming_another_name_than_its_certificate_is_refused() -> None:
    links = make_links()
    assert greeted(links, 1, identity="b", name="c") is None
    assert_refused(links, 1, C.IDENTITY_MISMATCH, "certificate is for 'b', HELLO claims 'c'")


def test_a_hello_matching_its_certificate_is_accepted() -> None:
    links = make_links()
    hello = greeted(links, 1, identity="b")
    assert isinstance(hello, ev.Hello) and hello.name == "b"
    assert take(links) == []


@pytest.mark.parametrize("fields", [
    {"name": None}, {"epoch": None}, {"address": None}, {"nonce": None},
    {"name": 7}, {"name": ""}, {"name": "x" * (wire.MAX_NAME_BYTES + 1)}, {"name": "é" * 128},
    {"epoch": "1"}, {"epoch": 1.0}, {"nonce": "42"},
    {"address": "10.0.0.2:7002"}, {"address": ["10.0.0.2"]}, {"address": ["10.0.0.2", 7002, 1]},
    {"address": [7002, "10.0.0.2"]}, {"address": ["10.0.0.2", "7002"]},
])
def test_a_hello_with_a_missing_or_mistyped_field_is_a_protocol_error(fields: dict[str, Any]) -> None:
    links = make_links()
    with pytest.raises(ProtocolError, match="HELLO fields missing or of the wrong type"):
        greeted(links, 1, **fields)
    assert links.conns[1].state == HANDSHAKE
    assert take(links) == []


def test_a_malformed_hello_is_a_protocol_error_even_with_a_certificate() -> None:
    links = make_links()
    with pytest.raises(ProtocolError):
        greeted(links, 1, identity="b", name="c", nonce=None)
    assert links.counters[C.IDENTITY_MISMATCH] == 0


@pytest.mark.parametrize("fields", [{"epoch": True}, {"nonce": False}, {"address": ["10.0.0.2", True]}])
def test_a_hello_with_a_boolean_for_an_int_field_is_a_protocol_error(fields: dict[str, Any]) -> None:
    links = make_links()
    with pytest.raises(ProtocolError):
        greeted(links, 1, **fields)


def test_a_second_hello_on_a_connection_is_a_protocol_error() -> None:
    links = make_links()
    conn = linked(links, 1)
    with pytest.raises(ProtocolError, match="second HELLO"):
        links.hello(conn, hello_fields())
    assert links.active == {"b": 1}


def test_a_hello_from_ourselves_on_a_dialled_connection_closes_it_and_names_both_addresses() -> None:
    links = make_links("a")
    result = greeted(links, 1, name="a", address=["192.168.1.1", 7001])
    # The address the HELLO gives and the one dialled (a seed spelling of our own address).
    assert result == ev.SelfConnection((("192.168.1.1", 7001), ADDRESSES["a"]))
    assert take(links) == [CloseConnection(1, "connected to itself", False)]
    assert links.conns[1].state == CLOSING
    assert links.counters == Counter()
    assert links.closed(1, "closed", 0.1) == [ev.Closed(1, ADDRESSES["a"], False)]


def test_a_hello_from_ourselves_on_an_accepted_connection_names_the_hello_address() -> None:
    links = make_links("a")
    assert greeted(links, 1, outbound=False, name="a") == ev.SelfConnection((ADDRESSES["a"],))
    assert take(links) == [CloseConnection(1, "connected to itself", False)]


@pytest.mark.parametrize("outbound", [True, False])
def test_a_good_hello_returns_hello_and_makes_the_connection_active_but_not_yet_a_link(
        outbound: bool) -> None:
    links = make_links()
    hello = greeted(links, 6, outbound=outbound, epoch=9, nonce=123, address=["10.9.9.9", 9000])
    assert hello == ev.Hello(6, "b", 9, ("10.9.9.9", 9000), outbound, ADDRESSES["b"] if outbound else None)
    conn = links.conns[6]
    assert (conn.state, conn.peer, conn.peer_bytes, conn.epoch, conn.listen) == (
        ACTIVE, "b", b"b", 9, ("10.9.9.9", 9000))
    # On an accepted connection the peer dialled: its nonce is the tie-breaker.
    assert (conn.dialer_nonce == 123) is not outbound
    assert take(links) == []
    assert not links.linked and links.counters == Counter()


# ---------------------------------------------------------------------- establishing and duplicates


def test_a_first_connection_to_a_peer_becomes_its_link_fresh() -> None:
    links = make_links()
    greeted(links, 2, epoch=4, address=["10.9.9.9", 9000])
    assert links.establish(2) == [ev.LinkUp("b", 2, 4, ("10.9.9.9", 9000), ADDRESSES["b"], True)]
    assert links.active == {"b": 2} and links.linked
    assert take(links) == []
    assert links.counters == Counter()


def test_a_second_connection_that_loses_is_retired_with_the_link_as_successor() -> None:
    links = make_links("a")
    linked(links, 1, outbound=True)  # dialled by "a", the smaller name: the one to keep
    greeted(links, 2, outbound=False)
    assert links.establish(2) == []
    retire = single(take(links), Retire)
    assert (retire.conn, retire.successor) == (2, 1)
    assert_bye(retire.final)
    assert links.active == {"b": 1}
    assert (links.conns[1].state, links.conns[2].state) == (ACTIVE, RETIRING)
    assert links.counters == Counter({C.DUPLICATE_CONNECTIONS: 1})


def test_a_second_connection_that_wins_replaces_the_link_which_is_retired_and_not_fresh() -> None:
    links = make_links("a")
    linked(links, 1, outbound=False)  # dialled by "b", the larger name
    greeted(links, 2, outbound=True, epoch=3)
    assert links.establish(2) == [ev.LinkUp("b", 2, 3, ADDRESSES["b"], ADDRESSES["b"], False)]
    retire = single(take(links), Retire)
    assert (retire.conn, retire.successor) == (1, 2)
    assert_bye(retire.final)
    assert links.active == {"b": 2}
    assert links.counters == Counter({C.DUPLICATE_CONNECTIONS: 1})  # the peer was linked all along


def test_two_connections_dialled_by_the_same_node_keep_the_smaller_dialler_nonce() -> None:
    links = make_links("a")
    linked(links, 1, outbound=False, nonce=50)
    greeted(links, 2, outbound=False, nonce=40)
    assert [event.conn for event in links.establish(2)] == [2]
    assert single(take(links), Retire).conn == 1
    greeted(links, 3, outbound=False, nonce=60)
    assert links.establish(3) == []
    assert single(take(links), Retire).conn == 3
    assert links.active == {"b": 2}
    assert links.counters[C.DUPLICATE_CONNECTIONS] == 2


def hello_frame(links: Links) -> bytes:
    """The HELLO `links` just sent (the only action in its `out`)."""
    send = single(take(links), Send)
    assert wire.kind(send.data) == wire.KIND_HELLO
    return send.data


def connect(dialler: Links, acceptor: Links, conn_id: int) -> int:
    """Open connection `conn_id` (the same id at both ends) dialled by `dialler`, and pass each end's
    HELLO to the other; return the dialler's nonce."""
    dialler.open(conn_id, True, acceptor.listen_address, 0.0, None, leaving=False)
    acceptor.open(conn_id, False, None, 0.0, None, leaving=False)
    from_dialler, from_acceptor = hello_frame(dialler), hello_frame(acceptor)
    assert isinstance(acceptor.hello(acceptor.conns[conn_id], wire.control_fields(from_dialler)), ev.Hello)
    assert isinstance(dialler.hello(dialler.conns[conn_id], wire.control_fields(from_acceptor)), ev.Hello)
    return wire.control_fields(from_dialler)["nonce"]


def resolve(links: Links, order: tuple[int, int]) -> tuple[int, int, list[Any]]:
    """Establish both connections in `order`: (survivor, retired, the LinkUp events)."""
    up = links.establish(order[0]) + links.establish(order[1])
    retire = single(take(links), Retire)
    assert_bye(retire.final)
    assert links.active == {"b" if links.name == "a" else "a": retire.successor}
    assert links.counters == Counter({C.DUPLICATE_CONNECTIONS: 1})
    return retire.successor, retire.conn, up


ORDERS = [((1, 2), (1, 2)), ((1, 2), (2, 1)), ((2, 1), (1, 2)), ((2, 1), (2, 1))]


@pytest.mark.parametrize("order_a,order_b", ORDERS)
def test_crossing_dials_leave_both_ends_on_the_connection_dialled_by_the_smaller_name(
        order_a: tuple[int, int], order_b: tuple[int, int]) -> None:
    a, b = make_links("a", seed=1), make_links("b", seed=2)
    connect(a, b, 1)  # "a" dialled connection 1
    connect(b, a, 2)  # "b" dialled connection 2
    survivor_a, retired_a, _ = resolve(a, order_a)
    survivor_b, retired_b, _ = resolve(b, order_b)
    assert (survivor_a, retired_a) == (survivor_b, retired_b) == (1, 2)


@pytest.mark.parametrize("order_a,order_b", ORDERS)
@pytest.mark.parametrize("dialler_name", ["a", "b"])
def test_two_dials_from_one_end_leave_both_ends_on_the_connection_with_the_smaller_dialler_nonce(
        order_a: tuple[int, int], order_b: tuple[int, int], dialler_name: str) -> None:
    ends = {"a": make_links("a", seed=3), "b": make_links("b", seed=4)}
    dialler, acceptor = ends[dialler_name], ends["b" if dialler_name == "a" else "a"]
    nonces = {conn_id: connect(dialler, acceptor, conn_id) for conn_id in (1, 2)}
    smaller = min(nonces, key=nonces.__getitem__)
    assert nonces[1] != nonces[2]
    survivor_a, retired_a, _ = resolve(ends["a"], order_a)
    survivor_b, retired_b, _ = resolve(ends["b"], order_b)
    assert survivor_a == survivor_b == smaller
    assert retired_a == retired_b == 3 - smaller


def test_the_end_whose_first_connection_loses_reports_the_survivor_as_a_link_up_that_is_not_fresh() -> None:
    a, b = make_links("a", seed=1), make_links("b", seed=2)
    connect(a, b, 1)
    connect(b, a, 2)
    _, _, up_b = resolve(b, (2, 1))  # b linked on 2 first, then learns 1 is the one to keep
    assert [(event.conn, event.fresh) for event in up_b] == [(2, True), (1, False)]
    _, _, up_a = resolve(a, (1, 2))  # a linked on the survivor first: nothing more to report
    assert [(event.conn, event.fresh) for event in up_a] == [(1, True)]


# ---------------------------------------------------------------------- a peer's new epoch


def test_a_hello_of_a_newer_epoch_closes_the_old_link() -> None:
    links = make_links()
    old = linked(links, 1, epoch=1)
    links.receive(1, 2.5)
    hello = greeted(links, 2, now=3.0, outbound=False, epoch=2)
    assert old.last_received == 2.5
    assert links.supersede(hello) == [
        ev.LinkDown("b", 1, ADDRESSES["b"], "peer restarted with a new epoch", ev.FAILED, 2.5)]
    # The old process, if it lives (a twin under the same name), is told who holds the name now.
    refusal = wire.encode_control(wire.KIND_REFUSE, {
        "reason": "name conflict: 'b' is held by a newer process at 10.0.0.2:7002 (epoch 2; this one's is 1)",
        "code": "name_conflict", "holder": list(ADDRESSES["b"])})
    assert take(links) == [Send((1,), refusal), CloseConnection(1, "peer restarted with a new epoch", True)]
    assert links.counters == Counter({C.LINKS_LOST: 1, C.STALE_EPOCH: 1})
    assert links.establish(2) == [ev.LinkUp("b", 2, 2, ADDRESSES["b"], None, True)]


@pytest.mark.parametrize("epoch", [1, 0])
def test_a_hello_of_the_same_or_an_older_epoch_supersedes_nothing(epoch: int) -> None:
    links = make_links()
    linked(links, 1, epoch=1)
    assert links.supersede(greeted(links, 2, outbound=False, epoch=epoch)) == []
    assert take(links) == []
    assert links.active == {"b": 1}


def test_the_hello_of_the_link_itself_and_of_an_unlinked_peer_supersede_nothing() -> None:
    links = make_links()
    assert links.supersede(greeted(links, 1, epoch=5)) == []
    links.establish(1)
    assert links.supersede(ev.Hello(1, "b", 6, ADDRESSES["b"], True, ADDRESSES["b"])) == []
    assert take(links) == []


# ---------------------------------------------------------------------- ending links


def test_close_of_the_link_reports_it_down_as_failed_since_it_was_last_heard_from() -> None:
    links = make_links()
    conn = linked(links, 1)
    links.receive(1, 1.25)
    assert links.close(conn, "misbehaved", flush=True) == [
        ev.LinkDown("b", 1, ADDRESSES["b"], "misbehaved", ev.FAILED, 1.25)]
    assert take(links) == [CloseConnection(1, "misbehaved", True)]
    assert conn.state == CLOSING and not links.linked
    assert links.counters == Counter({C.LINKS_LOST: 1})


def test_close_twice_closes_once() -> None:
    links = make_links()
    conn = linked(links, 1)
    links.close(conn, "one")
    take(links)
    assert links.close(conn, "two") == []
    assert take(links) == []
    assert links.counters[C.LINKS_LOST] == 1


def test_close_of_a_connection_that_is_not_the_link_reports_nothing_down() -> None:
    links = make_links("a")
    linked(links, 1)
    greeted(links, 2, outbound=False)
    links.establish(2)  # loses: retired
    take(links)
    assert links.close(links.conns[2], "done") == []
    assert take(links) == [CloseConnection(2, "done", False)]
    assert links.close(opened(links, 3), "never said hello") == []
    assert take(links) == [CloseConnection(3, "never said hello", False)]
    assert links.active == {"b": 1}
    assert links.counters[C.LINKS_LOST] == 0


def test_closed_by_the_driver_reports_the_link_down_now_and_the_connection_closed() -> None:
    links = make_links()
    linked(links, 1)
    assert links.closed(1, "reset by peer", 4.0) == [
        ev.LinkDown("b", 1, ADDRESSES["b"], "reset by peer", ev.FAILED, 4.0),
        ev.Closed(1, ADDRESSES["b"], True)]
    assert 1 not in links.conns and not links.linked
    assert links.counters == Counter({C.LINKS_LOST: 1})
    assert take(links) == []


def test_closed_after_close_reports_only_the_connection_closed() -> None:
    links = make_links()
    conn = linked(links, 1, outbound=False)
    links.close(conn, "done")
    assert links.closed(1, "done", 4.0) == [ev.Closed(1, None, True)]
    assert links.counters == Counter({C.LINKS_LOST: 1})


def test_closed_of_a_connection_without_hello_is_not_handshaken_and_of_an_unknown_one_is_nothing() -> None:
    links = make_links()
    opened(links, 1)
    assert links.closed(1, "timed out", 1.0) == [ev.Closed(1, ADDRESSES["b"], False)]
    assert links.closed(1, "again", 1.0) == []
    assert links.counters == Counter()


def test_closed_of_a_retired_duplicate_leaves_the_link_up() -> None:
    links = make_links("a")
    linked(links, 1)
    greeted(links, 2, outbound=False)
    links.establish(2)
    assert links.closed(2, "retired", 2.0) == [ev.Closed(2, None, True)]
    assert links.active == {"b": 1}
    assert links.counters == Counter({C.DUPLICATE_CONNECTIONS: 1})


def test_a_bye_on_the_link_reports_it_retired_by_the_peer_and_retires_it_too() -> None:
    links = make_links()
    conn = linked(links, 1)
    assert links.on_bye(conn, 5.0) == [
        ev.LinkDown("b", 1, ADDRESSES["b"], "peer retired the link", ev.PEER_RETIRED, 5.0)]
    retire = single(take(links), Retire)
    assert (retire.conn, retire.successor) == (1, None)
    assert_bye(retire.final)
    assert conn.state == RETIRING and not links.linked
    assert links.counters == Counter({C.LINKS_LOST: 1})


def with_retired_duplicate() -> Links:
    """"a" linked to "b" on connection 1, and b's second connection (2, inbound) retired as its duplicate."""
    links = make_links("a")
    linked(links, 1)
    greeted(links, 2, outbound=False)
    links.establish(2)
    take(links)
    return links


def test_a_bye_on_a_connection_already_retired_is_ignored() -> None:
    links = with_retired_duplicate()
    assert links.on_bye(links.conns[2], 5.0) == []
    assert take(links) == []
    assert links.active == {"b": 1}


def test_retire_peer_reports_the_link_pruned_and_retires_it_without_successor() -> None:
    links = make_links()
    conn = linked(links, 1)
    assert links.retire_peer("b", "not wanted", 6.0) == [
        ev.LinkDown("b", 1, ADDRESSES["b"], "not wanted", ev.PRUNED, 6.0)]
    retire = single(take(links), Retire)
    assert (retire.conn, retire.successor) == (1, None)
    assert_bye(retire.final)
    assert conn.state == RETIRING
    assert links.counters == Counter({C.LINKS_LOST: 1})
    assert links.on_bye(conn, 6.5) == []  # the peer's BYE that answers ours


def test_close_peer_closes_the_link_as_failed() -> None:
    links = make_links()
    linked(links, 1)
    links.receive(1, 0.5)
    assert links.close_peer("b", "dead") == [ev.LinkDown("b", 1, ADDRESSES["b"], "dead", ev.FAILED, 0.5)]
    assert take(links) == [CloseConnection(1, "dead", False)]
    assert links.counters == Counter({C.LINKS_LOST: 1})


def test_retire_peer_and_close_peer_of_an_unlinked_name_do_nothing() -> None:
    links = make_links()
    greeted(links, 1)  # said HELLO, never established
    assert links.retire_peer("b", "x", 1.0) == []
    assert links.close_peer("b", "x") == []
    assert links.close_peer("nobody", "x") == []
    assert take(links) == []
    assert links.conns[1].state == ACTIVE


# ---------------------------------------------------------------------- refusals and protocol errors


def test_refuse_full_sends_the_hints_and_closes_after_the_refuse_without_a_link_down() -> None:
    links = make_links()
    greeted(links, 1, outbound=False)
    hints = [["c", list(ADDRESSES["c"]), 3]]
    assert links.refuse_full(links.conns[1], "a is at maxPeers (12)", hints) is None
    send, close = take(links)
    assert send.conns == (1,) and wire.kind(send.data) == wire.KIND_REFUSE
    assert wire.control_fields(send.data) == {"reason": "a is at maxPeers (12)", "code": "full",
                                              "peers": hints}
    assert close == CloseConnection(1, "at maxPeers", True)
    assert links.counters == Counter()


def test_refuse_of_an_established_link_reports_it_down() -> None:
    links = make_links()
    linked(links, 1)
    events = links.refuse(links.conns[1], "stale epoch", C.STALE_EPOCH)
    assert [event.cause for event in events] == [ev.FAILED]
    assert [type(action) for action in take(links)] == [ReportError, Send, CloseConnection]
    assert links.counters == Counter({C.STALE_EPOCH: 1, C.LINKS_LOST: 1})


def test_a_full_refusal_returns_refused_with_the_hints_counts_turned_away_and_closes() -> None:
    links = make_links()
    conn = opened(links, 1)
    hints = [["c", list(ADDRESSES["c"]), 3]]
    assert links.on_refuse(conn, {"reason": "b is full", "code": "full", "peers": hints}) == [
        ev.Refused(None, ADDRESSES["b"], "b is full", True, hints)]
    assert take(links) == [CloseConnection(1, "turned away: b is full", False)]
    assert links.counters == Counter({C.TURNED_AWAY_FULL: 1})


def test_a_full_refusal_after_the_handshake_names_the_peer_and_takes_the_link_down() -> None:
    links = make_links()
    conn = linked(links, 1)
    assert links.on_refuse(conn, {"reason": "full", "code": "full", "peers": []}) == [
        ev.Refused("b", ADDRESSES["b"], "full", True, []),
        ev.LinkDown("b", 1, ADDRESSES["b"], "turned away: full", ev.FAILED, 0.0)]
    assert links.counters == Counter({C.TURNED_AWAY_FULL: 1, C.LINKS_LOST: 1})


def test_a_hard_refusal_returns_refused_counts_refused_by_peer_and_closes() -> None:
    links = make_links()
    conn = opened(links, 1, outbound=False)
    assert links.on_refuse(conn, {"reason": "cluster name 'x' differs from 'y'"}) == [
        ev.Refused(None, None, "cluster name 'x' differs from 'y'", False, [])]
    assert take(links) == [CloseConnection(1, "refused by peer: cluster name 'x' differs from 'y'", False)]
    assert links.counters == Counter({C.REFUSED_BY_PEER: 1})


def test_a_refusal_reason_is_made_a_string_cut_to_300_characters_or_defaulted() -> None:
    links = make_links()
    long = links.on_refuse(opened(links, 1), {"reason": "x" * 1000})[0]
    assert long.reason == "x" * 300
    assert links.on_refuse(opened(links, 2), {"reason": 12})[0].reason == "12"
    assert links.on_refuse(opened(links, 3), {"code": "other"})[0] == ev.Refused(
        None, ADDRESSES["b"], "no reason given", False, [])
    assert links.counters == Counter({C.REFUSED_BY_PEER: 3})


@pytest.mark.parametrize("setup,who", [
    (lambda links: linked(links, 1), "b"),
    (lambda links: opened(links, 1), "10.0.0.2:7002"),
    (lambda links: opened(links, 1, outbound=False), "inbound peer"),
])
def test_a_protocol_error_is_reported_and_closes_the_connection(setup: Any, who: str) -> None:
    links = make_links()
    conn = setup(links)
    events = links.protocol_error(conn, "bad frame")
    assert take(links) == [ReportError("protocol", f"closing link to {who}: bad frame"),
                           CloseConnection(1, "bad frame", False)]
    assert [event.cause for event in events] == ([ev.FAILED] if who == "b" else [])
    assert links.counters[C.PROTOCOL_ERRORS] == 1


# ---------------------------------------------------------------------- time


def test_a_connection_without_hello_is_closed_after_the_handshake_timeout() -> None:
    links = make_links(handshake_timeout=2.0)
    opened(links, 1, now=10.0)
    assert links.tick(12.0) == []
    assert take(links) == []
    assert links.tick(12.01) == []
    assert take(links) == [CloseConnection(1, "no handshake within 2s", False)]
    assert links.counters == Counter({C.HANDSHAKE_TIMEOUTS: 1})


def test_a_link_silent_for_the_failure_timeout_is_closed_and_reported_down() -> None:
    links = make_links(failure_timeout=3.0)
    linked(links, 1)
    links.receive(1, 2.0)
    links.tick(5.0)  # silent for exactly 3 s: still alive (a PING goes out)
    assert [type(action) for action in take(links)] == [Send]
    assert links.tick(5.5) == [ev.LinkDown("b", 1, ADDRESSES["b"], "silent for 3s", ev.FAILED, 2.0)]
    assert take(links) == [CloseConnection(1, "silent for 3s", False)]
    assert links.counters == Counter({C.FAILURE_TIMEOUTS: 1, C.LINKS_LOST: 1})


def test_a_silent_retired_connection_is_closed_without_a_link_down() -> None:
    links = with_retired_duplicate()
    links.receive(1, 3.0)
    assert links.tick(3.5) == []
    close, ping = take(links)
    assert close == CloseConnection(2, "silent for 3s", False)
    assert ping.conns == (1,)  # the link, idle since it opened
    assert links.active == {"b": 1}
    assert links.counters[C.FAILURE_TIMEOUTS] == 1


def test_a_connection_closed_for_silence_is_counted_once_while_the_driver_closes_it() -> None:
    links = make_links(failure_timeout=3.0)
    linked(links, 1)
    links.tick(3.5)
    take(links)
    assert links.tick(3.6) == []
    assert take(links) == []
    assert links.counters[C.FAILURE_TIMEOUTS] == 1


def test_pings_go_out_on_links_idle_for_a_third_of_the_failure_timeout_in_one_send() -> None:
    links = make_links(failure_timeout=3.0)
    linked(links, 1, now=0.0)
    linked(links, 2, now=0.5, name="c")
    opened(links, 3, now=0.0, peer="c")  # still in the handshake: no PING
    for conn_id in (1, 2):
        links.receive(conn_id, 1.2)
    assert links.tick(0.99) == []
    assert take(links) == []
    links.tick(1.0)
    send = single(take(links), Send)
    assert send.conns == (1,)
    assert wire.kind(send.data) == wire.KIND_PING and wire.control_fields(send.data) == {}
    links.tick(1.6)
    assert single(take(links), Send).conns == (2,)
    links.tick(2.0)
    assert single(take(links), Send).conns == (1,)
    assert links.counters == Counter()


def test_no_ping_goes_out_on_a_fresh_link_nor_on_a_retiring_one() -> None:
    links = make_links("a", failure_timeout=3.0)
    linked(links, 1, now=0.0)
    greeted(links, 2, outbound=False, now=0.0)
    links.establish(2)  # retired
    take(links)
    linked(links, 3, now=1.0, name="c")  # fresh
    links.tick(1.5)
    assert single(take(links), Send).conns == (1,)


# ---------------------------------------------------------------------- a name held by another process


def conflict_refusal(holder: Any = ("10.0.0.8", 7008)) -> dict[str, Any]:
    """The fields of the REFUSE a peer sends the older of two processes of one name (`supersede`)."""
    newer = make_links("c")
    linked(newer, 1, name="b", epoch=1)
    newer.supersede(greeted(newer, 2, outbound=False, name="b", epoch=2, address=list(holder)))
    refuse = next(a for a in take(newer) if isinstance(a, Send) and wire.kind(a.data) == wire.KIND_REFUSE)
    return wire.control_fields(refuse.data)


def test_supersede_tells_the_older_process_who_holds_its_name_with_code_name_conflict() -> None:
    fields = conflict_refusal(("10.0.0.8", 7008))
    assert fields["code"] == "name_conflict" and fields["holder"] == ["10.0.0.8", 7008]
    assert "10.0.0.8:7008" in fields["reason"]


def test_a_name_conflict_refusal_sets_name_conflict_and_reports_it_once_for_several_refusals() -> None:
    fields = conflict_refusal(("10.0.0.8", 7008))
    links = make_links("b")  # the older process of b, linked to a and c
    linked(links, 1, name="a")
    linked(links, 2, name="c")
    events = links.on_refuse(links.conns[1], fields)
    assert events[0] == ev.Refused("a", ADDRESSES["a"], fields["reason"], False, [], True, ("10.0.0.8", 7008))
    assert [type(event) for event in events[1:]] == [ev.LinkDown]
    assert links.name_conflict == {"holder": ["10.0.0.8", 7008], "peer": "a", "reason": fields["reason"]}
    report, close = take(links)
    assert isinstance(report, ReportError) and report.code == "name_conflict"
    assert "'b'" in report.text and "10.0.0.8:7008" in report.text
    assert isinstance(close, CloseConnection) and close.conn == 1
    # The other peer refuses too (and a redial is refused again): counted, not reported again.
    links.on_refuse(links.conns[2], fields)
    links.on_refuse(opened(links, 3, peer="a"), fields)
    actions = take(links)
    assert not any(isinstance(a, ReportError) for a in actions), actions
    assert links.counters[C.NAME_CONFLICTS] == 3
    # It stands, as the latest refusal gave it (the redial's, in the handshake: no peer name yet).
    assert links.name_conflict == {"holder": ["10.0.0.8", 7008], "peer": None, "reason": fields["reason"]}


def test_a_name_conflict_without_a_usable_holder_still_counts_and_reports() -> None:
    links = make_links("b")
    conn = linked(links, 1, name="a")
    refused = links.on_refuse(conn, {"code": "name_conflict", "reason": "held", "holder": ["x"]})[0]
    assert refused.conflict and refused.holder is None
    assert links.name_conflict == {"holder": None, "peer": "a", "reason": "held"}
    report = take(links)[0]
    assert report.code == "name_conflict" and "an address the peer did not give" in report.text


def test_a_refusal_of_another_code_is_no_name_conflict() -> None:
    links = make_links("b")
    refused = links.on_refuse(linked(links, 1, name="a"), {"code": "stale", "reason": "old",
                                                           "holder": ["10.0.0.8", 7008]})[0]
    assert not refused.conflict
    assert links.name_conflict is None and links.counters[C.NAME_CONFLICTS] == 0
    assert not any(isinstance(a, ReportError) for a in take(links))


def test_a_link_made_does_not_clear_the_name_conflict_and_a_later_conflict_is_not_reported_again() -> None:
    # The conflict stands until a peer confirms a link with us (its PEERS: state.py clears it then); a
    # link made on a redial is the refused node admitting the peer's HELLO, before the peer refuses it.
    fields = conflict_refusal()
    links = make_links("b")
    links.on_refuse(linked(links, 1, name="a"), fields)
    take(links)
    greeted(links, 2, name="c")
    links.establish(2)
    assert links.name_conflict is not None
    take(links)
    links.on_refuse(links.conns[2], fields)
    assert [a for a in take(links) if isinstance(a, ReportError)] == []
    assert links.name_conflict is not None and links.counters[C.NAME_CONFLICTS] == 2
    links.name_conflict = None  # what state.py does when a peer confirms a link
    links.on_refuse(linked(links, 3, name="d"), fields)
    assert [a.code for a in take(links) if isinstance(a, ReportError)] == ["name_conflict"]


def test_a_node_refused_for_a_name_conflict_is_not_ready_and_says_so_in_its_status() -> None:
    net = MemNet(seed=7)
    net.add_node("a")
    net.add_node("b", seeds=["a"])
    assert net.run_until_true(lambda: net.state("b").ready and "b" in net.state("a").linked_peers, 5.0)
    assert net.state("b").status()["name_conflict"] is None
    # A second process called b (a newer epoch, at another address) says HELLO to a: a takes it, and
    # tells the old b why it loses its link.
    twin = net.raw_dial("a")
    twin.send(wire.encode_control(wire.KIND_HELLO, {
        "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": "b", "epoch": 2,
        "address": ["10.9.9.9", 7000], "nonce": 99}))
    net.run_for(0.5)
    b = net.state("b")
    assert not b.ready and b.status()["ready"] is False
    conflict = b.status()["name_conflict"]
    assert conflict is not None and conflict["holder"] == ["10.9.9.9", 7000] and conflict["peer"] == "a"
    reports = net.errors_of("b", "name_conflict")
    assert reports and "10.9.9.9:7000" in reports[0]
    net.run_for(2.0)  # b redials a, which refuses it again (a stale epoch): b stays not ready
    assert not net.state("b").ready and net.state("b").status()["name_conflict"] is not None
    assert net.state("b").status()["counters"][C.NAME_CONFLICTS] >= 2


def test_a_name_conflict_is_reported_once_while_redials_are_refused() -> None:
    net = MemNet(seed=7)
    net.add_node("a")
    net.add_node("b", seeds=["a"])
    assert net.run_until_true(lambda: net.state("b").ready and "b" in net.state("a").linked_peers, 5.0)
    twin = net.raw_dial("a")
    twin.send(wire.encode_control(wire.KIND_HELLO, {
        "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": "b", "epoch": 2,
        "address": ["10.9.9.9", 7000], "nonce": 99}))
    net.run_for(5.0)
    assert net.state("b").status()["counters"][C.NAME_CONFLICTS] >= 3  # refused on every redial
    assert len(net.errors_of("b", "name_conflict")) == 1
