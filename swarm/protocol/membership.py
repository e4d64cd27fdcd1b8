"""Membership: the members a node knows, its bounded view, and the links it wants (HyParView's part).

This sub-machine keeps a record per known member (address, epoch, ring position, whether linked, how
often it failed), and answers the overlay's questions through a `NeighbourPolicy` (`swarm.topology`;
the small-world ring of `SmallWorld` by default): which members to link to, which to keep, which to tell
a peer about. It hears of links only by `LinkUp` and `LinkDown`; it does not own them, so what it wants
done to one (close it, prune it) it returns as a request (`ClosePeer`, `PrunePeer`), and what the dialer
should do (`Redial`, `Remember`, `Forget`) likewise. Frames it owns, PEERS and LEAVE, it sends itself.

* A node learns members from HELLOs (`admit`) and from PEERS frames, which list only members the sender
  is linked to right now, so a dead node is not kept alive by rumour.
* Every gossip round it sends each linked peer the members nearest that peer's ring position (T-Man)
  and whether it still wants the link; a link neither end wants is pruned (retired, not cut).
* Past `maxPeers`, an inbound joiner that would not be one of our ring links is refused with hints of
  nearer nodes; one that would be is admitted and an unwanted link is pruned to make room.
* Two failures in a row (a lost link, a failed dial) make a member unreachable, so the policy takes the
  next nearest one; a member unreachable for `forgetAfter`, or vouched for by nobody that long, is
  forgotten (its address remembered for probes, if it had failed). LEAVE announces a graceful exit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import counters as C
from ..errors import ProtocolError
from ..topology import MemberView, NeighbourPolicy, ring
from . import wire
from .actions import Action, Send
from .events import (
    FAILED,
    PEER_RETIRED,
    ClosePeer,
    DialFailed,
    Forget,
    Hello,
    LinkDown,
    LinkUp,
    PrunePeer,
    Redial,
    Remember,
)

__all__ = ["DEPARTED", "Membership"]

log = logging.getLogger("swarm.protocol")

Address = tuple[str, int]
Request = ClosePeer | PrunePeer | Redial | Remember | Forget

# (name, epoch) pairs of nodes that left, remembered so that a LEAVE passes each node once and gossip
# cannot bring a leaver back (the dialer keeps 32 remembered addresses; four times as many leaves).
DEPARTED = 128
# Entries read from one PEERS list or REFUSE's hints at most; a PEERS frame carries far fewer.
PEERS_READ = 1024

# What `admit` decides.
ADMIT, STALE, FULL = "admit", "stale", "full"


@dataclass(slots=True)
class _Member:
    name: str
    address: Address
    epoch: int
    position: int
    conn: int | None = None  # the link's connection, if linked
    left: bool = False  # announced a graceful leave (for this epoch)
    unreachable_since: float | None = None
    failures: int = 0  # dials failed, or links lost, since the last good handshake
    refused_until: float = 0.0  # a full peer turned us away: do not ask again before
    linked_since: float = 0.0
    peer_wants: bool = True  # the peer's last word on whether it wants the link (PEERS "want")
    confirmed: bool = False  # the peer has linked us too (its first PEERS on this link arrived)
    heard_at: float = 0.0  # last sign of life: its HELLO, or a peer listing it as linked
    record: bytes | None = None  # its signature over its peer record (`wire.peer_claim`), passed on

    def reachable(self, now: float) -> bool:
        """Worth linking to: linked, or not failed twice in a row and not turning us away."""
        return self.conn is not None or (self.failures < 2 and now >= self.refused_until)


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: str  # ADMIT, STALE or FULL
    requests: tuple[Request, ...] = ()  # ADMIT: links to prune first, to make room
    reason: str = ""  # FULL: what the joiner is told
    hints: tuple[list[Any], ...] = ()  # FULL: members nearer the joiner, as PEERS entries
    holder: Address | None = None  # STALE: the listen address of the newer process of that name


class Membership:
    """The view, the links wanted, PEERS and LEAVE."""

    def __init__(self, config: Any, *, epoch: int, listen_address: Address, policy: NeighbourPolicy,
                 counters: Counter[str], out: list[Action], sign: Callable[[bytes], bytes] | None = None,
                 check: Callable[[str, bytes, Any], bool] | None = None) -> None:
        """`config`: the node's `CoreConfig` (server_name, max_peers, local_links, reserve_size,
        forget_after, gossip_interval are read). With signed origins (`origins.py`), `sign` signs our LEAVE
        and `check(name, claim, signature)` checks a LEAVE or a peer record: only a node itself can say it
        left, or where it is and which process it runs."""
        self.name: str = config.server_name
        self.epoch = epoch
        self.listen_address = listen_address
        self.position = ring.position(self.name)
        self.policy = policy
        self.max_peers: int = config.max_peers
        self.local_links: int = config.local_links
        self.reserve_size: int = config.reserve_size
        self.forget_after: float = config.forget_after
        self.gossip_interval: float = config.gossip_interval
        self.counters = counters
        self.out = out
        self.members: dict[str, _Member] = {}
        self.wanted: set[str] = set()
        self._departed: dict[tuple[str, int], float] = {}
        self._sign, self._check = sign, check

    # ------------------------------------------------------------------ queries

    def linked_members(self) -> list[_Member]:
        return [m for m in self.members.values() if m.conn is not None]

    @property
    def linked_peers(self) -> dict[str, Address]:
        return {m.name: m.address for m in self.members.values() if m.conn is not None}

    @property
    def known_members(self) -> dict[str, Address]:
        return {m.name: m.address for m in self.members.values() if not m.left}

    @property
    def confirmed_links(self) -> int:
        """Links the peer has confirmed: until it has linked us it forwards us nothing."""
        return sum(1 for m in self.members.values() if m.conn is not None and m.confirmed)

    def link_kind(self, name: str) -> str:
        """"local" (a ring neighbour), "shortcut", or "inbound" (kept because the peer wants it)."""
        if name in getattr(self.policy, "shortcuts", ()):
            return "shortcut"
        return "local" if name in self.wanted else "inbound"

    def link_details(self) -> list[dict[str, Any]]:
        links = [{"name": m.name, "address": list(m.address), "kind": self.link_kind(m.name),
                  "position": m.position} for m in self.linked_members()]
        return sorted(links, key=lambda link: link["name"])

    def epoch_of(self, name: str) -> int | None:
        member = self.members.get(name)
        return member.epoch if member is not None else None

    def addresses_to_remember(self, limit: int) -> list[Address]:
        """What a peers file should hold: linked nodes first, then the rest of the view."""
        linked = [m.address for m in self.members.values() if m.conn is not None]
        others = [m.address for m in self.members.values() if m.conn is None and m.failures < 2]
        return list(dict.fromkeys(linked + others))[:limit]

    def failed_addresses(self) -> list[Address]:
        """Members that failed twice and are not linked: a sign of a partition, probed first."""
        return [m.address for m in self.members.values() if m.conn is None and m.failures >= 2]

    def _views(self, now: float) -> list[MemberView]:
        return [MemberView(m.name, m.address, m.conn is not None, m.position, m.reachable(now))
                for m in self.members.values() if not m.left]

    def dial_plan(self, now: float, isolated: bool) -> tuple[list[Address], list[Address]]:
        """(addresses of the wanted members not linked, and when `isolated` every known member's): what
        the dialer should dial. Deciding what is wanted happens here."""
        self.wanted = self.policy.wanted(self.name, self._views(now))
        members = self.members
        wanted = [members[name].address for name in self.wanted if members[name].conn is None]
        known = [m.address for m in members.values() if not m.left] if isolated else []
        return wanted, known

    # ------------------------------------------------------------------ handshakes and links

    def admit(self, hello: Hello, now: float) -> Admission:
        """A peer said HELLO: record it, and say whether it may link (not a stale process, room for it)."""
        member = self.members.get(hello.name)
        if member is None or hello.epoch > member.epoch:
            member = self.members[hello.name] = _Member(hello.name, hello.address, hello.epoch,
                                                        ring.position(hello.name))
            self.counters[C.MEMBERS_JOINED] += 1
        if hello.record is not None:
            member.record = hello.record  # its own words, on a link TLS vouches for
        elif hello.epoch < member.epoch:
            return Admission(STALE, holder=member.address, reason=(
                f"name conflict: {hello.name!r} is held by a newer process at {member.address[0]}:"
                f"{member.address[1]} (epoch {member.epoch}; this one's is {hello.epoch})"))
        member.address = hello.address
        member.left = False
        member.unreachable_since = None
        member.heard_at = now
        member.failures = 0
        if member.conn is None and not hello.outbound and len(self.linked_members()) >= self.max_peers:
            if not self._would_be_local(member):
                self.counters[C.REFUSED_FULL] += 1
                hints = self._entries(ring.nearest_to(self.linked_members(), member.position, 8))
                return Admission(FULL, reason=f"{self.name} is at maxPeers ({self.max_peers})",
                                 hints=tuple(hints))
            return Admission(ADMIT, tuple(self._make_room(now)))
        return Admission(ADMIT)

    def _would_be_local(self, member: _Member) -> bool:
        """Would `member` be one of our ring links if we linked it? (Such a joiner is never refused.)"""
        linked = [(m.name, m.position) for m in self.linked_members()]
        local = ring.nearest_per_side(self.position, linked + [(member.name, member.position)],
                                      max(1, (self.local_links + 1) // 2))
        return member.name in local

    def _make_room(self, now: float, keep: str = "") -> list[Request]:
        """Prune one link to get back within maxPeers: first one whose peer never confirmed it (a
        connection that said HELLO and nothing since is no working peer), then one neither end wants,
        then one we do not want. Never `keep`, the link just made."""
        linked = [m for m in self.linked_members() if m.name != keep]
        spare = ([m for m in linked if m.name not in self.wanted and not m.confirmed]
                 or [m for m in linked if m.name not in self.wanted and not m.peer_wants]
                 or [m for m in linked if m.name not in self.wanted])
        if not spare:
            return []
        return [self._prune(min(spare, key=lambda m: m.linked_since), "room for a ring neighbour", now)]

    def _prune(self, member: _Member, reason: str, now: float) -> PrunePeer:
        """Unlink `member` in our books now (a PEERS sent in the same event must not name it) and ask
        for its link to be retired; the LinkDown that follows finds it unlinked already."""
        self.counters[C.LINKS_PRUNED] += 1
        member.conn = None
        member.unreachable_since = now
        member.failures = 0
        return PrunePeer(member.name, reason)

    def link_up(self, event: LinkUp, now: float, positions: list[list[Any]] | None) -> list[Request]:
        """A link is up (or moved to a new connection): tell the peer what we know near it, and
        `positions` (each stream's position here) if it is new; tell everyone else about the peer."""
        member = self.members[event.name]
        member.conn = event.conn
        member.peer_wants = True
        member.confirmed = False
        # Whether we want this link goes out in the PEERS below: decide with the new member known.
        self.wanted = self.policy.wanted(self.name, self._views(now))
        requests: list[Request] = []
        if len(self.linked_members()) > self.max_peers:
            requests += self._make_room(now, keep=member.name)
        if event.fresh:
            member.linked_since = now
            self.counters[C.LINKS_MADE] += 1
            log.info("%s: linked to %s at %s:%s", self.name, member.name, *member.address)
        self.out.append(Send((event.conn,), self.peers_frame_for(member, now, positions if event.fresh
                                                                  else None)))
        others = tuple(m.conn for m in self.linked_members() if m.conn != event.conn)
        if others:
            self.out.append(Send(others, wire.encode_control(wire.KIND_PEERS, {  # type: ignore[arg-type]
                "peers": self._entries((member,))})))
        return requests

    def link_down(self, event: LinkDown) -> list[Request]:
        """A link is gone: a dropped link must come back (the old connector's bug 5), unless it was
        pruned; a second loss without a handshake in between makes the member unreachable."""
        member = self.members.get(event.name)
        if member is None or member.conn != event.conn:
            return []  # unlinked here already (pruned, or its peer restarted)
        member.conn = None
        member.unreachable_since = event.since
        if member.left or event.cause not in (FAILED, PEER_RETIRED):
            return []  # a member that left is not dialled again, a pruned link not wanted
        if event.cause == FAILED:
            member.failures += 1
        return [Redial(member.address)]

    def dial_failed(self, event: DialFailed, now: float) -> None:
        member = self.members.get(event.owner or "")
        if member is None:
            member = next((m for m in self.members.values() if m.address == event.address), None)
        if member is not None and member.conn is None:
            member.failures += 1
            if member.unreachable_since is None:
                member.unreachable_since = now

    def turned_away(self, name: str | None, hints: Any, now: float) -> list[Request]:
        """A peer at maxPeers refused us: leave it alone for a while, and learn the better peers it named."""
        member = self.members.get(name or "")
        if member is not None:
            member.refused_until = now + 5 * self.gossip_interval + 2.0
        return self._learn(hints, now)[0]

    # ------------------------------------------------------------------ PEERS

    def peers_frame_for(self, peer: _Member, now: float, positions: list[list[Any]] | None = None) -> bytes:
        """PEERS for one linked peer: what we know nearest its ring position (T-Man's exchange), a few
        others at random (for its reserve), whether we still want the link, and `positions` if given."""
        linked = [m for m in self.linked_members() if m.name != peer.name]
        chosen = self.policy.share(self.name, self._views(now), peer.position) if linked else []
        entries = self._entries(self.members[name] for name in chosen
                                if name != peer.name and self.members[name].conn is not None)
        fields: dict[str, Any] = {"peers": entries, "want": peer.name in self.wanted}
        if positions is not None:
            fields["seen"] = positions
        return wire.encode_control(wire.KIND_PEERS, fields)

    def send_peers(self, now: float, positions: list[list[Any]] | None = None) -> None:
        """The gossip round's PEERS, one to each linked peer, with `positions` (the streams active of
        late, where they stand here) if given."""
        for member in self.members.values():
            if member.conn is not None:
                self.out.append(Send((member.conn,), self.peers_frame_for(member, now, positions)))

    def on_peers(self, conn: int, peer: str | None, fields: dict[str, Any],
                 now: float) -> tuple[list[Request], bool]:
        """A PEERS frame: the peer's word on the link, and members. Return the requests and whether a
        member is new or restarted (only news can change whom to link to: most PEERS repeat what we know,
        and deciding again, every view member rebuilt and two sorts, was most of a large simulation's
        CPU)."""
        member = self.members.get(peer or "")
        current = member is not None and member.conn == conn
        want = fields.get("want")
        if isinstance(want, bool) and current:
            member.peer_wants = want  # type: ignore[union-attr]
        requests, changed = self._learn(fields.get("peers"), now)
        if current:
            member.confirmed = True  # type: ignore[union-attr]  # the peer sends PEERS first thing when it links us
        return requests, changed

    def _learn(self, peers: Any, now: float) -> tuple[list[Request], bool]:
        """Merge a list of [name, [host, port], epoch] entries (from PEERS or a REFUSE's hints)."""
        if not isinstance(peers, list):
            raise ProtocolError("PEERS without a list of peers")
        requests: list[Request] = []
        changed = False
        for entry in peers[:PEERS_READ]:
            if not (isinstance(entry, list) and isinstance(entry[0] if entry else None, str)
                    and (len(entry) == 3 or len(entry) == 4 and isinstance(entry[3], bytes))
                    and isinstance(entry[1], list) and len(entry[1]) == 2 and isinstance(entry[1][0], str)
                    and isinstance(entry[1][1], int) and isinstance(entry[2], int)):
                raise ProtocolError("PEERS entry malformed")
            name, (host, port), epoch = entry[:3]
            if name == self.name or not 0 < port < 65536 or (name, epoch) in self._departed:
                continue
            member = self.members.get(name)
            record = entry[3] if len(entry) == 4 else None
            if not self._record_holds(member, name, (host, port), epoch, record):
                self.counters[C.PEER_RECORDS_REFUSED] += 1
                continue
            if member is None:
                self.members[name] = _Member(name, (host, port), epoch, ring.position(name), heard_at=now,
                                             record=record)
                self.counters[C.MEMBERS_LEARNED] += 1
                changed = True
            elif epoch == member.epoch:
                member.heard_at = now  # a peer is linked to it right now: it was alive a moment ago
            elif epoch > member.epoch:
                # Restarted: whatever link we hold to the old process is dead.
                if member.conn is not None:
                    member.conn = None
                    member.unreachable_since = now
                    if not member.left:
                        requests.append(Redial(member.address))
                    requests.append(ClosePeer(name, "peer restarted with a new epoch"))
                member.epoch, member.address, member.left = epoch, (host, port), False
                member.record = record
                member.failures = 0
                member.heard_at = now
                changed = True
        self.bound_view(now)
        return requests, changed

    def _record_holds(self, member: _Member | None, name: str, address: Address, epoch: int,
                      record: bytes | None) -> bool:
        """May a PEERS entry about `name` be believed? Without signed origins, yes; with them, if its
        record is the named node's signature (the record already held for the same address and epoch is
        not checked again: most entries repeat what we know)."""
        if self._check is None:
            return True
        if member is not None and record is not None and (record, epoch, address) == (
                member.record, member.epoch, member.address):
            return True
        return self._check(name, wire.peer_claim(name, list(address), epoch), record)

    # ------------------------------------------------------------------ LEAVE

    def leave(self, now: float) -> None:
        """Announce our graceful exit to every linked peer."""
        self._departed[(self.name, self.epoch)] = now  # our own LEAVE coming back is not passed on
        linked = tuple(m.conn for m in self.linked_members())
        if linked:
            address = list(self.listen_address)
            fields: dict[str, Any] = {"name": self.name, "epoch": self.epoch, "address": address}
            if self._sign is not None:
                fields["sig"] = self._sign(wire.leave_claim(self.name, self.epoch, address))
            self.out.append(Send(linked, wire.encode_control(wire.KIND_LEAVE, fields)))  # type: ignore[arg-type]

    def on_leave(self, conn: int, fields: dict[str, Any], frame: bytes, now: float) -> list[Request]:
        name, epoch = fields.get("name"), fields.get("epoch")
        if not isinstance(name, str) or not isinstance(epoch, int) or (name, epoch) in self._departed:
            return []
        claim = wire.leave_claim(name, epoch, fields.get("address"))
        if self._check is not None and not self._check(name, claim, fields.get("sig")):
            self.counters[C.LEAVES_REFUSED] += 1  # only a node itself says it left: not passed on
            log.info("%s: a LEAVE for %s not signed by it was dropped", self.name, name)
            return []
        # Pass it on once: nodes that know the leaver only from gossip (in their view or their memory
        # of dead nodes) must not keep probing it. Leaves are rare, so flooding them is cheap.
        self._departed[(name, epoch)] = now
        while len(self._departed) > DEPARTED:
            del self._departed[next(iter(self._departed))]
        others = tuple(m.conn for m in self.linked_members() if m.conn != conn)
        if others:
            self.out.append(Send(others, frame))  # type: ignore[arg-type]
        forget: list[Address] = []
        address = fields.get("address")
        if isinstance(address, list) and len(address) == 2:
            forget.append((address[0], address[1]))
        member = self.members.get(name)
        if member is None or epoch != member.epoch:
            return [Forget(tuple(forget), None)]
        member.left = True
        forget.append(member.address)
        self.counters[C.MEMBERS_LEFT] += 1
        log.info("%s: %s left the cluster", self.name, name)
        return [Forget(tuple(forget), member.address)]

    # ------------------------------------------------------------------ upkeep

    def prune(self, now: float) -> list[Request]:
        """Retire links neither end wants any more (after a grace period for the peer's word)."""
        grace = 2 * self.gossip_interval
        return [self._prune(member, "neither end wants the link", now) for member in self.linked_members()
                if member.name not in self.wanted and not member.peer_wants
                and now - member.linked_since > grace]

    def bound_view(self, now: float) -> None:
        """Trim the view as soon as it passes its bound (a join storm brings members fast)."""
        if len(self.members) > self.reserve_size + 4 * self.local_links + self.max_peers:
            self.trim_view(now)

    def trim_view(self, now: float) -> None:
        keep = self.policy.retained(self.name, self._views(now))
        for name in [n for n, m in self.members.items() if n not in keep and m.conn is None]:
            del self.members[name]

    def forget_unreachable(self, now: float) -> list[Request]:
        """Unlinked members go when they left, when they failed and stayed unreachable for `forgetAfter`,
        or when nobody has vouched for them that long (a node we only heard of, that then died unseen).
        The address of one that failed is kept for probes: evidence of a death or a partition."""
        limit = self.forget_after
        gone = [m for m in self.members.values()
                if m.conn is None and (m.left or now - m.heard_at > limit
                                       or (m.unreachable_since is not None and m.failures >= 1
                                           and now - m.unreachable_since > limit))]
        requests: list[Request] = []
        for member in gone:
            del self.members[member.name]
            if not member.left and member.failures >= 1:
                requests.append(Remember(member.address))
        if gone:
            self.counters[C.MEMBERS_FORGOTTEN] += 1
        return requests

    @staticmethod
    def _entries(members: Iterable[_Member]) -> list[list[Any]]:
        return [[m.name, list(m.address), m.epoch] + ([m.record] if m.record is not None else [])
                for m in members]
