"""``PassportAuth``: an ``httpx.Auth`` that signs every request it sends.

The openai SDK's newer releases use ``httpx2`` (a fork with the same API) where older ones
use ``httpx``; a client accepts only its own library's ``Auth`` subclasses, so
``PassportAuth`` subclasses the ``Auth`` of each one installed.
"""

from __future__ import annotations

import importlib
from typing import Any, AsyncGenerator, Generator, List

from ._native import AgentKey, Signer

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
    as one request. It does not consume the replay record when the upstream was not
    reached or answered 429/503 before any body byte, so those retries go through; any
    other answer burns it (a retry then gets 401 ``request_replayed``). Identical body, URI
    and passport are one request: to send the same prompt twice on purpose, give each call
    its own nonce, which the SDK keeps for that call's retries
    (``extra_query={"aps_nonce": uuid.uuid4().hex}``).
    """

    requires_request_body = True

    def __init__(self, agent_key: AgentKey, passport: str, chain_id: str) -> None:
        self._signer = Signer(agent_key, passport, chain_id)

    def _sign(self, request: Any) -> Any:
        uri = request.url.raw_path.decode("ascii")
        request.headers[PASSPORT_HEADER] = self._signer.passport
        request.headers[SIGNATURE_HEADER] = self._signer.sign(request.method, uri, request.content)
        return request

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.read()
        yield self._sign(request)

    async def async_auth_flow(
        self, request: Any
    ) -> AsyncGenerator[Any, Any]:
        await request.aread()
        yield self._sign(request)
