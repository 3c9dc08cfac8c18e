"""The real `openai` Python SDK against the real `passport-gate serve` (driven by
tests/openai_sdk.rs, which starts the gateway and passes its address in the environment).

Each request is signed by an httpx request hook that pipes the exact body bytes the SDK
sends into `passport-gate sign --body-file -`; the SDK's retries go through the same hook,
so a retry is the same signed request (the signature is deterministic).

The upstream is a small OpenAI-compatible server in this process, started late on purpose:
until then the gateway cannot reach it.
"""

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai

BIN = os.environ["PG_BIN"]
GATEWAY = os.environ["PG_GATEWAY"]
UPSTREAM_PORT = int(os.environ["PG_UPSTREAM_PORT"])
AGENT_KEY = os.environ["PG_AGENT_KEY"]
PASSPORT_FILE = os.environ["PG_PASSPORT_FILE"]
CHAIN = os.environ["PG_CHAIN"]
ALLOWED_MODEL = "echo-1"


class Upstream:
    """Counts requests; answers the statuses queued in `fail_next` first, then 200 with a
    chat completion carrying `usage`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = 0
        self.fail_next = []
        self.server = None

    def start(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                with upstream.lock:
                    upstream.received += 1
                    status = upstream.fail_next.pop(0) if upstream.fail_next else 200
                if status == 200:
                    body = json.dumps(
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "created": 0,
                            "model": ALLOWED_MODEL,
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": "hi"},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 3,
                                "completion_tokens": 1,
                                "total_tokens": 4,
                            },
                        }
                    ).encode()
                else:
                    body = json.dumps(
                        {"error": {"message": "overloaded", "type": "server_error"}}
                    ).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                # Keep the SDK's backoff short.
                self.send_header("retry-after-ms", "50")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", UPSTREAM_PORT), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


UPSTREAM = Upstream()
STATUSES = []


def sign(request: httpx.Request):
    body = request.read()
    signed = subprocess.run(
        [
            BIN, "sign",
            "--agent-key", AGENT_KEY,
            "--passport-file", PASSPORT_FILE,
            "--chain-id", CHAIN,
            "--method", request.method,
            "--uri", request.url.raw_path.decode("ascii"),
            "--body-file", "-",
            "--headers",
        ],
        input=body,
        capture_output=True,
        check=True,
        timeout=30,
    )
    for line in signed.stdout.decode().splitlines():
        name, value = line.split(": ", 1)
        request.headers[name] = value


def record(response: httpx.Response):
    STATUSES.append(response.status_code)
    # The first time the gateway could not reach the upstream, the upstream comes up,
    # before the SDK retries.
    if response.status_code == 502 and UPSTREAM.server is None:
        UPSTREAM.start()


def client(max_retries):
    return openai.OpenAI(
        base_url=GATEWAY + "/v1",
        api_key="unused",
        max_retries=max_retries,
        timeout=20,
        http_client=httpx.Client(event_hooks={"request": [sign], "response": [record]}),
    )


def ask(c, text, **extra):
    return c.chat.completions.create(
        model=extra.pop("model", ALLOWED_MODEL),
        messages=[{"role": "user", "content": text}],
        **extra,
    )


def a_rejection_reads_as_an_openai_error():
    try:
        ask(client(0), "hello", model="gpt-4o")
    except openai.PermissionDeniedError as e:
        assert e.status_code == 403, e.status_code
        assert e.code == "model_not_allowed", e.code
        assert e.type == "permission_error", e.type
        assert e.body["message"] == "the passport does not allow the requested model", e.body
        # The SDK's own message is the human one, not the JSON body.
        assert e.message == "Error code: 403 - the passport does not allow the requested model", e.message
        return
    raise AssertionError("a model outside the passport was accepted")


def a_retry_after_the_upstream_was_unreachable_is_not_a_replay():
    STATUSES.clear()
    answer = ask(client(2), "first contact")
    assert answer.choices[0].message.content == "hi"
    assert STATUSES == [502, 200], STATUSES
    assert UPSTREAM.received == 1, UPSTREAM.received


def a_retry_after_an_upstream_503_is_not_a_replay():
    STATUSES.clear()
    before = UPSTREAM.received
    UPSTREAM.fail_next = [503]
    answer = ask(client(2), "busy upstream")
    assert answer.usage.total_tokens == 4
    assert STATUSES == [503, 200], STATUSES
    assert UPSTREAM.received == before + 2


def a_retry_after_an_upstream_500_is_a_replay():
    STATUSES.clear()
    UPSTREAM.fail_next = [500]
    try:
        ask(client(1), "upstream failed while processing")
    except openai.AuthenticationError as e:
        assert e.code == "request_replayed", e.code
        assert STATUSES == [500, 401], STATUSES
        return
    raise AssertionError("a request the upstream may have processed was accepted twice")


def the_same_prompt_twice_is_one_request_unless_it_carries_a_nonce():
    c = client(0)
    ask(c, "say it again")
    try:
        ask(c, "say it again")
        raise AssertionError("an identical signed request was accepted twice")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        assert e.code == "request_replayed", e.code
    # The guide's advice: a nonce in the signed URI makes each request its own.
    for _ in range(2):
        ask(c, "say it again", extra_query={"aps_nonce": uuid.uuid4().hex})


TESTS = [
    a_rejection_reads_as_an_openai_error,
    a_retry_after_the_upstream_was_unreachable_is_not_a_replay,
    a_retry_after_an_upstream_503_is_not_a_replay,
    a_retry_after_an_upstream_500_is_a_replay,
    the_same_prompt_twice_is_one_request_unless_it_carries_a_nonce,
]

if __name__ == "__main__":
    print("openai", openai.__version__)
    failed = 0
    for test in TESTS:
        try:
            test()
            print("ok", test.__name__)
        except Exception as e:  # noqa: BLE001 (report every failure, then fail)
            failed += 1
            print("FAILED", test.__name__, repr(e))
    sys.exit(1 if failed else 0)
