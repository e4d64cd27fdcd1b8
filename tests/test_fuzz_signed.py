"""Hostile signed frames against a live TLS node with signed origins, over real TLS sockets on 127.0.0.1.

The fuzzer is a member of the cluster: it holds a valid certificate of its own name, completes the TLS
handshake and a HELLO, then sends mutated frames made from valid signed ones, one at a time, each
followed by a CERTS `want` that the target answers (so every case is read before the next is sent, and
a case that got the link closed is seen at once and the fuzzer dials again): DATA and DIRECT frames it
signs under its own name and under others' (the honest node's, the target's, unknown names), the honest
node's genuine frames as the target relays them to it, all with bytes flipped in the header, the entries,
the signature or its length byte, trailers cut short, sig_len oversized; CERTS with random DER, another
CA's valid chains, huge lists, wrong types; LEAVE and PEERS with random signatures and records; HELLOs
with a random record.

An honest TLS node publishes (and sends direct messages to the target) throughout. The target must never
break (`internal_errors`), keep its link to the honest node, deliver each honest message once and in
order, and deliver nothing made by the fuzzer under a name other than its own; its refusal counters show
the cases reached the checks. Seeded and bounded: `SWARM_FUZZ_SIGNED_CASES` cases (default 300), each
network wait under `trio.fail_after`.
"""

from __future__ import annotations

import datetime
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_tls import HOST, Pki, tls_options

import swarm
from swarm import certs
from swarm.config import TlsFiles
from swarm.protocol import wire
from swarm.protocol.framing import FrameReader
from swarm.transport import tls
from swarm.transport.origin_auth import OriginAuthenticator

CASES = int(os.environ.get("SWARM_FUZZ_SIGNED_CASES", "300"))
SEED = int(os.environ.get("SWARM_FUZZ_SEED", "20261207"))
TOPIC = "t"
FUZZER = "fuzzer"
WAIT = 10.0  # bound of each network wait (a case's answer, a handshake, the honest traffic's arrival)
HONEST_EVERY = 4  # cases between two honest messages (one in two of them also sent direct)
PAD = "honest-" + "p" * 40  # in every honest message: any byte changed in it shows as a different message


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def der_of(path: str) -> list[bytes]:
    with open(path, "rb") as handle:
        found = x509.load_pem_x509_certificates(handle.read())
    return [certificate.public_bytes(serialization.Encoding.DER) for certificate in found]


