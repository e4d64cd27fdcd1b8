"""A rogue member for the signed-origin tests: a process with a valid certificate of the cluster that
writes hand-made frames.

Run as a script (`python tests/rogue.py --ca CA --cert CERT --key KEY --dial HOST:PORT`), it listens on
127.0.0.1 (an ephemeral port), dials the honest node given, says HELLO on every link with its own,
certified name, and relays what it receives: every DATA frame and CERTS frame that comes on one link goes
to its other links (one hop further), as an honest relay would, so that a node linked only to it gets the
cluster's traffic through it. It keeps each link alive with PINGs and ignores everything else. Driven over
stdin, one JSON object a line, it reports on stdout, one line each:

    rogue  -> parent   listening <host>:<port>
    rogue  -> parent   linked <peer name>                    a HELLO came back on a link
    rogue  -> parent   data <origin> <seq> <count>           a DATA frame arrived (before relaying it)
    rogue  -> parent   done <cmd>                            a command was carried out
    parent -> rogue    {"cmd": "alter", "origin": name|null}  from now on, flip one byte of the last message
                                                              of each relayed DATA frame of that origin
                                                              (its signature stays the origin's: it no
                                                              longer matches); null: relay honestly again
    parent -> rogue    {"cmd": "forge", "origin", "epoch", "seq", "topic", "message"}
                                                              a DATA frame under another origin's name,
                                                              signed with the rogue's own key, to every link
    parent -> rogue    {"cmd": "leave", "name", "epoch", "address"}
                                                              a LEAVE for another node, signed by the rogue
    parent -> rogue    {"cmd": "peers", "name", "address", "epoch"}
                                                              a PEERS entry saying that node moved and
                                                              restarted, its record signed by the rogue
    parent -> rogue    {"cmd": "replay", "origin"}            every DATA frame of that origin received so
                                                              far, again, byte for byte, to every link
    parent -> rogue    {"cmd": "stop"}                        close the links and exit 0

It signs as `swarm.transport.origin_auth` does (ECDSA P-256, SHA-256, raw r||s), with its own key: what
it forges is well formed and signed, only not by the origin it names.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from swarm.config import TlsFiles
from swarm.protocol import wire
from swarm.protocol.framing import FrameReader
from swarm.transport import tls

HOST = "127.0.0.1"
PING_EVERY = 0.3


class Rogue:
    def __init__(self, files: TlsFiles) -> None:
        self.setup = tls.load(files)
        self.name = tls.certificate_name(files.cert)
        with open(files.key, "rb") as handle:
            self.key = serialization.load_pem_private_key(handle.read(), password=None)
        self.epoch = time.time_ns() // 1000
        self.port = 0
        self.links: dict[int, trio.SSLStream[Any]] = {}
        self.locks: dict[int, trio.Lock] = {}
        self.captured: dict[str, list[bytes]] = {}
        self.certs: list[bytes] = []  # every CERTS frame received: a new link gets them, as from a member
        self.alter: str | None = None
        self._ids = iter(range(1, 1 << 30))

    def sign(self, *pieces: bytes | memoryview) -> bytes:
        digest = hashes.Hash(hashes.SHA256())
        for piece in pieces:
            digest.update(bytes(piece))
        der = self.key.sign(digest.finalize(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))  # type: ignore[union-attr]
        r, s = utils.decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def hello(self) -> bytes:
        address = [HOST, self.port]
        return wire.encode_control(wire.KIND_HELLO, {
            "version": wire.PROTOCOL_VERSION, "cluster": "swarm", "name": self.name, "epoch": self.epoch,
            "address": address, "nonce": random.getrandbits(63),
            "record": self.sign(wire.peer_claim(self.name, address, self.epoch))})

    async def send(self, link: int, frame: bytes) -> None:
        stream = self.links.get(link)
        if stream is None:
            return
        async with self.locks[link]:
            try:
                await stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.links.pop(link, None)

    async def to_all(self, frame: bytes, but: int | None = None) -> None:
        for link in list(self.links):
            if link != but:
                await self.send(link, frame)

    async def run_link(self, stream: trio.SSLStream[Any]) -> None:
        link = next(self._ids)
        await stream.do_handshake()
        self.links[link] = stream
        self.locks[link] = trio.Lock()
        await self.send(link, self.hello())
        reader = FrameReader(wire.max_frame_body(1 << 20), whole=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.keepalive, link)
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    for frame in reader.feed(data):
                        await self.on_frame(link, frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self.links.pop(link, None)
                nursery.cancel_scope.cancel()

    async def keepalive(self, link: int) -> None:
        while link in self.links:
            await self.send(link, wire.encode_control(wire.KIND_PING, {}))
            await trio.sleep(PING_EVERY)

    async def on_frame(self, link: int, frame: bytes) -> None:
        kind = wire.kind(frame)
        if kind == wire.KIND_HELLO:
            # Confirm the link as a member does (its first PEERS), so the peer counts it as working.
            await self.send(link, wire.encode_control(wire.KIND_PEERS, {"peers": [], "want": True}))
            for certs in self.certs:
                await self.send(link, certs)
            say(f"linked {wire.control_fields(frame).get('name')}")
        elif kind == wire.KIND_CERTS:
            self.certs.append(frame)
            await self.to_all(frame, but=link)
        elif kind == wire.KIND_DATA:
            origin, _key, seq, count = wire.data_stream(frame)
            name = origin.decode()
            self.captured.setdefault(name, []).append(frame)
            say(f"data {name} {seq} {count}")
            relayed = wire.relayed(frame, wire.hops(frame) + 1)
            if self.alter == name:
                end = wire.data_entries(relayed)[-1][2]
                changed = bytearray(relayed)
                changed[end - 1] ^= 0x01  # the last byte of the last message
                relayed = bytes(changed)
            await self.to_all(relayed, but=link)

    async def command(self, fields: dict[str, Any]) -> None:
        cmd = fields["cmd"]
        if cmd == "alter":
            self.alter = fields["origin"]
        elif cmd == "forge":
            entry = wire.encode_entry(wire.encode_topic(fields["topic"]),
                                      wire.encode_message(fields["message"]), 1 << 20)
            frame = wire.encode_batch(wire.encode_origin(fields["origin"]), fields["epoch"], fields["seq"],
                                      [entry])
            await self.to_all(wire.with_signature(frame, self.sign(*wire.signed_pieces(frame))))
        elif cmd == "leave":
            claim = wire.leave_claim(fields["name"], fields["epoch"], fields["address"])
            await self.to_all(wire.encode_control(wire.KIND_LEAVE, {
                "name": fields["name"], "epoch": fields["epoch"], "address": fields["address"],
                "sig": self.sign(claim)}))
        elif cmd == "peers":
            name, address, epoch = fields["name"], fields["address"], fields["epoch"]
            record = self.sign(wire.peer_claim(name, address, epoch))
            entries = [[name, address, epoch, record]]
            await self.to_all(wire.encode_control(wire.KIND_PEERS, {"peers": entries}))
        elif cmd == "replay":
            for frame in self.captured.get(fields["origin"], []):
                await self.to_all(wire.relayed(frame, wire.hops(frame) + 1))
        say(f"done {cmd}")


def say(line: str) -> None:
    print(line, flush=True)


async def main(args: argparse.Namespace) -> None:
    rogue = Rogue(TlsFiles(args.ca, args.cert, args.key))
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        rogue.port = listeners[0].socket.getsockname()[1]

        async def accepted(stream: trio.SocketStream) -> None:
            await rogue.run_link(trio.SSLStream(stream, rogue.setup.server, server_side=True))

        nursery.start_soon(trio.serve_listeners, accepted, listeners)
        say(f"listening {HOST}:{rogue.port}")
        host, port = args.dial.rsplit(":", 1)
        plain = await trio.open_tcp_stream(host, int(port))
        nursery.start_soon(rogue.run_link, trio.SSLStream(plain, rogue.setup.client, server_hostname=None))
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffer = b""
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                fields = json.loads(line)
                if fields["cmd"] == "stop":
                    nursery.cancel_scope.cancel()
                    return
                await rogue.command(fields)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for option in ("--ca", "--cert", "--key", "--dial"):
        parser.add_argument(option, required=True)
    trio.run(main, parser.parse_args())
