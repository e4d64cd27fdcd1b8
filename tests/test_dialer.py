"""Dialer (swarm.protocol.dialer), driven by hand: which addresses `dial_due` dials (wanted ones once at
a time, seeds and remembered and known ones while isolated, never our own), the jittered exponential
backoff of `redial`, what failed and closed dials report, refusals, probes, and the remembered
addresses. Each test feeds the sub-machine events and checks the `Dial` and `ReportError` actions it
appended to `out`, the events it returned and its counters.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from swarm import counters as C
from swarm.protocol import events as ev
from swarm.protocol.actions import Dial, ReportError
from swarm.protocol.config import CoreConfig
from swarm.protocol.dialer import ADDRESS_OWNERS, REMEMBER_FACTOR, REMEMBERED, SEED_RECHECK, Dialer

HERE = ("10.0.0.1", 7001)
SEED = ("10.0.0.9", 7009)
B = ("10.0.0.2", 7002)
C_ADDRESS = ("10.0.0.3", 7003)
D = ("10.0.0.4", 7004)
MIN, MAX = 1.0, 8.0  # reconnect delays
FORGET_AFTER = 60.0


class EdgeRng(random.Random):
    """`uniform` gives the top of its range and `choice` the first candidate; both record their
    arguments, so a test sees the backoff ceiling and the probe candidates exactly."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ranges: list[tuple[float, float]] = []
        self.candidates: list[list[Any]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b

    def choice(self, seq: Any) -> Any:
        self.candidates.append(list(seq))
        return seq[0]


def make_dialer(rng: random.Random | None = None, seeds: tuple[Any, ...] = (SEED,)) -> Dialer:
    config = CoreConfig(server_name="a", seed_nodes=seeds, reconnect_min_delay=MIN,
                        reconnect_max_delay=MAX, forget_after=FORGET_AFTER)
    return Dialer(config, listen_address=HERE, rng=rng or EdgeRng(), counters=Counter(), out=[])


def dialled(dialer: Dialer) -> list[Any]:
    """The addresses dialled since the last call (every action checked to be a Dial)."""
    actions = dialer.out.copy()
    dialer.out.clear()
    assert all(isinstance(action, Dial) for action in actions), actions
    return [action.address for action in actions]


def due(dialer: Dialer, now: float, wanted: tuple[Any, ...] = (), known: tuple[Any, ...] = ()) -> list[Any]:
    """Run `dial_due` and return what it dialled."""
    dialer.dial_due(now, wanted, known)
    return dialled(dialer)


def link_up(dialer: Dialer, name: str = "b", address: Any = B) -> None:
    dialer.link_up(ev.LinkUp(name, 1, 1, address, address, True))


def link_down(dialer: Dialer, name: str = "b", address: Any = B) -> None:
    dialer.link_down(ev.LinkDown(name, 1, address, "gone", ev.FAILED, 0.0))


def fail(dialer: Dialer, address: Any, now: float, times: int = 1) -> None:
    """Dial `address` and have the dial fail, `times` times (each as soon as it is due)."""
    for _ in range(times):
        if address in dialer.targets:
            dialer.targets[address].next_attempt = now
        assert address in due(dialer, now, (address,))
        dialer.failed(address, "refused", now)


# ---------------------------------------------------------------------- dial_due


def test_a_wanted_address_is_dialled_once_and_stays_in_flight_until_its_dial_ends() -> None:
    dialer = make_dialer()
    link_up(dialer, "c", C_ADDRESS)  # not isolated: only what is wanted
    assert due(dialer, 0.0, (B,)) == [B]
    assert due(dialer, 10.0, (B,)) == []
    assert dialer.counters == Counter({C.DIALS: 1})
    dialer.handshake(B)
    assert due(dialer, 10.0, (B,)) == [B]
    assert dialer.counters == Counter({C.DIALS: 2})


def test_wanted_addresses_are_dialled_in_sorted_order() -> None:
    dialer = make_dialer()
    link_up(dialer, "x", ("10.9.9.9", 1))
    assert due(dialer, 0.0, (D, B, C_ADDRESS)) == [B, C_ADDRESS, D]


def test_an_isolated_node_dials_its_seeds_remembered_and_known_addresses() -> None:
    dialer = make_dialer()
    dialer.remember(C_ADDRESS, 0.0)
    assert due(dialer, 0.0, (B,), known=(D,)) == sorted([B, C_ADDRESS, D, SEED])


def test_a_linked_node_dials_only_what_is_wanted() -> None:
    dialer = make_dialer()
    dialer.remember(C_ADDRESS, 0.0)
    link_up(dialer, "x", ("10.9.9.9", 1))
    assert due(dialer, 0.0, (B,), known=(D,)) == [B]
    link_down(dialer, "x", ("10.9.9.9", 1))
    assert due(dialer, 0.0, (B,), known=(D,)) == sorted([C_ADDRESS, D, SEED])  # B is in flight


def test_the_own_listen_address_is_never_dialled() -> None:
    dialer = make_dialer(seeds=(HERE, SEED))
    dialer.remember(HERE, 0.0)
    assert due(dialer, 0.0, (HERE,), known=(HERE,)) == [SEED]
    assert HERE not in dialer.targets and dialer.remembered == {}


def test_an_address_that_answered_with_our_own_hello_is_never_dialled_again() -> None:
    dialer = make_dialer(seeds=(SEED, B))
    assert due(dialer, 0.0) == [B, SEED]
    dialer.self_connection(ev.SelfConnection((("192.168.0.1", 7001), B)))
    assert B not in dialer.targets
    assert due(dialer, 1.0, (B, ("192.168.0.1", 7001))) == []
    dialer.probe(1.0, [B])
    assert dialer.probes == set()


def test_an_address_whose_answering_member_is_linked_is_not_dialled() -> None:
    dialer = make_dialer()
    dialer.answered(SEED, "s", 0.0)
    link_up(dialer, "s", ("10.0.0.8", 7008))  # linked at another address than the seed's
    assert due(dialer, 0.0, (SEED,)) == []
    link_down(dialer, "s", ("10.0.0.8", 7008))
    assert due(dialer, 0.0, (SEED,)) == [SEED]


def test_targets_no_longer_desired_are_dropped_unless_in_flight() -> None:
    dialer = make_dialer()
    link_up(dialer, "x", ("10.9.9.9", 1))
    assert due(dialer, 0.0, (B, C_ADDRESS)) == [B, C_ADDRESS]
    dialer.failed(B, "unreachable", 0.0)
    assert due(dialer, 0.0) == []
    assert set(dialer.targets) == {C_ADDRESS}  # B dropped (with its failures), C still in flight
    assert due(dialer, 0.0, (B,)) == [B]  # a new target: due at once


# ---------------------------------------------------------------------- backoff


@pytest.mark.parametrize("failures", [0, 1, 2, 3, 4, 10])
def test_redial_waits_half_the_minimum_plus_a_jitter_up_to_the_capped_exponential(failures: int) -> None:
    dialer = make_dialer(random.Random(failures))
    ceiling = min(MAX, MIN * 2 ** failures)
    dialer.redial(B, 0.0)
    dialer.targets[B].failures = failures
    draws = []
    for _ in range(500):
        dialer.redial(B, 100.0)
        draws.append(dialer.targets[B].next_attempt - 100.0)
    assert MIN / 2 <= min(draws) and max(draws) <= MIN / 2 + ceiling
    # Full jitter: the draws spread over the whole range, not a fixed delay.
    assert min(draws) < MIN / 2 + 0.1 * ceiling and max(draws) > MIN / 2 + 0.9 * ceiling


def test_failures_push_the_retry_later_up_to_the_maximum_delay() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    due(dialer, 0.0, (B,))
    for _ in range(6):
        dialer.failed(B, "unreachable", 0.0)
        dialer.targets[B].in_flight = True
    assert [top for _, top in rng.ranges] == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert dialer.targets[B].next_attempt == MIN / 2 + MAX


def test_a_failed_dial_is_retried_only_when_its_backoff_is_over() -> None:
    dialer = make_dialer()
    link_up(dialer, "x", ("10.9.9.9", 1))
    due(dialer, 0.0, (B,))
    dialer.failed(B, "unreachable", 0.0)  # EdgeRng: the retry at MIN/2 + 2 * MIN
    assert due(dialer, 2.49, (B,)) == []
    assert due(dialer, 2.5, (B,)) == [B]


# ---------------------------------------------------------------------- what came of a dial


def test_a_failed_dial_returns_dial_failed_with_the_owner_and_is_counted() -> None:
    dialer = make_dialer()
    dialer.answered(B, "b", 0.0)
    due(dialer, 0.0, (B, C_ADDRESS))
    assert dialer.failed(B, "unreachable", 1.0) == ev.DialFailed(B, "b")
    assert dialer.failed(C_ADDRESS, "unreachable", 1.0) == ev.DialFailed(C_ADDRESS, None)
    assert not dialer.targets[B].in_flight and dialer.targets[B].failures == 1
    assert dialer.counters == Counter({C.DIALS: 3, C.DIAL_FAILURES: 2})  # the seed too: isolated


def test_a_failed_dial_of_an_address_not_targeted_returns_nothing_but_is_counted() -> None:
    dialer = make_dialer()
    assert dialer.failed(B, "unreachable", 0.0) is None
    assert dialer.counters == Counter({C.DIAL_FAILURES: 1})
    assert dialer.targets == {}


def test_a_dialled_connection_closed_before_its_hello_returns_dial_failed() -> None:
    dialer = make_dialer()
    dialer.answered(B, "b", 0.0)
    due(dialer, 0.0, (B,))
    assert dialer.closed(ev.Closed(1, B, False), 1.0) == ev.DialFailed(B, "b")
    assert not dialer.targets[B].in_flight and dialer.targets[B].failures == 1
    assert dialer.targets[B].next_attempt == 1.0 + MIN / 2 + 2 * MIN


def test_a_dialled_connection_closed_before_its_hello_counts_as_a_dial_failure() -> None:
    dialer = make_dialer()
    due(dialer, 0.0, (B,))
    dialer.closed(ev.Closed(1, B, False), 1.0)
    assert dialer.counters[C.DIAL_FAILURES] == 1


def test_a_closed_connection_that_was_handshaken_or_not_dialled_is_no_failure() -> None:
    dialer = make_dialer()
    due(dialer, 0.0, (B,))
    assert dialer.closed(ev.Closed(1, B, True), 1.0) is None
    assert not dialer.targets[B].in_flight and dialer.targets[B].failures == 0
    assert dialer.closed(ev.Closed(2, None, False), 1.0) is None
    assert dialer.closed(ev.Closed(3, C_ADDRESS, False), 1.0) is None
    assert dialer.counters == Counter({C.DIALS: 2})


def test_a_handshake_resets_the_failures_and_ends_the_dial() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    fail(dialer, B, 0.0, times=3)
    assert dialer.targets[B].failures == 3
    dialer.targets[B].in_flight = True
    dialer.handshake(B)
    assert (dialer.targets[B].failures, dialer.targets[B].in_flight) == (0, False)
    dialer.redial(B, 10.0)
    assert rng.ranges[-1] == (0, MIN)
    dialer.handshake(None)  # an accepted connection: nothing to reset
    dialer.handshake(C_ADDRESS)


def test_answered_remembers_who_lives_at_the_address_and_owner_reports_it() -> None:
    dialer = make_dialer()
    dialer.answered(B, "b", 0.0)
    dialer.answered(None, "c", 0.0)
    assert (dialer.owner(B), dialer.owner(C_ADDRESS), dialer.owner(None)) == ("b", None, None)
    dialer.answered(B, "b2", 1.0)  # another process answers there now
    assert dialer.owner(B) == "b2"


def test_the_owners_kept_are_bounded_dropping_the_oldest_unlinked_non_seed_first() -> None:
    dialer = make_dialer()
    dialer.answered(SEED, "s", 0.0)
    dialer.answered(B, "b", 0.0)
    link_up(dialer, "b", B)
    addresses = [("10.1.0.0", port) for port in range(ADDRESS_OWNERS - 2)]
    for number, address in enumerate(addresses):
        dialer.answered(address, f"n{number}", 0.0)
    assert len(dialer.address_owner) == ADDRESS_OWNERS
    dialer.answered(("10.2.0.0", 1), "new", 0.0)
    assert len(dialer.address_owner) == ADDRESS_OWNERS
    assert addresses[0] not in dialer.address_owner
    assert dialer.owner(SEED) == "s" and dialer.owner(B) == "b" and dialer.owner(addresses[1]) == "n1"


# ---------------------------------------------------------------------- refusals


def refused(dialer: Dialer, address: Any = B, peer: str | None = "b") -> list[Any]:
    dialer.refused(ev.Refused(peer, address, "cluster name 'x' differs from 'y'", False, []), 0.0)
    actions = dialer.out.copy()
    dialer.out.clear()
    return actions


def test_a_refusal_is_reported_once_per_address() -> None:
    dialer = make_dialer()
    due(dialer, 0.0, (B,))
    assert refused(dialer) == [ReportError("refused", "peer b refused us: cluster name 'x' differs from 'y'")]
    assert refused(dialer) == []
    assert refused(dialer, None, None) == [
        ReportError("refused", "peer None refused us: cluster name 'x' differs from 'y'")]
    assert refused(dialer, SEED, None) == [
        ReportError("refused", f"peer {SEED} refused us: cluster name 'x' differs from 'y'")]
    assert dialer.counters == Counter({C.DIALS: 2})


def test_a_refused_address_is_retried_only_at_the_maximum_delay() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    link_up(dialer, "x", ("10.9.9.9", 1))
    due(dialer, 0.0, (B,))
    refused(dialer)  # at 0.0: the retry is put off to the maximum delay at once
    dialer.closed(ev.Closed(1, B, False), 1.0)  # ...and again when the refused connection closes
    assert rng.ranges == [(0, MAX), (0, MAX)]
    assert due(dialer, 1.0 + MIN / 2 + MAX - 0.01, (B,)) == []
    assert due(dialer, 1.0 + MIN / 2 + MAX, (B,)) == [B]


def test_a_refused_address_keeps_the_maximum_delay_on_every_later_failure() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    due(dialer, 0.0, (B,))
    refused(dialer)
    dialer.failed(B, "reset", 0.0)
    dialer.failed(B, "reset", 0.0)
    assert [top for _, top in rng.ranges] == [MAX, MAX, MAX]  # the refusal's own retry, then both
    assert refused(dialer) == []


def test_a_peer_that_refuses_after_its_hello_is_retried_only_at_the_maximum_delay() -> None:
    dialer = make_dialer()
    link_up(dialer, "x", ("10.9.9.9", 1))
    due(dialer, 0.0, (B,))
    dialer.handshake(B)
    refused(dialer)
    assert dialer.closed(ev.Closed(1, B, True), 1.0) is None
    assert due(dialer, 1.0 + MIN / 2, (B,)) == []


# ---------------------------------------------------------------------- probes


def test_a_probe_picks_among_failed_members_and_remembered_addresses_before_seeds() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    dialer.remember(C_ADDRESS, 0.0)
    dialer.probe(1.0, [B])
    assert rng.candidates == [[B, C_ADDRESS]]
    assert dialer.probes == {B}
    assert dialer.counters == Counter({C.PROBES: 1})


def test_a_probe_is_dialled_once_while_linked() -> None:
    dialer = make_dialer()
    link_up(dialer, "x", ("10.9.9.9", 1))
    dialer.probe(1.0, [B])
    assert due(dialer, 1.0) == [B]
    dialer.opened(B)
    assert dialer.probes == set()
    dialer.handshake(B)
    assert due(dialer, 2.0) == []
    assert B not in dialer.targets


def test_a_failed_probe_is_not_dialled_again() -> None:
    dialer = make_dialer()
    link_up(dialer, "x", ("10.9.9.9", 1))
    dialer.probe(1.0, [B])
    assert due(dialer, 1.0) == [B]
    dialer.failed(B, "unreachable", 1.0)
    assert dialer.probes == set()
    assert due(dialer, 100.0) == []


def test_a_seed_is_probed_when_not_reached_for_seed_recheck_seconds() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    dialer.probe(0.0, [])  # never reached
    assert rng.candidates == [[SEED]]
    dialer.probes.clear()
    dialer.answered(SEED, "s", 10.0)
    dialer.probe(10.0 + SEED_RECHECK - 1, [])
    assert dialer.probes == set()
    dialer.probe(10.0 + SEED_RECHECK, [])
    assert dialer.probes == {SEED}
    assert dialer.counters == Counter({C.PROBES: 2})


def test_a_probe_never_picks_a_linked_address() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng, seeds=(SEED, D))
    dialer.remember(B, 0.0)
    dialer.remember(C_ADDRESS, 0.0)
    link_up(dialer, "b", B)
    link_up(dialer, "s", SEED)
    dialer.probe(1.0, [])
    assert rng.candidates == [[C_ADDRESS]]
    dialer.remembered.clear()
    dialer.probe(2.0, [])
    assert rng.candidates[-1] == [D]
    link_up(dialer, "d", D)
    dialer.probes.clear()
    dialer.probe(3.0, [])
    assert dialer.probes == set() and dialer.counters[C.PROBES] == 2


