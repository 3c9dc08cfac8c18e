"""Signed agent passports (aps-agent-envelope-v1) for Python agents.

Everything here runs the passport-gate Rust library's own code (key files, JCS, ADR-036,
the agent signing payload); this module only shapes arguments and results.

    from passport_gate import AgentKey, PassportAuth
    import httpx, openai

    auth = PassportAuth(AgentKey.load("agent.json"), passport, chain_id="gonka-mainnet")
    client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused",
                           http_client=httpx.Client(auth=auth))
"""

from __future__ import annotations

import datetime as _dt
import json as _json
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

from ._native import AgentKey, PassportGateError, PrincipalKey, Signer
from ._native import attach_signature as _attach_signature
from ._native import inspect_json as _inspect_json
from ._native import mint_json as _mint_json
from ._native import mint_unsigned_json as _mint_unsigned_json
from ._native import sign_request as _sign_request
from ._native import verify_json as _verify_json
from .gonka import (GonkaSigner, TransferAddresses, gonka_address, gonka_sign, gonka_signer,
                    gonka_verify, monotonic_timestamp_ns, parse_endpoint, transfer_addresses)

if TYPE_CHECKING:
    from .auth import PassportAuth

__all__ = [
    "AgentKey",
    "GonkaSigner",
    "PassportAuth",
    "PassportGateError",
    "PrincipalKey",
    "Signer",
    "TransferAddresses",
    "attach_signature",
    "gonka_address",
    "gonka_sign",
    "gonka_signer",
    "gonka_verify",
    "headers",
    "inspect",
    "mint",
    "mint_unsigned",
    "monotonic_timestamp_ns",
    "parse_endpoint",
    "sign_request",
    "transfer_addresses",
    "verify",
]

PASSPORT_HEADER = "X-Agent-Passport"
SIGNATURE_HEADER = "X-Agent-Sig"

Time = Union[str, _dt.datetime, None]
Body = Union[bytes, bytearray, memoryview, str]


def _time(value: Time) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise PassportGateError("datetimes must be timezone-aware")
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _bytes(body: Body) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _models(models: Optional[Sequence[str]]) -> Optional[list]:
    # A string is a sequence of one-character strings: minting would allow those models.
    if models is None:
        return None
    if isinstance(models, (str, bytes, bytearray)):
        raise PassportGateError(
            f"models must be a list of model names, not a string: models=[{models!r}]")
    names = list(models)
    for name in names:
        if not isinstance(name, str):
            raise PassportGateError(
                f"models must be a list of model names (strings), not {type(name).__name__} "
                f"{name!r}")
    return names


def _mint_options(
    agent_key: Optional[AgentKey],
    agent_pubkey: Optional[str],
    agent_id: str,
    chain_id: str,
    ttl_seconds: Optional[int],
    expires_at: Time,
    not_before: Time,
    issued_at: Time,
    models: Optional[Sequence[str]],
    beneficiary: Optional[str],
    prefix: str,
    max_ttl_seconds: int,
    principal_pubkey: Optional[str] = None,
) -> str:
    if (agent_key is None) == (agent_pubkey is None):
        raise PassportGateError("give agent_key or agent_pubkey")
    options: Dict[str, Any] = {
        "chain_id": chain_id,
        "agent_id": agent_id,
        "agent_pubkey": agent_key.public_key if agent_key is not None else agent_pubkey,
        "ttl_seconds": ttl_seconds,
        "expires_at": _time(expires_at),
        "not_before": _time(not_before),
        "issued_at": _time(issued_at),
        "models": _models(models),
        "beneficiary": beneficiary,
        "prefix": prefix,
        "max_ttl_seconds": max_ttl_seconds,
        "principal_pubkey": principal_pubkey,
    }
    return _json.dumps(options)


def mint(
    principal_key: PrincipalKey,
    *,
    agent_id: str,
    chain_id: str,
    agent_key: Optional[AgentKey] = None,
    agent_pubkey: Optional[str] = None,
    ttl_seconds: Optional[int] = None,
    expires_at: Time = None,
    not_before: Time = None,
    issued_at: Time = None,
    models: Optional[Sequence[str]] = None,
    beneficiary: Optional[str] = None,
    prefix: str = "gonka",
    max_ttl_seconds: int = 3600,
) -> str:
    """Mints a passport and returns the ``X-Agent-Passport`` value (``passport-gate mint``).

    ``models`` is a list of model names: ``None`` allows every model, ``[]`` none, and a
    string is refused (it is not one model). Refuses what a verifier with
    ``max_ttl_seconds`` would reject whatever the time, with the CLI's messages.
    """
    return _mint_json(
        principal_key,
        _mint_options(agent_key, agent_pubkey, agent_id, chain_id, ttl_seconds, expires_at,
                      not_before, issued_at, models, beneficiary, prefix, max_ttl_seconds),
    )


