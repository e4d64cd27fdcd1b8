"""Options of a swarm node: their names, types, defaults, validation, and the deepstream config file.

This is the one home of every option. `docs/configuration.md` is written from `OPTIONS` (see
`render_markdown`), so the reference cannot drift from the code. Option names are deepstream's camelCase,
because operators paste them from deepstream configs (`serverName`, `seedNodes`, ...).

Validation happens in `Options.from_mapping`, and every failure raises `ConfigError` naming the key
and what was expected, so `swarm.Connector({...})` fails in its constructor, as deepstream's connector test
suite (case S3) requires, and `python -m swarm node` can print one line and exit with status 2.

Of `tls` only the shape is checked here: its files are read and checked, and `serverName` taken from the
certificate, when a node is built from the options (`swarm.transport.tls.resolve`, in the same constructor
and before the command line starts anything). Certificates are the transport's business, and the transport
imports this module, not the other way round.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import platform
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["OPTIONS", "Option", "Options", "TlsFiles", "format_bridge", "is_unix_socket_path",
           "load_config_file", "parse_address", "parse_bridge", "parse_option_text", "render_markdown"]


def parse_address(value: str, key: str = "address", *, any_port: bool = False) -> tuple[str, int]:
    """Parse "host:port" (or "[v6]:port") into (host, port); raise ConfigError naming `key`. With
    `any_port`, port 0 (an address to listen on, any free port) is allowed."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}: expected 'host:port', got {value!r}")
    host, _, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(f"{key}: expected 'host:port' with a host, got {value!r}")
    lowest = 0 if any_port else 1
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        raise ConfigError(f"{key}: port must be an integer in {lowest}..65535, got {value!r}")
    return host, port


# Longest server name, in bytes of UTF-8: swarm.protocol.wire.MAX_NAME_BYTES (a name travels in one length
# byte). Not imported from there: this module imports nothing of swarm but its errors (tests/test_tls.py),
# so the two are kept equal by tests/test_config_edges.py.
MAX_NAME_BYTES = 255

# Longest path a unix socket can be bound at (sun_path is 108 bytes on Linux, with the final NUL).
UNIX_PATH_MAX = 107


def is_unix_socket_path(value: str) -> bool:
    """Does this `bridge` value name a unix socket (it has a '/', or no ':') rather than host:port?"""
    return "/" in value or ":" not in value


def parse_bridge(value: Any, key: str = "bridge") -> tuple[str, str, int]:
    """Parse the `bridge` option: ("unix", absolute path, 0) or ("tcp", loopback host, port).

    Raise ConfigError naming `key` for anything else: a host that is not a loopback IP address above all,
    since the bridge has no authentication and must not be reachable from other hosts.
    """
    expected = "'127.0.0.1:PORT' (a loopback address) or a unix socket path"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    if is_unix_socket_path(value):
        path = os.path.abspath(value)
        if len(path.encode("utf-8")) > UNIX_PATH_MAX:
            raise ConfigError(f"{key}: a unix socket path is at most {UNIX_PATH_MAX} bytes long, got "
                              f"{path!r}")
        return ("unix", path, 0)
    host, _, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"{key}: the bridge listens on loopback only (it has no authentication): expected "
                          f"{expected}, got {value!r}")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port must be an integer in 0..65535, got {value!r}")
    return ("tcp", host, port)


def format_bridge(kind: str, host: str, port: int) -> str:
    """The `bridge` value of a parsed address: 'HOST:PORT' ('[::1]:PORT'), or the socket path."""
    if kind == "unix":
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


