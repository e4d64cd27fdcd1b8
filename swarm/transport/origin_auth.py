"""Origin signatures with the node certificate's key: this node signs what it originates, and checks what
it receives against the certificate of the node that claims to have originated it (issue 15).

TLS authenticates each neighbour, but a DATA frame is relayed hop by hop: without a signature a member
could forge frames under another origin's name. The sans-IO core (`swarm.protocol.origins`) is handed an
`OriginAuthenticator` and calls it; this module holds the keys, the certificates and the clock, so that
the core touches none of them.

* **Signing.** `sign` hashes the pieces with `hashlib.sha256` one after another (no copy of a 16 KiB
  frame) and signs the digest with the node's key: ECDSA (`Prehashed(SHA256())`), encoded as the raw
  `r || s` of fixed length (64 bytes for P-256), or Ed25519 over the joined pieces (Ed25519 cannot sign
  a digest). `cryptography` does the cryptography; nothing here is hand-written.
* **Checking.** `verify` looks the origin up in a dict of parsed public keys (at most two per name: a
  certificate and the one rotating in), hashes once and verifies; it never raises for bad input.
* **Certificates.** Peers gossip their chains (CERTS frames); `learn` accepts a chain only if its leaf
  names a swarm node, every certificate is issued by the next and the last by a CA of `tls.ca`, every
  issuer is a CA, every certificate is valid now and the leaf is not revoked. At most `max_certificates`
  names are held (our own among them, and never forgotten); beyond that the least recently used
  (verified or learnt) is forgotten.
* **Revocation.** A certificate revoked by a later check (`set_revocation`, `reload`) is no longer used
  nor passed on; its name answers False (not None: the core would ask for the certificate again). It is
  kept aside, at most two per name, only so that a later check that no longer revokes it can restore it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from .. import certs
from ..errors import ConfigError

if TYPE_CHECKING:
    from .tls import TlsSetup

__all__ = ["MAX_CERTIFICATES", "OriginAuthenticator"]

# Names held at most (ours included): a certificate with its parsed key is a few KB, so 4096 names cost
# ~10 MB at worst, and a cluster larger than that still verifies what its recent origins send.
MAX_CERTIFICATES = 4096
# Certificates held per name: the current one and the one rotating in (or out), so that frames signed
# with either key verify while a rotation spreads.
PER_NAME = 2
# A chain is a leaf and a few intermediates; a longer one is refused before any signature is checked,
# so a peer cannot make us verify without bound.
MAX_CHAIN = 8

_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
_ED25519_SIGNATURE = 64
# The clock validity is judged by (seconds since the epoch); one module-level name so a test can move it.
_clock = time.time

# What `revoked(certificate)` answers: None, or why the certificate is revoked (TlsSetup.revoked).
Revocation = Callable[[x509.Certificate], str | None]


def _not_revoked(certificate: x509.Certificate) -> str | None:
    return None


@dataclasses.dataclass(slots=True, eq=False)
class _Held:
    """One certificate of a name, with what `verify` needs ready: parsed once, when it is learnt."""

    chain: list[bytes]  # DER, leaf first, as learnt and as passed on
    leaf: x509.Certificate
    public: Any  # ec.EllipticCurvePublicKey or ed25519.Ed25519PublicKey
    size: int  # bytes of r and of s (ECDSA); 0 for Ed25519
    not_before: float
    not_after: float


@dataclasses.dataclass(slots=True)
class _Name:
    held: list[_Held]  # newest (not_valid_before) first, at most PER_NAME
    revoked: list[_Held] = dataclasses.field(default_factory=list)  # set aside, at most PER_NAME


def _signature_size(public: object) -> int:
    """Bytes of r (and of s) in a raw ECDSA signature by this key; 0 for Ed25519; ValueError otherwise."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return (public.curve.key_size + 7) // 8
    if isinstance(public, ed25519.Ed25519PublicKey):
        return 0
    raise ValueError(f"its key is {type(public).__name__.removeprefix('_')}; only EC and Ed25519 keys sign "
                     "origins")


