"""Origin signatures' cost: `OriginAuthenticator.sign` and `verify` per frame, against `cryptography` alone.

    .venv/bin/python benchmarks/origin_auth_cost.py [--size BYTES ...] [--calls N] [--rounds R] [--json FILE]

For each key type (EC P-256, as `swarm certs` makes; Ed25519) and each `--size` (bytes signed: a DATA
frame's signed pieces, the kind byte and the rest, as `wire.signed_pieces` gives them), in one process:

* **swarm**: `sign(pieces)` and `verify(origin, pieces, signature)` of an authenticator that has learnt
  the signer's certificate (what the core calls once per frame published and once per new frame received);
* **baseline**: `cryptography` alone on the joined bytes, the shortest correct code: `key.sign(data,
  ECDSA(SHA256()))` and `public_key.verify(der_signature, data, ...)` (Ed25519: `sign(data)`, `verify`).

`--calls` calls per measurement, `--rounds` rounds alternating swarm and baseline so that a change of the
machine's load hits both; the figure is the median microseconds per call, and **swarm / baseline**, the
ratio to compare between runs (absolute figures move with the machine). No network, no process started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from swarm import certs
from swarm.transport.origin_auth import OriginAuthenticator

ECDSA = ec.ECDSA(hashes.SHA256())


def per_call_us(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        function()
    return (time.perf_counter_ns() - start) / calls / 1000


def pair(kind: str) -> tuple[OriginAuthenticator, OriginAuthenticator, Any]:
    """(signer, verifier that learnt the signer's chain, the signer's private key)."""
    ca_key, ca_cert = certs.make_ca()
    key: Any
    key, certificate = certs.make_node_certificate("signer", ca_key, ca_cert)
    if kind == "ed25519":  # the same certificate, for an Ed25519 key (swarm certs makes EC keys only)
        key = ed25519.Ed25519PrivateKey.generate()
        certificate = (x509.CertificateBuilder().subject_name(certificate.subject)
                       .issuer_name(ca_cert.subject).public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(certificate.not_valid_before_utc)
                       .not_valid_after(certificate.not_valid_after_utc)
                       .add_extension(certificate.extensions.get_extension_for_class(
                           x509.SubjectAlternativeName).value, critical=False)
                       .sign(ca_key, hashes.SHA256()))
    signer = OriginAuthenticator(key, [certificate], [ca_cert])
    verifier_key, verifier_certificate = certs.make_node_certificate("verifier", ca_key, ca_cert)
    verifier = OriginAuthenticator(verifier_key, [verifier_certificate], [ca_cert])
    assert verifier.learn(signer.own_chain()) == "signer"
    return signer, verifier, key


def measure(kind: str, size: int, calls: int, rounds: int) -> dict[str, Any]:
    signer, verifier, key = pair(kind)
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    frame = memoryview(data)
    pieces = (data[:1], frame[1:])  # as wire.signed_pieces: the kind byte, then a view of the rest
    signature = signer.sign(pieces)
    assert verifier.verify(b"signer", pieces, signature) is True
    public = key.public_key()
    if kind == "ed25519":
        raw = key.sign(data)

        def baseline_sign() -> object:
            return key.sign(data)

        def baseline_verify() -> object:
            return public.verify(raw, data)
    else:
        der = utils.encode_dss_signature(*utils.decode_dss_signature(key.sign(data, ECDSA)))

        def baseline_sign() -> object:
            return key.sign(data, ECDSA)

        def baseline_verify() -> object:
            return public.verify(der, data, ECDSA)

    def swarm_sign() -> object:
        return signer.sign(pieces)

    def swarm_verify() -> object:
        return verifier.verify(b"signer", pieces, signature)

    samples: dict[str, list[float]] = {name: [] for name in ("sign", "verify", "baseline_sign",
                                                             "baseline_verify")}
    for _ in range(rounds):
        samples["sign"].append(per_call_us(swarm_sign, calls))
        samples["baseline_sign"].append(per_call_us(baseline_sign, calls))
        samples["verify"].append(per_call_us(swarm_verify, calls))
        samples["baseline_verify"].append(per_call_us(baseline_verify, calls))
    median = {name: statistics.median(values) for name, values in samples.items()}
    return {"key": kind, "size": size, "signature_bytes": len(signature), "rounds": samples,
            "median_us": median,
            "ratio": {"sign": median["sign"] / median["baseline_sign"],
                      "verify": median["verify"] / median["baseline_verify"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs="+", default=[100, 16384], help="bytes signed")
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--key", choices=["ec", "ed25519"], nargs="+", default=["ec", "ed25519"])
    parser.add_argument("--json", metavar="FILE", help="write every figure there")
    args = parser.parse_args(argv)
    runs = []
    print(f"{'key':<8} {'bytes':>6} {'sign us':>8} {'base':>7} {'ratio':>6} {'verify us':>10} {'base':>7} "
          f"{'ratio':>6}")
    for kind in args.key:
        for size in args.size:
            print(f"measuring {kind} at {size} B", file=sys.stderr)
            run = measure(kind, size, args.calls, args.rounds)
            runs.append(run)
            m, r = run["median_us"], run["ratio"]
            print(f"{kind:<8} {size:>6} {m['sign']:>8.1f} {m['baseline_sign']:>7.1f} {r['sign']:>6.2f} "
                  f"{m['verify']:>10.1f} {m['baseline_verify']:>7.1f} {r['verify']:>6.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"calls": args.calls, "rounds": args.rounds, "runs": runs}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