TLS_KEYS = ("ca", "cert", "key")
# Optional files of `tls`, for revocation (docs/security.md, "Revoking a certificate"): none by default,
# since a cluster that never revokes needs neither.
TLS_OPTIONAL_KEYS = ("crl", "deny")


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """The `tls` option: the cluster CA bundle, this node's certificate and its private key (PEM files,
    absolute paths), and optionally what is revoked: a CRL file and a deny-list."""

    ca: str
    cert: str
    key: str
    crl: str | None = None  # CRLs (PEM or DER) signed by a CA of `ca`: the serials they list are refused
    deny: str | None = None  # a text file of `sha256:<fingerprint>` / `serial:<hex>` lines, refused too

    @classmethod
    def from_value(cls, value: Any, key: str = "tls") -> TlsFiles:
        """Check the shape of a `{ca, cert, key[, crl, deny]}` mapping; ConfigError names `tls.ca` etc.
        Files are not read here but when a node is built (`swarm.transport.tls.resolve`)."""
        if isinstance(value, TlsFiles):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping {{ca: FILE, cert: FILE, key: FILE}}, got {value!r}")
        for name in value:
            if name not in TLS_KEYS + TLS_OPTIONAL_KEYS:
                raise ConfigError(f"{key}.{name}: unknown key (expected ca, cert, key, crl, deny)")
        paths = {}
        what = {"ca": "the cluster CA bundle", "cert": "this node's certificate", "key": "its private key"}
        for name in TLS_KEYS:
            path = value.get(name)
            if path is None:
                raise ConfigError(f"{key}.{name}: missing; expected the path of {what[name]} (a PEM file)")
            if isinstance(path, os.PathLike):
                path = os.fspath(path)
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{key}.{name}: expected a file path, got {path!r}")
            paths[name] = os.path.abspath(path)
        for name in TLS_OPTIONAL_KEYS:
            path = value.get(name)
            if isinstance(path, os.PathLike):
                path = os.fspath(path)
            if path is not None and (not isinstance(path, str) or not path):
                raise ConfigError(f"{key}.{name}: expected a file path, got {path!r}")
            paths[name] = os.path.abspath(path) if path is not None else None
        return cls(**paths)


@dataclasses.dataclass(frozen=True)
class Option:
    """One configuration key: its type, default, allowed range and meaning."""

    key: str
    kind: str  # "str" | "int" | "float" | "bool" | "address" | "addresses" | "choice" | "tls" | "bridge"
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    # Computed default, given the options already validated (e.g. minimumPeers depends on seedNodes).
    derive: Callable[[dict[str, Any]], Any] | None = None
    choices: tuple[str, ...] = ()
    # Read by the protocol core: `swarm.protocol.config.CoreConfig` has a field for it (snake_case).
    core: bool = False

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "tls":
            return "a mapping `{ca, cert, key}` of PEM file paths, optionally `crl` and `deny`"
        if self.kind == "bridge":
            return "'127.0.0.1:PORT' (loopback) or a unix socket path"
        names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                 "address": "'host:port' (port 0: any free port)",
                 "addresses": "a list of 'host:port' strings"}
        return names[self.kind] + self._bounds()

    def _bounds(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f" in {_number(self.minimum)}..{_number(self.maximum)}"
        if self.minimum is not None:
            return f" >= {_number(self.minimum)}"
        return ""

    def coerce(self, value: Any, *, from_text: bool = False) -> Any:
        """Check `value` (or parse it, when it came from a `--option key=value` flag)."""
        key = self.key
        if from_text and isinstance(value, str):
            value = parse_option_text(self, value)
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"{key}: expected {self.expected()}, got {value!r}")
            return value
        if self.kind == "bridge":
            return format_bridge(*parse_bridge(value, key))
        if self.kind == "address":
            return format_bridge("tcp", *parse_address(value, key, any_port=True))
        if self.kind == "str":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}: expected {self.expected()}, got {value!r}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected {self.expected()}, got {value!r}")
            return value
        if self.kind in ("int", "float"):
            if isinstance(value, float) and not math.isfinite(value):
                # nan passes every comparison with a bound, and inf every lower one: refused by name.
                noun = "integer" if self.kind == "int" else "number"
                raise ConfigError(f"{key}: expected a finite {noun}{self._bounds()}, got {value!r}")
            ok_types = (int,) if self.kind == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok_types):
                raise ConfigError(f"{key}: expected {self.expected()}, got {value!r}")
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise ConfigError(f"{key}: expected {self.expected()}, got {value!r}")
            return float(value) if self.kind == "float" else value
        if self.kind == "addresses":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key}: expected {self.expected()}, got {value!r}")
            return tuple(parse_address(item, f"{key}[{i}]") for i, item in enumerate(value))
        if self.kind == "tls":
            return TlsFiles.from_value(value, key)
        raise AssertionError(self.kind)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_option_text(option: Option, text: str) -> Any:
    """Turn a command-line string into the option's type, with YAML's rules (so `true`, `3`, `[a, b]`)."""
    if option.kind in ("str", "choice", "bridge", "address"):
        return text
    if option.kind == "addresses":
        return [part.strip() for part in text.split(",") if part.strip()]
    try:  # numbers, booleans, and `tls={ca: a.pem, cert: b.pem, key: b.key}`
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if option.kind in ("int", "float") and isinstance(value, str):
        # YAML reads `nan` and `inf` as strings (only `.nan`, `.inf` as numbers); Python's float() does
        # not, and those would be refused as strings anyway: make them the non-finite numbers they spell,
        # so that the error says what is wrong with them.
        try:
            number = float(value)
        except ValueError:
            return value
        return value if math.isfinite(number) else number
    return value


