"""Certificates for mutual TLS between nodes: a cluster CA and node certificates signed by it.

    python -m swarm certs init DIR [--days 3650] [--force]
    python -m swarm certs issue DIR NAME [--days 365] [--force]
    python -m swarm certs show FILE
    python -m swarm certs revoke DIR CERT.pem [--days 30]

`init` writes `DIR/ca.key` and `DIR/ca.pem` (a self-signed CA); `issue` writes `DIR/NAME.key` and
`DIR/NAME.pem`, a certificate for the node whose `serverName` is NAME, signed by the CA in DIR. `show`
prints who a certificate is for, who issued it and when it expires. `revoke` adds a certificate's serial to
`DIR/crl.pem`, the CA's certificate revocation list (made if absent, re-signed each time), for the `tls.crl`
option of every node (docs/security.md, "Revoking a certificate").

Keys are EC P-256 (ECDSA with SHA-256): accepted by every TLS 1.3 stack, small, and fast to sign and
verify. Certificates are valid for TLS server and client authentication both (a node is either end of a
link) and are built to pass OpenSSL's strict X.509 checks (`VERIFY_X509_STRICT`).

**Where the node's name is.** A node certificate carries the server name in its subject alternative name
as a URI, `swarm:<name>` with the name percent-encoded (RFC 3986: everything but letters, digits and
`-._~`). That URI is the one canonical place the name is read back from (`node_name`): a peer's name is
the first `swarm:` URI of its certificate, and a certificate without one admits nobody. When the name is
also a valid DNS name it is added as a DNSName too, for tools that show DNS names; swarm does not read it.
The subject's common name is the name as well (cut to 64 characters), for humans only.

Files are written with owner-only permissions (0600; the directory, if created, 0700): each file is
created under a temporary name with `os.open(..., 0o600)`, so it is never readable by others, not even for
a moment, and then renamed over its final name, so a reader sees the old file or the new one, never half
a file. Existing files are only replaced with `force`. The CRL is the exception: it is public, meant to
be copied to every node, so it is written 0644 (by the same temporary-file-and-rename path).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import ipaddress
import os
import re
import secrets
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import SwarmError

__all__ = ["CA_CERT", "CA_CRL", "CA_KEY", "CertError", "CertPaths", "URI_SCHEME", "describe", "init",
           "is_dns_name", "issue", "load_ca", "make_ca", "make_node_certificate", "node_name", "node_uri",
           "revoke"]

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
CA_CRL = "crl.pem"
URI_SCHEME = "swarm"
# A node's certificate is valid from a little before it is made: clocks of a cluster differ a bit.
CLOCK_SKEW = datetime.timedelta(minutes=5)
DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 365
# A CRL's next update: a node warns once it is past (and still uses it), so a month leaves time to notice
# and re-sign (`certs revoke` again) without having to do it daily.
DEFAULT_CRL_DAYS = 30
# A server name fits one length byte on the wire (swarm.protocol.wire.MAX_NAME_BYTES).
MAX_NAME_BYTES = 255
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


class CertError(SwarmError):
    """A certificate could not be made or read; the message says which file and why."""


@dataclasses.dataclass(frozen=True)
class CertPaths:
    """Where a key and its certificate were written."""

    key: Path
    cert: Path


# ---------------------------------------------------------------------- names


def node_uri(name: str) -> str:
    """The URI naming `name` in a certificate's subject alternative name: `swarm:<percent-encoded>`."""
    return f"{URI_SCHEME}:{urllib.parse.quote(name, safe='-._~')}"


def is_dns_name(name: str) -> bool:
    """Is `name` a valid DNS name (labels of letters, digits and inner hyphens, 253 characters at most)?"""
    if not name or len(name) > 253 or not name.isascii():
        return False
    try:
        ipaddress.ip_address(name)
        return False  # an IP address is not a DNS name
    except ValueError:
        pass
    return all(_DNS_LABEL.match(label) for label in name.rstrip(".").split("."))


def node_name(certificate: x509.Certificate) -> str | None:
    """The swarm server name a certificate is for: its first `swarm:` URI, decoded; None if it has none."""
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    prefix = URI_SCHEME + ":"
    for uri in alternative.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix):
            try:
                name = urllib.parse.unquote(uri[len(prefix):], errors="strict")
            except UnicodeDecodeError:
                return None
            return name if 0 < len(name.encode("utf-8")) <= MAX_NAME_BYTES else None
    return None