def duplicate_san_certificate(name: str) -> bytes:
    """A DER certificate with two subjectAltName extensions (an issuerAltName whose OID is rewritten):
    well-formed DER that x509 parsing refuses only when its extensions are read."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    der = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
           .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
           .not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"swarm:{name}")]),
                          False)
           .add_extension(x509.IssuerAlternativeName([x509.UniformResourceIdentifier("swarm:x")]), False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    issuer_alt_name, subject_alt_name = bytes.fromhex("0603551d12"), bytes.fromhex("0603551d11")
    assert der.count(issuer_alt_name) == 1
    return der.replace(issuer_alt_name, subject_alt_name)


def random_value(rng: random.Random, depth: int = 0) -> object:
    choices: list[Callable[[], object]] = [
        lambda: rng.randrange(-(1 << 63), 1 << 63), lambda: rng.random(), lambda: None, lambda: True,
        lambda: "s" * rng.randrange(20), lambda: rng.randbytes(rng.choice([0, 1, 63, 64, 65, 200])),
    ]
    if depth < 2:
        choices += [lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
                    lambda: {str(i): random_value(rng, depth + 1) for i in range(rng.randrange(3))}]
    return rng.choice(choices)()


def framed(body_and_trailer: bytes) -> bytes:
    """A whole frame from everything after its length prefix (kind byte first)."""
    return wire.LENGTH.pack(len(body_and_trailer)) + body_and_trailer


def flip(frame: bytearray, start: int, end: int, rng: random.Random) -> None:
    """Change one to three bytes of `frame[start:end]` (each to another value)."""
    if end <= start:
        return
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(start, end)
        frame[at] ^= rng.randrange(1, 256)


def regions(frame: bytes) -> tuple[int, int, int]:
    """(where the origin starts, where the first entry (DATA) or the topic (DIRECT) starts, where the
    signature starts), as body offsets (kind byte at 0): the mutations aim at one region at a time."""
    if wire.kind(frame) == wire.KIND_DATA:
        origin_at = 6
    else:
        origin_at = 7 + frame[6]  # after the target
    header = wire.parse_data_header(frame, origin_at, counted=wire.kind(frame) == wire.KIND_DATA)
    return origin_at - 4, header.topic_offset - 4, len(frame) - 5 - frame[-1]


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """A signed DATA or DIRECT frame with one kind of damage; its length prefix stays right, so that the
    link's framing holds and the frame reaches the checks.

    The kind byte and a DIRECT's target are left alone, so that a DIRECT for another node is routed on:
    the target relays it only if it is whole (else it closes its link to the fuzzer), and the honest
    node, its next hop, refuses what is signed wrong without closing its link to the honest relay."""
    body = bytearray(frame[4:])  # kind byte first, signature trailer last
    origin, head, trailer = regions(frame)
    damage = rng.randrange(9)
    if damage == 0:
        flip(body, origin, head, rng)  # origin length, origin, epoch, seq (count, target_epoch)
    elif damage == 1:
        flip(body, head, trailer, rng)  # the entries: topics, lengths, messages
    elif damage == 2:
        flip(body, trailer, len(body) - 1, rng)  # the signature
    elif damage == 3:
        body[-1] ^= rng.randrange(1, 256)  # sig_len
    elif damage == 4:  # the trailer cut short (sig_len kept, or the cut made the end)
        del body[len(body) - rng.randrange(1, len(body) - trailer + 1):]
    elif damage == 5:
        body[-1] = rng.choice([255, len(body) - 1, len(body) - 2, len(body), trailer + 1]) % 256  # oversized
    elif damage == 6:  # another signature, of any length 0..255
        signature = rng.randbytes(rng.choice([0, 1, 32, 63, 64, 65, 255]))
        body = body[:trailer] + signature + bytes((len(signature),))
    elif damage == 7:
        body[1] ^= rng.randrange(1, 256)  # the hop count, which no signature covers
        flip(body, origin, len(body), rng)
    else:
        flip(body, origin, len(body), rng)  # several regions at once
        body[-1] ^= rng.randrange(0, 256)
    return framed(bytes(body))


class Fuzzer:
    """A member with a valid certificate of its own name, which writes hand-made frames."""

    def __init__(self, files: dict[str, str], target: tuple[str, int]) -> None:
        tls_files = TlsFiles(files["ca"], files["cert"], files["key"])
        self.setup = tls.load(tls_files)
        self.auth = OriginAuthenticator.from_tls(self.setup)
        self.target = target
        self.epoch = 1000
        self.seq = 0  # our own DATA stream's last number
        self.direct_seq = 0
        self.stream: trio.SSLStream[trio.SocketStream] | None = None
        self.closed = True
        self.answers = 0  # CERTS frames received on the current link
        self.linked = False
        self.captured: list[bytes] = []  # the honest node's DATA frames the target relayed to us
        self.connections = 0
        self.closures = 0

    def sign(self, frame: bytes) -> bytes:
        return wire.with_signature(frame, self.auth.sign(wire.signed_pieces(frame)))

    def hello(self, record: object) -> bytes:
        return wire.encode_control(wire.KIND_HELLO, {
            "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": FUZZER, "epoch": self.epoch,
            "address": [HOST, 9], "nonce": random.getrandbits(63), "record": record})

    def record(self) -> bytes:
        return self.auth.sign((wire.peer_claim(FUZZER, [HOST, 9], self.epoch),))

    async def connect(self, nursery: trio.Nursery, record: object | None = None) -> None:
        """Dial the target, finish TLS and the HELLO exchange (a random `record` if given)."""
        self.connections += 1
        with trio.fail_after(WAIT):
            tcp = await trio.open_tcp_stream(*self.target)
            stream = trio.SSLStream(tcp, self.setup.client, server_hostname=None)
            await stream.do_handshake()
            self.stream, self.closed, self.linked, self.answers = stream, False, False, 0
            nursery.start_soon(self.read, stream)
            await stream.send_all(self.hello(self.record() if record is None else record)
                                  + wire.encode_control(wire.KIND_PEERS, {"peers": [], "want": True}))
            while not (self.linked or self.closed):
                await trio.sleep(0.002)

    async def read(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        reader = FrameReader(wire.max_frame_body(1 << 20), whole=True)
        try:
            while data := await stream.receive_some(65536):
                for frame in reader.feed(data):
                    kind = wire.kind(frame)
                    if kind == wire.KIND_HELLO:
                        self.linked = True
                    elif kind == wire.KIND_CERTS:
                        self.answers += 1
                    elif kind == wire.KIND_DATA and wire.data_stream(frame)[0] == b"honest":
                        self.captured = [*self.captured[-31:], frame]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if stream is self.stream:
                self.closed = True
            await trio.aclose_forcefully(stream)

    async def send_case(self, nursery: trio.Nursery, case: bytes) -> None:
        """Send one case and a `want` behind it; return once the target answered it (the case was read
        and handled) or closed the link (then dial again, for the next case)."""
        if self.closed:
            await self.connect(nursery)
        assert self.stream is not None
        answers = self.answers
        probe = wire.encode_control(wire.KIND_CERTS, {"want": ["honest"]})
        with trio.fail_after(WAIT):
            try:
                await self.stream.send_all(case + probe)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True
            while self.answers == answers and not self.closed:
                await trio.sleep(0.001)
        if self.closed:
            self.closures += 1


class Cases:
    """The hostile frames, from a seeded generator and what the cluster looks like now."""

    def __init__(self, rng: random.Random, fuzzer: Fuzzer, honest_epoch: int, chains: dict[str, list[bytes]],
                 weird: list[bytes]) -> None:
        self.rng, self.fuzzer, self.honest_epoch = rng, fuzzer, honest_epoch
        self.chains, self.weird = chains, weird
        self.number = 0

    def marker(self, claimed: str) -> dict[str, Any]:
        self.number += 1
        return {"fuzz": True, "as": claimed, "n": self.number}

    def data(self, name: str, epoch: int, seq: int) -> bytes:
        rng = self.rng
        entries = [wire.encode_entry(wire.encode_topic(rng.choice([TOPIC, TOPIC, "other", 7])),
                                     wire.encode_message(self.marker(name)), 1 << 20)
                   for _ in range(rng.choice([1, 1, 2, 5]))]
        return self.fuzzer.sign(wire.encode_batch(wire.encode_origin(name), epoch, seq, entries))

    def direct(self, name: str, epoch: int, seq: int, target: str = "target") -> bytes:
        return self.fuzzer.sign(wire.encode_direct(
            wire.encode_origin(target), wire.encode_origin(name), epoch, seq, wire.encode_topic(TOPIC),
            wire.encode_message(self.marker(name)), 1 << 20))

    def forged_name(self) -> tuple[str, int, int]:
        """Another's name with an epoch and number that would take a genuine message's place (or replay
        an older epoch), or a name nobody holds a certificate of."""
        rng = self.rng
        name = rng.choice(["honest", "honest", "honest", "target", "ghost", "carol", "mallory"])
        epoch = self.honest_epoch + rng.choice([0, 0, 0, -1, 1]) if name == "honest" else rng.randrange(1, 99)
        return name, epoch, rng.randrange(1, 40)

    def payload(self) -> bytes:
        rng, fuzzer = self.rng, self.fuzzer
        family = rng.randrange(6)
        if family == 0:  # our own stream, signed right: may be delivered, as any member's
            fuzzer.seq += 1
            frame = self.data(FUZZER, fuzzer.epoch, fuzzer.seq)
        elif family == 1:
            fuzzer.direct_seq += 1
            frame = self.direct(FUZZER, fuzzer.epoch, fuzzer.direct_seq,
                                target=rng.choice(["target", "target", "honest", "nobody"]))
        elif family == 2:
            frame = self.data(*self.forged_name())
        elif family == 3:
            frame = self.direct(*self.forged_name())
        elif family == 4 and fuzzer.captured:  # the honest node's own signature, on damaged bytes
            return mutate(rng.choice(fuzzer.captured), rng)
        else:
            frame = self.data(*self.forged_name())
        if family <= 1 and rng.random() < 0.3:
            return frame  # signed right
        return mutate(frame, rng)

    def certs(self) -> bytes:
        rng = self.rng
        chains = self.chains
        shape = rng.randrange(10)
        fields: dict[str, Any]
        if shape == 0:
            fields = {"chains": [[rng.randbytes(rng.randrange(0, 600))] for _ in range(rng.randrange(1, 4))]}
        elif shape == 1:  # valid chains of another CA, and one naming a node of ours
            fields = {"chains": [chains["mallory"], chains["honest-other-ca"]]}
        elif shape == 2:  # a genuine chain with bytes flipped
            der = bytearray(rng.choice([chains["honest"], chains["carol"]])[0])
            flip(der, 0, len(der), rng)
            fields = {"chains": [[bytes(der)]]}
        elif shape == 3:  # huge lists
            fields = {"chains": [[rng.randbytes(8)] for _ in range(2000)],
                      "want": [f"n{i}" for i in range(3000)]}
        elif shape == 4:  # a chain too long, and one of a leaf and a stranger's CA
            fields = {"chains": [chains["honest"] * 20, chains["honest"] + chains["mallory"]]}
        elif shape == 5:  # wrong types, at every level
            fields = {"chains": rng.choice([[[1, 2]], [["x"]], [[]], [None], [{"a": b""}], [[b"", 3]]]),
                      "want": rng.choice([[1, None, b"x", ["honest"]], ["honest", "ghost"], []])}
        elif shape == 6:
            fields = {rng.choice(["chains", "want"]): random_value(rng)}
        elif shape == 7:  # held chains and a new member's: learnt once, passed on
            fields = {"chains": [chains["honest"], chains[FUZZER], chains["carol"]]}
        elif shape == 8 and self.weird:
            fields = {"chains": [[rng.choice(self.weird)]]}
        else:
            fields = {"chains": [[rng.randbytes(rng.randrange(1, 64)), b""]], "want": ["honest"] * 70}
        return wire.encode_control(wire.KIND_CERTS, fields)

    def claim(self, honest_address: list[Any]) -> bytes:
        """A LEAVE or a PEERS entry for the honest node (or the fuzzer), signed wrong or not at all."""
        rng, fuzzer = self.rng, self.fuzzer
        name = rng.choice(["honest", "honest", "ghost", FUZZER])
        epoch = self.honest_epoch if name == "honest" else rng.choice([fuzzer.epoch, 5])
        if rng.random() < 0.5:
            signature = random_value(rng) if rng.random() < 0.5 else fuzzer.auth.sign(
                (wire.leave_claim(name, epoch, honest_address),))
            if name == FUZZER and isinstance(signature, bytes) and len(signature) == 64:
                signature = bytes(64)  # not a LEAVE of ours that holds: we stay linked
            return wire.encode_control(wire.KIND_LEAVE, {"name": name, "epoch": epoch,
                                                         "address": honest_address, "sig": signature})
        moved = [HOST, rng.choice([1, 9, honest_address[1]])]
        restarted = epoch + rng.choice([0, 1, 1 << 40])
        record = random_value(rng) if rng.random() < 0.5 else fuzzer.auth.sign(
            (wire.peer_claim(name, moved, restarted),))
        if name == FUZZER and isinstance(record, bytes) and len(record) == 64:
            record = bytes(64)  # a record of ours that holds would say we restarted: then we would be stale
        entry: list[Any] = [name, moved, restarted, record]
        if not isinstance(record, bytes) and rng.random() < 0.5:
            entry = entry[:3]  # no record at all
        return wire.encode_control(wire.KIND_PEERS, {"peers": [entry], "want": True})

    def case(self, honest_address: list[Any]) -> tuple[str, bytes]:
        """One hostile frame: (its family, the frame)."""
        draw = self.rng.random()
        if draw < 0.55:
            return "payload", self.payload()
        if draw < 0.8:
            return "certs", self.certs()
        if draw < 0.97:
            return "claim", self.claim(honest_address)
        return "hello", b""  # a new connection whose HELLO carries a random record


@pytest.mark.trio
async def test_fuzzed_signed_frames_never_break_nor_fool_a_signing_node(pki: Pki) -> None:
    rng = random.Random(SEED)
    other = pki.other_ca("other")
    certs.issue(pki.ca_dir, "carol", out=pki.root / "carol")
    certs.issue(other, "mallory", out=pki.root / "mallory")
    certs.issue(other, "honest", out=pki.root / "other-honest")
    delivered: list[tuple[str, Any]] = []
    async with swarm.ClusterNode(tls_options(pki, "target")) as target:
        target.subscribe(TOPIC, lambda message, origin: delivered.append((origin, message)))
        async with swarm.Connector(tls_options(pki, "honest", [target.address])) as honest:
            chains = {"honest": der_of(pki.files("honest")["cert"]),
                      FUZZER: der_of(pki.files(FUZZER)["cert"]),
                      "carol": der_of(str(pki.root / "carol" / "carol.pem")),
                      "mallory": der_of(str(pki.root / "mallory" / "mallory.pem")),
                      "honest-other-ca": der_of(str(pki.root / "other-honest" / "honest.pem"))}
            with trio.fail_after(WAIT):
                while "honest" not in target.status()["links"]:
                    await trio.sleep(0.01)
            fuzzer = Fuzzer(pki.files(FUZZER), target.address)
            cases = Cases(rng, fuzzer, honest.status()["epoch"], chains,
                          [duplicate_san_certificate("weird")])  # cryptography raises other than ValueError
            honest_address = list(honest.address)
            families: dict[str, int] = {}
            published = directs = 0
            async with trio.open_nursery() as nursery:
                await fuzzer.connect(nursery)
                assert fuzzer.linked, "the fuzzer's HELLO was not answered"
                for index in range(CASES):
                    if index % HONEST_EVERY == 0:
                        honest.publish(TOPIC, {"seq": published, "pad": PAD})
                        published += 1
                        if index % (2 * HONEST_EVERY) == 0:
                            honest.send_direct("target", TOPIC, {"dseq": directs, "pad": PAD})
                            directs += 1
                    family, frame = cases.case(honest_address)
                    families[family] = families.get(family, 0) + 1
                    if family == "hello":
                        if fuzzer.stream is not None:
                            stream, fuzzer.stream, fuzzer.closed = fuzzer.stream, None, True
                            await trio.aclose_forcefully(stream)
                        await fuzzer.connect(nursery, record=random_value(rng))
                        continue
                    await fuzzer.send_case(nursery, frame)
                    if index % 50 == 0:
                        assert "honest" in target.status()["links"]
                if fuzzer.stream is not None:
                    await trio.aclose_forcefully(fuzzer.stream)
                nursery.cancel_scope.cancel()
            # Every honest message and direct message arrives, once, in order, unchanged.
            expected = ([{"seq": seq, "pad": PAD} for seq in range(published)],
                        [{"dseq": seq, "pad": PAD} for seq in range(directs)])
            with trio.move_on_after(WAIT):  # the assertions below say what is missing
                while sum(origin == "honest" for origin, _ in delivered) < published + directs:
                    await trio.sleep(0.01)
                await trio.sleep(0.05)  # anything further would be a duplicate: give it a moment to show
            from_honest = [message for origin, message in delivered if origin == "honest"]
            got = [m for m in from_honest if isinstance(m, dict) and "seq" in m]
            assert got == expected[0], ([m.get("seq") for m in got], published, target.status()["counters"])
            assert [m for m in from_honest if isinstance(m, dict) and "dseq" in m] == expected[1]
            assert len(from_honest) == published + directs, from_honest  # nothing else under its name
            # Nothing the fuzzer made under another's name (its own frames, signed or not, are its own).
            stolen = [(origin, message) for origin, message in delivered if origin not in ("honest", FUZZER)]
            assert not stolen, stolen
            status = target.status()
            counters = status["counters"]
            assert counters.get("internal_errors", 0) == 0, counters
            assert honest.status()["counters"].get("internal_errors", 0) == 0
            assert "honest" in status["links"]
            honest_counters = honest.status()["counters"]
            assert honest_counters.get("links_lost", 0) == 0  # its one link never dropped
            # Damaged DIRECTs for the honest node reached it through the target (a relay passes on only
            # whole ones): refused there, by their signature.
            assert honest_counters.get("forged_frames_refused", 0) > 0, honest_counters
            # The cases reached each check (not only the parser that closes the link).
            for name in ("forged_frames_refused", "unverified_frames_dropped", "stale_frames_refused",
                         "certificates_refused", "certificates_learnt", "leaves_refused",
                         "peer_records_refused"):
                assert counters.get(name, 0) > 0, (name, counters, families)
            assert any(origin == FUZZER for origin, _ in delivered)  # the well-signed frames of its own
            print(f"{CASES} cases {families}: {fuzzer.connections} connections, {fuzzer.closures} closed by "
                  f"the target; counters {dict(sorted(counters.items()))}")