def _default_advertise(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _default_server_name() -> str:
    # Unique per process start, readable in logs: the host name says where, the suffix tells restarts apart.
    return f"{platform.node()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# The defaults, and why each was chosen:
OPTIONS: tuple[Option, ...] = (
    Option("serverName", "str", None,
           "This node's unique name in the cluster (deepstream's `serverName`). Default: host name, process "
           "id and a random suffix.", derive=lambda o: _default_server_name(), core=True),
    Option("clusterName", "str", "swarm",
           "Nodes only link with nodes of the same cluster name; a peer of another cluster is refused.",
           core=True),
    Option("host", "str", "127.0.0.1",
           "Address to listen on. Loopback by default, so nothing is exposed unless asked for."),
    Option("advertiseHost", "str", None,
           "Address peers should dial to reach this node (sent in the handshake and gossiped). Default: "
           "`host`; when `host` is a wildcard (0.0.0.0, ::), 127.0.0.1 with a warning, so set it on "
           "multi-host clusters.", derive=lambda o: _default_advertise(o["host"])),
    Option("port", "int", 6021, "TCP port to listen on; 0 picks a free ephemeral port.",
           minimum=0, maximum=65535),
    Option("seedNodes", "addresses", (),
           "Addresses ('host:port') dialled at start. Further peers are learned from them. Listing the "
           "node's own address is harmless. A host may be a DNS name: it is resolved again at every dial, "
           "and every address it resolves to is tried in turn, so a Kubernetes headless service whose pod "
           "IPs change works as a seed, as Consul's retry-join does.", core=True),
    Option("minimumPeers", "int", None,
           "Peers to be linked to before the node is ready. Default 1 when `seedNodes` is set, else 0 (a "
           "first node alone is ready at once).", minimum=0,
           derive=lambda o: 1 if o["seedNodes"] else 0, core=True),
    Option("maxMessageSize", "int", 1 << 20,
           "Largest message (encoded) in bytes; larger publishes raise MessageTooLarge and larger incoming "
           "frames close the link. 1 MiB, the common default of NATS and GossipSub.",
           minimum=64, maximum=64 << 20, core=True),
    Option("sendQueueSize", "int", 8192,
           "Frames queued per peer link before further frames to that peer are dropped (and counted by "
           "message); the peer pulls what it missed from the cache of a peer. `drain()` waits until the "
           "queues of every link that keeps up are at most half full (a link that stays over half full "
           "for a second lags, and no longer holds publishers back). Control frames (keepalives, pulls, "
           "the tree's) may take up to 256 frames and 1 MiB more.", minimum=16),
    Option("sendQueueBytes", "int", 32 << 20,
           "Bytes queued per peer link at most, beside `sendQueueSize` frames. 32 MiB holds 3 s of a "
           "saturated 10 MB/s link; Redis cuts a pub/sub client at 32 MiB of output buffer.",
           minimum=64 << 10),
    Option("deliveryQueueBytes", "int", 64 << 20,
           "Bytes of received messages waiting for this node's subscriber callbacks at most. Relaying "
           "never waits for callbacks; when they fall this far behind, further messages are dropped for "
           "the local subscribers only, counted per origin and reported (`error` code `slow_consumer`). "
           "64 MiB is NATS's pending-bytes limit of a subscription.", minimum=64 << 10),
    Option("cacheBytes", "int", 128 << 20,
           "Bytes of recent DATA frames every node keeps, for peers that pull what they missed (a gap, "
           "a full queue, a stall) and for tree grafts. 128 MiB holds over 10 s of 1,000 msgs/s of "
           "1 KiB many times over, and 2.5 s of the 50 MB/s a node relays at most here.",
           minimum=1 << 20, core=True),
    Option("cacheSeconds", "float", 30.0,
           "Seconds a frame stays in that cache at most: a member stalled (or cut off) for less catches "
           "up with no loss once it is back.", minimum=1.0, core=True),
    Option("failureTimeout", "float", 3.0,
           "Seconds of silence after which a peer link is declared dead and closed. Keepalives are sent "
           "at a third of it, so two may be lost before a healthy link is dropped.", minimum=0.1, core=True),
    Option("handshakeTimeout", "float", None,
           "Seconds a new connection may take to complete the hello exchange. Default: `failureTimeout`.",
           minimum=0.05, derive=lambda o: o["failureTimeout"], core=True),
    Option("reorderTimeout", "float", 1.0,
           "Seconds a message waits for an earlier one from the same origin before the gap is given up "
           "(and counted as lost). Flooding normally fills gaps within a round trip.", minimum=0.01,
           core=True),
    Option("seenMaxEntries", "int", 100_000,
           "Upper bound on the seen-record: origins tracked plus out-of-order messages held.",
           minimum=16, core=True),
    Option("seenTtl", "float", 120.0,
           "Seconds an origin's seen-record entry lives after its last message (GossipSub's seen cache "
           "also keeps 2 minutes).", minimum=1.0, core=True),
    Option("reconnectMinDelay", "float", 0.05,
           "First delay before re-dialling a lost or unreachable peer; doubled on each failure, with jitter.",
           minimum=0.001, core=True),
    Option("reconnectMaxDelay", "float", 2.0,
           "Upper bound of the re-dial delay.", minimum=0.01, core=True),
    Option("localLinks", "int", 4,
           "Ring links per node: the nearest live nodes on the ring, half on each side (a Watts-Strogatz "
           "lattice of degree k). 4 keeps the ring connected when any one node fails.", minimum=2,
           maximum=64, core=True),
    Option("shortcuts", "int", 2,
           "Long-range links per node, drawn from the nodes it knows: they cut the hop count from ~N/k "
           "to ~log N (docs/architecture.md).", minimum=0, maximum=64, core=True),
    Option("shortcutDistribution", "choice", "harmonic",
           "How shortcuts are drawn: `harmonic` (probability ~ 1/ring distance, which lets greedy routing "
           "of direct messages find short paths, after Kleinberg) or `uniform`.",
           choices=("harmonic", "uniform"), core=True),
    Option("maxPeers", "int", None,
           "Most links a node keeps, inbound included. Default 2 x (localLinks + shortcuts). Further "
           "inbound requests are refused with hints of better peers, and counted.", minimum=2,
           derive=lambda o: 2 * (o["localLinks"] + o["shortcuts"]), core=True),
    Option("reserveSize", "int", 32,
           "Nodes kept in the view besides the ring neighbourhood and the links: the pool shortcuts are "
           "drawn from and partitions are repaired with (HyParView's passive view is 30).", minimum=0,
           core=True),
    Option("gossipInterval", "float", 0.5,
           "Seconds between view exchanges with each linked peer (T-Man rounds), which also carry whether "
           "a node still wants each link.", minimum=0.01, core=True),
    Option("probeInterval", "float", 2.0,
           "Mean seconds between probes: a linked node dials one lost node, remembered address or seed "
           "now and then (every 0.5 to 1.5 times this), which is how a partition heals.", minimum=0.1,
           core=True),
    Option("broadcast", "choice", "tree",
           "How payloads spread: `tree` (Plumtree with two parents per stream, `treeParents`: payloads "
           "along the two shortest paths to each node, message ids on the other links, a missing payload "
           "grafted after `graftTimeout` or pulled; two copies per node instead of one per link, so less "
           "CPU and bandwidth, and as reliable and, after crashes, partitions, churn and lost segments, as "
           "quick as flooding in every simulated scenario and crash test) or `flood` (every link carries "
           "every message once; simplest, keeps no per-stream state, the most redundant, and the slowest: "
           "a publisher that does more work outruns a CPU-starved subscriber less often, which then drops "
           "less as a slow consumer). docs/performance.md has the figures.",
           choices=("flood", "tree"), core=True),
    Option("graftTimeout", "float", 0.1,
           "With `broadcast: tree`: seconds to wait for a payload announced by an id before asking the "
           "announcer for it (and making that link part of the tree).", minimum=0.001, core=True),
    Option("treeParents", "int", 2,
           "With `broadcast: tree`: peers each node takes every stream from at once (its parents, those "
           "whose copies crossed the fewest links). 1 is Plumtree's spanning tree: one copy per node, but "
           "a retransmitted segment or a parent that leaves delays its whole branch; 2 (the default) "
           "reads two copies per message and a late or lost parent is covered by the other "
           "(docs/performance.md has the figures).", minimum=1, maximum=4, core=True),
    Option("peersFile", "str", None,
           "File in which the node keeps the addresses of the nodes it knows (rewritten every few seconds "
           "and at exit). On start they are dialled like seeds, so a restarted node rejoins through any "
           "node it remembers even when every seed is down. Default: none (nothing is written)."),
    Option("forgetAfter", "float", 60.0,
           "Seconds after which a member that cannot be reached is forgotten and no longer dialled "
           "(seeds are kept: dialled while the node is isolated, probed now and then otherwise).",
           minimum=0.1, core=True),
    Option("tls", "tls", None,
           "Mutual TLS between nodes: `{ca: FILE, cert: FILE, key: FILE}`, the cluster CA bundle, this "
           "node's certificate and its key (PEM; made by `python -m swarm certs`). Every link is then TLS "
           "1.3, both ends show a certificate from the bundle's CAs, and a peer's certificate must name "
           "the server name it claims; there is no plaintext fallback. `serverName` defaults to the "
           "certificate's name. Optional `crl: FILE` (CRLs, PEM or DER, each signed by a CA of the bundle) "
           "and `deny: FILE` (lines `sha256:<certificate fingerprint>` or `serial:<hex>`, `#` comments) "
           "revoke certificates: a peer showing one is refused at the handshake, and a node does not "
           "start with a revoked certificate. Files are re-read on SIGHUP and by "
           "`Connector.reload_tls()`, which also cuts the live links of peers now revoked. Default: "
           "none, plaintext (warned about when `host` is not loopback). See docs/security.md."),
    Option("signOrigins", "bool", True,
           "With `tls`: sign what this node originates (DATA, direct messages, its LEAVE and peer record) "
           "with its certificate's key, and check every new frame against its origin's certificate before "
           "relaying or delivering it, so that no member can forge or alter another's messages "
           "(docs/security.md). `false` trusts every member that holds a certificate, as protocol "
           "version 3 did, and saves the signing and checking CPU (docs/performance.md). Give every "
           "node of a cluster the same value: a checking node drops what an unsigned one sends (counted "
           "and reported as `error` code `unverified`). Ignored without `tls`."),
    Option("logFormat", "choice", "text",
           "How `python -m swarm` writes its log lines on stderr: `text`, or `json`: one JSON object a line "
           "(time, level, logger, node, message), with the node's name in each, for log collectors.",
           choices=("text", "json")),
    Option("metrics", "address", None,
           "Where to serve Prometheus metrics (`/metrics`) and health checks (`/healthz`: 200 while the node "
           "runs; `/readyz`: 200 while it is ready and holds its name), as `host:port` (port 0 picks a free "
           "one). Default: none (no HTTP server). docs/operations.md lists the metrics."),
    Option("exitOnStdinClose", "bool", False,
           "`python -m swarm node` leaves the cluster and exits once its stdin reaches end of file: a "
           "supervisor that starts it with a pipe on stdin (the deepstream plugin's supervised mode) then "
           "leaves no orphan node behind when it dies, even by SIGKILL. Off by default, since a node "
           "started by a shell or a service manager often has stdin closed or on /dev/null."),
    Option("bridge", "bridge", None,
           "Where `python -m swarm node` (or a `ClusterNode`) accepts local clients of the sidecar bridge, "
           "for servers not written in Python (docs/bridge.md): `127.0.0.1:PORT` (a loopback address only; "
           "port 0 picks a free one) or the path of a unix socket. Default: none (no bridge)."),
    Option("bridgeQueueBytes", "int", None,
           "Bytes of messages waiting for one bridge client at most. A client that falls this far behind is "
           "a slow consumer: further messages are dropped for it alone, counted per origin and reported to "
           "it (a `dropped` op); it is never disconnected for it. Default: `deliveryQueueBytes`, the bound "
           "of the node's own subscribers.", minimum=64 << 10, derive=lambda o: o["deliveryQueueBytes"]),
)

OPTIONS_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}


