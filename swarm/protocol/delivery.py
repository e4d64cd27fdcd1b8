"""Delivery: what the core hands to the application, for the topics it subscribes to.

Every node receives and relays every message (a relay must forward anyway); delivery is local. The
broadcast and direct sub-machines give this part each frame the seen-record releases, in per-origin
order, and it answers with one `Deliver` action per message whose topic has a local subscriber, the
message still encoded (each callback decodes its own copy). The set of subscribed topics is the
driver's, when it passes one (the node's registry of callbacks): subscriptions live in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from .. import counters as C
from ..errors import ProtocolError
from . import wire
from .actions import Action, Deliver

__all__ = ["Delivery"]

# Decoded origin names and encoded topics kept: origins are the live publishers, topics a handful.
ORIGIN_NAMES = 4096
TOPICS_ENCODED = 1024


class Delivery:
    """Subscribed topics, and the `Deliver` actions for them."""

    def __init__(self, topics: Collection[str | int], counters: Counter[str], out: list[Action]) -> None:
        self.topics = topics
        self.counters = counters
        self.out = out
        self._origin_names: dict[bytes, str] = {}
        self._topic_cache: dict[str | int, bytes] = {}

    def topic_bytes(self, topic: str | int) -> bytes:
        """`topic` encoded for the wire (`wire.encode_topic`), from a cache: a node publishes on few."""
        topic_bytes = self._topic_cache.get(topic)
        if topic_bytes is None or type(topic) is bool:
            topic_bytes = wire.encode_topic(topic)
            if len(self._topic_cache) < TOPICS_ENCODED:
                self._topic_cache[topic] = topic_bytes
        return topic_bytes

    def deliver(self, frame: bytes, entries: list[tuple[str | int, int, int]] | None = None) -> None:
        """Hand the messages of a DATA or DIRECT frame (checked on arrival) to the local subscribers of
        their topics. `entries` are the DATA frame's, when the caller has parsed them already."""
        try:
            if entries is None:
                entries = wire.payload_entries(frame)
        except ProtocolError:  # held behind a gap, then found bad on arrival: its link is gone already
            self.counters[C.MALFORMED_DROPPED] += 1
            return
        topics = self.topics
        out = self.out
        origin = None
        hops = wire.hops(frame) + 1
        delivered = 0
        for topic, offset, end in entries:
            if topic not in topics:
                self.counters[C.DROPPED_NO_SUBSCRIBER] += 1
                continue
            if origin is None:
                origin_bytes = wire.payload_origin(frame)
                origin = self._origin_names.get(origin_bytes)
                if origin is None:
                    origin = origin_bytes.decode("utf-8", "replace")
                    if len(self._origin_names) < ORIGIN_NAMES:
                        self._origin_names[origin_bytes] = origin
            delivered += 1
            out.append(Deliver(origin, topic, frame, offset, end, hops))
        self.counters[C.DELIVERED] += delivered
