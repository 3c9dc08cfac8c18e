"""The real `openai` Python SDK against the real `passport-gate serve` with `[limits]` and
`[upstream_auth]`, in front of a devshard stand-in written here from devshardctl's
documented behaviour (driven by tests/external/openai_sdk.rs, which starts the gateway):

- a static bearer key is required; any other gets 401 `invalid_api_key`;
- `max_tokens` is defaulted to 3072 and capped at 4096;
- every answer carries `usage` (a stream only when `stream_options.include_usage`);
- `stream: true` is answered as server-sent events.

Each scenario uses its own principal, whose limits come from the policy file (written
here, reloaded by the gateway), so that the scenarios do not share budgets.
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

GATEWAY = os.environ["PG_GATEWAY"]
UPSTREAM_PORT = int(os.environ["PG_UPSTREAM_PORT"])
UPSTREAM_KEY = os.environ["PG_UPSTREAM_KEY"]
POLICY_FILE = os.environ["PG_POLICY_FILE"]
CLIENT_KEY = "sk-client-must-never-reach-the-upstream"
PROMPT_TOKENS = 5
COMPLETION_TOKENS = 7


class Devshard:
    """A devshardctl stand-in: records the Authorization it saw and the max_tokens it
    applied; holds requests whose prompt is "hold" until `release` is set."""

    def __init__(self):
        self.lock = threading.Lock()
        self.authorizations = []
        self.by_prompt = {}
        self.release = threading.Event()

    def start(self):
        shard = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("authorization")
                prompt = request.get("messages", [{}])[-1].get("content", "")
                with shard.lock:
                    shard.authorizations.append(auth)
                    shard.by_prompt[prompt] = shard.by_prompt.get(prompt, 0) + 1
                if auth != "Bearer " + UPSTREAM_KEY:
                    return self.answer(401, {"error": {
                        "message": "invalid api key", "type": "invalid_request_error",
                        "code": "invalid_api_key"}})
                if prompt == "hold":
                    shard.release.wait(30)
                max_tokens = min(request.get("max_tokens") or 3072, 4096)
                completion = min(max_tokens, COMPLETION_TOKENS)
                usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion,
                         "total_tokens": PROMPT_TOKENS + completion}
                if not request.get("stream"):
                    return self.answer(200, {
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                        "model": MODEL, "usage": usage,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "hi"}}]})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 0,
                           "model": MODEL, "choices": [{"index": 0, "delta": {"content": "hi"},
                                                        "finish_reason": None}]}]
                if (request.get("stream_options") or {}).get("include_usage"):
                    chunks.append({"id": "c", "object": "chat.completion.chunk",
                                   "created": 0, "model": MODEL, "choices": [],
                                   "usage": usage})
                events = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
                events.append(b"data: [DONE]\n\n")
                for e in events:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(e), e))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        server = ThreadingHTTPServer(("127.0.0.1", UPSTREAM_PORT), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()


SHARD = Devshard()


def client(p):
    return p.client(GATEWAY, CLIENT_KEY, 30)


def reservation(body_bytes, max_tokens):
    """What the gateway reserves (docs/broker.md): a quarter of the body, rounded up,
    plus max_tokens."""
    return math.ceil(body_bytes / 4) + max_tokens


PRINCIPALS = {}


def setup():
    names = ["rate", "quota", "parallel", "settle", "stream", "cap"]
    for n in names:
        PRINCIPALS[n] = Principal(n)
    p = {n: PRINCIPALS[n].address for n in names}
    policy = f"""
[principal."{p['rate']}"]
requests_per_minute = 2
tokens_per_day = 100000

[principal."{p['quota']}"]
tokens_per_day = 2000

[principal."{p['parallel']}"]
tokens_per_day = 1000

[principal."{p['settle']}"]
tokens_per_day = 1000