class _Options:
    """Validated options of one node, one attribute per entry of `OPTIONS` (camelCase, as in deepstream's
    config). Build with `Options.from_mapping`.

    `serverName` is None only with `tls` and no serverName given: the name is the certificate's, read when
    the node is built (`swarm.transport.tls.resolve`), since this module reads no certificate.
    """

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None = None, *, from_text: bool = False) -> Options:
        """Validate `mapping`; raise ConfigError naming the first bad key and what it expects."""
        if mapping is None:
            mapping = {}
        if isinstance(mapping, _Options):
            return mapping  # type: ignore[return-value]
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"options: expected a mapping of option names to values, got {mapping!r}")
        for key in mapping:
            if key not in OPTIONS_BY_KEY:
                raise ConfigError(f"{key}: unknown option (known: {', '.join(sorted(OPTIONS_BY_KEY))})")
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = mapping.get(option.key)
            if raw is None:
                values[option.key] = option.derive(values) if option.derive else option.default
            else:
                values[option.key] = option.coerce(raw, from_text=from_text)
        if values["reconnectMaxDelay"] < values["reconnectMinDelay"]:
            raise ConfigError("reconnectMaxDelay: expected a number >= reconnectMinDelay "
                              f"({values['reconnectMinDelay']:g}), got {values['reconnectMaxDelay']:g}")
        _check_host(values["host"])
        if values["maxPeers"] < values["localLinks"] + values["shortcuts"]:
            raise ConfigError(f"maxPeers: expected an integer >= localLinks + shortcuts "
                              f"({values['localLinks'] + values['shortcuts']}), got {values['maxPeers']}")
        _check_server_name(values["serverName"])
        if values["tls"] is not None and mapping.get("serverName") is None:
            values["serverName"] = None  # the certificate's name, which `tls.resolve` reads
        return cls(**values)

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# The fields are the options themselves, so that adding an option is one entry in OPTIONS.
Options = dataclasses.make_dataclass(
    "Options", [(option.key, Any) for option in OPTIONS], bases=(_Options,), frozen=True,
    namespace={"__module__": __name__, "__doc__": _Options.__doc__})


