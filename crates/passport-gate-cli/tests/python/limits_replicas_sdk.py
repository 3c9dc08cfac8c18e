"""The real `openai` Python SDK against two `passport-gate serve` replicas whose `[limits]`
live in one shared Redis (one server, or a Redis Cluster), driven by
tests/external/openai_sdk.rs, which starts Redis, the replicas and this script. The
requests alternate between the replicas; one request rate and one token budget hold
across both, and the SDK reads each refusal as OpenAI's: `e.status_code == 429` with
`e.code == "rate_limit_exceeded"` or `"insufficient_quota"`.

The upstream is a devshard-like stand-in (as in limits_sdk.py): every answer carries
`usage`, and requests whose prompt is "hold" wait until `release` is set, so that every
admission is judged while the admitted requests still hold their reservations. Each
scenario has its own principal, whose limits come from the policy file written here
(both replicas reload it).
"""

import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai

from limits_common import MODEL, Principal, ask, write_policy

GATEWAYS = os.environ["PG_GATEWAYS"].split(",")
UPSTREAM_PORT = int(os.environ["PG_UPSTREAM_PORT"])
POLICY_FILE = os.environ["PG_POLICY_FILE"]
# The rate scenario's principal: four requests a minute (one back every 15 s, far
# longer than its six requests take).
RATE = 4
# The budget scenario's principal: tokens per day.
BUDGET = 1000
PARALLEL = 20
MAX_TOKENS = 200


class Upstream:
    """Counts requests by prompt; holds those whose prompt is "hold" until `release`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_prompt = {}
        self.release = threading.Event()

    def start(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                prompt = request.get("messages", [{}])[-1].get("content", "")
                with upstream.lock:
                    upstream.by_prompt[prompt] = upstream.by_prompt.get(prompt, 0) + 1
                if prompt == "hold":
                    upstream.release.wait(60)
                completion = min(request.get("max_tokens") or 3072, 7)
                body = json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": MODEL,
                    "usage": {"prompt_tokens": 5, "completion_tokens": completion,
                              "total_tokens": 5 + completion},
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hi"}}],
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", UPSTREAM_PORT), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()


UPSTREAM = Upstream()


PRINCIPALS = {}


def setup():
    for name in ["rate", "budget"]:
        PRINCIPALS[name] = Principal(name)
    policy = f"""
[principal."{PRINCIPALS['rate'].address}"]
requests_per_minute = {RATE}

[principal."{PRINCIPALS['budget'].address}"]
tokens_per_day = {BUDGET}
"""
    write_policy(POLICY_FILE, policy)
    UPSTREAM.start()


def one_request_rate_across_both_replicas():
    p = PRINCIPALS["rate"]
    clients = [p.client(g, "sk-unused", 60) for g in GATEWAYS]
    outcomes = []
    started = time.time()
    for i in range(RATE + 2):
        try:
            ask(clients[i % 2], f"rate {i}", max_tokens=1).parse()
            outcomes.append("ok")
        except openai.RateLimitError as e:
            assert e.status_code == 429, e.status_code
            assert e.code == "rate_limit_exceeded", e.code
            assert int(e.response.headers["retry-after"]) >= 1, e.response.headers
            outcomes.append(e.code)
    elapsed = time.time() - started
    # One bucket of RATE for the principal, whichever replica each request reached: the
    # two past it are refused, one by each replica. (Replicas counting apart would
    # admit all six.)
    assert elapsed < 60 / RATE, f"{elapsed:.1f} s: the bucket refilled meanwhile"
    assert outcomes == ["ok"] * RATE + ["rate_limit_exceeded"] * 2, outcomes
    for i in range(RATE, RATE + 2):
        assert UPSTREAM.by_prompt.get(f"rate {i}") is None, "a refused request reached the upstream"


def one_token_budget_across_both_replicas():
    p = PRINCIPALS["budget"]
    clients = [p.client(GATEWAYS[i % 2], "sk-unused", 60) for i in range(PARALLEL)]
    outcomes = []

    def one(i):
        try:
            # A nonce in the signed URI makes each of the twenty its own request.
            ask(clients[i], "hold", max_tokens=MAX_TOKENS,
                extra_query={"aps_nonce": str(i)}).parse()
            outcomes.append(("ok", i % 2))
        except openai.RateLimitError as e:
            assert e.status_code == 429, e.status_code
            outcomes.append((e.code, i % 2))

    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(one, i) for i in range(PARALLEL)]
        # The upstream holds the admitted requests until every refusal came back, so
        # every admission is judged against the reservations of the others.
        deadline = time.time() + 90
        while time.time() < deadline:
            if UPSTREAM.by_prompt.get("hold", 0) + len(outcomes) >= PARALLEL:
                break
            time.sleep(0.05)
        UPSTREAM.release.set()
        for f in futures:
            f.result()
    codes = [c for c, _ in outcomes]
    ok = codes.count("ok")
    # What the gateway reserves (docs/broker.md): a quarter of the body, rounded up,
    # plus max_tokens.
    each = math.ceil(max(p.sent_bytes) / 4) + MAX_TOKENS
    assert ok == BUDGET // each, (ok, each, outcomes)
    assert ok * each <= BUDGET, (ok, each)
    assert codes.count("insufficient_quota") == PARALLEL - ok, outcomes
    assert UPSTREAM.by_prompt["hold"] == ok, (UPSTREAM.by_prompt["hold"], ok)
    # Both replicas refused some: they judged against one budget. (Replicas counting
    # apart would each admit BUDGET // each.)
    refused_by = {r for c, r in outcomes if c == "insufficient_quota"}
    assert refused_by == {0, 1}, outcomes


TESTS = [
    one_request_rate_across_both_replicas,
    one_token_budget_across_both_replicas,
]

if __name__ == "__main__":
    print("openai", openai.__version__)
    setup()
    failed = 0
    for test in TESTS:
        try:
            test()
            print("ok", test.__name__)
        except Exception as e:  # noqa: BLE001 (report every failure, then fail)
            failed += 1
            print("FAILED", test.__name__, repr(e))
    sys.exit(1 if failed else 0)
