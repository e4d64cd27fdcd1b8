"""Dialer: turns the addresses a node wants links to into `Dial` actions, with backoff and probes.

Membership says which members it wants and where they are; this sub-machine decides when to dial each
address, and what else to dial:

* **Backoff.** A lost link or a failed dial is retried after an exponential backoff with full jitter
  (the AWS architecture blog's recommendation), so that the many nodes that lost one peer at the same
  moment do not re-dial it in step. A dial stays in flight until its handshake ends either way, so a
  peer whose kernel accepts while its process hangs does not get a new connection every tick.
* **Isolation.** A node with no link at all dials its seeds, its remembered addresses and every member
  it knows.
* **Probes.** Now and then a linked node dials one address once: a member that failed twice or a
  remembered address (signs of a partition) when there are any, else a seed not reached for
  `SEED_RECHECK` seconds. That is how partitions heal, while seeds carry a load that does not grow
  with the cluster.
* **Remembered addresses** (the peers file, forgotten members that had failed) are probed for
  `REMEMBER_FACTOR × forgetAfter` seconds, then dropped: the cluster stops trying a dead node after a
  bounded time. An address that answered with our own HELLO is never dialled again, and a peer that
  refused us (another cluster or version) is retried only at `reconnectMaxDelay`.

It hears of links by `LinkUp`/`LinkDown` (an address whose owner is linked is not dialled), and reports
a failed dial to membership as `DialFailed`, which is how a member becomes unreachable.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import counters as C
from .actions import Action, Dial, ReportError
from .events import Closed, DialFailed, Forget, LinkDown, LinkUp, Refused, SelfConnection

__all__ = ["ADDRESS_OWNERS", "REMEMBERED", "REMEMBER_FACTOR", "SEED_RECHECK", "Dialer"]

log = logging.getLogger("swarm.protocol")

Address = tuple[str, int]

# Addresses of once-known nodes kept for probes and rejoining (HyParView's passive view is ~30).
REMEMBERED = 32
REMEMBER_FACTOR = 10
# A seed reached this recently is not probed (unless nodes were lost): seeds are the last resort.
SEED_RECHECK = 300.0
# Dialled addresses whose answering member is remembered (to skip dialling a seed address whose node
# is linked already, and to pin a failed dial on a member): a few times a view's size.
ADDRESS_OWNERS = 256


@dataclass(slots=True)
class _DialTarget:
    """Retry state of one address we want a connection to."""

    failures: int = 0
    next_attempt: float = 0.0
    in_flight: bool = False
    refused: bool = False  # the peer there refused us (other cluster or version)


class Dialer:
    """When to dial which address."""

    def __init__(self, config: Any, *, listen_address: Address, rng: random.Random, counters: Counter[str],
                 out: list[Action]) -> None:
        """`config`: the node's `CoreConfig` (seed_nodes, reconnect_min_delay, reconnect_max_delay,
        forget_after are read)."""
        self.seeds: tuple[Address, ...] = tuple(config.seed_nodes)
        self.reconnect_min_delay: float = config.reconnect_min_delay
        self.reconnect_max_delay: float = config.reconnect_max_delay
        self.forget_after: float = config.forget_after
        self.rng = rng
        self.counters = counters
        self.out = out
        self.targets: dict[Address, _DialTarget] = {}
        self.self_addresses: set[Address] = {listen_address}
        self.address_owner: dict[Address, str] = {}  # dialled address -> the member that answered there
        self.probes: set[Address] = set()  # addresses to dial once (partition repair)
        self.seed_contact: dict[Address, float] = {}  # seed address -> last handshake with it
        # Addresses of forgotten members (and of the peers file), with when they were remembered.
        self.remembered: dict[Address, float] = {}
        self.linked: dict[str, Address] = {}  # linked peers and their listen addresses

    # ------------------------------------------------------------------ what to dial

    def dial_due(self, now: float, wanted: Iterable[Address], known: Iterable[Address]) -> None:
        """Dial what should be linked and is not: the `wanted` addresses, and while isolated the seeds,
        the remembered addresses and `known` ones; and the probes."""
        desired = set(wanted)
        if not self.linked:
            # Isolated (just started, or cut off): the seeds and every node we know are the way back.
            desired.update(self.seeds)
            desired.update(self.remembered)
            desired.update(known)
        desired.update(self.probes)
        desired -= self.self_addresses
        for address in sorted(desired):  # sorted: the same seed must give the same run in any process
            target = self.targets.get(address)
            if target is None:
                target = self.targets[address] = _DialTarget(next_attempt=now)
            if target.in_flight or target.next_attempt > now:
                continue
            if self.address_owner.get(address) in self.linked:
                continue
            target.in_flight = True
            self.counters[C.DIALS] += 1
            self.out.append(Dial(address))
        for address in [a for a, t in self.targets.items() if a not in desired and not t.in_flight]:
            del self.targets[address]

    def probe(self, now: float, failed: Iterable[Address]) -> None:
        """Dial one node we lost or a seed we have not heard of lately: how partitions heal.

        Nodes we could not reach (`failed` members, remembered addresses) are the sign of a partition
        and come first. A seed is probed only without such signs and when not reached for
        `SEED_RECHECK` seconds, so seeds do not carry a load that grows with the cluster.
        """
        linked = set(self.linked.values())
        # The cluster stops trying a dead node after a bounded time; seeds are tried for ever.
        horizon = now - REMEMBER_FACTOR * self.forget_after
        for address in [a for a, since in self.remembered.items() if since < horizon]:
            del self.remembered[address]
        candidates = list(failed) + [a for a in self.remembered if a not in linked]
        if not candidates:
            candidates = [a for a in self.seeds if a not in linked
                          and now - self.seed_contact.get(a, -SEED_RECHECK) >= SEED_RECHECK]
        candidates = [a for a in candidates if a not in self.self_addresses]
        if candidates:
            self.probes.add(self.rng.choice(candidates))
            self.counters[C.PROBES] += 1

    def remember(self, address: Address, now: float) -> None:
        """Keep `address` for probes (and for dialling while isolated), the newest last."""
        if address in self.self_addresses:
            return
        self.remembered.pop(address, None)
        self.remembered[address] = now
        while len(self.remembered) > REMEMBERED:
            del self.remembered[next(iter(self.remembered))]  # the oldest

    def redial(self, address: Address, now: float) -> None:
        """Dial `address` again after a backoff that grows with its failures."""
        target = self.targets.setdefault(address, _DialTarget())
        ceiling = min(self.reconnect_max_delay, self.reconnect_min_delay * (2 ** min(target.failures, 30)))
        target.next_attempt = now + self.reconnect_min_delay / 2 + self.rng.uniform(0, ceiling)

    def owner(self, address: Address | None) -> str | None:
        """The member that answered at the dialled `address`, if any did."""
        return None if address is None else self.address_owner.get(address)

    # ------------------------------------------------------------------ what came of a dial

    def opened(self, address: Address) -> None:
        self.probes.discard(address)

    def failed(self, address: Address, reason: str, now: float) -> DialFailed | None:
        """The dial of `address` failed before a connection came up."""
        self.probes.discard(address)
        self.counters[C.DIAL_FAILURES] += 1
        log.debug("dial %s:%s failed: %s", *address, reason)
        target = self.targets.get(address)
        if target is None:
            return None
        target.in_flight = False
        return self._failed(address, target, now)

    def _failed(self, address: Address, target: _DialTarget, now: float) -> DialFailed:
        target.failures += 1
        self.redial(address, now)
        return DialFailed(address, self.address_owner.get(address))

    def handshake(self, dialled: Address | None) -> None:
        """A HELLO came on the connection dialled at `dialled`: the dial worked."""
        target = self.targets.get(dialled) if dialled is not None else None
        if target is not None:
            target.failures = 0
            target.in_flight = False

    def answered(self, dialled: Address | None, name: str, now: float) -> None:
        """`name` answered at `dialled` (and was admitted): remember who lives there."""
        if dialled is None:
            return
        self.address_owner.pop(dialled, None)
        self.address_owner[dialled] = name
        if dialled in self.seeds:
            self.seed_contact[dialled] = now
        if len(self.address_owner) > ADDRESS_OWNERS:
            stale = next((a for a, owner in self.address_owner.items()
                          if owner not in self.linked and a not in self.seeds), None)
            if stale is not None:
                del self.address_owner[stale]

    def closed(self, event: Closed, now: float) -> DialFailed | None:
        """A connection closed; one we dialled that never said HELLO counts as a failed dial."""
        target = self.targets.get(event.dialled) if event.dialled is not None else None
        if target is None:
            return None
        target.in_flight = False
        if event.handshaken:
            return None
        assert event.dialled is not None
        self.counters[C.DIAL_FAILURES] += 1
        return self._failed(event.dialled, target, now)

    def self_connection(self, event: SelfConnection) -> None:
        for address in event.addresses:
            self.self_addresses.add(address)
            self.targets.pop(address, None)

    def refused(self, event: Refused, now: float) -> None:
        """A peer refused us for good (not a polite 'full'): report it once per address, and retry only
        at `reconnectMaxDelay` (a misconfigured seed retried for ever must not become an error storm)."""
        target = self.targets.get(event.dialled) if event.dialled is not None else None
        if (target is None or not target.refused) and not event.conflict:  # (links reports a conflict)
            self.out.append(ReportError("refused", f"peer {event.peer or event.dialled} refused us: "
                                                   f"{event.reason}"))
        if target is not None:
            target.refused = True
            target.failures = max(target.failures, 30)
            assert event.dialled is not None
            # Its next dial, whether the connection closes as a failed dial or after its HELLO passed.
            self.redial(event.dialled, now)

    def forget(self, event: Forget) -> None:
        """A member left: never probe it again, nor dial it (unless it is a seed)."""
        for address in event.addresses:
            self.remembered.pop(address, None)
        if event.member_address is not None and event.member_address not in self.seeds:
            self.targets.pop(event.member_address, None)

    # ------------------------------------------------------------------ links

    def link_up(self, event: LinkUp) -> None:
        self.linked[event.name] = event.address

    def link_down(self, event: LinkDown) -> None:
        self.linked.pop(event.name, None)
