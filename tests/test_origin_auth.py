"""The origin authenticator (`swarm.transport.origin_auth`): signatures that verify, and only for the
right origin; certificate chains learnt only when they check out; the bounded, rotating certificate cache.

Real keys and certificates (`swarm.certs`, and `cryptography` for what `certs` does not make: Ed25519
node keys, intermediate CAs, certificates without a swarm name). No network, no timing.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from swarm import certs
from swarm.config import TlsFiles
from swarm.transport import origin_auth, tls
from swarm.transport.origin_auth import OriginAuthenticator

NOW = datetime.datetime.now(datetime.UTC)
HOUR = datetime.timedelta(hours=1)
MESSAGE = bytes(range(256)) * 4 + b"tail"


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def authority(common_name: str, issuer: tuple[Any, x509.Certificate] | None = None, *, ca: bool = True,
              path_length: int | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA (self-signed, or issued by `issuer`); `ca=False` makes one without CA:TRUE."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key, signer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - HOUR).not_valid_after(NOW + 100 * HOUR)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return key, builder.sign(signer_key, hashes.SHA256())


def leaf(name: str | None, issuer: tuple[Any, x509.Certificate], key: Any = None,
         not_before: datetime.datetime = NOW - HOUR) -> tuple[Any, x509.Certificate]:
    """A node certificate built here: for an Ed25519 key, an intermediate issuer, or no swarm name."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    uri = certs.node_uri(name) if name is not None else "https://example.invalid/"
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or "nobody")]))
               .issuer_name(issuer[1].subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(NOW + 100 * HOUR)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                              critical=False))
    return key, builder.sign(issuer[0], hashes.SHA256())


@dataclasses.dataclass
class Cluster:
    """A CA and nodes of it: `node(name)` is (key, certificate), `auth(name)` an authenticator."""

    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] = dataclasses.field(default_factory=certs.make_ca)

    def node(self, name: str, **validity: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey,
                                                                       x509.Certificate]:
        return certs.make_node_certificate(name, *self.ca, **validity)

    def auth(self, name: str, **kwargs: Any) -> OriginAuthenticator:
        key, certificate = self.node(name)
        return OriginAuthenticator(key, [certificate], [self.ca[1]], **kwargs)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


def splits(message: bytes) -> list[list[bytes | memoryview]]:
    """The same bytes cut in pieces in several ways (empty pieces and memoryviews among them)."""
    view = memoryview(message)
    return [[message], [b"", message, b""], [view[:1], view[1:]], [view[:-1], message[-1:]],
            [message[:7], view[7:300], b"", message[300:]], [bytes([byte]) for byte in message[:40]]
            + [view[40:]]]


# ---------------------------------------------------------------------- signing and checking


def test_a_signature_verifies_however_the_bytes_are_cut(cluster: Cluster) -> None:
    a, b = cluster.auth("a"), cluster.auth("b")
    assert a.name == "a"
    assert b.learn(a.own_chain()) == "a"
    for pieces in splits(MESSAGE):
        signature = a.sign(pieces)
        assert len(signature) == 64
        for other in splits(MESSAGE):
            assert b.verify(b"a", other, signature) is True
    assert b.verify(b"a", [b""], a.sign([])) is True  # nothing to sign is still a signature