def _check_server_name(name: str | None) -> None:
    """A server name travels in one length byte (wire.MAX_NAME_BYTES): refuse a longer one here, with the
    key, not when the node starts. (An empty one is refused by its type already.)"""
    if name is None:
        return
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise ConfigError(f"serverName: expected a string of valid UTF-8 text, got {name!r} (character "
                          f"{error.start} cannot be encoded)") from None
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"serverName: {name[:20]!r}... is {size} bytes of UTF-8; at most "
                          f"{MAX_NAME_BYTES} are allowed")


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"host: expected an IP address or 'localhost', got {host!r}") from None


class _DuplicateKey(Exception):
    def __init__(self, path: str, line: int, first_line: int) -> None:
        super().__init__(path)
        self.path, self.line, self.first_line = path, line, first_line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader, but a mapping that repeats a key is an error (SafeLoader keeps the last value, so a
    pasted-in second `serverName:` would silently win). Each node's dotted path is remembered, so that the
    error can say which key: parents are constructed before their children."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._paths: dict[int, str] = {}

    def _path(self, node: yaml.Node) -> str:
        return self._paths.get(id(node), "")

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            here = self._path(node)
            first: dict[Any, int] = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base`: keys given beside it override the merged ones, as intended
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    seen = key in first
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it
                if seen:
                    raise _DuplicateKey(_key_path(here, key), line, first[key])
                first[key] = line
            self.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                self._paths.setdefault(id(value_node), _key_path(here, key))
        return super().construct_mapping(node, deep=deep)

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        if isinstance(node, yaml.SequenceNode):
            here = self._path(node)
            for index, child in enumerate(node.value):
                self._paths.setdefault(id(child), f"{here}[{index}]")
        return super().construct_sequence(node, deep=deep)


def _key_path(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _yaml_error_text(error: yaml.YAMLError) -> str:
    """A PyYAML error on one line, with the line and column of the problem (its own text spans several)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        text = f"{error.context}: {error.problem}" if error.context else error.problem
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            text += f" (line {mark.line + 1}, column {mark.column + 1})"
        return " ".join(text.split())
    return " ".join(str(error).split())


def load_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a deepstream-style config.yml; return (message plugin options, the whole document).

    Accepted shape (deepstream 3's `plugins: message:` section; `name: direct` works as `type: direct`)::

        serverName: node-a
        plugins:
          message:
            type: direct
            options: {host: 127.0.0.1, port: 6021, seedNodes: [127.0.0.1:6022]}

    A top-level `serverName` is used unless the options give one.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ConfigError(f"config: cannot read {name!r}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"config: {name!r} is not valid UTF-8: byte {raw[error.start]:#04x} at offset "
                          f"{error.start} (line {line})") from None
    try:
        loader = _StrictLoader(text)  # (this checks the characters already)
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except _DuplicateKey as duplicate:
        raise ConfigError(f"config: {name!r}: duplicate key {duplicate.path!r} (line {duplicate.line}; "
                          f"first given on line {duplicate.first_line})") from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise ConfigError(f"config: {name!r} is not valid YAML: character #x{error.character:04x} is not "
                          f"allowed (line {line})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config: {name!r} is not valid YAML: {_yaml_error_text(error)}") from None
    except RecursionError:
        raise ConfigError(f"config: {name!r} is not valid YAML: nested too deeply") from None
    if not isinstance(document, dict):
        raise ConfigError("config: expected a YAML mapping at the top level")
    plugins = document.get("plugins")
    if not isinstance(plugins, dict) or "message" not in plugins:
        raise ConfigError("plugins.message: missing; expected a section with `type: direct`")
    message = plugins["message"]
    if not isinstance(message, dict):
        raise ConfigError("plugins.message: expected a mapping with `type: direct` and `options`")
    kind = message.get("type", message.get("name"))
    if kind != "direct":
        raise ConfigError(f"plugins.message.type: expected 'direct', got {kind!r}")
    unknown = set(message) - {"type", "name", "options"}
    if unknown:
        raise ConfigError(f"plugins.message.{sorted(unknown)[0]}: unknown key (expected type, options)")
    options = message.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError("plugins.message.options: expected a mapping of option names to values")
    options = dict(options)
    tls_files = options.get("tls")
    if isinstance(tls_files, dict):
        # Relative paths are relative to the config file, wherever the node is started from.
        base = os.path.dirname(os.path.abspath(path))
        options["tls"] = {key: os.path.join(base, value) if isinstance(value, str) and value else value
                          for key, value in tls_files.items()}
    bridge = options.get("bridge")
    if isinstance(bridge, str) and bridge and is_unix_socket_path(bridge):
        # A relative socket path is relative to the config file's directory, like the tls files.
        options["bridge"] = os.path.join(os.path.dirname(os.path.abspath(path)), bridge)
    server_name = document.get("serverName")
    if server_name is not None and "serverName" not in options:
        if not isinstance(server_name, str) or not server_name:
            raise ConfigError(f"serverName: expected a string, got {server_name!r}")
        options["serverName"] = server_name
    return options, document


def render_markdown() -> str:
    """The option table of docs/configuration.md, written from OPTIONS."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for option in OPTIONS:
        if option.derive is not None:
            default = "derived (see meaning)"
        elif option.kind == "addresses":
            default = "`[]`"
        elif option.kind in ("tls", "bridge"):
            default = "none"
        else:
            default = f"`{option.default!r}`"
        kind = option.expected()
        lines.append(f"| `{option.key}` | {kind} | {default} | {option.doc} |")
    return "\n".join(lines) + "\n"