def test_a_probe_never_picks_our_own_address() -> None:
    dialer = make_dialer(seeds=(HERE,))
    dialer.probe(1.0, [HERE])
    assert dialer.probes == set()
    assert dialer.counters == Counter()


def test_remembered_addresses_older_than_remember_factor_times_forget_after_are_dropped_by_a_probe() -> None:
    rng = EdgeRng()
    dialer = make_dialer(rng)
    horizon = REMEMBER_FACTOR * FORGET_AFTER
    dialer.remember(B, 0.0)
    dialer.remember(C_ADDRESS, 5.0)
    dialer.probe(horizon, [])
    assert list(dialer.remembered) == [B, C_ADDRESS]  # exactly at the horizon: kept
    dialer.probe(horizon + 1.0, [])
    assert list(dialer.remembered) == [C_ADDRESS]
    assert rng.candidates[-1] == [C_ADDRESS]
    dialer.probe(horizon + 6.0, [])
    assert dialer.remembered == {}
    assert rng.candidates[-1] == [SEED]  # nothing lost left: the seed


# ---------------------------------------------------------------------- remembered addresses, forgetting


def test_remember_keeps_the_newest_addresses_up_to_the_limit() -> None:
    dialer = make_dialer()
    addresses = [("10.1.0.0", port) for port in range(REMEMBERED + 2)]
    for when, address in enumerate(addresses):
        dialer.remember(address, float(when))
    assert list(dialer.remembered) == addresses[2:]
    dialer.remember(addresses[2], 100.0)  # remembered again: now the newest
    dialer.remember(("10.2.0.0", 1), 101.0)
    assert list(dialer.remembered) == [*addresses[4:], addresses[2], ("10.2.0.0", 1)]
    assert dialer.remembered[addresses[2]] == 100.0


def test_forget_drops_remembered_addresses_and_the_dial_target_of_the_departed_member() -> None:
    dialer = make_dialer()
    dialer.remember(B, 0.0)
    dialer.remember(C_ADDRESS, 0.0)
    due(dialer, 0.0, (D,))
    dialer.forget(ev.Forget((B,), D))
    assert list(dialer.remembered) == [C_ADDRESS]
    assert D not in dialer.targets and SEED in dialer.targets


def test_forget_keeps_the_dial_target_of_a_seed() -> None:
    dialer = make_dialer()
    due(dialer, 0.0)
    dialer.forget(ev.Forget((), SEED))
    dialer.forget(ev.Forget((), None))
    assert set(dialer.targets) == {SEED}
