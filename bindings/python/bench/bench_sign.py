"""Signing a 4 KiB request: the binding next to the pure-Python version an agent builder
would otherwise write (cryptography's Ed25519, the spec's section 5 payload, json for
JCS), in the same run. Prints microseconds per signature; checks both sign alike.

    python bench/bench_sign.py [iterations]
"""

import base64
import json
import struct
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import passport_gate as pg

CHAIN = "gonka-mainnet"
METHOD = "POST"
URI = "/v1/chat/completions"
BODY = bytes((b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] for i in range(4096)))
DOMAIN = b"APS-AGENT-SIG-V1\n"


def field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


class PureSigner:
    """Section 5 by hand: JCS of the envelope (sorted keys, no spaces: enough for an
    envelope without numbers), the length-prefixed payload, Ed25519."""

    def __init__(self, secret: bytes, passport: str, chain_id: str) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(secret)
        self.passport = passport
        self.chain_id = chain_id
        envelope = json.loads(base64.b64decode(passport))
        self.jcs = json.dumps(envelope, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()

    def sign(self, method: str, uri: str, body: bytes) -> str:
        payload = b"".join((DOMAIN, field(self.chain_id.encode()), field(method.encode()),
                            field(uri.encode()), field(self.jcs), field(body)))
        return base64.b64encode(self.key.sign(payload)).decode()


def per_op_us(fn, n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    secret = bytes(range(32))
    agent = pg.AgentKey.from_key_file(secret.hex())
    passport = pg.mint(pg.PrincipalKey.generate(), agent_key=agent, agent_id="urn:aps:agent:bench",
                       chain_id=CHAIN, ttl_seconds=600, models=["m1"])
    signer = pg.Signer(agent, passport, CHAIN)
    pure = PureSigner(secret, passport, CHAIN)
    assert signer.sign(METHOD, URI, BODY) == pure.sign(METHOD, URI, BODY), "both must sign alike"

    rows = [
        ("binding   Signer.sign (passport parsed once)",
         per_op_us(lambda: signer.sign(METHOD, URI, BODY), n)),
        ("pure      cryptography Ed25519 (JCS once)",
         per_op_us(lambda: pure.sign(METHOD, URI, BODY), n)),
        ("binding   sign_request (parses the passport each call)",
         per_op_us(lambda: pg.sign_request(agent, passport, CHAIN, METHOD, URI, BODY), n)),
        ("pure      same, parsing and JCS each call",
         per_op_us(lambda: PureSigner(secret, passport, CHAIN).sign(METHOD, URI, BODY), n)),
    ]
    print(f"python {sys.version.split()[0]}, 4 KiB body, {n} signatures each")
    for name, us in rows:
        print(f"  {name:<58} {us:8.1f} us/op  {1e6 / us:9.0f} op/s")


if __name__ == "__main__":
    main()
