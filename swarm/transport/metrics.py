"""The `metrics` option: Prometheus metrics and health endpoints over HTTP, for operators.

* `GET /metrics`: every counter of `swarm.counters` as a Prometheus counter `swarm_<name>_total`, and
  gauges of the node's state (links, view size, queued frames and bytes, seen-record size, held
  messages, pulls pending, delivery queue, readiness), and a histogram of the links each broadcast's
  first copy crossed (`swarm_broadcast_hops`), in the text format that `prometheus_client` writes
  (`generate_latest`), never a hand-written one.
* `GET /healthz`: 200 while the node runs.
* `GET /readyz`: 200 only while the node is ready: it has its `minimumPeers` links and no other live
  process holds its name (a name conflict turns it 503).

Nothing is counted for the metrics: the collector reads the node's `status()` when scraped, so a scrape
costs the node one status snapshot and the hot path nothing. The HTTP side is the least HTTP/1.0 a
scraper and a kubelet probe need (one request per connection, `Connection: close`); a request line over
`MAX_REQUEST` bytes, or one that does not come within `REQUEST_TIMEOUT`, is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import counters as C

__all__ = ["GAUGES", "HOPS_BUCKETS", "MetricsServer", "StatusCollector"]

log = logging.getLogger("swarm.transport")

# A request's head is read up to this many bytes (a scraper's is ~200).
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
# The gauges: metric name, help text, and how to read it from `status()`.
GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], float]], ...] = (
    ("swarm_ready", "1 while the node is ready (its minimumPeers links, no name conflict)",
     lambda s: float(bool(s.get("ready")) and not s.get("name_conflict"))),
    ("swarm_links", "links to peers", lambda s: len(s.get("links", ()))),
    ("swarm_view_size", "members in the view", lambda s: s.get("view_size", 0)),
    ("swarm_members", "members known", lambda s: s.get("members", 0)),
    ("swarm_seen_entries", "seen-record entries (records and held messages)",
     lambda s: s.get("seen_entries", 0)),
    ("swarm_held", "messages held behind a gap", lambda s: s.get("held", 0)),
    ("swarm_pulls_pending", "pulls of missing frames waiting for an answer",
     lambda s: s.get("pulls_pending", 0)),
    ("swarm_queued_frames", "frames in the links' send queues", lambda s: sum(s.get("queued", {}).values())),
    ("swarm_queued_bytes", "bytes in the links' send queues",
     lambda s: sum(s.get("queued_bytes", {}).values())),
    ("swarm_lagging_links", "links whose send queue lags (over half full for a second)",
     lambda s: len(s.get("lagging", ()))),
    ("swarm_delivery_queue", "messages waiting for the subscriber callbacks",
     lambda s: s.get("delivery_queue", 0)),
    ("swarm_delivery_queue_bytes", "bytes waiting for the subscriber callbacks",
     lambda s: s.get("delivery_queue_bytes", 0)),
    ("swarm_name_conflict", "1 while another live process holds this node's name",
     lambda s: float(s.get("name_conflict") is not None)),
)


# Buckets of the hop-count histogram (links a broadcast's first copy crossed). A cluster of N nodes on the
# default overlay delivers within ~log2(N) hops (5 at 1,000 simulated nodes, 7 at 10,000): past 12, the
# overlay is broken or the tree far from its shortest paths, and one bucket says so.
HOPS_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 12)


def hops_histogram(hops: dict[str, int]) -> HistogramMetricFamily:
    """`status()["hops"]` (first copies received, by links crossed) as a Prometheus histogram: read from
    the node's own tally at scrape time, so the hot path pays nothing for it."""
    counts = {int(links): count for links, count in hops.items()}
    buckets = [(str(bound), float(sum(count for links, count in counts.items() if links <= bound)))
               for bound in HOPS_BUCKETS]
    buckets.append(("+Inf", float(sum(counts.values()))))
    family = HistogramMetricFamily("swarm_broadcast_hops", "links the first copy of each broadcast "
                                   "received had crossed")
    family.add_metric([], buckets, sum_value=float(sum(links * count for links, count in counts.items())))
    return family


class StatusCollector:
    """A `prometheus_client` collector over a node's `status()`, read at each scrape."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        status = self._status()
        counts = status.get("counters", {})
        names = list(C.COUNTERS) + [C.error_counter(code) for code in C.ERROR_CODES]
        meanings = {name: doc.meaning for name, doc in C.COUNTERS.items()}
        for name in names:
            family = CounterMetricFamily(f"swarm_{name}", meanings.get(name, f"`error` events: {name[6:]}"))
            family.add_metric([], float(counts.get(name, 0)))
            yield family
        for name, text, read in GAUGES:
            family = GaugeMetricFamily(name, text)
            family.add_metric([], float(read(status)))
            yield family
        yield hops_histogram(status.get("hops", {}))


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on `host:port` until cancelled."""

    def __init__(self, host: str, port: int, status: Callable[[], dict[str, Any]]) -> None:
        self.host = host
        self.port = port
        self._status = status
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(status))  # type: ignore[arg-type]
        self.address: tuple[str, int] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.address = listeners[0].socket.getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics", *self.address)
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    head = b""
                    while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_REQUEST:
                        data = await stream.receive_some(4096)
                        if not data:
                            break
                        head += data
                    await stream.send_all(self._answer(head))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    def _answer(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            return _response(405, b"GET only\n")
        path = parts[1].split(b"?", 1)[0]
        if path == b"/metrics":
            return _response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path == b"/healthz":
            return _response(200, b"ok\n")
        if path == b"/readyz":
            status = self._status()
            if status.get("name_conflict"):
                return _response(503, b"not ready: another live process holds this node's name\n")
            if not status.get("ready"):
                return _response(503, b"not ready: fewer links than minimumPeers\n")
            return _response(200, b"ready\n")
        return _response(404, b"not found: /metrics, /healthz, /readyz\n")


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _response(code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.0 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body
