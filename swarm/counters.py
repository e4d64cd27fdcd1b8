"""Every counter a swarm node keeps: its name, the room that counts it, and what it counts.

A node has one `collections.Counter` (`Node.counters`, the `counters` of `status()`), shared by the
protocol core's sub-machines, the transport, the node and the bridge. Each room increments the names it
imports from here, never a bare string, so a misspelt name fails at import instead of starting a counter
nobody reads. `status()` merges in the two that the seen-record keeps itself (`duplicates`,
`gaps_given_up`). `docs/operations.md` has the table `render_markdown()` writes, so the reference cannot
drift from the code (tests/test_docs.py checks it), as `config.OPTIONS` does for options.

Counters count events since the process started; a name that never happened is absent from `status()`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COUNTERS", "ERROR_CODES", "CounterDoc", "PerOrigin", "error_counter", "render_markdown"]


@dataclass(frozen=True, slots=True)
class CounterDoc:
    name: str
    room: str  # the module that counts it
    meaning: str


COUNTERS: dict[str, CounterDoc] = {}


def _declare(room: str, name: str, meaning: str) -> str:
    assert name not in COUNTERS, f"counter {name!r} declared twice"
    COUNTERS[name] = CounterDoc(name, room, meaning)
    return name


LINKS = "protocol/links.py"
MEMBERSHIP = "protocol/membership.py"
DIALER = "protocol/dialer.py"
BROADCAST = "protocol/broadcast.py"
DIRECT = "protocol/direct.py"
CORE = "protocol/state.py"
DELIVERY = "protocol/delivery.py"
SEEN = "protocol/seen.py"
ORIGINS = "protocol/origins.py"
TRANSPORT = "transport/engine.py"
NODE = "node.py"
BRIDGE = "bridge.py"

# ---------------------------------------------------------------------- links: handshake, keepalive
HANDSHAKE_TIMEOUTS = _declare(LINKS, "handshake_timeouts",
                              "connections closed because HELLO did not come within `handshakeTimeout`")
FAILURE_TIMEOUTS = _declare(LINKS, "failure_timeouts",
                            "links closed after `failureTimeout` of silence (a dead or hung peer, a cut)")
VERSION_MISMATCH = _declare(LINKS, "version_mismatch", "peers refused: another protocol version")
CLUSTER_MISMATCH = _declare(LINKS, "cluster_mismatch", "peers refused: another `clusterName`")
IDENTITY_MISMATCH = _declare(LINKS, "identity_mismatch",
                             "peers refused: HELLO claims a name other than its TLS certificate's")
STALE_EPOCH = _declare(LINKS, "stale_epoch",
                       "peers refused (or their link closed): an older process of a node whose newer "
                       "process is known, told so in a REFUSE with code `name_conflict`")
NAME_CONFLICTS = _declare(LINKS, "name_conflicts",
                          "REFUSEs received because another live process holds this node's serverName")
DUPLICATE_CONNECTIONS = _declare(LINKS, "duplicate_connections",
                                 "second connections to a linked peer, one of the two retired")
PROTOCOL_ERRORS = _declare(LINKS, "protocol_errors",
                           "links closed over a malformed or unexpected frame (an `error` event each)")
LINKS_LOST = _declare(LINKS, "links_lost", "links that ended, for any reason (closed, retired, pruned)")
REFUSED_BY_PEER = _declare(LINKS, "refused_by_peer",
                           "times a peer refused this node (other cluster or version; an `error` event)")
TURNED_AWAY_FULL = _declare(LINKS, "turned_away_full",
                            "times a peer at `maxPeers` turned this node away politely (with hints)")

# ---------------------------------------------------------------------- membership: view and links wanted
MEMBERS_JOINED = _declare(MEMBERSHIP, "members_joined",
                          "members met by handshake that were new or restarted (a new epoch)")
MEMBERS_LEARNED = _declare(MEMBERSHIP, "members_learned", "members first heard of from a peer's PEERS")
MEMBERS_LEFT = _declare(MEMBERSHIP, "members_left", "members that announced a graceful leave")
MEMBERS_FORGOTTEN = _declare(MEMBERSHIP, "members_forgotten",
                             "rounds in which unreachable or unvouched members were dropped from the view")
LINKS_MADE = _declare(MEMBERSHIP, "links_made", "links to peers not linked before")
LINKS_PRUNED = _declare(MEMBERSHIP, "links_pruned",
                        "links retired because neither end wanted them, or to make room under `maxPeers`")
REFUSED_FULL = _declare(MEMBERSHIP, "refused_full",
                        "joiners turned away at `maxPeers` (they would not have been ring neighbours)")

# ---------------------------------------------------------------------- dialer
DIALS = _declare(DIALER, "dials", "connections dialled")
DIAL_FAILURES = _declare(DIALER, "dial_failures", "dials that failed (refused, unreachable, timed out)")
PROBES = _declare(DIALER, "probes", "probe dials: a lost node or a seed tried once, which heals partitions")

# ---------------------------------------------------------------------- broadcast
PUBLISHED = _declare(BROADCAST, "published", "messages published by this node")
PUBLISHED_WITHOUT_PEERS = _declare(BROADCAST, "published_without_peers",
                                   "messages published while no peer was linked: sent nowhere")
BATCHES_PUBLISHED = _declare(BROADCAST, "batches_published",
                             "DATA frames this node originated (each a batch of its messages)")
DATA_FRAMES_SENT = _declare(BROADCAST, "data_frames_sent", "DATA frames queued on links, copies counted")
DATA_FRAMES_RECEIVED = _declare(BROADCAST, "data_frames_received",
                                "DATA frames read, duplicates included (what flooding costs)")
RECEIVED_NEW = _declare(BROADCAST, "received_new", "DATA frames read that were new here")
OWN_MESSAGES_RETURNED = _declare(BROADCAST, "own_messages_returned",
                                 "this node's own DATA frames that came back around a cycle (dropped)")
FORWARDED = _declare(BROADCAST, "forwarded", "DATA frames relayed")
FORWARDED_MESSAGES = _declare(BROADCAST, "forwarded_messages", "messages in the DATA frames relayed")
PRUNES_SENT = _declare(BROADCAST, "prunes_sent", "tree mode: PRUNEs sent (a peer's stream made lazy)")
PRUNES_RECEIVED = _declare(BROADCAST, "prunes_received", "tree mode: PRUNEs received")
GRAFTS = _declare(BROADCAST, "grafts", "tree mode: message ids asked for by GRAFT (announced, not arrived)")
GRAFTED_PAYLOADS = _declare(BROADCAST, "grafted_payloads", "tree mode: payloads resent to answer a GRAFT")
IHAVE_IDS_SENT = _declare(BROADCAST, "ihave_ids_sent", "tree mode: message ids announced on lazy links")
SHORTER_PATHS_GRAFTED = _declare(BROADCAST, "shorter_paths_grafted",
                                 "tree mode: streams grafted from a lazy peer whose IHAVE announced a "
                                 "shorter path than a parent's (Plumtree's optimization step)")
STREAMS_ORPHANED = _declare(BROADCAST, "streams_orphaned",
                            "tree mode: streams whose parent was lost, asked of every peer at once")
PULLS_SENT = _declare(BROADCAST, "pulls_sent", "PULLs sent: a range of a stream missing here asked of a peer")
PULLS_ANSWERED = _declare(BROADCAST, "pulls_answered", "PULLs of peers answered from the frame cache")
PULLED_FRAMES_SENT = _declare(BROADCAST, "pulled_frames_sent", "cached DATA frames resent to answer PULLs")

# ---------------------------------------------------------------------- seen-record (merged by status)
DUPLICATES = _declare(SEEN, "duplicates", "copies of messages already seen (DATA and DIRECT), dropped")
GAPS_GIVEN_UP = _declare(SEEN, "gaps_given_up",
                         "messages lost: skipped after their gap stayed open `reorderTimeout` and no peer "
                         "had them to pull (counted in messages, whatever the batching)")

# ---------------------------------------------------------------------- direct messages
DIRECT_SENT = _declare(DIRECT, "direct_sent", "direct messages sent by this node")
DIRECT_RECEIVED = _declare(DIRECT, "direct_received", "direct messages for this node that were new here")
ROUTED = _declare(DIRECT, "routed", "DIRECT and UNDELIVERABLE frames relayed one hop nearer their target")
ROUTE_HOP_LIMIT = _declare(DIRECT, "route_hop_limit",
                           "routed frames dropped after `MAX_ROUTE_HOPS` (64) hops")
DIRECT_UNDELIVERABLE = _declare(DIRECT, "direct_undeliverable",
                                "UNDELIVERABLE answers received for this node's direct messages")
DIRECT_UNROUTABLE = _declare(DIRECT, "direct_unroutable",
                             "direct messages this node could route no nearer (answered UNDELIVERABLE)")
UNDELIVERABLE_LOST = _declare(DIRECT, "undeliverable_lost", "UNDELIVERABLE answers that could not be routed")

# ---------------------------------------------------------------------- the core's composer: delivery
DELIVERED = _declare(DELIVERY, "delivered", "messages handed to local subscribers")
DROPPED_NO_SUBSCRIBER = _declare(DELIVERY, "dropped_no_subscriber",
                                 "messages received (and relayed) for topics nobody here subscribes to")
MALFORMED_DROPPED = _declare(DELIVERY, "malformed_dropped",
                             "messages held behind a gap and found malformed when released")
INTERNAL_ERRORS = _declare(CORE, "internal_errors",
                           "frames that broke the core (a bug: logged with its traceback, link closed)")
STATUS_REQUESTS = _declare(CORE, "status_requests", "`python -m swarm status` requests answered")

# ---------------------------------------------------------------------- transport
SEND_QUEUE_OVERFLOW = _declare(TRANSPORT, "send_queue_overflow",
                               "frames dropped because a link's send queue was full (`sendQueueSize`, "
                               "`sendQueueBytes`): that peer pulls them, or gets them by another path")
SEND_QUEUE_OVERFLOW_MESSAGES = _declare(TRANSPORT, "send_queue_overflow_messages",
                                        "messages in the frames of `send_queue_overflow`")
DROPPED_ON_CLOSE = _declare(TRANSPORT, "dropped_on_close", "frames still queued when their link closed")
DROPPED_ON_CLOSE_MESSAGES = _declare(TRANSPORT, "dropped_on_close_messages",
                                     "messages in the frames of `dropped_on_close`")
SLOW_LINKS_CUT = _declare(TRANSPORT, "slow_links_cut",
                          "links cut because their queue stayed over half full for 2 x `failureTimeout` "
                          "(a peer that reads too slowly; told why in a REFUSE with code `slow_consumer`)")
DROPPED_ON_RETIRE = _declare(TRANSPORT, "dropped_on_retire",
                             "frames of a retired duplicate connection that its successor had no room for")
DIRECT_WRITES = _declare(TRANSPORT, "direct_writes",
                         "frames written at once to an idle link's socket (the first of a turn)")
DIRECT_WRITES_CUT_SHORT = _declare(TRANSPORT, "direct_writes_cut_short",
                                   "direct writes the kernel took only part of (the rest queued)")
TLS_HANDSHAKE_TIMEOUTS = _declare(TRANSPORT, "tls_handshake_timeouts",
                                  "TLS handshakes not done within `handshakeTimeout`")
TLS_REFUSED = _declare(TRANSPORT, "tls_refused",
                       "TLS connections refused (no certificate, a rejected one, no TLS, no swarm name)")
TLS_REJECTED = _declare(TRANSPORT, "tls_rejected", "TLS handshakes the peer rejected with an alert")
TLS_ERRORS = _declare(TRANSPORT, "tls_errors", "TLS handshakes that broke for other reasons")
TLS_RELOADS = _declare(TRANSPORT, "tls_reloads", "TLS files re-read (SIGHUP, `reload_tls()`)")
TLS_RELOAD_FAILURES = _declare(TRANSPORT, "tls_reload_failures",
                               "TLS reloads that failed (the previous files stay in use)")
TLS_REVOKED_REFUSED = _declare(TRANSPORT, "tls_revoked_refused",
                               "TLS peers refused after the handshake because `tls.crl` or `tls.deny` "
                               "revokes their certificate (counted in `tls_refused` too)")
LINKS_CUT_REVOKED = _declare(TRANSPORT, "links_cut_revoked",
                             "live links cut on a TLS reload because the peer's certificate is now revoked "
                             "(told why in a REFUSE with code `revoked`)")

# ---------------------------------------------------------------------- node (both API faces)
DROPPED_AFTER_UNSUBSCRIBE = _declare(NODE, "dropped_after_unsubscribe",
                                     "messages that arrived for a topic just unsubscribed")
CALLBACK_ERRORS = _declare(NODE, "callback_errors", "subscriber callbacks that raised")
SLOW_CONSUMER_DROPPED = _declare(NODE, "slow_consumer_dropped",
                                 "messages dropped for the local subscribers because their delivery queue "
                                 "was full (`deliveryQueueBytes`): callbacks slower than the traffic")

# ---------------------------------------------------------------------- sidecar bridge
BRIDGE_CLIENTS = _declare(BRIDGE, "bridge_clients", "bridge clients attached")
BRIDGE_CLIENTS_DROPPED = _declare(BRIDGE, "bridge_clients_dropped", "bridge clients that went away")
BRIDGE_BAD_REQUESTS = _declare(BRIDGE, "bridge_bad_requests", "bridge requests refused as malformed")
BRIDGE_SENT = _declare(BRIDGE, "bridge_sent", "messages bridge clients sent into the cluster")
BRIDGE_UNENCODABLE = _declare(BRIDGE, "bridge_unencodable",
                              "messages the bridge could not encode for a client")
BRIDGE_DELIVERED = _declare(BRIDGE, "bridge_delivered", "messages handed to bridge clients")
BRIDGE_DROPPED = _declare(BRIDGE, "bridge_dropped",
                          "messages dropped for a bridge client that did not read fast enough (its queue "
                          "full at `bridgeQueueBytes`); reported to it with a `dropped` op")

# ---------------------------------------------------------------------- error events, by code
# Every `error` event is counted as `error_<code>` (by `Node`), besides the counter of its cause.
# ---------------------------------------------------------------------- origins: signatures (`tls`)
FORGED_FRAMES_REFUSED = _declare(ORIGINS, "forged_frames_refused",
                                 "DATA/DIRECT frames dropped: the signature is not their origin's (forged or "
                                 "altered on the way)")
UNVERIFIED_FRAMES_DROPPED = _declare(ORIGINS, "unverified_frames_dropped",
                                     "DATA/DIRECT frames dropped: no certificate of their origin known yet "
                                     "(asked of the relay; the gap is pulled later)")
STALE_FRAMES_REFUSED = _declare(ORIGINS, "stale_frames_refused",
                                "DATA/DIRECT frames dropped: from an epoch older than one verified for their "
                                "origin (a replay of an old process's stream)")
CERTIFICATES_LEARNT = _declare(ORIGINS, "certificates_learnt", "certificate chains learnt from CERTS frames")
CERTIFICATES_REFUSED = _declare(ORIGINS, "certificates_refused",
                                "certificate chains in CERTS frames refused (not chained to the CA, expired, "
                                "revoked, no swarm name)")
LEAVES_REFUSED = _declare(MEMBERSHIP, "leaves_refused",
                          "LEAVE announcements dropped: not signed by the node they name (`tls`)")
PEER_RECORDS_REFUSED = _declare(MEMBERSHIP, "peer_records_refused",
                                "PEERS entries ignored: not signed by the node they describe, or its "
                                "certificate not known yet (`tls`)")

ERROR_CODES = {
    "refused": "a peer refused this node, or this node refused a peer",
    "protocol": "a link closed over a malformed or unexpected frame",
    "overflow": "a send queue overflowed (reported the 1st, 2nd, 4th... time)",
    "callback": "a subscriber callback raised",
    "unreachable": "a direct message could not be delivered",
    "malformed": "a message delivered here does not decode",
    "tls": "a TLS handshake failed or was refused",
    "slow_consumer": "the subscriber callbacks fell `deliveryQueueBytes` behind: messages dropped here "
                     "(exact counts per origin in the text; at most once a second)",
    "messages_lost": "gaps given up: messages no peer had to pull (exact counts per origin; at most once a "
                     "second)",
    "unverified": "frames refused because their origin's signature did not check (forged, altered, a "
                  "replay, or an origin not known yet), naming each relay (at most once a second)",
    "name_conflict": "another live process holds this node's serverName, and the cluster refuses this one",
}


class PerOrigin:
    """Losses per origin waiting to be reported, at most once per `interval` seconds and with the exact
    counts since the last report (the core's `messages_lost`, the node's `slow_consumer`): visible at
    once, but no error storm. Pure: time comes in as `now`."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.pending: dict[str, int] = {}
        self._next = 0.0

    def add(self, origin: str, count: int = 1) -> None:
        self.pending[origin] = self.pending.get(origin, 0) + count

    def due(self, now: float) -> tuple[int, str] | None:
        """(total, "3 of a, 2 of b") if something waits and a report may go now (then it is cleared)."""
        if not self.pending or now < self._next:
            return None
        self._next = now + self.interval
        pending, self.pending = self.pending, {}
        return sum(pending.values()), ", ".join(f"{count} of {origin}" for origin, count in pending.items())


def error_counter(code: str) -> str:
    """The counter of `error` events with `code`."""
    return f"error_{code}"


def render_markdown() -> str:
    """The counter table of docs/operations.md."""
    lines = ["| counter | counted in | what it counts |", "| --- | --- | --- |"]
    for doc in COUNTERS.values():
        lines.append(f"| `{doc.name}` | `swarm/{doc.room}` | {doc.meaning} |")
    for code, meaning in ERROR_CODES.items():
        lines.append(f"| `{error_counter(code)}` | `swarm/{NODE}` | `error` events: {meaning} |")
    return "\n".join(lines) + "\n"
