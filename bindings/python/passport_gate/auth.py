"""``PassportAuth``: an ``httpx.Auth`` that signs every request it sends.

The openai SDK's newer releases use ``httpx2`` (a fork with the same API) where older ones
use ``httpx``; a client accepts only its own library's ``Auth`` subclasses, so
``PassportAuth`` subclasses the ``Auth`` of each one installed.
"""

from __future__ import annotations

import importlib
from typing import Any, AsyncGenerator, Dict, Generator, List, Optional, Sequence, Tuple

from ._native import AgentKey, PassportGateError, Signer
from .gonka import GonkaKey, gonka_signer, transfer_addresses

_bases: List[type] = []
for _name in ("httpx", "httpx2"):
    try:
        _auth = importlib.import_module(_name).Auth
    except ImportError:
        continue
    if _auth not in _bases:
        _bases.append(_auth)
if not _bases:
    raise ImportError("PassportAuth needs httpx or httpx2 (the openai SDK installs one)")

PASSPORT_HEADER = "X-Agent-Passport"
SIGNATURE_HEADER = "X-Agent-Sig"


class PassportAuth(*_bases):  # type: ignore[misc]
    """Signs each request's final method, raw path and query, and body bytes.

    httpx reads a streamed request body once before the auth flow
    (``requires_request_body``), so generators and files are signed as sent. Responses,
    streamed ones included, are untouched.

    Retries (the openai SDK's, after a connection error, 429 or 5xx) re-send the same
    method, URI, body and passport, so the signature is the same: the gateway counts them
    as one request. With the gateway's ``[replay] release_on_retryable = true`` it does
    not consume the replay record when the upstream was not reached or answered 429/503
    before any body byte, so those retries go through; by default, and after any other
    answer, the record is burnt (a retry then gets 401 ``request_replayed``). Identical body, URI
    and passport are one request: to send the same prompt twice on purpose, give each call
    its own nonce, which the SDK keeps for that call's retries
    (``extra_query={"aps_nonce": uuid.uuid4().hex}``).

    Redirects: a 307 or 308 within the origin a request was signed for is followed, signed
    anew for its new URI (with the client's ``follow_redirects`` off, httpx's default); one
    to another origin raises ``PassportGateError``; other redirects are returned as they
    are. A client that follows redirects itself (``follow_redirects=True``) sends each hop
    without asking the auth flow: PassportAuth refuses any hop whose origin, method or
    target differs from the signed request (``RedirectRefused``) before a byte of it is
    sent, so the passport and signature never reach another URI.

    Calling a Gonka API node directly, give ``gonka_key`` (a principal key file path, a
    64-hex-digit secret or a ``PrincipalKey``) and the node's ``transfer_address``, or
    ``endpoints`` (``["https://node1.example/v1;gonka1...", ...]``) to sign each request
    for the node its URL names: each request then also carries ``Authorization`` (replacing
    the SDK's ``Bearer``), ``X-Requester-Address``, ``X-Timestamp`` and
    ``X-Transfer-Address``, signed over the same final body as ``X-Agent-Sig``. Timestamps
    come from a clock that never repeats, so a retry is signed anew and the node, which
    refuses a reused ``Authorization``, accepts it.
    """

    requires_request_body = True

    def __init__(
        self,
        agent_key: AgentKey,
        passport: str,
        chain_id: str,
        *,
        gonka_key: Optional[GonkaKey] = None,
        transfer_address: Optional[str] = None,
        endpoints: Optional[Sequence[str]] = None,
        prefix: str = "gonka",
    ) -> None:
        self._signer = Signer(agent_key, passport, chain_id)
        self._gonka = None
        if gonka_key is None:
            if transfer_address is not None or endpoints is not None:
                raise PassportGateError(
                    "transfer_address and endpoints are for native signing: give gonka_key too")
            return
        self._gonka = (gonka_signer(gonka_key, prefix),
                       transfer_addresses(transfer_address, endpoints, prefix))

    def _sign(self, request: Any) -> Any:
        uri = request.url.raw_path.decode("ascii")
        body = request.content
        request.headers[PASSPORT_HEADER] = self._signer.passport
        request.headers[SIGNATURE_HEADER] = self._signer.sign(request.method, uri, body)
        if self._gonka is not None:
            signer, transfers = self._gonka
            for name, value in signer.sign_now(body, transfers.for_url(str(request.url))):
                request.headers[name] = value
        return request

    def _follow(self, request: Any, response: Any) -> Optional[Any]:
        """The next request of a redirect the client left to us (``follow_redirects``
        off): a 307 or 308 within the signed origin, re-signed for its new URI; ``None``
        for any other answer. A 307 or 308 to another origin is refused."""
        following = response.next_request
        if following is None or response.status_code not in (307, 308):
            return None
        if _origin(following.url) != _origin(request.url):
            raise PassportGateError(
                f"refusing to follow the {response.status_code} redirect from "
                f"{_origin_text(request.url)} to {_origin_text(following.url)}: the passport, "
                "signature and body are only sent to the origin they were signed for")
        return following

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.read()
        while True:
            _guard(request, asynchronous=False)
            response = yield self._sign(request)
            following = self._follow(request, response)
            if following is None:
                return
            following.read()
            request = following

    async def async_auth_flow(
        self, request: Any
    ) -> AsyncGenerator[Any, Any]:
        await request.aread()
        while True:
            _guard(request, asynchronous=True)
            response = yield self._sign(request)
            following = self._follow(request, response)
            if following is None:
                return
            await following.aread()
            request = following


