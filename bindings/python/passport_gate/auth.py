"""``PassportAuth``: an ``httpx.Auth`` that signs every request it sends.

The openai SDK's newer releases use ``httpx2`` (a fork with the same API) where older ones
use ``httpx``; a client accepts only its own library's ``Auth`` subclasses, so
``PassportAuth`` subclasses the ``Auth`` of each one installed.
"""

from __future__ import annotations

import importlib
from typing import Any, AsyncGenerator, Generator, List, Optional, Sequence

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

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.read()
        yield self._sign(request)

    async def async_auth_flow(
        self, request: Any
    ) -> AsyncGenerator[Any, Any]:
        await request.aread()
        yield self._sign(request)