[principal."{p['stream']}"]
tokens_per_day = 1000
"""
    write_policy(POLICY_FILE, policy)
    SHARD.start()


def over_a_rate_the_sdk_reads_rate_limit_exceeded_with_retry_after():
    c = client(PRINCIPALS["rate"])
    for i in range(2):
        raw = ask(c, f"rate {i}")
        raw.parse()
    try:
        ask(c, "rate 2")
    except openai.RateLimitError as e:
        assert e.status_code == 429, e.status_code
        assert e.code == "rate_limit_exceeded", e.code
        assert int(e.response.headers["retry-after"]) >= 1, e.response.headers
        assert SHARD.by_prompt.get("rate 2") is None, "a refused request reached the upstream"
        return
    raise AssertionError("a third request within the minute was accepted")


def accepted_answers_carry_the_x_ratelimit_headers():
    # The "rate" principal has both a request and a token limit; its bucket is empty
    # now, so a fresh principal with the default rate (config) shows them.
    raw = ask(client(PRINCIPALS["settle"]), "headers", max_tokens=10)
    h = raw.headers
    for name in ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                 "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                 "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]:
        assert name in h, (name, dict(h))
    assert h["x-ratelimit-limit-requests"] == "1000", dict(h)
    assert h["x-ratelimit-limit-tokens"] == "1000", dict(h)
    assert h["x-ratelimit-reset-tokens"].endswith("s"), dict(h)


def over_a_token_budget_the_sdk_reads_insufficient_quota():
    c = client(PRINCIPALS["quota"])
    try:
        ask(c, "quota", max_tokens=2500)
    except openai.RateLimitError as e:
        assert e.status_code == 429, e.status_code
        assert e.code == "insufficient_quota", e.code
        assert "retry-after" in e.response.headers
        assert SHARD.by_prompt.get("quota") is None
        # A smaller request still fits.
        ask(c, "quota small", max_tokens=100).parse()
        return
    raise AssertionError("a reservation over the day's budget was accepted")


def twenty_parallel_requests_never_reserve_more_than_the_budget():
    p = PRINCIPALS["parallel"]
    clients = [client(p) for _ in range(20)]
    outcomes = []

    def one(i, c):
        try:
            # A nonce in the signed URI makes each of the twenty its own request.
            ask(c, "hold", max_tokens=200, extra_query={"aps_nonce": str(i)}).parse()
            outcomes.append("ok")
        except openai.RateLimitError as e:
            outcomes.append(e.code)

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(one, i, c) for i, c in enumerate(clients)]
        # The stand-in holds the admitted ones until every refusal came back.
        deadline = time.time() + 60
        while time.time() < deadline:
            held = SHARD.by_prompt.get("hold", 0)
            if held + len(outcomes) >= 20:
                break
            time.sleep(0.05)
        SHARD.release.set()
        for f in futures:
            f.result()
    ok = outcomes.count("ok")
    each = reservation(max(p.sent_bytes), 200)
    assert ok >= 1, outcomes
    assert ok * each <= 1000, (ok, each, outcomes)
    assert ok == 1000 // each, (ok, each, outcomes)
    assert outcomes.count("insufficient_quota") == 20 - ok, outcomes
    assert SHARD.by_prompt["hold"] == ok, (SHARD.by_prompt["hold"], ok)


def settlement_returns_the_unused_part():
    p = PRINCIPALS["settle"]
    c = client(p)
    # The headers scenario used some of this budget already: read where it stands.
    first = ask(c, "settle one", max_tokens=600)
    first.parse()
    r1 = reservation(p.sent_bytes[-1], 600)
    left_after_first = int(first.headers["x-ratelimit-remaining-tokens"])
    # Without settlement a second 600 would not fit in what is left.
    assert left_after_first < r1, (left_after_first, r1)
    second = ask(c, "settle two", max_tokens=600)
    second.parse()
    r2 = reservation(p.sent_bytes[-1], 600)
    used = PROMPT_TOKENS + COMPLETION_TOKENS
    expected = left_after_first + r1 - used - r2
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == expected, (
        second.headers["x-ratelimit-remaining-tokens"], expected)


def a_stream_without_usage_is_charged_its_reservation():
    p = PRINCIPALS["stream"]
    c = client(p)
    before = ask(c, "stream start", max_tokens=10)
    before.parse()
    left = int(before.headers["x-ratelimit-remaining-tokens"])
    stream = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream bare"}],
        max_tokens=300, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "hi", text
    r_stream = reservation(p.sent_bytes[-1], 300)
    after = ask(c, "stream after", max_tokens=10)
    after.parse()
    r_after = reservation(p.sent_bytes[-1], 10)
    used = PROMPT_TOKENS + COMPLETION_TOKENS
    # "stream start" settled to its usage; the bare stream kept its whole reservation.
    expected = left + reservation(p.sent_bytes[-3], 10) - used - r_stream - r_after
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == expected, (
        after.headers["x-ratelimit-remaining-tokens"], expected)
    # With include_usage the stream is settled to its usage.
    stream = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream usage"}],
        max_tokens=300, stream=True, stream_options={"include_usage": True})
    usage = [ch.usage for ch in stream if ch.usage]
    assert usage and usage[0].total_tokens == used, usage
    r_usage = reservation(p.sent_bytes[-1], 300)
    last = ask(c, "stream last", max_tokens=10)
    last.parse()
    # "stream after" and the usage stream both settled to their usage.
    expected = expected + r_after - used - used - reservation(p.sent_bytes[-1], 10)
    assert int(last.headers["x-ratelimit-remaining-tokens"]) == expected, (
        last.headers["x-ratelimit-remaining-tokens"], expected)


def max_tokens_over_the_cap_is_refused_with_its_own_code():
    c = client(PRINCIPALS["cap"])
    try:
        ask(c, "cap", max_tokens=5000)
    except openai.BadRequestError as e:
        assert e.status_code == 400, e.status_code
        assert e.code == "max_tokens_over_cap", e.code
        assert SHARD.by_prompt.get("cap") is None
        return
    raise AssertionError("a max_tokens over the cap was accepted")


def the_upstream_never_sees_the_client_authorization():
    seen = set(SHARD.authorizations)
    assert seen == {"Bearer " + UPSTREAM_KEY}, seen


TESTS = [
    over_a_rate_the_sdk_reads_rate_limit_exceeded_with_retry_after,
    accepted_answers_carry_the_x_ratelimit_headers,
    over_a_token_budget_the_sdk_reads_insufficient_quota,
    twenty_parallel_requests_never_reserve_more_than_the_budget,
    settlement_returns_the_unused_part,
    a_stream_without_usage_is_charged_its_reservation,
    max_tokens_over_the_cap_is_refused_with_its_own_code,
    the_upstream_never_sees_the_client_authorization,
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