def test_what_does_not_verify(cluster: Cluster) -> None:
    a, b, c = cluster.auth("a"), cluster.auth("b"), cluster.auth("c")
    for chain in (a.own_chain(), c.own_chain()):
        b.learn(chain)
    signature = a.sign([MESSAGE])
    changed = bytearray(MESSAGE)
    changed[100] ^= 1
    assert b.verify(b"a", [bytes(changed)], signature) is False
    assert b.verify(b"a", [MESSAGE + b"x"], signature) is False
    assert b.verify(b"a", [MESSAGE], signature[:-1]) is False
    assert b.verify(b"a", [MESSAGE], signature + b"\0") is False
    assert b.verify(b"a", [MESSAGE], b"") is False
    assert b.verify(b"a", [MESSAGE], bytes(64)) is False  # r = s = 0
    assert b.verify(b"a", [MESSAGE], b"\xff" * 64) is False  # r, s beyond the curve's order
    assert b.verify(b"c", [MESSAGE], signature) is False  # c's certificate, a's signature
    assert b.verify(b"a", [MESSAGE], c.sign([MESSAGE])) is False  # c signing as a: the forgery
    assert b.verify(b"d", [MESSAGE], signature) is None  # nobody known by that name
    # Bad input is never an exception.
    assert b.verify(b"a", ["text"], signature) is False  # type: ignore[list-item]
    assert b.verify(b"a", [MESSAGE], "text") is False  # type: ignore[arg-type]
    assert b.verify(b"a", None, signature) is False  # type: ignore[arg-type]
    assert b.verify([b"a"], [MESSAGE], signature) is False  # type: ignore[arg-type]
    assert b.verify(b"a", [MESSAGE], signature) is True  # and the genuine one still does


def test_a_revoked_certificate_no_longer_verifies(cluster: Cluster) -> None:
    a, b = cluster.auth("a"), cluster.auth("b")
    b.learn(a.own_chain())
    serial = x509.load_der_x509_certificate(a.own_chain()[0]).serial_number
    signature = a.sign([MESSAGE])
    listed = {serial}

    def revoked(certificate: x509.Certificate) -> str | None:
        return "on the CRL" if certificate.serial_number in listed else None

    assert b.set_revocation(revoked) == ["a"]
    assert b.verify(b"a", [MESSAGE], signature) is False  # not None: asking for it again is pointless
    assert a.own_chain() not in b.chains() and b.chain_of("a") is None
    with pytest.raises(ValueError, match="revoked"):
        b.learn(a.own_chain())
    assert b.set_revocation(revoked) == []  # nothing more to forget
    listed.clear()  # taken off the list (a certificate hold released)
    assert b.set_revocation(revoked) == []
    assert b.verify(b"a", [MESSAGE], signature) is True
    assert b.status() == {"certificates": 2, "names": 2}


