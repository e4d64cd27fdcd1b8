"""Mutual TLS for links: SSL contexts from the `tls` option's files, reloading, and a peer's name.

`load(files)` reads the CA bundle, the node's certificate and its key, checks them (each failure is a
`ConfigError` naming `tls.ca`, `tls.cert` or `tls.key`) and builds two `ssl.SSLContext`s, one for each end
of a link. Both require TLS 1.3 and a certificate from the other end, verified against the CA bundle with
OpenSSL's strict X.509 checks; host names are not checked (`check_hostname` is off): a node is
identified by the swarm name in its certificate (`swarm.certs.node_name`), which the protocol core
compares with the name the peer claims in its HELLO.

`swarm.config` checks only the shape of the `tls` option; `resolve(options)` reads the files when a node
is built from its options, so that a bad file fails there, and gives the node its certificate's name.

**Revocation.** The optional `tls.crl` (CRLs, each signed by a CA of the bundle) and `tls.deny` (SHA-256
fingerprints and serials) are read with the other files. `TlsSetup.revoked(certificate)` says why a
certificate is revoked, or None: the engine asks it of every peer after the TLS handshake, in both
directions, and of every live link after a reload (cutting the revoked ones). The check is ours, not
OpenSSL's (no `VERIFY_CRL_CHECK_LEAF`), since the deny-list needs it anyway and one path is simpler to
reason about than two. A node whose own certificate is revoked does not start (ConfigError, `tls.cert`).

A `TlsSetup` is immutable. Reloading builds a new one from the files and the engine swaps it in: new
connections use it, links already up keep the one they were made with. If the new files do not load, the
old setup stays in use and the error is raised to whoever asked for the reload.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import ssl
from typing import TYPE_CHECKING, Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .. import certs
from .. import counters as C
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Options, TlsFiles

__all__ = ["Revocations", "TlsSetup", "certificate_name", "explain", "load", "peer_certificate", "peer_leaf",
           "pending_alert", "resolve"]

log = logging.getLogger("swarm.transport")

# The first byte of every TLS connection: a handshake record (RFC 8446, 5.1). A swarm frame starts
# with a 4-byte length, whose first byte is 0 for any frame under 16 MiB.
TLS_HANDSHAKE_RECORD = 0x16

# OpenSSL's names for "the bytes are not TLS" (a peer running without `tls`).
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
            "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "WRONG_SSL_VERSION"}
# What a TLS alert from the peer means for us, for the common ones.
_ALERTS = {
    "UNKNOWN_CA": "our certificate is not signed by a CA it trusts",
    "CERTIFICATE_EXPIRED": "our certificate has expired (or is not valid yet) by its clock",
    "BAD_CERTIFICATE": "it rejected our certificate",
    "UNSUPPORTED_CERTIFICATE": "it rejected our certificate",
    "CERTIFICATE_REVOKED": "our certificate is revoked",
    "CERTIFICATE_REQUIRED": "it wants a certificate and we sent none",
    "PROTOCOL_VERSION": "it does not speak TLS 1.3",
    "HANDSHAKE_FAILURE": "no common TLS parameters",
}


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_HEX = re.compile(r"[0-9a-f]+\Z")
_DENY_FORMAT = "expected 'sha256:<64 hex digits>' or 'serial:<hex>'"


@dataclasses.dataclass(frozen=True)
class Revocations:
    """What the `crl` and `deny` files of one reading revoke."""

    crl: dict[tuple[x509.Name, int], str] = dataclasses.field(default_factory=dict)  # -> issuer, readable
    fingerprints: frozenset[bytes] = frozenset()  # SHA-256 of the DER certificate (tls.deny)
    serials: frozenset[int] = frozenset()  # tls.deny: of any issuer of the bundle

    def reason(self, certificate: x509.Certificate) -> str | None:
        serial = certificate.serial_number
        issuer = self.crl.get((certificate.issuer, serial))
        if issuer is not None:
            return f"serial {serial:x} is in the CRL of {issuer}"
        if serial in self.serials:
            return f"serial {serial:x} is in tls.deny"
        if self.fingerprints and certificate.fingerprint(hashes.SHA256()) in self.fingerprints:
            return "its fingerprint is in tls.deny"
        return None


@dataclasses.dataclass(frozen=True)
class TlsSetup:
    """The contexts made from one reading of the files, and what an operator wants to know of them."""

    files: TlsFiles
    server: ssl.SSLContext
    client: ssl.SSLContext
    name: str  # the swarm name in our certificate
    serial: int
    not_after: datetime.datetime
    authorities: tuple[str, ...]  # subjects of the CA certificates in the bundle
    revocations: Revocations = dataclasses.field(default_factory=Revocations)  # tls.crl and tls.deny

    def revoked(self, certificate: x509.Certificate) -> str | None:
        """None if `certificate` is not revoked by these files; else why, in a few words ("serial 1a2b is
        in the CRL of CN=...", "its fingerprint is in tls.deny")."""
        return self.revocations.reason(certificate)

    def status(self) -> dict[str, Any]:
        revocations = self.revocations
        return {"name": self.name, "serial": f"{self.serial:x}", "not_after": self.not_after.isoformat(),
                "authorities": list(self.authorities), "crl_entries": len(revocations.crl),
                "deny_entries": len(revocations.fingerprints) + len(revocations.serials)}


def _read(path: str, key: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read the {what} {path!r}: {error.strerror}") from None


def _certificates(data: bytes, path: str, key: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise ConfigError(f"{key}: {path!r} holds no PEM certificate")
    return found


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, or a key type that cannot sign certificates
        return False
    return True


def _no_password() -> bytes:
    # Never prompt on the terminal (OpenSSL would, for an encrypted key without a password).
    raise ConfigError("tls.key: the key is encrypted; swarm needs an unencrypted key (mode 0600)")


def _read_crls(files: TlsFiles, authorities: list[x509.Certificate]) -> dict[tuple[x509.Name, int], str]:
    """The (issuer, serial) pairs the CRLs of `tls.crl` list; each must be signed by a CA of the bundle."""
    path = files.crl
    assert path is not None
    data = _read(path, "tls.crl", "CRL file")
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError("no '-----BEGIN X509 CRL-----' block")
            crls = [x509.load_pem_x509_crl(block) for block in blocks]
        else:
            crls = [x509.load_der_x509_crl(data)]
    except ValueError as error:
        raise ConfigError(f"tls.crl: {path!r} is not a CRL, PEM or DER ({error})") from None
    revoked: dict[tuple[x509.Name, int], str] = {}
    now = datetime.datetime.now(datetime.UTC)
    for crl in crls:
        issuer = crl.issuer.rfc4514_string()
        if not any(authority.subject == crl.issuer and _crl_signed_by(crl, authority)
                   for authority in authorities):
            raise ConfigError(f"tls.crl: {path!r} holds a CRL of {issuer} that no CA in tls.ca "
                              f"({files.ca!r}) signed; a CRL counts only when a CA of the cluster signed it")
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            # Still used: an old list of revoked certificates is better than none.
            log.warning("tls.crl %s: the CRL of %s was due for an update on %s; it is still used, but "
                        "re-sign it (`python -m swarm certs revoke`)", path, issuer,
                        crl.next_update_utc.isoformat())
        for entry in crl:
            revoked[(crl.issuer, entry.serial_number)] = issuer
    return revoked


def _crl_signed_by(crl: x509.CertificateRevocationList, authority: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(authority.public_key())
    except Exception:  # a key type that cannot sign CRLs
        return False


def _read_deny(path: str) -> tuple[frozenset[bytes], frozenset[int]]:
    """The fingerprints and serials of a deny-list; a malformed line is a ConfigError with its number."""
    try:
        text = _read(path, "tls.deny", "deny-list").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"tls.deny: {path!r} is not UTF-8 text ({error})") from None
    fingerprints: set[bytes] = set()
    serials: set[int] = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        kind, sep, value = entry.partition(":")
        # Colons between the hex bytes are allowed: `openssl x509 -fingerprint -sha256` prints them.
        digits = value.strip().replace(":", "").lower()
        kind = kind.strip().lower()
        if not sep or kind not in ("sha256", "serial"):
            problem = "unknown kind of entry"
        elif not _HEX.match(digits):
            problem = "not hexadecimal"
        elif kind == "sha256" and len(digits) != 64:
            problem = f"a SHA-256 fingerprint has 64 hex digits, this one {len(digits)}"
        elif kind == "sha256":
            fingerprints.add(bytes.fromhex(digits))
            continue
        else:
            serials.add(int(digits, 16))
            continue
        raise ConfigError(f"tls.deny: {path!r} line {number}: {problem} ({_DENY_FORMAT}), got {entry!r}")
    return frozenset(fingerprints), frozenset(serials)


def certificate_name(path: str) -> str:
    """The swarm name in the (first) certificate of the PEM file `path`; ConfigError naming tls.cert."""
    leaf = _certificates(_read(path, "tls.cert", "certificate"), path, "tls.cert")[0]
    name = certs.node_name(leaf)
    if name is None:
        raise ConfigError(f"tls.cert: {path!r} names no swarm node (no '{certs.URI_SCHEME}:' URI in its "
                          "subject alternative name; make one with `python -m swarm certs issue`)")
    return name


def load(files: TlsFiles) -> TlsSetup:
    """Read and check the files; build the contexts. ConfigError names the key of the file at fault."""
    ca_data = _read(files.ca, "tls.ca", "CA bundle")
    authorities = _certificates(ca_data, files.ca, "tls.ca")
    for authority in authorities:
        try:
            is_ca = authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ConfigError(f"tls.ca: {files.ca!r} holds a certificate that is not a CA "
                              f"({authority.subject.rfc4514_string()}); expected the cluster CA's ca.pem")
    chain = _certificates(_read(files.cert, "tls.cert", "certificate"), files.cert, "tls.cert")
    leaf = chain[0]
    name = certificate_name(files.cert)
    key_data = _read(files.key, "tls.key", "private key")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise ConfigError(f"tls.key: {files.key!r} is encrypted; swarm needs an unencrypted key "
                          "(kept owner-only, mode 0600)") from None
    except Exception as error:  # ValueError, or UnsupportedAlgorithm
        raise ConfigError(f"tls.key: {files.key!r} is not a PEM private key ({error})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey,
                            ed448.Ed448PrivateKey)) or key.public_key() != leaf.public_key():
        raise ConfigError(f"tls.key: {files.key!r} is not the key of the certificate in tls.cert "
                          f"({files.cert!r})")
    if not any(_signed_by(leaf, issuer) for issuer in authorities + chain[1:]):
        raise ConfigError(f"tls.cert: {files.cert!r} is not signed by a CA in tls.ca ({files.ca!r}); its "
                          f"issuer is {leaf.issuer.rfc4514_string()}")
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        log.warning("tls.cert %s (%s) expired on %s: peers will refuse this node", files.cert, name,
                    leaf.not_valid_after_utc.isoformat())
    elif leaf.not_valid_before_utc > now:
        log.warning("tls.cert %s (%s) is not valid before %s: peers will refuse this node until then",
                    files.cert, name, leaf.not_valid_before_utc.isoformat())
    try:
        if os.stat(files.key).st_mode & 0o077:
            log.warning("tls.key %s can be read by other users; make it owner-only (chmod 600)", files.key)
    except OSError:
        pass
    fingerprints, serials = _read_deny(files.deny) if files.deny is not None else (frozenset(), frozenset())
    revocations = Revocations(_read_crls(files, authorities) if files.crl is not None else {},
                              fingerprints, serials)
    own = revocations.reason(leaf)
    if own is not None:
        # Its peers would refuse it, or will once they have the same files: fail where it is fixed.
        raise ConfigError(f"tls.cert: {files.cert!r} ({name}, serial {leaf.serial_number:x}) is revoked: "
                          f"{own}; issue a new certificate (`python -m swarm certs issue`)")
    server = _context(True, ca_data, files)
    client = _context(False, ca_data, files)
    return TlsSetup(files, server, client, name, leaf.serial_number, leaf.not_valid_after_utc,
                    tuple(a.subject.rfc4514_string() for a in authorities), revocations)


def resolve(options: Options, *, check_name: bool = True) -> Options:
    """`options` as a node is built with them: the `tls` files read and checked, and `serverName` the
    name in the certificate when the options left it to the certificate (None).

    A bad file is a ConfigError naming tls.ca, tls.cert or tls.key (`load`), raised before the node binds
    anything. With `check_name`, a serverName that is not the certificate's is a ConfigError too, since
    every peer would refuse the node. Without it a serverName that is set is taken as it is and nothing
    is read here (the engine reads the files when it is made): `Options` passed whole to a node are the
    caller's, whose name is not second-guessed (a test makes an impostor that way). Without `tls`,
    `options` are returned as they are.
    """
    if options.tls is None or (options.serverName is not None and not check_name):
        return options
    name = load(options.tls).name
    if options.serverName is None:
        return options.replace(serverName=name)
    if options.serverName != name:
        raise ConfigError(f"serverName: {options.serverName!r} is not the name in the tls certificate "
                          f"({name!r}), so every peer would refuse this node; leave serverName out to take "
                          "the certificate's")
    return options


def _context(server_side: bool, ca_data: bytes, files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the name is checked against the HELLO instead
    context.verify_mode = ssl.CERT_REQUIRED  # on the server side too: mutual authentication
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if server_side:
        context.num_tickets = 0  # no session resumption: every link is fully authenticated
    try:
        context.load_verify_locations(cadata=ca_data.decode("ascii", "replace"))
    except ssl.SSLError as error:
        raise ConfigError(f"tls.ca: {files.ca!r} cannot be loaded: {error.reason or error}") from None
    try:
        context.load_cert_chain(files.cert, files.key, password=_no_password)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"tls.key: {files.key!r} is not the key of the certificate in tls.cert "
                              f"({files.cert!r})") from None
        raise ConfigError(f"tls.cert: {files.cert!r} with tls.key {files.key!r} cannot be loaded: "
                          f"{reason}") from None
    except OSError as error:
        raise ConfigError(f"tls.cert: cannot read {files.cert!r} or {files.key!r}: "
                          f"{error.strerror}") from None
    return context


def peer_leaf(stream: trio.SSLStream[Any]) -> x509.Certificate | None:
    """The certificate the peer presented (verified by the handshake); None if there is none."""
    der = stream.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:  # OpenSSL accepted it; should cryptography not, the peer is not admitted
        return None


def peer_certificate(stream: trio.SSLStream[Any]) -> tuple[str | None, int | None]:
    """(swarm name, serial) of the certificate the peer presented (verified by the handshake)."""
    certificate = peer_leaf(stream)
    if certificate is None:
        return None, None
    return certs.node_name(certificate), certificate.serial_number


def pending_alert(stream: trio.SSLStream[Any]) -> bytes:
    """The TLS alert OpenSSL wrote when the handshake failed, not yet sent.

    trio marks the stream broken as soon as the handshake raises, before the alert OpenSSL queued in
    its outgoing buffer goes out; without it the peer only sees the connection close. Sent by the
    engine, the alert tells the peer why ("unknown ca", "certificate expired", ...). Best effort: it
    reads trio's private buffer, and gives nothing if that is not there.
    """
    buffer = getattr(stream, "_outgoing", None)
    if isinstance(buffer, ssl.MemoryBIO):
        return buffer.read()
    return b""


def explain(error: BaseException) -> tuple[str, str]:
    """(counter, reason) for a TLS handshake or link that failed with `error`.

    Counters: `tls_refused` (we refused the peer), `tls_rejected` (the peer refused us), `tls_errors`
    (anything else: the connection broke during the handshake, a corrupt record).
    """
    cause = error.__cause__ if isinstance(error, trio.BrokenResourceError) and error.__cause__ else error
    if isinstance(cause, ssl.SSLCertVerificationError):
        return C.TLS_REFUSED, f"its certificate was rejected: {cause.verify_message}"
    if isinstance(cause, ssl.SSLEOFError):
        return C.TLS_ERRORS, "it closed the connection during the TLS handshake"
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return C.TLS_REFUSED, "it presented no certificate"
        if reason in _NOT_TLS:
            return C.TLS_REFUSED, "it does not speak TLS (a node without the `tls` option?)"
        if "_ALERT_" in reason:
            alert = reason.split("_ALERT_", 1)[1]
            meaning = _ALERTS.get(alert)
            text = f"it refused the TLS handshake with alert '{alert.lower().replace('_', ' ')}'"
            return C.TLS_REJECTED, f"{text}: {meaning}" if meaning else text
        if reason == "UNSUPPORTED_PROTOCOL":
            return C.TLS_REFUSED, "it does not speak TLS 1.3"
        return C.TLS_ERRORS, f"TLS error: {reason or cause}"
    return C.TLS_ERRORS, f"the connection broke during the TLS handshake ({cause or 'closed'})"