def _origin(url: Any) -> Tuple[bytes, bytes, Optional[int]]:
    return (url.raw_scheme, url.raw_host, url.port)


def _origin_text(url: Any) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


class RedirectRefused(PassportGateError):  # type: ignore[misc,valid-type]
    """A client following redirects itself was about to send a signed request to a URI
    other than the one signed."""


def _guard(request: Any, *, asynchronous: bool) -> None:
    """Refuses redirects the client follows itself (``follow_redirects=True``).

    httpx builds a redirect's request from the signed one (headers, body and
    ``extensions`` copied) and sends it without asking the auth flow, so the passport and
    signature would reach the redirect's target, another origin included. The signed
    request's ``extensions`` carry this check as httpcore's ``trace`` callback, which
    httpcore calls before it writes a request's headers: a request whose origin, method or
    target differs from the signed one is refused there, before any byte of it is sent.
    (A transport that is not httpcore's calls no trace callback: use such a transport
    with ``follow_redirects=False``.)"""
    url = request.url
    method = request.method.encode("ascii")
    signed = (method, _origin(url), url.raw_path)
    # Through a forward proxy (plain http), httpcore sends the absolute URL as the target.
    absolute = url.raw_scheme + b"://" + url.raw_host
    absolute += (b":%d" % url.port if url.port is not None else b"") + url.raw_path
    url_text = f"{_origin_text(url)}{url.raw_path.decode('ascii')}"
    previous = request.extensions.get("trace")
    # A redirect we follow ourselves carries the guard of the request it came from.
    previous = getattr(previous, "_passport_gate_previous", previous)

    def check(event: str, info: Dict[str, Any]) -> None:
        if not event.endswith("send_request_headers.started"):
            return
        sent = info.get("request")
        if sent is None or sent.method == b"CONNECT":
            # A proxy tunnel's own request carries none of the request's headers.
            return
        hop = sent.url
        port = hop.port
        default = {b"http": 80, b"https": 443}.get(hop.scheme)
        if hop.target.startswith(b"/"):
            here = (sent.method, (hop.scheme, hop.host, None if port == default else port),
                    hop.target)
            if here == signed:
                return
            text = f"{hop.scheme.decode('ascii')}://{hop.host.decode('ascii')}"
            if port is not None and port != default:
                text += f":{port}"
            text += hop.target.decode("ascii", "replace")
        else:
            if sent.method == method and hop.target == absolute:
                return
            text = hop.target.decode("ascii", "replace")
        raise RedirectRefused(
            f"refusing to send the request signed for {url_text} to {text} (a redirect "
            "the client followed): create the client with follow_redirects=False; "
            "PassportAuth then follows 307 and 308 redirects within the signed origin "
            "itself, signed anew")

    if asynchronous:
        async def trace(event: str, info: Dict[str, Any]) -> None:
            check(event, info)
            if previous is not None:
                await previous(event, info)
    else:
        def trace(event: str, info: Dict[str, Any]) -> None:  # type: ignore[misc]
            check(event, info)
            if previous is not None:
                previous(event, info)

    trace._passport_gate_previous = previous  # type: ignore[attr-defined]
    request.extensions = {**request.extensions, "trace": trace}