def mint_unsigned(
    principal_pubkey: str,
    *,
    agent_id: str,
    chain_id: str,
    agent_key: Optional[AgentKey] = None,
    agent_pubkey: Optional[str] = None,
    ttl_seconds: Optional[int] = None,
    expires_at: Time = None,
    not_before: Time = None,
    issued_at: Time = None,
    models: Optional[Sequence[str]] = None,
    beneficiary: Optional[str] = None,
    prefix: str = "gonka",
    max_ttl_seconds: int = 3600,
) -> Dict[str, Any]:
    """The wallet flow's first half (``mint --unsigned``): ``{"envelope": {...},
    "sign_arbitrary": {"signer": ..., "data": ...}}``. Have the wallet
    ``signArbitrary(chain_id, signer, data)``, then call :func:`attach_signature`."""
    return _json.loads(_mint_unsigned_json(
        _mint_options(agent_key, agent_pubkey, agent_id, chain_id, ttl_seconds, expires_at,
                      not_before, issued_at, models, beneficiary, prefix, max_ttl_seconds,
                      principal_pubkey)
    ))


def attach_signature(envelope: Union[Dict[str, Any], str, bytes], signature: str,
                     prefix: str = "gonka") -> str:
    """Completes the unsigned envelope with the wallet's base64 ADR-036 signature, checks
    it, and returns the ``X-Agent-Passport`` value (``mint --attach-sig``)."""
    if isinstance(envelope, dict):
        envelope = _json.dumps(envelope)
    return _attach_signature(_bytes(envelope), signature, prefix)


def inspect(passport: str, prefix: str = "gonka") -> Dict[str, Any]:
    """The passport's envelope, ids, derived address and validity ``state`` (``valid``,
    ``expired``, ``not_yet_valid``) now. Signatures are not checked: use :func:`verify`."""
    return _json.loads(_inspect_json(passport, prefix))


def verify(
    *,
    chain_id: str,
    method: str,
    uri: str,
    passport: str,
    sig: str,
    body: Body = b"",
    now: Time = None,
    max_ttl_seconds: int = 3600,
    prefix: str = "gonka",
) -> Dict[str, Any]:
    """The gateway verifier's verdict on one request (``passport-gate verify``), for tests
    and tooling: ``{"ok": True, "agent_id": ..., ...}`` or ``{"ok": False, "status": 403,
    "code": "model_not_allowed", "message": ...}``. No replay or revocation state."""
    options = {
        "chain_id": chain_id, "method": method, "uri": uri, "passport": passport, "sig": sig,
        "now": _time(now), "max_ttl_seconds": max_ttl_seconds, "prefix": prefix,
    }
    return _json.loads(_verify_json(_json.dumps(options), _bytes(body)))


def sign_request(agent_key: AgentKey, passport: str, chain_id: str, method: str, uri: str,
                 body: Body = b"") -> str:
    """The ``X-Agent-Sig`` value for one request: ``uri`` is the path and ``?query``
    exactly as sent, ``body`` the exact body bytes (a ``str`` is sent as UTF-8)."""
    return _sign_request(agent_key, passport, chain_id, method, uri, _bytes(body))


def headers(agent_key: AgentKey, passport: str, chain_id: str, method: str, uri: str,
            body: Body = b"") -> Dict[str, str]:
    """Both headers for one request: ``{"X-Agent-Passport": ..., "X-Agent-Sig": ...}``."""
    signer = Signer(agent_key, passport, chain_id)
    return {PASSPORT_HEADER: signer.passport,
            SIGNATURE_HEADER: signer.sign(method, uri, _bytes(body))}


def __getattr__(name: str) -> Any:
    # PassportAuth needs httpx, an optional dependency: import it only when asked for.
    if name == "PassportAuth":
        from .auth import PassportAuth

        return PassportAuth
    raise AttributeError(f"module 'passport_gate' has no attribute {name!r}")