def _held(chain: list[bytes], leaf: x509.Certificate) -> _Held:
    public = leaf.public_key()
    return _Held(chain, leaf, public, _signature_size(public), leaf.not_valid_before_utc.timestamp(),
                 leaf.not_valid_after_utc.timestamp())


def _who(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()[:80] or "(empty subject)"


def _check_valid(certificate: x509.Certificate, now: datetime.datetime, what: str) -> None:
    if certificate.not_valid_after_utc <= now:
        raise ValueError(f"{what} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if certificate.not_valid_before_utc > now:
        raise ValueError(f"{what} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Does `issuer`'s key sign `child` (and its subject match `child`'s issuer)?"""
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _may_issue(issuer: x509.Certificate, below: int) -> None:
    """May `issuer` issue certificates, with `below` CA certificates between it and the leaf (its path
    length)? ValueError naming what is wrong."""
    try:
        constraints: x509.BasicConstraints | None = issuer.extensions.get_extension_for_class(
            x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError(f"issuer {_who(issuer)} is not a CA (no basicConstraints CA:TRUE)")
    if constraints.path_length is not None and below > constraints.path_length:
        raise ValueError(f"issuer {_who(issuer)} may have {constraints.path_length} intermediate CA(s) "
                         f"below it, the chain has {below}")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise ValueError(f"issuer {_who(issuer)} may not sign certificates (keyUsage)")


def _check_chain(chain: Sequence[bytes], authorities: Sequence[x509.Certificate]) -> tuple[str, _Held]:
    """The name a gossiped chain certifies and its parsed leaf, if it checks out (revocation aside).

    A chain comes from a peer: whatever `cryptography` raises on odd certificates (a duplicate
    extension, an unsupported name type, ...) is a refusal (ValueError), never an error of the core."""
    try:
        return _check_chain_unguarded(chain, authorities)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - hostile input: every failure means "refused"
        raise ValueError(f"not a certificate chain this node can check ({type(error).__name__})") from None


def _check_chain_unguarded(chain: Sequence[bytes],
                           authorities: Sequence[x509.Certificate]) -> tuple[str, _Held]:
    if not isinstance(chain, (list, tuple)) or not chain:
        raise ValueError("an empty chain")
    if len(chain) > MAX_CHAIN:
        raise ValueError(f"a chain of {len(chain)} certificates (at most {MAX_CHAIN})")
    try:
        ders = [bytes(der) for der in chain]
        parsed = [x509.load_der_x509_certificate(der) for der in ders]
        name = certs.node_name(parsed[0])
    except (TypeError, ValueError):
        raise ValueError("not a chain of DER certificates") from None
    if name is None:
        raise ValueError(f"its leaf names no swarm node (no '{certs.URI_SCHEME}:' URI)")
    try:
        entry = _held(ders, parsed[0])
    except (TypeError, ValueError, UnsupportedAlgorithm) as error:
        raise ValueError(f"{name}: {error}") from None
    now = datetime.datetime.fromtimestamp(_clock(), datetime.UTC)
    # A chain that ends with the CA itself (a cert file with the root in it) is checked up to the CA.
    if len(parsed) > 1 and any(parsed[-1] == authority for authority in authorities):
        parsed = parsed[:-1]
    for index, certificate in enumerate(parsed):
        _check_valid(certificate, now, f"{name}'s certificate" if index == 0 else f"CA {_who(certificate)}")
        if index + 1 < len(parsed):
            _may_issue(parsed[index + 1], index)
            if not _issued(certificate, parsed[index + 1]):
                raise ValueError(f"{_who(certificate)} is not issued by {_who(parsed[index + 1])}")
    last = parsed[-1]
    for authority in authorities:
        if _issued(last, authority):
            _may_issue(authority, len(parsed) - 1)
            _check_valid(authority, now, f"CA {_who(authority)}")
            return name, entry
    raise ValueError("not issued by a CA of tls.ca")


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path!r}: {error.strerror}") from None


def _read_setup(setup: TlsSetup) -> tuple[Any, list[x509.Certificate], list[x509.Certificate], Revocation]:
    """What `tls.load` read, read again: the key, our chain, the CAs, and the setup's revocation check."""
    files = setup.files
    try:
        key = serialization.load_pem_private_key(_read(files.key, "tls.key"), password=None)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"tls.key: {files.key!r} is not an unencrypted PEM private key ({error})") from None
    found: dict[str, list[x509.Certificate]] = {}
    for path, option in ((files.cert, "tls.cert"), (files.ca, "tls.ca")):
        try:
            found[option] = x509.load_pem_x509_certificates(_read(path, option))
        except ValueError:
            raise ConfigError(f"{option}: {path!r} holds no PEM certificate") from None
    revoked = getattr(setup, "revoked", None)
    return key, found["tls.cert"], found["tls.ca"], revoked if callable(revoked) else _not_revoked


class OriginAuthenticator:
    """Signs with this node's key; checks origins' signatures with the certificates it has learnt."""

    def __init__(self, key: Any, chain: list[x509.Certificate], authorities: list[x509.Certificate],
                 revoked: Revocation = _not_revoked, max_certificates: int = MAX_CERTIFICATES) -> None:
        if max_certificates < 2:
            raise ValueError(f"max_certificates: at least 2 (ours and one other), got {max_certificates}")
        self._max = max_certificates
        self._names: collections.OrderedDict[bytes, _Name] = collections.OrderedDict()  # LRU first
        self._by_leaf: dict[bytes, bytes] = {}  # leaf DER -> name, of every certificate held (not aside)
        self._revoked = revoked
        self._own = b""
        self._take_own(key, chain, authorities)

    @classmethod
    def from_tls(cls, setup: TlsSetup, max_certificates: int = MAX_CERTIFICATES) -> OriginAuthenticator:
        """From the files of a `tls` setup (read again), with its revocation check if it has one."""
        key, chain, authorities, revoked = _read_setup(setup)
        return cls(key, chain, authorities, revoked, max_certificates)

    def _take_own(self, key: Any, chain: list[x509.Certificate], authorities: list[x509.Certificate]) -> None:
        """Check our key, certificate and CAs and take them; nothing changes if they are refused
        (ConfigError, a ValueError, naming the `tls` file at fault, as `tls.load` does)."""
        if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
            kind = type(key).__name__.removeprefix("_")
            raise ConfigError(f"tls.key: the node's key is {kind}; only EC and Ed25519 keys sign origins")
        if not chain or not authorities:
            raise ConfigError("tls.cert: no certificate of ours" if not chain else "tls.ca: no CA")
        if key.public_key() != chain[0].public_key():
            raise ConfigError("tls.key: the node's key is not the key of its certificate (tls.cert)")
        name = certs.node_name(chain[0])
        if name is None:
            raise ConfigError(f"tls.cert: our certificate names no swarm node (no '{certs.URI_SCHEME}:' URI)")
        der = [certificate.public_bytes(serialization.Encoding.DER) for certificate in chain]
        own = _held(der, chain[0])
        old = self._names.pop(self._own, None)
        for entry in old.held if old is not None else ():
            self._by_leaf.pop(entry.chain[0], None)
        self._key, self._size, self._authorities = key, own.size, list(authorities)
        self.name, self._own = name, name.encode("utf-8")
        self._forget(self._own)  # a certificate of our name learnt from others, before a reload renamed us
        self._names[self._own] = _Name([own])
        self._by_leaf[der[0]] = self._own

    # ------------------------------------------------------------------ the hot path

    def sign(self, pieces: Sequence[bytes | memoryview]) -> bytes:
        """Our signature over the concatenation of `pieces` (not joined for ECDSA: hashed one by one)."""
        if self._size:
            digest = hashlib.sha256()
            for piece in pieces:
                digest.update(piece)
            r, s = utils.decode_dss_signature(self._key.sign(digest.digest(), _PREHASHED))
            return r.to_bytes(self._size, "big") + s.to_bytes(self._size, "big")
        return self._key.sign(b"".join(pieces))

    def verify(self, origin: bytes, pieces: Sequence[bytes | memoryview], signature: bytes) -> bool | None:
        """True: `signature` is valid for a certificate held for `origin` (its UTF-8 name); False: it is
        not, or every certificate of `origin` is revoked or expired; None: no certificate is known."""
        try:
            entry = self._names.get(origin)
            if entry is None:
                return None
            self._names.move_to_end(origin)
            now = _clock()
            digest = None
            for held in entry.held:
                if held.not_after <= now:
                    continue
                size = held.size
                try:
                    if not size:  # Ed25519
                        if len(signature) == _ED25519_SIGNATURE:
                            held.public.verify(signature, b"".join(pieces))
                            return True
                        continue
                    if len(signature) != size + size:
                        continue
                    if digest is None:
                        hashing = hashlib.sha256()
                        for piece in pieces:
                            hashing.update(piece)
                        digest = hashing.digest()
                    held.public.verify(utils.encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                                                  int.from_bytes(signature[size:], "big")),
                                       digest, _PREHASHED)
                    return True
                except InvalidSignature:
                    continue  # the other certificate of the name, if any
            return False
        except Exception:  # anything malformed (a str for bytes, an unhashable origin): not valid
            return False

    # ------------------------------------------------------------------ certificates

    def learn(self, chain: Sequence[bytes]) -> str | None:
        """A chain a peer gossiped (DER, leaf first): its name if it is new to us (a new name, or a new
        certificate of a known one), None if held already; ValueError(reason) if it does not check out."""
        try:
            known = self._by_leaf.get(bytes(chain[0]))
        except (TypeError, IndexError, KeyError):
            raise ValueError("not a chain of DER certificates") from None
        if known is not None:
            self._names.move_to_end(known)
            return None
        name, held = _check_chain(chain, self._authorities)
        try:
            reason = self._revoked(held.leaf)
        except Exception as error:  # the check is another module's: its failure refuses, never crashes
            raise ValueError(f"{name}: the revocation check failed ({error})") from None
        if reason is not None:
            raise ValueError(f"{name}'s certificate is revoked ({reason})")
        return name if self._hold(name.encode("utf-8"), held) else None

    def _hold(self, origin: bytes, held: _Held) -> bool:
        """Hold a checked certificate of `origin`; False if it is ours or older than the two held."""
        if origin == self._own:
            return False  # our own certificate is the one we sign with, never one a peer sends
        entry = self._names.get(origin)
        if entry is None:
            self._make_room()
            self._names[origin] = _Name([held])
            self._by_leaf[held.chain[0]] = origin
            return True
        self._names.move_to_end(origin)
        # Newest first; on a tie the one just learnt goes first (sorted is stable).
        kept = sorted([held, *entry.held], key=lambda h: h.not_before, reverse=True)[:PER_NAME]
        if held not in kept:
            return False  # older than both held: passing it on would only make every node drop it too
        for dropped in entry.held:
            if dropped not in kept:
                self._by_leaf.pop(dropped.chain[0], None)
        entry.held = kept
        self._by_leaf[held.chain[0]] = origin
        return True

    def _make_room(self) -> None:
        while len(self._names) >= self._max:
            victim = next(origin for origin in self._names if origin != self._own)  # max >= 2: one exists
            self._forget(victim)

    def _forget(self, origin: bytes) -> None:
        entry = self._names.pop(origin, None)
        for held in entry.held if entry is not None else ():
            self._by_leaf.pop(held.chain[0], None)

    def chains(self) -> list[list[bytes]]:
        """Every chain held and not expired, as DER lists, ours first (for a new link: it learns what we
        know); least recently used names first, so that a peer with a smaller cache keeps the busiest."""
        now = _clock()
        found = [self.own_chain()]
        for origin, entry in self._names.items():
            if origin != self._own:
                found += [list(held.chain) for held in entry.held if held.not_after > now]
        return found

    def own_chain(self) -> list[bytes]:
        return list(self._names[self._own].held[0].chain)

    def chain_of(self, name: str) -> list[bytes] | None:
        """The newest chain held for `name` and not expired (to answer a peer's `want`), or None."""
        entry = self._names.get(name.encode("utf-8")) if isinstance(name, str) else None
        now = _clock()
        for held in entry.held if entry is not None else ():
            if held.not_after > now:
                return list(held.chain)
        return None

    def set_revocation(self, revoked: Revocation) -> list[str]:
        """Check every certificate held with a new revocation check (after a reload of `tls.crl` etc.):
        those it revokes are no longer used or passed on. Returns the names that lost a certificate."""
        self._revoked = revoked
        return self._recheck(None)

    def _recheck(self, authorities: list[x509.Certificate] | None) -> list[str]:
        """Apply the revocation check to every learnt certificate (and restore those set aside that it no
        longer revokes); with `authorities`, check every chain against them again too, dropping those
        that no longer check out."""
        lost: list[str] = []
        for origin in [origin for origin in self._names if origin != self._own]:
            entry = self._names[origin]
            for held in entry.held:
                self._by_leaf.pop(held.chain[0], None)
            if authorities is not None:
                # The name stays where it is in the LRU order: a reload is not a use.
                entry.held = [held for held in entry.held if self._still_chains(held, authorities)]
                entry.revoked = [held for held in entry.revoked if self._still_chains(held, authorities)]
            live, aside = [], []
            for held in sorted(entry.held + entry.revoked, key=lambda h: h.not_before, reverse=True):
                (aside if self._is_revoked(held) else live).append(held)
            if any(held in aside for held in entry.held):
                lost.append(origin.decode("utf-8", "replace"))
            entry.held, entry.revoked = live[:PER_NAME], aside[:PER_NAME]
            for held in entry.held:
                self._by_leaf[held.chain[0]] = origin
            if not entry.held and not entry.revoked:
                del self._names[origin]
        return lost

    def _is_revoked(self, held: _Held) -> bool:
        try:
            return self._revoked(held.leaf) is not None
        except Exception:  # a check that fails cannot vouch for the certificate
            return True

    @staticmethod
    def _still_chains(held: _Held, authorities: list[x509.Certificate]) -> bool:
        try:
            _check_chain(held.chain, authorities)
        except ValueError:
            return False
        return True

    def reload(self, setup: TlsSetup) -> None:
        """Our key, certificate or CAs changed (a `tls` reload): take the new ones, as `from_tls` reads
        them, and keep what was learnt that still checks out against the new CAs and revocation check.
        If the new files are refused (ConfigError naming the file), nothing changes.

        The files are read a second time (after `tls.load`): a key rewritten between the two readings
        (`certs issue` writes the key, then the certificate) is refused here as it is there."""
        key, chain, authorities, revoked = _read_setup(setup)
        same_authorities = ({a.fingerprint(hashes.SHA256()) for a in authorities}
                            == {a.fingerprint(hashes.SHA256()) for a in self._authorities})
        self._take_own(key, chain, authorities)
        self._revoked = revoked
        # Unchanged CAs: the chains still chain (expiry is judged when used); only revocation may differ.
        self._recheck(None if same_authorities else self._authorities)

    def status(self) -> dict[str, int]:
        """Certificates held (ours included, those set aside as revoked not), and names held."""
        return {"certificates": sum(len(entry.held) for entry in self._names.values()),
                "names": len(self._names)}
