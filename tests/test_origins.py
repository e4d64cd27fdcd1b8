"""The signed-origins sub-machine (`swarm/protocol/origins.py`), fed events, its actions checked, with the
real authenticator (`swarm.transport.origin_auth`, real keys and certificates from `swarm.certs`).

What the process-level test (tests/test_rogue.py) cannot easily reach is here: a replayed frame of an
older epoch, an origin whose certificate is not known yet (asked for, then checked), how certificates
are passed on, the rate of reports, and a node without `tls` doing nothing at all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from swarm import certs
from swarm import counters as C
from swarm.errors import ProtocolError
from swarm.protocol import wire
from swarm.protocol.actions import ReportError, Send
from swarm.protocol.events import LinkDown, LinkUp
from swarm.protocol.origins import Origins
from swarm.topology import ring
from swarm.transport.origin_auth import OriginAuthenticator

CA_KEY, CA_CERT = certs.make_ca()
NODES = {name: certs.make_node_certificate(name, CA_KEY, CA_CERT) for name in ("me", "a", "b")}


def chain(name: str) -> list[bytes]:
    return [NODES[name][1].public_bytes(serialization.Encoding.DER)]


def authenticator(name: str) -> OriginAuthenticator:
    key, certificate = NODES[name]
    return OriginAuthenticator(key, [certificate], [CA_CERT])


def origins(name: str = "me") -> tuple[Origins, Counter[str], list[Any]]:
    counters: Counter[str] = Counter()
    out: list[Any] = []
    return Origins(authenticator(name), counters=counters, out=out), counters, out


def signed_frame(origin: str, epoch: int = 5, seq: int = 1, message: Any = "hi") -> bytes:
    entry = wire.encode_entry(wire.encode_topic("t"), wire.encode_message(message), 1 << 20)
    frame = wire.encode_batch(wire.encode_origin(origin), epoch, seq, [entry])
    return wire.with_signature(frame, authenticator(origin).sign(wire.signed_pieces(frame)))


def certs_frames(out: list[Any]) -> list[tuple[tuple[int, ...], dict[str, Any]]]:
    return [(action.conns, wire.control_fields(action.data)) for action in out
            if isinstance(action, Send) and wire.kind(action.data) == wire.KIND_CERTS]


def link(part: Origins, name: str, conn: int) -> None:
    part.link_up(LinkUp(name, conn, 1, ("127.0.0.1", 1000 + conn), None))


def test_a_frame_signed_by_its_origin_passes_and_one_signed_by_another_does_not() -> None:
    part, counters, out = origins()
    part.auth.learn(chain("a"))
    assert part.check_frame(signed_frame("a"), 1, b"b", 0.0)
    # b signs a frame that names a as its origin: well formed, signed, not by a.
    frame = wire.encode_batch(wire.encode_origin("a"), 5, 2, [wire.encode_entry(
        wire.encode_topic("t"), wire.encode_message("forged"), 1 << 20)])
    frame = wire.with_signature(frame, authenticator("b").sign(wire.signed_pieces(frame)))
    assert not part.check_frame(frame, 1, b"b", 0.0)
    assert counters[C.FORGED_FRAMES_REFUSED] == 1
    altered = bytearray(signed_frame("a", seq=3, message="original"))
    altered[-70] ^= 1  # a byte of the message, before the 64-byte signature and its length
    assert not part.check_frame(bytes(altered), 1, b"b", 0.0)
    assert counters[C.FORGED_FRAMES_REFUSED] == 2
    reports = [action for action in out if isinstance(action, ReportError)]
    assert len(reports) == 1 and reports[0].code == "unverified" and "b (origin a" in reports[0].text


def test_a_replay_of_an_older_epoch_is_refused_once_a_newer_one_was_verified() -> None:
    part, counters, _ = origins()
    part.auth.learn(chain("a"))
    old = signed_frame("a", epoch=5, seq=9)
    assert part.check_frame(signed_frame("a", epoch=6, seq=1), 1, b"b", 0.0)  # a restarted
    assert not part.check_frame(old, 1, b"b", 0.0)
    assert counters[C.STALE_FRAMES_REFUSED] == 1 and counters[C.FORGED_FRAMES_REFUSED] == 0
    assert part.check_frame(signed_frame("a", epoch=6, seq=2), 1, b"b", 0.0)


def test_an_unknown_origin_is_dropped_asked_for_once_and_checked_once_its_chain_comes() -> None:
    part, counters, out = origins()
    link(part, "b", 1)
    link(part, "a", 2)
    out.clear()
    assert not part.check_frame(signed_frame("a"), 1, b"b", 0.0)
    assert not part.check_frame(signed_frame("a", seq=2), 1, b"b", 0.1)
    assert counters[C.UNVERIFIED_FRAMES_DROPPED] == 2
    assert certs_frames(out) == [((1,), {"want": ["a"]})]  # asked of the relay, once
    out.clear()
    part.on_certs(1, "b", {"chains": [chain("a")]})
    assert counters[C.CERTIFICATES_LEARNT] == 1
    assert certs_frames(out) == [((2,), {"chains": [chain("a")]})]  # passed on, not back to b
    assert part.check_frame(signed_frame("a", seq=3), 1, b"b", 0.2)
    out.clear()
    part.on_certs(2, "a", {"chains": [chain("a")]})  # known already: not passed on again
    assert certs_frames(out) == []


def test_a_new_link_gets_every_chain_held_ours_first_and_a_want_is_answered() -> None:
    part, _, out = origins()
    part.auth.learn(chain("a"))
    link(part, "b", 3)
    ((conns, fields),) = certs_frames(out)
    assert conns == (3,) and fields["chains"][0] == chain("me") and chain("a") in fields["chains"]
    out.clear()
    part.on_certs(3, "b", {"want": ["a", "nobody"]})
    assert certs_frames(out) == [((3,), {"chains": [chain("a")]})]
    part.link_down(LinkDown("b", 3, ("127.0.0.1", 1003), "closed", "failed", 1.0))
    out.clear()
    part.announce(chain("me"))
    assert out == []  # no link left to tell


def test_chains_that_do_not_check_out_are_refused_and_a_malformed_certs_is_a_protocol_error() -> None:
    part, counters, out = origins()
    link(part, "b", 1)
    out.clear()
    other_key, other_ca = certs.make_ca("another CA")
    stranger = certs.make_node_certificate("a", other_key, other_ca)[1]
    part.on_certs(1, "b", {"chains": [[stranger.public_bytes(serialization.Encoding.DER)], [b"junk"], "x"]})
    assert counters[C.CERTIFICATES_REFUSED] == 3 and counters[C.CERTIFICATES_LEARNT] == 0
    assert certs_frames(out) == []
    with pytest.raises(ProtocolError):
        part.on_certs(1, "b", {"chains": "not a list"})


def test_refusals_are_reported_at_most_once_a_second_with_exact_counts_per_relay() -> None:
    part, _, out = origins()
    for seq in range(1, 4):
        part.check_frame(signed_frame("a", seq=seq), 1, b"b", 0.1 * seq)  # unknown origin: dropped
    part.check_frame(signed_frame("a", seq=4), 2, b"c", 0.5)
    reports = [action for action in out if isinstance(action, ReportError)]
    assert len(reports) == 1 and "1 frame(s)" in reports[0].text  # the first, at once
    part.report(0.9)
    assert len([action for action in out if isinstance(action, ReportError)]) == 1
    part.report(1.2)
    reports = [action for action in out if isinstance(action, ReportError)]
    assert len(reports) == 2 and reports[1].text.startswith("3 frame(s)")
    assert "2 of b (origin a" in reports[1].text and "1 of c (origin a" in reports[1].text


def test_leave_and_peer_record_claims_check_only_for_the_node_they_name() -> None:
    part, _, _ = origins()
    part.auth.learn(chain("a"))
    claim = wire.leave_claim("a", 5, ["127.0.0.1", 1])
    assert part.check_claim("a", claim, authenticator("a").sign((claim,)))
    assert not part.check_claim("a", claim, authenticator("b").sign((claim,)))
    assert not part.check_claim("a", claim, None) and not part.check_claim("b", claim, b"x" * 64)
    record = part.record("me", ("127.0.0.1", 9), 3)
    assert record is not None and authenticator("a").verify(
        b"me", (wire.peer_claim("me", ["127.0.0.1", 9], 3),), record) is None  # a does not know me
    assert authenticator("me").verify(b"me", (wire.peer_claim(
        "me", ["127.0.0.1", 9], 3),), record)


def test_without_an_authenticator_nothing_is_signed_checked_or_sent() -> None:
    counters: Counter[str] = Counter()
    out: list[Any] = []
    part = Origins(None, counters=counters, out=out)
    assert part.frame_hooks() == {} and part.claim_hooks() == {}
    assert part.record("me", ("127.0.0.1", 9), 3) is None
    link(part, "b", 1)
    part.on_certs(1, "b", {"chains": [chain("a")], "want": ["a"]})
    part.learn_link_certificate(chain("a")[0])
    part.report(5.0)
    assert out == [] and not counters


def test_a_frame_from_its_origin_itself_is_not_checked_again_and_goes_on_with_its_signature() -> None:
    part, counters, _ = origins()  # (a's certificate is not even known: nothing is verified)
    frame = signed_frame("a")
    assert part.check_frame(frame, 1, b"a", 0.0)  # its TLS link vouches for who wrote it
    assert counters[C.UNVERIFIED_FRAMES_DROPPED] == 0
    assert not part.check_frame(frame, 2, b"b", 0.0)  # the same bytes from a relay are checked
    assert not part.check_frame(signed_frame("a", epoch=4), 1, b"a", 0.0)  # (and epochs still are)
    unsigned = wire.encode_batch(wire.encode_origin("a"), 5, 2, [wire.encode_entry(
        wire.encode_topic("t"), wire.encode_message("no signature"), 1 << 20)])
    assert not part.check_frame(unsigned, 1, b"a", 0.0)  # what the next hops would refuse, refused here


# ---------------------------------------------------------------------- a joiner turned away (whole cores)


def test_a_joiner_turned_away_by_a_full_seed_learns_the_hints_certificates_and_joins() -> None:
    # The 5-node ring of benchmarks/tls_cost.py: maxPeers 2, every node seeded with node-0 only. Once
    # node-0 holds the links to its two ring neighbours, the other two joiners are turned away with
    # hints of those neighbours, whose records are signed. A joiner with no link has learnt no
    # certificate: without the REFUSE's chains it refused every hint (`peer_records_refused`), nobody
    # else heard of it (PEERS name linked members only), and it dialled the full seed for ever.
    from memnet import MemNet

    ca_key, ca_cert = certs.make_ca()
    names = [f"node-{index}" for index in range(5)]
    order = sorted(names, key=ring.position)
    at = order.index("node-0")
    neighbours = {order[at - 1], order[(at + 1) % len(order)]}
    net = MemNet(seed=3)
    for group in (["node-0"], sorted(neighbours), sorted(set(names) - neighbours - {"node-0"})):
        for name in group:
            key, certificate = certs.make_node_certificate(name, ca_key, ca_cert)
            net.add_node(name, seeds=[] if name == "node-0" else ["node-0"], max_peers=2, local_links=2,
                         shortcuts=0, minimum_peers=2,
                         authenticator=OriginAuthenticator(key, [certificate], [ca_cert]))
        net.run_for(3.0)  # node-0 full with its neighbours before the last two come
    net.run_for(10.0)
    for name in set(names) - neighbours - {"node-0"}:
        assert net.state(name).counters[C.TURNED_AWAY_FULL] > 0, name  # the case this is about
    for name in names:
        state = net.state(name)
        assert state.ready, (name, dict(state.counters))
        assert state.counters[C.PEER_RECORDS_REFUSED] == 0, (name, dict(state.counters))
