"""Revoking a certificate without a new CA: `tls.crl` and `tls.deny`, over real TLS nodes on 127.0.0.1.

A revoked peer is refused right after the TLS handshake, whichever end dialled; a reload that revokes a
linked peer cuts that link (and only that one); bad revocation files, and a node's own revoked
certificate, are configuration errors naming the key; `certs revoke` writes a CRL that does all this.
Every wait is on state under `trio.fail_after` (`wait_until`), never on time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster import Errors, Inbox, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from procs import Proc
from test_tls import ROOT, Pki, start, swarm_status, tls_options

import swarm
from swarm import certs, cli
from swarm.config import TlsFiles
from swarm.transport import tls

WAIT = 10.0
# A revoked node that was told so redials at reconnectMaxDelay: short here, so that a redial is seen soon.
QUICK_REDIAL = {"reconnectMaxDelay": 0.2}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def leaf(files: dict[str, str]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(files["cert"]).read_bytes())


def fingerprint_line(files: dict[str, str]) -> str:
    return f"sha256:{leaf(files).fingerprint(hashes.SHA256()).hex()}\n"


def counter(conn: swarm.Connector, name: str) -> int:
    return conn.status()["counters"].get(name, 0)


def reported(errors: Errors, code: str, *texts: str) -> bool:
    return any(e.code == code and all(text in str(e) for text in texts) for e in errors.errors)


# ---------------------------------------------------------------------- refused at the handshake


@pytest.mark.parametrize("how", ["crl", "deny"])
async def test_revoked_peer_is_refused_at_the_handshake_both_ways(pki: Pki, tmp_path: Path, how: str) -> None:
    bad = pki.files("bad")
    if how == "crl":
        revocation = {"crl": str(certs.revoke(pki.ca_dir, bad["cert"]).crl)}
    else:
        deny = tmp_path / "deny.txt"
        deny.write_text("# shut out\n\n" + fingerprint_line(bad))
        revocation = {"deny": str(deny)}
    target_files = dict(pki.files("target"), **revocation)
    async with contextlib.AsyncExitStack() as stack:
        listener = await start(stack, tls_options(pki, "bad"))  # the target dials this one
        target = swarm.Connector(tls_options(pki, "target", [listener.address], tls=target_files))
        errors = Errors(target)
        await stack.enter_async_context(target)
        assert target.status()["tls"]["crl_entries" if how == "crl" else "deny_entries"] == 1
        dialler = swarm.Connector(tls_options(pki, "bad", [target.address], **QUICK_REDIAL))
        dialler_errors = Errors(dialler)
        await stack.enter_async_context(dialler)  # the same certificate, dialling the target
        await wait_until(lambda: reported(errors, "tls", "refused the link to", "is revoked")
                         and reported(errors, "tls", "refused the connection from", "is revoked"), WAIT,
                         f"both refusals reported: {errors.errors}")
        await wait_until(lambda: reported(dialler_errors, "refused", "our certificate is revoked"), WAIT,
                         f"the dialler told why: {dialler_errors.errors}")
        counters = target.status()["counters"]
        assert counters["tls_revoked_refused"] >= 2 and counters["tls_refused"] >= 2
        assert reported(errors, "tls", "is in the CRL of CN=swarm cluster CA" if how == "crl"
                        else "its fingerprint is in tls.deny")
        assert not target.status()["links"] and not dialler.is_ready


# ---------------------------------------------------------------------- the files


def test_bad_revocation_files_are_config_errors_naming_the_key(pki: Pki, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    files = pki.files("a")
    other = pki.other_ca()
    foreign_crl = certs.revoke(other, certs.issue(other, "x").cert).crl
    with pytest.raises(swarm.ConfigError,
                       match=r"^tls\.crl: .* holds a CRL of CN=other CA,O=swarm that no CA in tls\.ca"):
        tls.load(TlsFiles(**files, crl=str(foreign_crl)))
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"\x30\x03\x02\x01\x00")
    with pytest.raises(swarm.ConfigError, match=r"^tls\.crl: .* is not a CRL, PEM or DER"):
        tls.load(TlsFiles(**files, crl=str(garbage)))
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(swarm.ConfigError, match=r"^tls\.crl: .* is not a CRL"):
        tls.load(TlsFiles(**files, crl=str(garbage)))
    with pytest.raises(swarm.ConfigError, match=r"^tls\.crl: cannot read"):
        tls.load(TlsFiles(**files, crl=str(tmp_path / "missing.crl")))
    deny = tmp_path / "deny.txt"
    for text, problem in [("serial:1a\nsha256:abcd\n", "line 2: a SHA-256 fingerprint has 64 hex digits"),
                          ("# ok\nserial:xyz\n", "line 2: not hexadecimal"),
                          ("\n\nfingerprint deadbeef\n", "line 3: unknown kind of entry")]:
        deny.write_text(text)
        with pytest.raises(swarm.ConfigError, match=rf"^tls\.deny: .* {problem}"):
            tls.load(TlsFiles(**files, deny=str(deny)))
    # A node does not start with its own certificate revoked, by serial or by CRL.
    deny.write_text(f"serial:{leaf(files).serial_number:X}  # upper case, a comment\n")
    with pytest.raises(swarm.ConfigError, match=r"^tls\.cert: .* is revoked: serial \w+ is in tls\.deny"):
        swarm.Connector({"tls": dict(files, deny=str(deny))})
    crl = certs.revoke(pki.ca_dir, files["cert"]).crl
    with pytest.raises(swarm.ConfigError, match=r"^tls\.cert: .* is revoked: serial .* is in the CRL of"):
        tls.load(TlsFiles(**files, crl=str(crl)))
    # DER is read as well as PEM; a CRL past its next update is used, with a warning.
    b = pki.files("b")
    der = tmp_path / "crl.der"
    der.write_bytes(x509.load_pem_x509_crl(crl.read_bytes()).public_bytes(serialization.Encoding.DER))
    assert tls.load(TlsFiles(**b, crl=str(der))).revoked(leaf(files)) is not None
    ca_key, _ = certs.load_ca(pki.ca_dir)
    stale = x509.load_pem_x509_crl(crl.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(stale.issuer)
               .last_update(now - datetime.timedelta(days=40)).next_update(now - datetime.timedelta(days=10)))
    for entry in stale:
        builder = builder.add_revoked_certificate(entry)
    der.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    caplog.set_level(logging.WARNING, logger="swarm")
    assert "is in the CRL" in (tls.load(TlsFiles(**b, crl=str(der))).revoked(leaf(files)) or "")
    assert any("was due for an update" in record.getMessage() for record in caplog.records)


def test_certs_revoke_writes_a_crl_that_load_accepts(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = pki.files("a"), pki.files("b"), pki.files("c")
    assert cli.main(["certs", "revoke", str(pki.ca_dir), b["cert"]]) == 0
    assert f"revoked serial {leaf(b).serial_number:x} (b)" in capsys.readouterr().out
    crl = pki.ca_dir / certs.CA_CRL
    assert crl.stat().st_mode & 0o777 == 0o644
    assert cli.main(["certs", "revoke", str(pki.ca_dir), c["cert"]]) == 0
    assert cli.main(["certs", "revoke", str(pki.ca_dir), c["cert"]]) == 0  # again: re-signed, not doubled
    assert "already revoked" in capsys.readouterr().out
    setup = tls.load(TlsFiles(**a, crl=str(crl)))
    assert setup.status()["crl_entries"] == 2
    assert setup.revoked(leaf(b)) == (f"serial {leaf(b).serial_number:x} is in the CRL of "
                                      "CN=swarm cluster CA,O=swarm")
    assert setup.revoked(leaf(c)) is not None and setup.revoked(leaf(a)) is None
    foreign = certs.issue(pki.other_ca(), "f").cert
    assert cli.main(["certs", "revoke", str(pki.ca_dir), str(foreign)]) == 1
    assert "revoke it with its own CA" in capsys.readouterr().err
    assert not list(pki.ca_dir.glob(".*.tmp"))


# ---------------------------------------------------------------------- a reload cuts live links


async def test_reload_cuts_the_revoked_link_and_only_that_one(pki: Pki, tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("# nobody is denied yet\n")
    inbox = Inbox("c")
    async with contextlib.AsyncExitStack() as stack:
        a = await start(stack, tls_options(pki, "a", tls=dict(pki.files("a"), deny=str(deny))))
        a_errors = Errors(a)
        b = swarm.Connector(tls_options(pki, "b", [a.address], **QUICK_REDIAL))
        b_errors = Errors(b)
        await stack.enter_async_context(b)
        c = await start(stack, tls_options(pki, "c", [a.address]))
        c.subscribe("s", inbox)
        await wait_until(lambda: {"b", "c"} <= set(a.status()["links"]) and "a" in c.status()["links"], WAIT,
                         "a linked to b and c")
        c_serial = a.status()["tls"]["peers"]["c"]

        deny.write_text(f"# b's key leaked\nserial:{leaf(pki.files('b')).serial_number:x}\n")
        info = a.reload_tls()
        assert info["deny_entries"] == 1
        await wait_until(lambda: "b" not in a.status()["links"], WAIT, "a's link to b cut")
        assert counter(a, "links_cut_revoked") == 1
        assert reported(a_errors, "tls", "cutting the link to b", "serial", "is in tls.deny")
        await wait_until(lambda: reported(b_errors, "refused", "our certificate is revoked"), WAIT,
                         f"b told why: {b_errors.errors}")
        # Whoever redials whom, the handshake refuses it now, again and again.
        await wait_until(lambda: counter(a, "tls_revoked_refused") >= 2, WAIT, "b's redials refused")
        assert "b" not in a.status()["links"]
        # c was linked to a all along, and a's messages still reach it.
        assert a.status()["tls"]["peers"]["c"] == c_serial and counter(c, "links_lost") == 0
        for seq in range(10):
            a.publish("s", seq)
        await wait_until(lambda: len(inbox) == 10, WAIT, "a's messages at c")
        assert inbox.messages == list(range(10))


@pytest.mark.multiprocess
async def test_sighup_after_certs_revoke_cuts_the_link_of_the_node_command(pki: Pki, tmp_path: Path) -> None:
    files = pki.files("node-0")
    node_dir = Path(files["cert"]).parent
    crl = certs.revoke(pki.ca_dir, pki.files("retired")["cert"]).crl  # the CRL exists before the node

    def install_crl() -> None:  # as an operator copies it to the node: write, then rename
        certs.write_private(node_dir / "crl.pem", crl.read_bytes(), force=True, mode=0o644)

    install_crl()
    config = node_dir / "node.yml"  # the CRL's path is relative to it, like the other files
    config.write_text("plugins:\n  message:\n    type: direct\n    options:\n      host: 127.0.0.1\n"
                      "      port: 0\n      tls: {ca: ca.pem, cert: node-0.pem, key: node-0.key, "
                      "crl: crl.pem}\n")
    operator_flags = [f"--option=tls.{key}={path}" for key, path in pki.files("operator").items()]
    stderr = tmp_path / "node.stderr"
    with open(stderr, "wb") as handle:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "swarm", "node", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=handle, cwd=ROOT)
    node = Proc(process, stderr, "node-0")
    try:
        _name, address = (await node.expect("listening")).split()
        host, port = address.rsplit(":", 1)
        b_options: dict[str, Any] = tls_options(pki, "b", [(host, int(port))], **QUICK_REDIAL)
        async with swarm.Connector(b_options) as b:
            b_errors = Errors(b)
            await wait_until(lambda: "node-0" in b.status()["links"], WAIT, "b linked to the node process")
            assert cli.main(["certs", "revoke", str(pki.ca_dir), pki.files("b")["cert"]]) == 0
            install_crl()
            process.send_signal(signal.SIGHUP)
            assert (await node.expect("tls-reloaded")).startswith("node-0 ")
            await wait_until(lambda: "node-0" not in b.status()["links"]
                             and reported(b_errors, "refused", "our certificate is revoked"), WAIT,
                             f"b cut and told why: {b_errors.errors}")
            await wait_until(lambda: counter(b, "refused_by_peer") >= 2, WAIT, "b's redial refused")
        result = await swarm_status(address, "--json", *operator_flags)
        assert result.returncode == 0, result.stderr.decode()
        status = json.loads(result.stdout)
        assert status["counters"]["links_cut_revoked"] == 1 and status["counters"]["tls_revoked_refused"] >= 1
        assert process.returncode is None
    finally:
        await node.stop()
    assert process.returncode == 0, stderr.read_text()