def check_name(name: str) -> None:
    """A name a node certificate can be issued for (also used as a file name: no path separators)."""
    if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise CertError(f"NAME: expected a server name of 1..{MAX_NAME_BYTES} UTF-8 bytes, got {name!r}")
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        raise CertError(f"NAME: {name!r} cannot be a file name (no '/', '\\', NUL or leading '.')")
    if name == Path(CA_KEY).stem:
        raise CertError(f"NAME: {name!r} is the CA's file name; choose another name for the node")


# ---------------------------------------------------------------------- making keys and certificates


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _validity(days: int, not_before: datetime.datetime | None,
              not_after: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before if not_before is not None else _now() - CLOCK_SKEW
    end = not_after if not_after is not None else start + CLOCK_SKEW + datetime.timedelta(days=days)
    if end <= start:
        raise CertError(f"validity: not_after ({end:%Y-%m-%d %H:%M}) must be after not_before "
                        f"({start:%Y-%m-%d %H:%M})")
    return start, end


def make_ca(common_name: str = "swarm cluster CA", *, days: int = DEFAULT_CA_DAYS,
            not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None,
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA: its key and self-signed certificate (it may sign node certificates only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swarm"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    start, end = _validity(days, not_before, not_after)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(public)
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def make_node_certificate(name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *,
                          days: int = DEFAULT_NODE_DAYS, not_before: datetime.datetime | None = None,
                          not_after: datetime.datetime | None = None,
                          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and a certificate for the node `name`, signed by the CA.

    `not_before`/`not_after` override the validity (default: from now, minus a little clock skew, for
    `days` days); tests make an already-expired certificate with them.
    """
    if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise CertError(f"NAME: expected a server name of 1..{MAX_NAME_BYTES} UTF-8 bytes, got {name!r}")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(node_uri(name))]
    if is_dns_name(name):
        names.append(x509.DNSName(name))
    start, end = _validity(days, not_before, not_after)
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swarm"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
        .issuer_name(ca_cert.subject).public_key(public)
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------------- files


def write_private(path: str | os.PathLike[str], data: bytes, *, force: bool = False, mode: int = 0o600
                  ) -> None:
    """Write `data` to `path`, owner-only (0600) from its creation, replacing it atomically; `mode` is
    set once the data is written (0o644 for the CRL, which is public).

    Raises CertError if `path` exists and `force` is false.
    """
    path = Path(path)
    if not force and path.exists():
        raise CertError(f"{path} exists; pass --force (force=True) to replace it")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)  # exactly `mode`, whatever the umask
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise CertError(f"{directory}: cannot create the directory: {error.strerror}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CertError(f"{path}: cannot read the {what}: {error.strerror}") from None


def load_ca(directory: str | os.PathLike[str]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA key and certificate of `directory` (as written by `init`)."""
    directory = Path(directory)
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    if not key_path.exists():
        raise CertError(f"{key_path}: no CA here (create one with `python -m swarm certs init {directory}`)")
    try:
        key = serialization.load_pem_private_key(_read(key_path, "CA key"), password=None)
    except (ValueError, TypeError) as error:
        raise CertError(f"{key_path}: not an unencrypted PEM private key ({error})") from None
    try:
        certificate = x509.load_pem_x509_certificate(_read(cert_path, "CA certificate"))
    except ValueError as error:
        raise CertError(f"{cert_path}: not a PEM certificate ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path}: expected an EC key, got {type(key).__name__}")
    if certificate.public_key() != key.public_key():
        raise CertError(f"{key_path} does not belong to {cert_path}")
    return key, certificate


def init(directory: str | os.PathLike[str], *, common_name: str = "swarm cluster CA",
         days: int = DEFAULT_CA_DAYS, force: bool = False) -> CertPaths:
    """Create a cluster CA in `directory`: `ca.key` (0600) and `ca.pem`."""
    directory = Path(directory)
    _make_directory(directory)
    paths = CertPaths(directory / CA_KEY, directory / CA_CERT)
    if not force:
        for path in (paths.key, paths.cert):
            if path.exists():
                raise CertError(f"{path} exists; pass --force (force=True) to replace the CA")
    key, certificate = make_ca(common_name, days=days)
    write_private(paths.key, key_pem(key), force=force)
    write_private(paths.cert, cert_pem(certificate), force=force)
    return paths


def issue(directory: str | os.PathLike[str], name: str, *, days: int = DEFAULT_NODE_DAYS,
          not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None,
          force: bool = False, out: str | os.PathLike[str] | None = None) -> CertPaths:
    """Issue a certificate for the node `name` with the CA in `directory`: `NAME.key` (0600), `NAME.pem`.

    The files go to `out` (default: `directory`). The key is written first, then the certificate, each
    replaced atomically; a node reloading between the two sees a key that does not match its certificate,
    refuses the reload and keeps its old files in use (reload again).
    """
    check_name(name)
    ca_key, ca_cert = load_ca(directory)
    target = Path(out) if out is not None else Path(directory)
    _make_directory(target)
    paths = CertPaths(target / f"{name}.key", target / f"{name}.pem")
    if not force:
        for path in (paths.key, paths.cert):
            if path.exists():
                raise CertError(f"{path} exists; pass --force (force=True) to replace it")
    key, certificate = make_node_certificate(name, ca_key, ca_cert, days=days, not_before=not_before,
                                             not_after=not_after)
    write_private(paths.key, key_pem(key), force=force)
    write_private(paths.cert, cert_pem(certificate), force=force)
    return paths


@dataclasses.dataclass(frozen=True)
class Revoked:
    """What `revoke` did."""

    crl: Path
    serial: int
    name: str | None
    added: bool  # False: the serial was listed already (the CRL was re-signed)
    entries: int
    next_update: datetime.datetime


def revoke(directory: str | os.PathLike[str], certificate_file: str | os.PathLike[str], *,
           days: int = DEFAULT_CRL_DAYS) -> Revoked:
    """Add the serial of the certificate in `certificate_file` to `directory/crl.pem` (made if absent),
    signed by the CA in `directory`, next update in `days` days. Nodes with `tls.crl` set to a copy of it
    refuse that certificate once they reload. Running it again for a listed serial re-signs the CRL."""
    ca_key, ca_cert = load_ca(directory)
    source = Path(certificate_file)
    try:
        certificate = x509.load_pem_x509_certificate(_read(source, "certificate"))
    except ValueError as error:
        raise CertError(f"{source}: not a PEM certificate ({error})") from None
    if certificate.issuer != ca_cert.subject:
        raise CertError(f"{source}: issued by {certificate.issuer.rfc4514_string()}, not by the CA in "
                        f"{directory} ({ca_cert.subject.rfc4514_string()}); revoke it with its own CA")
    try:
        certificate.verify_directly_issued_by(ca_cert)
    except Exception:  # InvalidSignature, ValueError
        raise CertError(f"{source}: not signed by the CA in {directory}'s key") from None
    path = Path(directory) / CA_CRL
    entries: list[x509.RevokedCertificate] = []
    number = 0
    if path.exists():
        try:
            old = x509.load_pem_x509_crl(_read(path, "CRL"))
        except ValueError as error:
            raise CertError(f"{path}: not a PEM CRL ({error}); move it away to start a new one") from None
        if old.issuer != ca_cert.subject or not old.is_signature_valid(ca_key.public_key()):
            raise CertError(f"{path}: not signed by the CA in {directory}; move it away to start a new one")
        entries = list(old)
        try:
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            pass
    now = _now()
    added = certificate.serial_number not in {entry.serial_number for entry in entries}
    if added:
        entries.append(x509.RevokedCertificateBuilder().serial_number(certificate.serial_number)
                       .revocation_date(now).build())
    next_update = now + datetime.timedelta(days=days)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(next_update)
               .add_extension(x509.CRLNumber(number + 1), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    write_private(path, crl.public_bytes(serialization.Encoding.PEM), force=True, mode=0o644)
    return Revoked(path, certificate.serial_number, node_name(certificate), added, len(entries), next_update)


def describe(certificate: x509.Certificate) -> dict[str, object]:
    """What an operator wants to know about a certificate (what `certs show` prints)."""
    return {
        "name": node_name(certificate),
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": f"{certificate.serial_number:x}",
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "expired": certificate.not_valid_after_utc <= _now(),
    }


# ---------------------------------------------------------------------- command line


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of days >= 1, got {text!r}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `certs init|issue|show|revoke` to the subcommands of `python -m swarm`."""
    certs = commands.add_parser("certs", help="create a cluster CA and node certificates for mutual TLS",
                                description="Create a cluster CA and node certificates for the `tls` option "
                                            "(docs/security.md). Keys are written owner-only (0600).")
    actions = certs.add_subparsers(dest="certs_command", metavar="{init,issue,show,revoke}", required=True)
    init_parser = actions.add_parser("init", help="create a cluster CA: DIR/ca.key and DIR/ca.pem")
    init_parser.add_argument("directory", metavar="DIR")
    init_parser.add_argument("--days", type=_days, default=DEFAULT_CA_DAYS,
                             help=f"validity in days (default: {DEFAULT_CA_DAYS})")
    init_parser.add_argument("--common-name", default="swarm cluster CA", help="the CA's subject CN")
    init_parser.add_argument("--force", action="store_true", help="replace an existing CA")
    issue_parser = actions.add_parser("issue", help="create DIR/NAME.key and DIR/NAME.pem for node NAME")
    issue_parser.add_argument("directory", metavar="DIR", help="directory of the CA (from `certs init`)")
    issue_parser.add_argument("name", metavar="NAME", help="the node's serverName")
    issue_parser.add_argument("--days", type=_days, default=DEFAULT_NODE_DAYS,
                              help=f"validity in days (default: {DEFAULT_NODE_DAYS})")
    issue_parser.add_argument("--out", metavar="OUTDIR", help="write the files there (default: DIR)")
    issue_parser.add_argument("--force", action="store_true", help="replace existing files (rotation)")
    show_parser = actions.add_parser("show", help="print who a certificate is for and when it expires")
    show_parser.add_argument("file", metavar="FILE")
    revoke_parser = actions.add_parser("revoke", help="add a certificate's serial to DIR/crl.pem (the CRL)")
    revoke_parser.add_argument("directory", metavar="DIR", help="directory of the CA that issued it")
    revoke_parser.add_argument("certificate", metavar="CERT", help="the certificate to revoke (PEM)")
    revoke_parser.add_argument("--days", type=_days, default=DEFAULT_CRL_DAYS,
                               help=f"the CRL's next update, in days (default: {DEFAULT_CRL_DAYS})")
    for parser in (certs, init_parser, issue_parser, show_parser, revoke_parser):
        parser.add_argument("--log-level", default="WARNING",
                            choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> list[str]:
    """Carry out a parsed `certs` command; return the lines to print. Raises CertError."""
    if args.certs_command == "init":
        paths = init(args.directory, common_name=args.common_name, days=args.days, force=args.force)
        return [f"wrote {paths.key} (0600) and {paths.cert}: cluster CA valid for {args.days} days"]
    if args.certs_command == "issue":
        paths = issue(args.directory, args.name, days=args.days, force=args.force, out=args.out)
        return [f"wrote {paths.key} (0600) and {paths.cert}: node {args.name!r} ({node_uri(args.name)}), "
                f"valid for {args.days} days"]
    if args.certs_command == "revoke":
        done = revoke(args.directory, args.certificate, days=args.days)
        who = f"serial {done.serial:x} ({done.name or 'no swarm name'})"
        what = f"revoked {who}" if done.added else f"{who} was already revoked, CRL re-signed"
        return [f"{what}: wrote {done.crl} (0644), {done.entries} revoked, next update "
                f"{done.next_update:%Y-%m-%d %H:%M} UTC; copy it to each node's tls.crl and reload them "
                "(SIGHUP)"]
    path = Path(args.file)
    try:
        certificates = x509.load_pem_x509_certificates(_read(path, "certificate"))
    except ValueError as error:
        raise CertError(f"{path}: not a PEM certificate ({error})") from None
    lines: list[str] = []
    for certificate in certificates:
        info = describe(certificate)
        lines += [f"{key:<11}{value}" for key, value in info.items()] + [""]
    return lines[:-1]

