"""PassportAuth and redirects (issue 22 item 14), against real HTTP servers on loopback:
origin A answers 307/308 (to itself or to origin B), and each origin records every request
it received. The passport and signature must never reach B; a 307/308 within A is followed
with a signature for the new URI, which the verifier accepts."""

from __future__ import annotations

import asyncio
import http.client
import importlib
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List

import pytest

import passport_gate as pg
from passport_gate.auth import RedirectRefused

CHAIN = "gonka-test"
HTTPX = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name) is not None]


class Origin:
    """A loopback HTTP server that records each request (method, target, headers, body).
    `redirects` maps a path to (status, Location); any other path answers 200."""

    def __init__(self) -> None:
        self.received: List[Dict[str, object]] = []
        self.redirects: Dict[str, tuple] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                origin.received.append({"method": self.command, "target": self.path,
                                        "headers": dict(self.headers.items()), "body": body})
                path = self.path.split("?", 1)[0]
                if path in origin.redirects:
                    status, location = origin.redirects[path]
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ForwardProxy(Origin):
    """A plain-http forward proxy on loopback: records each absolute-form request and
    forwards it with http.client."""

    def __init__(self) -> None:
        super().__init__()
        proxy = self

        class Handler(self.server.RequestHandlerClass):  # type: ignore[name-defined,misc]
            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.received.append({"method": self.command, "target": self.path,
                                       "headers": dict(self.headers.items()), "body": body})
                target = urllib.parse.urlsplit(self.path)
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                path = target.path + (f"?{target.query}" if target.query else "")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "connection")}
                upstream.request(self.command, path, body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                upstream.close()

            do_GET = do_POST = do_PUT = handle_any

        self.server.RequestHandlerClass = Handler


@pytest.fixture
def origins() -> Iterator[tuple]:
    a, b = Origin(), Origin()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def credentials():
    agent = pg.AgentKey.generate()
    passport = pg.mint(pg.PrincipalKey.generate(), agent_key=agent,
                       agent_id="urn:aps:agent:redirects", chain_id=CHAIN, ttl_seconds=600)
    return agent, passport


def auth(credentials, httpx_name: str):
    importlib.import_module(httpx_name)
    agent, passport = credentials
    return pg.PassportAuth(agent, passport, chain_id=CHAIN)


def verdict(request: Dict[str, object]) -> Dict[str, object]:
    headers = {k.lower(): v for k, v in request["headers"].items()}  # type: ignore[union-attr]
    return pg.verify(chain_id=CHAIN, method=request["method"], uri=request["target"],
                     passport=headers["x-agent-passport"], sig=headers["x-agent-sig"],
                     body=request["body"])


def signed_headers(request: Dict[str, object]) -> List[str]:
    names = {k.lower() for k in request["headers"]}  # type: ignore[union-attr]
    return sorted(names & {"x-agent-passport", "x-agent-sig"})


BODY = b'{"model":"m","messages":[{"role":"user","content":"hello"}]}'


@pytest.mark.parametrize("httpx_name", HTTPX)
@pytest.mark.parametrize("status", [307, 308])
def test_same_origin_redirect_is_followed_and_signed_for_its_new_uri(origins, credentials,
                                                                     httpx_name, status):
    httpx = importlib.import_module(httpx_name)
    a, b = origins
    a.redirects["/v1/start"] = (status, "/v1/landing?moved=1")
    with httpx.Client(auth=auth(credentials, httpx_name)) as client:
        response = client.post(f"{a.url}/v1/start?x=1", content=BODY)
    assert response.status_code == 200
    assert [r["target"] for r in a.received] == ["/v1/start?x=1", "/v1/landing?moved=1"]
    landing = a.received[1]
    assert landing["method"] == "POST" and landing["body"] == BODY
    assert verdict(a.received[0])["ok"] is True
    assert verdict(landing)["ok"] is True, verdict(landing)
    assert b.received == []


@pytest.mark.parametrize("httpx_name", HTTPX)
def test_cross_origin_redirect_is_refused_and_the_other_origin_gets_nothing(origins, credentials,
                                                                            httpx_name):
    httpx = importlib.import_module(httpx_name)
    a, b = origins
    a.redirects["/v1/start"] = (307, f"{b.url}/v1/stolen")
    with httpx.Client(auth=auth(credentials, httpx_name)) as client:
        with pytest.raises(pg.PassportGateError) as refused:
            client.post(f"{a.url}/v1/start", content=BODY)
    assert str(refused.value) == (
        f"refusing to follow the 307 redirect from {a.url} to {b.url}: the passport, "
        "signature and body are only sent to the origin they were signed for")
    assert len(a.received) == 1
    assert b.received == []


@pytest.mark.parametrize("httpx_name", HTTPX)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_client_following_redirects_never_sends_the_signed_headers_elsewhere(
        origins, credentials, httpx_name, status):
    httpx = importlib.import_module(httpx_name)
    a, b = origins
    a.redirects["/v1/start"] = (status, f"{b.url}/v1/stolen")
    with httpx.Client(auth=auth(credentials, httpx_name), follow_redirects=True) as client:
        with pytest.raises(RedirectRefused) as refused:
            client.post(f"{a.url}/v1/start", content=BODY)
    assert f"refusing to send the request signed for {a.url}/v1/start to {b.url}/v1/stolen" \
        in str(refused.value)
    assert "follow_redirects=False" in str(refused.value)
    assert len(a.received) == 1
    assert b.received == [], [signed_headers(r) for r in b.received]


@pytest.mark.parametrize("httpx_name", HTTPX)
def test_a_client_following_redirects_is_refused_within_the_origin_too(origins, credentials,
                                                                       httpx_name):
    # The hop would carry the signature of /v1/start: refused before it is sent.
    httpx = importlib.import_module(httpx_name)
    a, _ = origins
    a.redirects["/v1/start"] = (307, "/v1/landing")
    with httpx.Client(auth=auth(credentials, httpx_name), follow_redirects=True) as client:
        with pytest.raises(RedirectRefused):
            client.post(f"{a.url}/v1/start", content=BODY)
    assert [r["target"] for r in a.received] == ["/v1/start"]


@pytest.mark.parametrize("httpx_name", HTTPX)
def test_async_client_same_origin_followed_cross_origin_refused(origins, credentials, httpx_name):
    httpx = importlib.import_module(httpx_name)
    a, b = origins
    a.redirects["/v1/start"] = (308, "/v1/landing")
    a.redirects["/v1/away"] = (307, f"{b.url}/v1/stolen")

    async def run() -> None:
        async with httpx.AsyncClient(auth=auth(credentials, httpx_name)) as client:
            response = await client.post(f"{a.url}/v1/start", content=BODY)
            assert response.status_code == 200
            with pytest.raises(pg.PassportGateError):
                await client.post(f"{a.url}/v1/away", content=BODY)
        async with httpx.AsyncClient(auth=auth(credentials, httpx_name),
                                     follow_redirects=True) as client:
            with pytest.raises(RedirectRefused):
                await client.post(f"{a.url}/v1/away", content=BODY)

    asyncio.run(run())
    assert [r["target"] for r in a.received] == ["/v1/start", "/v1/landing", "/v1/away",
                                                 "/v1/away"]
    assert verdict(a.received[1])["ok"] is True
    assert b.received == []


@pytest.mark.parametrize("httpx_name", HTTPX)
def test_through_a_forward_proxy_the_request_goes_and_a_cross_origin_hop_does_not(
        origins, credentials, httpx_name):
    # Through a plain-http proxy the target on the wire is the absolute URL: the check
    # must let the signed request through and still stop the hop to B.
    httpx = importlib.import_module(httpx_name)
    a, b = origins
    proxy = ForwardProxy()
    try:
        a.redirects["/v1/start"] = (307, f"{b.url}/v1/stolen")
        with httpx.Client(auth=auth(credentials, httpx_name), proxy=proxy.url,
                          follow_redirects=True) as client:
            assert client.post(f"{a.url}/v1/ok?q=1", content=BODY).status_code == 200
            with pytest.raises(RedirectRefused):
                client.post(f"{a.url}/v1/start", content=BODY)
    finally:
        proxy.close()
    assert [r["target"] for r in proxy.received] == [f"{a.url}/v1/ok?q=1", f"{a.url}/v1/start"]
    assert [r["target"] for r in a.received] == ["/v1/ok?q=1", "/v1/start"]
    assert verdict(a.received[0])["ok"] is True
    assert b.received == []


def test_the_openai_sdk_default_client_never_follows_the_passport_elsewhere(origins, credentials):
    # openai.DefaultHttpxClient follows redirects itself: the hop to B is refused before
    # it is sent. With follow_redirects=False, PassportAuth follows a same-origin 307.
    import openai

    a, b = origins
    a.redirects["/v1/chat/completions"] = (307, f"{b.url}/v1/chat/completions")
    messages = [{"role": "user", "content": "hello"}]
    client = openai.OpenAI(base_url=f"{a.url}/v1", api_key="unused", max_retries=0,
                           http_client=openai.DefaultHttpxClient(auth=auth(credentials, "httpx")))
    with pytest.raises(RedirectRefused):
        client.chat.completions.create(model="m", messages=messages)
    assert b.received == []

    a.redirects["/v1/chat/completions"] = (307, "/v2/chat/completions")
    client = openai.OpenAI(base_url=f"{a.url}/v1", api_key="unused", max_retries=0,
                           http_client=openai.DefaultHttpxClient(
                               auth=auth(credentials, "httpx"), follow_redirects=False))
    client.chat.completions.create(model="m", messages=messages)
    assert [r["target"] for r in a.received] == ["/v1/chat/completions"] * 2 + [
        "/v2/chat/completions"]
    assert verdict(a.received[-1])["ok"] is True
    assert b.received == []


@pytest.mark.parametrize("httpx_name", HTTPX)
def test_a_same_origin_redirect_loop_stops_at_the_clients_max_redirects(origins, credentials,
                                                                        httpx_name):
    httpx = importlib.import_module(httpx_name)
    a, _ = origins
    a.redirects["/v1/loop"] = (307, "/v1/loop")
    with httpx.Client(auth=auth(credentials, httpx_name), max_redirects=5) as client:
        with pytest.raises(httpx.TooManyRedirects):
            client.post(f"{a.url}/v1/loop", content=BODY)
    assert len(a.received) == 6