def test_an_expired_certificate_no_longer_verifies(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = cluster.auth("a"), cluster.auth("b")
    b.learn(a.own_chain())
    signature = a.sign([MESSAGE])
    not_after = x509.load_der_x509_certificate(a.own_chain()[0]).not_valid_after_utc.timestamp()
    monkeypatch.setattr(origin_auth, "_clock", lambda: not_after + 1)
    assert b.verify(b"a", [MESSAGE], signature) is False
    assert b.chain_of("a") is None and len(b.chains()) == 1  # not passed on either


# ---------------------------------------------------------------------- learning chains


def test_learning_a_chain(cluster: Cluster) -> None:
    b = cluster.auth("b")
    _, certificate = cluster.node("a")
    assert b.learn([der(certificate)]) == "a"
    assert b.learn([der(certificate)]) is None  # held already
    assert b.learn((der(certificate),)) is None
    assert b.chain_of("a") == [der(certificate)] and b.chain_of("z") is None
    assert b.status() == {"certificates": 2, "names": 2}


def refusal(auth: OriginAuthenticator, chain: list[bytes]) -> str:
    with pytest.raises(ValueError) as caught:
        auth.learn(chain)
    return str(caught.value)


def test_chains_that_do_not_check_out(cluster: Cluster) -> None:
    b = cluster.auth("b")
    other = Cluster()
    assert "not issued by a CA of tls.ca" in refusal(b, [der(other.node("a")[1])])
    assert "no swarm node" in refusal(b, [der(leaf(None, cluster.ca)[1])])
    expired = cluster.node("a", not_before=NOW - 10 * HOUR, not_after=NOW - HOUR)[1]
    assert "expired" in refusal(b, [der(expired)])
    early = cluster.node("a", not_before=NOW + HOUR, not_after=NOW + 10 * HOUR)[1]
    assert "not valid before" in refusal(b, [der(early)])
    assert "DER" in refusal(b, [b"not a certificate"])
    assert "DER" in refusal(b, ["text"])  # type: ignore[list-item]
    assert refusal(b, [])
    good = der(cluster.node("a")[1])
    assert "at most" in refusal(b, [good] * (origin_auth.MAX_CHAIN + 1))
    # Another CA with the same subject as ours: the name matches, the signature does not.
    impostor = certs.make_ca()
    assert impostor[1].subject == cluster.ca[1].subject
    assert "not issued by a CA of tls.ca" in refusal(b, [der(certs.make_node_certificate("a", *impostor)[1])])
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "only EC and Ed25519" in refusal(b, [der(leaf("a", cluster.ca, key=rsa_key)[1])])
    assert b.status() == {"certificates": 1, "names": 1}  # none of them was held
    assert b.verify(b"a", [MESSAGE], bytes(64)) is None


def test_a_chain_through_an_intermediate_ca() -> None:
    root = authority("root", path_length=1)
    intermediate = authority("intermediate", root, path_length=0)
    b_key, b_cert = leaf("b", root)
    b = OriginAuthenticator(b_key, [b_cert], [root[1]])
    a_key, a_cert = leaf("a", intermediate)
    a = OriginAuthenticator(a_key, [a_cert, intermediate[1]], [root[1]])
    assert a.own_chain() == [der(a_cert), der(intermediate[1])]
    assert "not issued by a CA of tls.ca" in refusal(b, [der(a_cert)])  # the intermediate left out
    assert b.learn(a.own_chain()) == "a"
    assert b.verify(b"a", [MESSAGE], a.sign([MESSAGE])) is True
    # The root at the end of the chain (a cert file with the whole chain in it) is fine too.
    c_key, c_cert = leaf("c", intermediate)
    assert b.learn([der(c_cert), der(intermediate[1]), der(root[1])]) == "c"


def test_an_intermediate_must_be_a_ca_allowed_to_issue() -> None:
    root = authority("root", path_length=1)
    not_ca = authority("not a CA", root, ca=False)
    b_key, b_cert = leaf("b", root)
    b = OriginAuthenticator(b_key, [b_cert], [root[1]])
    a_cert = leaf("a", not_ca)[1]
    assert "is not a CA" in refusal(b, [der(a_cert), der(not_ca[1])])
    # A root with path length 0 may issue node certificates, not intermediate CAs.
    strict_root = authority("strict root", path_length=0)
    intermediate = authority("intermediate", strict_root)
    c_key, c_cert = leaf("c", strict_root)
    c = OriginAuthenticator(c_key, [c_cert], [strict_root[1]])
    assert "intermediate CA" in refusal(c, [der(leaf("a", intermediate)[1]), der(intermediate[1])])
    assert c.learn([der(leaf("a", strict_root)[1])]) == "a"


def test_rotation_keeps_the_two_newest_certificates_of_a_name(cluster: Cluster) -> None:
    b = cluster.auth("b")
    ca_key, ca_cert = cluster.ca
    made = [certs.make_node_certificate("a", ca_key, ca_cert, not_before=NOW - age * HOUR)
            for age in (3, 2, 1)]
    old, middle, new = (OriginAuthenticator(key, [cert], [ca_cert]) for key, cert in made)
    assert b.learn(middle.own_chain()) == "a"
    assert b.learn(old.own_chain()) == "a"  # a certificate of a known name that we did not hold
    assert b.status() == {"certificates": 3, "names": 2}
    for signer in (old, middle):
        assert b.verify(b"a", [MESSAGE], signer.sign([MESSAGE])) is True
    assert b.learn(new.own_chain()) == "a"  # the third: the oldest goes
    assert b.verify(b"a", [MESSAGE], old.sign([MESSAGE])) is False
    for signer in (middle, new):
        assert b.verify(b"a", [MESSAGE], signer.sign([MESSAGE])) is True
    assert b.chain_of("a") == new.own_chain()  # the newest first
    assert b.learn(old.own_chain()) is None  # older than both held: not held, not news to pass on
    assert b.status() == {"certificates": 3, "names": 2}
    assert [chain for chain in b.chains()[1:]] == [new.own_chain(), middle.own_chain()]


def test_the_least_recently_used_name_is_forgotten_never_our_own(cluster: Cluster) -> None:
    own = cluster.auth("own", max_certificates=3)
    others = {name: cluster.auth(name) for name in ("a", "b", "c", "d")}
    signatures = {name: auth.sign([MESSAGE]) for name, auth in others.items()}
    assert own.learn(others["a"].own_chain()) == "a"
    assert own.learn(others["b"].own_chain()) == "b"  # own is the least recently used name now
    assert own.learn(others["c"].own_chain()) == "c"  # a goes, not own
    assert own.verify(b"a", [MESSAGE], signatures["a"]) is None
    assert own.verify(b"b", [MESSAGE], signatures["b"]) is True  # b used: c is the oldest now
    assert own.learn(others["d"].own_chain()) == "d"
    assert own.verify(b"c", [MESSAGE], signatures["c"]) is None
    assert own.verify(b"b", [MESSAGE], signatures["b"]) is True
    assert own.learn(others["b"].own_chain()) is None  # learnt again: b used, d the oldest
    assert own.learn(others["a"].own_chain()) == "a"
    assert own.verify(b"d", [MESSAGE], signatures["d"]) is None
    assert own.status() == {"certificates": 3, "names": 3}
    assert own.chains()[0] == own.own_chain()
    with pytest.raises(ValueError):
        cluster.auth("lonely", max_certificates=1)


def test_chains_our_own_first(cluster: Cluster) -> None:
    b = cluster.auth("b")
    a, c = cluster.auth("a"), cluster.auth("c")
    b.learn(a.own_chain())
    b.learn(c.own_chain())
    assert b.chains()[0] == b.own_chain()
    assert sorted(b.chains()[1:]) == sorted([a.own_chain(), c.own_chain()])
    assert b.learn(b.own_chain()) is None  # our own, back from a peer
    assert b.learn(cluster.auth("b").own_chain()) is None  # another certificate of our name: not used
    assert len(b.chains()) == 3


# ---------------------------------------------------------------------- files, reloads, keys


def write_node(directory: Path, name: str, key: Any, certificate: x509.Certificate,
               ca: x509.Certificate) -> TlsFiles:
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{name}.pem").write_bytes(certs.cert_pem(certificate))
    (directory / f"{name}.key").chmod(0o600)
    (directory / "ca.pem").write_bytes(certs.cert_pem(ca))
    return TlsFiles(str(directory / "ca.pem"), str(directory / f"{name}.pem"), str(directory / f"{name}.key"))


@dataclasses.dataclass(frozen=True)
class RevokingSetup:
    """A `TlsSetup` as another engineer is extending it: its files, and a revocation check."""

    files: TlsFiles
    serials: frozenset[int]

    def revoked(self, certificate: x509.Certificate) -> str | None:
        return "denied" if certificate.serial_number in self.serials else None


def test_from_tls_and_a_reload_with_a_new_certificate(cluster: Cluster, tmp_path: Path) -> None:
    files = write_node(tmp_path, "b", *cluster.node("b"), cluster.ca[1])
    b = OriginAuthenticator.from_tls(tls.load(files))
    a = cluster.auth("a")
    assert b.name == "b" and b.learn(a.own_chain()) == "a"
    peer = cluster.auth("peer")
    peer.learn(b.own_chain())
    before = b.sign([MESSAGE])
    assert peer.verify(b"b", [MESSAGE], before) is True
    # Rotation: a new key and certificate for b, written over the files and reloaded.
    write_node(tmp_path, "b", *cluster.node("b", not_before=NOW), cluster.ca[1])
    old_chain = b.own_chain()
    b.reload(tls.load(files))
    assert b.own_chain() != old_chain and b.chains()[0] == b.own_chain()
    signature = b.sign([MESSAGE])
    assert peer.verify(b"b", [MESSAGE], signature) is False  # the peer holds only the old certificate
    assert peer.learn(b.own_chain()) == "b"  # the rotation: both certificates held
    assert peer.verify(b"b", [MESSAGE], signature) is True
    assert peer.verify(b"b", [MESSAGE], before) is True  # frames b signed before, still in flight
    assert b.verify(b"a", [MESSAGE], a.sign([MESSAGE])) is True  # what b learnt is kept
    # A reload with a revocation check forgets what it revokes.
    a_serial = x509.load_der_x509_certificate(a.own_chain()[0]).serial_number
    b.reload(RevokingSetup(files, frozenset({a_serial})))
    assert b.verify(b"a", [MESSAGE], a.sign([MESSAGE])) is False
    fresh = OriginAuthenticator.from_tls(RevokingSetup(files, frozenset({a_serial})))
    assert "revoked (denied)" in refusal(fresh, a.own_chain())


def test_a_reload_with_another_ca_drops_what_no_longer_chains(cluster: Cluster, tmp_path: Path) -> None:
    files = write_node(tmp_path, "b", *cluster.node("b"), cluster.ca[1])
    b = OriginAuthenticator.from_tls(tls.load(files))
    a = cluster.auth("a")
    b.learn(a.own_chain())
    other = Cluster()
    write_node(tmp_path, "b", *other.node("b"), other.ca[1])
    b.reload(tls.load(files))
    assert b.verify(b"a", [MESSAGE], a.sign([MESSAGE])) is None
    assert b.status() == {"certificates": 1, "names": 1}
    assert "not issued by a CA of tls.ca" in refusal(b, a.own_chain())
    # A reload that is refused changes nothing.
    (tmp_path / "b.key").write_bytes(certs.key_pem(ec.generate_private_key(ec.SECP256R1())))
    chain = b.own_chain()
    with pytest.raises(ValueError, match="not the key of its certificate"):
        b.reload(RevokingSetup(files, frozenset()))
    assert b.own_chain() == chain


def test_an_ed25519_node_end_to_end(cluster: Cluster) -> None:
    ed_key, ed_cert = leaf("ed", cluster.ca, key=ed25519.Ed25519PrivateKey.generate())
    ed = OriginAuthenticator(ed_key, [ed_cert], [cluster.ca[1]])
    ec_node = cluster.auth("ec")
    assert ec_node.learn(ed.own_chain()) == "ed" and ed.learn(ec_node.own_chain()) == "ec"
    for pieces in splits(MESSAGE):
        signature = ed.sign(pieces)
        assert len(signature) == 64
        for other in splits(MESSAGE):
            assert ec_node.verify(b"ed", other, signature) is True
    assert ec_node.verify(b"ed", [MESSAGE[:-1]], signature) is False
    assert ec_node.verify(b"ed", [MESSAGE], signature[:-1]) is False
    assert ed.verify(b"ec", [MESSAGE], ec_node.sign([MESSAGE])) is True
    assert ec_node.verify(b"ed", [MESSAGE], ec_node.sign([MESSAGE])) is False


def test_keys_that_cannot_sign_origins(cluster: Cluster) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_cert = leaf("r", cluster.ca, key=rsa_key)[1]
    with pytest.raises(ValueError, match="only EC and Ed25519"):
        OriginAuthenticator(rsa_key, [rsa_cert], [cluster.ca[1]])
    _, certificate = cluster.node("a")
    with pytest.raises(ValueError, match="not the key of its certificate"):
        OriginAuthenticator(ec.generate_private_key(ec.SECP256R1()), [certificate], [cluster.ca[1]])
    key, nameless = leaf(None, cluster.ca)
    with pytest.raises(ValueError, match="no swarm node"):
        OriginAuthenticator(key, [nameless], [cluster.ca[1]])
