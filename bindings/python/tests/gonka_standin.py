"""A stand-in Gonka API node and a stand-in chain node (REST/LCD), on loopback.

Both are written from the public description of Gonka's native request signature
(/work/shared/reference/gonka-deployments.md section 2, docs/agents.md "Calling a Gonka node
directly") and NOT from passport-gate's code: the signature is checked with the `ecdsa`
package from PyPI, the address with hashlib's SHA-256, the RIPEMD-160 below and the
bech32 encoder below. Nothing here imports passport_gate.

The API node, like a real one:
- reads `Authorization` (base64 of the 64-byte r||s, no "Bearer"), `X-Requester-Address`,
  `X-Timestamp` (unix ns) and the optional `X-Transfer-Address` (its own address when
  absent);
- refuses a timestamp more than 10 s from its clock, either way;
- looks the requester's public key up (the test registers keys by address) and checks that
  the address is bech32(RIPEMD160(SHA256(compressed key)));
- verifies ECDSA secp256k1 over one SHA-256 of
  `lower_hex(SHA256(body)) || decimal(ts_ns) || transfer_address`, low-S only;
- refuses an `Authorization` it accepted before;
- answers /v1/chat/completions with an OpenAI-shaped completion with `usage`.
Refusals are 401 with an OpenAI-shaped error body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs, urlsplit

import ecdsa
from ecdsa.util import sigdecode_string

WINDOW_NS = 10 * 1_000_000_000
HALF_N = ecdsa.SECP256k1.order // 2
GRANT_MSG = "/inference.inference.MsgStartInference"

# ---- RIPEMD-160 (hashlib only has it when OpenSSL still ships the legacy provider) ----

_RL = [*range(16),
       7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8,
       3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12,
       1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2,
       4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13]
_RR = [5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
       6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
       15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
       8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
       12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11]
_SL = [11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
       7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
       11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
       11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
       9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6]
_SR = [8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
       9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
       9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
       15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
       8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11]
_KL = [0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E]
_KR = [0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000]
_M = 0xFFFFFFFF


def _f(j: int, x: int, y: int, z: int) -> int:
    if j < 16:
        return x ^ y ^ z
    if j < 32:
        return (x & y) | (~x & z)
    if j < 48:
        return (x | ~y & _M) ^ z
    if j < 64:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z & _M)


def _rol(x: int, n: int) -> int:
    x &= _M
    return ((x << n) | (x >> (32 - n))) & _M


def ripemd160(data: bytes) -> bytes:
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", 8 * len(data))
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        al, bl, cl, dl, el = h
        ar, br, cr, dr, er = h
        for j in range(80):
            t = _rol(al + _f(j, bl, cl, dl) + x[_RL[j]] + _KL[j // 16], _SL[j]) + el
            al, el, dl, cl, bl = el, dl, _rol(cl, 10), bl, t & _M
            t = _rol(ar + _f(79 - j, br, cr, dr) + x[_RR[j]] + _KR[j // 16], _SR[j]) + er
            ar, er, dr, cr, br = er, dr, _rol(cr, 10), br, t & _M
        t = (h[1] + cl + dr) & _M
        h[1] = (h[2] + dl + er) & _M
        h[2] = (h[3] + el + ar) & _M
        h[3] = (h[4] + al + br) & _M
        h[4] = (h[0] + bl + cr) & _M
        h[0] = t
    return struct.pack("<5I", *h)


# ---- bech32 (BIP-173) ----

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: List[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32_encode(hrp: str, data: bytes) -> str:
    acc, bits, five = 0, 0, []
    for b in data:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    poly = _polymod(expanded + five + [0] * 6) ^ 1
    check = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in five + check)


# ---- keys ----


def public_key(secret_hex: str) -> bytes:
    """The compressed secp256k1 public key of a 32-byte secret, with `ecdsa`."""
    sk = ecdsa.SigningKey.from_string(bytes.fromhex(secret_hex), curve=ecdsa.SECP256k1)
    return sk.get_verifying_key().to_string("compressed")


def address(pubkey: bytes, prefix: str = "gonka") -> str:
    return bech32_encode(prefix, ripemd160(hashlib.sha256(pubkey).digest()))


def now_ns() -> int:
    return time.time_ns()


class _Server:
    def __init__(self, handler: type) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(handler: BaseHTTPRequestHandler, status: int, obj: object) -> None:
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class GonkaNode(_Server):
    """The stand-in API node. `register(pubkey)` puts a requester's key "on chain" for it;
    `requests` keeps the headers and body of every request it accepted, `refused` the code
    of every one it refused."""

    def __init__(self, own_address: str, prefix: str = "gonka") -> None:
        self.own_address = own_address
        self.prefix = prefix
        self.keys: Dict[str, bytes] = {}
        self.used: Set[str] = set()
        self.requests: List[Tuple[Dict[str, str], bytes]] = []
        self.refused: List[str] = []
        self.lock = threading.Lock()
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if urlsplit(self.path).path != "/v1/chat/completions":
                    _reply(self, 404, {"error": {"message": "not found", "type": "not_found",
                                                 "code": "not_found"}})
                    return
                try:
                    node.check(self.headers, body)
                except Refusal as r:
                    with node.lock:
                        node.refused.append(r.code)
                    _reply(self, 401, {"error": {"message": str(r), "type": "authentication_error",
                                                 "param": None, "code": r.code}})
                    return
                with node.lock:
                    node.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                _reply(self, 200, node.completion(body))

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    def register(self, pubkey: bytes) -> str:
        addr = address(pubkey, self.prefix)
        self.keys[addr] = pubkey
        return addr

    def check(self, headers, body: bytes) -> None:
        auth = headers.get("Authorization")
        requester = headers.get("X-Requester-Address")
        ts_text = headers.get("X-Timestamp")
        if not auth or not requester or not ts_text:
            raise Refusal("missing_headers", "Authorization, X-Requester-Address and "
                                             "X-Timestamp are required")
        if not ts_text.lstrip("-").isdigit():
            raise Refusal("invalid_timestamp", f"X-Timestamp {ts_text!r} is not an integer")
        ts = int(ts_text)
        if abs(now_ns() - ts) > WINDOW_NS:
            raise Refusal("timestamp_out_of_window", "X-Timestamp is outside the 10 s window")
        pubkey = self.keys.get(requester)
        if pubkey is None:
            raise Refusal("unknown_requester", f"{requester} has no public key on chain")
        if address(pubkey, self.prefix) != requester:
            raise Refusal("requester_mismatch", "X-Requester-Address is not the key's address")
        try:
            sig = base64.b64decode(auth, validate=True)
        except binascii.Error:
            raise Refusal("invalid_signature", "Authorization is not base64") from None
        if len(sig) != 64:
            raise Refusal("invalid_signature", "the signature is not 64 bytes")
        if int.from_bytes(sig[32:], "big") > HALF_N:
            raise Refusal("invalid_signature", "high-S signature")
        transfer = headers.get("X-Transfer-Address") or self.own_address
        signed = hashlib.sha256(body).hexdigest().encode()
        if ts > 0:
            signed += str(ts).encode()
        signed += transfer.encode()
        vk = ecdsa.VerifyingKey.from_string(pubkey, curve=ecdsa.SECP256k1)
        try:
            vk.verify(sig, signed, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)
        except ecdsa.BadSignatureError:
            raise Refusal("invalid_signature", "the signature does not verify") from None
        with self.lock:
            if auth in self.used:
                raise Refusal("signature_reused", "this Authorization was used before")
            self.used.add(auth)

    @staticmethod
    def completion(body: bytes) -> dict:
        request = json.loads(body)
        prompt = " ".join(str(m.get("content", "")) for m in request.get("messages", []))
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi from the stand-in node"}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 5,
                      "total_tokens": len(prompt.split()) + 5},
        }


class ChainNode(_Server):
    """The stand-in chain node's REST API, as much of it as the gateway asks:
    `/cosmos/auth/v1beta1/accounts/{address}` (an account with its key, one without a key,
    or 404 with code 5), `/cosmos/authz/v1beta1/grants?granter=&grantee=&msg_type_url=`
    (the grant, or an empty list) and anything else `{}` (the node-info probe)."""

    def __init__(self) -> None:
        self.keys: Dict[str, bytes] = {}
        self.keyless: Set[str] = set()
        self.grants: Set[Tuple[str, str]] = set()
        self.queries: List[str] = []
        chain = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                chain.queries.append(self.path)
                prefix = "/cosmos/auth/v1beta1/accounts/"
                if url.path.startswith(prefix):
                    addr = url.path[len(prefix):]
                    account = {"@type": "/cosmos.auth.v1beta1.BaseAccount", "address": addr,
                               "account_number": "7", "sequence": "1"}
                    if addr in chain.keys:
                        account["pub_key"] = {"@type": "/cosmos.crypto.secp256k1.PubKey",
                                              "key": base64.b64encode(chain.keys[addr]).decode()}
                        _reply(self, 200, {"account": account})
                    elif addr in chain.keyless:
                        account["pub_key"] = None
                        account["sequence"] = "0"
                        _reply(self, 200, {"account": account})
                    else:
                        _reply(self, 404, {"code": 5, "message": f"account {addr} not found",
                                           "details": []})
                    return
                if url.path == "/cosmos/authz/v1beta1/grants":
                    q = parse_qs(url.query)
                    granter = q.get("granter", [""])[0]
                    grantee = q.get("grantee", [""])[0]
                    msg = q.get("msg_type_url", [""])[0]
                    grants = []
                    if (granter, grantee) in chain.grants and msg == GRANT_MSG:
                        grants = [{"authorization": {
                            "@type": "/cosmos.authz.v1beta1.GenericAuthorization", "msg": msg},
                            "expiration": None}]
                    _reply(self, 200, {"grants": grants,
                                       "pagination": {"next_key": None, "total": "0"}})
                    return
                _reply(self, 200, {})

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    def account(self, pubkey: Optional[bytes], addr: Optional[str] = None) -> str:
        """Puts an account on chain: with `pubkey`, or keyless at `addr`."""
        if pubkey is None:
            assert addr is not None
            self.keyless.add(addr)
            return addr
        addr = address(pubkey)
        self.keys[addr] = pubkey
        return addr
