"""Gonka's native request signature, for calling a Gonka API node directly.

The signing, the key file, the address, the endpoint list and the clock are the Rust
library's (``passport_core::gonka``); this module checks argument types, so that a wrong
one fails loudly instead of being read as something else (a string is not a list of
endpoints).
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple, Union

from ._native import GonkaSigner, PassportGateError, PrincipalKey, TransferAddresses
from ._native import endpoint_list as _endpoint_list
from ._native import gonka_verify as _gonka_verify
from ._native import monotonic_timestamp_ns
from ._native import parse_endpoint as _parse_endpoint
from ._native import transfer_address as _transfer_address

__all__ = [
    "GonkaKey",
    "GonkaSigner",
    "TransferAddresses",
    "gonka_address",
    "gonka_sign",
    "gonka_signer",
    "gonka_verify",
    "monotonic_timestamp_ns",
    "parse_endpoint",
    "transfer_addresses",
]

GonkaKey = Union[str, "os.PathLike[str]", PrincipalKey, GonkaSigner]
Body = Union[bytes, bytearray, memoryview, str]


def _bytes(body: Body) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, not {type(body).__name__}")


def _str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def gonka_signer(key: GonkaKey, prefix: str = "gonka") -> GonkaSigner:
    """A signer for ``key``: the path of a principal key file (``passport-gate keygen
    --principal``), a 64-hex-digit secret (``0x`` allowed), a ``PrincipalKey``, or a
    ``GonkaSigner`` (returned as is)."""
    _str("prefix", prefix)
    if isinstance(key, GonkaSigner):
        return key
    if isinstance(key, PrincipalKey):
        return GonkaSigner.from_principal_key(key, prefix)
    if isinstance(key, os.PathLike):
        key = os.fspath(key)
    if not isinstance(key, str):
        raise TypeError("gonka_key must be a key file path, a 64-hex-digit secret or a "
                        f"PrincipalKey, not {type(key).__name__}")
    return GonkaSigner(key, prefix)


def gonka_address(key: GonkaKey, prefix: str = "gonka") -> str:
    """The ``X-Requester-Address`` of ``key`` (see :func:`gonka_signer`)."""
    return gonka_signer(key, prefix).address


def gonka_sign(key: GonkaKey, body: Body, timestamp_ns: Union[int, str],
               transfer_address: str = "", prefix: str = "gonka") -> Dict[str, str]:
    """The native headers for one request, in the order sent: ``Authorization``,
    ``X-Requester-Address``, ``X-Timestamp`` and ``X-Transfer-Address`` (only when not
    empty). ``timestamp_ns`` is an ``int`` or its decimal string (never a float: nanoseconds
    do not fit one). The transfer address is signed as given."""
    if isinstance(timestamp_ns, str):
        # Only the canonical spelling: X-Timestamp is sent as the signer writes the int.
        if not timestamp_ns.lstrip("-").isdigit() or str(int(timestamp_ns)) != timestamp_ns:
            raise PassportGateError(
                f"timestamp_ns {timestamp_ns!r} is not the canonical decimal form of an integer")
        timestamp_ns = int(timestamp_ns)
    if isinstance(timestamp_ns, bool) or not isinstance(timestamp_ns, int):
        raise TypeError(f"timestamp_ns must be an int, not {type(timestamp_ns).__name__}")
    return dict(gonka_signer(key, prefix).sign(_bytes(body), timestamp_ns,
                                               _str("transfer_address", transfer_address)))


def gonka_verify(public_key: str, headers: Dict[str, str], body: Body, node_address: str,
                 prefix: str = "gonka") -> None:
    """Checks native headers as a Gonka API node does (signature, requester address,
    timestamp after 1970; no window or replay); raises ``PassportGateError`` naming the
    reason. ``public_key`` is ``PrincipalKey.public_key`` (compressed, base64);
    ``node_address`` is what the node signs with when ``X-Transfer-Address`` is absent."""
    if not isinstance(headers, dict):
        raise TypeError(f"headers must be a dict, not {type(headers).__name__}")
    _gonka_verify(_str("public_key", public_key), list(headers.items()), _bytes(body),
                  _str("node_address", node_address), prefix)


def parse_endpoint(entry: str, prefix: str = "gonka") -> Tuple[str, Optional[str]]:
    """``(url, transfer_address)`` of a gonka-openai ``url;address`` entry; an entry
    without ``;`` has no transfer address."""
    return _parse_endpoint(_str("entry", entry), prefix)


def transfer_addresses(transfer_address: Optional[str] = None,
                       endpoints: Optional[Sequence[str]] = None,
                       prefix: str = "gonka") -> TransferAddresses:
    """Where each request's transfer address comes from: one checked address, or the
    ``url;address`` endpoint serving the request URL. Not both."""
    if endpoints is not None:
        if transfer_address is not None:
            raise PassportGateError("give transfer_address or endpoints, not both")
        if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, (list, tuple)):
            raise TypeError("endpoints must be a list of 'url;address' strings, not "
                            f"{type(endpoints).__name__}")
        for entry in endpoints:
            _str("each endpoint", entry)
        return _endpoint_list(list(endpoints), prefix)
    if transfer_address is not None:
        _str("transfer_address", transfer_address)
    return _transfer_address(transfer_address, prefix)
