"""Signed origins: what a node originates carries its signature, and what it receives is checked.

TLS (`tls`) vouches for the neighbour at the other end of a link, not for the messages it relays: a DATA
frame crosses several links with its origin's name in the header. With `tls`, every node therefore signs
what it originates with the key of its node certificate, and every node checks each new frame against
its origin's certificate before it relays, caches or delivers it. This is GossipSub's `StrictSign`
policy (libp2p pubsub, 2020: every message signed by its author, checked by every hop), with one change
for cost: a node signs a *frame*, the batch of messages its origin published in one turn of its loop, so
that batching amortises the signature as it amortises the rest (at 100 B, one signature covers up to
~100 messages).

What is signed (`wire.signed_pieces`, `wire.leave_claim`, `wire.peer_claim`):

* DATA and DIRECT frames: the kind and everything after the hop count (origin, epoch, numbers, topics,
  messages; a DIRECT's target too), so a relay still rewrites only the hop count;
* a node's LEAVE announcement (`sig` in the map) and its *peer record* (name, address, epoch: the
  `record` of its HELLO, passed on as the 4th item of PEERS entries, as libp2p's signed peer records),
  so that a member can neither announce another's departure nor pass on a false address or epoch for it.

Relays check before forwarding (a forgery goes no further than the first honest node, and cannot make
every node pay a check for it), once per *new* frame: a copy already seen is dropped from its header
before any check. A frame that comes from its origin itself is not checked: the TLS link already says
who wrote it and that it was not changed, so a neighbour pays one signature, not a signature and a check
(its signature goes on with it, and the next hops check it). A frame that fails is dropped before the
seen-record hears of it (a forgery cannot take the number of a genuine message), counted, and reported
as an `error` event naming the relay it came from, at most once a second. A frame from an epoch older
than one already verified for its origin is refused too (a replay of a restarted node's old stream).

Certificates travel in CERTS frames: a new link is sent every chain this node holds (its own first),
and a chain learnt for the first time is passed to every other link, ahead of any frame it verified on
the same link (TCP keeps the order), so a frame's certificate is normally known before the frame comes.
A frame whose origin is not known yet is dropped (gap recovery pulls it again later) and its certificate
asked of the relay (`want`). The checks and the bounded certificate cache live in the driver's
`Authenticator` (`swarm/transport/origin_auth.py`, with `cryptography`): this module never touches a
key, a certificate or the clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .. import counters as C
from ..errors import ProtocolError
from . import wire
from .actions import Action, ReportError, Send
from .events import LinkDown, LinkUp

__all__ = ["Authenticator", "Origins"]

log = logging.getLogger("swarm.protocol")

# A CERTS frame carries at most this many chains (a P-256 chain is ~0.5-1.5 KB: well under the control
# frame limit), and a reader takes at most this many from one frame.
CHAINS_PER_FRAME = 64
NAMES_WANTED = 64
# Refusals are reported at most once a second, with exact counts per relay (as losses are).
REPORT_INTERVAL = 1.0
# The newest epoch verified per origin, for refusing replays of older streams: as many as the
# certificate cache holds names (origin_auth.MAX_CERTIFICATES).
EPOCHS_KEPT = 4096


class Authenticator(Protocol):
    """What the driver hands the core to sign and check with (`swarm.transport.origin_auth`)."""

    name: str

    def sign(self, pieces: Sequence[bytes | memoryview]) -> bytes: ...

    def verify(self, origin: bytes, pieces: Sequence[bytes | memoryview], signature: bytes) -> bool | None:
        """True: valid; False: not valid; None: no certificate of `origin` is known."""

    def learn(self, chain: Sequence[bytes]) -> str | None:
        """A chain (DER, leaf first): the name it certifies if new, None if held already; ValueError if it
        does not check out."""

    def chains(self) -> list[list[bytes]]: ...

    def chain_of(self, name: str) -> list[bytes] | None: ...


class Origins:
    """Signing what this node originates, checking what it receives, and passing certificates on.

    Without an authenticator (no `tls`: nothing to sign with) it does nothing: its hooks are None, so
    the other parts skip every check, and CERTS frames are ignored."""

    def __init__(self, authenticator: Authenticator | None, *, counters: Counter[str],
                 out: list[Action]) -> None:
        self.auth: Authenticator = authenticator  # type: ignore[assignment]  # (never used when None)
        self.enabled = authenticator is not None
        self.counters = counters
        self.out = out
        self._links: dict[int, bytes] = {}  # connection -> linked peer's name (UTF-8)
        self._newest_epoch: dict[bytes, int] = {}  # origin (UTF-8) -> newest epoch verified
        self._refused = C.PerOrigin(REPORT_INTERVAL)  # frames refused per relay, to report
        self._wanted: set[bytes] = set()  # origins whose certificate was asked for and is not here yet

    def frame_hooks(self) -> dict[str, Callable[..., Any]]:
        """The `sign` and `check` of DATA and DIRECT frames, for broadcast and direct (none if disabled)."""
        return {"sign": self.sign_frame, "check": self.check_frame} if self.enabled else {}

    def claim_hooks(self) -> dict[str, Callable[..., Any]]:
        """The `sign` and `check` of LEAVE and peer records, for membership (none if disabled)."""
        return {"sign": self.sign_claim, "check": self.check_claim} if self.enabled else {}

    def record(self, name: str, address: tuple[str, int], epoch: int) -> bytes | None:
        """Our signature over our peer record, which our HELLOs carry (None if disabled)."""
        return self.sign_claim(wire.peer_claim(name, list(address), epoch)) if self.enabled else None

    def changed(self, name: str, address: tuple[str, int], epoch: int) -> bytes | None:
        """Our certificate was reloaded: every link hears of the new chain; our record, signed anew."""
        if self.enabled:
            self.announce(self.auth.chains()[0])
        return self.record(name, address, epoch)

    # ------------------------------------------------------------------ signing

    def sign_frame(self, frame: bytes) -> bytes:
        """A DATA or DIRECT frame of ours, signed."""
        return wire.with_signature(frame, self.auth.sign(wire.signed_pieces(frame)))

    def sign_claim(self, claim: bytes) -> bytes:
        return self.auth.sign((claim,))

    # ------------------------------------------------------------------ checking

    def check_claim(self, name: str, claim: bytes, signature: Any) -> bool:
        """Is `signature` `name`'s over `claim` (a LEAVE, a peer record)? An unknown signer is no."""
        if not isinstance(signature, bytes):
            return False
        return self.auth.verify(name.encode("utf-8"), (claim,), signature) is True

    def check_frame(self, frame: bytes, conn: int, relay: bytes, now: float) -> bool:
        """Is this new DATA or DIRECT frame (from `relay`, on `conn`) signed by its origin, and not from
        an epoch older than one seen? If not it is counted and reported here; the caller drops it."""
        origin = wire.payload_origin(frame)
        epoch = wire.payload_epoch(frame)
        newest = self._newest_epoch.get(origin, 0)
        if epoch < newest:
            return self._refuse(C.STALE_FRAMES_REFUSED, relay, origin, now)
        # From the origin itself: its TLS link already vouches for who wrote it and that nothing changed
        # on the way, so the check would only repeat that (a neighbour's latency is then one signature,
        # not a signature and a check). Its signature still goes on with it, for the next hops to check.
        signature = wire.signature(frame)
        verdict = (True if relay == origin and signature  # (unsigned: refused here as it would be later)
                   else self.auth.verify(origin, wire.signed_pieces(frame), signature))
        if verdict is None:
            if origin not in self._wanted and len(self._wanted) < NAMES_WANTED:
                self._wanted.add(origin)
                self.out.append(Send((conn,), wire.encode_control(wire.KIND_CERTS, {
                    "want": [origin.decode("utf-8", "replace")]})))
            return self._refuse(C.UNVERIFIED_FRAMES_DROPPED, relay, origin, now)
        if not verdict:
            return self._refuse(C.FORGED_FRAMES_REFUSED, relay, origin, now)
        if epoch > newest:
            if len(self._newest_epoch) >= EPOCHS_KEPT and origin not in self._newest_epoch:
                del self._newest_epoch[next(iter(self._newest_epoch))]
            self._newest_epoch[origin] = epoch
        return True

    def _refuse(self, counter: str, relay: bytes, origin: bytes, now: float) -> bool:
        self.counters[counter] += 1
        self._refused.add(f"{relay.decode('utf-8', 'replace')} (origin "
                          f"{origin.decode('utf-8', 'replace')}, {counter})")
        self.report(now)
        return False

    def report(self, now: float) -> None:
        """Report what was refused since the last report, if a report may go now."""
        due = self._refused.due(now) if self._refused.pending else None
        if due is not None:
            total, detail = due
            self.out.append(ReportError("unverified", f"{total} frame(s) refused, by the relay each came "
                                                      f"from: {detail}"))

    # ------------------------------------------------------------------ certificates

    def learn_link_certificate(self, certificate: bytes | None) -> None:
        """The leaf certificate a TLS neighbour showed: held at once (when it chains to the CA directly),
        so that what we pass on about the peer is checkable before its CERTS frame comes."""
        if certificate is None or not self.enabled:
            return
        try:
            name = self.auth.learn((certificate,))
        except ValueError:
            return  # intermediates: its CERTS frame brings the whole chain
        if name is not None:
            self.announce([certificate])  # ahead of the PEERS that will tell the others of the peer

    def link_up(self, event: LinkUp) -> None:
        if not self.enabled:
            return
        self._links[event.conn] = event.name.encode("utf-8")
        if event.fresh:
            chains = self.auth.chains()
            for start in range(0, len(chains), CHAINS_PER_FRAME):
                self.out.append(Send((event.conn,), wire.encode_control(wire.KIND_CERTS, {
                    "chains": chains[start:start + CHAINS_PER_FRAME]})))

    def link_down(self, event: LinkDown) -> None:
        self._links.pop(event.conn, None)

    def on_certs(self, conn: int, peer: str, fields: dict[str, Any]) -> None:
        """Chains to learn (new ones are passed on to every other link), names whose chain is wanted."""
        if not self.enabled:
            return  # a TLS-less node has nothing to check with (and its peers none to sign with)
        chains, wanted = fields.get("chains", []), fields.get("want", [])
        if not (isinstance(chains, list) and isinstance(wanted, list)):
            raise ProtocolError("CERTS without lists of chains and names")
        fresh = []
        for chain in chains[:CHAINS_PER_FRAME]:
            if not (isinstance(chain, list) and chain and all(isinstance(der, bytes) for der in chain)):
                self.counters[C.CERTIFICATES_REFUSED] += 1
                continue
            try:
                name = self.auth.learn(chain)
            except ValueError as error:
                self.counters[C.CERTIFICATES_REFUSED] += 1
                log.info("%s: certificate chain from %s refused: %s", self.auth.name, peer, error)
                continue
            if name is not None:
                self.counters[C.CERTIFICATES_LEARNT] += 1
                self._wanted.discard(name.encode("utf-8"))
                fresh.append(chain)
        others = tuple(other for other in self._links if other != conn)
        if fresh and others:
            self.out.append(Send(others, wire.encode_control(wire.KIND_CERTS, {"chains": fresh})))
        answer = [chain for name in wanted[:NAMES_WANTED] if isinstance(name, str)
                  for chain in (self.auth.chain_of(name),) if chain is not None]
        if answer:
            self.out.append(Send((conn,), wire.encode_control(wire.KIND_CERTS, {"chains": answer})))

    def link_hooks(self, name: str, address: tuple[str, int], epoch: int) -> dict[str, Any]:
        """What links needs of us: our HELLO's `record`, and the certificates a full REFUSE carries
        (`Links.refuse_full`), given and learnt."""
        return {"record": self.record(name, address, epoch), "hint_chains": self.hint_chains,
                "learn_chains": lambda chains, peer: self.on_certs(0, peer, {"chains": chains})}

    def hint_chains(self, entries: list[list[Any]]) -> list[list[bytes]]:
        """The chains held of the members named by PEERS `entries` (a full REFUSE's hints)."""
        if not self.enabled:
            return []
        return [chain for entry in entries for chain in (self.auth.chain_of(entry[0]),) if chain is not None]

    def announce(self, chain: list[bytes]) -> None:
        """A chain every link must hear of: a new neighbour's, or our own after a TLS reload."""
        if self._links:
            frame = wire.encode_control(wire.KIND_CERTS, {"chains": [chain]})
            self.out.append(Send(tuple(self._links), frame))
