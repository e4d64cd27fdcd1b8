"""Mutual TLS between nodes, over real sockets on 127.0.0.1: certificates, the `tls` option, refusals,
a TLS cluster's delivery, and certificate and CA rotation without losing a message.

Each refusal is checked from both ends where both are nodes: the node that refuses counts it, logs it and
reports an `error` event; the refused node never becomes ready; an honest TLS peer's messages keep
arriving meanwhile. Every wait is bounded (`wait_until`, `trio.fail_after`), no assertion is about time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster import Errors, Inbox, barrier, wait_until
from cryptography import x509
from procs import Proc

import swarm
from swarm import certs, cli
from swarm.config import Options, load_config_file
from swarm.protocol import wire
from swarm.transport import tls
from swarm.transport.engine import fetch_status, open_bus_warning

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0


# ---------------------------------------------------------------------- certificates for the tests


class Pki:
    """A cluster CA in `root/ca`, node files issued on demand, and each node's own copy of the bundle
    (so that a test can change one node's trusted CAs, as an operator would)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_dir = root / "ca"
        certs.init(self.ca_dir)
        self.ca_pem = self.ca_dir / certs.CA_CERT

    def other_ca(self, label: str = "other") -> Path:
        directory = self.root / label
        if not (directory / certs.CA_KEY).exists():
            certs.init(directory, common_name=f"{label} CA")
        return directory

    def files(self, name: str, *, ca_dir: Path | None = None, bundle: list[Path] | None = None,
              expired: bool = False) -> dict[str, str]:
        """The `tls` option of node `name`: a certificate from `ca_dir` (default: the cluster CA) and a
        bundle of the CAs in `bundle` (default: the cluster CA)."""
        node_dir = self.root / "nodes" / name
        node_dir.mkdir(parents=True, exist_ok=True)
        ca_dir = ca_dir or self.ca_dir
        if not (node_dir / f"{name}.pem").exists():
            if expired:
                now = datetime.datetime.now(datetime.UTC)
                certs.issue(ca_dir, name, out=node_dir, not_before=now - datetime.timedelta(days=30),
                            not_after=now - datetime.timedelta(days=1))
            else:
                certs.issue(ca_dir, name, out=node_dir)
        self.write_bundle(name, bundle or [self.ca_pem])
        return {"ca": str(node_dir / "ca.pem"), "cert": str(node_dir / f"{name}.pem"),
                "key": str(node_dir / f"{name}.key")}

    def write_bundle(self, name: str, cas: list[Path]) -> None:
        """Replace node `name`'s CA bundle with the concatenation of `cas` (atomically)."""
        certs.write_private(self.root / "nodes" / name / "ca.pem", b"".join(p.read_bytes() for p in cas),
                            force=True)

    def reissue(self, name: str, *, ca_dir: Path | None = None) -> int:
        """A new key and certificate for `name` (from `ca_dir`) over its files; returns the new serial."""
        paths = certs.issue(ca_dir or self.ca_dir, name, out=self.root / "nodes" / name, force=True)
        return x509.load_pem_x509_certificate(paths.cert.read_bytes()).serial_number


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def tls_options(pki: Pki, name: str, seeds: list[tuple[str, int]] | None = None, **extra: Any
                ) -> dict[str, Any]:
    files = extra.pop("tls", None) or pki.files(name)
    options: dict[str, Any] = {"serverName": name, "host": HOST, "port": 0, "tls": files,
                               "handshakeTimeout": 2.0}
    if seeds:
        options["seedNodes"] = [f"{host}:{port}" for host, port in seeds]
    options.update(extra)
    return options


def hello(name: str) -> bytes:
    return wire.encode_control(wire.KIND_HELLO, {
        "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": name, "epoch": 1,
        "address": [HOST, 9], "nonce": 7})


def serial(conn: swarm.Connector) -> str:
    return conn.status()["tls"]["serial"]


# ---------------------------------------------------------------------- certs


def test_ca_and_node_files_are_owner_only_and_name_reads_back(tmp_path: Path) -> None:
    ca = certs.init(tmp_path / "pki")
    node = certs.issue(tmp_path / "pki", "node-1.example")
    odd = certs.issue(tmp_path / "pki", "nœud 2 (test)")
    assert (tmp_path / "pki").stat().st_mode & 0o777 == 0o700
    for path in (ca.key, ca.cert, node.key, node.cert, odd.key, odd.cert):
        assert path.stat().st_mode & 0o777 == 0o600, path
    certificate = x509.load_pem_x509_certificate(node.cert.read_bytes())
    alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alternative.get_values_for_type(x509.UniformResourceIdentifier) == ["swarm:node-1.example"]
    assert alternative.get_values_for_type(x509.DNSName) == ["node-1.example"]
    assert certs.node_name(certificate) == "node-1.example"
    odd_certificate = x509.load_pem_x509_certificate(odd.cert.read_bytes())
    assert certs.node_name(odd_certificate) == "nœud 2 (test)"
    odd_names = odd_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert odd_names.get_values_for_type(x509.DNSName) == []  # not a DNS name: the URI only
    assert certs.is_dns_name("a-b.c") and not certs.is_dns_name("-a") and not certs.is_dns_name("1.2.3.4")


def test_issue_refuses_to_overwrite_without_force_and_makes_expired_certificates(tmp_path: Path) -> None:
    certs.init(tmp_path)
    first = certs.issue(tmp_path, "a")
    with pytest.raises(certs.CertError, match="exists"):
        certs.issue(tmp_path, "a")
    with pytest.raises(certs.CertError, match="exists"):
        certs.init(tmp_path)
    with pytest.raises(certs.CertError, match="CA's file name"):
        certs.issue(tmp_path, "ca")
    with pytest.raises(certs.CertError, match="file name"):
        certs.issue(tmp_path, "../escape")
    old = x509.load_pem_x509_certificate(first.cert.read_bytes()).serial_number
    second = certs.issue(tmp_path, "a", force=True)
    assert x509.load_pem_x509_certificate(second.cert.read_bytes()).serial_number != old
    assert second.key.stat().st_mode & 0o777 == 0o600
    now = datetime.datetime.now(datetime.UTC)
    expired = certs.issue(tmp_path, "old", not_before=now - datetime.timedelta(days=3),
                          not_after=now - datetime.timedelta(days=1))
    assert certs.describe(x509.load_pem_x509_certificate(expired.cert.read_bytes()))["expired"] is True
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_certs_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["certs", "init", str(tmp_path / "pki")]) == 0
    assert cli.main(["certs", "issue", str(tmp_path / "pki"), "n1", "--days", "30"]) == 0
    assert "swarm:n1" in capsys.readouterr().out
    assert cli.main(["certs", "issue", str(tmp_path / "pki"), "n1"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert cli.main(["certs", "issue", str(tmp_path / "nowhere"), "n1"]) == 1
    assert "no CA here" in capsys.readouterr().err
    assert cli.main(["certs", "show", str(tmp_path / "pki" / "n1.pem")]) == 0
    shown = capsys.readouterr().out
    assert "name       n1" in shown and "expired    False" in shown


# ---------------------------------------------------------------------- the `tls` option


def test_tls_option_is_checked_file_by_file(pki: Pki, tmp_path: Path) -> None:
    files = pki.files("a")
    assert tls.resolve(Options.from_mapping({"tls": files})).serverName == "a"  # the certificate's name
    # The options check only the shape: the files are read when a node is built from them.
    assert Options.from_mapping({"tls": dict(files, ca=str(tmp_path / "missing.pem"))}).serverName is None
    with pytest.raises(swarm.ConfigError, match=r"^tls: expected a mapping"):
        Options.from_mapping({"tls": "a.pem"})
    with pytest.raises(swarm.ConfigError, match=r"^tls\.key: missing"):
        Options.from_mapping({"tls": {"ca": files["ca"], "cert": files["cert"]}})
    with pytest.raises(swarm.ConfigError, match=r"^tls\.password: unknown key"):
        Options.from_mapping({"tls": dict(files, password="x")})
    with pytest.raises(swarm.ConfigError, match=r"^tls\.ca: cannot read .*No such file"):
        tls.resolve(Options.from_mapping({"tls": dict(files, ca=str(tmp_path / "missing.pem"))}))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(swarm.ConfigError, match=r"^tls\.ca: .* holds no PEM certificate"):
        tls.resolve(Options.from_mapping({"tls": dict(files, ca=str(garbage))}))
    with pytest.raises(swarm.ConfigError, match=r"^tls\.ca: .* not a CA"):
        tls.resolve(Options.from_mapping({"tls": dict(files, ca=files["cert"])}))
    with pytest.raises(swarm.ConfigError, match=r"^tls\.cert: .* holds no PEM certificate"):
        tls.resolve(Options.from_mapping({"tls": dict(files, cert=str(garbage))}))
    with pytest.raises(swarm.ConfigError, match=r"^tls\.key: .* is not a PEM private key"):
        tls.resolve(Options.from_mapping({"tls": dict(files, key=str(garbage))}))
    with pytest.raises(swarm.ConfigError, match=r"^tls\.key: .* is not the key of the certificate"):
        tls.resolve(Options.from_mapping({"tls": dict(files, key=pki.files("b")["key"])}))
    foreign = pki.files("f", ca_dir=pki.other_ca())
    with pytest.raises(swarm.ConfigError, match=r"^tls\.cert: .* is not signed by a CA in tls\.ca"):
        tls.resolve(Options.from_mapping({"tls": dict(foreign, ca=str(pki.ca_pem))}))
    with pytest.raises(swarm.ConfigError, match=r"^serverName: 'b' is not the name in the tls certificate"):
        tls.resolve(Options.from_mapping({"serverName": "b", "tls": files}))
    with pytest.raises(swarm.ConfigError, match=r"^tls\.ca"):
        swarm.Connector({"tls": dict(files, ca=str(tmp_path / "missing.pem"))})
    with pytest.raises(swarm.ConfigError, match=r"^serverName: 'b' is not the name in the tls certificate"):
        swarm.Connector({"serverName": "b", "tls": files})
    assert swarm.Connector({"tls": files}).server_name == "a"


def test_config_imports_nothing_of_the_transport() -> None:
    # The transport imports swarm.config; importing it back would make a circle. Checked in a process
    # of its own, with a bare `swarm` package (its __init__ imports everything), after a `tls` option.
    code = ("import sys, types; package = types.ModuleType('swarm'); package.__path__ = [sys.argv[1]]; "
            "sys.modules['swarm'] = package; import swarm.config; "
            "swarm.config.Options.from_mapping({'tls': {'ca': 'ca.pem', 'cert': 'a.pem', 'key': 'a.key'}}); "
            "print(' '.join(sorted(name for name in sys.modules if name.startswith('swarm.'))))")
    loaded = subprocess.run([sys.executable, "-c", code, str(ROOT / "swarm")], capture_output=True,
                            text=True, check=True).stdout.split()
    assert loaded == ["swarm.config", "swarm.errors"]


def test_tls_paths_in_a_config_file_are_relative_to_it_and_flags_set_one_file(pki: Pki, tmp_path: Path
                                                                               ) -> None:
    files = pki.files("a")
    config = Path(files["cert"]).parent / "node.yml"
    config.write_text("plugins:\n  message:\n    type: direct\n    options:\n"
                      "      tls: {ca: ca.pem, cert: a.pem, key: a.key}\n")
    options, _ = load_config_file(config)
    assert options["tls"] == files
    loaded = cli.load_options(str(config), [])
    assert loaded.serverName == "a" and loaded.tls is not None and loaded.tls.cert == files["cert"]
    b = pki.files("b")
    flagged = cli.load_options(str(config), [f"tls.cert={b['cert']}", f"tls.key={b['key']}"])
    assert flagged.serverName == "b" and flagged.tls is not None and flagged.tls.ca == files["ca"]
    with pytest.raises(swarm.ConfigError, match=r"^tls\.key: missing"):
        cli.load_options(None, [f"tls.ca={files['ca']}", f"tls.cert={files['cert']}"])


def test_a_node_without_tls_on_a_reachable_address_warns_that_the_bus_is_open(pki: Pki) -> None:
    # The warning is checked without binding anything but loopback.
    warning = open_bus_warning(Options.from_mapping({"serverName": "n", "host": "0.0.0.0"}), 6021)
    assert warning is not None and "without the `tls` option: the bus is open" in warning
    assert open_bus_warning(Options.from_mapping({"serverName": "n", "host": "10.1.2.3"})) is not None
    assert open_bus_warning(Options.from_mapping({"serverName": "n", "host": "127.0.0.1"})) is None
    assert open_bus_warning(Options.from_mapping({"serverName": "n", "host": "::1"})) is None
    assert open_bus_warning(Options.from_mapping({"host": "0.0.0.0", "tls": pki.files("n")})) is None


# ---------------------------------------------------------------------- a TLS cluster


async def test_three_node_tls_cluster_delivers_exactly_once_and_in_order(pki: Pki) -> None:
    names = ["n0", "n1", "n2"]
    inboxes = {name: Inbox(name) for name in names}
    errors: dict[str, Errors] = {}
    per_publisher = 300
    async with contextlib.AsyncExitStack() as stack:
        conns: list[swarm.Connector] = []
        for name in names:
            conn = swarm.Connector(tls_options(pki, name, [conns[0].address] if conns else None))
            conn.subscribe("t", inboxes[name])
            errors[name] = Errors(conn)
            conns.append(await stack.enter_async_context(conn))
        await wait_until(lambda: all(c.is_ready and len(c.status()["links"]) == 2 for c in conns),
                         WAIT, "3-node TLS mesh")
        for conn in conns:
            for seq in range(per_publisher):
                conn.publish("t", {"from": conn.server_name, "seq": seq})
            await conn.drain()
        expected = per_publisher * 2
        await wait_until(lambda: all(len(inbox) == expected for inbox in inboxes.values()), WAIT,
                         "every message delivered")
        await barrier(conns)  # per-origin FIFO: a duplicate sent before the barrier has arrived by now
        for name, inbox in inboxes.items():
            assert len(inbox) == expected
            for origin in names:
                if origin != name:
                    seqs = [m["seq"] for m in inbox.messages if m["from"] == origin]
                    assert seqs == list(range(per_publisher)), (name, origin)
            assert not any(m["from"] == name for m in inbox.messages)  # no echo
        for conn in conns:
            status = conn.status()
            assert set(status["tls"]["peers"]) == set(names) - {conn.server_name}
            counters = status["counters"]
            assert not any(counters.get(key) for key in ("tls_refused", "tls_rejected", "tls_errors",
                                                         "identity_mismatch", "gaps_given_up"))
            assert not errors[conn.server_name].errors


# ---------------------------------------------------------------------- refusals


class Pair:
    """A TLS node (`target`) and an honest TLS peer publishing to it; hostile peers come and go."""

    def __init__(self, pki: Pki, target: swarm.Connector, honest: swarm.Connector) -> None:
        self.pki = pki
        self.target = target
        self.honest = honest
        self.errors = Errors(target)
        self.received: list[int] = []
        target.subscribe("t", self.received.append)
        self.sent = 0

    async def check_honest_traffic(self) -> None:
        """A message the honest peer publishes now still reaches the target, and nothing was lost."""
        for _ in range(20):
            self.honest.publish("t", self.sent)
            self.sent += 1
        await wait_until(lambda: len(self.received) >= self.sent, WAIT, "the honest peer's messages")
        assert self.received == list(range(self.sent))
        assert "honest" in self.target.status()["links"]

    def reported(self, code: str, text: str) -> bool:
        return any(e.code == code and text in str(e) for e in self.errors.errors)


@pytest.fixture
async def pair(pki: Pki) -> AsyncIterator[Pair]:
    async with swarm.Connector(tls_options(pki, "target")) as target:
        async with swarm.Connector(tls_options(pki, "honest", [target.address])) as honest:
            await wait_until(lambda: honest.is_ready and "honest" in target.status()["links"], WAIT,
                             "the honest peer linked")
            result = Pair(pki, target, honest)
            await result.check_honest_traffic()
            yield result


async def refused_both_ways(pair: Pair, bad_options: Options | dict[str, Any], *, target_code: str,
                            target_text: str, target_counter: str, bad_code: str, bad_text: str,
                            newcomer_code: str, newcomer_text: str) -> None:
    """A bad node dials the target and is refused; then a good node whose only seed is the bad node is
    refused by it or refuses it. Neither the bad node nor that newcomer ever becomes ready."""
    target = pair.target
    bad = swarm.Connector(bad_options)
    bad_errors = Errors(bad)
    before = target.status()["counters"].get(target_counter, 0)
    async with bad:
        await wait_until(lambda: target.status()["counters"].get(target_counter, 0) >= before + 2, WAIT,
                         f"two refusals counted ({target_counter})")
        await wait_until(lambda: pair.reported(target_code, target_text), WAIT,
                         f"the target reports {target_code}: {target_text}: {pair.errors.errors}")
        await wait_until(lambda: any(e.code == bad_code and bad_text in str(e) for e in bad_errors.errors),
                         WAIT, f"the bad node reports {bad_code}: {bad_text}: {bad_errors.errors}")
        assert not bad.is_ready
        assert target.status()["links"] == ["honest"]  # the real one only
        await pair.check_honest_traffic()

        newcomer = swarm.Connector(tls_options(pair.pki, "newcomer", [bad.address]))
        newcomer_errors = Errors(newcomer)
        async with newcomer:
            await wait_until(lambda: any(e.code == newcomer_code and newcomer_text in str(e)
                                         for e in newcomer_errors.errors), WAIT,
                             f"the newcomer reports {newcomer_code}: {newcomer_text}")
            await wait_until(lambda: newcomer.status()["counters"].get("dials", 0) >= 2, WAIT, "a re-dial")
            assert not newcomer.is_ready
            assert not newcomer.status()["links"]
        assert not bad.is_ready
    await pair.check_honest_traffic()


async def test_peer_without_a_certificate_is_refused(pair: Pair) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(pair.pki.ca_pem))
    stream = trio.SSLStream(await trio.open_tcp_stream(*pair.target.address), context, server_hostname=None)
    with trio.fail_after(WAIT):
        await stream.do_handshake()  # TLS 1.3: the client is done first; the server decides after
        await stream.send_all(hello("anonymous"))
        with pytest.raises(trio.BrokenResourceError) as caught:
            while await stream.receive_some(65536):
                pass
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    assert caught.value.__cause__.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"  # told why
    await trio.aclose_forcefully(stream)
    await wait_until(lambda: pair.reported("tls", "it presented no certificate"), WAIT, "the report")
    assert pair.target.status()["counters"]["tls_refused"] == 1
    assert "anonymous" not in pair.target.status()["links"]
    await pair.check_honest_traffic()


async def test_certificate_from_another_ca_is_refused(pair: Pair) -> None:
    pki = pair.pki
    other = pki.other_ca()
    # It trusts our CA too (so only our side can refuse it), but its certificate is from another CA.
    files = pki.files("intruder", ca_dir=other, bundle=[pki.ca_pem, other / certs.CA_CERT])
    await refused_both_ways(
        pair, tls_options(pki, "intruder", [pair.target.address], tls=files),
        target_code="tls", target_text="its certificate was rejected", target_counter="tls_refused",
        bad_code="tls", bad_text="alert 'unknown ca': our certificate is not signed by a CA it trusts",
        newcomer_code="tls", newcomer_text="its certificate was rejected")


async def test_certificate_of_another_cluster_is_refused_both_ways(pair: Pair) -> None:
    pki = pair.pki
    other = pki.other_ca()
    files = pki.files("stranger", ca_dir=other, bundle=[other / certs.CA_CERT])
    # The stranger refuses our certificate first; the target learns it from the alert.
    await refused_both_ways(
        pair, tls_options(pki, "stranger", [pair.target.address], tls=files),
        target_code="tls", target_text="alert 'unknown ca'", target_counter="tls_rejected",
        bad_code="tls", bad_text="its certificate was rejected",
        newcomer_code="tls", newcomer_text="its certificate was rejected")


async def test_expired_certificate_is_refused(pair: Pair) -> None:
    pki = pair.pki
    files = pki.files("stale", expired=True)
    await refused_both_ways(
        pair, tls_options(pki, "stale", [pair.target.address], tls=files),
        target_code="tls", target_text="its certificate was rejected: certificate has expired",
        target_counter="tls_refused",
        bad_code="tls", bad_text="alert 'certificate expired'",
        newcomer_code="tls", newcomer_text="certificate has expired")


async def test_valid_certificate_for_x_claiming_to_be_y_is_refused(pair: Pair) -> None:
    pki = pair.pki
    # mallory has a good certificate of the cluster, for "mallory", and claims to be "honest".
    impostor = Options.from_mapping(tls_options(pki, "mallory", [pair.target.address]))
    impostor = impostor.replace(serverName="honest")
    lost_before = pair.honest.status()["counters"].get("links_lost", 0)
    await refused_both_ways(
        pair, impostor,
        target_code="refused", target_text="certificate is for 'mallory', HELLO claims 'honest'",
        target_counter="identity_mismatch",
        bad_code="refused", bad_text="certificate is for 'mallory', HELLO claims 'honest'",
        newcomer_code="refused", newcomer_text="certificate is for 'mallory', HELLO claims 'honest'")
    # The real "honest" kept its link all along.
    assert pair.honest.status()["counters"].get("links_lost", 0) == lost_before
    assert pair.target.status()["tls"]["peers"]["honest"] == serial(pair.honest)


async def test_plaintext_peer_dialling_a_tls_node_is_refused(pair: Pair) -> None:
    seed = "{}:{}".format(*pair.target.address)
    plain = {"serverName": "plain", "host": HOST, "port": 0, "seedNodes": [seed]}
    await refused_both_ways(
        pair, plain,
        target_code="tls", target_text="it does not speak TLS", target_counter="tls_refused",
        bad_code="refused", bad_text="accepts TLS connections only",
        newcomer_code="tls", newcomer_text="it does not speak TLS")


async def test_tls_node_dialling_a_plaintext_node_is_refused(pair: Pair) -> None:
    async with swarm.Connector({"serverName": "plain", "host": HOST, "port": 0}) as plain:
        plain_errors = Errors(plain)
        newcomer = swarm.Connector(tls_options(pair.pki, "newcomer", [plain.address]))
        newcomer_errors = Errors(newcomer)
        async with newcomer:
            await wait_until(lambda: newcomer.status()["counters"].get("tls_refused", 0) >= 2, WAIT,
                             "two refusals")
            assert any(e.code == "tls" and "refused the link to" in str(e)
                       and "it does not speak TLS" in str(e) for e in newcomer_errors.errors)
            await wait_until(lambda: any(e.code == "protocol" and "the peer speaks TLS" in str(e)
                                         for e in plain_errors.errors), WAIT, "the plaintext node's reason")
            assert not newcomer.is_ready and not plain.status()["links"]
            await pair.check_honest_traffic()


async def test_status_of_a_tls_node_needs_a_certificate(pair: Pair) -> None:
    address = pair.target.address
    with pytest.raises(ConnectionError, match="accepts TLS connections only"):
        await fetch_status(*address, timeout=WAIT)
    operator = tls.load(Options.from_mapping({"tls": pair.pki.files("operator")}).tls)  # type: ignore[arg-type]
    status = await fetch_status(*address, timeout=WAIT, tls_context=operator.client)
    assert status["name"] == "target" and status["counters"]["tls_refused"] == 1
    await pair.check_honest_traffic()


# ---------------------------------------------------------------------- rotation


class SteadyPublisher:
    """Publishes 0, 1, 2, ... on "s" until stopped, a few at a time, holding back on full queues."""

    def __init__(self, conn: swarm.Connector) -> None:
        self.conn = conn
        self.sent = 0
        self._stop = trio.Event()
        self.done = trio.Event()

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                for _ in range(5):
                    self.conn.publish("s", self.sent)
                    self.sent += 1
                await self.conn.drain()
                await trio.sleep(0.005)
        finally:
            self.done.set()

    async def advance(self, count: int) -> None:
        """Wait until `count` more messages have gone out."""
        target = self.sent + count
        await wait_until(lambda: self.sent >= target, WAIT, f"{count} more messages published")

    async def stop(self) -> int:
        self._stop.set()
        with trio.fail_after(WAIT):
            await self.done.wait()
        return self.sent


async def start(stack: contextlib.AsyncExitStack, options: dict[str, Any],
                inbox: Inbox | None = None) -> swarm.Connector:
    """A started connector (subscribed to "s" into `inbox`), closed when `stack` is."""
    conn = swarm.Connector(options)
    if inbox is not None:
        conn.subscribe("s", inbox)
    return await stack.enter_async_context(conn)


async def test_certificate_replaced_and_reloaded_without_downtime(pki: Pki) -> None:
    inbox_b, inbox_c = Inbox("b"), Inbox("c")
    async with contextlib.AsyncExitStack() as stack:
        a = await start(stack, tls_options(pki, "a"))
        b = await start(stack, tls_options(pki, "b", [a.address]), inbox_b)
        await wait_until(lambda: b.is_ready and "b" in a.status()["links"], WAIT, "a and b linked")
        old_serial = serial(a)
        publisher = SteadyPublisher(a)
        # Entered into the stack (not nested): connectors started below are closed before it ends.
        nursery = await stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(publisher.run)
        await publisher.advance(100)

        new_serial = f"{pki.reissue('a'):x}"  # same CA, new key and certificate, same files
        assert new_serial != old_serial
        info = a.reload_tls()
        assert info["serial"] == new_serial == serial(a)
        assert a.status()["counters"]["tls_reloads"] == 1
        await publisher.advance(100)

        # A new peer joins through a: its handshake shows a's new certificate.
        c = await start(stack, tls_options(pki, "c", [a.address]), inbox_c)
        await wait_until(lambda: c.is_ready and "a" in c.status()["links"], WAIT, "c joined")
        assert c.status()["tls"]["peers"]["a"] == new_serial
        # The link a-b made before the reload runs on, with the old certificate.
        assert b.status()["tls"]["peers"]["a"] == old_serial
        assert b.status()["counters"].get("links_lost", 0) == 0
        await publisher.advance(200)
        total = await publisher.stop()
        await wait_until(lambda: len(inbox_b) == total, WAIT, "every message at b")
        assert inbox_b.messages == list(range(total))  # nothing lost, nothing twice, in order
        await wait_until(lambda: inbox_c.messages and inbox_c.messages[-1] == total - 1, WAIT, "c's tail")
        first = inbox_c.messages[0]
        assert inbox_c.messages == list(range(first, total)) and total - first >= 200
        for conn in (a, b, c):
            assert conn.status()["counters"].get("gaps_given_up", 0) == 0


async def test_ca_rotation_one_node_at_a_time_with_zero_loss(pki: Pki) -> None:
    names = ["n0", "n1", "n2"]
    inboxes = {name: Inbox(name) for name in ["n1", "n2", "n3"]}
    old_ca, new_ca_dir = pki.ca_pem, pki.other_ca("new")
    new_ca = new_ca_dir / certs.CA_CERT
    conns: dict[str, swarm.Connector] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in names:
            seeds = [conns["n0"].address] if conns else None
            conns[name] = await start(stack, tls_options(pki, name, seeds), inboxes.get(name))
        await wait_until(lambda: all(c.is_ready and len(c.status()["links"]) == 2 for c in conns.values()),
                         WAIT, "the old-CA mesh")
        publisher = SteadyPublisher(conns["n0"])
        nursery = await stack.enter_async_context(trio.open_nursery())  # see the test above
        nursery.start_soon(publisher.run)
        await publisher.advance(50)
        # 1. Every node trusts both CAs.
        for name in names:
            pki.write_bundle(name, [old_ca, new_ca])
            assert len(conns[name].reload_tls()["authorities"]) == 2
            await publisher.advance(20)
        # 2. One by one, each node gets a certificate of the new CA.
        for name in names:
            pki.reissue(name, ca_dir=new_ca_dir)
            conns[name].reload_tls()
            await publisher.advance(20)
        # 3. The old CA is trusted no more.
        for name in names:
            pki.write_bundle(name, [new_ca])
            assert conns[name].reload_tls()["authorities"] == ["CN=new CA,O=swarm"]
            await publisher.advance(20)

        # New connections now run on the new CA alone: a node with a new-CA certificate joins...
        n3_files = pki.files("n3", ca_dir=new_ca_dir, bundle=[new_ca])
        conns["n3"] = await start(stack, tls_options(pki, "n3", [conns["n1"].address], tls=n3_files),
                                  inboxes["n3"])
        await wait_until(lambda: conns["n3"].is_ready and len(conns["n3"].status()["links"]) == 3,
                         WAIT, "n3 linked to every node")
        # ... and a node with an old-CA certificate is refused.
        errors = Errors(conns["n1"])
        legacy_files = pki.files("legacy", bundle=[old_ca, new_ca])
        async with swarm.Connector(tls_options(pki, "legacy", [conns["n1"].address],
                                               tls=legacy_files)) as legacy:
            await wait_until(lambda: any(e.code == "tls" and "its certificate was rejected" in str(e)
                                         for e in errors.errors), WAIT, "the old CA refused")
            assert not legacy.is_ready
        await publisher.advance(100)
        total = await publisher.stop()
        for name in ("n1", "n2"):
            await wait_until(lambda name=name: len(inboxes[name]) == total, WAIT, f"every message at {name}")
            assert inboxes[name].messages == list(range(total)), name
        await wait_until(lambda: inboxes["n3"].messages and inboxes["n3"].messages[-1] == total - 1, WAIT,
                         "n3's tail")
        first = inboxes["n3"].messages[0]
        assert inboxes["n3"].messages == list(range(first, total))
        for name in names:
            counters = conns[name].status()["counters"]
            assert counters["tls_reloads"] == 3
            assert counters.get("links_lost", 0) == 0  # the links made under the old CA ran on
            assert counters.get("gaps_given_up", 0) == 0


async def test_failed_reload_keeps_the_files_in_use(pki: Pki) -> None:
    async with swarm.Connector(tls_options(pki, "a")) as a:
        before = serial(a)
        key = Path(a.options.tls.cert).with_suffix(".key")  # type: ignore[union-attr]
        good_key = key.read_bytes()
        key.write_bytes(b"garbage")
        with pytest.raises(swarm.ConfigError, match=r"^tls\.key"):
            a.reload_tls()
        key.write_bytes(good_key)
        with pytest.raises(swarm.ConfigError, match=r"^tls\.cert: .* is for 'b', but this node is 'a'"):
            a.reload_tls(pki.files("b"))
        assert serial(a) == before
        counters = a.status()["counters"]
        assert counters["tls_reload_failures"] == 2 and not counters.get("tls_reloads")
        # The node still admits peers with the files it had.
        async with swarm.Connector(tls_options(pki, "b", [a.address])) as b:
            await wait_until(lambda: b.is_ready, WAIT, "b joined")
            assert b.status()["tls"]["peers"]["a"] == before
    async with swarm.Connector({"serverName": "p", "host": HOST, "port": 0}) as plain:
        with pytest.raises(swarm.ConfigError, match="runs without TLS"):
            plain.reload_tls()


# ---------------------------------------------------------------------- the command line


async def swarm_status(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT * 2):
        return await trio.run_process([sys.executable, "-m", "swarm", "status", *args], capture_stdout=True,
                                      capture_stderr=True, check=False, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.multiprocess
async def test_sighup_makes_the_node_command_reload_its_certificate(pki: Pki, tmp_path: Path) -> None:
    files = pki.files("node-0")
    node_dir = Path(files["cert"]).parent
    config = node_dir / "node.yml"
    config.write_text("plugins:\n  message:\n    type: direct\n    options:\n      host: 127.0.0.1\n"
                      "      port: 0\n      tls: {ca: ca.pem, cert: node-0.pem, key: node-0.key}\n")
    operator = pki.files("operator")
    operator_flags = [f"--option=tls.{key}={path}" for key, path in operator.items()]
    stderr = tmp_path / "node.stderr"
    with open(stderr, "wb") as handle:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "swarm", "node", "--config", str(config), "--log-level", "INFO"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=handle, cwd=ROOT)
    node = Proc(process, stderr, "node-0")
    try:
        name, address = (await node.expect("listening")).split()
        assert name == "node-0"  # from the certificate
        await node.expect("ready")

        def status_of(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
            assert result.returncode == 0, result.stderr.decode()
            return json.loads(result.stdout)

        before = status_of(await swarm_status(address, "--json", *operator_flags))
        assert before["name"] == "node-0" and not before["counters"].get("tls_reloads")

        new_serial = f"{pki.reissue('node-0'):x}"
        process.send_signal(signal.SIGHUP)
        assert await node.expect("tls-reloaded") == f"node-0 {new_serial}"
        after = status_of(await swarm_status(address, "--json", *operator_flags))
        assert after["counters"]["tls_reloads"] == 1

        Path(files["key"]).write_bytes(b"not a key")
        process.send_signal(signal.SIGHUP)
        failed = await node.expect("tls-reload-failed")
        assert failed.startswith("node-0: tls.key:"), failed
        # The files loaded before stay in use: a status request over TLS is still answered.
        still = status_of(await swarm_status(address, "--json", *operator_flags))
        assert still["counters"]["tls_reload_failures"] == 1 and still["counters"]["tls_reloads"] == 1

        plain = await swarm_status(address)  # no certificate: no status
        assert plain.returncode == 1 and b"accepts TLS connections only" in plain.stderr
        assert process.returncode is None  # SIGHUP did not end it
    finally:
        await node.stop()
    assert process.returncode == 0, stderr.read_text()


async def test_refusals_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture, pki: Pki) -> None:
    caplog.set_level(logging.WARNING, logger="swarm")
    async with swarm.Connector(tls_options(pki, "target")) as target:
        async with swarm.Connector({"serverName": "plain", "host": HOST, "port": 0,
                                    "seedNodes": ["{}:{}".format(*target.address)]}):
            await wait_until(lambda: target.status()["counters"].get("tls_refused", 0) >= 1, WAIT,
                             "a refusal")
    assert any(record.levelno == logging.WARNING and "target: TLS: refused the connection from 127.0.0.1:"
               in record.getMessage() and "it does not speak TLS" in record.getMessage()
               for record in caplog.records), [record.getMessage() for record in caplog.records]
